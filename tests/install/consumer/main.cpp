// A research program built against the installed package: a leaf, a taped computation, backward,
// and the gradient checked against its closed form. Exits non-zero when anything is off.
#include <tapegrad/tapegrad.h>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  // L = sum(sigmoid(w * x) * w): dL/dw_i = s_i (1 - s_i) x_i w_i + s_i with s = sigmoid(w * x).
  const std::vector<double> wv{0.5, -1.25, 2.0}, xv{1.0, 2.0, -3.0};
  tg::Tensor w = tg::Tensor::from_vector<double>(wv, {3}).set_requires_grad();
  tg::Tensor x = tg::Tensor::from_vector<double>(xv, {3});
  tg::Tensor loss = tg::ops::sum(tg::ops::sigmoid(w * x) * w);
  if (tg::autograd::tape_size() == 0) {
    std::printf("tapegrad consumer: nothing was taped\n");
    return 1;
  }
  loss.backward();
  if (!w.grad().defined()) {
    std::printf("tapegrad consumer: backward left no gradient\n");
    return 1;
  }
  const std::vector<double> g = w.grad().to_vector<double>();
  double worst = 0, expected_loss = 0;
  for (size_t i = 0; i < wv.size(); ++i) {
    const double s = 1.0 / (1.0 + std::exp(-wv[i] * xv[i]));
    expected_loss += s * wv[i];
    worst = std::fmax(worst, std::fabs(g[i] - (s * (1 - s) * xv[i] * wv[i] + s)));
  }
  const double loss_error = std::fabs(loss.item() - expected_loss);
  std::printf("tapegrad consumer: loss %.6f, gradient error %.2e, cuda available: %d\n", loss.item(),
              worst, int(tg::cuda::is_available()));
  return worst < 1e-12 && loss_error < 1e-12 && tg::autograd::tape_size() == 0 ? 0 : 1;
}
