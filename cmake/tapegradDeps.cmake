# Build side of the package's private dependencies (HDF5, cuDNN, NCCL).
#
# The library links each of them through an imported target (tapegrad::hdf5, tapegrad::cudnn,
# tapegrad::nccl). A static libtapegrad exports them as $<LINK_ONLY:tapegrad::hdf5> and so on:
# target names, not the build machine's paths. tapegradConfig.cmake defines the same targets on the
# consumer's machine (tapegradImport.cmake) from what tg_package_libraries() records here.

# tg_import_target(<target> LIBRARIES <lib>... [INCLUDE_DIRS <dir>...]): an INTERFACE IMPORTED
# target for the build tree (its include directories are SYSTEM, as for every imported target).
function(tg_import_target target)
  cmake_parse_arguments(arg "" "" "LIBRARIES;INCLUDE_DIRS" ${ARGN})
  add_library(${target} INTERFACE IMPORTED)
  set_target_properties(${target} PROPERTIES INTERFACE_LINK_LIBRARIES "${arg_LIBRARIES}"
                                             INTERFACE_INCLUDE_DIRECTORIES "${arg_INCLUDE_DIRS}")
endfunction()

# tg_package_libraries(<var> <lib>...): how the package config finds each library file again.
# A library in one of the compiler's own directories (/usr/lib/x86_64-linux-gnu) becomes its link
# name ("z" for libz.so: linked as -lz). Any other becomes "<file name>@<directory>": the config
# looks for that file name in that directory first, then beside the installed package, then in the
# standard places. Imported targets are replaced by the file they point to.
function(tg_package_libraries var)
  set(out)
  foreach(lib IN LISTS ARGN)
    if(TARGET "${lib}")
      get_target_property(loc "${lib}" IMPORTED_LOCATION_RELEASE)
      if(NOT loc)
        get_target_property(loc "${lib}" IMPORTED_LOCATION)
      endif()
      if(NOT loc)
        message(FATAL_ERROR "tapegrad: cannot package '${lib}': an imported target without a file")
      endif()
      set(lib "${loc}")
    endif()
    if(NOT IS_ABSOLUTE "${lib}")
      string(REGEX REPLACE "^-l" "" lib "${lib}")
      list(APPEND out "${lib}")
      continue()
    endif()
    get_filename_component(dir "${lib}" DIRECTORY)
    get_filename_component(file "${lib}" NAME)
    if(dir IN_LIST CMAKE_CXX_IMPLICIT_LINK_DIRECTORIES)
      string(REGEX REPLACE "^lib" "" name "${file}")
      string(REGEX REPLACE "\\.(so|a|dylib)(\\..*)?$" "" name "${name}")
      list(APPEND out "${name}")
    else()
      list(APPEND out "${file}@${dir}")
    endif()
  endforeach()
  set(${var} "${out}" PARENT_SCOPE)
endfunction()

# The HDF5 libraries a consumer of the static library links. A shared libhdf5 brings its own
# dependencies (zlib, szip, curl, ...) at run time, so only HDF5's own libraries are needed; a
# static one needs the whole list FindHDF5 gave.
function(tg_hdf5_link_libraries var)
  set(own ${ARGN})
  list(FILTER own INCLUDE REGEX "hdf5[^/]*\\.(so|dylib)(\\.[0-9.]*)?$")
  if(own)
    set(${var} "${own}" PARENT_SCOPE)
  else()
    set(${var} "${ARGN}" PARENT_SCOPE)
  endif()
endfunction()
