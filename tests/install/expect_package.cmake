# Checks, in a consumer project, that the package found is the one the install test built:
#   TG_EXPECT_TYPE      STATIC_LIBRARY or SHARED_LIBRARY
#   TG_EXPECT_CPU_ONLY  the package declares no CUDA, MPI, cuDNN or NCCL (and the test disables
#                       finding CUDAToolkit and MPI, so a config that asks for them fails)
get_target_property(_type tapegrad::tapegrad TYPE)
if(TG_EXPECT_TYPE AND NOT _type STREQUAL TG_EXPECT_TYPE)
  message(FATAL_ERROR "tapegrad::tapegrad is a ${_type}, expected a ${TG_EXPECT_TYPE}")
endif()
if(TG_EXPECT_CPU_ONLY)
  get_target_property(_libs tapegrad::tapegrad INTERFACE_LINK_LIBRARIES)
  if(_libs MATCHES "CUDA|MPI|cudnn|nccl" OR TARGET CUDA::cudart)
    message(FATAL_ERROR "a CPU-only tapegrad links '${_libs}'")
  endif()
endif()
message(STATUS "tapegrad ${tapegrad_VERSION}: ${_type}, CUDA ${tapegrad_WITH_CUDA}, dist ${tapegrad_WITH_DIST}")
