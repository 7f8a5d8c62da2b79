#include "progress.h"

#include <cstdio>

namespace tg::train {

Progress::Progress(bool terminal, double plain_interval_s)
    : terminal_(terminal),
      interval_(plain_interval_s),
      last_(std::chrono::steady_clock::now() - std::chrono::hours(1)),
      start_(std::chrono::steady_clock::now()) {}

void Progress::update(int64_t epoch, int64_t epochs, int64_t step, int64_t total_steps, double loss,
                      double samples_per_s) {
  auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (!terminal_ && since < interval_) return;
  if (terminal_ && since < 0.1) return;
  last_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  char eta[32] = "?";
  if (step > 0 && total_steps > step) {
    // rate over the whole run so far
    std::snprintf(eta, sizeof eta, "%.0fs", elapsed / double(step) * double(total_steps - step));
  } else if (total_steps <= step) {
    std::snprintf(eta, sizeof eta, "0s");
  }
  char line[256];
  std::snprintf(line, sizeof line,
                "epoch %lld/%lld  step %lld/%lld  loss %.6f  %.0f samples/s  ETA %s",
                (long long)epoch + 1, (long long)epochs, (long long)step, (long long)total_steps,
                loss, samples_per_s, eta);
  if (terminal_) {
    std::fprintf(stderr, "\r\033[K%s", line);
    live_ = true;
  } else {
    std::fprintf(stderr, "%s\n", line);
  }
  std::fflush(stderr);
}

void Progress::message(const std::string& line) {
  if (live_) std::fprintf(stderr, "\r\033[K");
  live_ = false;
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  if (live_) std::fprintf(stderr, "\n");
  live_ = false;
}

}  // namespace tg::train
