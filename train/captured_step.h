// A training step whose device work is captured once in a CUDA graph and then replayed: one graph
// launch instead of a dozen kernel launches and the host work around each (tape, allocations,
// dispatch), for steps small enough to be bound by that (bench/NOTES.md).
//
//   Tensor xs = Tensor::empty(x_shape, DType::Float32, Device::CUDA), ts = ...;  // static inputs
//   train::CapturedStep step({xs, ts}, [&](const std::vector<Tensor>& in) {
//     Tensor loss = model.loss(in[0], in[1]);
//     opt.zero_grad();
//     loss.backward();
//     return loss;
//   }, &opt, model.parameters());
//   for (...) Tensor loss = step.run({x, t});  // x, t copied into xs, ts; replay; opt.step()
//
// The function (forward, loss, zero_grad, backward: code that only queues device work) is what
// the graph records. The optimizer's step() runs after it, eagerly, every step: its learning rate,
// step counts and bias corrections stay host state, so schedules, AdamW, load_state() and
// checkpoints work unchanged, and nothing of the optimizer is baked into the graph.
//
// run(inputs):
//   - inputs with the static inputs' shapes, dtypes and devices are copied into them (no copy for
//     the static tensors' own memory: gather into static_inputs() to save it). The first `warmup`
//     such steps run eagerly (first-use work: cuDNN's algorithm choice, the optimizer's buffers);
//     the next is captured and replayed, and every later one is a replay.
//   - any other inputs (an uneven last batch) run an eager step on the inputs as they are.
// Exactness: a replay launches the same kernels on the same values as the eager step, so losses
// and parameters are bit-identical to those of eager steps (tested for SGD and AdamW).
//
// What the captured function must not do: read the device on the host or wait for it (item(),
// to_vector(), cpu(): they throw during capture), or depend on host values that change from step
// to step (they are frozen at capture). Call invalidate() after changing anything its host code
// decides on (TF32, the model's structure): the next step is captured anew. The parameters, the
// static inputs and whatever else the graph's kernels touch must outlive this object.
//
// The loss returned by a replayed step is the graph's static loss tensor, overwritten by the next
// replay (clone() it to keep it). Gradients: the graph writes the ones it allocated at capture;
// before each optimizer step they are attached to params again, in case an eager step in between
// replaced them. On the CPU (and with options.enabled false) every step runs eagerly, on the
// inputs as they are.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "../core/tensor.h"

namespace tg::cuda {
class Graph;
}
namespace tg::optim {
class Optimizer;
}

namespace tg::train {

struct CapturedStepOptions {
  int warmup = 1;       ///< eager steps on full-size inputs before the capture (>= 1)
  bool enabled = true;  ///< false: every step eager (the same code path, for comparisons)
};

class CapturedStep {
 public:
  /// The forward and backward of one step on the given inputs; returns the loss.
  using StepFn = std::function<Tensor(const std::vector<Tensor>& inputs)>;

  /// static_inputs: the buffers the graph reads (defined, distinct). optimizer (may be null):
  /// stepped after each forward and backward. params: the leaves whose gradients the optimizer
  /// reads (those gradients are re-attached before each step). Throws tg::Error on bad arguments.
  CapturedStep(std::vector<Tensor> static_inputs, StepFn fn, optim::Optimizer* optimizer,
               std::vector<Tensor> params, CapturedStepOptions options = {});
  ~CapturedStep();
  CapturedStep(const CapturedStep&) = delete;
  CapturedStep& operator=(const CapturedStep&) = delete;

  /// One step on inputs (one per static input); returns its loss (see above).
  Tensor run(const std::vector<Tensor>& inputs);
  /// The next full-size step is captured again (the current graph and its pool are dropped).
  void invalidate();

  const std::vector<Tensor>& static_inputs() const { return static_inputs_; }
  /// A graph is captured and replays are running.
  bool captured() const;
  /// Steps so far that were replays, captures (each also replayed once) and eager steps.
  int64_t replays() const { return replays_; }
  int64_t captures() const { return captures_; }
  int64_t eager_steps() const { return eager_; }
  /// Nodes of the current graph (kernels and copies; 0 when none).
  size_t graph_nodes() const;

 private:
  bool fits(const std::vector<Tensor>& inputs) const;
  Tensor eager(const std::vector<Tensor>& inputs);
  void optimizer_step();

  std::vector<Tensor> static_inputs_;
  StepFn fn_;
  optim::Optimizer* optimizer_;
  std::vector<Tensor> params_;
  CapturedStepOptions options_;
  std::unique_ptr<cuda::Graph> graph_;
  Tensor loss_;                      ///< the graph's static loss
  std::vector<Tensor> graph_grads_;  ///< params' gradients as the graph writes them
  int warm_ = 0;                     ///< full-size eager steps since the last (in)validation
  int64_t replays_ = 0, captures_ = 0, eager_ = 0;
};

}  // namespace tg::train
