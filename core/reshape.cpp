// Tensor::reshape: a view with a new shape (one -1 inferred), recorded on the tape so that the
// gradient flows back reshaped. Tensors are contiguous, so every reshape is a view of the storage.
#include <memory>

#include "autograd.h"
#include "tensor.h"

namespace tg {
namespace {

Shape infer_shape(const Shape& from, const Shape& to, int64_t numel) {
  Shape out = to;
  int64_t infer = -1, known = 1;
  for (size_t d = 0; d < to.size(); ++d) {
    if (to[d] == -1) {
      TG_CHECK(infer < 0, "reshape: only one dimension may be -1, got ", to);
      infer = int64_t(d);
      continue;
    }
    TG_CHECK(to[d] >= 0, "reshape: invalid size ", to[d], " in shape ", to);
    known = checked_mul(known, to[d], "reshape to " + shape_str(to));
  }
  if (infer >= 0) {
    TG_CHECK(known > 0 && numel % known == 0, "reshape: cannot reshape a tensor of shape ", from,
             " (", numel, " elements) into ", to);
    out[size_t(infer)] = numel / known;
  }
  TG_CHECK(checked_numel(out) == numel, "reshape: cannot reshape a tensor of shape ", from, " (",
           numel, " elements) into ", to);
  return out;
}

class ReshapeNode : public autograd::Node {
 public:
  const char* name() const override { return "reshape"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    if (!needs_input_grad(0)) return {Tensor()};
    return {grads[0].view(inputs()[0].shape)};
  }
};

}  // namespace

Tensor Tensor::reshape(const Shape& shape) const {
  TG_CHECK(defined(), "reshape: expected a defined tensor, got an undefined tensor");
  const Shape out_shape = infer_shape(this->shape(), shape, numel());
  Tensor y = detach().view(out_shape);
  if (autograd::should_record({*this})) {
    autograd::record(std::make_shared<ReshapeNode>(), {*this}, {y});
  }
  return y;
}

}  // namespace tg
