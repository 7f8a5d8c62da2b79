// AdamW (optim/adamw.h): groups, validation, lazily created moments, the CPU loop and the CUDA
// dispatch (kernel in optim/adamw.cu).
#include "adamw.h"

#include <cmath>
#include <set>

#include "../core/autograd.h"
#include "../core/cuda_context.h"
#include "../core/cuda_graph.h"
#ifdef TG_WITH_CUDA
#include "../core/cuda_utils.h"
#endif

namespace tg::optim {

namespace detail {

template <typename T>
void adamw_step_cpu(T* p, const T* g, T* m, T* v, int64_t n, const AdamWScalars& s,
                    const AdamWOptions& o) {
  using std::sqrt;
  const T decay = T(s.decay), omb1 = T(1.0 - o.beta1), b2 = T(o.beta2), omb2 = T(1.0 - o.beta2),
          step = T(s.step_size), bc2 = T(s.bc2_sqrt), eps = T(o.eps);
  for (int64_t i = 0; i < n; ++i)
    adamw_update_element<T>(p[i], g[i], m[i], v[i], decay, omb1, b2, omb2, step, bc2, eps);
}
template void adamw_step_cpu<float>(float*, const float*, float*, float*, int64_t,
                                    const AdamWScalars&, const AdamWOptions&);
template void adamw_step_cpu<double>(double*, const double*, double*, double*, int64_t,
                                     const AdamWScalars&, const AdamWOptions&);

}  // namespace detail

namespace {
void check_hyper(double lr, double wd) {
  TG_CHECK(lr >= 0, "AdamW: invalid learning rate ", lr, ": expected lr >= 0");
  TG_CHECK(wd >= 0, "AdamW: invalid weight_decay value ", wd, ": expected weight_decay >= 0");
}
}  // namespace

AdamW::AdamW(std::vector<std::pair<std::string, Tensor>> named_params, AdamWOptions options)
    : AdamW(std::vector<ParamGroup>{ParamGroup{std::move(named_params)}}, options) {}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions o) : options_(o) {
  check_hyper(o.lr, o.weight_decay);
  TG_CHECK(o.eps >= 0, "AdamW: invalid epsilon value ", o.eps, ": expected eps >= 0");
  TG_CHECK(o.beta1 >= 0 && o.beta1 < 1, "AdamW: invalid beta1 ", o.beta1, ": expected 0 <= beta1 < 1");
  TG_CHECK(o.beta2 >= 0 && o.beta2 < 1, "AdamW: invalid beta2 ", o.beta2, ": expected 0 <= beta2 < 1");
  TG_CHECK(!groups.empty(), "AdamW: expected at least one parameter group");
  std::set<std::string> names;
  std::set<const TensorImpl*> tensors;
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const ParamGroup& pg = groups[gi];
    Group g{pg.lr >= 0 ? pg.lr : o.lr, pg.weight_decay >= 0 ? pg.weight_decay : o.weight_decay, {}};
    check_hyper(g.lr, g.weight_decay);
    TG_CHECK(!pg.params.empty(), "AdamW: parameter group ", gi, " is empty");
    for (const auto& [name, p] : pg.params) {
      TG_CHECK(!name.empty() && names.insert(name).second, "AdamW: parameter name '", name,
               "' is empty or appears twice; expected unique names");
      TG_CHECK(p.defined() && p.is_leaf() && p.requires_grad(), "AdamW: parameter '", name,
               "' must be a defined leaf that requires grad, got ", p.describe());
      TG_CHECK(tensors.insert(p.impl().get()).second, "AdamW: parameter '", name,
               "' is the same tensor as an earlier parameter");
      if (params_.empty()) device_ = p.device();
      TG_CHECK(p.device() == device_, "AdamW: expected all parameters on ", device_,
               ", parameter '", name, "' is on ", p.device());
      g.params.push_back(params_.size());
      params_.push_back(p);
      names_.push_back(name);
    }
    groups_.push_back(g);
  }
  exp_avg_.resize(params_.size());
  exp_avg_sq_.resize(params_.size());
  steps_.assign(params_.size(), 0);
}

double AdamW::group_lr(size_t g) const {
  TG_CHECK(g < groups_.size(), "AdamW: parameter group ", g, " does not exist (", groups_.size(),
           " groups)");
  return groups_[g].lr;
}

double AdamW::group_weight_decay(size_t g) const {
  TG_CHECK(g < groups_.size(), "AdamW: parameter group ", g, " does not exist (", groups_.size(),
           " groups)");
  return groups_[g].weight_decay;
}

void AdamW::set_group_lr(size_t g, double lr) {
  TG_CHECK(g < groups_.size(), "AdamW: parameter group ", g, " does not exist (", groups_.size(),
           " groups)");
  check_hyper(lr, 0.0);
  groups_[g].lr = lr;
}

void AdamW::zero_grad(bool set_to_none) {
  autograd::NoGradGuard no_grad;
  for (Tensor& p : params_) {
    if (set_to_none) p.set_grad(Tensor());
    else if (p.grad().defined()) p.grad().zero_();
  }
}

void AdamW::step() {
  // A replay would repeat the launch with this step's bias corrections and without counting it.
  TG_CHECK(device_ != Device::CUDA || !cuda::is_capturing(),
           "AdamW::step() during a CUDA graph capture: its step counts and learning rates are host "
           "state that a replay would not update; step after the replay (train::CapturedStep does)");
  autograd::NoGradGuard no_grad;
  struct Work {
    size_t i;
    detail::AdamWScalars s;
  };
  std::vector<Work> work;
  for (const Group& g : groups_)
    for (size_t i : g.params) {
      const Tensor& p = params_[i];
      const Tensor gr = p.grad();
      if (!gr.defined()) continue;
      TG_CHECK(gr.shape() == p.shape() && gr.dtype() == p.dtype() && gr.device() == p.device(),
               "AdamW: the gradient of parameter '", names_[i], "' is ", gr.describe(),
               "; expected one like the parameter, ", p.describe());
      if (p.numel() == 0) continue;
      if (!exp_avg_[i].defined()) {
        exp_avg_[i] = Tensor::zeros(p.shape(), p.dtype(), p.device());
        exp_avg_sq_[i] = Tensor::zeros(p.shape(), p.dtype(), p.device());
      }
      const double t = double(steps_[i] + 1);
      detail::AdamWScalars s;
      s.decay = 1.0 - g.lr * g.weight_decay;
      s.step_size = g.lr / (1.0 - std::pow(options_.beta1, t));
      s.bc2_sqrt = std::sqrt(1.0 - std::pow(options_.beta2, t));
      work.push_back({i, s});
    }
  if (device_ == Device::CPU) {
    for (const Work& w : work) {
      const Tensor& p = params_[w.i];
      dispatch_dtype(p.dtype(), [&](auto tag) {
        using T = decltype(tag);
        detail::adamw_step_cpu<T>(p.data<T>(), p.grad().data<T>(), exp_avg_[w.i].data<T>(),
                                  exp_avg_sq_[w.i].data<T>(), p.numel(), w.s, options_);
      });
    }
  } else {
#ifdef TG_WITH_CUDA
    detail::AdamWLaunch launch;
    auto flush = [&] {
      if (launch.num_tensors > 0) detail::adamw_multi_tensor_step_cuda(launch, options_, cuda::stream());
      launch = detail::AdamWLaunch();
    };
    for (const Work& w : work) {
      const Tensor& p = params_[w.i];
      detail::AdamWTensorDesc& d = launch.tensors[launch.num_tensors++];
      d.param = p.raw_data();
      d.grad = p.grad().raw_data();
      d.exp_avg = exp_avg_[w.i].raw_data();
      d.exp_avg_sq = exp_avg_sq_[w.i].raw_data();
      d.numel = p.numel();
      d.chunk_begin = launch.total_chunks;
      d.s = w.s;
      d.is_double = p.dtype() == DType::Float64;
      launch.total_chunks += (d.numel + detail::kAdamWChunk - 1) / detail::kAdamWChunk;
      if (launch.num_tensors == detail::kAdamWTensorsPerLaunch) flush();
    }
    flush();
#else
    TG_THROW("AdamW: parameters on cuda need a build of tapegrad with CUDA (-DTG_WITH_CUDA=ON)");
#endif
  }
  for (const Work& w : work) {
    ++steps_[w.i];
    params_[w.i].bump_version();
  }
}

}  // namespace tg::optim
