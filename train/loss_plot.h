// The loss plot of a run (loss.svg): train loss per logged step and validation loss per epoch,
// log-scaled, as a self-contained SVG file.
#pragma once

#include <string>
#include <vector>

namespace tg::train {

struct LossPoint {
  double step;
  double loss;
};

/// Writes the plot to path atomically (see write_file_atomically). Points whose loss is not finite
/// and positive are left out. Throws tg::Error naming path when it cannot be written.
void write_loss_svg(const std::string& path, const std::vector<LossPoint>& train,
                    const std::vector<LossPoint>& val);

}  // namespace tg::train
