#include "checkpointing.h"

#include <cstdio>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace tg::train {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The one place that reads checkpoints. When io::load_checkpoint(path, names) exists (it reads only
// the named parameters and never allocates unknown datasets), pass param_names here.
// Reads only the model's parameters (and the train state); other datasets in the file are named in
// a note, never read: a crafted file cannot make the run allocate what it declares.
io::Checkpoint read_checkpoint(const std::string& path, const std::vector<std::string>& names) {
  io::Checkpoint ck = io::load_checkpoint(path, names);
  if (!ck.unknown.empty()) {
    std::string list;
    for (const std::string& u : ck.unknown) list += (list.empty() ? "" : ", ") + u;
    std::fprintf(stderr, "tg-train: note: %s also holds %s, which the model does not use (not read)\n",
                 path.c_str(), list.c_str());
  }
  return ck;
}

template <typename T>
void check_finite_typed(const Tensor& t, const std::string& what) {
  const T* p = t.data<T>();
  for (int64_t i = 0, n = t.numel(); i < n; ++i)
    TG_CHECK(std::isfinite(p[i]), what, " has a non-finite value (", p[i], " at element ", i, ")");
}

// Each parameter finite (names and shapes are the model's to check: nn::Module::load_state_dict
// lists every difference).
void check_params(const std::string& flag, const std::string& path,
                  const io::NamedTensors& params) {
  for (const auto& [name, t] : params) check_finite(t, flag + " " + path + ": parameter " + name);
}

std::string shown(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

bool same_file(const std::string& a, const std::string& b) {
  if (a == b) return true;
  std::error_code ec;
  return fs::equivalent(a, b, ec);
}

[[noreturn]] void mismatch(const std::string& path, const std::string& setting,
                           const std::string& here, const std::string& saved,
                           const std::string& fix) {
  throw UsageError("--resume " + path + ": " + setting + " is " + here + " in this run but " +
                   saved + " in the run being resumed, so it cannot continue exactly (the data " +
                   "order or the model would differ): " + fix + ", or use --init " + path +
                   " to start a new run from its parameters");
}

void check_saved_config(const std::string& path, const std::string& text, const TrainerConfig& cfg,
                        const RunFacts& facts) {
  const json saved = json::parse(text, nullptr, false);
  TG_CHECK(!text.empty(), "--resume ", path,
           ": train_state/config_json is empty, so the run's settings cannot be checked; use "
           "--init ",
           path, " to start a new run from its parameters");
  TG_CHECK(!saved.is_discarded() && saved.is_object(), "--resume ", path,
           ": train_state/config_json is not a valid JSON object (", text.size(),
           " bytes), so the run's settings cannot be checked; use --init ", path,
           " to start a new run from its parameters");
  const json here = json::parse(saved_config_json(cfg, facts));
  struct Setting {
    const char* key;
    const char* name;  // as the message says it
    const char* flag;  // how to pass the saved value ("" when it is not a flag)
  };
  static const Setting settings[] = {
      {"data", "--data", "--data"},
      {"num_samples", "the number of samples in the data file", ""},
      {"x_name", "--x-name", "--x-name"},
      {"y_name", "--y-name", "--y-name"},
      {"batch_size", "--batch-size", "--batch-size"},
      {"val_fraction", "--val-fraction", "--val-fraction"},
      {"shuffle", "shuffling", ""},
      {"seed", "--seed", "--seed"},
      {"dtype", "--dtype", "--dtype"},
      {"groups", "--groups", "--groups"},
      {"world_size", "the number of ranks (mpirun -np)", ""},
  };
  for (const Setting& s : settings) {
    TG_CHECK(saved.contains(s.key), "--resume ", path, ": the saved configuration has no '", s.key,
             "' (the file was not written by this version's Trainer); use --init ", path,
             " to start a new run from its parameters");
    const json& a = here[s.key];
    const json& b = saved[s.key];
    const bool equal = std::string(s.key) == "data"
                           ? b.is_string() && same_file(a.get<std::string>(), b.get<std::string>())
                           : a == b;
    if (equal) continue;
    std::string fix;
    if (std::string(s.key) == "shuffle") {
      fix = b == json(true) ? "run without --no-shuffle" : "pass --no-shuffle";
    } else if (std::string(s.key) == "world_size") {
      fix = "run with mpirun -np " + shown(b) + (b == json(1) ? " (or without mpirun)" : "");
    } else if (std::string(s.key) == "num_samples") {
      fix = "use the data file the run was trained on";
    } else {
      fix = std::string("pass ") + s.flag + " " + shown(b);
    }
    mismatch(path, s.name, shown(a), shown(b), fix);
  }
}

}  // namespace

void check_finite(const Tensor& t, const std::string& what) {
  const Tensor h = t.to(Device::CPU);
  if (h.dtype() == DType::Float64) {
    check_finite_typed<double>(h, what);
  } else {
    check_finite_typed<float>(h, what);
  }
}

std::string saved_config_json(const TrainerConfig& c, const RunFacts& f) {
  return json{{"data", c.data},
              {"num_samples", f.num_samples},
              {"x_name", c.x_name},
              {"y_name", c.y_name},
              {"batch_size", c.batch_size},
              {"val_fraction", c.val_fraction},
              {"shuffle", c.shuffle},
              {"seed", c.seed},
              {"dtype", c.dtype},
              {"groups", c.groups},
              {"world_size", f.world_size},
              {"epochs", c.epochs},
              {"steps", c.steps},
              {"lr", c.lr},
              {"momentum", c.momentum},
              {"dampening", c.dampening},
              {"nesterov", c.nesterov},
              {"weight_decay", c.weight_decay},
              {"output", c.output},
              {"device", c.device},
              {"tf32", c.tf32},
              {"deterministic", c.deterministic},
              {"log_every", c.log_every},
              {"dist_timeout", c.dist_timeout}}
      .dump();
}

void save_training_checkpoint(const std::string& path, const io::NamedTensors& params,
                              const optim::SGDState& optimizer, const ResumePoint& point,
                              const TrainerConfig& cfg, const RunFacts& facts) {
  const std::string refuse = "not saving " + path + " at step " + std::to_string(point.step) + ": ";
  io::NamedTensors host_params, host_buffers;
  try {
    for (const auto& [name, t] : params) {
      host_params.emplace_back(name, t.to(Device::CPU));
      check_finite(host_params.back().second, refuse + "parameter " + name);
    }
    for (const auto& [name, t] : optimizer.momentum_buffers) {
      host_buffers.emplace_back(name, t.to(Device::CPU));
      check_finite(host_buffers.back().second, refuse + "the momentum buffer of " + name);
    }
  } catch (const Error& e) {
    std::ostringstream lr;
    lr << cfg.lr;
    throw Error(std::string(e.what()) + "; lower --lr (now " + lr.str() + "). The previous " +
                path + " was kept");
  }
  io::TrainState s;
  s.step = point.step;
  s.epoch = point.epoch;
  s.batch_in_epoch = point.batch_in_epoch;
  s.seed = cfg.seed;
  s.config_json = saved_config_json(cfg, facts);
  s.momentum_buffers = std::move(host_buffers);
  s.scalars["best_val_loss"] = point.best_val_loss;
  s.scalars["lr"] = cfg.lr;
  s.scalars["epoch_loss_sum"] = point.epoch_loss_sum;
  s.scalars["epoch_loss_count"] = double(point.epoch_loss_count);
  io::save_checkpoint(path, host_params, &s);
}

io::NamedTensors load_init_parameters(const std::string& path,
                                      const std::vector<std::string>& param_names) {
  io::Checkpoint ck = read_checkpoint(path, param_names);
  check_params("--init", path, ck.params);
  return std::move(ck.params);
}

ResumeState load_resume_checkpoint(const std::string& path, const TrainerConfig& cfg,
                                   const RunFacts& facts,
                                   const std::vector<std::string>& param_names) {
  io::Checkpoint ck = read_checkpoint(path, param_names);
  TG_CHECK(ck.state.has_value(), "--resume ", path,
           ": the file has no train_state group (it holds parameters only: use --init ", path, ")");
  const io::TrainState& s = *ck.state;
  check_saved_config(path, s.config_json, cfg, facts);
  check_params("--resume", path, ck.params);
  const std::string use_init = "; use --init " + path + " to start a new run from its parameters";

  // Where the run stands must be a point of this run's epochs.
  const int64_t per_epoch = facts.batches_per_epoch;
  TG_CHECK(s.step >= 0 && s.epoch >= 0 && s.batch_in_epoch >= 0 && s.batch_in_epoch <= per_epoch,
           "--resume ", path, ": train_state says step ", s.step, ", epoch ", s.epoch, ", batch ",
           s.batch_in_epoch, " of the epoch, but an epoch of this run has ", per_epoch,
           " batches (expected step, epoch >= 0 and 0 <= batch <= ", per_epoch, ")", use_init);
  const bool consistent = s.epoch <= (INT64_MAX - s.batch_in_epoch) / per_epoch &&
                          s.epoch * per_epoch + s.batch_in_epoch == s.step;
  TG_CHECK(consistent, "--resume ", path, ": train_state says step ", s.step, " at epoch ", s.epoch,
           ", batch ", s.batch_in_epoch, ", but with ", per_epoch,
           " batches per epoch that point is not step ", s.step, use_init);
  TG_CHECK(s.seed == cfg.seed, "--resume ", path, ": train_state's seed ", s.seed,
           " differs from its saved configuration's ", cfg.seed, use_init);

  ResumeState out;
  out.point.step = s.step;
  out.point.epoch = s.epoch;
  out.point.batch_in_epoch = s.batch_in_epoch;
  auto scalar = [&](const char* name, double fallback) {
    auto it = s.scalars.find(name);
    return it == s.scalars.end() ? fallback : it->second;
  };
  out.point.best_val_loss = scalar("best_val_loss", HUGE_VAL);
  TG_CHECK(!std::isnan(out.point.best_val_loss) && out.point.best_val_loss >= 0, "--resume ", path,
           ": train_state/scalars/best_val_loss is ", out.point.best_val_loss,
           " (expected a loss >= 0, or inf before the first validation)", use_init);
  out.point.epoch_loss_sum = scalar("epoch_loss_sum", 0);
  const double count = scalar("epoch_loss_count", 0);
  TG_CHECK(std::isfinite(out.point.epoch_loss_sum) && count >= 0 &&
               count <= double(s.batch_in_epoch) && count == std::floor(count),
           "--resume ", path, ": train_state/scalars epoch_loss_sum ", out.point.epoch_loss_sum,
           " and epoch_loss_count ", count, " do not describe the ", s.batch_in_epoch,
           " steps of the epoch already run", use_init);
  out.point.epoch_loss_count = int64_t(count);

  // The optimizer state: a momentum buffer for every parameter once the run has taken a step.
  const json saved = json::parse(s.config_json, nullptr, false);
  const bool saved_momentum = saved.value("momentum", 1.0) != 0.0;
  std::set<std::string> buffered;
  for (const auto& [name, t] : s.momentum_buffers) {
    check_finite(t, "--resume " + path + ": the momentum buffer of " + name);
    buffered.insert(name);
  }
  if (cfg.momentum != 0 && saved_momentum && s.step > 0)
    for (const std::string& n : param_names)
      TG_CHECK(buffered.count(n), "--resume ", path, ": train_state/momentum_buffer/", n,
               " is missing, although the run is at step ", s.step, " with momentum ",
               saved.value("momentum", cfg.momentum),
               ": without it the run would not continue exactly", use_init);
  out.params = std::move(ck.params);
  out.optimizer.step = s.step;
  out.optimizer.momentum_buffers = s.momentum_buffers;
  return out;
}

}  // namespace tg::train
