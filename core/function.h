// Writing a differentiable op without touching the library: forward and backward as lambdas.
//
//   std::vector<Tensor> y = tg::autograd::apply_function(
//       "softplus", {x},
//       [](tg::autograd::FunctionContext& ctx, const std::vector<Tensor>& in) {
//         ctx.save_for_backward({in[0]});
//         return std::vector<Tensor>{tg::ops::log(tg::ops::exp(in[0]) + 1.0)};
//       },
//       [](tg::autograd::FunctionContext& ctx, const std::vector<Tensor>& dy) {
//         const Tensor& x = ctx.saved()[0];
//         return std::vector<Tensor>{ctx.needs_input_grad(0) ? dy[0] * tg::ops::sigmoid(x) : Tensor()};
//       });
//
// Rules:
// - forward runs with grad mode off: the ops it calls are not taped; apply_function records ONE node
//   for the whole op when grad mode is on and an input requires grad. forward may call any tapegrad
//   op or raw kernels on raw pointers; it returns new tensors (not its inputs).
// - backward also runs with grad mode off (the engine turns it off for every node). It receives one
//   gradient per output (zeros for an output no gradient reached) and returns one tensor per input,
//   of the input's shape, dtype and device, or an undefined Tensor() for "no gradient".
// - ctx.needs_input_grad(i) says whether input i's gradient is wanted (the needs-grad mask); skip
//   the work for the others.
// - ctx.save_for_backward(tensors) keeps tensors for the backward. ctx.saved() returns them and
//   throws a tg::Error naming the op when one was modified in place after it was saved (the version
//   check), or when a first backward without retain_graph has already freed them. Saving an output
//   keeps its data only, not the graph.
// - ctx.set(key, value)/ctx.get(key) carry plain numbers from forward to backward.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd.h"
#include "tensor.h"

namespace tg::autograd {

class FunctionContext {
 public:
  /// Keeps tensors for the backward (replaces any saved before).
  void save_for_backward(const std::vector<Tensor>& tensors);
  /// The saved tensors, each checked against in-place modification since it was saved.
  std::vector<Tensor> saved() const;
  /// Whether input i's gradient is needed.
  bool needs_input_grad(size_t i) const { return i < needs_.size() && needs_[i]; }
  /// Numbers from forward to backward.
  void set(const std::string& key, double value) { values_[key] = value; }
  double get(const std::string& key) const;
  const std::string& name() const { return name_; }

 private:
  friend std::vector<Tensor> apply_function(
      const std::string&, const std::vector<Tensor>&,
      const std::function<std::vector<Tensor>(FunctionContext&, const std::vector<Tensor>&)>&,
      const std::function<std::vector<Tensor>(FunctionContext&, const std::vector<Tensor>&)>&);
  friend class FunctionNode;
  std::string name_;
  std::vector<bool> needs_;
  std::vector<SavedTensor> saved_;
  std::map<std::string, double> values_;
};

using ForwardFunction = std::function<std::vector<Tensor>(FunctionContext&, const std::vector<Tensor>&)>;
using BackwardFunction =
    std::function<std::vector<Tensor>(FunctionContext&, const std::vector<Tensor>& grad_outputs)>;

/// Runs forward on inputs (grad mode off) and, when autograd records, appends one node whose backward
/// is backward. Returns forward's outputs. Undefined inputs are allowed (they never get gradients).
std::vector<Tensor> apply_function(const std::string& name, const std::vector<Tensor>& inputs,
                                   const ForwardFunction& forward, const BackwardFunction& backward);

}  // namespace tg::autograd
