// nn::Sequential: modules applied in order, named "0", "1", ... as PyTorch's nn.Sequential, so that
// state dicts line up ("0.conv.weight", "1.weight", ...).
#pragma once

#include <memory>
#include <vector>

#include "module.h"

namespace tg::nn {

class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(std::vector<std::shared_ptr<Module>> modules);
  /// Appends module under the next index; returns it.
  template <typename M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> module) {
    TG_CHECK(module != nullptr, "Sequential: cannot append a null module");
    modules_.push_back(module);
    return register_module(std::to_string(modules_.size() - 1), module);
  }
  /// The modules' forwards in order (x itself for an empty Sequential).
  Tensor forward(const Tensor& x) const override;
  size_t size() const { return modules_.size(); }
  /// The i-th module (throws when i >= size()).
  const std::shared_ptr<Module>& operator[](size_t i) const;

 private:
  std::vector<std::shared_ptr<Module>> modules_;
};

}  // namespace tg::nn
