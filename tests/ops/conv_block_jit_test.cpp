// The runtime compilation of the fused block's direct kernels (ops/conv_block/jit.h) and the check
// of which (Cin, Cout, k) they handle. NVRTC needs no GPU: these run in every CUDA build.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <tuple>

#include "test_utils.h"

#ifdef TG_WITH_CUDA
#include "ops/conv_block/jit.h"
#include "ops/conv_block/kernels.h"

using namespace tg;
using ops::detail::conv_block_direct_check;
using ops::detail::jit_compile;

namespace {

// Points the kernel cache at a directory while it lives.
struct CacheDirGuard {
  std::string old;
  bool had;
  explicit CacheDirGuard(const std::string& dir) {
    const char* v = std::getenv("TG_KERNEL_CACHE");
    had = v != nullptr;
    if (had) old = v;
    ::setenv("TG_KERNEL_CACHE", dir.c_str(), 1);
  }
  ~CacheDirGuard() {
    if (had) {
      ::setenv("TG_KERNEL_CACHE", old.c_str(), 1);
    } else {
      ::unsetenv("TG_KERNEL_CACHE");
    }
  }
};

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

}  // namespace

// Compiles for sm_90 (no GPU needed), caches on disk, reads the cache back, and recompiles a
// corrupted or truncated cache file instead of trusting it.
TEST(ConvBlockJit, CompilesForSm90AndCachesOnDisk) {
  tg::testing::TempDir tmp;
  CacheDirGuard guard(tmp.file("kernels"));
  const std::string fwd = "tg::ops::detail::forward_fma_kernel<1, 8, 1, 2>";
  const auto a = jit_compile(fwd, 90);
  EXPECT_FALSE(a.from_disk);
  EXPECT_GT(a.cubin.size(), 1000u);
  EXPECT_EQ(a.cubin.substr(0, 4), std::string("\x7f"
                                              "ELF"));  // a cubin is an ELF image
  EXPECT_CONTAINS(a.lowered_name, "forward_fma_kernel");
  ASSERT_FALSE(a.cache_file.empty());
  EXPECT_EQ(a.cache_file.rfind(tmp.file("kernels"), 0), 0u) << a.cache_file;

  const auto b = jit_compile(fwd, 90);
  EXPECT_TRUE(b.from_disk);
  EXPECT_EQ(b.cubin, a.cubin);
  EXPECT_EQ(b.lowered_name, a.lowered_name);

  // One file per kernel, no temporary files left behind.
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"kernels"});
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(tmp.file("kernels"))) {
    EXPECT_EQ(e.path().extension(), ".cubin") << e.path();
    ++files;
  }
  EXPECT_EQ(files, 1u);

  // A flipped byte in the cubin: the checksum fails, the kernel is compiled again and the file
  // replaced.
  std::string bytes = read_all(a.cache_file);
  bytes[bytes.size() / 2] ^= 0x5a;
  tg::testing::write_bytes(a.cache_file, bytes);
  const auto d = jit_compile(fwd, 90);
  EXPECT_FALSE(d.from_disk);
  EXPECT_EQ(d.cubin.size(), a.cubin.size());
  EXPECT_TRUE(jit_compile(fwd, 90).from_disk);

  // Truncated: the same.
  tg::testing::write_bytes(a.cache_file, read_all(a.cache_file).substr(0, 40));
  EXPECT_FALSE(jit_compile(fwd, 90).from_disk);
  EXPECT_TRUE(jit_compile(fwd, 90).from_disk);
}

// A cache directory that cannot be created is no error: the kernel is compiled in memory.
// Every kind of direct kernel compiles for sm_90 as the launchers name them (DirectChoice's
// buffers and passes): the FMA and TF32 forwards, and the backward with its weight gradient on FMAs
// and on TF32 tensor cores, for the loss and for a given dy. A kernel that only a GPU run would
// compile fails here, in every CUDA build.
TEST(ConvBlockJit, EveryKernelKindCompilesForSm90) {
  using ops::detail::direct_choice;
  tg::testing::TempDir tmp;
  CacheDirGuard guard(tmp.file("kernels"));
  for (auto [cin, cout, k] : {std::make_tuple(8, 32, 3), std::make_tuple(3, 40, 5)}) {
    const auto c = direct_choice(cin, cout, k, true, 232448 / 4);
    ASSERT_TRUE(c.bwd_tf32);
    const std::string args = std::to_string(cin) + ", " + std::to_string(cout) + ", " +
                             std::to_string(k) + ", ";
    const std::string bwd = args + std::to_string(c.bwd_nbuf) + ", " +
                            std::to_string(c.bwd_passes) + ", ";
    for (const std::string& name :
         {"forward_fma_kernel<" + args + "2>", "forward_tf32_kernel<" + args + "2>",
          "backward_kernel<" + bwd + "true, false>", "backward_kernel<" + bwd + "false, true>",
          "backward_kernel<" + bwd + "true, true>"}) {
      SCOPED_TRACE(name);
      const auto r = jit_compile("tg::ops::detail::" + name, 90);
      EXPECT_GT(r.cubin.size(), 1000u);
    }
  }
}

TEST(ConvBlockJit, UnwritableCacheCompilesInMemory) {
  tg::testing::TempDir tmp;
  tg::testing::write_bytes(tmp.file("a_file"), "x");
  CacheDirGuard guard(tmp.file("a_file") + "/kernels");  // below a regular file
  const auto a = jit_compile("tg::ops::detail::forward_fma_kernel<1, 8, 1, 2>", 90);
  EXPECT_FALSE(a.from_disk);
  EXPECT_TRUE(a.cache_file.empty());
  EXPECT_GT(a.cubin.size(), 1000u);
}

TEST(ConvBlockJit, CompileErrorCarriesNvrtcLog) {
  tg::testing::TempDir tmp;
  CacheDirGuard guard(tmp.file("kernels"));
  EXPECT_ERROR_HAS(jit_compile("tg::ops::detail::no_such_kernel<1, 8, 1>", 90), "NVRTC",
                   "no_such_kernel", "sm_90");
}

// The coverage: what the direct kernels handle, and why not otherwise.
TEST(ConvBlockJit, DirectCheckNamesTheReason) {
  for (bool tf32 : {false, true}) {
    for (auto [cin, cout, k] :
         {std::make_tuple(8, 32, 3), std::make_tuple(3, 16, 3), std::make_tuple(1, 8, 1),
          std::make_tuple(3, 32, 7), std::make_tuple(4, 32, 5), std::make_tuple(8, 16, 1),
          std::make_tuple(16, 32, 3), std::make_tuple(8, 64, 3), std::make_tuple(5, 24, 3),
          std::make_tuple(2, 40, 7), std::make_tuple(64, 128, 1), std::make_tuple(32, 64, 3),
          std::make_tuple(3, 120, 3), std::make_tuple(4, 128, 7)})
      EXPECT_EQ(conv_block_direct_check(cin, cout, k, tf32), "")
          << cin << " -> " << cout << ", k " << k << (tf32 ? " tf32" : " fp32");
    EXPECT_CONTAINS(conv_block_direct_check(65, 32, 3, tf32), "Cin 65 is outside 1..64");
    EXPECT_CONTAINS(conv_block_direct_check(8, 12, 3, tf32), "Cout 12 is not a multiple of 8");
    EXPECT_CONTAINS(conv_block_direct_check(8, 136, 3, tf32), "Cout 136");
    EXPECT_CONTAINS(conv_block_direct_check(8, 32, 9, tf32), "k 9 is outside 1..7");
    EXPECT_CONTAINS(conv_block_direct_check(64, 128, 7, tf32), "shared memory");
    // The forward fits; the backward's weight gradient (1120 units over 512 threads) would need 84
    // accumulators per thread.
    EXPECT_CONTAINS(conv_block_direct_check(5, 128, 7, tf32), "exceed 72 registers per thread");
  }
}

#endif  // TG_WITH_CUDA
