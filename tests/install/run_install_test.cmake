# Installs tapegrad into a scratch prefix, moves the prefix elsewhere (the package must be
# relocatable), checks that the exported targets name no path of the build machine, then builds
# consumer projects against it with find_package(tapegrad) and runs them.
#
#   -DTG_SOURCE_DIR=...  -DTG_WORK_DIR=...  and either
#   -DTG_BUILD_DIR=...   install that build tree (the main build), or
#   -DTG_FRESH=ON        configure and build a CPU-only shared library with neither tests nor
#                        examples first (-DTG_GENERATOR=..., -DTG_LAUNCHER=... are passed on to it);
#                        its consumers are told not to find CUDAToolkit or MPI
#   -DTG_CONSUMERS=consumer,shadow  the projects under tests/install/ to build and run
cmake_minimum_required(VERSION 3.24)

function(tg_run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}): ${ARGN}")
  endif()
endfunction()

file(REMOVE_RECURSE ${TG_WORK_DIR})
set(gen)
if(TG_GENERATOR)
  set(gen -G ${TG_GENERATOR})
endif()
set(launcher)
if(TG_LAUNCHER)
  set(launcher -DCMAKE_CXX_COMPILER_LAUNCHER=${TG_LAUNCHER})
endif()

set(consumer_args)
if(TG_FRESH)
  set(TG_BUILD_DIR ${TG_WORK_DIR}/library)
  tg_run("configuring the CPU-only shared library" ${CMAKE_COMMAND} -S ${TG_SOURCE_DIR}
         -B ${TG_BUILD_DIR} ${gen} ${launcher} -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON
         -DTG_WITH_CUDA=OFF -DTG_WITH_DIST=OFF -DTG_BUILD_TESTS=OFF -DTG_BUILD_EXAMPLES=OFF)
  tg_run("building the CPU-only shared library" ${CMAKE_COMMAND} --build ${TG_BUILD_DIR})
  set(consumer_args -DTG_EXPECT_TYPE=SHARED_LIBRARY -DTG_EXPECT_CPU_ONLY=ON
      -DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=ON -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON)
endif()

tg_run("cmake --install" ${CMAKE_COMMAND} --install ${TG_BUILD_DIR} --prefix ${TG_WORK_DIR}/staged)
file(RENAME ${TG_WORK_DIR}/staged ${TG_WORK_DIR}/prefix)
set(prefix ${TG_WORK_DIR}/prefix)

# The exported targets: paths relative to the prefix, dependencies by target or library name.
file(GLOB exports ${prefix}/lib*/cmake/tapegrad/tapegradTargets*.cmake)
if(NOT exports)
  message(FATAL_ERROR "no tapegradTargets*.cmake under ${prefix}")
endif()
foreach(f ${exports})
  file(READ ${f} text)
  foreach(bad ${TG_SOURCE_DIR} ${TG_BUILD_DIR} ${TG_WORK_DIR})
    string(FIND "${text}" "${bad}" at)
    if(NOT at EQUAL -1)
      message(FATAL_ERROR "${f} names the build machine's path ${bad}")
    endif()
  endforeach()
  if(text MATCHES "[\" ;](/[^\" ;]*\\.(so|a))[\" ;.]")
    message(FATAL_ERROR "${f} links a library by absolute path: ${CMAKE_MATCH_0}")
  endif()
endforeach()
if(NOT EXISTS ${prefix}/include/tapegrad/tapegrad.h OR NOT EXISTS ${prefix}/include/tapegrad/core/tensor.h)
  message(FATAL_ERROR "the headers are not installed under ${prefix}/include/tapegrad/")
endif()

string(REPLACE "," ";" consumers "${TG_CONSUMERS}")
foreach(c ${consumers})
  set(b ${TG_WORK_DIR}/${c})
  tg_run("configuring the consumer project '${c}'" ${CMAKE_COMMAND}
         -S ${TG_SOURCE_DIR}/tests/install/${c} -B ${b} ${gen} ${launcher}
         -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release
         -DTG_EXAMPLES_DIR=${TG_SOURCE_DIR}/examples ${consumer_args})
  tg_run("building the consumer project '${c}'" ${CMAKE_COMMAND} --build ${b})
  tg_run("running '${c}'" ${b}/${c} ${b})
  if(c STREQUAL "consumer")
    tg_run("running research_loop" ${b}/research_loop ${b})
  endif()
endforeach()
