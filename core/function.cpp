// apply_function (core/function.h): one tape node around a user's forward and backward.
#include "function.h"

namespace tg::autograd {

void FunctionContext::save_for_backward(const std::vector<Tensor>& tensors) {
  saved_.clear();
  for (const Tensor& t : tensors) saved_.emplace_back(t);
}

std::vector<Tensor> FunctionContext::saved() const {
  std::vector<Tensor> out;
  for (const SavedTensor& s : saved_) out.push_back(s.get(name_.c_str()));
  return out;
}

double FunctionContext::get(const std::string& key) const {
  auto it = values_.find(key);
  TG_CHECK(it != values_.end(), name_, ": no value named '", key, "' was set in the forward");
  return it->second;
}

class FunctionNode : public Node {
 public:
  FunctionNode(std::shared_ptr<FunctionContext> ctx, BackwardFunction backward)
      : ctx_(std::move(ctx)), backward_(std::move(backward)) {}
  const char* name() const override { return ctx_->name_.c_str(); }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    for (size_t i = 0; i < ctx_->needs_.size(); ++i) ctx_->needs_[i] = needs_input_grad(i);
    std::vector<Tensor> d = backward_(*ctx_, grads);
    TG_CHECK(d.size() == inputs().size(), ctx_->name_, " backward: returned ", d.size(),
             " gradients for ", inputs().size(), " inputs");
    for (size_t i = 0; i < d.size(); ++i) {
      if (!d[i].defined() || !needs_input_grad(i)) {
        d[i] = Tensor();
        continue;
      }
      const InputEdge& e = inputs()[i];
      TG_CHECK(d[i].shape() == e.shape && d[i].dtype() == e.dtype && d[i].device() == e.device,
               ctx_->name_, " backward: the gradient of input ", i, " is ", d[i].describe(),
               ", expected ", dtype_name(e.dtype), " ", device_name(e.device), " ", shape_str(e.shape));
    }
    return d;
  }
  void release_saved() override {
    for (SavedTensor& s : ctx_->saved_) s.release();
  }

 private:
  std::shared_ptr<FunctionContext> ctx_;
  BackwardFunction backward_;
};

std::vector<Tensor> apply_function(const std::string& name, const std::vector<Tensor>& inputs,
                                   const ForwardFunction& forward, const BackwardFunction& backward) {
  TG_CHECK(forward && backward, name, ": apply_function needs a forward and a backward function");
  auto ctx = std::make_shared<FunctionContext>();
  ctx->name_ = name;
  const bool recording = should_record(inputs);
  for (const Tensor& t : inputs) ctx->needs_.push_back(recording && t.defined() && t.requires_grad());
  std::vector<Tensor> outputs;
  {
    NoGradGuard no_grad;
    outputs = forward(*ctx, inputs);
  }
  for (size_t k = 0; k < outputs.size(); ++k) {
    TG_CHECK(outputs[k].defined(), name, ": forward returned an undefined output ", k);
    for (const Tensor& t : inputs)
      TG_CHECK(!outputs[k].same(t), name, ": forward returned its input as output ", k,
               "; return a new tensor (clone() it)");
  }
  if (recording) {
    // A saved output keeps its data (shared storage and version), not the output's graph node.
    for (SavedTensor& s : ctx->saved_) {
      if (!s.defined()) continue;
      const Tensor t = s.get(name.c_str());
      for (const Tensor& y : outputs)
        if (t.same(y)) s = SavedTensor(y.detach());
    }
    record(std::make_shared<FunctionNode>(ctx, backward), inputs, outputs);
  }
  return outputs;
}

}  // namespace tg::autograd
