// matmul (ops/matmul.h): validation, the Eigen path, dispatch and the autograd node.
#include "matmul.h"

#include <Eigen/Core>
#include <memory>

#include "../core/autograd.h"
#include "../core/cuda_context.h"
#include "pointwise.h"
#include "reduce.h"
#ifdef TG_WITH_CUDA
#include "../core/cuda_utils.h"
#endif

namespace tg::ops {
namespace detail {

template <typename T>
void gemm_cpu(bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, const T* A,
              int64_t stride_a, const T* B, int64_t stride_b, T* C) {
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  for (int64_t i = 0; i < batch; ++i) {
    Eigen::Map<const Mat> a(A + i * stride_a, ta ? K : M, ta ? M : K);
    Eigen::Map<const Mat> b(B + i * stride_b, tb ? N : K, tb ? K : N);
    Eigen::Map<Mat> c(C + i * M * N, M, N);
    if (ta && tb) c.noalias() = a.transpose() * b.transpose();
    else if (ta) c.noalias() = a.transpose() * b;
    else if (tb) c.noalias() = a * b.transpose();
    else c.noalias() = a * b;
  }
}
template void gemm_cpu<float>(bool, bool, int64_t, int64_t, int64_t, int64_t, const float*, int64_t,
                              const float*, int64_t, float*);
template void gemm_cpu<double>(bool, bool, int64_t, int64_t, int64_t, int64_t, const double*,
                               int64_t, const double*, int64_t, double*);

}  // namespace detail

namespace {

// One product over (batch, M, N, K), reading A and B with the given batch strides.
Tensor gemm(bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, const Tensor& a,
            int64_t stride_a, const Tensor& b, int64_t stride_b) {
  Tensor c = Tensor::empty({batch, M, N}, a.dtype(), a.device());
  if (K == 0) return c.zero_();
  dispatch_dtype(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (a.is_cuda()) {
      TG_IF_CUDA(detail::gemm_cuda<T>(ta, tb, batch, M, N, K, a.data<T>(), stride_a, b.data<T>(),
                                      stride_b, c.data<T>(), cuda::stream()));
    } else {
      detail::gemm_cpu<T>(ta, tb, batch, M, N, K, a.data<T>(), stride_a, b.data<T>(), stride_b,
                          c.data<T>());
    }
  });
  return c;
}

// The problem as (batch, M, N, K) with batch strides of a and b (0 = shared by the batch).
struct MatmulShape {
  int64_t batch = 1, M = 0, N = 0, K = 0, stride_a = 0, stride_b = 0;
  Shape out;
};

class MatmulNode : public autograd::Node {
 public:
  explicit MatmulNode(MatmulShape s) : s_(std::move(s)) {}
  const char* name() const override { return "matmul"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    std::vector<Tensor> d(2);
    const Tensor& g = grads[0];
    const int64_t sg = s_.M * s_.N;
    if (needs_input_grad(0)) {
      // da = g @ b^T; a broadcast a sums over the batch.
      Tensor da = gemm(false, true, s_.batch, s_.M, s_.K, s_.N, g, sg, saved_b.get("matmul"), s_.stride_b);
      if (s_.stride_a == 0 && s_.batch > 1) da = detail::reduce_raw(detail::ReduceOp::Sum, da, {0}, 1.0);
      d[0] = da.view(inputs()[0].shape);
    }
    if (needs_input_grad(1)) {
      Tensor db = gemm(true, false, s_.batch, s_.K, s_.N, s_.M, saved_a.get("matmul"), s_.stride_a, g, sg);
      if (s_.stride_b == 0 && s_.batch > 1) db = detail::reduce_raw(detail::ReduceOp::Sum, db, {0}, 1.0);
      d[1] = db.view(inputs()[1].shape);
    }
    return d;
  }
  void release_saved() override {
    saved_a.release();
    saved_b.release();
  }
  autograd::SavedTensor saved_a, saved_b;

 private:
  MatmulShape s_;
};

MatmulShape matmul_shape(const Tensor& a, const Tensor& b) {
  const Shape& as = a.shape();
  const Shape& bs = b.shape();
  TG_CHECK((a.dim() == 2 || a.dim() == 3) && (b.dim() == 2 || b.dim() == 3),
           "matmul: expected 2-D or 3-D operands, got ", as, " and ", bs);
  const int64_t ka = as[as.size() - 1], kb = bs[bs.size() - 2];
  TG_CHECK(ka == kb, "matmul: the inner sizes differ: ", as, " @ ", bs, " (", ka, " vs ", kb, ")");
  MatmulShape s;
  s.K = ka;
  s.N = bs.back();
  if (a.dim() == 3 && b.dim() == 3) {
    TG_CHECK(as[0] == bs[0], "matmul: batch sizes differ: ", as, " @ ", bs);
    s.batch = as[0];
    s.M = as[1];
    s.stride_a = s.M * s.K;
    s.stride_b = s.K * s.N;
    s.out = {as[0], as[1], s.N};
  } else if (a.dim() == 3) {  // one (B*M, K) @ (K, N) product
    s.M = as[0] * as[1];
    s.out = {as[0], as[1], s.N};
  } else if (b.dim() == 3) {  // a broadcast over the batch
    s.batch = bs[0];
    s.M = as[0];
    s.stride_b = s.K * s.N;
    s.out = {bs[0], as[0], s.N};
  } else {
    s.M = as[0];
    s.out = {as[0], s.N};
  }
  return s;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  TG_CHECK(a.defined() && b.defined(), "matmul: expected defined tensors");
  detail::check_same_kind("matmul", a, b);
  const MatmulShape s = matmul_shape(a, b);
  Tensor y = gemm(false, false, s.batch, s.M, s.N, s.K, a, s.stride_a, b, s.stride_b).view(s.out);
  if (autograd::should_record({a, b})) {
    auto node = std::make_shared<MatmulNode>(s);
    if (b.requires_grad()) node->saved_a = autograd::SavedTensor(a);
    if (a.requires_grad()) node->saved_b = autograd::SavedTensor(b);
    autograd::record(node, {a, b}, {y});
  }
  return y;
}

}  // namespace tg::ops
