// SGD (PyTorch's rule, see optim/sgd.h): option and parameter validation, momentum-buffer state, the
// CPU update loop, and the CUDA dispatch (the descriptor table is built here; the kernel and the
// table upload are in optim/sgd.cu).
//
// Momentum buffers are created on a parameter's first update (uninitialised; the update writes
// buf = g, flagged "fresh"), so a parameter that never had a gradient has no buffer, like PyTorch.
#include "sgd.h"

#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include "../core/autograd.h"
#include "../core/cuda_graph.h"

namespace tg::optim {

namespace {

std::vector<std::pair<std::string, Tensor>> number_params(std::vector<Tensor> params) {
  std::vector<std::pair<std::string, Tensor>> named;
  named.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) named.emplace_back(std::to_string(i), params[i]);
  return named;
}

void check_lr(double lr) {
  TG_CHECK(lr >= 0, "SGD: invalid learning rate ", lr, ": expected lr >= 0");
}

}  // namespace

namespace detail {

template <typename T>
void sgd_step_cpu(T* param, const T* grad, T* buf, int64_t n, bool fresh, const SgdHyper& h) {
  const T lr = T(h.lr), momentum = T(h.momentum), omd = T(h.one_minus_dampening),
          wd = T(h.weight_decay);
  if (buf == nullptr) {
    for (int64_t i = 0; i < n; ++i)
      sgd_update_element<T>(param[i], grad[i], nullptr, false, lr, momentum, omd, wd, h.nesterov);
  } else {
    for (int64_t i = 0; i < n; ++i)
      sgd_update_element<T>(param[i], grad[i], buf + i, fresh, lr, momentum, omd, wd, h.nesterov);
  }
}

template void sgd_step_cpu<float>(float*, const float*, float*, int64_t, bool, const SgdHyper&);
template void sgd_step_cpu<double>(double*, const double*, double*, int64_t, bool,
                                   const SgdHyper&);

}  // namespace detail

SGD::SGD(std::vector<Tensor> params, SGDOptions options) : options_(options) {
  init(number_params(std::move(params)));
}

SGD::SGD(std::vector<std::pair<std::string, Tensor>> named_params, SGDOptions options)
    : options_(options) {
  init(std::move(named_params));
}

void SGD::init(std::vector<std::pair<std::string, Tensor>> named_params) {
  const SGDOptions& o = options_;
  check_lr(o.lr);
  TG_CHECK(o.momentum >= 0, "SGD: invalid momentum value ", o.momentum,
           ": expected momentum >= 0");
  TG_CHECK(o.weight_decay >= 0, "SGD: invalid weight_decay value ", o.weight_decay,
           ": expected weight_decay >= 0");
  TG_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
           "SGD: nesterov momentum requires a momentum > 0 and zero dampening, got momentum ",
           o.momentum, " and dampening ", o.dampening);
  TG_CHECK(!named_params.empty(), "SGD: expected at least one parameter, got an empty list");

  std::set<std::string> seen_names;
  std::set<const TensorImpl*> seen_tensors;
  for (size_t i = 0; i < named_params.size(); ++i) {
    const std::string& name = named_params[i].first;
    const Tensor& p = named_params[i].second;
    TG_CHECK(!name.empty(), "SGD: parameter ", i, " has an empty name; expected a unique name");
    TG_CHECK(seen_names.insert(name).second, "SGD: parameter name '", name,
             "' appears twice; expected unique names");
    TG_CHECK(p.defined(), "SGD: parameter '", name, "' is an undefined tensor");
    TG_CHECK(p.is_leaf(), "SGD: parameter '", name,
             "' was produced by a taped op; expected a leaf tensor (", p.describe(), ")");
    TG_CHECK(p.requires_grad(), "SGD: parameter '", name,
             "' does not require grad; expected leaves with set_requires_grad() (", p.describe(),
             ")");
    TG_CHECK(seen_tensors.insert(p.impl().get()).second, "SGD: parameter '", name,
             "' is the same tensor as an earlier parameter; expected distinct parameters");
    if (i == 0) device_ = p.device();
    TG_CHECK(p.device() == device_, "SGD: expected all parameters on ", device_, ", parameter '",
             name, "' is on ", p.device());
    names_.push_back(name);
    params_.push_back(p);
  }
  buffers_.resize(params_.size());
}

void SGD::set_lr(double lr) {
  check_lr(lr);
  options_.lr = lr;
}

double SGD::group_lr(size_t g) const {
  TG_CHECK(g == 0, "SGD: parameter group ", g, " does not exist (SGD has one group)");
  return options_.lr;
}

void SGD::set_group_lr(size_t g, double lr) {
  TG_CHECK(g == 0, "SGD: parameter group ", g, " does not exist (SGD has one group)");
  set_lr(lr);
}

uint64_t SGD::descriptor_uploads() const { return table_ ? table_->uploads() : 0; }

void SGD::step() {
  // A replay would repeat the launch with this step's learning rate and without counting the step.
  TG_CHECK(device_ != Device::CUDA || !cuda::is_capturing(),
           "SGD::step() during a CUDA graph capture: its learning rate and step count are host "
           "state that a replay would not update; step after the replay (train::CapturedStep does)");
  autograd::NoGradGuard no_grad;
  // Validate every gradient before touching anything.
  std::vector<size_t> active;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    TG_CHECK(g.shape() == p.shape() && g.dtype() == p.dtype() && g.device() == p.device(),
             "SGD: the gradient of parameter '", names_[i], "' is ", g.describe(),
             "; expected one like the parameter, ", p.describe());
    if (p.numel() > 0) active.push_back(i);
  }
  std::vector<bool> fresh(params_.size(), false);
  if (options_.momentum != 0) {
    for (size_t i : active) {
      if (buffers_[i].defined()) continue;
      buffers_[i] = Tensor::empty(params_[i].shape(), params_[i].dtype(), params_[i].device());
      fresh[i] = true;
    }
  }
  try {
    if (!active.empty()) {
      if (device_ == Device::CPU) {
        step_cpu(active, fresh);
      } else {
        step_cuda(active, fresh);
      }
    }
  } catch (...) {
    // A buffer created for this step was never written: forget it so the next step starts it anew.
    for (size_t i : active)
      if (fresh[i]) buffers_[i] = Tensor();
    throw;
  }
  for (size_t i : active) params_[i].bump_version();
  ++step_;
}

namespace {
detail::SgdHyper hyper_of(const SGDOptions& o) {
  detail::SgdHyper h;
  h.lr = o.lr;
  h.momentum = o.momentum;
  h.one_minus_dampening = 1.0 - o.dampening;
  h.weight_decay = o.weight_decay;
  h.nesterov = o.nesterov;
  return h;
}
}  // namespace

void SGD::step_cpu(const std::vector<size_t>& active, const std::vector<bool>& fresh) {
  const detail::SgdHyper h = hyper_of(options_);
  for (size_t i : active) {
    const Tensor& p = params_[i];
    Tensor g = p.grad();
    dispatch_dtype(p.dtype(), [&](auto tag) {
      using T = decltype(tag);
      T* buf = options_.momentum != 0 ? buffers_[i].data<T>() : nullptr;
      detail::sgd_step_cpu<T>(p.data<T>(), g.data<T>(), buf, p.numel(), fresh[i], h);
    });
  }
}

void SGD::step_cuda(const std::vector<size_t>& active, const std::vector<bool>& fresh) {
#ifdef TG_WITH_CUDA
  if (!table_) table_ = std::make_shared<detail::SgdDeviceTable>(params_.size());
  std::vector<detail::SgdTensorDesc> descs;
  descs.reserve(active.size());
  int64_t chunks = 0;
  for (size_t i : active) {
    const Tensor& p = params_[i];
    detail::SgdTensorDesc d;
    d.param = p.raw_data();
    d.grad = p.grad().raw_data();
    d.buf = options_.momentum != 0 ? buffers_[i].raw_data() : nullptr;
    d.numel = p.numel();
    d.chunk_begin = chunks;
    d.fresh = fresh[i] ? 1 : 0;
    d.is_double = p.dtype() == DType::Float64 ? 1 : 0;
    descs.push_back(d);
    chunks += (d.numel + detail::kSgdChunk - 1) / detail::kSgdChunk;
  }
  detail::sgd_step_cuda(*table_, descs, chunks, hyper_of(options_));
#else
  (void)active;
  (void)fresh;
  TG_THROW("SGD: parameters on cuda need a build of tapegrad with CUDA (-DTG_WITH_CUDA=ON)");
#endif
}

void SGD::zero_grad(bool set_to_none) {
  autograd::NoGradGuard no_grad;
  for (Tensor& p : params_) {
    if (set_to_none) {
      p.set_grad(Tensor());
    } else {
      Tensor g = p.grad();
      if (g.defined()) g.zero_();
    }
  }
}

SGDState SGD::state() const {
  SGDState s;
  s.step = step_;
  for (size_t i = 0; i < params_.size(); ++i)
    if (buffers_[i].defined()) s.momentum_buffers.emplace_back(names_[i], buffers_[i].clone());
  return s;
}

void SGD::load_state(const SGDState& state) {
  autograd::NoGradGuard no_grad;
  TG_CHECK(state.step >= 0, "SGD::load_state: expected a step count >= 0, got ", state.step);
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < names_.size(); ++i) index[names_[i]] = i;
  std::vector<const Tensor*> source(params_.size(), nullptr);
  for (const auto& [name, buf] : state.momentum_buffers) {
    auto it = index.find(name);
    if (it == index.end()) {
      std::ostringstream known;
      for (size_t i = 0; i < names_.size(); ++i) known << (i ? ", " : "") << "'" << names_[i] << "'";
      TG_THROW("SGD::load_state: momentum buffer '", name,
               "' names no parameter of this optimizer; expected one of ", known.str());
    }
    const size_t i = it->second;
    TG_CHECK(source[i] == nullptr, "SGD::load_state: momentum buffer '", name,
             "' appears twice; expected at most one per parameter");
    TG_CHECK(buf.defined(), "SGD::load_state: momentum buffer '", name, "' is undefined");
    TG_CHECK(buf.shape() == params_[i].shape(), "SGD::load_state: momentum buffer '", name,
             "' has shape ", buf.shape(), ", expected the parameter's shape ",
             params_[i].shape());
    source[i] = &buf;
  }
  std::vector<Tensor> loaded(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    if (source[i] == nullptr) continue;
    loaded[i] = Tensor::empty(params_[i].shape(), params_[i].dtype(), params_[i].device());
    loaded[i].copy_(*source[i]);
  }
  buffers_ = std::move(loaded);
  step_ = state.step;
}

}  // namespace tg::optim
