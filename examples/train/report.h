// What tg-train writes besides checkpoints: metrics.jsonl records, the loss.svg plot, and the
// progress line on the terminal.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace tg::train {

struct LossPoint {
  double step;
  double loss;
};

/// Writes an SVG line plot of train (per logged step) and validation (per epoch) loss, log-scaled.
void write_loss_svg(const std::string& path, const std::vector<LossPoint>& train,
                    const std::vector<LossPoint>& val);

/// A live progress line on a terminal (rewritten in place), or a plain line every few seconds
/// otherwise.
class Progress {
 public:
  explicit Progress(bool terminal, double plain_interval_s = 5.0);
  void update(int64_t epoch, int64_t epochs, int64_t step, int64_t total_steps, double loss,
              double samples_per_s);
  void message(const std::string& line);  ///< a whole line, after clearing the live one
  void finish();

 private:
  bool terminal_;
  double interval_;
  bool live_ = false;
  std::chrono::steady_clock::time_point last_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace tg::train
