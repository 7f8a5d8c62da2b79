// What a host framework (tapegrad_torch) uses: views of memory it owns, its allocator, its stream,
// and a tape of its own.
#include <gtest/gtest.h>

#include <thread>

#include <cstdlib>
#include <vector>

#include "core/autograd.h"
#include "core/cuda_context.h"
#include "core/memory.h"
#include "core/tensor.h"
#include "ops/elementwise.h"
#include "test_utils.h"

using namespace tg;

TEST(External, FromExternalViewsTheMemoryAndNeverFreesIt) {
  std::vector<double> host{1, 2, 3, 4, 5, 6};
  {
    Tensor t = Tensor::from_external(host.data(), {2, 3}, DType::Float64, Device::CPU);
    EXPECT_EQ(t.raw_data(), host.data());
    EXPECT_EQ(t.shape(), (Shape{2, 3}));
    EXPECT_EQ(t.to_vector<double>(), host);
    t.fill_(7.0);  // writes through to the owner's memory
  }
  for (double v : host) EXPECT_EQ(v, 7.0);  // and the handle's end freed nothing (ASan would say)
  EXPECT_ERROR_HAS(Tensor::from_external(nullptr, {2}, DType::Float32, Device::CPU),
                   "from_external: got a null pointer for 2 elements of shape [2]");
  EXPECT_EQ(Tensor::from_external(nullptr, {0, 3}, DType::Float32, Device::CPU).numel(), 0);
}

TEST(External, TapeSwapKeepsAForwardApartAndRunsItsBackwardLater) {
  std::vector<float> xv{1, 2, 3};
  Tensor x = Tensor::from_external(xv.data(), {3}, DType::Float32, Device::CPU);
  x.set_requires_grad(true);
  const size_t before = autograd::tape_size();
  std::vector<std::shared_ptr<autograd::Node>> tape;
  Tensor y;
  {
    autograd::TapeSwap swap(tape);
    y = ops::mul(x, x);
  }
  EXPECT_EQ(tape.size(), 1u);
  EXPECT_EQ(autograd::tape_size(), before);  // the thread's own tape is untouched
  {
    autograd::TapeSwap swap(tape);
    autograd::backward({y}, {Tensor::ones({3})}, /*retain_graph=*/true);
  }
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{2, 4, 6}));
  EXPECT_EQ(tape.size(), 1u);  // retained: a second backward may follow
}

// PyTorch runs a CUDA backward on a thread of its own: a swapped-in tape's graph (a composition of
// several nodes, so the engine walks it) runs backward there, past the thread checks.
TEST(External, ASwappedInTapeRunsItsBackwardOnAnotherThread) {
  Tensor x = Tensor::from_vector<float>({1, 2, 3}, {3}).set_requires_grad(true);
  std::vector<std::shared_ptr<autograd::Node>> tape;
  Tensor y;
  {
    autograd::TapeSwap swap(tape);
    y = ops::mul(ops::mul(x, x), x);
  }
  ASSERT_EQ(tape.size(), 2u);
  std::string error;
  std::thread other([&] {
    try {
      autograd::TapeSwap swap(tape);
      autograd::backward({y}, {Tensor::ones({3})}, /*retain_graph=*/true);
    } catch (const Error& e) {
      error = e.what();
    }
  });
  other.join();
  EXPECT_EQ(error, "");
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{3, 12, 27}));
  // Without the swap, the other thread is refused (the graph is not its own).
  std::thread refused([&] {
    error = tg::testing::error_of([&] { autograd::backward({y}, {Tensor::ones({3})}, true); });
  });
  refused.join();
  EXPECT_CONTAINS(error, "recorded on another thread");
}

namespace {
int g_allocs = 0, g_frees = 0;
void* counting_alloc(size_t n) {
  ++g_allocs;
  return std::malloc(n);
}
void counting_free(void* p) {
  ++g_frees;
  std::free(p);
}
}  // namespace

TEST(External, AllocatorGuardServesCudaStorageAndTakesItBackAfterTheGuard) {
  TG_SKIP_WITHOUT_GPU();
  g_allocs = g_frees = 0;
  std::shared_ptr<Storage> s;
  {
    cuda::ExternalAllocatorGuard guard(counting_alloc, counting_free);
    s = allocate_storage(256, Device::CUDA);
  }
  EXPECT_EQ(g_allocs, 1);
  EXPECT_EQ(s->external_free, &counting_free);
  s.reset();  // after the guard: still returned to the allocator that gave it
  EXPECT_EQ(g_frees, 1);
}

TEST(External, StreamGuardQueuesOnTheGivenStream) {
  TG_SKIP_WITHOUT_GPU();
  Tensor a = Tensor::ones({1000}, DType::Float32, Device::CUDA);
  {
    cuda::StreamGuard guard(nullptr);  // the legacy default stream
    a.fill_(3.0);
    cuda::synchronize();  // waits for that stream (tapegrad's own does not wait for it)
  }
  for (float v : a.to_vector<float>()) ASSERT_EQ(v, 3.0f);
}
