// A research program built against the installed package: a leaf, a taped computation, backward.
#include <tapegrad/tapegrad.h>

#include <cstdio>

int main() {
  tg::Tensor w = tg::Tensor::randn({3}, 7, tg::DType::Float64).set_requires_grad();
  tg::Tensor y = tg::Tensor::from_vector<double>({1.0, 2.0, 3.0}, {3});
  std::printf("tapegrad consumer: %s, cuda available: %d\n", w.describe().c_str(),
              int(tg::cuda::is_available()));
  return y.numel() == 3 ? 0 : 1;
}
