#include "sequential.h"

namespace tg::nn {

Sequential::Sequential(std::vector<std::shared_ptr<Module>> modules) {
  for (auto& m : modules) push_back(m);
}

Tensor Sequential::forward(const Tensor& x) const {
  Tensor y = x;
  for (const auto& m : modules_) y = m->forward(y);
  return y;
}

const std::shared_ptr<Module>& Sequential::operator[](size_t i) const {
  TG_CHECK(i < modules_.size(), "Sequential: index ", i, " out of range for ", modules_.size(),
           " modules");
  return modules_[i];
}

}  // namespace tg::nn
