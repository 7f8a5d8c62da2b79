// tg::cuda::Graph: replay repeats the recorded work, the private pool of the caching allocator
// (blocks not handed out while the graph lives, released with it), and captures that cannot be:
// syncs and host reads, nesting, an optimizer step, a second capture.
#include "core/cuda_graph.h"

#include <gtest/gtest.h>

#include "core/cuda_context.h"
#include "core/tensor.h"
#include "optim/sgd.h"
#include "test_utils.h"

namespace tg {
namespace {

TEST(CudaGraph, WithoutAGpuNothingCaptures) {
  if (cuda::is_available()) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_FALSE(cuda::is_capturing());
  EXPECT_EQ(cuda::graph_pool_bytes(), 0u);
  cuda::Graph g;
  bool ran = false;
  EXPECT_ERROR_HAS(g.capture([&] { ran = true; }), "cuda::Graph::capture");
  EXPECT_FALSE(ran);
  EXPECT_FALSE(g.captured());
  EXPECT_ERROR_HAS(g.replay(), "cuda::Graph::replay");
}

TEST(CudaGraph, ReplayRepeatsTheRecordedWorkAndCaptureRunsNothing) {
  TG_SKIP_WITHOUT_GPU();
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5}, {5}, Device::CUDA);
  Tensor y = Tensor::from_vector<float>({10, 20, 30, 40, 50}, {5}, Device::CUDA);
  cuda::Graph g;
  g.capture([&] {
    EXPECT_TRUE(cuda::is_capturing());
    y.add_(x, 2.0);
  });
  EXPECT_FALSE(cuda::is_capturing());
  ASSERT_TRUE(g.captured());
  EXPECT_GE(g.num_nodes(), 1u);
  EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{10, 20, 30, 40, 50}));
  for (int i = 0; i < 3; ++i) g.replay();
  EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{16, 32, 48, 64, 80}));
  // New values in the same buffer are what the next replay reads.
  x.copy_(Tensor::from_vector<float>({-1, -1, -1, -1, -1}, {5}));
  g.replay();
  EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{14, 30, 46, 62, 78}));
}

TEST(CudaGraph, PoolBlocksAreNotHandedOutWhileTheGraphLivesAndAreReleasedWithIt) {
  TG_SKIP_WITHOUT_GPU();
  cuda::synchronize();
  const cuda::MemoryStats before = cuda::memory_stats();
  ASSERT_EQ(cuda::graph_pool_bytes(), 0u);
  const int64_t n = 3000;  // 12000 bytes: a small block
  Tensor x = Tensor::full({n}, 1.5, DType::Float32, Device::CUDA);
  {
    cuda::Graph g;
    Tensor out;
    void* tmp_ptr = nullptr;
    g.capture([&] {
      Tensor tmp = x.clone();  // freed inside the capture
      tmp.add_(x);
      tmp_ptr = tmp.raw_data();
      out = tmp.clone();
      out.add_(x);
    });
    EXPECT_GE(cuda::graph_pool_bytes(), 2 * size_t(n) * sizeof(float));
    void* out_ptr = out.raw_data();
    out = Tensor();  // back to the pool, not to the shared cache
    // Same-size allocations outside the capture never get the graph's blocks...
    Tensor a = Tensor::full({n}, 7.0, DType::Float32, Device::CUDA);
    Tensor b = Tensor::full({n}, 8.0, DType::Float32, Device::CUDA);
    for (const Tensor& t : {a, b}) {
      EXPECT_NE(t.raw_data(), out_ptr);
      EXPECT_NE(t.raw_data(), tmp_ptr);
    }
    // ...so the replay's writes into them leave other tensors alone.
    g.replay();
    EXPECT_EQ(a.to_vector<float>(), std::vector<float>(size_t(n), 7.0f));
    EXPECT_EQ(b.to_vector<float>(), std::vector<float>(size_t(n), 8.0f));
  }
  EXPECT_EQ(cuda::graph_pool_bytes(), 0u);
  x = Tensor();
  cuda::synchronize();
  const cuda::MemoryStats after = cuda::memory_stats();
  EXPECT_EQ(after.bytes_in_use, before.bytes_in_use);
  // The released blocks are in the shared cache: empty_cache() gives them back to the driver.
  cuda::empty_cache();
  EXPECT_LE(cuda::memory_stats().bytes_reserved, before.bytes_reserved);
}

// A size the cache cannot serve is a cudaMalloc during the capture (in relaxed mode), and the
// block is the pool's like any other.
TEST(CudaGraph, ACacheMissDuringCaptureAllocatesFromTheDriver) {
  TG_SKIP_WITHOUT_GPU();
  const int64_t n = (int64_t(45) << 20) / 4 + 12345;  // ~45 MiB, a size no other test uses
  cuda::empty_cache();                                // nothing cached that could serve it
  const uint64_t mallocs = cuda::memory_stats().cuda_mallocs;
  cuda::Graph g;
  Tensor big;
  g.capture([&] {
    big = Tensor::empty({n}, DType::Float32, Device::CUDA);
    big.fill_(2.5);
  });
  EXPECT_EQ(cuda::memory_stats().cuda_mallocs, mallocs + 1);
  EXPECT_GE(cuda::graph_pool_bytes(), size_t(n) * sizeof(float));
  big.fill_(0.0);
  g.replay();
  const std::vector<float> v = big.to_vector<float>();
  EXPECT_EQ(v.front(), 2.5f);
  EXPECT_EQ(v.back(), 2.5f);
  big = Tensor();
  g.reset();
  EXPECT_EQ(cuda::graph_pool_bytes(), 0u);
}

TEST(CudaGraph, TensorsMadeByTheCaptureOutliveTheGraph) {
  TG_SKIP_WITHOUT_GPU();
  Tensor x = Tensor::full({256}, 2.0, DType::Float32, Device::CUDA);
  Tensor out;
  {
    cuda::Graph g;
    g.capture([&] { out = x.clone(); });
    g.replay();
    EXPECT_GT(cuda::graph_pool_bytes(), 0u);
  }
  // The graph is gone but out still holds its block; it is freed to the shared cache later.
  EXPECT_EQ(out.to_vector<float>(), std::vector<float>(256, 2.0f));
  EXPECT_GT(cuda::graph_pool_bytes(), 0u);
  out = Tensor();
  EXPECT_EQ(cuda::graph_pool_bytes(), 0u);
}

TEST(CudaGraph, HostReadsAndSyncsDuringCaptureFailClearly) {
  TG_SKIP_WITHOUT_GPU();
  Tensor x = Tensor::full({4}, 3.0, DType::Float32, Device::CUDA);
  const size_t pool_before = cuda::graph_pool_bytes();
  {
    cuda::Graph g;
    EXPECT_ERROR_HAS(g.capture([&] {
      Tensor y = x.view_rows(0, 1).clone();
      (void)y.item();
    }),
                     "while capturing a CUDA graph", "from the device to the host", "item()");
    EXPECT_FALSE(g.captured());
    EXPECT_FALSE(cuda::is_capturing());
    EXPECT_ERROR_HAS(g.capture([&] { (void)x.to_vector<float>(); }), "during a CUDA graph capture");
    EXPECT_ERROR_HAS(g.capture([&] { x.copy_(Tensor::full({4}, 1.0)); }),
                     "from the host to the device");
    EXPECT_ERROR_HAS(g.capture([&] { cuda::synchronize(); }),
                     "cuda::synchronize() during a CUDA graph capture");
    EXPECT_ERROR_HAS(g.capture([&] { cuda::empty_cache(); }), "cuda::empty_cache()");
    EXPECT_ERROR_HAS(g.capture([&] { throw Error("my own failure"); }),
                     "while capturing a CUDA graph: my own failure");
    // The failed captures left the stream usable and released their pools.
    EXPECT_EQ(cuda::graph_pool_bytes(), pool_before);
    g.capture([&] { x.add_(x); });
    g.replay();
    EXPECT_EQ(x.to_vector<float>(), std::vector<float>(4, 6.0f));
  }
  EXPECT_EQ(x.to_vector<float>(), std::vector<float>(4, 6.0f));
}

TEST(CudaGraph, RefusesNestingASecondCaptureAndAnOptimizerStep) {
  TG_SKIP_WITHOUT_GPU();
  Tensor x = Tensor::full({4}, 1.0, DType::Float32, Device::CUDA);
  cuda::Graph outer, inner;
  EXPECT_ERROR_HAS(outer.capture([&] { inner.capture([&] { x.add_(x); }); }),
                   "captures do not nest");
  Tensor w = Tensor::full({4}, 1.0, DType::Float32, Device::CUDA).set_requires_grad();
  w.set_grad(Tensor::full({4}, 1.0, DType::Float32, Device::CUDA));
  optim::SGD opt({w}, {0.1});
  cuda::Graph g;
  EXPECT_ERROR_HAS(g.capture([&] { opt.step(); }), "SGD::step() during a CUDA graph capture",
                   "after the replay");
  EXPECT_EQ(opt.step_count(), 0);
  g.capture([&] { x.add_(x); });
  EXPECT_ERROR_HAS(g.capture([&] { x.add_(x); }), "already holds a capture");
  g.reset();
  EXPECT_FALSE(g.captured());
  EXPECT_ERROR_HAS(g.replay(), "nothing was captured");
  g.capture([&] { x.add_(x); });
  g.replay();
  EXPECT_EQ(x.to_vector<float>(), std::vector<float>(4, 2.0f));
}

}  // namespace
}  // namespace tg
