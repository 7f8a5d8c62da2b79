// conv_block and conv_block_mse_loss: validation, the fused CUDA path and its autograd nodes, and
// the composition of the unfused ops for everything else. Kernels and formulas: ops/conv_block.cu.
#include "ops/conv_block.h"

#include "core/autograd.h"
#include "ops/bias_scale_sigmoid.h"
#include "ops/conv2d.h"
#include "ops/group_norm.h"
#include "ops/mse_loss.h"

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

#ifdef TG_WITH_CUDA
const float* f(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }
float* fm(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }

struct Forward {
  Tensor z, mean, rstd;
  detail::ConvBlockShape sh;
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


class ConvBlockNode : public autograd::Node {
 public:
  ConvBlockNode(bool loss, int64_t groups) : loss_(loss), groups_(groups) {}
  const char* name() const override { return loss_ ? "conv_block_mse_loss" : "conv_block"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    const char* op = name();
    const Tensor& x = x_.get(op);
    ConvBlockParams p;
    p.weight = weight_.get(op);
    p.conv_bias = conv_bias_.get(op);
    p.bias = bias_.get(op);
    p.scale = scale_.get(op);
    p.gn_weight = gn_weight_.get(op);
    p.gn_bias = gn_bias_.get(op);
    p.groups = groups_;
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
    auto grad_like = [&](size_t i, const Tensor& t) {
      if (needs_input_grad(i)) out[i] = Tensor::empty(t.shape(), DType::Float32, Device::CUDA);
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
    a.dweight = grad_like(1, p.weight);
    a.dconv_bias = grad_like(2, p.conv_bias);
    a.dbias = grad_like(3, p.bias);
    a.dscale = grad_like(4, p.scale);
    a.dgamma = grad_like(5, p.gn_weight);
    a.dbeta = grad_like(6, p.gn_bias);
    detail::conv_block_backward_cuda(a);
    if (dz.defined()) out[0] = conv2d_backward(dz, x, p.weight, Conv2dOptions{}, true, false, false).dx;
    return out;
  }

  void release_saved() override {
    for (auto* s : {&x_, &weight_, &conv_bias_, &bias_, &scale_, &gn_weight_, &gn_bias_, &target_,
                    &z_, &mean_, &rstd_})
      s->release();
    red_ = Reduced{};
  }

  bool loss_;
  int64_t groups_;
  detail::ConvBlockShape sh_{};
  autograd::SavedTensor x_, weight_, conv_bias_, bias_, scale_, gn_weight_, gn_bias_, target_, z_,
      mean_, rstd_;
  Reduced red_;
};

void save_params(ConvBlockNode& n, const Tensor& x, const ConvBlockParams& p, const Forward& fw) {
  n.x_ = autograd::SavedTensor(x);
  n.weight_ = autograd::SavedTensor(p.weight);
  n.conv_bias_ = autograd::SavedTensor(p.conv_bias);
  n.bias_ = autograd::SavedTensor(p.bias);
  n.scale_ = autograd::SavedTensor(p.scale);
  n.gn_weight_ = autograd::SavedTensor(p.gn_weight);
  n.gn_bias_ = autograd::SavedTensor(p.gn_bias);
  n.z_ = autograd::SavedTensor(fw.z);
  n.mean_ = autograd::SavedTensor(fw.mean);
  n.rstd_ = autograd::SavedTensor(fw.rstd);
  n.sh_ = fw.sh;
}
#endif

[[maybe_unused]] std::vector<Tensor> all_inputs(const Tensor& x, const ConvBlockParams& p) {
  return {x, p.weight, p.conv_bias, p.bias, p.scale, p.gn_weight, p.gn_bias};
}

}  // namespace

bool conv_block_fused_available(const Tensor& x, const ConvBlockParams& p) {
#ifdef TG_WITH_CUDA
  validate(x, p, "conv_block");
  const int64_t k = p.weight.size(2);
  return x.is_cuda() && x.dtype() == DType::Float32 && x.size(2) >= k && x.size(3) >= k &&
         x.numel() < (int64_t(1) << 31) &&
         x.size(0) * p.weight.size(0) * (x.size(2) - k + 1) * (x.size(3) - k + 1) < (int64_t(1) << 31) &&
         detail::conv_block_supported(int(x.size(1)), int(p.weight.size(0)), int(k));
#else
  (void)x;
  (void)p;
  return false;
#endif
}

Tensor conv_block(const Tensor& x, const ConvBlockParams& p) {
  validate(x, p, "conv_block");
  if (!conv_block_fused_available(x, p)) return composed(x, p);
#ifdef TG_WITH_CUDA
  TG_CHECK(x.size(2) >= p.weight.size(2) && x.size(3) >= p.weight.size(3),
           "conv_block: the kernel is larger than the input");
  Forward fw = fused_forward(x, p);
  const int cout = int(p.weight.size(0));
  const bool record = autograd::should_record(all_inputs(x, p));
  // Without the tape z is not needed afterwards: y overwrites it.
  Tensor y = record ? Tensor::empty(fw.z.shape(), DType::Float32, Device::CUDA) : fw.z;
  detail::conv_block_normalize_cuda(f(fw.z), f(fw.mean), f(fw.rstd), f(p.bias), f(p.scale),
                                    f(p.gn_weight), f(p.gn_bias), fw.sh, cout, fm(y));
  if (record) {
    auto node = std::make_shared<ConvBlockNode>(false, p.groups);
    save_params(*node, x, p, fw);
    autograd::record(node, all_inputs(x, p), {y});
  } else {
    y.bump_version();
  }
  return y;
#else
  return composed(x, p);
#endif
}

Tensor conv_block_mse_loss(const Tensor& x, const ConvBlockParams& p, const Tensor& target) {
  validate(x, p, "conv_block_mse_loss");
  // The fused node does not produce a gradient for the target; a target that wants one (rare: a
  // gradient check) takes the composed path.
  if (!conv_block_fused_available(x, p) || target.requires_grad())
    return mse_loss(composed(x, p), target);
#ifdef TG_WITH_CUDA
  const int64_t k = p.weight.size(2);
  Shape yshape{x.size(0), p.weight.size(0), x.size(2) - k + 1, x.size(3) - k + 1};
  TG_CHECK(target.shape() == yshape, "conv_block_mse_loss: expected a target of shape ", yshape,
           ", got ", target.shape());
  TG_CHECK(target.dtype() == DType::Float32 && target.is_cuda(),
           "conv_block_mse_loss: expected a float32 cuda target, got ", target.describe());
  Forward fw = fused_forward(x, p);
  Reduced red = fused_reduce(fw, p, target, true);
  Tensor loss = red.loss;
  auto inputs = all_inputs(x, p);
  inputs.push_back(target);
  if (autograd::should_record(inputs)) {
    auto node = std::make_shared<ConvBlockNode>(true, p.groups);
    save_params(*node, x, p, fw);
    node->target_ = autograd::SavedTensor(target);
    node->red_ = red;
    autograd::record(node, inputs, {loss});
  }
  return loss;
#else
  return mse_loss(composed(x, p), target);
#endif
}

}  // namespace tg::ops
