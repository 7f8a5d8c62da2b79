// tg-checkpoint-forward: the seed's model from a checkpoint (HDF5 or safetensors, detected by
// content) applied to an input, for tests/parity/checkpoint_parity.py.
//
//   tg-checkpoint-forward CHECKPOINT INPUT OUTPUT GROUPS DEVICE DTYPE
//       INPUT: a safetensors file with a tensor "x" (N, Cin, H, W); OUTPUT: safetensors with "y".
//       The model's sizes come from the checkpoint's conv.weight; GROUPS is GroupNorm's groups,
//       DEVICE cpu or cuda, DTYPE float32 (strict: no TF32) or float64.
//   tg-checkpoint-forward convert IN OUT
//       io::convert_checkpoint(IN, OUT): the format by OUT's name.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/autograd.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "nn/model.h"
#include "ops/conv2d.h"

int main(int argc, char** argv) {
  using namespace tg;
  try {
    if (argc == 4 && std::string(argv[1]) == "convert") {
      io::convert_checkpoint(argv[2], argv[3]);
      return 0;
    }
    if (argc != 7) {
      std::fprintf(stderr,
                   "usage: %s CHECKPOINT INPUT OUTPUT GROUPS DEVICE DTYPE | convert IN OUT\n",
                   argv[0]);
      return 2;
    }
    const io::Checkpoint ck = io::load_checkpoint(argv[1]);
    const Tensor& w = ck.param("conv.weight");
    const DType dtype = parse_dtype(argv[6]);
    const Device device = parse_device(argv[5]);
    ops::conv::set_allow_tf32(false);
    nn::Model model(w.size(1), w.size(0), w.size(2), std::atoll(argv[4]), 0, dtype);
    model.load_state_dict(ck.params);
    model.to(device);
    const Tensor x = io::read_safetensors(argv[2], {"x"}).tensors.at(0).second.to(dtype).to(device);
    autograd::NoGradGuard no_grad;
    io::write_safetensors(argv[3], {{"y", model.forward(x)}});
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "tg-checkpoint-forward: %s\n", e.what());
    return 1;
  }
}
