#include <gtest/gtest.h>

#include <sstream>

#include "core/cuda_context.h"
#include "core/memory.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "test_utils.h"

using namespace tg;

TEST(Tensor, FactoriesShapesAndValues) {
  Tensor z = Tensor::zeros({2, 3});
  EXPECT_EQ(z.shape(), (Shape{2, 3}));
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(z.dtype(), DType::Float32);
  EXPECT_EQ(z.device(), Device::CPU);
  for (float v : z.to_vector<float>()) EXPECT_EQ(v, 0.0f);
  Tensor o = Tensor::ones({4}, DType::Float64);
  for (double v : o.to_vector<double>()) EXPECT_EQ(v, 1.0);
  Tensor f = Tensor::full({2, 2}, 2.5);
  for (float v : f.to_vector<float>()) EXPECT_EQ(v, 2.5f);
  Tensor s = Tensor::full({}, 3.0);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.numel(), 1);
  EXPECT_DOUBLE_EQ(s.item(), 3.0);
  EXPECT_ERROR_HAS(Tensor::zeros({2, 3}).item(), "item()", "one element", "shape [2, 3]");
  EXPECT_EQ(Tensor::empty({0, 5}).numel(), 0);
  EXPECT_EQ(o.size(-1), 4);
  EXPECT_ERROR_HAS(o.size(1), "size(1)", "shape [4]", "1 dimensions");
  EXPECT_ERROR_HAS(Tensor::empty({-1}), "shape [-1]", "negative dimension");
}

TEST(Tensor, RandomIsSeededAndReproducible) {
  auto a = Tensor::rand({1000}, 42).to_vector<float>();
  auto b = Tensor::rand({1000}, 42).to_vector<float>();
  auto c = Tensor::rand({1000}, 43).to_vector<float>();
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  double lo = 1, hi = 0, mean = 0;
  for (float v : a) {
    lo = std::min(lo, double(v));
    hi = std::max(hi, double(v));
    mean += v;
  }
  EXPECT_GE(lo, 0.0);
  EXPECT_LT(hi, 1.0);
  EXPECT_NEAR(mean / 1000, 0.5, 0.05);
  auto n = Tensor::randn({20000}, 5, DType::Float64).to_vector<double>();
  double m = 0, v = 0;
  for (double x : n) m += x;
  m /= n.size();
  for (double x : n) v += (x - m) * (x - m);
  v /= n.size();
  EXPECT_NEAR(m, 0.0, 0.03);
  EXPECT_NEAR(v, 1.0, 0.05);
}

TEST(Tensor, DtypeConversionAndClone) {
  Tensor a = Tensor::from_vector<double>({1.5, -2.25, 3.0}, {3});
  Tensor f = a.to(DType::Float32);
  EXPECT_EQ(f.dtype(), DType::Float32);
  EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{1.5f, -2.25f, 3.0f}));
  EXPECT_TRUE(a.to(DType::Float64).same(a));
  Tensor c = a.clone();
  c.fill_(7);
  EXPECT_EQ(a.to_vector<double>()[0], 1.5);
  EXPECT_ERROR_HAS(a.data<float>(), "data<float32>()", "float64 tensor");
  EXPECT_ERROR_HAS(Tensor::from_vector<float>({1, 2}, {3}), "from_vector", "shape [3]", "needs 3 values",
                   "got 2");
}

TEST(Tensor, InPlaceOpsBumpVersion) {
  Tensor a = Tensor::ones({3}, DType::Float64);
  uint64_t v0 = a.version();
  a.fill_(2);
  EXPECT_GT(a.version(), v0);
  Tensor b = Tensor::full({3}, 3.0, DType::Float64);
  a.add_(b, 2.0);
  EXPECT_EQ(a.to_vector<double>(), (std::vector<double>{8, 8, 8}));
  EXPECT_ERROR_HAS(a.add_(Tensor::ones({4}, DType::Float64)), "add_", "like float64 cpu [3]",
                   "got float64 cpu [4]");
  a.copy_(Tensor::full({3}, 1.25, DType::Float32));
  EXPECT_EQ(a.to_vector<double>()[2], 1.25);
  EXPECT_ERROR_HAS(a.copy_(Tensor::ones({2})), "copy_", "source of shape [3]", "got [2]");
}

TEST(Tensor, ViewSharesStorage) {
  Tensor a = Tensor::zeros({2, 6});
  Tensor v = a.view({3, 4});
  v.fill_(1);
  EXPECT_EQ(a.to_vector<float>()[11], 1.0f);
  EXPECT_ERROR_HAS(a.view({5}), "view", "shape [2, 6] (12 elements)", "as [5]");
}

TEST(Tensor, PrintsSmallTensors) {
  std::ostringstream os;
  os << Tensor::from_vector<float>({1, 2}, {2});
  EXPECT_EQ(os.str(), "tensor([1.0000, 2.0000], shape=[2], dtype=float32, device=cpu)");
}

TEST(Tensor, UndefinedTensorGivesClearError) {
  Tensor t;
  EXPECT_FALSE(t.defined());
  try {
    t.numel();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("undefined tensor"), std::string::npos);
  }
}

TEST(Tensor, ParsesNames) {
  EXPECT_EQ(parse_dtype("float64"), DType::Float64);
  EXPECT_EQ(parse_device("cuda"), Device::CUDA);
  EXPECT_ERROR_HAS(parse_dtype("int8"), "unknown dtype 'int8'", "float32 or float64");
  EXPECT_ERROR_HAS(parse_device("tpu"), "unknown device 'tpu'", "cpu or cuda");
}

TEST(Tensor, CudaUnavailableIsAnErrorNotACrash) {
  if (cuda::is_available()) GTEST_SKIP() << "a GPU is present";
  // a CPU-only build says it has no CUDA support; a CUDA build on a machine without a GPU says so
  const std::string msg = tg::testing::error_of([] { Tensor::zeros({2}, DType::Float32, Device::CUDA); });
  EXPECT_TRUE(msg.find("no CUDA support") != std::string::npos ||
              msg.find("8 bytes on CUDA: no usable CUDA device") != std::string::npos)
      << msg;
  EXPECT_EQ(cuda::memory_stats().bytes_in_use, 0u);
}

TEST(TensorCuda, RoundTripAndKernels) {
  TG_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::Float32, DType::Float64}) {
    Tensor h = Tensor::randn({3, 5, 7}, 11, dt);
    Tensor d = h.to(Device::CUDA);
    EXPECT_EQ(d.device(), Device::CUDA);
    EXPECT_EQ(d.to_vector<double>(), h.to_vector<double>());
    Tensor d2 = d.clone();
    d2.add_(d, -2.0);  // d2 = -d
    auto v = d2.to_vector<double>();
    auto w = h.to_vector<double>();
    for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(v[i], -w[i]);
    Tensor c = d.to(dt == DType::Float32 ? DType::Float64 : DType::Float32);
    EXPECT_LT(tg::testing::max_abs_diff(c, h), 1e-6);
    d.fill_(4.5);
    EXPECT_DOUBLE_EQ(d.to_vector<double>()[104], 4.5);
    EXPECT_DOUBLE_EQ(Tensor::full({}, 2.0, dt, Device::CUDA).item(), 2.0);
  }
}

TEST(TensorCuda, RandomMatchesCpu) {
  TG_SKIP_WITHOUT_GPU();
  EXPECT_EQ(Tensor::randn({64}, 3, DType::Float32, Device::CUDA).to_vector<float>(),
            Tensor::randn({64}, 3).to_vector<float>());
}

TEST(CudaAllocator, ReusesFreedBlocksAndCountsBytes) {
  TG_SKIP_WITHOUT_GPU();
  cuda::synchronize();
  auto before = cuda::memory_stats();
  {
    Tensor a = Tensor::empty({1 << 20}, DType::Float32, Device::CUDA);  // 4 MiB
    auto s = cuda::memory_stats();
    EXPECT_GE(s.bytes_in_use, before.bytes_in_use + (4u << 20));
    EXPECT_GE(s.peak_bytes, s.bytes_in_use);
  }
  auto mid = cuda::memory_stats();
  EXPECT_EQ(mid.bytes_in_use, before.bytes_in_use);
  Tensor b = Tensor::empty({1 << 20}, DType::Float32, Device::CUDA);
  auto after = cuda::memory_stats();
  EXPECT_EQ(after.cuda_mallocs, mid.cuda_mallocs) << "a same-size block should come from the cache";
  EXPECT_GT(after.cache_hits, mid.cache_hits);
  cuda::reset_peak_memory();
  EXPECT_EQ(cuda::memory_stats().peak_bytes, cuda::memory_stats().bytes_in_use);
}

TEST(CudaAllocator, OutOfMemoryIsAClearError) {
  TG_SKIP_WITHOUT_GPU();
  try {
    Tensor huge = Tensor::empty({int64_t(1) << 42}, DType::Float32, Device::CUDA);  // 16 TiB
    FAIL() << "allocation of 16 TiB succeeded";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("out of memory"), std::string::npos) << m;
    EXPECT_NE(m.find("17592186044416 bytes"), std::string::npos) << m;
  }
  Tensor ok = Tensor::ones({16}, DType::Float32, Device::CUDA);  // the allocator still works
  EXPECT_EQ(ok.to_vector<float>()[15], 1.0f);
}

TEST(PinnedMemory, HostTensorUsable) {
  Tensor p = Tensor::empty_pinned({8});
  EXPECT_EQ(p.device(), Device::CPU);
  p.fill_(3);
  EXPECT_EQ(p.to_vector<float>()[7], 3.0f);
  if (cuda::is_available()) EXPECT_TRUE(p.is_pinned());
}
