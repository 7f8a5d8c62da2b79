// The progress line of a run on stderr: rewritten in place on a terminal, a plain line every few
// seconds otherwise; whole-line messages clear it first.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace tg::train {

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
