#include "loss_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "run_dir.h"

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
    << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' "
       "fill='white'/>\n";
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
  o << "<text x='" << (L + W - R) / 2 << "' y='" << H - 10
    << "' text-anchor='middle'>optimizer step</text>\n";
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
  write_file_atomically(path, o.str());
}

}  // namespace tg::train
