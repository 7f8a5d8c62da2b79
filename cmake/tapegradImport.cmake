# Consumer side of the package's private dependencies (see tapegradDeps.cmake): defines an
# INTERFACE IMPORTED target from the libraries recorded at build time, found again on this machine.
#
# _tapegrad_import(<target> <result var> ENTRIES <entry>... [HINTS <dir>...] [SUFFIXES <suffix>...])
# Each entry is a link name ("z": passed to the linker as -lz) or "<file name>@<directory>": that
# file, searched in <directory> (where the build found it), the installed package's library
# directory, HINTS, then the standard places (with SUFFIXES). The cache variable
# tapegrad_LIBRARY_<file name> overrides where a file is taken from. Sets <result var> to an
# empty string on success, else to a message naming what is missing.
function(_tapegrad_import target result)
  cmake_parse_arguments(arg "" "" "ENTRIES;HINTS;SUFFIXES" ${ARGN})
  set(libs)
  set(missing)
  foreach(entry IN LISTS arg_ENTRIES)
    if(NOT entry MATCHES "^(.+)@(.*)$")
      list(APPEND libs "${entry}")
      continue()
    endif()
    set(file "${CMAKE_MATCH_1}")
    set(dir "${CMAKE_MATCH_2}")
    string(MAKE_C_IDENTIFIER "tapegrad_LIBRARY_${file}" var)
    find_library(${var} NAMES "${file}"
                 HINTS "${dir}" "${_tapegrad_libdir}" ${arg_HINTS}
                 PATH_SUFFIXES ${arg_SUFFIXES}
                 DOC "${file} for tapegrad (the build found it in ${dir})")
    if(${var})
      list(APPEND libs "${${var}}")
    else()
      list(APPEND missing "${file} (the build found it in ${dir}; set ${var})")
    endif()
  endforeach()
  if(missing)
    list(JOIN missing ", " text)
    set(${result} "${target} needs ${text}" PARENT_SCOPE)
    return()
  endif()
  if(NOT TARGET ${target})
    add_library(${target} INTERFACE IMPORTED)
    set_target_properties(${target} PROPERTIES INTERFACE_LINK_LIBRARIES "${libs}")
  endif()
  set(${result} "" PARENT_SCOPE)
endfunction()
