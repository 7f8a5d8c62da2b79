#include "layers.h"

#include <cmath>

namespace tg::nn {

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, Generator& gen,
               ops::Conv2dOptions options, DType dtype)
    : options_(options) {
  TG_CHECK(in_channels > 0 && out_channels > 0 && kernel_size > 0,
           "Conv2d: expected positive in_channels, out_channels and kernel_size, got ", in_channels,
           ", ", out_channels, ", ", kernel_size);
  const double bound = 1.0 / std::sqrt(double(in_channels * kernel_size * kernel_size));
  weight = register_parameter(
      "weight", Tensor::rand({out_channels, in_channels, kernel_size, kernel_size}, gen, dtype,
                             Device::CPU, -bound, bound));
  bias = register_parameter("bias",
                            Tensor::rand({out_channels}, gen, dtype, Device::CPU, -bound, bound));
}

GroupNorm::GroupNorm(int64_t num_groups, int64_t num_channels, double eps, DType dtype)
    : num_groups_(num_groups), eps_(eps) {
  TG_CHECK(num_groups > 0 && num_channels > 0 && num_channels % num_groups == 0,
           "GroupNorm: expected num_groups to divide num_channels, got num_groups ", num_groups,
           " and num_channels ", num_channels);
  weight = register_parameter("weight", Tensor::ones({num_channels}, dtype));
  bias = register_parameter("bias", Tensor::zeros({num_channels}, dtype));
}

}  // namespace tg::nn
