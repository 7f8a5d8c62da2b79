# Installs the built tree into a scratch prefix and builds a consumer project against it with
# find_package(tapegrad); then runs the consumer.
file(REMOVE_RECURSE ${TG_WORK_DIR})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${TG_BUILD_DIR} --prefix ${TG_WORK_DIR}/prefix
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${TG_SOURCE_DIR}/tests/install/consumer -B ${TG_WORK_DIR}/build
                -DCMAKE_PREFIX_PATH=${TG_WORK_DIR}/prefix -DCMAKE_BUILD_TYPE=Release
                -DTG_EXAMPLES_DIR=${TG_SOURCE_DIR}/examples
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the consumer project failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${TG_WORK_DIR}/build RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the consumer project failed (${rc})")
endif()
execute_process(COMMAND ${TG_WORK_DIR}/build/consumer RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the consumer program failed (${rc})")
endif()
execute_process(COMMAND ${TG_WORK_DIR}/build/research_loop ${TG_WORK_DIR} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "research_loop failed (${rc})")
endif()
