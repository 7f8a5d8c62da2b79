// conv2d on CUDA through cuDNN's convolution API (host code; built only with CUDA).
//
// Forward: cudnnConvolutionForward, then cudnnAddTensor for the bias. Backward:
// cudnnConvolutionBackwardFilter (dw), cudnnConvolutionBackwardData (dx, only when asked for) and
// our own two-stage reduction for db (conv2d.cu; deterministic, no atomics). Everything runs on
// tg::cuda::stream() through tg::cuda::cudnn_handle().
//
// Math: float32 uses CUDNN_TENSOR_OP_MATH (TF32 allowed) when conv::allow_tf32(), else
// CUDNN_FMA_MATH; float64 uses CUDNN_DEFAULT_MATH. Algorithms are chosen once per (kind, device,
// dtype, shape, stride, padding, tf32, deterministic, benchmark) and cached: with conv::benchmark()
// by timing (cudnnFind*AlgorithmEx, workspace from our caching allocator), else by cuDNN's
// heuristics (cudnnGet*Algorithm_v7). Candidates must have succeeded, be deterministic when
// conv::deterministic() is set, and use FMA math when float32 TF32 is off. The convolution
// descriptor then takes the chosen candidate's math type. Workspaces are float32 tensors from the
// caching allocator, freed (returned to its cache) when the call ends.
#include <algorithm>
#include <array>
#include <map>
#include <mutex>
#include <vector>

#include "../core/cuda_context.h"
#include "../core/cuda_utils.h"
#include "../core/tensor.h"
#include "conv2d.h"

namespace tg::ops {
namespace {

// ---- RAII descriptors ---------------------------------------------------------------------------

class TensorDesc {
 public:
  TensorDesc(cudnnDataType_t type, int64_t n, int64_t c, int64_t h, int64_t w) {
    TG_CUDNN_CHECK(cudnnCreateTensorDescriptor(&desc_));
    try {
      TG_CUDNN_CHECK(cudnnSetTensor4dDescriptor(desc_, CUDNN_TENSOR_NCHW, type, int(n), int(c),
                                                int(h), int(w)));
    } catch (...) {
      cudnnDestroyTensorDescriptor(desc_);
      throw;
    }
  }
  ~TensorDesc() { cudnnDestroyTensorDescriptor(desc_); }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
  cudnnTensorDescriptor_t get() const { return desc_; }

 private:
  cudnnTensorDescriptor_t desc_ = nullptr;
};

class FilterDesc {
 public:
  FilterDesc(cudnnDataType_t type, int64_t k, int64_t c, int64_t h, int64_t w) {
    TG_CUDNN_CHECK(cudnnCreateFilterDescriptor(&desc_));
    try {
      TG_CUDNN_CHECK(cudnnSetFilter4dDescriptor(desc_, type, CUDNN_TENSOR_NCHW, int(k), int(c),
                                                int(h), int(w)));
    } catch (...) {
      cudnnDestroyFilterDescriptor(desc_);
      throw;
    }
  }
  ~FilterDesc() { cudnnDestroyFilterDescriptor(desc_); }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
  cudnnFilterDescriptor_t get() const { return desc_; }

 private:
  cudnnFilterDescriptor_t desc_ = nullptr;
};

class ConvDesc {
 public:
  ConvDesc(cudnnDataType_t compute_type, int64_t padding, int64_t stride, cudnnMathType_t math) {
    TG_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&desc_));
    try {
      TG_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(desc_, int(padding), int(padding), int(stride),
                                                     int(stride), 1, 1, CUDNN_CROSS_CORRELATION,
                                                     compute_type));
      set_math(math);
    } catch (...) {
      cudnnDestroyConvolutionDescriptor(desc_);
      throw;
    }
  }
  ~ConvDesc() { cudnnDestroyConvolutionDescriptor(desc_); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
  void set_math(cudnnMathType_t math) { TG_CUDNN_CHECK(cudnnSetConvolutionMathType(desc_, math)); }
  cudnnConvolutionDescriptor_t get() const { return desc_; }

 private:
  cudnnConvolutionDescriptor_t desc_ = nullptr;
};

// ---- per-call setup -----------------------------------------------------------------------------

// Descriptors and settings of one convolution call.
struct ConvSetup {
  ConvSetup(const detail::Conv2dParams& p, DType dtype)
      : type(dtype == DType::Float32 ? CUDNN_DATA_FLOAT : CUDNN_DATA_DOUBLE),
        is_float(dtype == DType::Float32),
        tf32(is_float && conv::allow_tf32()),
        deterministic(conv::deterministic()),
        benchmark(conv::benchmark()),
        x(type, p.N, p.Cin, p.H, p.W),
        y(type, p.N, p.Cout, p.Hout, p.Wout),
        w(type, p.Cout, p.Cin, p.kH, p.kW),
        conv(type, p.padding, p.stride, requested_math()) {}

  cudnnMathType_t requested_math() const {
    if (!is_float) return CUDNN_DEFAULT_MATH;
    return tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
  }
  // alpha = 1 and beta = 0 in the data's precision.
  const void* one() const { return is_float ? static_cast<const void*>(&one_f) : &one_d; }
  const void* zero() const { return is_float ? static_cast<const void*>(&zero_f) : &zero_d; }

  cudnnDataType_t type;
  bool is_float, tf32, deterministic, benchmark;
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;
  float one_f = 1.f, zero_f = 0.f;
  double one_d = 1.0, zero_d = 0.0;
};

// A scratch buffer of at least nbytes from the caching allocator (undefined for 0 bytes).
Tensor workspace(size_t nbytes) {
  if (nbytes == 0) return Tensor();
  return Tensor::empty({int64_t((nbytes + 3) / 4)}, DType::Float32, Device::CUDA);
}

void* data_or_null(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }

// For timing with cudnnFind*AlgorithmEx: a workspace as large as the hungriest algorithm wants (at
// most 1 GiB), halved while the allocator cannot provide it.
Tensor find_workspace(size_t wanted, size_t* got) {
  size_t size = std::min<size_t>(wanted, size_t(1) << 30);
  while (size > 0) {
    try {
      Tensor t = workspace(size);
      *got = size;
      return t;
    } catch (const Error&) {
      size = size < (size_t(1) << 20) ? 0 : size / 2;
    }
  }
  *got = 0;
  return Tensor();
}

// ---- the algorithm cache ------------------------------------------------------------------------

enum class Kind : int64_t { Forward = 0, BackwardData = 1, BackwardFilter = 2 };

using AlgoKey = std::array<int64_t, 16>;

struct AlgoChoice {
  int algo = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

std::mutex g_cache_mutex;
std::map<AlgoKey, AlgoChoice>& algo_cache() {
  static std::map<AlgoKey, AlgoChoice> cache;
  return cache;
}

AlgoKey make_key(Kind kind, const detail::Conv2dParams& p, const ConvSetup& s) {
  return {int64_t(kind),
          int64_t(cuda::current_device()),
          int64_t(s.type),
          p.N,
          p.Cin,
          p.H,
          p.W,
          p.Cout,
          p.kH,
          p.kW,
          p.stride,
          p.padding,
          int64_t(s.tf32),
          int64_t(s.deterministic),
          int64_t(s.benchmark),
          0};
}

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::Forward:
      return "forward";
    case Kind::BackwardData:
      return "backward-data";
    default:
      return "backward-filter";
  }
}

// The first candidate (cuDNN lists them best first) that ran, is deterministic when required, and
// respects strict float32.
template <typename Perf>
AlgoChoice pick(Kind kind, const detail::Conv2dParams& p, const ConvSetup& s,
                const std::vector<Perf>& perfs, int count) {
  for (int i = 0; i < count; ++i) {
    const Perf& r = perfs[size_t(i)];
    if (r.status != CUDNN_STATUS_SUCCESS) continue;
    if (s.deterministic && r.determinism != CUDNN_DETERMINISTIC) continue;
    if (s.is_float && !s.tf32 && r.mathType != CUDNN_FMA_MATH) continue;
    return AlgoChoice{int(r.algo), r.mathType};
  }
  TG_THROW("conv2d: expected cuDNN to offer a ", kind_name(kind), " algorithm for x ",
           Shape{p.N, p.Cin, p.H, p.W}, ", weight ", Shape{p.Cout, p.Cin, p.kH, p.kW}, ", stride ",
           p.stride, ", padding ", p.padding, " (", s.is_float ? "float32" : "float64", ", tf32 ",
           s.tf32, ", deterministic ", s.deterministic, "), got none of ", count,
           " candidates usable");
}

// Looks the choice up, or runs search() and caches its result. The search runs outside the lock.
template <typename Search>
AlgoChoice cached_choice(const AlgoKey& key, Search&& search) {
  {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    auto it = algo_cache().find(key);
    if (it != algo_cache().end()) return it->second;
  }
  AlgoChoice c = search();
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  algo_cache()[key] = c;
  return c;
}

AlgoChoice forward_algo(const detail::Conv2dParams& p, const ConvSetup& s, const void* x,
                        const void* w, void* y) {
  return cached_choice(make_key(Kind::Forward, p, s), [&] {
    cudnnHandle_t h = cuda::cudnn_handle();
    std::vector<cudnnConvolutionFwdAlgoPerf_t> perfs(CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
    int count = 0;
    if (s.benchmark) {
      size_t wanted = 0;
      for (int a = 0; a < CUDNN_CONVOLUTION_FWD_ALGO_COUNT; ++a) {
        size_t sz = 0;
        if (cudnnGetConvolutionForwardWorkspaceSize(h, s.x.get(), s.w.get(), s.conv.get(),
                                                    s.y.get(), cudnnConvolutionFwdAlgo_t(a),
                                                    &sz) == CUDNN_STATUS_SUCCESS)
          wanted = std::max(wanted, sz);
      }
      size_t got = 0;
      Tensor ws = find_workspace(wanted, &got);
      TG_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(
          h, s.x.get(), x, s.w.get(), w, s.conv.get(), s.y.get(), y, int(perfs.size()), &count,
          perfs.data(), data_or_null(ws), got));
    } else {
      TG_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, s.x.get(), s.w.get(), s.conv.get(),
                                                            s.y.get(), int(perfs.size()), &count,
                                                            perfs.data()));
    }
    return pick(Kind::Forward, p, s, perfs, count);
  });
}

AlgoChoice backward_data_algo(const detail::Conv2dParams& p, const ConvSetup& s, const void* w,
                              const void* dy, void* dx) {
  return cached_choice(make_key(Kind::BackwardData, p, s), [&] {
    cudnnHandle_t h = cuda::cudnn_handle();
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perfs(CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT);
    int count = 0;
    if (s.benchmark) {
      size_t wanted = 0;
      for (int a = 0; a < CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT; ++a) {
        size_t sz = 0;
        if (cudnnGetConvolutionBackwardDataWorkspaceSize(
                h, s.w.get(), s.y.get(), s.conv.get(), s.x.get(), cudnnConvolutionBwdDataAlgo_t(a),
                &sz) == CUDNN_STATUS_SUCCESS)
          wanted = std::max(wanted, sz);
      }
      size_t got = 0;
      Tensor ws = find_workspace(wanted, &got);
      TG_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
          h, s.w.get(), w, s.y.get(), dy, s.conv.get(), s.x.get(), dx, int(perfs.size()), &count,
          perfs.data(), data_or_null(ws), got));
    } else {
      TG_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
          h, s.w.get(), s.y.get(), s.conv.get(), s.x.get(), int(perfs.size()), &count,
          perfs.data()));
    }
    return pick(Kind::BackwardData, p, s, perfs, count);
  });
}

AlgoChoice backward_filter_algo(const detail::Conv2dParams& p, const ConvSetup& s, const void* x,
                                const void* dy, void* dw) {
  return cached_choice(make_key(Kind::BackwardFilter, p, s), [&] {
    cudnnHandle_t h = cuda::cudnn_handle();
    std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perfs(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);
    int count = 0;
    if (s.benchmark) {
      size_t wanted = 0;
      for (int a = 0; a < CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT; ++a) {
        size_t sz = 0;
        if (cudnnGetConvolutionBackwardFilterWorkspaceSize(
                h, s.x.get(), s.y.get(), s.conv.get(), s.w.get(),
                cudnnConvolutionBwdFilterAlgo_t(a), &sz) == CUDNN_STATUS_SUCCESS)
          wanted = std::max(wanted, sz);
      }
      size_t got = 0;
      Tensor ws = find_workspace(wanted, &got);
      TG_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
          h, s.x.get(), x, s.y.get(), dy, s.conv.get(), s.w.get(), dw, int(perfs.size()), &count,
          perfs.data(), data_or_null(ws), got));
    } else {
      TG_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
          h, s.x.get(), s.y.get(), s.conv.get(), s.w.get(), int(perfs.size()), &count,
          perfs.data()));
    }
    return pick(Kind::BackwardFilter, p, s, perfs, count);
  });
}

}  // namespace

namespace conv {
size_t algorithm_cache_size() {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  return algo_cache().size();
}
void clear_algorithm_cache() {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  algo_cache().clear();
}
}  // namespace conv

namespace detail {

void conv2d_forward_cuda(const Conv2dParams& p, DType dtype, const void* x, const void* w,
                         const void* b, void* y) {
  ConvSetup s(p, dtype);
  cudnnHandle_t h = cuda::cudnn_handle();
  const AlgoChoice c = forward_algo(p, s, x, w, y);
  const auto algo = cudnnConvolutionFwdAlgo_t(c.algo);
  s.conv.set_math(c.math);
  size_t ws_size = 0;
  TG_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, s.x.get(), s.w.get(), s.conv.get(),
                                                         s.y.get(), algo, &ws_size));
  Tensor ws = workspace(ws_size);
  TG_CUDNN_CHECK(cudnnConvolutionForward(h, s.one(), s.x.get(), x, s.w.get(), w, s.conv.get(), algo,
                                         data_or_null(ws), ws_size, s.zero(), s.y.get(), y));
  if (b) {
    TensorDesc bias(s.type, 1, p.Cout, 1, 1);
    TG_CUDNN_CHECK(cudnnAddTensor(h, s.one(), bias.get(), b, s.one(), s.y.get(), y));
  }
}

void conv2d_backward_cuda(const Conv2dParams& p, DType dtype, const void* x, const void* w,
                          const void* dy, void* dx, void* dw, void* db) {
  ConvSetup s(p, dtype);
  cudnnHandle_t h = cuda::cudnn_handle();
  if (dw) {
    TG_CHECK(x, "conv2d backward: expected the input x to compute dweight, got none");
    const AlgoChoice c = backward_filter_algo(p, s, x, dy, dw);
    const auto algo = cudnnConvolutionBwdFilterAlgo_t(c.algo);
    s.conv.set_math(c.math);
    size_t ws_size = 0;
    TG_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
        h, s.x.get(), s.y.get(), s.conv.get(), s.w.get(), algo, &ws_size));
    Tensor ws = workspace(ws_size);
    TG_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, s.one(), s.x.get(), x, s.y.get(), dy,
                                                  s.conv.get(), algo, data_or_null(ws), ws_size,
                                                  s.zero(), s.w.get(), dw));
    s.conv.set_math(s.requested_math());
  }
  if (dx) {
    TG_CHECK(w, "conv2d backward: expected the weight to compute dx, got none");
    const AlgoChoice c = backward_data_algo(p, s, w, dy, dx);
    const auto algo = cudnnConvolutionBwdDataAlgo_t(c.algo);
    s.conv.set_math(c.math);
    size_t ws_size = 0;
    TG_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
        h, s.w.get(), s.y.get(), s.conv.get(), s.x.get(), algo, &ws_size));
    Tensor ws = workspace(ws_size);
    TG_CUDNN_CHECK(cudnnConvolutionBackwardData(h, s.one(), s.w.get(), w, s.y.get(), dy,
                                                s.conv.get(), algo, data_or_null(ws), ws_size,
                                                s.zero(), s.x.get(), dx));
  }
  if (db) {
    const int64_t P = conv2d_bias_grad_partials(p.N * p.Hout * p.Wout);
    Tensor partials = Tensor::empty({p.Cout * P}, dtype, Device::CUDA);
    const int64_t HW = p.Hout * p.Wout;
    if (dtype == DType::Float32) {
      conv2d_bias_grad_cuda(static_cast<const float*>(dy), static_cast<float*>(db),
                            partials.data<float>(), p.N, p.Cout, HW, cuda::stream());
    } else {
      conv2d_bias_grad_cuda(static_cast<const double*>(dy), static_cast<double*>(db),
                            partials.data<double>(), p.N, p.Cout, HW, cuda::stream());
    }
  }
}

}  // namespace detail
}  // namespace tg::ops
