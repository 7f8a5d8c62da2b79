// conv_block and conv_block_mse_loss: validation, the choice of path (conv_block_can_implement),
// the direct CUDA path and its autograd node (kernels: ops/conv_block/direct_kernels.cuh, compiled
// at run time by direct_cuda.cpp, and epilogue.cu),
// the epilogue CUDA path and its node (cuDNN through ops/conv2d, kernels: generic.cu), the fused
// CPU path's node (its passes: ops/conv_block/cpu.cpp), and the composition of the unfused ops for
// everything else.
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "../../core/autograd.h"
#include "../bias_scale_sigmoid.h"
#include "../conv2d.h"
#include "../group_norm.h"
#include "../mse_loss.h"
#include "kernels.h"

namespace tg::ops {

namespace {

void validate(const Tensor& x, const ConvBlockParams& p, const char* op) {
  TG_CHECK(x.defined() && x.dim() == 4, op, ": expected x of shape (N, Cin, H, W), got ",
           x.defined() ? shape_str(x.shape()) : std::string("an undefined tensor"));
  TG_CHECK(p.weight.defined() && p.weight.dim() == 4 && p.weight.size(2) == p.weight.size(3), op,
           ": expected a square weight (Cout, Cin, k, k), got ",
           p.weight.defined() ? shape_str(p.weight.shape()) : std::string("an undefined tensor"));
  const int64_t cout = p.weight.size(0);
  TG_CHECK(p.weight.size(1) == x.size(1), op, ": x has ", x.size(1),
           " channels but the weight expects ", p.weight.size(1));
  auto check = [&](const Tensor& t, const char* name, Shape a, Shape b) {
    TG_CHECK(t.defined() && (t.shape() == a || t.shape() == b), op, ": expected ", name,
             " of shape ", a, ", got ",
             t.defined() ? shape_str(t.shape()) : std::string("an undefined tensor"));
    TG_CHECK(t.dtype() == x.dtype() && t.device() == x.device(), op, ": expected ", name, " as ",
             dtype_name(x.dtype()), " on ", device_name(x.device()), ", got ", t.describe());
  };
  check(p.weight, "weight", p.weight.shape(), p.weight.shape());
  check(p.conv_bias, "conv_bias", {cout}, {cout});
  check(p.bias, "bias", {cout, 1, 1}, {cout});
  check(p.scale, "scale", {cout, 1, 1}, {cout});
  check(p.gn_weight, "gn_weight", {cout}, {cout});
  check(p.gn_bias, "gn_bias", {cout}, {cout});
  TG_CHECK(p.groups >= 1 && cout % p.groups == 0, op, ": expected groups to divide Cout = ", cout,
           ", got ", p.groups);
}

Tensor composed(const Tensor& x, const ConvBlockParams& p) {
  Tensor z = conv2d(x, p.weight, p.conv_bias);
  Tensor s = bias_scale_sigmoid(z, p.bias, p.scale);
  return group_norm(s, p.groups, p.gn_weight, p.gn_bias, GroupNormOptions{p.eps});
}

// What both fused nodes (CUDA and CPU) keep for the backward. Inputs on the tape: x, weight,
// conv_bias, bias, scale, gn_weight, gn_bias (and the target, which gets no gradient: a target that
// requires grad takes the composed path). conv_bias is not saved: z already includes it.
class ConvBlockNodeBase : public autograd::Node {
 public:
  ConvBlockNodeBase(bool loss, int64_t groups) : loss_(loss), groups_(groups) {}
  const char* name() const override { return loss_ ? "conv_block_mse_loss" : "conv_block"; }

  void save(const Tensor& x, const ConvBlockParams& p, const Tensor& z, const Tensor& target) {
    x_ = autograd::SavedTensor(x);
    weight_ = autograd::SavedTensor(p.weight);
    bias_ = autograd::SavedTensor(p.bias);
    scale_ = autograd::SavedTensor(p.scale);
    gn_weight_ = autograd::SavedTensor(p.gn_weight);
    gn_bias_ = autograd::SavedTensor(p.gn_bias);
    z_ = autograd::SavedTensor(z);
    if (target.defined()) target_ = autograd::SavedTensor(target);
  }
  /// The saved parameters (conv_bias left undefined); throws if one was modified in place.
  ConvBlockParams params() const {
    ConvBlockParams p;
    p.weight = weight_.get(name());
    p.bias = bias_.get(name());
    p.scale = scale_.get(name());
    p.gn_weight = gn_weight_.get(name());
    p.gn_bias = gn_bias_.get(name());
    p.groups = groups_;
    return p;
  }
  void release_saved() override {
    for (auto* s : {&x_, &weight_, &bias_, &scale_, &gn_weight_, &gn_bias_, &target_, &z_})
      s->release();
  }

 protected:
  bool loss_;
  int64_t groups_;
  autograd::SavedTensor x_, weight_, bias_, scale_, gn_weight_, gn_bias_, target_, z_;
};

std::vector<Tensor> all_inputs(const Tensor& x, const ConvBlockParams& p) {
  return {x, p.weight, p.conv_bias, p.bias, p.scale, p.gn_weight, p.gn_bias};
}

#ifdef TG_WITH_CUDA
const float* f(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }
float* fm(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }

struct Forward {
  Tensor z, mean, rstd;
  detail::ConvBlockShape sh;
  Tensor bias_eff;  ///< the epilogue path's b' = conv_bias + bias (z excludes conv_bias there)
};

Forward fused_forward(const Tensor& x, const ConvBlockParams& p) {
  const int N = int(x.size(0)), cin = int(x.size(1)), H = int(x.size(2)), W = int(x.size(3));
  const int cout = int(p.weight.size(0)), k = int(p.weight.size(2)), G = int(p.groups);
  Forward r;
  r.sh = detail::conv_block_shape(N, H, W, k, G);
  r.z = Tensor::empty({N, cout, r.sh.Ho, r.sh.Wo}, DType::Float32, Device::CUDA);
  Tensor tile_stats = Tensor::empty({int64_t(N) * G * r.sh.tiles_y * r.sh.tiles_x * 4},
                                    DType::Float32, Device::CUDA);
  r.mean = Tensor::empty({N, G}, DType::Float32, Device::CUDA);
  r.rstd = Tensor::empty({N, G}, DType::Float32, Device::CUDA);
  detail::ConvBlockForwardArgs a{};
  a.cin = cin;
  a.cout = cout;
  a.k = k;
  a.shape = r.sh;
  a.eps = p.eps;
  a.tf32 = conv::allow_tf32();
  a.x = f(x);
  a.weight = f(p.weight);
  a.conv_bias = f(p.conv_bias);
  a.bias = f(p.bias);
  a.scale = f(p.scale);
  a.z = fm(r.z);
  a.tile_stats = fm(tile_stats);
  a.mean = fm(r.mean);
  a.rstd = fm(r.rstd);
  detail::conv_block_forward_cuda(a);
  return r;
}

// The reductions that the backward needs: A, B per (n, g), dgamma and dbeta for dy (or, with the
// loss, for an output gradient of 1), and the loss itself.
struct Reduced {
  Tensor A, B, dgamma_u, dbeta_u, loss;
};

Reduced fused_reduce(const Forward& fw, const ConvBlockParams& p, const Tensor& other, bool loss) {
  const int cout = int(p.weight.size(0));
  const auto& sh = fw.sh;
  Reduced r;
  const int S = detail::conv_block_reduce_chunks(sh);
  Tensor part = Tensor::empty({int64_t(sh.N) * cout * S * 3}, DType::Float32, Device::CUDA);
  r.A = Tensor::empty({sh.N, sh.G}, DType::Float32, Device::CUDA);
  r.B = Tensor::empty({sh.N, sh.G}, DType::Float32, Device::CUDA);
  r.dgamma_u = Tensor::empty({cout}, DType::Float32, Device::CUDA);
  r.dbeta_u = Tensor::empty({cout}, DType::Float32, Device::CUDA);
  if (loss) r.loss = Tensor::empty({}, DType::Float32, Device::CUDA);
  detail::ConvBlockReduceArgs a{};
  a.cout = cout;
  a.shape = sh;
  a.loss_target = loss;
  a.z = f(fw.z);
  a.other = f(other);
  a.mean = f(fw.mean);
  a.rstd = f(fw.rstd);
  a.bias = f(p.bias);
  a.scale = f(p.scale);
  a.gamma = f(p.gn_weight);
  a.beta = f(p.gn_bias);
  a.part = fm(part);
  a.loss = loss ? fm(r.loss) : nullptr;
  a.A = fm(r.A);
  a.B = fm(r.B);
  a.dgamma_u = fm(r.dgamma_u);
  a.dbeta_u = fm(r.dbeta_u);
  detail::conv_block_reduce_cuda(a);
  return r;
}


class ConvBlockNode : public ConvBlockNodeBase {
 public:
  using ConvBlockNodeBase::ConvBlockNodeBase;

  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    const char* op = name();
    const Tensor& x = x_.get(op);
    const ConvBlockParams p = params();
    Forward fw;
    fw.z = z_.get(op);
    fw.mean = mean_.get(op);
    fw.rstd = rstd_.get(op);
    fw.sh = sh_;
    Reduced red;
    Tensor other;
    if (loss_) {
      other = target_.get(op);
      red = red_;
    } else {
      other = g[0];
      red = fused_reduce(fw, p, other, false);
    }
    const int cout = int(p.weight.size(0)), cin = int(p.weight.size(1)), k = int(p.weight.size(2));
    const int grid = detail::conv_block_backward_grid(sh_, cout);
    const int64_t ws = int64_t(cout) * cin * k * k;
    Tensor dw_part = Tensor::empty({grid * ws}, DType::Float32, Device::CUDA);
    Tensor db_part = Tensor::empty({int64_t(grid) * cout}, DType::Float32, Device::CUDA);
    Tensor ds_part = Tensor::empty({int64_t(grid) * cout}, DType::Float32, Device::CUDA);
    std::vector<Tensor> out(inputs().size());
    auto grad_like = [&](size_t i, const Shape& shape) {
      if (needs_input_grad(i)) out[i] = Tensor::empty(shape, DType::Float32, Device::CUDA);
      return fm(out[i]);
    };
    Tensor dz;
    if (needs_input_grad(0)) dz = Tensor::empty(fw.z.shape(), DType::Float32, Device::CUDA);
    detail::ConvBlockBackwardArgs a{};
    a.cin = cin;
    a.cout = cout;
    a.k = k;
    a.shape = sh_;
    a.loss_target = loss_;
    a.tf32 = conv::allow_tf32();  // read when the backward runs, as cuDNN's backward convolutions do
    a.x = f(x);
    a.z = f(fw.z);
    a.other = f(other);
    a.mean = f(fw.mean);
    a.rstd = f(fw.rstd);
    a.A = f(red.A);
    a.B = f(red.B);
    a.bias = f(p.bias);
    a.scale = f(p.scale);
    a.gamma = f(p.gn_weight);
    a.beta = f(p.gn_bias);
    a.gout = loss_ ? f(g[0]) : nullptr;
    const double numel = double(fw.z.numel());
    a.dy_scale = loss_ ? float(2.0 / numel) : 1.0f;
    a.dgamma_u = f(red.dgamma_u);
    a.dbeta_u = f(red.dbeta_u);
    a.dz = fm(dz);
    a.dw_part = fm(dw_part);
    a.dbias_part = fm(db_part);
    a.dscale_part = fm(ds_part);
    a.dweight = grad_like(1, p.weight.shape());
    a.dconv_bias = grad_like(2, Shape{cout});
    a.dbias = grad_like(3, p.bias.shape());
    a.dscale = grad_like(4, p.scale.shape());
    a.dgamma = grad_like(5, p.gn_weight.shape());
    a.dbeta = grad_like(6, p.gn_bias.shape());
    detail::conv_block_backward_cuda(a);
    if (dz.defined()) out[0] = conv2d_backward(dz, x, p.weight, Conv2dOptions{}, true, false, false).dx;
    return out;
  }

  void release_saved() override {
    ConvBlockNodeBase::release_saved();
    mean_.release();
    rstd_.release();
    red_ = Reduced{};
  }

  detail::ConvBlockShape sh_{};
  autograd::SavedTensor mean_, rstd_;
  Reduced red_;
};

// ---- the epilogue path --------------------------------------------------------------------------
// cuDNN writes z = conv(x) without conv_bias: b' = conv_bias + bias is folded into the bias that
// the epilogue passes add anyway (the statistics pass writes it), so cuDNN's separate bias pass (a
// read and a write of all of z: the forward's traffic would grow from 3P + X to 5P + X) never runs;
// the rounding differs from (z + conv_bias) + bias by at most an ulp of z + b'. d conv_bias =
// d bias either way.

detail::Conv2dParams conv_params(const Tensor& x, const Tensor& weight) {
  return detail::conv2d_params(x, weight, Conv2dOptions{});
}

// z, mean, rstd and b'; with a target also the loss and the backward's reductions (into red).
Forward epilogue_forward(const Tensor& x, const ConvBlockParams& p, const Tensor& target,
                         Reduced* red) {
  const int N = int(x.size(0)), H = int(x.size(2)), W = int(x.size(3));
  const int cout = int(p.weight.size(0)), k = int(p.weight.size(2)), G = int(p.groups);
  Forward r;
  r.sh = detail::conv_block_shape(N, H, W, k, G);
  r.z = Tensor::empty({N, cout, r.sh.Ho, r.sh.Wo}, DType::Float32, Device::CUDA);
  detail::conv2d_forward_cuda(conv_params(x, p.weight), DType::Float32, f(x), f(p.weight), nullptr,
                              fm(r.z));
  r.mean = Tensor::empty({N, G}, DType::Float32, Device::CUDA);
  r.rstd = Tensor::empty({N, G}, DType::Float32, Device::CUDA);
  r.bias_eff = Tensor::empty({cout}, DType::Float32, Device::CUDA);
  detail::ConvBlockMomentsArgs a{};
  a.cout = cout;
  a.shape = r.sh;
  a.eps = p.eps;
  a.z = f(r.z);
  a.target = f(target);
  a.conv_bias = f(p.conv_bias);
  a.bias = f(p.bias);
  a.scale = f(p.scale);
  a.gamma = f(p.gn_weight);
  a.beta = f(p.gn_bias);
  a.bias_eff = fm(r.bias_eff);
  a.mean = fm(r.mean);
  a.rstd = fm(r.rstd);
  if (target.defined()) {
    red->A = Tensor::empty({N, G}, DType::Float32, Device::CUDA);
    red->B = Tensor::empty({N, G}, DType::Float32, Device::CUDA);
    red->dgamma_u = Tensor::empty({cout}, DType::Float32, Device::CUDA);
    red->dbeta_u = Tensor::empty({cout}, DType::Float32, Device::CUDA);
    red->loss = Tensor::empty({}, DType::Float32, Device::CUDA);
    a.loss = fm(red->loss);
    a.A = fm(red->A);
    a.B = fm(red->B);
    a.dgamma_u = fm(red->dgamma_u);
    a.dbeta_u = fm(red->dbeta_u);
  }
  detail::conv_block_moments_cuda(a);
  return r;
}

// The direct node's saved state (and b'), a different backward: one dz pass (dz written only when
// the convolution's gradients need it, freed at the end), then cuDNN's weight gradient and, when x
// needs a gradient, its data gradient. With a given dy the reductions run first (fused_reduce).
class EpilogueNode : public ConvBlockNode {
 public:
  using ConvBlockNode::ConvBlockNode;

  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    const char* op = name();
    ConvBlockParams p = params();
    const Shape bias_shape = p.bias.shape();
    p.bias = bias_eff_;
    Forward fw;
    fw.z = z_.get(op);
    fw.mean = mean_.get(op);
    fw.rstd = rstd_.get(op);
    fw.sh = sh_;
    const Tensor other = loss_ ? target_.get(op) : g[0];
    TG_CHECK(other.shape() == fw.z.shape() && other.dtype() == DType::Float32 && other.is_cuda(),
             op, ": backward expected a gradient like ", fw.z.describe(), ", got ",
             other.describe());
    const Reduced red = loss_ ? red_ : fused_reduce(fw, p, other, false);
    const bool need_dx = needs_input_grad(0), need_dw = needs_input_grad(1);
    const int cout = int(p.weight.size(0));
    std::vector<Tensor> out(inputs().size());
    auto grad_like = [&](size_t i, const Shape& shape) {
      if (needs_input_grad(i)) out[i] = Tensor::empty(shape, DType::Float32, Device::CUDA);
      return fm(out[i]);
    };
    Tensor dz;
    if (need_dx || need_dw) dz = Tensor::empty(fw.z.shape(), DType::Float32, Device::CUDA);
    detail::ConvBlockBackwardArgs a{};
    a.cout = cout;
    a.shape = sh_;
    a.loss_target = loss_;
    a.z = f(fw.z);
    a.other = f(other);
    a.mean = f(fw.mean);
    a.rstd = f(fw.rstd);
    a.A = f(red.A);
    a.B = f(red.B);
    a.bias = f(p.bias);
    a.scale = f(p.scale);
    a.gamma = f(p.gn_weight);
    a.beta = f(p.gn_bias);
    a.gout = loss_ ? f(g[0]) : nullptr;
    a.dy_scale = loss_ ? float(2.0 / double(fw.z.numel())) : 1.0f;
    a.dgamma_u = f(red.dgamma_u);
    a.dbeta_u = f(red.dbeta_u);
    a.dz = fm(dz);
    a.dconv_bias = grad_like(2, Shape{cout});
    a.dbias = grad_like(3, bias_shape);
    a.dscale = grad_like(4, p.scale.shape());
    a.dgamma = grad_like(5, p.gn_weight.shape());
    a.dbeta = grad_like(6, p.gn_bias.shape());
    detail::conv_block_epilogue_dz_cuda(a);
    if (dz.defined()) {
      const Tensor& x = x_.get(op);
      grad_like(0, x.shape());
      grad_like(1, p.weight.shape());
      detail::conv2d_backward_cuda(conv_params(x, p.weight), DType::Float32, f(x), f(p.weight),
                                   f(dz), fm(out[0]), fm(out[1]), nullptr);
    }
    return out;
  }

  void release_saved() override {
    ConvBlockNode::release_saved();
    bias_eff_ = Tensor();
  }

  Tensor bias_eff_;
};

template <typename NodeT>
std::shared_ptr<NodeT> make_cuda_node(bool loss, const Tensor& x, const ConvBlockParams& p,
                                      const Forward& fw, const Tensor& target) {
  auto n = std::make_shared<NodeT>(loss, p.groups);
  n->save(x, p, fw.z, target);
  n->mean_ = autograd::SavedTensor(fw.mean);
  n->rstd_ = autograd::SavedTensor(fw.rstd);
  n->sh_ = fw.sh;
  return n;
}

// Both CUDA paths of conv_block: the forward, y (over z without the tape) and the node.
Tensor cuda_conv_block(const Tensor& x, const ConvBlockParams& p, bool direct) {
  Forward fw = direct ? fused_forward(x, p) : epilogue_forward(x, p, Tensor(), nullptr);
  const int cout = int(p.weight.size(0));
  const bool record = autograd::should_record(all_inputs(x, p));
  // Without the tape z is not needed afterwards: y overwrites it.
  Tensor y = record ? Tensor::empty(fw.z.shape(), DType::Float32, Device::CUDA) : fw.z;
  detail::conv_block_normalize_cuda(f(fw.z), f(fw.mean), f(fw.rstd),
                                    direct ? f(p.bias) : f(fw.bias_eff), f(p.scale), f(p.gn_weight),
                                    f(p.gn_bias), fw.sh, cout, fm(y));
  if (record) {
    if (direct) {
      autograd::record(make_cuda_node<ConvBlockNode>(false, x, p, fw, Tensor()), all_inputs(x, p),
                       {y});
    } else {
      auto node = make_cuda_node<EpilogueNode>(false, x, p, fw, Tensor());
      node->bias_eff_ = fw.bias_eff;
      autograd::record(node, all_inputs(x, p), {y});
    }
  } else {
    y.bump_version();
  }
  return y;
}

Tensor cuda_conv_block_mse_loss(const Tensor& x, const ConvBlockParams& p, const Tensor& target,
                                bool direct) {
  Reduced red;
  Forward fw;
  if (direct) {
    fw = fused_forward(x, p);
    red = fused_reduce(fw, p, target, true);
  } else {
    fw = epilogue_forward(x, p, target, &red);
  }
  Tensor loss = red.loss;
  // The node must not hold its own output: a loss dropped without a backward would keep its node
  // (and everything saved) alive through the cycle, and the tape could never prune it.
  red.loss = Tensor();
  std::vector<Tensor> inputs = all_inputs(x, p);
  inputs.push_back(target);
  if (autograd::should_record(inputs)) {
    if (direct) {
      auto node = make_cuda_node<ConvBlockNode>(true, x, p, fw, target);
      node->red_ = red;
      autograd::record(node, inputs, {loss});
    } else {
      auto node = make_cuda_node<EpilogueNode>(true, x, p, fw, target);
      node->red_ = red;
      node->bias_eff_ = fw.bias_eff;
      autograd::record(node, inputs, {loss});
    }
  }
  return loss;
}
#endif

// ---- the fused CPU path -------------------------------------------------------------------------

detail::ConvBlockCpuSizes cpu_sizes(const detail::Conv2dParams& c, int64_t groups) {
  return {c.N, c.Cout, c.Hout * c.Wout, groups};
}

struct CpuForward {
  Tensor z;
  std::vector<double> mean, rstd;
};

template <typename T>
CpuForward cpu_forward(const Tensor& x, const ConvBlockParams& p) {
  const detail::Conv2dParams c = detail::conv2d_params(x, p.weight, Conv2dOptions{});
  CpuForward r;
  r.z = Tensor::empty({c.N, c.Cout, c.Hout, c.Wout}, x.dtype(), Device::CPU);
  detail::conv2d_forward_cpu<T>(c, x.data<T>(), p.weight.data<T>(), p.conv_bias.data<T>(),
                                r.z.data<T>());
  r.mean.resize(size_t(c.N * p.groups));
  r.rstd.resize(size_t(c.N * p.groups));
  detail::conv_block_stats_cpu<T>(cpu_sizes(c, p.groups), r.z.data<T>(), p.bias.data<T>(),
                                  p.scale.data<T>(), p.eps, r.mean.data(), r.rstd.data());
  return r;
}

// The backward's reductions (see detail::conv_block_reduce_cpu), in double.
struct CpuReduced {
  std::vector<double> A, B, dgamma, dbeta;
  double loss = 0;
};

template <typename T>
CpuReduced cpu_reduce(const CpuForward& fw, const ConvBlockParams& p, const Tensor& other,
                      bool loss) {
  const detail::ConvBlockCpuSizes sz{fw.z.size(0), fw.z.size(1), fw.z.size(2) * fw.z.size(3),
                                     p.groups};
  const double numel = double(fw.z.numel());
  CpuReduced r;
  r.A.resize(size_t(sz.N * sz.G));
  r.B.resize(size_t(sz.N * sz.G));
  r.dgamma.resize(size_t(sz.C));
  r.dbeta.resize(size_t(sz.C));
  detail::conv_block_reduce_cpu<T>(sz, loss, fw.z.data<T>(), other.data<T>(), fw.mean.data(),
                                   fw.rstd.data(), p.bias.data<T>(), p.scale.data<T>(),
                                   p.gn_weight.data<T>(), p.gn_bias.data<T>(),
                                   loss ? 2.0 / numel : 1.0, 1.0 / numel,
                                   loss ? &r.loss : nullptr, r.A.data(), r.B.data(),
                                   r.dgamma.data(), r.dbeta.data());
  return r;
}

class ConvBlockCpuNode : public ConvBlockNodeBase {
 public:
  using ConvBlockNodeBase::ConvBlockNodeBase;

  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    return dispatch_dtype(g[0].dtype(), [&](auto tag) {
      using T = decltype(tag);
      return backward_typed<T>(g);
    });
  }

  template <typename T>
  std::vector<Tensor> backward_typed(const std::vector<Tensor>& g) {
    const char* op = name();
    const ConvBlockParams p = params();
    CpuForward fw;
    fw.z = z_.get(op);
    fw.mean = mean_;
    fw.rstd = rstd_;
    const Tensor other = loss_ ? target_.get(op) : g[0];
    TG_CHECK(other.shape() == fw.z.shape() && other.dtype() == fw.z.dtype() && !other.is_cuda(),
             op, ": backward expected a gradient like ", fw.z.describe(), ", got ",
             other.describe());
    const CpuReduced red = loss_ ? red_ : cpu_reduce<T>(fw, p, other, false);
    // The loss's output gradient scales everything formed for an output gradient of 1.
    const double gout = loss_ ? double(g[0].data<T>()[0]) : 1.0;
    const double numel = double(fw.z.numel());

    std::vector<Tensor> out(inputs().size());
    auto channel_grad = [&](size_t i, const Shape& shape, const std::vector<double>& v, double k) {
      if (!needs_input_grad(i)) return;
      out[i] = Tensor::empty(shape, fw.z.dtype(), Device::CPU);
      T* d = out[i].data<T>();
      for (size_t c = 0; c < v.size(); ++c) d[c] = T(v[c] * k);
    };
    channel_grad(5, p.gn_weight.shape(), red.dgamma, gout);
    channel_grad(6, p.gn_bias.shape(), red.dbeta, gout);

    const bool need_dx = needs_input_grad(0), need_dw = needs_input_grad(1);
    if (!need_dx && !need_dw && !needs_input_grad(2) && !needs_input_grad(3) &&
        !needs_input_grad(4))
      return out;
    const int64_t C = fw.z.size(1);
    const detail::ConvBlockCpuSizes sz{fw.z.size(0), C, fw.z.size(2) * fw.z.size(3), groups_};
    Tensor dz = Tensor::empty(fw.z.shape(), fw.z.dtype(), Device::CPU);
    std::vector<double> dbias(static_cast<size_t>(C)), dscale(static_cast<size_t>(C));
    detail::conv_block_dz_cpu<T>(sz, loss_, fw.z.data<T>(), other.data<T>(), fw.mean.data(),
                                 fw.rstd.data(), red.A.data(), red.B.data(), gout,
                                 p.bias.data<T>(), p.scale.data<T>(), p.gn_weight.data<T>(),
                                 p.gn_bias.data<T>(), loss_ ? gout * 2.0 / numel : 1.0,
                                 dz.data<T>(), dbias.data(), dscale.data());
    channel_grad(2, Shape{C}, dbias, 1.0);  // d conv_bias = d bias
    channel_grad(3, p.bias.shape(), dbias, 1.0);
    channel_grad(4, p.scale.shape(), dscale, 1.0);
    if (need_dx || need_dw) {
      const Tensor x = x_.get(op);
      const detail::Conv2dParams c = detail::conv2d_params(x, p.weight, Conv2dOptions{});
      if (need_dx) out[0] = Tensor::empty(x.shape(), x.dtype(), Device::CPU);
      if (need_dw) out[1] = Tensor::empty(p.weight.shape(), x.dtype(), Device::CPU);
      detail::conv2d_backward_cpu<T>(c, x.data<T>(), p.weight.data<T>(), dz.data<T>(),
                                     need_dx ? out[0].data<T>() : nullptr,
                                     need_dw ? out[1].data<T>() : nullptr, nullptr);
    }
    return out;
  }

  void release_saved() override {
    ConvBlockNodeBase::release_saved();
    mean_ = rstd_ = {};
    red_ = CpuReduced{};
  }

  std::vector<double> mean_, rstd_;
  CpuReduced red_;
};

std::shared_ptr<ConvBlockCpuNode> make_cpu_node(bool loss, const Tensor& x,
                                                const ConvBlockParams& p, CpuForward& fw,
                                                const Tensor& target = Tensor()) {
  auto n = std::make_shared<ConvBlockCpuNode>(loss, p.groups);
  n->save(x, p, fw.z, target);
  n->mean_ = std::move(fw.mean);
  n->rstd_ = std::move(fw.rstd);
  return n;
}

template <typename T>
Tensor cpu_conv_block(const Tensor& x, const ConvBlockParams& p) {
  CpuForward fw = cpu_forward<T>(x, p);
  const bool record = autograd::should_record(all_inputs(x, p));
  // Without the tape z is not needed afterwards: y overwrites it.
  Tensor y = record ? Tensor::empty(fw.z.shape(), fw.z.dtype(), Device::CPU) : fw.z;
  detail::conv_block_normalize_cpu<T>(
      {fw.z.size(0), fw.z.size(1), fw.z.size(2) * fw.z.size(3), p.groups}, fw.z.data<T>(),
      fw.mean.data(), fw.rstd.data(), p.bias.data<T>(), p.scale.data<T>(), p.gn_weight.data<T>(),
      p.gn_bias.data<T>(), y.data<T>());
  if (record) {
    autograd::record(make_cpu_node(false, x, p, fw), all_inputs(x, p), {y});
  } else {
    y.bump_version();
  }
  return y;
}

template <typename T>
Tensor cpu_conv_block_mse_loss(const Tensor& x, const ConvBlockParams& p, const Tensor& target) {
  CpuForward fw = cpu_forward<T>(x, p);
  CpuReduced red = cpu_reduce<T>(fw, p, target, true);
  Tensor loss = Tensor::empty({}, x.dtype(), Device::CPU);
  loss.data<T>()[0] = T(red.loss);
  auto inputs = all_inputs(x, p);
  inputs.push_back(target);
  if (autograd::should_record(inputs)) {
    auto node = make_cpu_node(true, x, p, fw, target);
    node->red_ = std::move(red);
    autograd::record(node, inputs, {loss});
  }
  return loss;
}

// ---- the choice of path -------------------------------------------------------------------------

#ifdef TG_WITH_CUDA
// "" when the direct kernels handle (cin, cout, k) with TF32 as given; otherwise why not. The one
// place that asks the direct kernels (ops/conv_block/direct_cuda.cpp).
std::string direct_check(int cin, int cout, int k, bool tf32) {
  return detail::conv_block_direct_check(cin, cout, k, tf32);
}
#endif

// Whether blocks the direct kernels handle take them: TG_DIRECT_KERNELS at the first use, then
// conv_block_set_direct_enabled.
std::atomic<bool>& direct_enabled_flag() {
  static std::atomic<bool> flag{
      detail::env_switch_enabled("TG_DIRECT_KERNELS", std::getenv("TG_DIRECT_KERNELS"))};
  return flag;
}

ConvBlockPlan plan(const Tensor& x, const ConvBlockParams& p, const Tensor* target) {
  using P = ConvBlockPath;
  if (target && target->defined() && target->requires_grad())
    return {P::Composition, "the target requires grad (the fused nodes give it none)"};
  const int64_t k = p.weight.size(2);
  if (x.numel() == 0) return {P::Composition, "x is empty"};
  if (x.size(2) < k || x.size(3) < k)
    return {P::Composition, "the kernel (" + std::to_string(k) + "x" + std::to_string(k) +
                                ") is larger than the input (" + std::to_string(x.size(2)) + "x" +
                                std::to_string(x.size(3)) + ")"};
  if (!x.is_cuda()) return {P::FusedCpu, ""};
  if (x.dtype() != DType::Float32)
    return {P::Composition, std::string(dtype_name(x.dtype())) +
                                " on cuda: the fused CUDA kernels are float32 only"};
  const int64_t cout = p.weight.size(0);
  const int64_t znumel = x.size(0) * cout * (x.size(2) - k + 1) * (x.size(3) - k + 1);
  constexpr int64_t kMaxIndex = int64_t(1) << 31;
  if (x.numel() >= kMaxIndex || znumel >= kMaxIndex)
    return {P::Composition, "x has " + std::to_string(x.numel()) + " elements and z " +
                                std::to_string(znumel) +
                                ": the fused kernels index with 32 bits (at most 2^31 - 1)"};
#ifdef TG_WITH_CUDA
  if (!direct_enabled_flag().load())
    return {P::EpilogueCuda,
            "direct: disabled (TG_DIRECT_KERNELS=0 or conv_block_set_direct_enabled(false))"};
  const std::string why = direct_check(int(x.size(1)), int(cout), int(k), conv::allow_tf32());
  if (why.empty()) return {P::DirectCuda, ""};
  return {P::EpilogueCuda, "direct: " + why};
#else
  return {P::Composition, "built without CUDA"};
#endif
}

// One stderr line per (op, shape, dtype, device, reason) that takes the composition.
void log_composition(const char* op, const Tensor& x, const ConvBlockParams& p,
                     const ConvBlockPlan& pl) {
  static std::mutex mutex;
  static std::set<std::string> seen;
  const std::string line = std::string("tapegrad: ") + op + " x " + shape_str(x.shape()) + " " +
                           dtype_name(x.dtype()) + " " + device_name(x.device()) + ", weight " +
                           shape_str(p.weight.shape()) + ", groups " + std::to_string(p.groups) +
                           ": composition (" + pl.reason + ")";
  std::lock_guard<std::mutex> lock(mutex);
  if (seen.insert(line).second) std::cerr << line << std::endl;
}

void check_target(const Tensor& x, const ConvBlockParams& p, const Tensor& target) {
  const int64_t k = p.weight.size(2);
  const Shape yshape{x.size(0), p.weight.size(0), x.size(2) - k + 1, x.size(3) - k + 1};
  TG_CHECK(target.defined() && target.shape() == yshape,
           "conv_block_mse_loss: expected a target of shape ", yshape, ", got ",
           target.defined() ? shape_str(target.shape()) : std::string("an undefined tensor"));
  TG_CHECK(target.dtype() == x.dtype() && target.device() == x.device(),
           "conv_block_mse_loss: expected a ", dtype_name(x.dtype()), " ", device_name(x.device()),
           " target, got ", target.describe());
}

}  // namespace

const char* conv_block_path_name(ConvBlockPath path) {
  switch (path) {
    case ConvBlockPath::DirectCuda:
      return "direct";
    case ConvBlockPath::EpilogueCuda:
      return "epilogue";
    case ConvBlockPath::FusedCpu:
      return "fused-cpu";
    case ConvBlockPath::Composition:
      break;
  }
  return "composition";
}

ConvBlockPlan conv_block_can_implement(const Tensor& x, const ConvBlockParams& p) {
  validate(x, p, "conv_block");
  return plan(x, p, nullptr);
}

ConvBlockPlan conv_block_can_implement(const Tensor& x, const ConvBlockParams& p,
                                       const Tensor& target) {
  validate(x, p, "conv_block_mse_loss");
  return plan(x, p, &target);
}

void conv_block_set_direct_enabled(bool value) { direct_enabled_flag().store(value); }
bool conv_block_direct_enabled() { return direct_enabled_flag().load(); }

bool detail::env_switch_enabled(const char* name, const char* value) {
  if (value == nullptr || *value == '\0') return true;
  const std::string v = value;
  if (v == "1" || v == "on" || v == "true") return true;
  if (v == "0" || v == "off" || v == "false") return false;
  TG_THROW(name, ": expected 1, on, true (the default) or 0, off, false, got '", v, "'");
}

bool conv_block_fused_available(const Tensor& x, const ConvBlockParams& p) {
  return conv_block_can_implement(x, p).path == ConvBlockPath::DirectCuda;
}

bool conv_block_fused_cpu_available(const Tensor& x, const ConvBlockParams& p) {
  return conv_block_can_implement(x, p).path == ConvBlockPath::FusedCpu;
}

Tensor conv_block(const Tensor& x, const ConvBlockParams& p) {
  validate(x, p, "conv_block");
  const ConvBlockPlan pl = plan(x, p, nullptr);
  switch (pl.path) {
    case ConvBlockPath::FusedCpu:
      return dispatch_dtype(x.dtype(),
                            [&](auto tag) { return cpu_conv_block<decltype(tag)>(x, p); });
#ifdef TG_WITH_CUDA
    case ConvBlockPath::DirectCuda:
      return cuda_conv_block(x, p, true);
    case ConvBlockPath::EpilogueCuda:
      return cuda_conv_block(x, p, false);
#endif
    default:
      break;
  }
  log_composition("conv_block", x, p, pl);
  return composed(x, p);
}

Tensor conv_block_mse_loss(const Tensor& x, const ConvBlockParams& p, const Tensor& target) {
  validate(x, p, "conv_block_mse_loss");
  const ConvBlockPlan pl = plan(x, p, &target);
  if (pl.path != ConvBlockPath::Composition) check_target(x, p, target);
  switch (pl.path) {
    case ConvBlockPath::FusedCpu:
      return dispatch_dtype(x.dtype(), [&](auto tag) {
        return cpu_conv_block_mse_loss<decltype(tag)>(x, p, target);
      });
#ifdef TG_WITH_CUDA
    case ConvBlockPath::DirectCuda:
      return cuda_conv_block_mse_loss(x, p, target, true);
    case ConvBlockPath::EpilogueCuda:
      return cuda_conv_block_mse_loss(x, p, target, false);
#endif
    default:
      break;
  }
  log_composition("conv_block_mse_loss", x, p, pl);
  return mse_loss(composed(x, p), target);
}

}  // namespace tg::ops
