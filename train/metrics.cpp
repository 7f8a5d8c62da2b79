#include "metrics.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../core/error.h"
#include "run_dir.h"

namespace tg::train {

using json = nlohmann::json;
namespace fs = std::filesystem;

MetricsLog::MetricsLog(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  TG_CHECK(fd_ >= 0, "could not open the metrics log ", path_, ": ", std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (fd_ >= 0) ::close(fd_);
}

void MetricsLog::append(const std::string& line) {
  TG_CHECK(detail::write_all(fd_, line + "\n"), "could not write the metrics log ", path_, ": ",
           std::strerror(errno));
}

void MetricsLog::step(int64_t step, int64_t epoch, double loss, double samples_per_s, double lr) {
  append(json{
      {"type", "step"},
      {"step", step},
      {"epoch", epoch},
      {"loss", loss},
      {"samples_per_s", samples_per_s},
      {"lr",
       lr}}.dump());
}

void MetricsLog::epoch(int64_t epoch, int64_t step, bool complete, double train_loss,
                       double val_loss, double samples_per_s, size_t gpu_peak_bytes,
                       size_t data_cache_bytes) {
  json r{{"type", "epoch"}, {"epoch", epoch}, {"step", step}, {"complete", complete}};
  if (!std::isnan(train_loss)) r["train_loss"] = train_loss;
  if (!std::isnan(val_loss)) r["val_loss"] = val_loss;
  if (!std::isnan(samples_per_s)) r["samples_per_s"] = samples_per_s;
  if (gpu_peak_bytes > 0) r["gpu_peak_bytes"] = gpu_peak_bytes;
  if (data_cache_bytes > 0) r["data_cache_bytes"] = data_cache_bytes;
  append(r.dump());
}

MetricsHistory truncate_metrics(const std::string& path, int64_t step) {
  MetricsHistory h;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) return h;
  TG_CHECK(st.type() == fs::file_type::regular, "the metrics log ", path,
           " is not a regular file: remove it or choose another --output");
  std::ifstream f(path, std::ios::binary);
  TG_CHECK(f.good(), "could not read the metrics log ", path, ": ", std::strerror(errno));
  std::string line;
  std::streamoff keep_bytes = 0;
  bool cut = false;
  while (!cut && std::getline(f, line)) {
    const bool complete_line = !f.eof();  // a line without its newline was torn by a kill
    json r = json::parse(line, nullptr, false);
    if (!complete_line || r.is_discarded() || !r.is_object() || !r.contains("step") ||
        !r["step"].is_number() || r["step"].get<double>() > double(step)) {
      cut = true;
      break;
    }
    keep_bytes += std::streamoff(line.size()) + 1;
    ++h.kept;
    const std::string type = r.value("type", "");
    if (type == "step" && r.contains("loss") && r["loss"].is_number())
      h.train.push_back({r["step"].get<double>(), r["loss"].get<double>()});
    if (type == "epoch" && r.contains("val_loss") && r["val_loss"].is_number())
      h.val.push_back({r["step"].get<double>(), r["val_loss"].get<double>()});
  }
  if (!cut) return h;
  for (h.dropped = 1; std::getline(f, line);) ++h.dropped;
  f.close();
  TG_CHECK(::truncate(path.c_str(), off_t(keep_bytes)) == 0, "could not cut the metrics log ", path,
           " to step ", step, ": ", std::strerror(errno));
  return h;
}

}  // namespace tg::train
