// nn::Module: named parameters and submodules, as in PyTorch.
//
// named_parameters() lists a module's own parameters in registration order, then each submodule's
// (recursively) with a dotted prefix ("conv.weight"), the order PyTorch uses, so that state dicts and
// checkpoints line up name for name.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../core/tensor.h"

namespace tg::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  virtual ~Module() = default;

  /// The module's computation. Modules that compute something override it (Conv2d, Linear,
  /// Sequential, ...); the base throws a tg::Error naming the module's type.
  virtual Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }

  NamedTensors named_parameters() const;
  std::vector<Tensor> parameters() const;
  /// Moves every parameter to device (or converts to dtype) in place: handles held elsewhere see the
  /// move. Gradients are dropped.
  void to(Device device);
  void to(DType dtype);
  /// Drops every parameter's gradient (PyTorch's zero_grad(set_to_none=True)).
  void zero_grad();
  /// The parameters by name (the tensors themselves, not copies).
  NamedTensors state_dict() const { return named_parameters(); }
  /// Copies values into the parameters. Every name must be present with the same shape, and no
  /// other name may appear; the error names the first that differs. Dtype and device are converted.
  void load_state_dict(const NamedTensors& state);

 protected:
  /// Registers a leaf tensor as a parameter (sets requires_grad) and returns it.
  Tensor register_parameter(const std::string& name, Tensor value);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    children_.emplace_back(name, module);
    return module;
  }

 private:
  void collect(const std::string& prefix, NamedTensors& out) const;
  NamedTensors params_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

}  // namespace tg::nn
