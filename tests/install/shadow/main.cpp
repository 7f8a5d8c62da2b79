// Includes tapegrad's headers and the project's own files of the same names, then uses both: trains
// nothing, but runs a forward, and saves and loads a checkpoint in both formats.
// The project's own headers come first: tapegrad's must not pick them up as theirs.
#include "core/error.h"
#include "core/tensor.h"
#include "io/checkpoint.h"

#include <tapegrad/core/tensor.h>
#include <tapegrad/tapegrad.h>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : ".";
  research::Tensor mine{{1.0f, 2.0f}};
  try {
    tg::nn::Model model(3, 8, 3, 2, 5);
    tg::Tensor x = tg::Tensor::randn({2, 3, 6, 6}, 11);
    tg::Tensor y = model.forward(x);
    int failures = 0;
    for (const char* ext : {".h5", ".safetensors"}) {
      const std::string path = dir + "/" + research::checkpoint_name(1) + ext;
      tg::io::save_checkpoint(path, model.named_parameters());
      tg::nn::Model other(3, 8, 3, 2, 6);
      other.load_state_dict(tg::io::load_checkpoint(path).params);
      const auto a = y.to_vector<float>();
      const auto b = other.forward(x).to_vector<float>();
      if (a != b) {
        std::fprintf(stderr, "shadow: %s: the loaded model's output differs\n", path.c_str());
        ++failures;
      }
    }
    std::printf("shadow consumer: output %s, own tensor of %zu values, %d errors\n",
                y.describe().c_str(), mine.values.size(), research::error_count);
    return failures == 0 ? 0 : 1;
  } catch (const tg::Error& e) {
    std::fprintf(stderr, "shadow: %s\n", e.what());
    return 1;
  }
}
