#include "train/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace tg::train {

namespace {
std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}
}  // namespace

void write_loss_svg(const std::string& path, const std::vector<LossPoint>& train,
                    const std::vector<LossPoint>& val) {
  const double W = 720, H = 420, L = 70, R = 20, T = 30, B = 50;
  double xmax = 1, ymin = INFINITY, ymax = -INFINITY;
  for (const auto* s : {&train, &val})
    for (const LossPoint& p : *s) {
      if (!(p.loss > 0) || !std::isfinite(p.loss)) continue;
      xmax = std::max(xmax, p.step);
      ymin = std::min(ymin, p.loss);
      ymax = std::max(ymax, p.loss);
    }
  if (!std::isfinite(ymin)) ymin = 0.1, ymax = 1;
  double lo = std::floor(std::log10(ymin)), hi = std::ceil(std::log10(ymax));
  if (hi <= lo) hi = lo + 1;
  auto X = [&](double s) { return L + (W - L - R) * s / xmax; };
  auto Y = [&](double v) { return T + (H - T - B) * (hi - std::log10(v)) / (hi - lo); };
  std::ostringstream o;
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
    << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n";
  for (double d = lo; d <= hi; d += 1) {
    o << "<line x1='" << L << "' x2='" << W - R << "' y1='" << Y(std::pow(10, d)) << "' y2='"
      << Y(std::pow(10, d)) << "' stroke='#ddd'/>\n";
    o << "<text x='" << L - 6 << "' y='" << Y(std::pow(10, d)) + 4 << "' text-anchor='end'>"
      << fmt(std::pow(10, d)) << "</text>\n";
  }
  for (int i = 0; i <= 4; ++i) {
    double s = xmax * i / 4;
    o << "<text x='" << X(s) << "' y='" << H - B + 18 << "' text-anchor='middle'>" << fmt(s)
      << "</text>\n";
  }
  o << "<line x1='" << L << "' y1='" << H - B << "' x2='" << W - R << "' y2='" << H - B
    << "' stroke='black'/>\n<line x1='" << L << "' y1='" << T << "' x2='" << L << "' y2='" << H - B
    << "' stroke='black'/>\n";
  o << "<text x='" << (L + W - R) / 2 << "' y='" << H - 10 << "' text-anchor='middle'>optimizer step</text>\n";
  o << "<text x='16' y='" << (T + H - B) / 2 << "' transform='rotate(-90 16 " << (T + H - B) / 2
    << ")' text-anchor='middle'>MSE loss (log scale)</text>\n";
  auto line = [&](const std::vector<LossPoint>& s, const char* color, bool dots) {
    std::ostringstream pts;
    for (const LossPoint& p : s)
      if (p.loss > 0 && std::isfinite(p.loss)) pts << X(p.step) << "," << Y(p.loss) << " ";
    o << "<polyline fill='none' stroke='" << color << "' stroke-width='1.5' points='" << pts.str()
      << "'/>\n";
    if (dots)
      for (const LossPoint& p : s)
        if (p.loss > 0 && std::isfinite(p.loss))
          o << "<circle cx='" << X(p.step) << "' cy='" << Y(p.loss) << "' r='3' fill='" << color
            << "'/>\n";
  };
  line(train, "#1f77b4", false);
  line(val, "#d62728", true);
  o << "<text x='" << W - R - 150 << "' y='" << T << "' fill='#1f77b4'>train</text>\n";
  o << "<text x='" << W - R - 80 << "' y='" << T << "' fill='#d62728'>validation</text>\n";
  o << "</svg>\n";
  std::ofstream f(path + ".tmp");
  f << o.str();
  f.close();
  std::rename((path + ".tmp").c_str(), path.c_str());
}

Progress::Progress(bool terminal, double plain_interval_s)
    : terminal_(terminal),
      interval_(plain_interval_s),
      last_(std::chrono::steady_clock::now() - std::chrono::hours(1)),
      start_(std::chrono::steady_clock::now()) {}

void Progress::update(int64_t epoch, int64_t epochs, int64_t step, int64_t total_steps,
                      double loss, double samples_per_s) {
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
  std::snprintf(line, sizeof line, "epoch %lld/%lld  step %lld/%lld  loss %.6f  %.0f samples/s  ETA %s",
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
