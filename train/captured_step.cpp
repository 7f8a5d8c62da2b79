// train::CapturedStep (train/captured_step.h): warm-up, capture, replay, eager fallback.
#include "captured_step.h"

#include <set>

#include "../core/cuda_graph.h"
#include "../optim/optimizer.h"

namespace tg::train {

CapturedStep::CapturedStep(std::vector<Tensor> static_inputs, StepFn fn,
                           optim::Optimizer* optimizer, std::vector<Tensor> params,
                           CapturedStepOptions options)
    : static_inputs_(std::move(static_inputs)),
      fn_(std::move(fn)),
      optimizer_(optimizer),
      params_(std::move(params)),
      options_(options) {
  TG_CHECK(fn_ != nullptr, "CapturedStep: expected a step function, got an empty one");
  TG_CHECK(!static_inputs_.empty(), "CapturedStep: expected at least one static input");
  TG_CHECK(options_.warmup >= 1,
           "CapturedStep: expected warmup >= 1 (eager steps before the "
           "capture), got ",
           options_.warmup);
  std::set<const void*> storages;
  for (size_t i = 0; i < static_inputs_.size(); ++i) {
    const Tensor& t = static_inputs_[i];
    TG_CHECK(t.defined(), "CapturedStep: static input ", i, " is undefined");
    TG_CHECK(!t.requires_grad(), "CapturedStep: static input ", i, " (", t.describe(),
             ") requires grad; expected a plain buffer that the step reads");
    TG_CHECK(storages.insert(t.impl()->storage.get()).second, "CapturedStep: static input ", i,
             " shares its storage with an earlier one; expected distinct buffers");
  }
  for (size_t i = 0; i < params_.size(); ++i)
    TG_CHECK(params_[i].defined() && params_[i].is_leaf() && params_[i].requires_grad(),
             "CapturedStep: parameter ", i, " must be a defined leaf that requires grad, got ",
             params_[i].defined() ? params_[i].describe() : std::string("an undefined tensor"));
}

CapturedStep::~CapturedStep() = default;

bool CapturedStep::captured() const { return graph_ && graph_->captured(); }

size_t CapturedStep::graph_nodes() const { return captured() ? graph_->num_nodes() : 0; }

void CapturedStep::invalidate() {
  graph_.reset();
  loss_ = Tensor();
  graph_grads_.clear();
  warm_ = 0;
}

bool CapturedStep::fits(const std::vector<Tensor>& inputs) const {
  TG_CHECK(inputs.size() == static_inputs_.size(), "CapturedStep::run: expected ",
           static_inputs_.size(), " inputs (one per static input), got ", inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    TG_CHECK(inputs[i].defined(), "CapturedStep::run: input ", i, " is undefined");
    const Tensor& s = static_inputs_[i];
    if (inputs[i].shape() != s.shape() || inputs[i].dtype() != s.dtype() ||
        inputs[i].device() != s.device())
      return false;
  }
  return true;
}

void CapturedStep::optimizer_step() {
  if (optimizer_) optimizer_->step();
}

Tensor CapturedStep::eager(const std::vector<Tensor>& inputs) {
  Tensor loss = fn_(inputs);
  optimizer_step();
  ++eager_;
  return loss;
}

Tensor CapturedStep::run(const std::vector<Tensor>& inputs) {
  const bool graphs = options_.enabled && static_inputs_[0].is_cuda();
  if (!fits(inputs) || !graphs) return eager(inputs);
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].raw_data() != static_inputs_[i].raw_data()) static_inputs_[i].copy_(inputs[i]);
  if (warm_ < options_.warmup) {
    ++warm_;
    return eager(static_inputs_);
  }
  if (!captured()) {
    auto graph = std::make_unique<cuda::Graph>();
    Tensor loss;
    graph->capture([&] { loss = fn_(static_inputs_); });
    TG_CHECK(loss.defined() && loss.is_cuda(), "CapturedStep: the step function returned ",
             loss.defined() ? loss.describe() : std::string("an undefined tensor"),
             "; expected its loss on the GPU");
    graph_ = std::move(graph);
    loss_ = loss.detach();
    graph_grads_.clear();
    for (const Tensor& p : params_) graph_grads_.push_back(p.grad());
    ++captures_;
  }
  graph_->replay();
  for (size_t i = 0; i < params_.size(); ++i)
    if (!params_[i].grad().same(graph_grads_[i])) params_[i].set_grad(graph_grads_[i]);
  optimizer_step();
  ++replays_;
  return loss_;
}

}  // namespace tg::train
