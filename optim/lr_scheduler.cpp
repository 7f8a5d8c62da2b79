#include "lr_scheduler.h"

#include <cmath>

#include "../core/error.h"

namespace tg::optim {

LRScheduler::LRScheduler(Optimizer& optimizer) : optimizer_(optimizer) {
  for (size_t g = 0; g < optimizer.num_groups(); ++g) base_.push_back(optimizer.group_lr(g));
}

void LRScheduler::step() {
  ++epoch_;
  for (size_t g = 0; g < base_.size(); ++g) optimizer_.set_group_lr(g, lr_at(base_[g], epoch_));
}

StepLR::StepLR(Optimizer& optimizer, int64_t step_size, double gamma)
    : LRScheduler(optimizer), step_size_(step_size), gamma_(gamma) {
  TG_CHECK(step_size > 0, "StepLR: expected step_size > 0, got ", step_size);
  TG_CHECK(gamma >= 0, "StepLR: expected gamma >= 0, got ", gamma);
}

double StepLR::lr_at(double base, int64_t epoch) const {
  return base * std::pow(gamma_, double(epoch / step_size_));
}

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, int64_t t_max, double eta_min)
    : LRScheduler(optimizer), t_max_(t_max), eta_min_(eta_min) {
  TG_CHECK(t_max > 0, "CosineAnnealingLR: expected T_max > 0, got ", t_max);
  TG_CHECK(eta_min >= 0, "CosineAnnealingLR: expected eta_min >= 0, got ", eta_min);
}

double CosineAnnealingLR::lr_at(double base, int64_t epoch) const {
  return eta_min_ + (base - eta_min_) * (1.0 + std::cos(M_PI * double(epoch) / double(t_max_))) / 2.0;
}

}  // namespace tg::optim
