// The entries of ops/op_list.h. Values are kept where each op is smooth (away from 0 for div, log,
// sqrt and pow; away from the kinks of abs, relu, clamp and the losses; without ties for maximum,
// minimum and amax), so that central differences are valid. Each entry is one function of the
// requested size: elements == 0 draws gradcheck's small odd shapes from gen, otherwise the shapes
// are fixed benchmark ones of about that many elements (bench_shape; matmul's square matrices).
#include "op_list.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <utility>

#include "elementwise.h"
#include "loss.h"
#include "matmul.h"
#include "mse_loss.h"
#include "reduce.h"
#include "shape.h"
#include "unary.h"

namespace tg::ops {
namespace {

using Fn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

int64_t odd_size(Generator& gen, int64_t lo, int64_t hi) { return lo + int64_t(gen.below(uint64_t(hi - lo + 1))); }

// Normal values moved off [-margin, margin] (and shifted to [shift, ...) when positive).
Tensor values(const Shape& shape, Generator& gen, DType dt, Device dev, bool positive = false) {
  const int64_t n = checked_numel(shape);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& e : v) {
    e = gen.normal();
    if (std::fabs(e) < 0.05) e = e < 0 ? e - 0.1 : e + 0.1;
    if (std::fabs(e + 0.5) < 0.05 || std::fabs(e - 0.7) < 0.05) e += 0.12;  // clamp's bounds
    if (positive) e = std::fabs(e) + 0.3;
  }
  return Tensor::from_vector<double>(v, shape).to(dt).to(dev).set_requires_grad(true);
}

OpCase unary_case(const Shape& s, Generator& gen, DType dt, Device dev, bool positive,
                  std::function<Tensor(const Tensor&)> f) {
  return {{values(s, gen, dt, dev, positive)}, {"x"},
          [f](const std::vector<Tensor>& in) { return std::vector<Tensor>{f(in[0])}; }};
}

// (B, C, L) with B * C * L about elements (at least 16), C >= 2 and rows of up to 1024.
Shape bench_shape(int64_t elements) {
  const int64_t L = std::min<int64_t>(1024, std::max<int64_t>(1, elements / 16));
  const int64_t rest = std::max<int64_t>(16, elements / L);
  const int64_t B = std::min<int64_t>(8, rest / 2);
  return {B, rest / B, L};
}

// gradcheck's small odd shape (elements == 0), else the benchmark's.
Shape case_shape(Generator& gen, int64_t elements) {
  if (elements > 0) return bench_shape(elements);
  return {odd_size(gen, 1, 3), odd_size(gen, 2, 5), odd_size(gen, 1, 4)};
}

// a of a random shape and b of a shape that broadcasts against it (size-1 and dropped dimensions);
// the benchmark's b broadcasts over a's first dimension.
OpCase binary_case(Generator& gen, DType dt, Device dev, int64_t elements, bool positive_b,
                   std::function<Tensor(const Tensor&, const Tensor&)> f) {
  const Shape a = case_shape(gen, elements);
  Shape b = {1, a[1], a[2]};
  if (elements == 0) {
    b[2] = gen.below(2) ? a[2] : 1;
    if (gen.below(2)) b.erase(b.begin());
  }
  return {{values(a, gen, dt, dev), values(b, gen, dt, dev, positive_b)}, {"a", "b"},
          [f](const std::vector<Tensor>& in) { return std::vector<Tensor>{f(in[0], in[1])}; }};
}

std::vector<OpEntry> build() {
  std::vector<OpEntry> l;
  auto unary = [&](const char* name, bool positive, std::function<Tensor(const Tensor&)> f) {
    l.emplace_back(name, [=](Generator& g, DType dt, Device dev, int64_t elements) {
      return unary_case(case_shape(g, elements), g, dt, dev, positive, f);
    });
  };
  auto binary = [&](const char* name, bool positive_b, std::function<Tensor(const Tensor&, const Tensor&)> f) {
    l.emplace_back(name, [=](Generator& g, DType dt, Device dev, int64_t elements) {
      return binary_case(g, dt, dev, elements, positive_b, f);
    });
  };
  binary("add", false, [](const Tensor& a, const Tensor& b) { return add(a, b); });
  binary("sub", false, [](const Tensor& a, const Tensor& b) { return sub(a, b); });
  binary("mul", false, [](const Tensor& a, const Tensor& b) { return mul(a, b); });
  binary("div", true, [](const Tensor& a, const Tensor& b) { return div(a, b); });
  binary("maximum", false, [](const Tensor& a, const Tensor& b) { return maximum(a, b); });
  binary("minimum", false, [](const Tensor& a, const Tensor& b) { return minimum(a, b); });
  unary("neg", false, [](const Tensor& x) { return neg(x); });
  unary("exp", false, [](const Tensor& x) { return exp(x); });
  unary("log", true, [](const Tensor& x) { return log(x); });
  unary("sqrt", true, [](const Tensor& x) { return sqrt(x); });
  unary("abs", false, [](const Tensor& x) { return abs(x); });
  unary("pow", true, [](const Tensor& x) { return pow(x, 2.5); });
  unary("relu", false, [](const Tensor& x) { return relu(x); });
  unary("tanh", false, [](const Tensor& x) { return tanh(x); });
  unary("sigmoid", false, [](const Tensor& x) { return sigmoid(x); });
  unary("square", false, [](const Tensor& x) { return square(x); });
  unary("clamp", false, [](const Tensor& x) { return clamp(x, -0.5, 0.7); });
  unary("sum", false, [](const Tensor& x) { return sum(x, {0, 2}); });
  unary("mean", false, [](const Tensor& x) { return mean(x, {-1}, true); });
  unary("amax", false, [](const Tensor& x) { return amax(x, {1}); });
  unary("reshape", false, [](const Tensor& x) { return reshape(x, {-1}); });
  unary("permute", false, [](const Tensor& x) { return permute(x, {2, 0, 1}); });
  unary("narrow", false, [](const Tensor& x) { return narrow(x, 1, 1, x.size(1) - 1); });
  l.emplace_back("cat", [](Generator& g, DType dt, Device dev, int64_t elements) {
    const Shape a = case_shape(g, elements);
    Shape b = a;
    if (elements == 0) b[1] = odd_size(g, 1, 3);
    return OpCase{{values(a, g, dt, dev), values(b, g, dt, dev)}, {"a", "b"},
                  [](const std::vector<Tensor>& in) { return std::vector<Tensor>{cat({in[0], in[1]}, 1)}; }};
  });
  // The benchmark's: 8 square matrices of about elements / 8 elements each, times 8 more.
  l.emplace_back("matmul", [](Generator& g, DType dt, Device dev, int64_t elements) {
    const int64_t s = std::max<int64_t>(1, int64_t(std::sqrt(double(elements) / 8)));
    int64_t B = 8, M = s, K = s, N = s;
    if (elements == 0) {
      B = odd_size(g, 1, 3);
      M = odd_size(g, 1, 5);
      K = odd_size(g, 1, 5);
      N = odd_size(g, 1, 5);
    }
    return OpCase{{values({B, M, K}, g, dt, dev), values({B, K, N}, g, dt, dev)}, {"a", "b"},
                  [](const std::vector<Tensor>& in) { return std::vector<Tensor>{matmul(in[0], in[1])}; }};
  });
  auto loss = [&](const char* name, std::function<Tensor(const Tensor&, const Tensor&)> f) {
    l.emplace_back(name, [=](Generator& g, DType dt, Device dev, int64_t elements) {
      const Shape s = case_shape(g, elements);
      return OpCase{{values(s, g, dt, dev), values(s, g, dt, dev)}, {"input", "target"},
                    [f](const std::vector<Tensor>& in) { return std::vector<Tensor>{f(in[0], in[1])}; }};
    });
  };
  loss("mse_loss", [](const Tensor& a, const Tensor& b) { return mse_loss(a, b); });
  loss("l1_loss", [](const Tensor& a, const Tensor& b) { return l1_loss(a, b); });
  loss("smooth_l1_loss", [](const Tensor& a, const Tensor& b) { return smooth_l1_loss(a, b, 0.8); });
  return l;
}

}  // namespace

OpEntry::OpEntry(std::string name_, SizedMake make_sized)
    : name(std::move(name_)),
      make([make_sized](Generator& g, DType dt, Device dev) { return make_sized(g, dt, dev, 0); }),
      make_bench([make_sized, n = name](Generator& g, DType dt, Device dev, int64_t elements) {
        TG_CHECK(elements >= 1, "op '", n, "': a benchmark case needs elements >= 1, got ",
                 elements);
        return make_sized(g, dt, dev, elements);
      }) {}

const std::vector<OpEntry>& op_list() {
  static const std::vector<OpEntry> list = build();
  return list;
}

const OpEntry& find_op(const std::string& name) {
  std::ostringstream names;
  for (const OpEntry& e : op_list()) {
    if (e.name == name) return e;
    names << (names.tellp() > 0 ? ", " : "") << e.name;
  }
  TG_THROW("unknown op '", name, "': expected one of ", names.str());
}

}  // namespace tg::ops
