// The tape autograd.
//
// While grad mode is on and an op has an input that requires grad, the op appends one Node to this
// thread's tape: which tensors went in (by id), which came out, what it saved and how to go
// backward. Tensor::backward() seeds d(root) and walks the tape in reverse: each node whose outputs
// received a gradient runs its backward; gradients for inputs that are leaves are accumulated (+=)
// into their .grad(), those for intermediate tensors are summed in a map keyed by tensor id and
// freed once their producer has consumed them. Unless retain_graph is set, the nodes the walk ran
// release their saved tensors and leave the tape; nodes of other graphs stay. Nodes that nothing
// can reach any more (no live output, no live node downstream: a forward whose result was dropped)
// are pruned from the tape as it grows and after each backward, so the tape never holds on to dead
// graphs. For that, a node must never keep its own outputs alive: an op that needs its output in
// the backward saves it with SavedTensor::output(y), which keeps the data (and its version) but not
// the link to the node.
//
// The tape is per thread: backward() must run on the thread that ran the forward, and an op on one
// thread cannot take a tensor of another thread's graph as an input; both are a tg::Error.
//
// Writing an op (see ops/elementwise.cpp):
//   Tensor y = ...forward...;
//   if (autograd::should_record({x, w})) {
//     auto node = std::make_shared<MyNode>();
//     node->saved_x = autograd::SavedTensor(x);
//     node->saved_y = autograd::SavedTensor::output(y);  // an output: never SavedTensor(y)
//     autograd::record(node, {x, w}, {y});
//   }
// and in MyNode::backward(grads) use needs_input_grad(i) to skip gradients nobody asked for.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor.h"

namespace tg::autograd {

/// Is grad mode on for this thread (default yes)?
bool grad_mode_enabled();

/// Turns grad mode off for this thread for the guard's lifetime (nests).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

/// A tensor kept for the backward. Remembers the version of the tensor's storage when saved;
/// get() throws when the storage was modified in place since.
class SavedTensor {
 public:
  SavedTensor() = default;
  /// Saves an input of the node (or any tensor the node did not produce).
  explicit SavedTensor(const Tensor& t);
  /// Saves an output of the node itself: its data and version, without its link to the node (a
  /// node holding its own output would keep itself, and the graph above it, alive for ever).
  /// get() returns a handle to the same data that does not require grad.
  static SavedTensor output(const Tensor& y);
  /// The saved tensor; throws tg::Error naming op if it was modified in place or already released.
  const Tensor& get(const char* op) const;
  void release() { tensor_ = Tensor(); released_ = true; }
  bool defined() const { return tensor_.defined(); }

 private:
  Tensor tensor_;
  uint64_t version_ = 0;
  bool released_ = false;
};

/// What a node knows about one of its inputs.
struct InputEdge {
  uint64_t id = 0;                     ///< the input tensor's id
  std::shared_ptr<TensorImpl> leaf;    ///< set when the input is a leaf that requires grad
  bool needs_grad = false;             ///< leaf requiring grad, or output of an earlier taped op
  Shape shape;
  DType dtype = DType::Float32;
  Device device = Device::CPU;
};

/// What a node knows about one of its outputs (no strong reference: outputs may be freed before
/// the backward; the weak one tells the tape whether anything can still reach the node).
struct OutputMeta {
  uint64_t id = 0;
  std::weak_ptr<TensorImpl> tensor;
  Shape shape;
  DType dtype = DType::Float32;
  Device device = Device::CPU;
};

class Node {
 public:
  virtual ~Node() = default;
  virtual const char* name() const = 0;
  /// grad_outputs has one defined tensor per output (zeros when no gradient flowed into it).
  /// Returns one tensor per input; an undefined tensor means "no gradient". Gradients for inputs with
  /// needs_input_grad(i) false are never used and need not be computed.
  virtual std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) = 0;
  /// Frees saved tensors (called as the walk passes the node, unless retain_graph).
  virtual void release_saved() {}

  bool needs_input_grad(size_t i) const { return i < inputs_.size() && inputs_[i].needs_grad; }
  const std::vector<InputEdge>& inputs() const { return inputs_; }
  const std::vector<OutputMeta>& outputs() const { return outputs_; }
  /// Which thread's tape recorded the node (a per-thread number, never reused).
  uint64_t tape_id() const { return tape_id_; }

 private:
  friend void record(const std::shared_ptr<Node>&, const std::vector<Tensor>&,
                     const std::vector<Tensor>&);
  std::vector<InputEdge> inputs_;
  std::vector<OutputMeta> outputs_;
  uint64_t tape_id_ = 0;  ///< the tape (thread) that recorded the node
};

/// True when grad mode is on and any defined input requires grad.
bool should_record(const std::vector<Tensor>& inputs);

/// Appends node to this thread's tape; marks outputs as requiring grad and produced by node.
/// Throws when an input was produced on another thread's tape.
void record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
            const std::vector<Tensor>& outputs);

/// Runs the tape backward from roots with the given gradients (one per root; same shapes).
/// Throws when a root's graph was recorded on another thread or was already freed.
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grad_roots,
              bool retain_graph = false);

/// Swaps this thread's tape with tape for the guard's lifetime, and back at its end: the ops run
/// meanwhile record into tape, kept apart from the thread's own graph. A host framework
/// (tapegrad_torch) holds one forward's nodes this way and runs their backward later, maybe on
/// another thread, under a second guard (the swapped-in tape counts as that thread's own meanwhile).
class TapeSwap {
 public:
  explicit TapeSwap(std::vector<std::shared_ptr<Node>>& tape);
  ~TapeSwap();
  TapeSwap(const TapeSwap&) = delete;
  TapeSwap& operator=(const TapeSwap&) = delete;

 private:
  std::vector<std::shared_ptr<Node>>& tape_;
  uint64_t previous_id_;
};

/// Number of nodes on this thread's tape.
size_t tape_size();
/// Drops this thread's tape (and everything it saved).
void clear_tape();
/// Removes the nodes that no live tensor can reach, to a fixed point: nodes upstream of a pruned
/// one go in the same call (done automatically; exposed for tests).
void prune_tape();

/// Called (on this thread) each time a backward has accumulated a gradient into a leaf's .grad().
/// Data-parallel training uses it to start all-reducing a bucket of gradients as soon as the last
/// of them is ready, while the rest of the backward runs. An empty function removes the hook.
using GradReadyHook = std::function<void(const Tensor& leaf)>;
void set_grad_ready_hook(GradReadyHook hook);

/// this += g for gradient accumulation (same shape, dtype, device). Used by the engine.
void accumulate(Tensor& into, const Tensor& g);

}  // namespace tg::autograd
