#include "config.h"

#include <cmath>
#include <sstream>

namespace tg::train {

namespace {

template <typename... Parts>
[[noreturn]] void usage(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw UsageError(os.str());
}

void check_int(const char* flag, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) usage(flag, " ", v, " is out of range: expected ", lo, " to ", hi);
}

void check_real(const char* flag, double v, double lo, double hi) {
  if (!std::isfinite(v)) usage(flag, " ", v, ": expected a finite number");
  if (v < lo || v > hi) usage(flag, " ", v, " is out of range: expected ", lo, " to ", hi);
}

void check_choice(const char* flag, const std::string& v, std::initializer_list<const char*> ok) {
  std::string all;
  for (const char* o : ok) {
    if (v == o) return;
    all += all.empty() ? o : std::string(", ") + o;
  }
  usage(flag, " '", v, "': expected one of ", all);
}

}  // namespace

void TrainerConfig::validate() const {
  check_int("--epochs", epochs, 1, kMaxEpochs);
  check_int("--steps", steps, 0, kMaxSteps);
  check_int("--batch-size", batch_size, 1, kMaxBatchSize);
  check_int("--log-every", log_every, 1, kMaxSteps);
  check_int("--groups", groups, 0, kMaxGroups);
  check_real("--lr", lr, 0, HUGE_VAL);
  check_real("--momentum", momentum, 0, HUGE_VAL);
  check_real("--dampening", dampening, -HUGE_VAL, HUGE_VAL);
  check_real("--weight-decay", weight_decay, 0, HUGE_VAL);
  check_real("--val-fraction", val_fraction, 0, kMaxValFraction);
  check_real("--dist-timeout", dist_timeout, 1e-3, kMaxDistTimeout);
  check_choice("--device", device, {"cpu", "cuda", "auto"});
  check_choice("--dtype", dtype, {"float32", "float64"});
  check_choice("--tf32", tf32, {"on", "off"});
  check_choice("--data-cache", data_cache, {"auto", "device", "off"});
  check_choice("--cuda-graph", cuda_graph, {"auto", "on", "off"});
  if (device == "cpu" && cuda_graph == "on")
    usage("--cuda-graph on needs CUDA training, but --device is cpu; use --cuda-graph auto or off");
  check_choice("--checkpoint-format", checkpoint_format, {"hdf5", "safetensors"});
  if (x_name.empty() || y_name.empty()) usage("--x-name and --y-name must not be empty");
  if (output.empty()) usage("--output must not be empty");
  if (!init.empty() && !resume.empty())
    usage("--init ", init, " and --resume ", resume,
          " exclude each other: --resume continues a run, --init starts a new one from parameters");
  if (overwrite && !resume.empty())
    usage("--overwrite and --resume ", resume,
          " exclude each other: --resume continues the run in --output, --overwrite replaces it");
}

bool resolve_cuda_graph(const std::string& mode, Device device, bool data_parallel,
                        bool device_resident) {
  check_choice("--cuda-graph", mode, {"auto", "on", "off"});
  if (mode == "off") return false;
  if (mode == "on") {
    if (device != Device::CUDA)
      usage("--cuda-graph on needs CUDA training, but the run trains on ", device_name(device),
            "; use --cuda-graph auto or off");
    if (data_parallel)
      usage("--cuda-graph on cannot be used under mpirun: the data-parallel gradient all-reduce "
            "runs host code during the backward, which a graph cannot replay; use --cuda-graph "
            "auto or off");
    return true;
  }
  return device == Device::CUDA && !data_parallel && device_resident;
}

}  // namespace tg::train
