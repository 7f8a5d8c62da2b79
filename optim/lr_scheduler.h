// Learning-rate schedules for any optim::Optimizer, as torch.optim.lr_scheduler (closed forms).
// Construction records each group's current lr as its base lr; step() advances the epoch count and
// sets every group's lr:
//   StepLR:            lr = base * gamma^floor(epoch / step_size)
//   CosineAnnealingLR: lr = eta_min + (base - eta_min) (1 + cos(pi epoch / T_max)) / 2
#pragma once

#include <cstdint>
#include <vector>

#include "optimizer.h"

namespace tg::optim {

class LRScheduler {
 public:
  explicit LRScheduler(Optimizer& optimizer);
  virtual ~LRScheduler() = default;
  /// Advances one epoch and sets the learning rates.
  void step();
  int64_t last_epoch() const { return epoch_; }
  /// The learning rate of group g now.
  double lr(size_t g = 0) const { return optimizer_.group_lr(g); }

 protected:
  virtual double lr_at(double base, int64_t epoch) const = 0;

 private:
  Optimizer& optimizer_;
  std::vector<double> base_;
  int64_t epoch_ = 0;
};

class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& optimizer, int64_t step_size, double gamma = 0.1);

 protected:
  double lr_at(double base, int64_t epoch) const override;

 private:
  int64_t step_size_;
  double gamma_;
};

class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& optimizer, int64_t t_max, double eta_min = 0.0);

 protected:
  double lr_at(double base, int64_t epoch) const override;

 private:
  int64_t t_max_;
  double eta_min_;
};

}  // namespace tg::optim
