// Runtime compilation of the direct kernels (ops/conv_block/direct_kernels.cuh) with NVRTC: a
// kernel template instance is compiled on first use for the device's architecture, kept in memory
// for the process, and its cubin cached on disk. Host side only; no CUDA headers.
//
// Disk cache: $TG_KERNEL_CACHE, else $XDG_CACHE_HOME/tapegrad/kernels, else
// ~/.cache/tapegrad/kernels. A file's name is a hash of the sources, the options, the kernel, the
// architecture and NVRTC's version; its content carries a checksum. Files are written atomically
// (temporary file + rename); a file that does not read back intact is compiled again and replaced;
// a directory that cannot be written just means compiling in memory.
#pragma once

#include <string>

namespace tg::ops::detail {

/// One embedded source file: the name that #include uses, and its text.
struct JitSource {
  const char* name;
  const char* text;
};
/// The direct kernels' sources, embedded at build time (generated from cmake/tgEmbedSources.cmake):
/// the program first, then the headers it includes.
extern const JitSource kDirectKernelSources[];
extern const int kDirectKernelSourcesCount;

struct JitCubin {
  std::string cubin;         ///< the compiled code for one architecture
  std::string lowered_name;  ///< the kernel's mangled name in it
  bool from_disk = false;    ///< read from the disk cache (else compiled now)
  std::string cache_file;    ///< where it is cached ("" when the cache is not writable)
};

/// Compiles the kernel named by `expr` (a template instance such as
/// "tg::ops::detail::forward_fma_kernel<8, 32, 3>") for sm_<arch> (e.g. 90), or reads it from the
/// disk cache. Needs NVRTC, not a GPU. Throws tg::Error with NVRTC's log on a compile error.
JitCubin jit_compile(const std::string& expr, int arch);

/// The disk cache's directory ("" when no location is known).
std::string jit_cache_dir();

/// The kernel named by `expr` on the current device, loaded once per process and device (thread-
/// safe: other threads asking for a kernel being compiled wait for it): a cudaKernel_t, which the
/// CUDA runtime takes wherever it takes a kernel function (launches, attributes, occupancy).
const void* jit_kernel(const std::string& expr);

}  // namespace tg::ops::detail
