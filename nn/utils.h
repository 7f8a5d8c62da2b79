// Training utilities on parameter lists (torch.nn.utils).
#pragma once

#include <vector>

#include "../core/tensor.h"

namespace tg::nn::utils {

/// Scales the gradients of params in place so that their joint L2 norm is at most max_norm, as
/// torch.nn.utils.clip_grad_norm_: total = sqrt(sum ||g||^2) over the defined gradients;
/// each g *= min(1, max_norm / (total + 1e-6)). Returns total (before clipping; waits for the
/// device). Gradients must share one device; undefined ones are skipped.
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm);

}  // namespace tg::nn::utils
