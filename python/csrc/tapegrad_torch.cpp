// tapegrad_torch._C: tapegrad's conv_block (ops/conv_block.h) on PyTorch tensors, without copies.
//
// forward(x, params..., groups, eps, needs_grad, tf32) -> (y, handle)
//   wraps each torch tensor as a non-owning tg::Tensor (Tensor::from_external), marks the ones in
//   needs_grad as requiring a gradient and runs tg::ops::conv_block with this call's own tape
//   (autograd::TapeSwap). On CUDA the work is queued on PyTorch's current stream
//   (cuda::StreamGuard) and every buffer tapegrad allocates (y, z, statistics, workspaces) comes
//   from PyTorch's caching allocator (cuda::ExternalAllocatorGuard), so blocks follow PyTorch's
//   stream rules. y is handed to PyTorch as it is (torch::from_blob holding the tg::Tensor). handle
//   is a 0-element uint8 CPU tensor whose deleter owns the call's tape, views and saved tensors:
//   PyTorch frees it with the graph's saved tensors (after backward unless retain_graph), which
//   frees tapegrad's saved z and the rest.
// backward(handle, dy) -> 7 gradients (undefined where not asked for): the fused path has one node,
//   whose backward is called directly (its results are the gradients, no extra copies); the
//   composition runs tapegrad's engine over the call's tape (retain_graph, so that PyTorch may run
//   backward through the same graph again, as gradcheck does).
#include <torch/extension.h>

#include <memory>
#include <string>
#include <vector>

#ifdef TGT_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "core/autograd.h"
#include "core/cuda_context.h"
#include "core/memory.h"
#include "core/tensor.h"
#include "ops/conv2d.h"
#include "ops/conv_block.h"

namespace {

constexpr size_t kInputs = 7;  // x, weight, conv_bias, bias, scale, gn_weight, gn_bias

tg::DType tg_dtype(const at::Tensor& t) {
  if (t.scalar_type() == at::kFloat) return tg::DType::Float32;
  TORCH_CHECK(t.scalar_type() == at::kDouble, "tapegrad_torch: expected float32 or float64, got ",
              t.scalar_type());
  return tg::DType::Float64;
}

tg::Tensor view(const at::Tensor& t) {
  TORCH_CHECK(t.is_contiguous(), "tapegrad_torch: expected a contiguous tensor, got strides ",
              t.strides());
  TORCH_CHECK(t.is_cpu() || t.is_cuda(), "tapegrad_torch: expected a cpu or cuda tensor, got ",
              t.device());
  return tg::Tensor::from_external(t.data_ptr(), t.sizes().vec(), tg_dtype(t),
                                   t.is_cuda() ? tg::Device::CUDA : tg::Device::CPU);
}

// A torch tensor that keeps t (and so its storage) alive.
at::Tensor to_torch(const tg::Tensor& t, const at::Device& device) {
  auto* keep = new tg::Tensor(t);
  const auto dtype = t.dtype() == tg::DType::Float32 ? at::kFloat : at::kDouble;
  return torch::from_blob(
      t.raw_data(), t.shape(), [keep](void*) { delete keep; },
      at::TensorOptions().dtype(dtype).device(device));
}

// What one forward keeps for its backward; owned by the handle tensor.
struct BlockCall {
  std::vector<at::Tensor> borrowed;  // the torch tensors that the views read
  std::vector<tg::Tensor> leaves;    // the views, in kInputs order
  std::vector<std::shared_ptr<tg::autograd::Node>> tape;
  tg::Tensor y;
  at::Device device = at::kCPU;
  bool tf32 = false;  // the forward's setting, for the backward's convolutions too
};

// Sets up the device, stream, allocator and TF32 switch for one call into tapegrad.
class CallScope {
 public:
  CallScope(const at::Device& device, bool tf32)
      : tf32_before_(tg::ops::conv::allow_tf32()),
        deterministic_before_(tg::ops::conv::deterministic()) {
    tg::ops::conv::set_allow_tf32(tf32);
    // cuDNN's algorithms follow PyTorch's switches (torch.backends.cudnn.deterministic,
    // torch.use_deterministic_algorithms); tapegrad's own kernels are deterministic anyway.
    tg::ops::conv::set_deterministic(at::globalContext().deterministicCuDNN() ||
                                     at::globalContext().deterministicAlgorithms());
    if (!device.is_cuda()) return;
#ifdef TGT_WITH_CUDA
    TORCH_CHECK(tg::cuda::is_available(),
                "tapegrad_torch: PyTorch has a CUDA device but tapegrad found none");
    guard_ = std::make_unique<c10::cuda::CUDAGuard>(device);
    tg::cuda::set_device(device.index());
    stream_ = std::make_unique<tg::cuda::StreamGuard>(
        static_cast<void*>(c10::cuda::getCurrentCUDAStream(device.index()).stream()));
    alloc_ = std::make_unique<tg::cuda::ExternalAllocatorGuard>(
        [](size_t n) { return c10::cuda::CUDACachingAllocator::raw_alloc(n); },
        [](void* p) { c10::cuda::CUDACachingAllocator::raw_delete(p); });
#else
    TORCH_CHECK(false,
                "tapegrad_torch was built without CUDA (PyTorch or tapegrad lacked it); "
                "got a tensor on ",
                device);
#endif
  }
  ~CallScope() {
    tg::ops::conv::set_allow_tf32(tf32_before_);
    tg::ops::conv::set_deterministic(deterministic_before_);
  }

 private:
  bool tf32_before_, deterministic_before_;
#ifdef TGT_WITH_CUDA
  std::unique_ptr<c10::cuda::CUDAGuard> guard_;
  std::unique_ptr<tg::cuda::StreamGuard> stream_;
  std::unique_ptr<tg::cuda::ExternalAllocatorGuard> alloc_;
#endif
};

tg::ops::ConvBlockParams block_params(const std::vector<tg::Tensor>& v, int64_t groups,
                                      double eps) {
  tg::ops::ConvBlockParams p;
  p.weight = v[1];
  p.conv_bias = v[2];
  p.bias = v[3];
  p.scale = v[4];
  p.gn_weight = v[5];
  p.gn_bias = v[6];
  p.groups = groups;
  p.eps = eps;
  return p;
}

std::vector<at::Tensor> inputs_of(const at::Tensor& x, const at::Tensor& w, const at::Tensor& cb,
                                  const at::Tensor& b, const at::Tensor& s, const at::Tensor& gw,
                                  const at::Tensor& gb) {
  std::vector<at::Tensor> in{x, w, cb, b, s, gw, gb};
  for (const auto& t : in)
    TORCH_CHECK(t.device() == x.device(), "tapegrad_torch: every tensor must be on ", x.device(),
                ", got one on ", t.device());
  return in;
}

std::vector<at::Tensor> forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& cb,
                                const at::Tensor& b, const at::Tensor& s, const at::Tensor& gw,
                                const at::Tensor& gb, int64_t groups, double eps,
                                const std::vector<bool>& needs_grad, bool tf32) {
  TORCH_CHECK(needs_grad.size() == kInputs, "tapegrad_torch: needs_grad has ", needs_grad.size(),
              " entries, expected ", kInputs);
  auto call = std::make_unique<BlockCall>();
  call->borrowed = inputs_of(x, w, cb, b, s, gw, gb);
  call->device = x.device();
  call->tf32 = tf32;
  bool any = false;
  for (size_t i = 0; i < kInputs; ++i) {
    call->leaves.push_back(view(call->borrowed[i]));
    if (needs_grad[i]) call->leaves.back().set_requires_grad(true);
    any = any || needs_grad[i];
  }
  CallScope scope(x.device(), tf32);
  const tg::ops::ConvBlockParams p = block_params(call->leaves, groups, eps);
  if (!any) {
    tg::autograd::NoGradGuard no_grad;
    return {to_torch(tg::ops::conv_block(call->leaves[0], p), x.device()),
            at::empty({0}, at::kByte)};
  }
  {
    tg::autograd::TapeSwap own_tape(call->tape);
    call->y = tg::ops::conv_block(call->leaves[0], p);
  }
  at::Tensor y = to_torch(call->y, x.device());
  BlockCall* raw = call.release();
  at::Tensor handle = torch::from_blob(
      raw, {0}, [raw](void*) { delete raw; }, at::TensorOptions().dtype(at::kByte));
  return {y, handle};
}

std::vector<at::Tensor> backward(const at::Tensor& handle, const at::Tensor& dy_in) {
  // (data_ptr() of an empty tensor is null; the storage keeps the pointer.)
  void* raw = handle.defined() ? handle.storage().data_ptr().get() : nullptr;
  TORCH_CHECK(
      raw != nullptr && handle.numel() == 0 && handle.scalar_type() == at::kByte && handle.is_cpu(),
      "tapegrad_torch: backward expected the handle that forward returned");
  auto* call = static_cast<BlockCall*>(raw);
  TORCH_CHECK(!call->tape.empty(),
              "tapegrad_torch: this forward recorded nothing to go back through");
  const at::Tensor dy = dy_in.contiguous();
  TORCH_CHECK(dy.sizes() == c10::IntArrayRef(call->y.shape()) && dy.device() == call->device &&
                  tg_dtype(dy) == call->y.dtype(),
              "tapegrad_torch: expected a gradient of shape ", c10::IntArrayRef(call->y.shape()),
              " on ", call->device, ", got ", dy.sizes(), " ", dy.scalar_type(), " on ",
              dy.device());
  CallScope scope(call->device, call->tf32);
  const tg::Tensor gy = view(dy);
  std::vector<tg::Tensor> grads(kInputs);
  if (call->tape.size() == 1) {
    tg::autograd::NoGradGuard no_grad;  // as the engine does: backward formulas are not taped
    grads = call->tape[0]->backward({gy});
  } else {
    for (auto& leaf : call->leaves) leaf.set_grad(tg::Tensor());
    tg::autograd::TapeSwap own_tape(call->tape);
    tg::autograd::backward({call->y}, {gy}, /*retain_graph=*/true);
    for (size_t i = 0; i < kInputs; ++i) grads[i] = call->leaves[i].grad();
  }
  std::vector<at::Tensor> out(kInputs);  // undefined ones reach Python as None
  for (size_t i = 0; i < kInputs; ++i)
    if (call->leaves[i].requires_grad() && grads[i].defined())
      out[i] = to_torch(grads[i], call->device);
  return out;
}

// Which of tapegrad's paths conv_block takes for these tensors.
std::string path(const at::Tensor& x, const at::Tensor& w, const at::Tensor& cb,
                 const at::Tensor& b, const at::Tensor& s, const at::Tensor& gw,
                 const at::Tensor& gb, int64_t groups) {
  std::vector<tg::Tensor> v;
  for (const auto& t : inputs_of(x, w, cb, b, s, gw, gb)) v.push_back(view(t));
  const tg::ops::ConvBlockParams p = block_params(v, groups, 1e-5);
  switch (tg::ops::conv_block_can_implement(v[0], p).path) {
    case tg::ops::ConvBlockPath::DirectCuda:
      return "fused CUDA";
    case tg::ops::ConvBlockPath::EpilogueCuda:
      return "epilogue CUDA";
    case tg::ops::ConvBlockPath::FusedCpu:
      return "fused CPU";
    case tg::ops::ConvBlockPath::Composition:
      break;
  }
  return "composition";
}

bool built_with_cuda() {
#ifdef TGT_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "tapegrad's fused conv_block on PyTorch tensors (see tapegrad_torch)";
  // The GIL is released while tapegrad runs (arguments are converted before, results after).
  using release_gil = pybind11::call_guard<pybind11::gil_scoped_release>;
  m.def("forward", &forward, release_gil(),
        "y, handle = forward(x, weight, conv_bias, bias, scale, gn_weight, "
        "gn_bias, groups, eps, needs_grad, tf32)");
  m.def("backward", &backward, release_gil(),
        "the 7 gradients (None where not asked for) from handle and dy");
  m.def("path", &path, "'fused CUDA', 'fused CPU' or 'composition'");
  m.def("built_with_cuda", &built_with_cuda);
}
