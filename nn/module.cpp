#include "module.h"

#include <functional>
#include <set>
#include <sstream>
#include <typeinfo>

#include "../core/autograd.h"

namespace tg::nn {

Tensor Module::forward(const Tensor&) const {
  TG_THROW("forward: this module (", typeid(*this).name(),
           ") does not define forward(); override Tensor forward(const Tensor&) const");
}

Tensor Module::register_parameter(const std::string& name, Tensor value) {
  for (const auto& [n, t] : params_)
    TG_CHECK(n != name, "register_parameter: a parameter named '", name, "' already exists");
  if (!value.requires_grad()) value.set_requires_grad(true);
  params_.emplace_back(name, value);
  return value;
}

void Module::collect(const std::string& prefix, NamedTensors& out) const {
  for (const auto& [name, t] : params_) out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

namespace {
// Points every handle of p at new data: the parameter keeps its identity (id, requires_grad).
void replace_data(Tensor& p, const Tensor& moved) {
  TensorImpl& impl = *p.impl();
  impl.storage = moved.impl()->storage;
  impl.offset = moved.impl()->offset;
  impl.dtype = moved.dtype();
  impl.grad.reset();
}
}  // namespace

void Module::to(Device device) {
  for (auto& [name, p] : named_parameters()) {
    Tensor moved = p.detach().to(device);
    replace_data(p, moved);
  }
}

void Module::to(DType dtype) {
  for (auto& [name, p] : named_parameters()) {
    Tensor converted = p.detach().to(dtype);
    replace_data(p, converted);
  }
}

void Module::zero_grad() {
  for (auto& [name, p] : named_parameters()) p.set_grad(Tensor());
}

void Module::load_state_dict(const NamedTensors& state) {
  NamedTensors mine = named_parameters();
  std::set<std::string> known;
  for (const auto& [name, p] : mine) known.insert(name);
  // Every difference, in one message: unexpected names, missing names, wrong shapes.
  std::ostringstream problems;
  int count = 0;
  for (const auto& [name, t] : state)
    if (!known.count(name)) {
      problems << (count++ ? "; " : "") << "unexpected parameter '" << name << "'";
    }
  for (auto& [name, p] : mine) {
    const Tensor* src = nullptr;
    for (const auto& [n, t] : state)
      if (n == name) src = &t;
    if (src == nullptr) {
      problems << (count++ ? "; " : "") << "missing parameter '" << name << "' (expected shape "
               << shape_str(p.shape()) << ")";
    } else if (src->shape() != p.shape()) {
      problems << (count++ ? "; " : "") << "parameter '" << name << "': expected shape "
               << shape_str(p.shape()) << ", got " << shape_str(src->shape());
    }
  }
  TG_CHECK(count == 0, "load_state_dict: ", problems.str());
  autograd::NoGradGuard no_grad;
  for (auto& [name, p] : mine)
    for (const auto& [n, t] : state)
      if (n == name) p.copy_(t);
}

}  // namespace tg::nn
