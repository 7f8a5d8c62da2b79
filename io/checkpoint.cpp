// Checkpoint save/load (see io/checkpoint.h for the layout).
#include "checkpoint.h"

#include <algorithm>
#include <cmath>

#include "hdf5.h"
#include "safetensors.h"

namespace tg::io {

namespace {

constexpr const char* kStateGroup = "train_state";
constexpr const char* kMomentumGroup = "momentum_buffer";
constexpr const char* kScalarsGroup = "scalars";
constexpr const char* kConfig = "config_json";

void check_name(const std::string& path, const std::string& name, const char* what) {
  TG_CHECK(!name.empty(), "save_checkpoint: '", path, "': a ", what, " has an empty name");
  TG_CHECK(name.find('/') == std::string::npos && name != "." && name != "..", "save_checkpoint: '",
           path, "': ", what, " name '", name,
           "' is not a valid HDF5 link name (no '/', not '.' or '..')");
}

void check_tensors(const std::string& path, const NamedTensors& ts, const char* what,
                   bool allow_undefined) {
  for (const auto& [name, t] : ts) {
    check_name(path, name, what);
    TG_CHECK(allow_undefined || t.defined(), "save_checkpoint: '", path, "': ", what, " '", name,
             "' is an undefined tensor");
  }
}

/// Writes each defined tensor of ts as a dataset of g. Duplicates are found here, mid-write; the
/// atomic file then makes sure nothing of this save survives.
void write_tensors(h5::Group& g, const NamedTensors& ts, const std::string& path,
                   const char* what) {
  for (const auto& [name, t] : ts) {
    if (!t.defined()) continue;
    TG_CHECK(!g.has(name), "save_checkpoint: '", path, "': duplicate ", what, " name '", name, "'");
    g.write_tensor(name, t).close();  // closed here, so that a failed write throws
  }
}

/// Throws when t holds NaN or Inf, naming the file, what it is and where.
void check_finite(const Tensor& t, const std::string& path, const std::string& what) {
  dispatch_dtype(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* p = static_cast<const T*>(t.raw_data());
    const T* bad = std::find_if(p, p + t.numel(), [](T x) { return !std::isfinite(x); });
    TG_CHECK(bad == p + t.numel(), "load_checkpoint: '", path, "': ", what, " of shape ",
             t.shape(), " has a non-finite value (", double(*bad), ") at flat index ", bad - p,
             "; refusing to load it");
  });
}

/// Reads dataset `name` of g as a tensor (sizes, storage and filters checked) and checks that it
/// is finite. what: "parameter" or "momentum buffer".
Tensor read_finite(const h5::Group& g, const std::string& name, const std::string& path,
                   const char* what) {
  Tensor t = g.open_dataset(name).read_tensor();
  check_finite(t, path, std::string(what) + " '" + name + "'");
  return t;
}

NamedTensors read_tensors(const h5::Group& g, const std::string& path, const char* what) {
  NamedTensors out;
  for (const std::string& name : g.children()) {
    if (g.kind_of(name) == h5::ObjectKind::Dataset) {
      out.emplace_back(name, read_finite(g, name, path, what));
    }
  }
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "'" : ", '") + x + "'";
  return s.empty() ? "nothing" : s;
}

/// Reads exactly the root datasets `names` (in that order) into ck.params and lists every other
/// root dataset (or broken link) in ck.unknown without reading it.
void read_named(const h5::File& f, const std::vector<std::string>& names, const std::string& path,
                Checkpoint& ck) {
  std::vector<std::string> missing, present;
  for (size_t i = 0; i < names.size(); ++i) {
    TG_CHECK(std::find(names.begin(), names.begin() + std::ptrdiff_t(i), names[i]) ==
                 names.begin() + std::ptrdiff_t(i),
             "load_checkpoint: '", path, "': parameter '", names[i], "' is asked for twice");
    if (names[i].empty() || names[i].find('/') != std::string::npos || !f.has(names[i]))
      missing.push_back(names[i]);
  }
  for (const std::string& name : f.children()) {
    const h5::ObjectKind k = f.kind_of(name);
    if (k != h5::ObjectKind::Dataset && k != h5::ObjectKind::BrokenLink) continue;
    present.push_back(name);
    if (std::find(names.begin(), names.end(), name) == names.end()) ck.unknown.push_back(name);
  }
  TG_CHECK(missing.empty(), "load_checkpoint: '", path, "' lacks ", missing.size(),
           " of the ", names.size(), " parameters asked for: ", join(missing),
           " (its parameters: ", join(present), ")");
  for (const std::string& name : names) {
    ck.params.emplace_back(name, read_finite(f, name, path, "parameter"));
  }
}

TrainState read_state(const h5::Group& g, const std::string& path) {
  TrainState st;
  for (const char* a : {"step", "epoch", "batch_in_epoch", "seed"}) {
    TG_CHECK(g.has_attribute(a), "load_checkpoint: '", path, "': train_state has no attribute '", a,
             "'");
  }
  st.step = g.open_attribute("step").read_int();
  st.epoch = g.open_attribute("epoch").read_int();
  st.batch_in_epoch = g.open_attribute("batch_in_epoch").read_int();
  st.seed = g.open_attribute("seed").read_uint();
  for (const auto& [field, value] :
       {std::pair<const char*, int64_t>{"step", st.step}, {"epoch", st.epoch},
        {"batch_in_epoch", st.batch_in_epoch}}) {
    TG_CHECK(value >= 0, "load_checkpoint: '", path, "': train_state ", field,
             " must be >= 0, got ", value);
  }
  if (g.has(kConfig)) {
    h5::Dataset config = g.open_dataset(kConfig);
    config.check_readable();
    st.config_json = config.read_string();
  }
  if (g.has(kMomentumGroup)) {
    st.momentum_buffers = read_tensors(g.open_group(kMomentumGroup), path, "momentum buffer");
  }
  if (g.has(kScalarsGroup)) {
    h5::Group sg = g.open_group(kScalarsGroup);
    for (const std::string& name : sg.children()) {
      if (sg.kind_of(name) != h5::ObjectKind::Dataset) continue;
      h5::Dataset d = sg.open_dataset(name);
      TG_CHECK(d.nbytes(1) == 1, "load_checkpoint: '", path, "': scalar '", name,
               "' of train_state has shape ", d.shape());
      d.check_readable();
      TG_CHECK(d.stored_type().cls == h5::StoredType::Class::Float ||
                   d.stored_type().cls == h5::StoredType::Class::Integer,
               "load_checkpoint: '", path, "': scalar '", name, "' of train_state holds ",
               d.stored_type().describe());
      double v = 0;
      d.read(&v, DType::Float64);
      st.scalars[name] = v;
    }
  }
  auto best = st.scalars.find("best_val_loss");
  TG_CHECK(best == st.scalars.end() || !std::isnan(best->second), "load_checkpoint: '", path,
           "': train_state best_val_loss is NaN (a run without a best loss saves inf)");
  return st;
}

}  // namespace

bool Checkpoint::has_param(const std::string& name) const {
  for (const auto& p : params) {
    if (p.first == name) return true;
  }
  return false;
}

const Tensor& Checkpoint::param(const std::string& name) const {
  std::string names;
  for (const auto& p : params) {
    if (p.first == name) return p.second;
    names += (names.empty() ? "" : ", ") + p.first;
  }
  TG_THROW("checkpoint: no parameter '", name, "' (it has: ", names.empty() ? "none" : names, ")");
}

void save_checkpoint(const std::string& path, const NamedTensors& params, const TrainState* state,
                     CheckpointFormat format) {
  if (resolve_checkpoint_format(path, format) == CheckpointFormat::Safetensors) {
    return save_safetensors_checkpoint(path, params, state);
  }
  check_tensors(path, params, "parameter", false);
  for (const auto& p : params) {
    TG_CHECK(p.first != kStateGroup, "save_checkpoint: '", path, "': the name '", kStateGroup,
             "' is reserved for the training state");
  }
  if (state) {
    check_tensors(path, state->momentum_buffers, "momentum buffer", true);
    for (const auto& s : state->scalars) check_name(path, s.first, "scalar");
  }
  h5::AtomicFile out(path);
  {
    h5::File& f = out.file();
    f.set_attr_string("tapegrad_format", "checkpoint");
    f.set_attr_int("tapegrad_format_version", 1);
    write_tensors(f, params, path, "parameter");
    if (state) {
      h5::Group g = f.create_group(kStateGroup);
      g.set_attr_int("step", state->step);
      g.set_attr_int("epoch", state->epoch);
      g.set_attr_int("batch_in_epoch", state->batch_in_epoch);
      g.set_attr_uint("seed", state->seed);
      g.write_string(kConfig, state->config_json).close();
      h5::Group mg = g.create_group(kMomentumGroup);
      write_tensors(mg, state->momentum_buffers, path, "momentum buffer");
      h5::Group sg = g.create_group(kScalarsGroup);
      for (const auto& [name, value] : state->scalars) {
        h5::Dataset d = sg.create_dataset(name, DType::Float64, {});
        d.write(&value, DType::Float64);
        d.close();
      }
    }
  }
  out.commit();
}

Checkpoint load_checkpoint(const std::string& path, const std::vector<std::string>& names) {
  if (is_safetensors(path)) return load_safetensors_checkpoint(path, names);
  h5::File f = h5::File::open(path);
  Checkpoint ck;
  if (names.empty()) {
    ck.params = read_tensors(f, path, "parameter");
  } else {
    read_named(f, names, path, ck);
  }
  if (f.kind_of(kStateGroup) == h5::ObjectKind::Group) {
    ck.state = read_state(f.open_group(kStateGroup), path);
  }
  return ck;
}

void convert_checkpoint(const std::string& in, const std::string& out, CheckpointFormat format) {
  const Checkpoint ck = load_checkpoint(in);
  save_checkpoint(out, ck.params, ck.state ? &*ck.state : nullptr, format);
}

}  // namespace tg::io
