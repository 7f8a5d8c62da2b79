// Unary elementwise ops (formulas in ops/unary.h): one pointwise pass forward, one backward.
#include "unary.h"

#include <memory>

#include "../core/autograd.h"
#include "pointwise.h"

namespace tg::ops {
namespace {

using detail::PointwiseOp;

enum class Saves { Nothing, Input, Output };

// dx = backward_op(dy, saved, -, s0, s1), with saved the input or the output.
class UnaryNode : public autograd::Node {
 public:
  UnaryNode(const char* name, PointwiseOp backward_op, bool uses_saved, double s0, double s1)
      : name_(name), op_(backward_op), uses_saved_(uses_saved), s0_(s0), s1_(s1) {}
  const char* name() const override { return name_; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    if (!needs_input_grad(0)) return {Tensor()};
    if (!uses_saved_) return {detail::pointwise(op_, {grads[0]}, s0_, s1_)};
    return {detail::pointwise(op_, {grads[0], saved.get(name_)}, s0_, s1_)};
  }
  void release_saved() override { saved.release(); }
  autograd::SavedTensor saved;

 private:
  const char* name_;
  PointwiseOp op_;
  bool uses_saved_;
  double s0_, s1_;
};

struct UnarySpec {
  const char* name;
  PointwiseOp forward;
  PointwiseOp backward;
  Saves saves;
  double s0 = 0.0, s1 = 0.0;          ///< forward scalars
  double bs0 = 0.0, bs1 = 0.0;        ///< backward scalars
};

Tensor unary(const UnarySpec& spec, const Tensor& x) {
  detail::check_operand(spec.name, x, "x");
  Tensor y = detail::pointwise(spec.forward, {x}, spec.s0, spec.s1);
  if (autograd::should_record({x})) {
    auto node = std::make_shared<UnaryNode>(spec.name, spec.backward,
                                             spec.saves != Saves::Nothing, spec.bs0, spec.bs1);
    if (spec.saves == Saves::Input) node->saved = autograd::SavedTensor(x);
    if (spec.saves == Saves::Output) node->saved = autograd::SavedTensor::output(y);
    autograd::record(node, {x}, {y});
  }
  return y;
}

}  // namespace

Tensor neg(const Tensor& x) {
  return unary({"neg", PointwiseOp::Affine, PointwiseOp::Affine, Saves::Nothing, -1.0, 0.0, -1.0, 0.0},
               x);
}
Tensor exp(const Tensor& x) {
  return unary({"exp", PointwiseOp::Exp, PointwiseOp::Mul, Saves::Output}, x);
}
Tensor log(const Tensor& x) {
  return unary({"log", PointwiseOp::Log, PointwiseOp::Div, Saves::Input}, x);
}
Tensor sqrt(const Tensor& x) {
  return unary({"sqrt", PointwiseOp::Sqrt, PointwiseOp::SqrtGrad, Saves::Output}, x);
}
Tensor abs(const Tensor& x) {
  return unary({"abs", PointwiseOp::Abs, PointwiseOp::SignGrad, Saves::Input, 0.0, 0.0, 1.0}, x);
}
Tensor pow(const Tensor& x, double p) {
  return unary({"pow", PointwiseOp::Pow, PointwiseOp::PowGrad, Saves::Input, p, 0.0, p}, x);
}
Tensor relu(const Tensor& x) {
  return unary({"relu", PointwiseOp::Relu, PointwiseOp::PositiveGrad, Saves::Output}, x);
}
Tensor tanh(const Tensor& x) {
  return unary({"tanh", PointwiseOp::Tanh, PointwiseOp::TanhGrad, Saves::Output}, x);
}
Tensor clamp(const Tensor& x, double lo, double hi) {
  TG_CHECK(lo <= hi, "clamp: expected lo <= hi, got lo = ", lo, " and hi = ", hi);
  return unary({"clamp", PointwiseOp::Clamp, PointwiseOp::ClampGrad, Saves::Input, lo, hi, lo, hi},
               x);
}

}  // namespace tg::ops
