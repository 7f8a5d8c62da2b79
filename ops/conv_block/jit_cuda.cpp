// NVRTC compilation of the direct kernels, the disk cache of their cubins, and their loading with
// the CUDA runtime's library API (cudaLibraryLoadData: no link against the driver library, so a
// build with CUDA still starts on a machine without a driver).
#include <cuda_runtime.h>
#include <nvrtc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cerrno>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <tuple>
#include <vector>

#include "../../core/cuda_context.h"
#include "../../core/cuda_utils.h"
#include "jit.h"

namespace tg::ops::detail {
namespace {


#define TG_NVRTC_CHECK(expr)                                                 \
  do {                                                                       \
    nvrtcResult tg_rc_ = (expr);                                             \
    if (tg_rc_ != NVRTC_SUCCESS)                                             \
      TG_THROW("NVRTC error in ", #expr, ": ", nvrtcGetErrorString(tg_rc_)); \
  } while (0)

uint64_t fnv1a(const std::string& s, uint64_t h = 14695981039346656037ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::vector<std::string> options(int arch) {
  return {"--gpu-architecture=sm_" + std::to_string(arch), "-default-device", "--std=c++17",
          "-lineinfo"};
}

// The cache key: everything that changes the cubin.
std::string cache_key(const std::string& expr, int arch) {
  int major = 0, minor = 0;
  TG_NVRTC_CHECK(nvrtcVersion(&major, &minor));
  std::string all =
      "nvrtc " + std::to_string(major) + "." + std::to_string(minor) + "\n" + expr + "\n";
  for (const std::string& o : options(arch)) all += o + "\n";
  for (int i = 0; i < kDirectKernelSourcesCount; ++i)
    all += std::string(kDirectKernelSources[i].name) + "\n" + kDirectKernelSources[i].text + "\n";
  return hex64(fnv1a(all));
}

// File format: "tapegrad-cubin 1\n" key "\n" lowered name "\n" size " " checksum "\n" cubin bytes.
constexpr const char* kMagic = "tapegrad-cubin 1";

bool read_cache(const std::string& path, const std::string& key, JitCubin& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::string magic, k, lowered, sizes;
  if (!std::getline(f, magic) || magic != kMagic || !std::getline(f, k) || k != key ||
      !std::getline(f, lowered) || lowered.empty() || !std::getline(f, sizes))
    return false;
  std::istringstream ss(sizes);
  size_t size = 0;
  std::string sum;
  if (!(ss >> size >> sum) || size == 0 || size > (size_t(1) << 30)) return false;
  std::string cubin(size, '\0');
  if (!f.read(&cubin[0], std::streamsize(size)) || f.peek() != std::char_traits<char>::eof())
    return false;
  if (hex64(fnv1a(cubin, fnv1a(lowered))) != sum) return false;
  out.cubin = std::move(cubin);
  out.lowered_name = std::move(lowered);
  return true;
}

// Writes atomically; false (and nothing left behind) when the directory is not writable.
bool write_cache(const std::string& path, const std::string& key, const JitCubin& c) {
  std::ostringstream tmp_name;
  tmp_name << path << ".tmp." << ::getpid() << "."
           << std::hash<std::thread::id>{}(std::this_thread::get_id());
  const std::string tmp = tmp_name.str();
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return false;
    f << kMagic << "\n"
      << key << "\n"
      << c.lowered_name << "\n"
      << c.cubin.size() << " " << hex64(fnv1a(c.cubin, fnv1a(c.lowered_name))) << "\n";
    f.write(c.cubin.data(), std::streamsize(c.cubin.size()));
    f.close();
    if (!f) {
      ::unlink(tmp.c_str());
      return false;
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) == 0) return true;
  ::unlink(tmp.c_str());
  return false;
}

// mkdir -p with POSIX calls; false when the directory cannot be made.
bool make_dirs(const std::string& dir) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos < dir.size() && dir[pos] != '/') continue;
    const std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) return false;
  }
  return true;
}

JitCubin compile(const std::string& expr, int arch) {
  nvrtcProgram prog;
  std::vector<const char*> header_texts, header_names;
  for (int i = 1; i < kDirectKernelSourcesCount; ++i) {
    header_texts.push_back(kDirectKernelSources[i].text);
    header_names.push_back(kDirectKernelSources[i].name);
  }
  TG_NVRTC_CHECK(nvrtcCreateProgram(&prog, kDirectKernelSources[0].text,
                                    kDirectKernelSources[0].name, int(header_texts.size()),
                                    header_texts.data(), header_names.data()));
  struct Destroy {
    nvrtcProgram* p;
    ~Destroy() { nvrtcDestroyProgram(p); }
  } destroy{&prog};
  TG_NVRTC_CHECK(nvrtcAddNameExpression(prog, expr.c_str()));
  const std::vector<std::string> opts = options(arch);
  std::vector<const char*> copts;
  for (const std::string& o : opts) copts.push_back(o.c_str());
  const nvrtcResult rc = nvrtcCompileProgram(prog, int(copts.size()), copts.data());
  if (rc != NVRTC_SUCCESS) {
    size_t log_size = 0;
    nvrtcGetProgramLogSize(prog, &log_size);
    std::string log(log_size, '\0');
    if (log_size > 0) nvrtcGetProgramLog(prog, &log[0]);
    TG_THROW("conv_block: NVRTC could not compile ", expr, " for sm_", arch, " (",
             nvrtcGetErrorString(rc), "):\n", log);
  }
  JitCubin c;
  const char* lowered = nullptr;
  TG_NVRTC_CHECK(nvrtcGetLoweredName(prog, expr.c_str(), &lowered));
  c.lowered_name = lowered;
  size_t size = 0;
  TG_NVRTC_CHECK(nvrtcGetCUBINSize(prog, &size));
  c.cubin.resize(size);
  TG_NVRTC_CHECK(nvrtcGetCUBIN(prog, &c.cubin[0]));
  return c;
}

}  // namespace

std::string jit_cache_dir() {
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v ? v : "");
  };
  if (!env("TG_KERNEL_CACHE").empty()) return env("TG_KERNEL_CACHE");
  if (!env("XDG_CACHE_HOME").empty()) return env("XDG_CACHE_HOME") + "/tapegrad/kernels";
  if (!env("HOME").empty()) return env("HOME") + "/.cache/tapegrad/kernels";
  return "";
}

JitCubin jit_compile(const std::string& expr, int arch) {
  const std::string key = cache_key(expr, arch);
  const std::string dir = jit_cache_dir();
  std::string path;
  if (!dir.empty() && make_dirs(dir)) path = dir + "/" + key + ".cubin";
  JitCubin c;
  if (!path.empty() && read_cache(path, key, c)) {
    c.from_disk = true;
    c.cache_file = path;
    return c;
  }
  c = compile(expr, arch);
  if (!path.empty() && write_cache(path, key, c)) c.cache_file = path;
  return c;
}

const void* jit_kernel(const std::string& expr) {
  static std::mutex mu;
  static std::map<std::tuple<int, std::string>, std::shared_future<cudaKernel_t>> kernels;
  // tapegrad's current device, the one device_properties() describes (its architecture).
  const auto key = std::make_tuple(cuda::current_device(), expr);
  std::promise<cudaKernel_t> promise;
  std::shared_future<cudaKernel_t> pending;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto found = kernels.find(key);
    if (found != kernels.end()) {
      pending = found->second;
    } else {
      kernels.emplace(key, promise.get_future().share());
    }
  }
  // Loaded, or being compiled by another thread: wait for that one (outside the lock).
  if (pending.valid()) return reinterpret_cast<const void*>(pending.get());
  // Compiled outside the lock: threads may compile different kernels at once.
  try {
    const cudaDeviceProp& p = cuda::device_properties();
    const JitCubin c = jit_compile(expr, p.major * 10 + p.minor);
    cudaLibrary_t lib;  // kept for the process: its kernels are cached here
    TG_CUDA_CHECK(
        cudaLibraryLoadData(&lib, c.cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0));
    cudaKernel_t k;
    TG_CUDA_CHECK(cudaLibraryGetKernel(&k, lib, c.lowered_name.c_str()));
    promise.set_value(k);
    return reinterpret_cast<const void*>(k);
  } catch (...) {
    promise.set_exception(std::current_exception());  // the waiting threads see the error too
    std::lock_guard<std::mutex> lock(mu);
    kernels.erase(key);  // a later call tries again
    throw;
  }
}

}  // namespace tg::ops::detail
