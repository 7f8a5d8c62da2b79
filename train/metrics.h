// metrics.jsonl, the run's log: one JSON record per line, written (and checked) record by record,
// so a killed run keeps every record it wrote and a full disk is an error at once.
//   {"type":"step","step":10,"epoch":0,"loss":0.61,"samples_per_s":5123.4,"lr":0.05}
//   {"type":"epoch","epoch":0,"step":12,"complete":true,"train_loss":0.70,"val_loss":0.52}
// train_loss is the mean loss of all of the epoch's steps (logged or not); val_loss is present
// when the run validates.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "loss_plot.h"

namespace tg::train {

class MetricsLog {
 public:
  /// Opens path for appending (created when missing). Throws tg::Error naming path on failure.
  explicit MetricsLog(std::string path);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void step(int64_t step, int64_t epoch, double loss, double samples_per_s, double lr);
  /// train_loss / val_loss / samples_per_s (the epoch's steps over its wall time, validation
  /// excluded): left out when NaN. gpu_peak_bytes / data_cache_bytes: left out when 0 (CPU).
  void epoch(int64_t epoch, int64_t step, bool complete, double train_loss, double val_loss,
             double samples_per_s = NAN, size_t gpu_peak_bytes = 0, size_t data_cache_bytes = 0);
  const std::string& path() const { return path_; }

 private:
  /// Writes one line; throws tg::Error naming the file and the system's reason on any failure.
  void append(const std::string& line);
  std::string path_;
  int fd_ = -1;
};

/// What a log holds for the plot: loss per logged step, validation loss per epoch.
struct MetricsHistory {
  std::vector<LossPoint> train, val;
  int64_t kept = 0, dropped = 0;  ///< records kept and cut off
};

/// For a resume from step: cuts path in place after the last record with "step" <= step (records of
/// steps the resumed run redoes, and a torn last line of a killed run, go), and returns what is
/// kept. A missing file is an empty history. Throws tg::Error naming path when it cannot be read or
/// cut, or when it is not a regular file.
MetricsHistory truncate_metrics(const std::string& path, int64_t step);

}  // namespace tg::train
