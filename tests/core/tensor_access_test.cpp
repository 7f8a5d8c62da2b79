// Tests of element access (Tensor::at), Tensor::from_blob, from_vector and PyTorch-like printing.
#include <sstream>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "test_utils.h"

namespace tg {
namespace {

TEST(TensorAccess, AtReadsAndWritesByCoordinates) {
  std::vector<double> v(2 * 3 * 4 * 5);
  for (size_t i = 0; i < v.size(); ++i) v[i] = double(i);
  Tensor t = Tensor::from_vector(v, {2, 3, 4, 5});
  EXPECT_EQ(t.at<double>({1, 2, 3, 4}), 119.0);
  EXPECT_EQ(t.at<double>({0, 1, 0, 2}), 22.0);
  EXPECT_EQ(t.at<double>({-1, -1, -1, -1}), 119.0);
  t.at<double>({0, 0, 0, 1}) = -7.0;
  EXPECT_EQ(t.to_vector<double>()[1], -7.0);
  EXPECT_EQ(Tensor::full({}, 2.5).at<float>({}), 2.5f);
}

TEST(TensorAccess, AtErrors) {
  Tensor t = Tensor::zeros({2, 3});
  EXPECT_ERROR_HAS(t.at<float>({2, 0}), "at: index 2 is out of range for dimension 0 of size 2",
                   "[2, 3]");
  EXPECT_ERROR_HAS(t.at<float>({0}), "at: expected 2 indices for shape [2, 3], got [0]");
  EXPECT_ERROR_HAS(t.at<double>({0, 0}), "data<float64>() on a float32 tensor");
  if (cuda::is_available()) {
    EXPECT_ERROR_HAS(t.cuda().at<float>({0, 0}), "at: element access needs a host tensor", "cuda");
  }
}

TEST(TensorAccess, FromBlobCopiesTheCallersBuffer) {
  double buf[6] = {1, 2, 3, 4, 5, 6};
  Tensor t = Tensor::from_blob(buf, {2, 3}, DType::Float64);
  buf[0] = 100;
  EXPECT_EQ(t.to_vector<double>(), (std::vector<double>{1, 2, 3, 4, 5, 6}));
  float fb[2] = {1.5f, -2.f};
  EXPECT_EQ(Tensor::from_blob(fb, {2}, DType::Float32).to_vector<float>(), (std::vector<float>{1.5f, -2.f}));
  EXPECT_ERROR_HAS(Tensor::from_blob(nullptr, {2}, DType::Float32), "from_blob: null data", "[2]");
  EXPECT_ERROR_HAS(Tensor::from_vector<float>({1, 2, 3}, {2}), "from_vector: shape [2] needs 2 values, got 3");
}

TEST(TensorAccess, PrintsNestedLikePyTorch) {
  std::ostringstream os;
  os << Tensor::from_vector<double>({1, -2.5, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(os.str(),
            "tensor([[ 1.0000, -2.5000,  3.0000],\n"
            "        [ 4.0000,  5.0000,  6.0000]], shape=[2, 3], dtype=float64, device=cpu)");
  std::ostringstream scalar;
  scalar << Tensor::full({}, 0.5).set_requires_grad(true);
  EXPECT_EQ(scalar.str(), "tensor(0.5000, shape=[], dtype=float32, device=cpu, requires_grad=True)");
}

TEST(TensorAccess, SummarisesLargeTensors) {
  std::ostringstream os;
  os << Tensor::zeros({2, 1000});
  const std::string s = os.str();
  EXPECT_CONTAINS(s, "[0.0000, 0.0000, 0.0000, ..., 0.0000, 0.0000, 0.0000]");
  EXPECT_CONTAINS(s, "shape=[2, 1000]");
  EXPECT_LT(s.size(), 200u);
}

}  // namespace
}  // namespace tg
