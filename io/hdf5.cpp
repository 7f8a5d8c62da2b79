// RAII layer over the HDF5 C API (see io/hdf5.h).
//
// Every public entry point takes a Lock: the process-wide recursive mutex plus, once per thread,
// the silencing of HDF5's automatic error printing (error stacks and their settings are per thread
// in a thread-safe HDF5 build). Failures go through TG_H5_CHECK / TG_H5_FAIL, which append HDF5's
// innermost error message to ours and clear the error stack.
#include "hdf5.h"

#include <fcntl.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <new>
#include <type_traits>

#include "../core/size.h"

static_assert(std::is_same_v<hid_t, int64_t>, "io/hdf5.h assumes hid_t is int64_t (HDF5 >= 1.10)");

namespace tg::io::h5 {

std::recursive_mutex& library_mutex() {
  static std::recursive_mutex m;
  return m;
}

namespace {

void init_thread() {
  thread_local bool done = false;
  if (!done) {
    H5open();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    done = true;
  }
}

struct Lock {
  std::unique_lock<std::recursive_mutex> lock;
  Lock() : lock(library_mutex()) { init_thread(); }
};

herr_t walk_innermost(unsigned n, const H5E_error2_t* err, void* data) {
  if (n == 0) {
    auto* out = static_cast<std::string*>(data);
    if (err->desc && *err->desc) {
      *out = err->desc;
    } else {
      char buf[256] = {0};
      H5E_type_t type;
      if (H5Eget_msg(err->min_num, &type, buf, sizeof(buf)) > 0) *out = buf;
    }
  }
  return 0;
}

/// " (HDF5: <innermost message>)", or "" when the error stack is empty. Clears the stack. The
/// file drivers' long I/O messages ("file write failed: time = ..., errno = 28, error message =
/// 'No space left on device', ...") are shortened to "file write failed: No space left on device".
std::string h5_detail() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_innermost, &msg);
  H5Eclear2(H5E_DEFAULT);
  const std::string key = "error message = '";
  const size_t at = msg.find(key), colon = msg.find(':');
  if (at != std::string::npos && colon != std::string::npos && colon < at) {
    const size_t end = msg.find('\'', at + key.size());
    msg = msg.substr(0, colon) + ": " + msg.substr(at + key.size(), end - at - key.size());
  }
  return msg.empty() ? std::string() : " (HDF5: " + msg + ")";
}

template <typename... Parts>
[[noreturn]] void fail(const char* file, int line, const Parts&... parts) {
  std::string detail = h5_detail();
  ::tg::detail::throw_error(file, line, parts..., detail);
}

}  // namespace

#define TG_H5_FAIL(...) ::tg::io::h5::fail(__FILE__, __LINE__, __VA_ARGS__)
#define TG_H5_CHECK(expr, ...)               \
  do {                                       \
    if ((expr) < 0) TG_H5_FAIL(__VA_ARGS__); \
  } while (0)

namespace {

/// "x" for "/x", "/" for the root: how objects are named in messages.
std::string display(const std::string& path) {
  if (path.size() > 1 && path[0] == '/') return path.substr(1);
  return path;
}

hid_t mem_type(DType t) { return t == DType::Float32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE; }

std::vector<hsize_t> to_hsize(const Shape& s, const char* what) {
  std::vector<hsize_t> out(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    TG_CHECK(s[i] >= 0, "hdf5: ", what, " must be non-negative, got ", s);
    out[i] = hsize_t(s[i]);
  }
  return out;
}

/// The name a file was opened or created with ("" when it cannot be found).
std::string file_name_of(hid_t obj) {
  ssize_t n = H5Fget_name(obj, nullptr, 0);
  if (n <= 0) {
    H5Eclear2(H5E_DEFAULT);
    return std::string();
  }
  std::string name(size_t(n) + 1, '\0');
  H5Fget_name(obj, name.data(), name.size());
  name.resize(size_t(n));
  return name;
}

/// Files whose writing failed, by name, with the first failure. Guarded by library_mutex().
std::map<std::string, std::string>& broken_files() {
  static std::map<std::string, std::string> files;
  return files;
}

/// True when obj belongs to a file opened for writing.
bool in_writable_file(hid_t obj) {
  hid_t fid = H5Iget_file_id(obj);
  if (fid < 0) {
    H5Eclear2(H5E_DEFAULT);
    return false;
  }
  unsigned intent = 0;
  const bool rw = H5Fget_intent(fid, &intent) >= 0 && (intent & H5F_ACC_RDWR);
  H5Fclose(fid);  // an extra identifier: dropping it never closes the file while obj is open
  H5Eclear2(H5E_DEFAULT);
  return rw;
}

/// Gives up on writing obj's file: records why, and redirects its descriptor to an anonymous
/// in-memory file so that HDF5's remaining writes (flushes at close) succeed without touching the
/// disk. Only for files whose content on disk is incomplete anyway.
void discard_writes(hid_t obj, const std::string& why) {
  hid_t fid = H5Iget_file_id(obj);
  if (fid < 0) {
    H5Eclear2(H5E_DEFAULT);
    return;
  }
  const std::string name = file_name_of(fid);
  if (broken_files().emplace(name, why).second) {
    hid_t fapl = H5Fget_access_plist(fid);
    void* handle = nullptr;
    if (fapl >= 0 && H5Pget_driver(fapl) == H5FD_SEC2 &&
        H5Fget_vfd_handle(fid, fapl, &handle) >= 0 && handle) {
      const int fd = *static_cast<int*>(handle);
      const int mem = ::memfd_create("tapegrad-discarded", MFD_CLOEXEC);
      if (mem >= 0) {
        ::dup2(mem, fd);
        ::close(mem);
      }
    }
    if (fapl >= 0) H5Pclose(fapl);
  }
  H5Fclose(fid);
  H5Eclear2(H5E_DEFAULT);
}

herr_t close_id(hid_t id, Handle::Kind kind) {
  switch (kind) {
    case Handle::Kind::File:
      return H5Fclose(id);
    case Handle::Kind::Group:
      return H5Gclose(id);
    case Handle::Kind::Dataset:
      return H5Dclose(id);
    case Handle::Kind::Dataspace:
      return H5Sclose(id);
    case Handle::Kind::Attribute:
      return H5Aclose(id);
    case Handle::Kind::PropList:
      return H5Pclose(id);
    case Handle::Kind::Datatype:
      return H5Tclose(id);
  }
  return -1;
}

const char* kind_name(Handle::Kind kind) {
  switch (kind) {
    case Handle::Kind::File:
      return "file";
    case Handle::Kind::Group:
      return "group";
    case Handle::Kind::Dataset:
      return "dataset";
    case Handle::Kind::Dataspace:
      return "dataspace";
    case Handle::Kind::Attribute:
      return "attribute";
    case Handle::Kind::PropList:
      return "property list";
    case Handle::Kind::Datatype:
      return "datatype";
  }
  return "object";
}

class Datatype : public Handle {
 public:
  explicit Datatype(hid_t id) : Handle(id, Kind::Datatype) {}
};

StoredType describe_type(hid_t type) {
  StoredType st;
  st.size = H5Tget_size(type);
  switch (H5Tget_class(type)) {
    case H5T_FLOAT:
      st.cls = StoredType::Class::Float;
      break;
    case H5T_INTEGER:
      st.cls = StoredType::Class::Integer;
      break;
    case H5T_STRING:
      st.cls = StoredType::Class::String;
      break;
    default:
      st.cls = StoredType::Class::Other;
      break;
  }
  return st;
}

/// The little-endian type of t's elements: IEEE float32/float64, or float16 / bfloat16 described
/// as custom floats the way h5py and numpy write float16 (a float32 copy with narrowed fields).
/// Used for both file and memory: a 16-bit type equal in file and memory is read and written as raw
/// bits (HDF5 converts nothing).
Datatype element_h5_type(ElementType t) {
  if (!is_half_width(t)) {
    Datatype d(H5Tcopy(t == ElementType::Float32 ? H5T_IEEE_F32LE : H5T_IEEE_F64LE));
    TG_H5_CHECK(d.id(), "hdf5: cannot copy a float type");
    return d;
  }
  const bool f16 = t == ElementType::Float16;
  const size_t esize = f16 ? 5 : 8, msize = f16 ? 10 : 7;
  Datatype d(H5Tcopy(H5T_IEEE_F32LE));
  TG_H5_CHECK(d.id(), "hdf5: cannot copy a float type");
  TG_H5_CHECK(H5Tset_fields(d.id(), 15, msize, esize, 0, msize), "hdf5: cannot describe ",
              element_type_name(t));
  TG_H5_CHECK(H5Tset_size(d.id(), 2), "hdf5: cannot describe ", element_type_name(t));
  TG_H5_CHECK(H5Tset_ebias(d.id(), f16 ? 15 : 127), "hdf5: cannot describe ", element_type_name(t));
  return d;
}

/// The in-memory type of t's elements: the native float / double, or the 16-bit layouts above.
Datatype memory_type(ElementType t) {
  if (is_half_width(t)) return element_h5_type(t);
  Datatype d(H5Tcopy(t == ElementType::Float32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE));
  TG_H5_CHECK(d.id(), "hdf5: cannot copy a float type");
  return d;
}

/// float32 / float64: any IEEE float of 4 / 8 bytes (HDF5 converts the byte order). float16 /
/// bfloat16: exactly the layout of element_h5_type (read as raw bits, so nothing else qualifies).
/// Otherwise false with a description of what the type is.
bool recognise_float(hid_t type, ElementType* out, std::string* what) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  if (cls != H5T_FLOAT) {
    *what = describe_type(type).describe();
    return false;
  }
  if (size == 4 || size == 8) {
    *out = size == 4 ? ElementType::Float32 : ElementType::Float64;
    return true;
  }
  size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
  TG_H5_CHECK(H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize),
              "hdf5: cannot get the fields of a float type");
  const size_t ebias = H5Tget_ebias(type);
  const H5T_order_t order = H5Tget_order(type);
  const H5T_norm_t norm = H5Tget_norm(type);
  const size_t precision = H5Tget_precision(type), offset = H5Tget_offset(type);
  for (ElementType t : {ElementType::Float16, ElementType::BFloat16}) {
    const bool f16 = t == ElementType::Float16;
    if (size == 2 && precision == 16 && offset == 0 && order == H5T_ORDER_LE &&
        norm == H5T_NORM_IMPLIED && spos == 15 && epos == (f16 ? 10u : 7u) &&
        esize == (f16 ? 5u : 8u) && mpos == 0 && msize == (f16 ? 10u : 7u) &&
        ebias == (f16 ? 15u : 127u)) {
      *out = t;
      return true;
    }
  }
  *what = "a " + std::to_string(size * 8) + "-bit float (sign bit " + std::to_string(spos) +
          ", exponent bits " + std::to_string(epos) + ".." + std::to_string(epos + esize - 1) +
          " with bias " + std::to_string(ebias) + ", mantissa bits " + std::to_string(mpos) + ".." +
          std::to_string(mpos + msize - 1) +
          (order == H5T_ORDER_BE   ? ", big-endian"
           : order == H5T_ORDER_LE ? ""
                                   : ", mixed order") +
          ")";
  return false;
}

/// Creates a string datatype for a fixed-length, null-terminated UTF-8 value of n characters.
Datatype fixed_string_type(size_t n) {
  Datatype t(H5Tcopy(H5T_C_S1));
  TG_H5_CHECK(t.id(), "hdf5: cannot create a string type");
  TG_H5_CHECK(H5Tset_size(t.id(), n + 1), "hdf5: cannot size a string type to ", n + 1);
  TG_H5_CHECK(H5Tset_strpad(t.id(), H5T_STR_NULLTERM), "hdf5: cannot set string padding");
  TG_H5_CHECK(H5Tset_cset(t.id(), H5T_CSET_UTF8), "hdf5: cannot set string character set");
  return t;
}

/// Reads a scalar string from a dataset (is_attr false) or an attribute. where names it in errors.
std::string read_string_from(hid_t id, bool is_attr, const std::string& where) {
  Datatype ftype(is_attr ? H5Aget_type(id) : H5Dget_type(id));
  TG_H5_CHECK(ftype.id(), "hdf5: cannot get the type of ", where);
  TG_CHECK(H5Tget_class(ftype.id()) == H5T_STRING, "hdf5: ", where, ": expected a string, got ",
           describe_type(ftype.id()).describe());
  Dataspace space(is_attr ? H5Aget_space(id) : H5Dget_space(id));
  TG_H5_CHECK(space.id(), "hdf5: cannot get the dataspace of ", where);
  TG_CHECK(space.selected() == 1, "hdf5: ", where, ": expected a single string, got ",
           space.selected(), " elements");
  htri_t is_var = H5Tis_variable_str(ftype.id());
  TG_H5_CHECK(is_var, "hdf5: cannot inspect the string type of ", where);
  Datatype mtype(H5Tcopy(H5T_C_S1));
  TG_H5_CHECK(mtype.id(), "hdf5: cannot create a string type");
  H5Tset_cset(mtype.id(), H5Tget_cset(ftype.id()));
  if (is_var > 0) {
    TG_H5_CHECK(H5Tset_size(mtype.id(), H5T_VARIABLE), "hdf5: cannot size a string type");
    char* p = nullptr;
    herr_t st = is_attr ? H5Aread(id, mtype.id(), &p)
                        : H5Dread(id, mtype.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &p);
    TG_H5_CHECK(st, "hdf5: cannot read the string ", where);
    std::string out = p ? std::string(p) : std::string();
    if (p) H5free_memory(p);
    return out;
  }
  // One byte more than stored, null-terminated: HDF5 converts any padding into it without losing
  // the last character (a null-terminated type of the stored size has room for n - 1 only), and
  // strips the trailing spaces of a space-padded string.
  const size_t n = H5Tget_size(ftype.id());
  TG_H5_CHECK(H5Tset_size(mtype.id(), n + 1), "hdf5: cannot size a string type");
  TG_H5_CHECK(H5Tset_strpad(mtype.id(), H5T_STR_NULLTERM), "hdf5: cannot set string padding");
  std::string buf(n + 1, '\0');
  herr_t st = is_attr ? H5Aread(id, mtype.id(), buf.data())
                      : H5Dread(id, mtype.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data());
  TG_H5_CHECK(st, "hdf5: cannot read the string ", where);
  auto end = buf.find('\0');
  if (end != std::string::npos) buf.resize(end);
  return buf;
}

/// Reads a scalar numeric attribute into *out of native type mtype.
void read_scalar_attr(hid_t id, hid_t mtype, void* out, bool allow_float,
                      const std::string& where) {
  Datatype ftype(H5Aget_type(id));
  TG_H5_CHECK(ftype.id(), "hdf5: cannot get the type of ", where);
  H5T_class_t cls = H5Tget_class(ftype.id());
  TG_CHECK(cls == H5T_INTEGER || (allow_float && cls == H5T_FLOAT), "hdf5: ", where, ": expected ",
           allow_float ? "a number" : "an integer", ", got ", describe_type(ftype.id()).describe());
  Dataspace space(H5Aget_space(id));
  TG_H5_CHECK(space.id(), "hdf5: cannot get the dataspace of ", where);
  TG_CHECK(space.selected() == 1, "hdf5: ", where, ": expected a scalar, got ", space.selected(),
           " elements");
  TG_H5_CHECK(H5Aread(id, mtype, out), "hdf5: cannot read ", where);
}

}  // namespace

std::string library_version() {
  Lock lock;
  unsigned maj = 0, min = 0, rel = 0;
  H5get_libversion(&maj, &min, &rel);
  return std::to_string(maj) + "." + std::to_string(min) + "." + std::to_string(rel);
}

// ---- Handle -------------------------------------------------------------------------------------

Handle::Handle(Handle&& other) noexcept : id_(other.id_), kind_(other.kind_) { other.id_ = -1; }

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    Handle tmp(std::move(*this));  // closes our old id at the end of this scope
    id_ = other.id_;
    kind_ = other.kind_;
    other.id_ = -1;
  }
  return *this;
}

namespace {

/// Closes id (see Handle: a dataset or a file of a writable file is flushed first, and a failed
/// flush discards the file's writes so that the close itself cannot fail). Returns "" or what
/// failed, with HDF5's message.
std::string close_handle(hid_t id, Handle::Kind kind) {
  std::string failure;
  const bool flushable = kind == Handle::Kind::Dataset || kind == Handle::Kind::File;
  if (flushable && in_writable_file(id)) {
    const herr_t st = kind == Handle::Kind::File ? H5Fflush(id, H5F_SCOPE_LOCAL) : H5Dflush(id);
    if (st < 0) {
      const std::string detail = h5_detail();  // before the next call clears the error stack
      std::string what = "file";
      if (kind == Handle::Kind::Dataset) {
        char name[512] = {0};
        const ssize_t n = H5Iget_name(id, name, sizeof(name));
        what = "dataset '" + std::string(n > 1 ? name + 1 : "?") + "' of";
      }
      failure = "cannot write " + what + " '" + file_name_of(id) + "'" + detail +
                "; the file is incomplete";
      discard_writes(id, failure);
    }
  }
  if (close_id(id, kind) < 0 && failure.empty()) {
    failure = std::string("failed to close a ") + kind_name(kind) + h5_detail();
  }
  H5Eclear2(H5E_DEFAULT);
  return failure;
}

}  // namespace

Handle::~Handle() {
  if (id_ < 0) return;
  Lock lock;
  const std::string failure = close_handle(id_, kind_);
  if (!failure.empty()) std::fprintf(stderr, "tapegrad: warning: hdf5: %s\n", failure.c_str());
}

void Handle::close() {
  if (id_ < 0) return;
  Lock lock;
  hid_t id = id_;
  id_ = -1;
  const std::string failure = close_handle(id, kind_);
  TG_CHECK(failure.empty(), "hdf5: ", failure);
}

hid Handle::release() {
  hid id = id_;
  id_ = -1;
  return id;
}

// ---- Dataspace ----------------------------------------------------------------------------------

Dataspace Dataspace::simple(const Shape& dims) {
  if (dims.empty()) return scalar();
  Lock lock;
  auto d = to_hsize(dims, "dataspace dimensions");
  Dataspace s(H5Screate_simple(int(d.size()), d.data(), nullptr));
  TG_H5_CHECK(s.id(), "hdf5: cannot create a dataspace of shape ", dims);
  return s;
}

Dataspace Dataspace::scalar() {
  Lock lock;
  Dataspace s(H5Screate(H5S_SCALAR));
  TG_H5_CHECK(s.id(), "hdf5: cannot create a scalar dataspace");
  return s;
}

int64_t Dataspace::rank() const {
  Lock lock;
  int r = H5Sget_simple_extent_ndims(id());
  TG_H5_CHECK(r, "hdf5: cannot get the rank of a dataspace");
  return r;
}

Shape Dataspace::dims() const {
  Lock lock;
  int r = H5Sget_simple_extent_ndims(id());
  TG_H5_CHECK(r, "hdf5: cannot get the rank of a dataspace");
  std::vector<hsize_t> d(size_t(r) + 1);
  TG_H5_CHECK(H5Sget_simple_extent_dims(id(), d.data(), nullptr),
              "hdf5: cannot get the dimensions of a dataspace");
  return Shape(d.begin(), d.begin() + r);
}

int64_t Dataspace::selected() const {
  Lock lock;
  hssize_t n = H5Sget_select_npoints(id());
  TG_H5_CHECK(n, "hdf5: cannot count the selected elements of a dataspace");
  return int64_t(n);
}

void Dataspace::select_all() {
  Lock lock;
  TG_H5_CHECK(H5Sselect_all(id()), "hdf5: cannot select a whole dataspace");
}

void Dataspace::select_none() {
  Lock lock;
  TG_H5_CHECK(H5Sselect_none(id()), "hdf5: cannot clear a dataspace selection");
}

void Dataspace::select_block(const Shape& start, const Shape& count, bool add) {
  Lock lock;
  Shape d = dims();
  TG_CHECK(start.size() == d.size() && count.size() == d.size(), "hdf5: select_block on a rank-",
           d.size(), " dataspace needs ", d.size(), " starts and counts, got ", start, " and ",
           count);
  for (size_t i = 0; i < d.size(); ++i) {
    TG_CHECK(start[i] >= 0 && count[i] >= 0 && start[i] + count[i] <= d[i], "hdf5: block start ",
             start, " count ", count, " is outside a dataspace of shape ", d);
  }
  auto s = to_hsize(start, "block start");
  auto c = to_hsize(count, "block count");
  TG_H5_CHECK(H5Sselect_hyperslab(id(), add ? H5S_SELECT_OR : H5S_SELECT_SET, s.data(), nullptr,
                                  c.data(), nullptr),
              "hdf5: cannot select block start ", start, " count ", count, " of shape ", d);
}

void Dataspace::select_rows(int64_t start, int64_t count, bool add) {
  Shape d = dims();
  TG_CHECK(!d.empty(), "hdf5: select_rows needs a dataspace of rank >= 1");
  Shape s(d.size(), 0), c = d;
  s[0] = start;
  c[0] = count;
  select_block(s, c, add);
}

// ---- Attribute ----------------------------------------------------------------------------------

std::string Attribute::where() const {
  return "attribute '" + name_ + "' of '" + display(owner_) + "' in '" + file_ + "'";
}

int64_t Attribute::read_int() const {
  Lock lock;
  int64_t v = 0;
  read_scalar_attr(id(), H5T_NATIVE_INT64, &v, false, where());
  return v;
}

uint64_t Attribute::read_uint() const {
  Lock lock;
  uint64_t v = 0;
  read_scalar_attr(id(), H5T_NATIVE_UINT64, &v, false, where());
  return v;
}

double Attribute::read_double() const {
  Lock lock;
  double v = 0;
  read_scalar_attr(id(), H5T_NATIVE_DOUBLE, &v, true, where());
  return v;
}

std::string Attribute::read_string() const {
  Lock lock;
  return read_string_from(id(), true, where());
}

std::string StoredType::describe() const {
  switch (cls) {
    case Class::Float:
      return "float" + std::to_string(size * 8);
    case Class::Integer:
      return "int" + std::to_string(size * 8);
    case Class::String:
      return "string";
    case Class::Other:
      break;
  }
  return "a non-numeric type (" + std::to_string(size) + " bytes)";
}

// ---- Object -------------------------------------------------------------------------------------

std::string Object::where() const { return "'" + display(name_) + "' in '" + file_ + "'"; }

std::string Object::child_path(const std::string& child) const {
  if (!child.empty() && child[0] == '/') return child;
  return name_ == "/" ? "/" + child : name_ + "/" + child;
}

bool Object::has_attribute(const std::string& name) const {
  Lock lock;
  htri_t e = H5Aexists(id(), name.c_str());
  TG_H5_CHECK(e, "hdf5: cannot look up attribute '", name, "' of ", where());
  return e > 0;
}

Attribute Object::open_attribute(const std::string& name) const {
  Lock lock;
  TG_CHECK(has_attribute(name), "hdf5: ", where(), " has no attribute '", name, "'");
  hid_t a = H5Aopen(id(), name.c_str(), H5P_DEFAULT);
  TG_H5_CHECK(a, "hdf5: cannot open attribute '", name, "' of ", where());
  return Attribute(a, file_, name_, name);
}

namespace {

void write_scalar_attr(hid_t obj, const std::string& name, hid_t ftype, hid_t mtype,
                       const void* value, const std::string& where) {
  htri_t e = H5Aexists(obj, name.c_str());
  TG_H5_CHECK(e, "hdf5: cannot look up attribute '", name, "' of ", where);
  if (e > 0)
    TG_H5_CHECK(H5Adelete(obj, name.c_str()), "hdf5: cannot replace attribute '", name, "' of ",
                where);
  Dataspace space = Dataspace::scalar();
  Attribute a(H5Acreate2(obj, name.c_str(), ftype, space.id(), H5P_DEFAULT, H5P_DEFAULT), "", "",
              name);
  TG_H5_CHECK(a.id(), "hdf5: cannot create attribute '", name, "' of ", where);
  TG_H5_CHECK(H5Awrite(a.id(), mtype, value), "hdf5: cannot write attribute '", name, "' of ",
              where);
  a.close();
}

}  // namespace

void Object::set_attr_int(const std::string& name, int64_t value) {
  Lock lock;
  write_scalar_attr(id(), name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value, where());
}

void Object::set_attr_uint(const std::string& name, uint64_t value) {
  Lock lock;
  write_scalar_attr(id(), name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &value, where());
}

void Object::set_attr_double(const std::string& name, double value) {
  Lock lock;
  write_scalar_attr(id(), name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value, where());
}

void Object::set_attr_string(const std::string& name, const std::string& value) {
  Lock lock;
  Datatype t = fixed_string_type(value.size());
  write_scalar_attr(id(), name, t.id(), t.id(), value.c_str(), where());
}

// ---- Dataset ------------------------------------------------------------------------------------

Dataspace Dataset::space() const {
  Lock lock;
  Dataspace s(H5Dget_space(id()));
  TG_H5_CHECK(s.id(), "hdf5: cannot get the dataspace of dataset ", where());
  return s;
}

Shape Dataset::shape() const { return space().dims(); }

StoredType Dataset::stored_type() const {
  Lock lock;
  Datatype t(H5Dget_type(id()));
  TG_H5_CHECK(t.id(), "hdf5: cannot get the type of dataset ", where());
  return describe_type(t.id());
}

ElementType Dataset::element_type() const {
  Lock lock;
  Datatype t(H5Dget_type(id()));
  TG_H5_CHECK(t.id(), "hdf5: cannot get the type of dataset ", where());
  ElementType e = ElementType::Float32;
  std::string what;
  TG_CHECK(recognise_float(t.id(), &e, &what), "dataset ", where(),
           ": expected float32, float64, float16 or bfloat16 data (little-endian IEEE layouts), "
           "got ",
           what);
  return e;
}

DType Dataset::float_dtype() const {
  StoredType t = stored_type();
  TG_CHECK(t.cls == StoredType::Class::Float && (t.size == 4 || t.size == 8), "dataset ", where(),
           ": expected float32 or float64 data, got ", t.describe());
  return t.size == 4 ? DType::Float32 : DType::Float64;
}

Shape Dataset::chunk() const {
  Lock lock;
  PropList dcpl(H5Dget_create_plist(id()));
  TG_H5_CHECK(dcpl.id(), "hdf5: cannot get the creation properties of dataset ", where());
  if (H5Pget_layout(dcpl.id()) != H5D_CHUNKED) return {};
  hsize_t d[H5S_MAX_RANK];
  int r = H5Pget_chunk(dcpl.id(), H5S_MAX_RANK, d);
  TG_H5_CHECK(r, "hdf5: cannot get the chunk shape of dataset ", where());
  return Shape(d, d + r);
}

RawLayout Dataset::raw_layout(DType mtype) const { return raw_layout(element_type_of(mtype)); }

RawLayout Dataset::raw_layout(ElementType mtype) const {
  Lock lock;
  RawLayout r;
  Datatype ftype(H5Dget_type(id()));
  TG_H5_CHECK(ftype.id(), "hdf5: cannot get the type of dataset ", where());
  Datatype want = memory_type(mtype);
  htri_t same = H5Tequal(ftype.id(), want.id());
  TG_H5_CHECK(same, "hdf5: cannot compare the type of dataset ", where());
  if (same <= 0) {
    r.why_not = "stored element type differs from " + std::string(element_type_name(mtype));
    return r;
  }
  PropList dcpl(H5Dget_create_plist(id()));
  TG_H5_CHECK(dcpl.id(), "hdf5: cannot get the creation properties of dataset ", where());
  int nfilters = H5Pget_nfilters(dcpl.id());
  TG_H5_CHECK(nfilters, "hdf5: cannot count the filters of dataset ", where());
  if (nfilters > 0) {
    r.why_not = "filters (compression or checksum)";
    return r;
  }
  hid_t file = H5Iget_file_id(id());
  TG_H5_CHECK(file, "hdf5: cannot get the file of dataset ", where());
  Handle file_handle(file, Kind::File);
  PropList fcpl(H5Fget_create_plist(file));
  TG_H5_CHECK(fcpl.id(), "hdf5: cannot get the creation properties of '", file_, "'");
  hsize_t userblock = 0;
  TG_H5_CHECK(H5Pget_userblock(fcpl.id(), &userblock), "hdf5: cannot get the user block of '",
              file_, "'");
  if (userblock != 0) {
    r.why_not = "user block";
    return r;
  }
  H5D_layout_t layout = H5Pget_layout(dcpl.id());
  if (layout == H5D_CONTIGUOUS) {
    haddr_t addr = H5Dget_offset(id());
    H5Eclear2(H5E_DEFAULT);
    r.contiguous = true;
    r.offset = addr == HADDR_UNDEF ? -1 : int64_t(addr);
    r.direct = true;
    return r;
  }
  if (layout != H5D_CHUNKED) {
    r.why_not = "compact or virtual layout";
    return r;
  }
#if H5_VERSION_GE(1, 10, 5)
  Shape c = chunk(), d = shape();
  if (c.empty() || d.empty() || !std::equal(c.begin() + 1, c.end(), d.begin() + 1)) {
    r.why_not = "chunks that do not span whole rows";
    return r;
  }
  r.chunk_rows = c[0];
  r.direct = true;
#else
  r.why_not = "HDF5 older than 1.10.5 (no H5Dget_chunk_info_by_coord)";
#endif
  return r;
}

int64_t Dataset::chunk_offset(int64_t row) const {
#if H5_VERSION_GE(1, 10, 5)
  Lock lock;
  Shape d = shape();
  std::vector<hsize_t> coord(d.size(), 0);
  coord[0] = hsize_t(row);
  unsigned mask = 0;
  haddr_t addr = HADDR_UNDEF;
  hsize_t size = 0;
  TG_H5_CHECK(H5Dget_chunk_info_by_coord(id(), coord.data(), &mask, &addr, &size),
              "hdf5: cannot locate the chunk of row ", row, " of dataset ", where());
  return addr == HADDR_UNDEF ? -1 : int64_t(addr);
#else
  (void)row;
  TG_THROW("hdf5: chunk_offset needs HDF5 >= 1.10.5");
#endif
}

namespace {

/// Throws for a failed read of dataset d: names the filters it needs that are not available (an
/// optional filter that was applied is needed to read), or else suspects the file.
[[noreturn]] void read_failed(const Dataset& d, const std::string& what) {
  const std::string detail = h5_detail();
  const std::vector<std::string> missing = d.unavailable_filters();
  std::string why = " (truncated or corrupt file?)";
  if (!missing.empty()) {
    why = ": it needs " + missing.front() +
          ", which this HDF5 library does not have (install the filter's plugin and point "
          "HDF5_PLUGIN_PATH at its folder)";
  }
  TG_THROW("hdf5: cannot read ", what.empty() ? std::string() : what + " of ", "dataset ",
           d.where(), why, detail);
}

}  // namespace

void Dataset::read(void* dst, DType mtype, const Dataspace& mem_space, const Dataspace& file_space,
                   const std::string& what) const {
  Lock lock;
  herr_t st = H5Dread(id(), mem_type(mtype), mem_space.id(), file_space.id(), H5P_DEFAULT, dst);
  if (st < 0) read_failed(*this, what);
}

void Dataset::read(void* dst, ElementType mtype, const Dataspace& mem_space,
                   const Dataspace& file_space, const std::string& what) const {
  Lock lock;
  Datatype t = memory_type(mtype);
  herr_t st = H5Dread(id(), t.id(), mem_space.id(), file_space.id(), H5P_DEFAULT, dst);
  if (st < 0) read_failed(*this, what);
}

void Dataset::read(void* dst, DType mtype) const {
  Lock lock;
  herr_t st = H5Dread(id(), mem_type(mtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, dst);
  if (st < 0) read_failed(*this, "");
}

void Dataset::write(const void* src, DType mtype, const Dataspace& mem_space,
                    const Dataspace& file_space) {
  Lock lock;
  herr_t st = H5Dwrite(id(), mem_type(mtype), mem_space.id(), file_space.id(), H5P_DEFAULT, src);
  TG_H5_CHECK(st, "hdf5: cannot write dataset ", where());
}

void Dataset::write(const void* src, ElementType mtype, const Dataspace& mem_space,
                    const Dataspace& file_space) {
  Lock lock;
  Datatype t = memory_type(mtype);
  herr_t st = H5Dwrite(id(), t.id(), mem_space.id(), file_space.id(), H5P_DEFAULT, src);
  TG_H5_CHECK(st, "hdf5: cannot write dataset ", where());
}

void Dataset::write(const void* src, DType mtype) {
  Lock lock;
  herr_t st = H5Dwrite(id(), mem_type(mtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, src);
  TG_H5_CHECK(st, "hdf5: cannot write dataset ", where());
}

Tensor Dataset::read_tensor() const {
  Lock lock;
  DType dt = float_dtype();
  const Shape s = shape();
  const int64_t bytes = nbytes(dtype_size(dt));
  check_readable();
  const std::string what = "dataset " + where() + " of shape " + shape_str(s);
  check_fits_in_memory(bytes, what);
  Tensor t;
  try {
    t = Tensor::empty(s, dt);
  } catch (const std::bad_alloc&) {
    TG_THROW("hdf5: cannot allocate ", bytes, " bytes for ", what, ": out of memory");
  } catch (const Error& e) {
    TG_THROW("hdf5: cannot allocate ", bytes, " bytes for ", what, ": ", e.what());
  }
  if (t.numel() > 0) read(t.raw_data(), dt);
  return t;
}

int64_t Dataset::nbytes(size_t elem_size) const {
  const Shape s = shape();
  const std::string what = "dataset " + where() + " of shape " + shape_str(s) + " (" +
                           std::to_string(elem_size) + "-byte elements): its size in bytes";
  int64_t n = int64_t(elem_size);
  for (int64_t d : s) n = checked_mul(n, d, what);
  return n;
}

void Dataset::check_readable() const {
  Lock lock;
  const Shape s = shape();
  const bool empty = std::find(s.begin(), s.end(), 0) != s.end();
  PropList dcpl(H5Dget_create_plist(id()));
  TG_H5_CHECK(dcpl.id(), "hdf5: cannot get the creation properties of dataset ", where());
  if (!empty && H5Pget_layout(dcpl.id()) != H5D_VIRTUAL) {
    H5D_space_status_t status;
    TG_H5_CHECK(H5Dget_space_status(id(), &status),
                "hdf5: cannot get the storage status of dataset ", where());
    TG_CHECK(status != H5D_SPACE_STATUS_NOT_ALLOCATED, "hdf5: dataset ", where(), " of shape ", s,
             " holds no data: it was declared but never written (no storage is allocated, so "
             "every element would read as the fill value)");
  }
  const std::vector<std::string> missing = unavailable_filters(true);
  TG_CHECK(missing.empty(), "hdf5: dataset ", where(), " is stored with ",
           missing.empty() ? std::string() : missing.front(),
           ", which this HDF5 library does not have (install the filter's plugin and point "
           "HDF5_PLUGIN_PATH at its folder)");
}

std::vector<std::string> Dataset::unavailable_filters(bool required_only) const {
  Lock lock;
  PropList dcpl(H5Dget_create_plist(id()));
  TG_H5_CHECK(dcpl.id(), "hdf5: cannot get the creation properties of dataset ", where());
  const int n = H5Pget_nfilters(dcpl.id());
  TG_H5_CHECK(n, "hdf5: cannot count the filters of dataset ", where());
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    unsigned flags = 0, config = 0;
    size_t nvalues = 0;
    char name[256] = {0};
    const H5Z_filter_t f = H5Pget_filter2(dcpl.id(), unsigned(i), &flags, &nvalues, nullptr,
                                          sizeof(name), name, &config);
    TG_H5_CHECK(f, "hdf5: cannot get filter ", i, " of dataset ", where());
    const bool optional = (flags & H5Z_FLAG_OPTIONAL) != 0;
    if (H5Zfilter_avail(f) > 0 || (required_only && optional)) continue;
    H5Eclear2(H5E_DEFAULT);
    out.push_back("HDF5 filter " + std::to_string(f) + " (" +
                  (name[0] ? "'" + std::string(name) + "', " : std::string()) +
                  (optional ? "optional" : "required") + ")");
  }
  return out;
}

std::string Dataset::read_string() const {
  Lock lock;
  return read_string_from(id(), false, "dataset " + where());
}

// ---- Group --------------------------------------------------------------------------------------

ObjectKind Group::kind_of(const std::string& name) const {
  Lock lock;
  TG_CHECK(!name.empty(), "hdf5: empty object name in ", where());
  // H5Lexists fails (rather than answering no) when an intermediate group is missing, so walk the
  // path one component at a time.
  std::string prefix;
  size_t pos = 0;
  while (pos <= name.size()) {
    size_t slash = name.find('/', pos);
    if (slash == std::string::npos) slash = name.size();
    std::string part = name.substr(pos, slash - pos);
    if (!part.empty()) {
      prefix += (prefix.empty() ? "" : "/") + part;
      htri_t e = H5Lexists(id(), prefix.c_str(), H5P_DEFAULT);
      TG_H5_CHECK(e, "hdf5: cannot look up '", prefix, "' in ", where());
      if (e == 0) return ObjectKind::None;
    }
    pos = slash + 1;
  }
  hid_t obj = H5Oopen(id(), name.c_str(), H5P_DEFAULT);
  if (obj < 0) {
    H5Eclear2(H5E_DEFAULT);
    H5L_info_t info;
    const bool soft = H5Lget_info(id(), name.c_str(), &info, H5P_DEFAULT) >= 0 &&
                      (info.type == H5L_TYPE_SOFT || info.type == H5L_TYPE_EXTERNAL);
    H5Eclear2(H5E_DEFAULT);
    return soft ? ObjectKind::BrokenLink : ObjectKind::Other;
  }
  H5I_type_t t = H5Iget_type(obj);
  H5Oclose(obj);
  if (t == H5I_GROUP) return ObjectKind::Group;
  if (t == H5I_DATASET) return ObjectKind::Dataset;
  return ObjectKind::Other;
}

std::vector<std::string> Group::children() const {
  Lock lock;
  Group self(H5Gopen2(id(), ".", H5P_DEFAULT), file_, name_);
  TG_H5_CHECK(self.id(), "hdf5: cannot open group ", where());
  H5G_info_t info;
  TG_H5_CHECK(H5Gget_info(self.id(), &info), "hdf5: cannot get the links of group ", where());
  PropList gcpl(H5Gget_create_plist(self.id()));
  TG_H5_CHECK(gcpl.id(), "hdf5: cannot get the creation properties of group ", where());
  unsigned flags = 0;
  TG_H5_CHECK(H5Pget_link_creation_order(gcpl.id(), &flags),
              "hdf5: cannot get the link order of group ", where());
  H5_index_t index = (flags & H5P_CRT_ORDER_INDEXED) ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME;
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    ssize_t n = H5Lget_name_by_idx(self.id(), ".", index, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    TG_H5_CHECK(n, "hdf5: cannot get the name of link ", i, " of group ", where());
    std::string s(size_t(n) + 1, '\0');
    TG_H5_CHECK(
        H5Lget_name_by_idx(self.id(), ".", index, H5_ITER_INC, i, s.data(), s.size(), H5P_DEFAULT),
        "hdf5: cannot get the name of link ", i, " of group ", where());
    s.resize(size_t(n));
    names.push_back(std::move(s));
  }
  return names;
}

std::string Group::describe_link(const std::string& name) const {
  Lock lock;
  H5L_info_t info;
  TG_H5_CHECK(H5Lget_info(id(), name.c_str(), &info, H5P_DEFAULT), "hdf5: cannot look up link '",
              display(child_path(name)), "' in '", file_, "'");
  if (info.type == H5L_TYPE_HARD) return "a hard link";
  if (info.type != H5L_TYPE_SOFT && info.type != H5L_TYPE_EXTERNAL) return "a user-defined link";
  std::string value(info.u.val_size + 1, '\0');
  TG_H5_CHECK(H5Lget_val(id(), name.c_str(), value.data(), value.size(), H5P_DEFAULT),
              "hdf5: cannot read link '", display(child_path(name)), "' in '", file_, "'");
  if (info.type == H5L_TYPE_SOFT) return "a soft link to '" + std::string(value.c_str()) + "'";
  const char* target_file = nullptr;
  const char* target_path = nullptr;
  unsigned flags = 0;
  TG_H5_CHECK(
      H5Lunpack_elink_val(value.data(), info.u.val_size, &flags, &target_file, &target_path),
      "hdf5: cannot read external link '", display(child_path(name)), "' in '", file_, "'");
  return "an external link to '" + std::string(target_path ? target_path : "") + "' in '" +
         (target_file ? target_file : "") + "'";
}

namespace {

/// Throws unless kind k of link `shown` (in file) is `want`, naming a missing or broken link.
void check_link_kind(const Group& g, const std::string& name, const std::string& shown,
                     ObjectKind k, ObjectKind want, const char* what) {
  TG_CHECK(k != ObjectKind::None, "hdf5: no ", what, " '", shown, "' in '", g.file_name(), "'");
  TG_CHECK(k != ObjectKind::BrokenLink, "hdf5: '", shown, "' in '", g.file_name(),
           "' is a broken link: ", g.describe_link(name), ", which does not exist");
  TG_CHECK(k == want, "hdf5: '", shown, "' in '", g.file_name(), "' is not a ", what);
}

}  // namespace

Group Group::open_group(const std::string& name) const {
  Lock lock;
  ObjectKind k = kind_of(name);
  check_link_kind(*this, name, display(child_path(name)), k, ObjectKind::Group, "group");
  hid_t g = H5Gopen2(id(), name.c_str(), H5P_DEFAULT);
  TG_H5_CHECK(g, "hdf5: cannot open group '", display(child_path(name)), "' in '", file_, "'");
  return Group(g, file_, child_path(name));
}

Group Group::create_group(const std::string& name) {
  Lock lock;
  TG_CHECK(!has(name), "hdf5: cannot create group '", display(child_path(name)), "' in '", file_,
           "': the name is taken");
  PropList gcpl(H5Pcreate(H5P_GROUP_CREATE));
  TG_H5_CHECK(gcpl.id(), "hdf5: cannot create a group property list");
  TG_H5_CHECK(H5Pset_link_creation_order(gcpl.id(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED),
              "hdf5: cannot set link creation order");
  hid_t g = H5Gcreate2(id(), name.c_str(), H5P_DEFAULT, gcpl.id(), H5P_DEFAULT);
  TG_H5_CHECK(g, "hdf5: cannot create group '", display(child_path(name)), "' in '", file_, "'");
  return Group(g, file_, child_path(name));
}

Dataset Group::open_dataset(const std::string& name) const { return open_dataset(name, 0); }

Dataset Group::open_dataset(const std::string& name, size_t cache_bytes) const {
  Lock lock;
  ObjectKind k = kind_of(name);
  check_link_kind(*this, name, display(child_path(name)), k, ObjectKind::Dataset, "dataset");
  PropList dapl(H5Pcreate(H5P_DATASET_ACCESS));
  TG_H5_CHECK(dapl.id(), "hdf5: cannot create a dataset access property list");
  if (cache_bytes > 0) {
    TG_H5_CHECK(H5Pset_chunk_cache(dapl.id(), 12421, cache_bytes, 1.0),
                "hdf5: cannot set the chunk cache of dataset '", name, "'");
  }
  hid_t d = H5Dopen2(id(), name.c_str(), dapl.id());
  TG_H5_CHECK(d, "hdf5: cannot open dataset '", display(child_path(name)), "' in '", file_, "'");
  return Dataset(d, file_, child_path(name));
}

Dataset Group::create_dataset(const std::string& name, DType type, const Shape& shape,
                              const DatasetCreateOptions& options) {
  return create_dataset(name, element_type_of(type), shape, options);
}

Dataset Group::create_dataset(const std::string& name, ElementType type, const Shape& shape,
                              const DatasetCreateOptions& options) {
  Lock lock;
  const std::string full = "'" + display(child_path(name)) + "' in '" + file_ + "'";
  TG_CHECK(!name.empty(), "hdf5: empty dataset name in ", where());
  TG_CHECK(!has(name), "hdf5: cannot create dataset ", full, ": the name is taken");
  PropList dcpl(H5Pcreate(H5P_DATASET_CREATE));
  TG_H5_CHECK(dcpl.id(), "hdf5: cannot create a dataset creation property list");
  if (!options.chunk.empty()) {
    TG_CHECK(options.chunk.size() == shape.size(), "hdf5: dataset ", full, " of shape ", shape,
             " cannot have chunks of shape ", options.chunk);
    for (size_t i = 0; i < shape.size(); ++i) {
      TG_CHECK(options.chunk[i] >= 1 && (options.chunk[i] <= shape[i] || shape[i] == 0),
               "hdf5: dataset ", full, " of shape ", shape, " cannot have chunks of shape ",
               options.chunk);
    }
    auto c = to_hsize(options.chunk, "chunk shape");
    TG_H5_CHECK(H5Pset_chunk(dcpl.id(), int(c.size()), c.data()),
                "hdf5: cannot set chunks of shape ", options.chunk, " for dataset ", full);
    if (options.fletcher32) {
      TG_H5_CHECK(H5Pset_fletcher32(dcpl.id()), "hdf5: cannot add the checksum filter to ", full);
    }
    if (options.shuffle) {
      TG_H5_CHECK(H5Pset_shuffle(dcpl.id()), "hdf5: cannot add the shuffle filter to ", full);
    }
    if (options.gzip_level > 0) {
      TG_CHECK(options.gzip_level <= 9, "hdf5: gzip level must be in 0..9, got ",
               options.gzip_level);
      TG_CHECK(H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0,
               "hdf5: this HDF5 library has no deflate filter; write dataset ", full,
               " uncompressed");
      TG_H5_CHECK(H5Pset_deflate(dcpl.id(), unsigned(options.gzip_level)),
                  "hdf5: cannot add the deflate filter to ", full);
    }
  } else {
    TG_CHECK(options.gzip_level == 0 && !options.shuffle && !options.fletcher32,
             "hdf5: filters on dataset ", full, " need chunked storage (set options.chunk)");
  }
  PropList dapl(H5Pcreate(H5P_DATASET_ACCESS));
  TG_H5_CHECK(dapl.id(), "hdf5: cannot create a dataset access property list");
  if (options.chunk_cache_bytes > 0) {
    TG_H5_CHECK(H5Pset_chunk_cache(dapl.id(), 12421, options.chunk_cache_bytes, 1.0),
                "hdf5: cannot set the chunk cache of dataset ", full);
  }
  Dataspace space = Dataspace::simple(shape);
  Datatype ftype = element_h5_type(type);
  hid_t d =
      H5Dcreate2(id(), name.c_str(), ftype.id(), space.id(), H5P_DEFAULT, dcpl.id(), dapl.id());
  TG_H5_CHECK(d, "hdf5: cannot create dataset ", full, " of shape ", shape);
  return Dataset(d, file_, child_path(name));
}

Dataset Group::write_tensor(const std::string& name, const Tensor& t) {
  TG_CHECK(t.defined(), "hdf5: cannot write an undefined tensor as dataset '",
           display(child_path(name)), "' in '", file_, "'");
  Tensor host = t.is_cuda() ? t.to(Device::CPU) : t;
  Lock lock;
  Dataset d = create_dataset(name, host.dtype(), host.shape());
  if (host.numel() > 0) d.write(host.raw_data(), host.dtype());
  return d;
}

Dataset Group::write_string(const std::string& name, const std::string& value) {
  Lock lock;
  const std::string full = "'" + display(child_path(name)) + "' in '" + file_ + "'";
  TG_CHECK(!has(name), "hdf5: cannot create dataset ", full, ": the name is taken");
  Datatype t = fixed_string_type(value.size());
  Dataspace space = Dataspace::scalar();
  Dataset d(
      H5Dcreate2(id(), name.c_str(), t.id(), space.id(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
      file_, child_path(name));
  TG_H5_CHECK(d.id(), "hdf5: cannot create string dataset ", full);
  TG_H5_CHECK(H5Dwrite(d.id(), t.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, value.c_str()),
              "hdf5: cannot write string dataset ", full);
  return d;
}

// ---- File ---------------------------------------------------------------------------------------

namespace {

/// File access properties: file locks are used where the file system supports them and silently
/// skipped where it does not (NFS, Lustre), instead of failing every open there.
PropList file_access_plist() {
  PropList fapl(H5Pcreate(H5P_FILE_ACCESS));
  TG_H5_CHECK(fapl.id(), "hdf5: cannot create a file access property list");
#if H5_VERSION_GE(1, 10, 7)
  TG_H5_CHECK(H5Pset_file_locking(fapl.id(), true, true), "hdf5: cannot set file locking");
#endif
  return fapl;
}

}  // namespace

bool File::is_hdf5(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  Lock lock;
#if H5_VERSION_GE(1, 12, 0)
  htri_t r = H5Fis_accessible(path.c_str(), H5P_DEFAULT);
#else
  htri_t r = H5Fis_hdf5(path.c_str());
#endif
  H5Eclear2(H5E_DEFAULT);
  return r > 0;
}

File File::open(const std::string& path, bool writable) {
  std::error_code ec;
  auto status = std::filesystem::status(path, ec);
  TG_CHECK(std::filesystem::exists(status), "hdf5: cannot open '", path, "': no such file");
  TG_CHECK(std::filesystem::is_regular_file(status), "hdf5: cannot open '", path,
           "': not a regular file");
  Lock lock;
#if H5_VERSION_GE(1, 12, 0)
  htri_t is = H5Fis_accessible(path.c_str(), H5P_DEFAULT);
#else
  htri_t is = H5Fis_hdf5(path.c_str());
#endif
  if (is == 0) {
    H5Eclear2(H5E_DEFAULT);
    TG_THROW("hdf5: cannot open '", path, "': not an HDF5 file (no HDF5 signature)");
  }
  TG_H5_CHECK(is, "hdf5: cannot open '", path, "': not an HDF5 file or unreadable");
  PropList fapl = file_access_plist();
  hid_t id = H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl.id());
  TG_H5_CHECK(id, "hdf5: cannot open '", path, "': truncated, corrupt or locked HDF5 file");
  if (writable) broken_files().erase(file_name_of(id));
  return File(id, path);
}

File File::create(const std::string& path) {
  Lock lock;
  PropList fcpl(H5Pcreate(H5P_FILE_CREATE));
  TG_H5_CHECK(fcpl.id(), "hdf5: cannot create a file creation property list");
  TG_H5_CHECK(H5Pset_link_creation_order(fcpl.id(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED),
              "hdf5: cannot set link creation order");
  PropList fapl = file_access_plist();
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.id(), fapl.id());
  TG_H5_CHECK(id, "hdf5: cannot create '", path, "'");
  broken_files().erase(file_name_of(id));  // a fresh file: an old failure of this name is past
  return File(id, path);
}

void File::flush() {
  Lock lock;
  TG_H5_CHECK(H5Fflush(id(), H5F_SCOPE_GLOBAL), "hdf5: cannot flush '", file_, "'");
}

void File::close() { Handle::close(); }

void check_fits_in_memory(int64_t bytes, const std::string& what) {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return;  // unknown: let the allocation decide
  const int64_t memory = checked_mul(pages, page, "physical memory");
  TG_CHECK(bytes <= memory, what, " needs ", bytes, " bytes, more than this machine's memory (",
           memory, " bytes)");
}

// ---- AtomicFile ---------------------------------------------------------------------------------

namespace {

void fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) {
    TG_CHECK(directory, "hdf5: cannot reopen '", path, "' to sync it: ", std::strerror(errno));
    return;  // syncing a directory is best effort (not every file system allows it)
  }
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  TG_CHECK(rc == 0 || directory, "hdf5: cannot sync '", path, "' to disk: ", std::strerror(err));
}

void remove_regular_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) std::filesystem::remove(path, ec);
}

}  // namespace

AtomicFile::AtomicFile(const std::string& path) : path_(path) {
  static std::atomic<uint64_t> counter{0};
  TG_CHECK(!path.empty(), "hdf5: empty file name");
  remove_stale_temporaries(path);
  temp_ = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  try {
    file_ = File::create(temp_);
  } catch (...) {
    remove_regular_file(temp_);
    throw;
  }
}

AtomicFile::~AtomicFile() {
  if (!done_) abandon();
}

void AtomicFile::abandon() noexcept {
  if (done_) return;
  done_ = true;
  try {
    Lock lock;
    if (file_.valid()) {
      // Nothing of this file is wanted: its remaining writes (and those of objects still open)
      // go to memory, so that no close can fail, and the closes complete once all are closed.
      discard_writes(file_.id(), "abandoned");
      H5Fclose(file_.release());
      H5Eclear2(H5E_DEFAULT);
    }
    broken_files().erase(temp_);
  } catch (...) {
  }
  remove_regular_file(temp_);
}

void AtomicFile::commit() {
  TG_CHECK(!done_, "hdf5: '", path_, "' was already committed or abandoned");
  try {
    {
      // HDF5 closes a file only once its objects are closed: syncing and renaming it before then
      // would move an incomplete file into place.
      Lock lock;
      const ssize_t open = H5Fget_obj_count(
          file_.id(), H5F_OBJ_DATASET | H5F_OBJ_GROUP | H5F_OBJ_DATATYPE | H5F_OBJ_ATTR);
      TG_H5_CHECK(open, "hdf5: cannot count the open objects of '", temp_, "'");
      TG_CHECK(open == 0, "hdf5: cannot commit '", path_, "': ", open,
               " of its datasets, groups or attributes are still open (close them first)");
    }
    file_.close();
    std::string failure;
    {
      Lock lock;
      auto it = broken_files().find(temp_);
      if (it != broken_files().end()) failure = it->second;
    }
    TG_CHECK(failure.empty(), "hdf5: cannot save '", path_, "': an earlier write failed (", failure,
             "); the previous file is unchanged");
    fsync_path(temp_, false);
    if (std::rename(temp_.c_str(), path_.c_str()) != 0) {
      TG_THROW("hdf5: cannot move '", temp_, "' to '", path_, "': ", std::strerror(errno));
    }
  } catch (...) {
    abandon();
    throw;
  }
  done_ = true;
  auto dir = std::filesystem::path(path_).parent_path();
  fsync_path(dir.empty() ? std::string(".") : dir.string(), true);
}

}  // namespace tg::io::h5

namespace tg::io {

void remove_stale_temporaries(const std::string& final_path) {
  namespace fs = std::filesystem;
  const fs::path p(final_path);
  const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  const std::string prefix = p.filename().string() + ".tmp-";
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    // The rest must be "<pid>-<n>", both decimal.
    const std::string rest = name.substr(prefix.size());
    const size_t dash = rest.find('-');
    auto digits = [](const std::string& t) {
      return !t.empty() && t.size() <= 18 &&
             std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; });
    };
    if (dash == std::string::npos || !digits(rest.substr(0, dash)) ||
        !digits(rest.substr(dash + 1)))
      continue;
    const long long pid = std::stoll(rest.substr(0, dash));
    if (pid <= 0 || pid > std::numeric_limits<pid_t>::max()) continue;
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to judge)
    std::error_code rm;
    if (fs::is_regular_file(it->path(), rm)) fs::remove(it->path(), rm);
  }
}

}  // namespace tg::io
