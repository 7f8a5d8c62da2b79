// L1 and smooth L1 losses (formulas in ops/loss.h).
#include "loss.h"

#include <memory>

#include "../core/autograd.h"
#include "pointwise.h"
#include "reduce.h"

namespace tg::ops {
namespace {

using detail::PointwiseOp;

class PointLossNode : public autograd::Node {
 public:
  PointLossNode(const char* name, PointwiseOp grad_op, double s0, double s1)
      : name_(name), op_(grad_op), s0_(s0), s1_(s1) {}
  const char* name() const override { return name_; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    std::vector<Tensor> out(2);
    if (!needs_input_grad(0) && !needs_input_grad(1)) return out;
    const Tensor& d = saved_d.get(name_);
    Tensor dx = detail::pointwise_to(op_, d.shape(), {grads[0], d}, s0_, s1_);
    if (needs_input_grad(1)) out[1] = detail::pointwise(PointwiseOp::Affine, {dx}, -1.0, 0.0);
    if (needs_input_grad(0)) out[0] = dx;
    return out;
  }
  void release_saved() override { saved_d.release(); }
  autograd::SavedTensor saved_d;

 private:
  const char* name_;
  PointwiseOp op_;
  double s0_, s1_;
};

// mean(f(input - target)) with f = forward_op(., s0, s1); backward grad_op(g, d, b0, b1).
Tensor point_loss(const char* name, const Tensor& input, const Tensor& target, PointwiseOp f,
                  double s0, PointwiseOp grad_op, double b0, double b1) {
  detail::check_operand(name, input, "input");
  detail::check_operand(name, target, "target");
  TG_CHECK(input.shape() == target.shape(), name, ": expected input and target of the same shape, got ",
           input.shape(), " and ", target.shape());
  detail::check_same_kind(name, input, target);
  Tensor d = detail::pointwise(PointwiseOp::Sub, {input, target});
  Tensor e = detail::pointwise(f, {d}, s0, 0.0);
  Tensor loss = detail::reduce_raw(detail::ReduceOp::Sum, e, detail::normalize_dims(name, {}, e.shape()),
                                   1.0 / double(e.numel()))
                    .view({});
  if (autograd::should_record({input, target})) {
    auto node = std::make_shared<PointLossNode>(name, grad_op, b0, b1);
    node->saved_d = autograd::SavedTensor(d);
    autograd::record(node, {input, target}, {loss});
  }
  return loss;
}

}  // namespace

Tensor l1_loss(const Tensor& input, const Tensor& target) {
  const double inv_n = input.defined() && input.numel() > 0 ? 1.0 / double(input.numel()) : 0.0;
  return point_loss("l1_loss", input, target, PointwiseOp::Abs, 0.0, PointwiseOp::SignGrad, inv_n,
                    0.0);
}

Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, double beta) {
  TG_CHECK(beta >= 0.0, "smooth_l1_loss: expected beta >= 0, got ", beta);
  if (beta == 0.0) return l1_loss(input, target);
  const double inv_n = input.defined() && input.numel() > 0 ? 1.0 / double(input.numel()) : 0.0;
  return point_loss("smooth_l1_loss", input, target, PointwiseOp::SmoothL1, beta,
                    PointwiseOp::SmoothL1Grad, beta, inv_n);
}

}  // namespace tg::ops
