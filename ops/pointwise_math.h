// The formulas of the pointwise ops, shared by the CPU loops and the CUDA kernel (ops/pointwise.h).
//
// One function, apply_pointwise(op, a, b, c, s0, s1), computes one output element from up to three
// input elements and two scalars. The forward ops read a (and b); the backward ops read the incoming
// gradient as a and the saved tensors as b and c. Comparisons follow PyTorch's gradient conventions:
// maximum/minimum split a tie evenly, relu's gradient is zero at 0, abs's is sign(x) (0 at 0),
// clamp's passes where lo <= x <= hi.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define TG_POINTWISE_HD __host__ __device__ __forceinline__
#else
#define TG_POINTWISE_HD inline
#endif

namespace tg::ops::detail {

enum class PointwiseOp : int {
  // forward, two inputs
  Add,      ///< a + b
  Sub,      ///< a - b
  Mul,      ///< a * b
  Div,      ///< a / b
  Maximum,  ///< max(a, b)
  Minimum,  ///< min(a, b)
  // forward, one input
  Affine,    ///< s0 * a + s1 (copies, negation, scaling)
  Exp,       ///< exp(a)
  Log,       ///< log(a)
  Sqrt,      ///< sqrt(a)
  Abs,       ///< |a|
  Pow,       ///< a^s0
  Relu,      ///< max(a, 0)
  Tanh,      ///< tanh(a)
  Sigmoid,   ///< 1 / (1 + exp(-a))
  Clamp,     ///< min(max(a, s0), s1)
  SmoothL1,  ///< |a| < s0 ? 0.5 a^2 / s0 : |a| - 0.5 s0 (s0 = beta > 0)
  Equal,     ///< a == b ? 1 : 0
  // backward: a is the incoming gradient g
  MulDiv,       ///< a * b / c
  DivGradB,     ///< -a * b / (c * c): d(x / y)/dy with b = x, c = y
  MaxGrad,      ///< a * (b > c ? 1 : b == c ? 0.5 : 0): d max(b, c)/db
  MinGrad,      ///< a * (b < c ? 1 : b == c ? 0.5 : 0): d min(b, c)/db
  SqrtGrad,     ///< a / (2 b) with b = sqrt(x)
  SignGrad,     ///< s0 * a * sign(b): abs and l1_loss
  PowGrad,      ///< a * s0 * b^(s0 - 1) (0 when s0 == 0)
  PositiveGrad, ///< b > 0 ? a : 0: relu, with b = relu(x)
  TanhGrad,     ///< a * (1 - b^2) with b = tanh(x)
  SigmoidGrad,  ///< a * b * (1 - b) with b = sigmoid(x)
  ClampGrad,    ///< s0 <= b <= s1 ? a : 0
  SmoothL1Grad, ///< s1 * a * (|b| < s0 ? b / s0 : sign(b))
};

template <typename T>
TG_POINTWISE_HD T sign_of(T x) {
  return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
}

template <typename T>
TG_POINTWISE_HD T apply_pointwise(PointwiseOp op, T a, T b, T c, T s0, T s1) {
  using std::exp;
  using std::fabs;
  using std::log;
  using std::pow;
  using std::sqrt;
  using std::tanh;
  switch (op) {
    case PointwiseOp::Add: return a + b;
    case PointwiseOp::Sub: return a - b;
    case PointwiseOp::Mul: return a * b;
    case PointwiseOp::Div: return a / b;
    // NaN propagates, as in torch.maximum.
    case PointwiseOp::Maximum: return (a != a || a > b) ? a : b;
    case PointwiseOp::Minimum: return (a != a || a < b) ? a : b;
    case PointwiseOp::Affine: return s0 * a + s1;
    case PointwiseOp::Exp: return exp(a);
    case PointwiseOp::Log: return log(a);
    case PointwiseOp::Sqrt: return sqrt(a);
    case PointwiseOp::Abs: return fabs(a);
    case PointwiseOp::Pow: return pow(a, s0);
    case PointwiseOp::Relu: return a > T(0) ? a : T(0);
    case PointwiseOp::Tanh: return tanh(a);
    case PointwiseOp::Sigmoid: {
      // Never exponentiates a positive number, so nothing overflows.
      if (a >= T(0)) return T(1) / (T(1) + exp(-a));
      const T e = exp(a);
      return e / (T(1) + e);
    }
    case PointwiseOp::Clamp: return a < s0 ? s0 : (a > s1 ? s1 : a);
    case PointwiseOp::SmoothL1: {
      const T d = fabs(a);
      return d < s0 ? T(0.5) * a * a / s0 : d - T(0.5) * s0;
    }
    case PointwiseOp::Equal: return a == b ? T(1) : T(0);
    case PointwiseOp::MulDiv: return a * b / c;
    case PointwiseOp::DivGradB: return -a * b / (c * c);
    case PointwiseOp::MaxGrad: return b > c ? a : (b == c ? T(0.5) * a : T(0));
    case PointwiseOp::MinGrad: return b < c ? a : (b == c ? T(0.5) * a : T(0));
    case PointwiseOp::SqrtGrad: return a / (T(2) * b);
    case PointwiseOp::SignGrad: return s0 * a * sign_of(b);
    case PointwiseOp::PowGrad: return s0 == T(0) ? T(0) : a * s0 * pow(b, s0 - T(1));
    case PointwiseOp::PositiveGrad: return b > T(0) ? a : T(0);
    case PointwiseOp::TanhGrad: return a * (T(1) - b * b);
    case PointwiseOp::SigmoidGrad: return a * b * (T(1) - b);
    case PointwiseOp::ClampGrad: return (b >= s0 && b <= s1) ? a : T(0);
    case PointwiseOp::SmoothL1Grad: return s1 * a * (fabs(b) < s0 ? b / s0 : sign_of(b));
  }
  return T(0);
}

}  // namespace tg::ops::detail
