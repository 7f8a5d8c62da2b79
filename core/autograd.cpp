#include "autograd.h"

#include <algorithm>
#include <atomic>
#include <unordered_map>
#include <unordered_set>

namespace tg::autograd {

namespace {
// The tape prunes when it has grown to twice its size after the last prune (at least kMinPruneAt
// nodes): amortised O(1) per node, and dropped graphs never hold more than a few nodes' memory.
constexpr size_t kMinPruneAt = 16;

std::atomic<uint64_t> g_next_tape_id{1};
thread_local uint64_t t_tape_id = g_next_tape_id.fetch_add(1);  // TapeSwap changes it
thread_local bool t_grad_mode = true;
thread_local std::vector<std::shared_ptr<Node>> t_tape;
thread_local size_t t_prune_at = kMinPruneAt;
thread_local GradReadyHook t_grad_ready_hook;

// The node that produced t when it was recorded on another thread's tape (nullptr otherwise).
std::shared_ptr<Node> foreign_producer(const Tensor& t, uint64_t tape_id) {
  if (!t.defined() || !t.impl()->has_grad_fn) return nullptr;
  std::shared_ptr<Node> n = t.impl()->grad_fn.lock();
  return n && n->tape_id() != tape_id ? n : nullptr;
}
}  // namespace

bool grad_mode_enabled() { return t_grad_mode; }

NoGradGuard::NoGradGuard() : previous_(t_grad_mode) { t_grad_mode = false; }
NoGradGuard::~NoGradGuard() { t_grad_mode = previous_; }

SavedTensor::SavedTensor(const Tensor& t) : tensor_(t), version_(t.defined() ? t.version() : 0) {}

SavedTensor SavedTensor::output(const Tensor& y) {
  // detach() shares the storage, and with it the version counter, but not the grad_fn link.
  return SavedTensor(y.defined() ? y.detach() : y);
}

const Tensor& SavedTensor::get(const char* op) const {
  TG_CHECK(!released_, op, " backward: its saved tensors were already freed by an earlier backward(); "
           "pass retain_graph=true to the first backward() to run backward twice");
  if (tensor_.defined())
    TG_CHECK(tensor_.version() == version_, op, " backward: a tensor saved for the backward (",
             tensor_.describe(), ") was modified in place after it was saved (version ",
             tensor_.version(), ", expected ", version_,
             "); its gradient would be wrong. Clone it before modifying it.");
  return tensor_;
}

bool should_record(const std::vector<Tensor>& inputs) {
  if (!t_grad_mode) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
            const std::vector<Tensor>& outputs) {
  node->inputs_.clear();
  node->outputs_.clear();
  node->tape_id_ = t_tape_id;
  for (const Tensor& t : inputs) {
    TG_CHECK(!foreign_producer(t, t_tape_id), "autograd: ", node->name(), ": input ",
             node->inputs_.size(), " (", t.describe(),
             ") was produced on another thread, and the tape is thread-local: a graph must be "
             "built and run backward on one thread; pass a detach()ed tensor to use its values "
             "here");
    InputEdge e;
    if (t.defined()) {
      e.id = t.id();
      e.needs_grad = t.requires_grad();
      if (e.needs_grad && t.is_leaf()) e.leaf = t.impl();
      e.shape = t.shape();
      e.dtype = t.dtype();
      e.device = t.device();
    }
    node->inputs_.push_back(std::move(e));
  }
  for (const Tensor& t : outputs) {
    TG_CHECK(t.defined(), "autograd::record(", node->name(), "): undefined output");
    node->outputs_.push_back({t.id(), t.impl(), t.shape(), t.dtype(), t.device()});
    TensorImpl& impl = *t.impl();
    impl.requires_grad = true;
    impl.grad_fn = node;
    impl.has_grad_fn = true;
  }
  t_tape.push_back(node);
  if (t_tape.size() >= t_prune_at) prune_tape();
}

void prune_tape() {
  // Walk from the newest node: a node is live when one of its outputs is alive or is an input of a
  // live node after it. A dead node can never receive a gradient; it is destroyed at once, so the
  // tensors it saved (outputs of older nodes) expire before the walk reaches their producers. The
  // walk repeats until nothing more goes, in case a node holds tensors in some other way.
  for (bool pruned = true; pruned;) {
    pruned = false;
    std::unordered_set<uint64_t> needed;
    std::vector<std::shared_ptr<Node>> kept;
    for (size_t k = t_tape.size(); k-- > 0;) {
      const Node& n = *t_tape[k];
      bool live = false;
      for (const OutputMeta& o : n.outputs())
        if (!o.tensor.expired() || needed.count(o.id)) {
          live = true;
          break;
        }
      if (!live) {
        t_tape[k].reset();
        pruned = true;
        continue;
      }
      for (const InputEdge& e : n.inputs())
        if (e.needs_grad && !e.leaf) needed.insert(e.id);
      kept.push_back(std::move(t_tape[k]));
    }
    std::reverse(kept.begin(), kept.end());
    t_tape.swap(kept);
  }
  t_prune_at = std::max(kMinPruneAt, 2 * t_tape.size());
}

void accumulate(Tensor& into, const Tensor& g) {
  if (!into.defined()) {
    into = g.clone();
  } else {
    into.add_(g);
  }
}

namespace {

void check_grad_like(const Tensor& g, const Shape& shape, DType dtype, Device device,
                     const std::string& what) {
  TG_CHECK(g.shape() == shape && g.dtype() == dtype && g.device() == device, what,
           ": expected a gradient of ", dtype_name(dtype), " ", device_name(device), " ",
           shape_str(shape), ", got ", g.describe());
}

// A leaf's first gradient is stored as it is when nothing else can see it (the backward made it
// and handed over its only reference, and no view shares its storage); otherwise it is copied, so
// that accumulating into the leaf's grad later never changes another tensor.
void accumulate_leaf(const std::shared_ptr<TensorImpl>& leaf, Tensor g) {
  const bool sole = g.impl().use_count() == 1 && g.impl()->storage.use_count() == 1 &&
                    !g.requires_grad();
  if (!leaf->grad && sole) {
    leaf->grad = g.impl();
  } else {
    Tensor current(leaf->grad);
    accumulate(current, g);
    leaf->grad = current.impl();
  }
  if (t_grad_ready_hook) t_grad_ready_hook(Tensor(leaf));
}

}  // namespace

void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grad_roots,
              bool retain_graph) {
  TG_CHECK(roots.size() == grad_roots.size(), "backward: got ", roots.size(), " tensors but ",
           grad_roots.size(), " gradients");
  std::unordered_map<uint64_t, Tensor> pending;  // id -> summed gradient of a non-leaf tensor
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    const Tensor& g = grad_roots[i];
    TG_CHECK(r.defined() && g.defined(), "backward: undefined tensor or gradient");
    TG_CHECK(r.requires_grad(), "backward: the tensor (", r.describe(),
             ") does not require grad: no input of the ops that made it requires grad, or it was "
             "made under NoGradGuard");
    check_grad_like(g, r.shape(), r.dtype(), r.device(), "backward");
    if (r.is_leaf()) {
      accumulate_leaf(r.impl(), g);
      continue;
    }
    std::shared_ptr<Node> producer = r.impl()->grad_fn.lock();
    TG_CHECK(producer != nullptr,
             "backward: the graph of this tensor was already freed, by an earlier backward() (the "
             "tape is cleared after each backward; pass retain_graph=true to the first call to run "
             "backward through the same graph twice) or because the thread that ran its forward "
             "has ended (the tape is thread-local)");
    TG_CHECK(producer->tape_id() == t_tape_id, "backward: the graph of this tensor (", r.describe(),
             ", made by ", producer->name(),
             ") was recorded on another thread, and the tape is thread-local: call backward() on "
             "the thread that ran the forward");
    Tensor& slot = pending[r.id()];
    if (slot.defined()) slot = slot.clone();
    accumulate(slot, g);
  }

  // Walk the tape in reverse; a node runs when at least one of its outputs received a gradient.
  std::vector<bool> ran(t_tape.size(), false);
  for (size_t k = t_tape.size(); k-- > 0;) {
    if (pending.empty()) break;
    Node& node = *t_tape[k];
    std::vector<Tensor> grad_outputs;
    bool any = false;
    for (const OutputMeta& o : node.outputs()) {
      auto it = pending.find(o.id);
      if (it != pending.end()) {
        grad_outputs.push_back(std::move(it->second));
        pending.erase(it);
        any = true;
      } else {
        grad_outputs.emplace_back();
      }
    }
    if (!any) continue;
    ran[k] = true;
    for (size_t j = 0; j < grad_outputs.size(); ++j)
      if (!grad_outputs[j].defined()) {
        const OutputMeta& o = node.outputs()[j];
        grad_outputs[j] = Tensor::zeros(o.shape, o.dtype, o.device);
      }
    std::vector<Tensor> grad_inputs;
    {
      NoGradGuard no_grad;  // backward formulas are not themselves taped
      grad_inputs = node.backward(grad_outputs);
    }
    grad_outputs.clear();
    TG_CHECK(grad_inputs.size() == node.inputs().size(), "autograd: ", node.name(),
             " backward returned ", grad_inputs.size(), " gradients for ", node.inputs().size(),
             " inputs");
    for (size_t i = 0; i < grad_inputs.size(); ++i) {
      const InputEdge& e = node.inputs()[i];
      const Tensor& g = grad_inputs[i];
      if (!e.needs_grad || !g.defined()) continue;
      check_grad_like(g, e.shape, e.dtype, e.device,
                      std::string("autograd: ") + node.name() + " backward, input " + std::to_string(i));
      if (e.leaf) {
        accumulate_leaf(e.leaf, std::move(grad_inputs[i]));
      } else {
        auto it = pending.find(e.id);
        if (it == pending.end()) {
          pending.emplace(e.id, g);
        } else {
          it->second = it->second.clone();  // the stored gradient may alias another op's output
          it->second.add_(g);
        }
      }
    }
    if (!retain_graph) node.release_saved();
  }
  if (!retain_graph) {
    std::vector<std::shared_ptr<Node>> rest;
    for (size_t k = 0; k < t_tape.size(); ++k)
      if (!ran[k]) rest.push_back(t_tape[k]);
    t_tape.swap(rest);
    prune_tape();
  }
}

void set_grad_ready_hook(GradReadyHook hook) { t_grad_ready_hook = std::move(hook); }

// A swapped-in tape has an identity of its own (its address, with the top bit set so that it never
// equals a thread's number): its nodes pass the thread checks on whichever thread swaps it in.
TapeSwap::TapeSwap(std::vector<std::shared_ptr<Node>>& tape) : tape_(tape), previous_id_(t_tape_id) {
  t_tape.swap(tape_);
  t_tape_id = (uint64_t(1) << 63) | uint64_t(reinterpret_cast<uintptr_t>(&tape));
}
TapeSwap::~TapeSwap() {
  t_tape.swap(tape_);
  t_tape_id = previous_id_;
}

size_t tape_size() { return t_tape.size(); }
void clear_tape() {
  t_tape.clear();
  t_prune_at = kMinPruneAt;
}

}  // namespace tg::autograd
