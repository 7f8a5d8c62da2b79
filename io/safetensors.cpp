// safetensors files and checkpoints (see io/safetensors.h for the format and the layout).
#include "safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../core/size.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors stores little-endian bytes; this code copies them as they are in memory");

namespace tg::io {

namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

constexpr const char* kMetadata = "__metadata__";
constexpr const char* kStatePrefix = "train_state/";
constexpr const char* kScalarsPrefix = "train_state/scalars/";
constexpr const char* kMomentum = "train_state/momentum_buffer";
constexpr const char* kConfig = "train_state/config_json";

const char* st_dtype(DType t) { return t == DType::Float32 ? "F32" : "F64"; }

DType parse_st_dtype(const std::string& path, const std::string& name, const json& v) {
  TG_CHECK(v.is_string(), "safetensors: '", path, "': the dtype of '", name,
           "' is not a string: ", v.dump());
  const std::string s = v.get<std::string>();
  if (s == "F32") return DType::Float32;
  if (s == "F64") return DType::Float64;
  TG_THROW("safetensors: '", path, "': tensor '", name, "' has dtype '", s,
           "', which tapegrad does not read (expected F32 or F64)");
}

/// A JSON value that must be an integer in [0, INT64_MAX].
int64_t parse_size(const std::string& path, const std::string& name, const char* what,
                   const json& v) {
  TG_CHECK(v.is_number_integer() && (v.is_number_unsigned() || v.get<int64_t>() >= 0) &&
               v.get<uint64_t>() <= uint64_t(INT64_MAX),
           "safetensors: '", path, "': ", what, " of '", name,
           "' holds a value that is no integer in [0, 2^63): ", v.dump());
  return v.get<int64_t>();
}

/// The bytes of a tensor of this shape and dtype; overflow is a tg::Error naming what (the tensor).
int64_t tensor_bytes(const Shape& shape, DType dtype, const std::string& what) {
  int64_t n = int64_t(dtype_size(dtype));
  for (int64_t d : shape) n = checked_mul(n, d, what);
  return n;
}

std::string offsets_text(int64_t begin, int64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

// ---- base64 (RFC 4648, with padding) for the momentum buffers in the metadata ----------------

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(const unsigned char* p, size_t n) {
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t v = uint32_t(p[i]) << 16 | (i + 1 < n ? uint32_t(p[i + 1]) << 8 : 0) |
                       (i + 2 < n ? uint32_t(p[i + 2]) : 0);
    out += kB64[v >> 18 & 63];
    out += kB64[v >> 12 & 63];
    out += i + 1 < n ? kB64[v >> 6 & 63] : '=';
    out += i + 2 < n ? kB64[v & 63] : '=';
  }
  return out;
}

/// Decodes s into exactly n bytes at dst; false when s is not the base64 form of n bytes.
bool base64_decode(const std::string& s, unsigned char* dst, size_t n) {
  if (s.size() != (n + 2) / 3 * 4) return false;
  const size_t pad = (3 - n % 3) % 3;  // the last pad characters are '=', no others
  size_t o = 0;
  for (size_t i = 0; i < s.size(); i += 4) {
    uint32_t w = 0;
    for (size_t k = 0; k < 4; ++k) {
      const char c = s[i + k];
      const bool padding = i + k >= s.size() - pad;
      const char* at = c != '\0' ? std::strchr(kB64, c) : nullptr;
      if (padding ? c != '=' : (at == nullptr || c == '=')) return false;
      w = w << 6 | (padding ? 0 : uint32_t(at - kB64));
    }
    for (int k = 0; k < 3 && o < n; ++k) dst[o++] = (unsigned char)(w >> (16 - 8 * k));
  }
  return o == n;
}

// ---- an atomically replaced file ------------------------------------------------------------

/// A file written under path + ".tmp-<pid>-<n>" and renamed over path by commit(); destroyed
/// without commit, the temporary file is removed.
class AtomicWriter {
 public:
  explicit AtomicWriter(std::string path) : path_(std::move(path)) {
    static std::atomic<unsigned> counter{0};
    temp_ = path_ + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    TG_CHECK(fd_ >= 0, "safetensors: cannot create '", temp_, "' (to be renamed to '", path_,
             "'): ", std::strerror(errno));
  }
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;
  ~AtomicWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!done_) ::unlink(temp_.c_str());
  }

  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      TG_CHECK(w > 0, "safetensors: cannot write '", temp_, "': ", std::strerror(errno));
      p += w;
      n -= size_t(w);
    }
  }

  void commit() {
    TG_CHECK(::fsync(fd_) == 0, "safetensors: cannot sync '", temp_, "': ", std::strerror(errno));
    const int fd = fd_;
    fd_ = -1;
    TG_CHECK(::close(fd) == 0, "safetensors: cannot close '", temp_, "': ", std::strerror(errno));
    TG_CHECK(::rename(temp_.c_str(), path_.c_str()) == 0, "safetensors: cannot rename '", temp_,
             "' to '", path_, "': ", std::strerror(errno));
    done_ = true;
    // The rename itself is durable once the folder is synced; failing that is no error.
    const size_t slash = path_.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

 private:
  std::string path_, temp_;
  int fd_ = -1;
  bool done_ = false;
};

// ---- reading --------------------------------------------------------------------------------

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  int64_t begin, end;  ///< in the data section
};

struct Header {
  std::vector<Entry> entries;  ///< sorted by begin
  std::map<std::string, std::string> metadata;
  int64_t data_start = 0;  ///< file offset of the data section
};

Header read_header(std::ifstream& in, const std::string& path) {
  in.seekg(0, std::ios::end);
  const int64_t file_size = int64_t(in.tellg());
  in.seekg(0);
  TG_CHECK(file_size >= 8, "safetensors: '", path, "' has ", file_size,
           " bytes, fewer than the 8 of the header length");
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | len_bytes[i];
  TG_CHECK(n <= uint64_t(file_size - 8), "safetensors: '", path, "': the header length ", n,
           " runs past the end of the file (", file_size, " bytes); the file is truncated or not "
           "safetensors");
  TG_CHECK(n >= 2, "safetensors: '", path, "': the header length is ", n,
           ", too short for a JSON object");
  std::string text(n, '\0');
  in.read(text.data(), std::streamsize(n));
  TG_CHECK(in.good(), "safetensors: cannot read the header of '", path, "'");
  TG_CHECK(text[0] == '{', "safetensors: '", path, "': the header does not start with '{'");

  json h;
  try {
    h = json::parse(text);
  } catch (const json::exception& e) {
    TG_THROW("safetensors: '", path, "': the header is not valid JSON (", e.what(), ")");
  }
  TG_CHECK(h.is_object(), "safetensors: '", path, "': the header is not a JSON object");

  Header out;
  out.data_start = int64_t(8 + n);
  const int64_t data_size = file_size - out.data_start;
  for (const auto& [name, v] : h.items()) {
    if (name == kMetadata) {
      TG_CHECK(v.is_object(), "safetensors: '", path, "': __metadata__ is not a JSON object");
      for (const auto& [key, value] : v.items()) {
        TG_CHECK(value.is_string(), "safetensors: '", path, "': __metadata__ value of '", key,
                 "' is not a string: ", value.dump());
        out.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    TG_CHECK(v.is_object() && v.contains("dtype") && v.contains("shape") &&
                 v.contains("data_offsets"),
             "safetensors: '", path, "': the entry of tensor '", name,
             "' is not an object with dtype, shape and data_offsets: ", v.dump());
    Entry e;
    e.name = name;
    e.dtype = parse_st_dtype(path, name, v["dtype"]);
    TG_CHECK(v["shape"].is_array(), "safetensors: '", path, "': the shape of '", name,
             "' is not a list: ", v["shape"].dump());
    for (const json& d : v["shape"]) e.shape.push_back(parse_size(path, name, "the shape", d));
    const json& off = v["data_offsets"];
    TG_CHECK(off.is_array() && off.size() == 2, "safetensors: '", path, "': data_offsets of '",
             name, "' is not a list [begin, end]: ", off.dump());
    e.begin = parse_size(path, name, "data_offsets", off[0]);
    e.end = parse_size(path, name, "data_offsets", off[1]);
    TG_CHECK(e.begin <= e.end && e.end <= data_size, "safetensors: '", path, "': data_offsets ",
             offsets_text(e.begin, e.end), " of '", name, "' lie outside the ", data_size,
             " bytes of data");
    const int64_t bytes = tensor_bytes(e.shape, e.dtype, "safetensors: '" + path + "': bytes of tensor '" +
                                                             name + "' of shape " + shape_str(e.shape));
    TG_CHECK(bytes == e.end - e.begin, "safetensors: '", path, "': tensor '", name, "' of dtype ",
             st_dtype(e.dtype), " and shape ", e.shape, " has ", bytes, " bytes, but data_offsets ",
             offsets_text(e.begin, e.end), " hold ", e.end - e.begin);
    out.entries.push_back(std::move(e));
  }

  std::sort(out.entries.begin(), out.entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  int64_t covered = 0;
  for (size_t i = 0; i < out.entries.size(); ++i) {
    const Entry& e = out.entries[i];
    TG_CHECK(e.begin >= covered, "safetensors: '", path, "': tensors '", out.entries[i - 1].name,
             "' ", offsets_text(out.entries[i - 1].begin, out.entries[i - 1].end), " and '", e.name,
             "' ", offsets_text(e.begin, e.end), " overlap");
    TG_CHECK(e.begin == covered, "safetensors: '", path, "': bytes ",
             offsets_text(covered, e.begin), " of the data belong to no tensor");
    covered = e.end;
  }
  TG_CHECK(covered == data_size, "safetensors: '", path, "': bytes ",
           offsets_text(covered, data_size), " of the data belong to no tensor");
  return out;
}

Tensor read_entry(std::ifstream& in, const Header& h, const Entry& e, const std::string& path) {
  Tensor t = Tensor::empty(e.shape, e.dtype);
  if (e.end > e.begin) {
    in.seekg(h.data_start + e.begin);
    in.read(static_cast<char*>(t.raw_data()), std::streamsize(e.end - e.begin));
    TG_CHECK(in.good(), "safetensors: cannot read tensor '", e.name, "' from '", path, "'");
  }
  return t;
}

std::ifstream open_for_reading(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    struct stat st;
    TG_CHECK(::stat(path.c_str(), &st) == 0, "safetensors: '", path, "' does not exist");
    TG_THROW("safetensors: cannot open '", path, "': ", std::strerror(errno));
  }
  return in;
}

// ---- checkpoint state -----------------------------------------------------------------------

const std::string& meta_value(const std::map<std::string, std::string>& m, const std::string& key,
                              const std::string& path) {
  auto it = m.find(key);
  TG_CHECK(it != m.end(), "load_checkpoint: '", path, "': the metadata has no '", key, "'");
  return it->second;
}

int64_t meta_int(const std::map<std::string, std::string>& m, const std::string& key,
                 const std::string& path) {
  const std::string& s = meta_value(m, key, path);
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  TG_CHECK(!s.empty() && *end == '\0' && errno == 0, "load_checkpoint: '", path, "': metadata '",
           key, "' is '", s, "', expected an integer");
  return v;
}

uint64_t meta_uint(const std::map<std::string, std::string>& m, const std::string& key,
                   const std::string& path) {
  const std::string& s = meta_value(m, key, path);
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  TG_CHECK(!s.empty() && s[0] != '-' && *end == '\0' && errno == 0, "load_checkpoint: '", path,
           "': metadata '", key, "' is '", s, "', expected an unsigned integer");
  return v;
}

/// The shortest of %.15g, %.16g, %.17g that reads back as v (0.05, not 0.050000000000000003).
std::string format_double(double v) {
  char buf[40];
  for (int digits = 15; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

NamedTensors parse_momentum(const std::string& text, const std::string& path) {
  const std::string where = "load_checkpoint: '" + path + "': metadata '" + kMomentum + "'";
  json list;
  try {
    list = json::parse(text);
  } catch (const json::exception& e) {
    TG_THROW(where, " is not valid JSON (", e.what(), ")");
  }
  TG_CHECK(list.is_array(), where, " is not a JSON list");
  NamedTensors out;
  for (const json& b : list) {
    TG_CHECK(b.is_object() && b.contains("name") && b["name"].is_string() && b.contains("dtype") &&
                 b.contains("shape") && b["shape"].is_array() && b.contains("data_base64") &&
                 b["data_base64"].is_string(),
             where, ": an entry is not {name, dtype, shape, data_base64}: ", b.dump().substr(0, 200));
    const std::string name = b["name"].get<std::string>();
    const DType dtype = parse_st_dtype(path, "momentum buffer " + name, b["dtype"]);
    Shape shape;
    for (const json& d : b["shape"]) {
      shape.push_back(parse_size(path, "momentum buffer " + name, "the shape", d));
    }
    tensor_bytes(shape, dtype, where + ": bytes of momentum buffer '" + name + "'");
    Tensor t = Tensor::empty(shape, dtype);
    TG_CHECK(base64_decode(b["data_base64"].get<std::string>(),
                           static_cast<unsigned char*>(t.raw_data()), t.nbytes()),
             where, ": the data of momentum buffer '", name, "' is not the base64 form of the ",
             t.nbytes(), " bytes of shape ", shape, " ", st_dtype(dtype));
    out.emplace_back(name, t);
  }
  return out;
}

void check_names(const std::string& path, const NamedTensors& ts, const char* what,
                 bool allow_undefined) {
  for (size_t i = 0; i < ts.size(); ++i) {
    const auto& [name, t] = ts[i];
    TG_CHECK(!name.empty(), "save_checkpoint: '", path, "': a ", what, " has an empty name");
    TG_CHECK(allow_undefined || t.defined(), "save_checkpoint: '", path, "': ", what, " '", name,
             "' is an undefined tensor");
    for (size_t j = 0; j < i; ++j) {
      TG_CHECK(ts[j].first != name, "save_checkpoint: '", path, "': duplicate ", what, " name '",
               name, "'");
    }
  }
}

}  // namespace

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  ordered_json h = ordered_json::object();
  if (!metadata.empty()) h[kMetadata] = metadata;
  std::vector<Tensor> host;
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    TG_CHECK(!name.empty(), "safetensors: '", path, "': a tensor has an empty name");
    TG_CHECK(name != kMetadata, "safetensors: '", path, "': the name '", kMetadata,
             "' is reserved for the metadata");
    TG_CHECK(!h.contains(name), "safetensors: '", path, "': duplicate tensor name '", name, "'");
    TG_CHECK(t.defined(), "safetensors: '", path, "': tensor '", name, "' is undefined");
    const int64_t bytes = int64_t(checked_nbytes(t.shape(), dtype_size(t.dtype())));
    const int64_t end = checked_add(offset, bytes, "safetensors: data size of '" + path + "'");
    h[name] = {{"dtype", st_dtype(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, end}}};
    offset = end;
    host.push_back(t.cpu());
  }
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  TG_CHECK(int64_t(text.size()) <= kSafetensorsMaxHeader, "safetensors: '", path,
           "': the header would have ", text.size(), " bytes, more than the ", kSafetensorsMaxHeader,
           " the safetensors library reads (large metadata, such as the momentum buffers of a "
           "big model: save the checkpoint as HDF5)");

  AtomicWriter out(path);
  unsigned char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = (unsigned char)(uint64_t(text.size()) >> (8 * i));
  out.write(len_bytes, 8);
  out.write(text.data(), text.size());
  for (const Tensor& t : host) {
    if (t.nbytes() > 0) out.write(t.raw_data(), t.nbytes());
  }
  out.commit();
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in = open_for_reading(path);
  const Header h = read_header(in, path);
  SafetensorsFile f;
  f.metadata = h.metadata;
  for (const Entry& e : h.entries) f.tensors.emplace_back(e.name, read_entry(in, h, e, path));
  return f;
}

SafetensorsFile read_safetensors(const std::string& path, const std::vector<std::string>& names) {
  std::ifstream in = open_for_reading(path);
  const Header h = read_header(in, path);
  std::string missing, present;
  for (const Entry& e : h.entries) present += (present.empty() ? "" : ", ") + e.name;
  SafetensorsFile f;
  f.metadata = h.metadata;
  for (const std::string& name : names) {
    auto it = std::find_if(h.entries.begin(), h.entries.end(),
                           [&](const Entry& e) { return e.name == name; });
    if (it == h.entries.end()) {
      missing += (missing.empty() ? "" : ", ") + name;
    } else {
      f.tensors.emplace_back(name, read_entry(in, h, *it, path));
    }
  }
  TG_CHECK(missing.empty(), "safetensors: '", path, "' has no tensor ", missing, " (it has: ",
           present.empty() ? "none" : present, ")");
  return f;
}

bool is_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char head[9];
  return in && in.read(head, 9) && head[8] == '{';
}

CheckpointFormat resolve_checkpoint_format(const std::string& path, CheckpointFormat format) {
  if (format != CheckpointFormat::Auto) return format;
  const std::string ext = ".safetensors";
  const bool st = path.size() >= ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0;
  return st ? CheckpointFormat::Safetensors : CheckpointFormat::Hdf5;
}

void save_safetensors_checkpoint(const std::string& path, const NamedTensors& params,
                                 const TrainState* state) {
  check_names(path, params, "parameter", false);
  std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"tapegrad_format", "checkpoint"}, {"tapegrad_format_version", "1"}};
  if (state) {
    check_names(path, state->momentum_buffers, "momentum buffer", true);
    meta[std::string(kStatePrefix) + "step"] = std::to_string(state->step);
    meta[std::string(kStatePrefix) + "epoch"] = std::to_string(state->epoch);
    meta[std::string(kStatePrefix) + "batch_in_epoch"] = std::to_string(state->batch_in_epoch);
    meta[std::string(kStatePrefix) + "seed"] = std::to_string(state->seed);
    meta[kConfig] = state->config_json;
    for (const auto& [name, value] : state->scalars) {
      TG_CHECK(!name.empty(), "save_checkpoint: '", path, "': a scalar has an empty name");
      meta[kScalarsPrefix + name] = format_double(value);
    }
    json list = json::array();
    for (const auto& [name, t] : state->momentum_buffers) {
      if (!t.defined()) continue;
      const Tensor h = t.cpu();
      list.push_back({{"name", name},
                      {"dtype", st_dtype(h.dtype())},
                      {"shape", h.shape()},
                      {"data_base64", base64_encode(static_cast<const unsigned char*>(h.raw_data()),
                                                    h.nbytes())}});
    }
    meta[kMomentum] = list.dump();
  }
  write_safetensors(path, params, meta);
}

Checkpoint load_safetensors_checkpoint(const std::string& path,
                                       const std::vector<std::string>& names) {
  SafetensorsFile f = names.empty() ? read_safetensors(path) : read_safetensors(path, names);
  Checkpoint ck;
  ck.params = std::move(f.tensors);
  if (!names.empty()) {  // the other tensors are listed, never read
    std::ifstream in = open_for_reading(path);
    for (const Entry& e : read_header(in, path).entries)
      if (std::find(names.begin(), names.end(), e.name) == names.end()) ck.unknown.push_back(e.name);
  }
  const auto& m = f.metadata;
  if (m.count(std::string(kStatePrefix) + "step") == 0) return ck;
  TrainState st;
  st.step = meta_int(m, std::string(kStatePrefix) + "step", path);
  st.epoch = meta_int(m, std::string(kStatePrefix) + "epoch", path);
  st.batch_in_epoch = meta_int(m, std::string(kStatePrefix) + "batch_in_epoch", path);
  st.seed = meta_uint(m, std::string(kStatePrefix) + "seed", path);
  if (auto it = m.find(kConfig); it != m.end()) st.config_json = it->second;
  const std::string sp = kScalarsPrefix;
  for (auto it = m.lower_bound(sp); it != m.end() && it->first.compare(0, sp.size(), sp) == 0; ++it) {
    const std::string name = it->first.substr(sp.size());
    char* end = nullptr;
    const double v = std::strtod(it->second.c_str(), &end);
    TG_CHECK(!it->second.empty() && *end == '\0', "load_checkpoint: '", path, "': metadata '",
             it->first, "' is '", it->second, "', expected a number");
    st.scalars[name] = v;
  }
  if (auto it = m.find(kMomentum); it != m.end()) st.momentum_buffers = parse_momentum(it->second, path);
  ck.state = std::move(st);
  return ck;
}

}  // namespace tg::io
