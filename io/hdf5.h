// A small RAII layer over the HDF5 C API.
//
// Every HDF5 identifier lives in a movable, non-copyable handle that closes it in its destructor
// (File, Group, Dataset, Dataspace, Attribute, PropList). Every failure becomes a tg::Error that
// names the file, the object and what failed, followed by HDF5's own innermost message, e.g.
//   "hdf5: cannot open '/tmp/x.h5': not an HDF5 file (no HDF5 signature)"
//   "hdf5: cannot read dataset 'x' in 'data.h5' (HDF5: inflate() failed)".
// HDF5's automatic error printing is switched off on every thread that uses this layer.
//
// This header does not include <hdf5.h>: identifiers are held as int64_t (HDF5's hid_t since 1.10)
// and types are described with tg::DType or io::ElementType (io/float16.h), so code that includes
// it needs no HDF5 include path.
//
// Threads: the HDF5 library may be built without thread safety, and the batch loader calls it from
// a background thread. Every call made through this layer therefore holds one process-wide
// recursive lock (library_mutex()) for its duration. Code that calls the HDF5 C API directly while
// other threads use this layer must hold that lock too.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "../core/dtype.h"
#include "../core/error.h"
#include "../core/tensor.h"
#include "float16.h"

namespace tg::io::h5 {

using hid = int64_t;

/// The lock that serialises every call into the HDF5 library made through this layer.
std::recursive_mutex& library_mutex();

/// The version of the HDF5 library in use, "1.10.8".
std::string library_version();

/// Throws tg::Error naming `what` when `bytes` exceed this machine's physical memory (such an
/// allocation cannot succeed, and under a sanitizer it would abort instead of failing).
void check_fits_in_memory(int64_t bytes, const std::string& what);

/// An owned HDF5 identifier of one kind, closed by the destructor (which never throws; a failure
/// to close is printed to stderr). Movable, not copyable.
///
/// Closing a dataset or a file of a file open for writing flushes it first. When that flush fails
/// (a full disk), the file cannot be completed any more: its descriptor is redirected to an
/// anonymous in-memory file, so that the close and every later close of its objects succeed
/// (HDF5 1.10 leaves a dangling identifier behind a failed close, which crashes the process at
/// exit). Such a file is recorded as broken, and AtomicFile::commit refuses it.
class Handle {
 public:
  enum class Kind { File, Group, Dataset, Dataspace, Attribute, PropList, Datatype };

  Handle() = default;
  Handle(hid id, Kind kind) : id_(id), kind_(kind) {}
  Handle(Handle&& other) noexcept;
  Handle& operator=(Handle&& other) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle();

  hid id() const { return id_; }
  bool valid() const { return id_ >= 0; }
  Kind kind() const { return kind_; }
  /// Closes now; throws tg::Error when HDF5 reports a failure (for a file: data not written).
  void close();
  /// Gives up ownership without closing.
  hid release();

 private:
  hid id_ = -1;
  Kind kind_ = Kind::PropList;
};

/// A property list (file/dataset creation or access). Only created by this layer's .cpp; exposed so
/// that callers can hold one.
class PropList : public Handle {
 public:
  PropList() = default;
  explicit PropList(hid id) : Handle(id, Kind::PropList) {}
};

/// The shape of a dataset or of a buffer in memory, and a selection of its elements.
class Dataspace : public Handle {
 public:
  Dataspace() = default;
  explicit Dataspace(hid id) : Handle(id, Kind::Dataspace) {}

  /// A simple dataspace with these dimensions; an empty shape gives a scalar dataspace.
  static Dataspace simple(const Shape& dims);
  static Dataspace scalar();

  Shape dims() const;
  int64_t rank() const;
  /// Number of elements selected (all of them after creation).
  int64_t selected() const;
  void select_all();
  void select_none();
  /// Selects the block [start, start + count) (one entry per dimension). With add, the block is
  /// added to the current selection (H5S_SELECT_OR); otherwise it replaces it. Note that HDF5
  /// transfers the elements of a selection in ascending file order, whatever order blocks were
  /// added in.
  void select_block(const Shape& start, const Shape& count, bool add = false);
  /// Selects rows [start, start + count) of the first dimension and everything of the others.
  void select_rows(int64_t start, int64_t count, bool add = false);
};

class Attribute : public Handle {
 public:
  Attribute() = default;
  Attribute(hid id, std::string file, std::string owner, std::string name)
      : Handle(id, Kind::Attribute),
        file_(std::move(file)),
        owner_(std::move(owner)),
        name_(std::move(name)) {}

  const std::string& name() const { return name_; }
  /// Reads a scalar integer attribute (any stored integer type; throws for other classes).
  int64_t read_int() const;
  uint64_t read_uint() const;
  /// Reads a scalar float or integer attribute as double.
  double read_double() const;
  /// Reads a string attribute (fixed-length or variable-length).
  std::string read_string() const;

 private:
  std::string where() const;
  std::string file_, owner_, name_;
};

/// What a dataset stores, as far as this layer cares.
struct StoredType {
  enum class Class { Float, Integer, String, Other };
  Class cls = Class::Other;
  size_t size = 0;  ///< bytes per element
  /// "float32", "int64", "string", "other (8 bytes)"
  std::string describe() const;
};

/// Options of Group::create_dataset.
struct DatasetCreateOptions {
  Shape chunk;           ///< chunk dimensions; empty means contiguous storage (no filters possible)
  int gzip_level = 0;    ///< 0 = no compression, 1..9 = deflate (needs chunk)
  bool shuffle = false;  ///< byte shuffle filter before deflate (needs chunk)
  bool fletcher32 = false;  ///< checksum every chunk, so corruption is detected on read
  /// Bytes of the chunk cache of the returned handle (0 = HDF5's default, 1 MiB).
  size_t chunk_cache_bytes = 0;
};

/// Shared by groups (and the file, which is its root group) and datasets: a name and attributes.
class Object : public Handle {
 public:
  Object() = default;
  Object(hid id, Kind kind, std::string file, std::string name)
      : Handle(id, kind), file_(std::move(file)), name_(std::move(name)) {}

  /// The path of the file this object lives in.
  const std::string& file_name() const { return file_; }
  /// The object's path inside the file ("/" for the root group, "/train_state/step").
  const std::string& name() const { return name_; }

  bool has_attribute(const std::string& name) const;
  Attribute open_attribute(const std::string& name) const;
  /// Scalar attributes (an existing attribute of the same name is replaced).
  void set_attr_int(const std::string& name, int64_t value);
  void set_attr_uint(const std::string& name, uint64_t value);
  void set_attr_double(const std::string& name, double value);
  void set_attr_string(const std::string& name, const std::string& value);

  /// "'x' in 'data.h5'" for messages.
  std::string where() const;

 protected:
  std::string child_path(const std::string& child) const;
  std::string file_, name_;
};

/// Where a dataset's bytes lie in its file, for direct reads that bypass HDF5 (the batch loader
/// reads unfiltered data with parallel pread()s).
struct RawLayout {
  /// The stored bytes are exactly the elements of the requested memory type: no filters, an element
  /// type equal to the native one, no user block, and a contiguous layout or chunks that span whole
  /// rows (every dimension but the first complete).
  bool direct = false;
  std::string why_not;      ///< when !direct, the reason ("filters", "element type", ...)
  bool contiguous = false;  ///< one block of bytes at `offset`
  int64_t offset = -1;      ///< contiguous: file offset of element 0 (-1 when not allocated)
  int64_t chunk_rows = 0;   ///< chunked: rows per chunk
};

class Dataset : public Object {
 public:
  Dataset() = default;
  Dataset(hid id, std::string file, std::string name)
      : Object(id, Kind::Dataset, std::move(file), std::move(name)) {}

  Shape shape() const;
  /// The dataset's dataspace (a fresh copy; select on it to read part of the dataset).
  Dataspace space() const;
  StoredType stored_type() const;
  /// float32 or float64 for a stored IEEE float of 4 or 8 bytes; throws naming the dataset
  /// otherwise.
  DType float_dtype() const;
  /// The element type of a sample dataset: float32 / float64 for a stored IEEE float of 4 / 8
  /// bytes, float16 / bfloat16 for a 2-byte float of exactly that little-endian layout (as h5py
  /// and numpy write float16; bfloat16 as the same custom float with 8 exponent and 7 mantissa
  /// bits, bias 127). Recognised by the type's description, not by a name. Throws naming the
  /// dataset, the supported types and what the type is otherwise.
  ElementType element_type() const;
  /// Chunk dimensions; empty when the dataset is not chunked.
  Shape chunk() const;
  /// How the bytes are stored, and whether they can be read directly as mem_type elements.
  RawLayout raw_layout(DType mem_type) const;
  RawLayout raw_layout(ElementType mem_type) const;
  /// File offset of the chunk whose first row is `row` (a multiple of the chunk's rows); -1 when
  /// the chunk is not allocated. Only for datasets chunked along the first dimension.
  int64_t chunk_offset(int64_t row) const;

  /// Reads the selected elements of file_space into the selected elements of mem_space, converting
  /// to mem_type. dst must hold mem_space's extent. what (e.g. "samples 3..7") is added to errors.
  void read(void* dst, DType mem_type, const Dataspace& mem_space, const Dataspace& file_space,
            const std::string& what = "") const;
  /// As above; a float16 / bfloat16 mem_type reads the stored 16-bit values as they are (HDF5
  /// converts nothing, so the dataset must be of that type: see element_type()).
  void read(void* dst, ElementType mem_type, const Dataspace& mem_space,
            const Dataspace& file_space, const std::string& what = "") const;
  /// Reads the whole dataset (dst holds numel elements of mem_type).
  void read(void* dst, DType mem_type) const;
  void write(const void* src, DType mem_type, const Dataspace& mem_space,
             const Dataspace& file_space);
  void write(const void* src, DType mem_type);
  /// Writes elements of mem_type; 16-bit values are written as they are into a dataset of that
  /// type.
  void write(const void* src, ElementType mem_type, const Dataspace& mem_space,
             const Dataspace& file_space);

  /// The whole float dataset as a CPU tensor of its stored dtype.
  Tensor read_tensor() const;
  /// A scalar string dataset's value (variable-length, or fixed-length with any padding: null-
  /// terminated, null-padded or space-padded as h5py and Fortran write them), exactly.
  std::string read_string() const;

  /// Bytes of the whole dataset as elements of elem_size bytes; throws tg::Error naming the dataset
  /// and its shape when that exceeds 2^63 - 1.
  int64_t nbytes(size_t elem_size) const;
  /// Throws tg::Error naming the dataset when its data cannot be read: it has elements but no
  /// storage was ever allocated (declared, never written: it would read as fill values), or it
  /// needs a filter (compression) that this HDF5 library does not have and that is not optional.
  void check_readable() const;
  /// The filters of the dataset that this HDF5 library cannot apply, e.g. "HDF5 filter 32001
  /// ('blosc', optional)"; with required_only, only those not marked optional.
  std::vector<std::string> unavailable_filters(bool required_only = false) const;
};

/// What a link points to. BrokenLink: a soft or external link whose target does not exist.
enum class ObjectKind { None, Group, Dataset, BrokenLink, Other };

class Group : public Object {
 public:
  Group() = default;
  Group(hid id, std::string file, std::string name, Kind kind = Kind::Group)
      : Object(id, kind, std::move(file), std::move(name)) {}

  /// What the link `name` (a direct child, no '/') points to; None when there is no such link.
  ObjectKind kind_of(const std::string& name) const;
  bool has(const std::string& name) const { return kind_of(name) != ObjectKind::None; }
  /// Names of the direct children, in creation order when the group tracks it, else by name.
  std::vector<std::string> children() const;
  /// What the link `name` is, for messages: "a hard link", "a soft link to '/data/x'", "an
  /// external link to '/x' in 'other.h5'".
  std::string describe_link(const std::string& name) const;

  Group open_group(const std::string& name) const;
  /// Creates a group that tracks the creation order of its links.
  Group create_group(const std::string& name);
  Dataset open_dataset(const std::string& name) const;
  /// Opens a dataset with a chunk cache of cache_bytes (for a reader of chunked data).
  Dataset open_dataset(const std::string& name, size_t cache_bytes) const;
  /// Creates a dataset of the given element type (stored little-endian IEEE) and shape.
  Dataset create_dataset(const std::string& name, DType type, const Shape& shape,
                         const DatasetCreateOptions& options = {});
  /// As above, for any element type (float16 / bfloat16 described as in Dataset::element_type).
  Dataset create_dataset(const std::string& name, ElementType type, const Shape& shape,
                         const DatasetCreateOptions& options = {});
  /// Creates a dataset holding t (copied to the host if needed), contiguous, dtype preserved.
  Dataset write_tensor(const std::string& name, const Tensor& t);
  /// Creates a scalar fixed-length string dataset (h5py reads it as bytes).
  Dataset write_string(const std::string& name, const std::string& value);
};

class File : public Group {
 public:
  File() = default;

  /// Opens an existing file. Errors say whether the file is missing, not HDF5, or
  /// truncated/corrupt.
  static File open(const std::string& path, bool writable = false);
  /// Creates a file, replacing an existing one. The root group tracks link creation order.
  static File create(const std::string& path);
  /// True when path exists and starts with an HDF5 signature (no exception for missing files).
  static bool is_hdf5(const std::string& path);

  const std::string& path() const { return file_; }
  /// Writes buffered data to the file.
  void flush();
  /// Flushes and closes now, throwing when either fails (the destructor only logs). Close every
  /// dataset, group and attribute of the file first: HDF5 keeps the file open while they live.
  void close();

 private:
  File(hid id, std::string path) : Group(id, std::move(path), "/", Kind::File) {}
};

/// An HDF5 file written under a temporary name and moved over its destination only when complete,
/// so that a crash or an error while writing leaves any previous file at path intact.
///
/// The file is created as `path + ".tmp-<pid>-<n>"`, after removing the stale temporaries of path
/// (remove_stale_temporaries). commit() closes it, flushes it to disk (fsync) and renames it over
/// path (then syncs the directory); it refuses a file whose writing failed (see Handle). Destroying
/// an AtomicFile that was not committed discards its unwritten data (nothing more is written to
/// disk), closes it and removes the temporary file.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  File& file() { return file_; }
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }
  /// Closes the file (every object of it must be closed already: an error otherwise), syncs and
  /// renames it into place.
  void commit();
  /// Closes and removes the temporary file (the destructor does this when not committed). Objects
  /// of the file may still be open: their later closes write nothing to disk.
  void abandon() noexcept;

 private:
  std::string path_, temp_;
  File file_;
  bool done_ = false;
};

}  // namespace tg::io::h5

namespace tg::io {

/// Deletes the temporaries `<final_path>.tmp-<pid>-<n>` that AtomicFile left behind in processes
/// that no longer run (killed before they could remove them): those whose pid names no live
/// process (kill(pid, 0) fails with ESRCH). Temporaries of live processes, this one included, are
/// kept. Errors are ignored (best effort). Note: a process of another pid namespace that writes
/// to the same folder looks dead from here.
void remove_stale_temporaries(const std::string& final_path);

}  // namespace tg::io
