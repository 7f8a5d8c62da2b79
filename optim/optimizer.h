// The interface every optimizer offers to learning-rate schedules and training loops: step,
// zero_grad and a learning rate per parameter group (PyTorch's optimizer.param_groups[i]["lr"]).
#pragma once

#include <cstddef>

namespace tg::optim {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  /// One update of every parameter that has a gradient.
  virtual void step() = 0;
  /// Drops (set_to_none) or zeroes every parameter's gradient.
  virtual void zero_grad(bool set_to_none = true) = 0;
  /// Number of parameter groups (1 for an optimizer without groups).
  virtual size_t num_groups() const = 0;
  /// The learning rate of group g (throws when g >= num_groups()).
  virtual double group_lr(size_t g) const = 0;
  /// Sets the learning rate of group g (throws on lr < 0 or g >= num_groups()).
  virtual void set_group_lr(size_t g, double lr) = 0;
};

}  // namespace tg::optim
