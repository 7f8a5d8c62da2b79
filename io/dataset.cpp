// Dataset files: inspection, the prefetching batch reader and the writers (see io/dataset.h).
//
// Direct reads: for unfiltered data whose stored element type equals the batch dtype, the rows'
// file offsets come from HDF5 once (contiguous: one base offset; chunked by rows: one lookup per
// chunk, cached) and the bytes are read with pread() by io_threads threads, each checking its part
// for NaN/Inf right after reading it (while it is in cache). Anything else goes through H5Dread.
//
// Reader threads: the caller's thread and, with prefetch, one worker. They share two streams
// (training and validation), each with a plan (the row sets of its batches), a read cursor, a
// delivered count and one ready slot, all under mu_. The worker reads batch `to_read` of a stream
// when its slot is empty and the caller has taken every earlier batch (to_read == delivered), so
// exactly one batch is read ahead of the one the caller holds (double buffering). Restarting a
// stream bumps its generation; a batch read for an older generation is dropped. HDF5 calls are
// serialised by the io/hdf5 layer's lock.
#include "dataset.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <numeric>
#include <thread>

#include "../core/rng.h"
#include "../core/size.h"
#include "hdf5.h"

namespace tg::io {

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s.empty() ? "nothing" : s;
}

/// Opens dataset `name` of f and checks rank 4, dims >= 1, a supported element type, a size in
/// bytes that fits in 64 bits, allocated storage and available filters.
h5::Dataset open_sample_dataset(const h5::File& f, const std::string& name, Shape* shape,
                                ElementType* type) {
  const std::string& path = f.path();
  h5::ObjectKind k = f.kind_of(name);
  TG_CHECK(k != h5::ObjectKind::None, "dataset: no dataset '", name, "' in '", path,
           "' (its root holds: ", join(f.children()), ")");
  TG_CHECK(k != h5::ObjectKind::BrokenLink, "dataset: '", name, "' in '", path,
           "' is a broken link: ", f.describe_link(name), ", which does not exist");
  TG_CHECK(k == h5::ObjectKind::Dataset, "dataset: '", name, "' in '", path, "' is not a dataset");
  h5::Dataset d = f.open_dataset(name);
  Shape s = d.shape();
  TG_CHECK(s.size() == 4, "dataset '", name, "' in '", path,
           "': expected rank 4 (N, C, H, W), got ", s.size(), " (", s, ")");
  for (int64_t v : s) {
    TG_CHECK(v >= 1, "dataset '", name, "' in '", path, "': every dimension must be >= 1, got ", s);
  }
  *type = d.element_type();
  d.nbytes(sizeof(double));  // as float64 batches, the largest element type
  d.check_readable();
  *shape = s;
  return d;
}

uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// (start, count) of each run of consecutive values of a sorted, duplicate-free list.
std::vector<std::pair<int64_t, int64_t>> runs_of(const std::vector<int64_t>& rows) {
  std::vector<std::pair<int64_t, int64_t>> runs;
  for (int64_t r : rows) {
    if (!runs.empty() && runs.back().first + runs.back().second == r) {
      ++runs.back().second;
    } else {
      runs.emplace_back(r, 1);
    }
  }
  return runs;
}

std::string describe_rows(const std::vector<int64_t>& rows) {
  if (rows.empty()) return "no samples";
  if (rows.back() - rows.front() + 1 == int64_t(rows.size())) {
    return "samples " + std::to_string(rows.front()) + ".." + std::to_string(rows.back());
  }
  return std::to_string(rows.size()) + " samples between " + std::to_string(rows.front()) +
         " and " + std::to_string(rows.back());
}

/// Index of the first NaN or Inf of p[0, n), or -1. Blocks of branch-free compares (vectorisable).
template <typename T>
int64_t first_nonfinite(const T* p, int64_t n) {
  constexpr int64_t kBlock = 4096;
  const T big = std::numeric_limits<T>::max();
  for (int64_t b = 0; b < n; b += kBlock) {
    int64_t e = std::min(n, b + kBlock);
    int bad = 0;
    for (int64_t i = b; i < e; ++i) bad |= !(std::fabs(p[i]) <= big);
    if (bad) {
      for (int64_t i = b; i < e; ++i) {
        if (!(std::fabs(p[i]) <= big)) return i;
      }
    }
  }
  return -1;
}

/// Index of the first non-finite element of a host tensor, and its value; -1 when all are finite.
int64_t find_nonfinite(const Tensor& t, double* value) {
  return dispatch_dtype(t.dtype(), [&](auto tag) -> int64_t {
    using T = decltype(tag);
    const T* p = static_cast<const T*>(t.raw_data());
    int64_t i = first_nonfinite(p, t.numel());
    if (i >= 0) *value = double(p[i]);
    return i;
  });
}

/// Throws for the non-finite value v at flat element `elem` of the batch's sample `row` (file row).
[[noreturn]] void throw_nonfinite(const std::string& name, const std::string& path, int64_t row,
                                  double v, int64_t elem, int64_t per) {
  TG_THROW("dataset '", name, "' in '", path, "': sample ", row, " has a non-finite value (", v,
           ") at element ", elem, " of ", per, " (flat index within the sample)");
}

/// Index of the first NaN/Inf of n stored elements of type t at p, and its value; -1 when none.
int64_t first_nonfinite_stored(ElementType t, const void* p, int64_t n, double* value) {
  if (is_half_width(t)) {
    const auto* h = static_cast<const uint16_t*>(p);
    const int64_t i = first_nonfinite_half(t, h, size_t(n));
    if (i >= 0) *value = double(half_bits::to_float(t, h[i]));
    return i;
  }
  if (t == ElementType::Float32) {
    const auto* f = static_cast<const float*>(p);
    const int64_t i = first_nonfinite(f, n);
    if (i >= 0) *value = double(f[i]);
    return i;
  }
  const auto* d = static_cast<const double*>(p);
  const int64_t i = first_nonfinite(d, n);
  if (i >= 0) *value = d[i];
  return i;
}

/// Widens n 16-bit values of type t into element `elem0` onwards of the host tensor dst.
void widen_into(ElementType t, const uint16_t* src, const Tensor& dst, int64_t elem0, size_t n) {
  dispatch_dtype(dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    widen_half(t, src, static_cast<T*>(dst.raw_data()) + elem0, n);
  });
}

Shape with_rows(const Shape& full, int64_t rows) {
  Shape s = full;
  s[0] = rows;
  return s;
}

/// Host buffers for batches, reused once nobody else references them.
class BufferPool {
 public:
  Tensor get(const Shape& shape, DType dtype, bool pinned) {
    std::lock_guard<std::mutex> lock(mu_);
    int free_slot = -1;
    for (size_t i = 0; i < items_.size(); ++i) {
      if (!is_free(items_[i])) continue;
      if (items_[i].shape() == shape && items_[i].dtype() == dtype) return items_[i];
      free_slot = int(i);
    }
    Tensor t = pinned ? Tensor::empty_pinned(shape, dtype) : Tensor::empty(shape, dtype);
    if (items_.size() < kMaxBuffers) {
      items_.push_back(t);
    } else if (free_slot >= 0) {
      items_[size_t(free_slot)] = t;
    }
    return t;
  }

 private:
  // Free when the pool's handle is the only one to the tensor and to its storage (views share it).
  static bool is_free(const Tensor& t) {
    return t.impl().use_count() == 1 && t.impl()->storage.use_count() == 1;
  }
  static constexpr size_t kMaxBuffers = 16;
  std::mutex mu_;
  std::vector<Tensor> items_;
};

/// The largest piece of a row one pread() reads (and its thread then checks for NaN/Inf).
constexpr size_t kSegmentBytes = size_t(1) << 20;

/// A piece of a batch read directly: `bytes` bytes at file offset `offset` into `dst`, holding
/// elements [elem0, elem0 + bytes / element size) of batch row `row`.
struct Segment {
  int64_t offset;
  char* dst;
  size_t bytes;
  size_t row;
  int64_t elem0;
};

void pread_fully(int fd, char* dst, size_t bytes, int64_t offset, const std::string& path) {
  size_t done = 0;
  while (done < bytes) {
    ssize_t n = ::pread(fd, dst + done, bytes - done, off_t(offset + int64_t(done)));
    if (n < 0 && errno == EINTR) continue;
    TG_CHECK(n >= 0, "dataset: reading '", path, "' at offset ", offset + int64_t(done),
             " failed: ", std::strerror(errno));
    TG_CHECK(n > 0, "dataset: '", path, "' ends at offset ", offset + int64_t(done),
             " before the data does (truncated file?)");
    done += size_t(n);
  }
}

}  // namespace

DatasetInfo inspect_dataset(const std::string& path, const std::string& x_name,
                            const std::string& y_name) {
  h5::File f = h5::File::open(path);
  DatasetInfo info;
  open_sample_dataset(f, x_name, &info.x_shape, &info.x_type);
  open_sample_dataset(f, y_name, &info.y_shape, &info.y_type);
  TG_CHECK(info.x_shape[0] == info.y_shape[0], "dataset: '", x_name, "' and '", y_name, "' in '",
           path, "' have different numbers of samples: ", info.x_shape[0], " (", info.x_shape,
           ") vs ", info.y_shape[0], " (", info.y_shape, ")");
  return info;
}

// ---- DatasetReader ------------------------------------------------------------------------------

struct DatasetReader::Impl {
  struct Stream {
    bool active = false;
    int64_t epoch = 0;
    std::vector<std::vector<int64_t>> batches;  // sorted file rows of each batch
    size_t to_read = 0;                         // next batch the worker reads
    size_t delivered = 0;                       // batches handed to the caller
    bool ready = false;
    Batch slot;
    std::exception_ptr error;
    uint64_t generation = 0;
  };
  static constexpr int kTrain = 0, kVal = 1;

  DatasetReaderOptions opt;
  DatasetInfo info;
  int64_t n = 0, n_val = 0, n_train = 0;
  h5::File file;
  h5::Dataset xds, yds;
  mutable BufferPool pool;

  /// Direct (pread) access to one dataset.
  struct Direct {
    bool ok = false;
    std::string why_not;
    h5::RawLayout layout;
    int64_t row_bytes = 0;
    mutable std::vector<int64_t> chunk_addr;  // by chunk; -2 = not looked up, -1 = not allocated
  };
  Direct xdirect, ydirect;
  int fd = -1;
  int io_threads = 1;
  mutable std::mutex chunk_mu;

  ~Impl() {
    if (fd >= 0) ::close(fd);
  }

  std::mutex mu;
  std::condition_variable cv;
  Stream streams[2];
  bool stop = false;
  std::thread worker;

  /// Reads sorted, duplicate-free rows into (pooled or fresh) host tensors and checks them; with
  /// keep_half, half-width data stays as stored (Batch::x_half / y_half).
  Batch read_sorted(const std::vector<int64_t>& rows, bool pooled, bool keep_half) const {
    Batch out;
    read_dataset(xdirect, xds, info.x_type, info.x_shape, rows, pooled, keep_half, opt.x_name,
                 out.x, out.x_half);
    read_dataset(ydirect, yds, info.y_type, info.y_shape, rows, pooled, keep_half, opt.y_name,
                 out.y, out.y_half);
    out.indices = rows;
    return out;
  }

  /// The rows of one dataset: into `out` (opt.dtype), or for half-width data into `half` when
  /// keep_half (else through a pooled buffer of the raw values that is widened into `out`).
  void read_dataset(const Direct& d, const h5::Dataset& ds, ElementType stored, const Shape& full,
                    const std::vector<int64_t>& rows, bool pooled, bool keep_half,
                    const std::string& name, Tensor& out, HalfRows& half) const {
    const Shape shape = with_rows(full, int64_t(rows.size()));
    const bool is_half = is_half_width(stored);
    if (!is_half || !keep_half) out = allocate(shape, opt.dtype, pooled, name);
    // Where the stored values land: the batch tensor itself, or a buffer of 16-bit values.
    ElementType mem = element_type_of(opt.dtype);
    void* dst = is_half ? nullptr : out.raw_data();
    if (is_half) {
      const int64_t n = checked_numel(shape);
      half.type = stored;
      half.shape = shape;
      half.bytes = allocate({(n + 1) / 2}, DType::Float32, pooled || keep_half, name);
      mem = stored;
      dst = half.bytes.raw_data();
    }
    const Tensor* widen_to = is_half && !keep_half ? &out : nullptr;
    if (!read_direct(d, ds, rows, static_cast<char*>(dst), mem, widen_to, name)) {
      read_rows(ds, rows, dst, mem, shape);
      const int64_t n = checked_numel(shape), per = n / shape[0];
      double v = 0;
      const int64_t i = opt.check_finite ? first_nonfinite_stored(mem, dst, n, &v) : -1;
      if (i >= 0) throw_nonfinite(name, opt.path, rows[size_t(i / per)], v, i % per, per);
      if (widen_to) widen_into(stored, half.bits(), out, 0, size_t(n));
    }
    if (widen_to) half = HalfRows();  // widened: its buffer goes back to the pool
  }

  /// A batch buffer of this shape for dataset `name`; failures name the dataset and the shape.
  Tensor allocate(const Shape& shape, DType dtype, bool pooled, const std::string& name) const {
    const std::string what =
        "a batch of shape " + shape_str(shape) + " of dataset '" + name + "' in '" + opt.path + "'";
    try {
      return pooled ? pool.get(shape, dtype, opt.pinned) : Tensor::empty(shape, dtype);
    } catch (const std::bad_alloc&) {
      TG_THROW("dataset: cannot allocate ", what, ": out of memory");
    } catch (const Error& e) {
      TG_THROW("dataset: cannot allocate ", what, ": ", e.what());
    }
  }

  /// Bytes of one sample of a dataset of this shape as elements of elem_size bytes (checked).
  int64_t row_bytes_of(const Shape& shape, const std::string& name, size_t elem_size) const {
    const std::string what = "dataset '" + name + "' in '" + opt.path + "' of shape " +
                             shape_str(shape) + ": bytes per sample";
    int64_t n = int64_t(elem_size);
    for (size_t i = 1; i < shape.size(); ++i) n = checked_mul(n, shape[i], what);
    return n;
  }

  /// Checks that a batch of batch_size rows (or all of them) of each dataset can be held.
  void check_batch_memory(const Shape& shape, const std::string& name) const {
    const int64_t rows = std::min(opt.batch_size, shape[0]);
    Shape batch = with_rows(shape, rows);
    const std::string what =
        "a batch of shape " + shape_str(batch) + " of dataset '" + name + "' in '" + opt.path + "'";
    h5::check_fits_in_memory(
        checked_mul(row_bytes_of(shape, name, dtype_size(opt.dtype)), rows, what), what);
  }

  /// Half-width data is read directly as its stored values; other data when stored as opt.dtype.
  void setup_direct(Direct& d, const h5::Dataset& ds, const Shape& shape, ElementType stored) {
    if (!opt.direct_io) {
      d.why_not = "direct_io is off";
      return;
    }
    const ElementType mem = is_half_width(stored) ? stored : element_type_of(opt.dtype);
    d.layout = ds.raw_layout(mem);
    if (!d.layout.direct) {
      d.why_not = d.layout.why_not;
      return;
    }
    if (d.layout.contiguous && d.layout.offset < 0) {
      d.why_not = "no data allocated";
      return;
    }
    d.row_bytes = row_bytes_of(shape, ds.name().substr(1), element_size(mem));
    if (!d.layout.contiguous) {
      d.chunk_addr.assign(size_t((shape[0] + d.layout.chunk_rows - 1) / d.layout.chunk_rows), -2);
    }
    d.ok = true;
  }

  /// Reads rows (elements of type mem) with parallel pread()s into base and checks them; with
  /// widen_to, each thread also widens its 16-bit part into that tensor (while it is in cache).
  /// False when the dataset does not qualify (then nothing was read).
  bool read_direct(const Direct& d, const h5::Dataset& ds, const std::vector<int64_t>& rows,
                   char* base, ElementType mem, const Tensor* widen_to,
                   const std::string& name) const {
    if (!d.ok || fd < 0) return false;
    std::vector<int64_t> offsets(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      if (d.layout.contiguous) {
        offsets[i] = d.layout.offset + rows[i] * d.row_bytes;
        continue;
      }
      const int64_t r = d.layout.chunk_rows, c = rows[i] / r;
      int64_t addr;
      {
        std::lock_guard<std::mutex> lock(chunk_mu);
        int64_t& cached = d.chunk_addr[size_t(c)];
        if (cached == -2) cached = ds.chunk_offset(c * r);
        addr = cached;
      }
      if (addr < 0) return false;  // an unwritten chunk: HDF5 supplies its fill value
      offsets[i] = addr + (rows[i] % r) * d.row_bytes;
    }
    // Cut rows into segments of at most kSegmentBytes (whole elements) so that threads share big
    // rows too, and each segment is checked while it is still in the core's L2 cache.
    const size_t esize = element_size(mem);
    const size_t max_seg = std::max<size_t>(esize, kSegmentBytes / esize * esize);
    const int64_t per = d.row_bytes / int64_t(esize);
    std::vector<Segment> segs;
    for (size_t i = 0; i < rows.size(); ++i) {
      for (size_t pos = 0; pos < size_t(d.row_bytes); pos += max_seg) {
        size_t len = std::min(max_seg, size_t(d.row_bytes) - pos);
        segs.push_back({offsets[i] + int64_t(pos), base + i * size_t(d.row_bytes) + pos, len, i,
                        int64_t(pos / esize)});
      }
    }
    // bad[s]: index of the first non-finite element of segment s, or -1.
    std::vector<int64_t> bad(segs.size(), -1);
    std::vector<double> bad_value(segs.size(), 0.0);
    // Threads take segments in turn from a shared counter (a slow or descheduled thread delays
    // the batch by one segment, not by its share of the batch).
    std::atomic<size_t> next_seg{0};
    auto work = [&] {
      for (size_t s; (s = next_seg.fetch_add(1, std::memory_order_relaxed)) < segs.size();) {
        const Segment& g = segs[s];
        const size_t n = g.bytes / esize;
        pread_fully(fd, g.dst, g.bytes, g.offset, opt.path);
        if (opt.check_finite)
          bad[s] = first_nonfinite_stored(mem, g.dst, int64_t(n), &bad_value[s]);
        if (widen_to && bad[s] < 0) {
          widen_into(mem, reinterpret_cast<const uint16_t*>(g.dst), *widen_to,
                     int64_t(g.row) * per + g.elem0, n);
        }
      }
    };
    // Threads only for enough bytes to pay for them (small batches of CPU training are read in
    // about a millisecond, and extra threads would only take cores from the training step).
    const size_t total = rows.size() * size_t(d.row_bytes);
    const size_t per_thread = size_t(std::max<int64_t>(opt.io_thread_bytes, 1));
    const size_t by_bytes = std::max<size_t>(1, total / per_thread);
    const size_t nthreads = std::min({segs.size(), size_t(io_threads), by_bytes});
    if (nthreads <= 1) {
      work();
    } else {
      std::vector<std::thread> threads;
      std::vector<std::exception_ptr> errors(nthreads);
      for (size_t t = 0; t < nthreads; ++t) {
        threads.emplace_back([&, t] {
          try {
            work();
          } catch (...) {
            errors[t] = std::current_exception();
          }
        });
      }
      for (auto& th : threads) th.join();
      for (auto& e : errors) {
        if (e) std::rethrow_exception(e);
      }
    }
    for (size_t s = 0; s < segs.size(); ++s) {
      if (bad[s] >= 0) {
        throw_nonfinite(name, opt.path, rows[segs[s].row], bad_value[s], segs[s].elem0 + bad[s],
                        per);
      }
    }
    return true;
  }

  /// One H5Dread per run of consecutive rows, each a regular hyperslab into the matching rows of
  /// dst (a buffer of `shape`, elements of type mem). (A single read of the OR-ed runs is ~100x
  /// slower in HDF5 1.10: an irregular selection is transferred in innermost-dimension pieces.)
  /// Rows land in dst in ascending order.
  static void read_rows(const h5::Dataset& ds, const std::vector<int64_t>& rows, void* dst,
                        ElementType mem, const Shape& shape) {
    h5::Dataspace fs = ds.space();
    h5::Dataspace ms = h5::Dataspace::simple(shape);
    const std::string what = describe_rows(rows);
    int64_t pos = 0;
    for (const auto& [start, count] : runs_of(rows)) {
      fs.select_rows(start, count);
      ms.select_rows(pos, count);
      ds.read(dst, mem, ms, fs, what);
      pos += count;
    }
  }

  /// A stream whose next batch the worker may read now, or -1. Validation first: when it is active,
  /// the caller is waiting on it.
  int pick() const {
    for (int k : {kVal, kTrain}) {
      const Stream& s = streams[k];
      if (s.active && !s.ready && s.to_read == s.delivered && s.to_read < s.batches.size())
        return k;
    }
    return -1;
  }

  void worker_loop() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      int k = -1;
      cv.wait(lock, [&] { return stop || (k = pick()) >= 0; });
      if (stop) return;
      Stream& s = streams[k];
      const size_t b = s.to_read++;
      const uint64_t generation = s.generation;
      const int64_t epoch = s.epoch;
      const bool keep_half = opt.keep_half_width;
      std::vector<int64_t> rows = s.batches[b];
      lock.unlock();
      Batch out;
      std::exception_ptr error;
      try {
        out = read_sorted(rows, true, keep_half);
        out.epoch = k == kVal ? -1 : epoch;
        out.index_in_epoch = int64_t(b);
        out.validation = k == kVal;
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      if (s.generation != generation) continue;  // the stream was restarted meanwhile
      s.slot = std::move(out);
      s.error = error;
      s.ready = true;
      cv.notify_all();
    }
  }

  void restart(int k, int64_t epoch, std::vector<std::vector<int64_t>> batches, size_t skip) {
    {
      std::lock_guard<std::mutex> lock(mu);
      Stream& s = streams[k];
      s.active = true;
      s.epoch = epoch;
      s.batches = std::move(batches);
      s.to_read = s.delivered = skip;
      s.ready = false;
      s.slot = Batch();
      s.error = nullptr;
      ++s.generation;
    }
    cv.notify_all();
  }

  bool next(int k, Batch& out) {
    out = Batch();  // give its buffers back to the pool before the worker needs them
    std::unique_lock<std::mutex> lock(mu);
    Stream& s = streams[k];
    TG_CHECK(s.active, k == kTrain ? "DatasetReader: call start_epoch() before next()"
                                   : "DatasetReader: call start_val() before next_val()");
    if (s.delivered >= s.batches.size()) return false;
    if (!opt.prefetch) {
      const size_t b = s.delivered++;
      s.to_read = s.delivered;
      std::vector<int64_t> rows = s.batches[b];
      const int64_t epoch = s.epoch;
      const bool keep_half = opt.keep_half_width;
      lock.unlock();
      out = read_sorted(rows, true, keep_half);
      out.epoch = k == kVal ? -1 : epoch;
      out.index_in_epoch = int64_t(b);
      out.validation = k == kVal;
      return true;
    }
    cv.wait(lock, [&] { return s.ready; });
    Batch b = std::move(s.slot);
    s.slot = Batch();
    std::exception_ptr error = s.error;
    s.error = nullptr;
    s.ready = false;
    ++s.delivered;
    lock.unlock();
    cv.notify_all();
    if (error) std::rethrow_exception(error);
    out = std::move(b);
    return true;
  }
};

DatasetReader::DatasetReader(DatasetReaderOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.opt = std::move(options);
  const DatasetReaderOptions& o = m.opt;
  TG_CHECK(!o.path.empty(), "DatasetReader: options.path is empty");
  TG_CHECK(o.batch_size >= 1, "DatasetReader: batch_size must be >= 1, got ", o.batch_size);
  TG_CHECK(o.shard_count >= 1 && o.shard_index >= 0 && o.shard_index < o.shard_count,
           "DatasetReader: expected 0 <= shard_index < shard_count, got shard ", o.shard_index,
           " of ", o.shard_count);
  TG_CHECK(o.batch_size >= o.shard_count, "DatasetReader: the global batch_size ", o.batch_size,
           " is smaller than the number of shards ", o.shard_count);
  TG_CHECK(o.val_fraction >= 0.0 && o.val_fraction < 1.0,
           "DatasetReader: val_fraction must be in [0, 1), got ", o.val_fraction);
  m.file = h5::File::open(o.path);
  m.xds = open_sample_dataset(m.file, o.x_name, &m.info.x_shape, &m.info.x_type);
  m.yds = open_sample_dataset(m.file, o.y_name, &m.info.y_shape, &m.info.y_type);
  TG_CHECK(m.info.x_shape[0] == m.info.y_shape[0], "dataset: '", o.x_name, "' and '", o.y_name,
           "' in '", o.path, "' have different numbers of samples: ", m.info.x_shape[0], " (",
           m.info.x_shape, ") vs ", m.info.y_shape[0], " (", m.info.y_shape, ")");
  m.check_batch_memory(m.info.x_shape, o.x_name);
  m.check_batch_memory(m.info.y_shape, o.y_name);
  m.n = m.info.num_samples();
  m.n_val = int64_t(std::floor(double(m.n) * o.val_fraction));
  m.n_train = m.n - m.n_val;
  TG_CHECK(m.n_train >= 1, "DatasetReader: val_fraction ", o.val_fraction,
           " leaves no training samples of the ", m.n, " in '", o.path, "'");
  TG_CHECK(o.io_threads >= 0, "DatasetReader: io_threads must be >= 0, got ", o.io_threads);
  m.io_threads = o.io_threads > 0 ? o.io_threads
                                  : int(std::clamp(std::thread::hardware_concurrency(), 1u, 8u));
  m.setup_direct(m.xdirect, m.xds, m.info.x_shape, m.info.x_type);
  m.setup_direct(m.ydirect, m.yds, m.info.y_shape, m.info.y_type);
  if (m.xdirect.ok || m.ydirect.ok) {
    m.fd = ::open(o.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (m.fd < 0) {
      m.xdirect.ok = m.ydirect.ok = false;
      m.xdirect.why_not = m.ydirect.why_not = "cannot open the file for direct reads";
    }
  }
  if (o.prefetch) m.worker = std::thread([&m] { m.worker_loop(); });
}

DatasetReader::~DatasetReader() {
  if (!impl_) return;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  if (impl_->worker.joinable()) impl_->worker.join();
}

bool DatasetReader::direct_x() const { return impl_->xdirect.ok; }
bool DatasetReader::direct_y() const { return impl_->ydirect.ok; }

std::string DatasetReader::direct_info() const {
  auto one = [](const std::string& name, const Impl::Direct& d) {
    return "'" + name + "': " + (d.ok ? std::string("direct") : "through HDF5 (" + d.why_not + ")");
  };
  return one(impl_->opt.x_name, impl_->xdirect) + ", " + one(impl_->opt.y_name, impl_->ydirect);
}

const DatasetReaderOptions& DatasetReader::options() const { return impl_->opt; }

void DatasetReader::set_keep_half_width(bool on) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->opt.keep_half_width = on;
}
const DatasetInfo& DatasetReader::info() const { return impl_->info; }
int64_t DatasetReader::num_samples() const { return impl_->n; }
int64_t DatasetReader::num_train() const { return impl_->n_train; }
int64_t DatasetReader::num_val() const { return impl_->n_val; }

int64_t DatasetReader::num_train_batches() const {
  const int64_t b = impl_->opt.batch_size;
  const int64_t rest = impl_->n_train % b;
  const bool keep_rest = !impl_->opt.drop_last && rest >= impl_->opt.shard_count;
  return impl_->n_train / b + (keep_rest ? 1 : 0);
}

int64_t DatasetReader::global_batch_rows(int64_t b) const {
  return std::min(impl_->opt.batch_size, impl_->n_train - b * impl_->opt.batch_size);
}

int64_t DatasetReader::num_val_batches() const {
  const int64_t b = impl_->opt.batch_size;
  return (impl_->n_val + b - 1) / b;
}

std::vector<int64_t> DatasetReader::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(size_t(impl_->n_train));
  std::iota(order.begin(), order.end(), int64_t(0));
  if (impl_->opt.shuffle) {
    Generator gen(splitmix64(impl_->opt.seed ^ splitmix64(uint64_t(epoch))));
    for (size_t i = order.size(); i > 1; --i) {
      std::swap(order[i - 1], order[size_t(gen.below(i))]);
    }
  }
  return order;
}

std::vector<std::vector<int64_t>> DatasetReader::epoch_batches(int64_t epoch) const {
  TG_CHECK(epoch >= 0, "DatasetReader: epoch must be >= 0, got ", epoch);
  const int64_t nb = num_train_batches();
  std::vector<int64_t> order = epoch_order(epoch);
  const size_t bs = size_t(impl_->opt.batch_size);
  std::vector<std::vector<int64_t>> batches(static_cast<size_t>(nb));
  for (size_t b = 0; b < batches.size(); ++b) {
    const size_t lo = b * bs, rows = std::min(order.size(), (b + 1) * bs) - lo;
    const size_t K = size_t(impl_->opt.shard_count), r = size_t(impl_->opt.shard_index);
    auto first = order.begin() + std::ptrdiff_t(lo + r * rows / K);
    auto last = order.begin() + std::ptrdiff_t(lo + (r + 1) * rows / K);
    batches[b].assign(first, last);
    std::sort(batches[b].begin(), batches[b].end());
  }
  return batches;
}

void DatasetReader::start_epoch(int64_t epoch, int64_t skip_batches) {
  TG_CHECK(epoch >= 0, "DatasetReader::start_epoch: epoch must be >= 0, got ", epoch);
  const int64_t nb = num_train_batches();
  TG_CHECK(skip_batches >= 0 && skip_batches <= nb,
           "DatasetReader::start_epoch: skip_batches must ", "be in [0, ", nb,
           "] (batches per epoch), got ", skip_batches);
  impl_->restart(Impl::kTrain, epoch, epoch_batches(epoch), size_t(skip_batches));
}

bool DatasetReader::next(Batch& out) { return impl_->next(Impl::kTrain, out); }

std::vector<std::vector<int64_t>> DatasetReader::val_batches() const {
  const int64_t bs = impl_->opt.batch_size;
  std::vector<std::vector<int64_t>> batches;
  for (int64_t start = impl_->n_train; start < impl_->n; start += bs) {
    std::vector<int64_t> rows(size_t(std::min(bs, impl_->n - start)));
    std::iota(rows.begin(), rows.end(), start);
    batches.push_back(std::move(rows));
  }
  return batches;
}

void DatasetReader::start_val() {
  TG_CHECK(impl_->n_val > 0, "DatasetReader::start_val: '", impl_->opt.path,
           "' has no validation set (val_fraction ", impl_->opt.val_fraction, " of ", impl_->n,
           " samples)");
  impl_->restart(Impl::kVal, -1, val_batches(), 0);
}

bool DatasetReader::next_val(Batch& out) { return impl_->next(Impl::kVal, out); }

Batch DatasetReader::read(const std::vector<int64_t>& indices) const {
  TG_CHECK(!indices.empty(), "DatasetReader::read: no indices given");
  for (int64_t i : indices) {
    TG_CHECK(i >= 0 && i < impl_->n, "DatasetReader::read: index ", i, " is outside [0, ", impl_->n,
             ") of '", impl_->opt.path, "'");
  }
  std::vector<int64_t> rows = indices;
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  Batch sorted = impl_->read_sorted(rows, false, false);
  if (rows == indices) return sorted;
  // Scatter the sorted rows into the requested order.
  Batch out;
  out.indices = indices;
  auto scatter = [&](const Tensor& src) {
    Tensor dst = Tensor::empty(with_rows(src.shape(), int64_t(indices.size())), src.dtype());
    const size_t row_bytes = src.nbytes() / rows.size();
    auto* from = static_cast<const char*>(src.raw_data());
    auto* to = static_cast<char*>(dst.raw_data());
    for (size_t i = 0; i < indices.size(); ++i) {
      size_t r = size_t(std::lower_bound(rows.begin(), rows.end(), indices[i]) - rows.begin());
      std::memcpy(to + i * row_bytes, from + r * row_bytes, row_bytes);
    }
    return dst;
  };
  out.x = scatter(sorted.x);
  out.y = scatter(sorted.y);
  return out;
}

// ---- DatasetWriter ------------------------------------------------------------------------------

struct DatasetWriter::Impl {
  DatasetWriterOptions opt;
  std::string path;
  Shape x_sample, y_sample;
  std::unique_ptr<h5::AtomicFile> file;
  h5::Dataset xds, yds;  // declared after file: closed before it
  bool closed = false;

  h5::Dataset create(const std::string& name, const Shape& sample, int64_t total) {
    Shape full = sample;
    full.insert(full.begin(), total);
    const std::string what =
        "DatasetWriter: dataset '" + name + "' of shape " + shape_str(full) + " in '" + path + "'";
    int64_t sample_bytes = int64_t(element_size(opt.dtype));
    for (int64_t d : sample) sample_bytes = checked_mul(sample_bytes, d, what + ": sample bytes");
    checked_mul(sample_bytes, total, what + ": bytes");
    int64_t rows = opt.chunk_rows;
    if (rows == 0) rows = std::max<int64_t>(1, (64 << 10) / sample_bytes);
    rows = std::min(rows, total);
    TG_CHECK(checked_mul(rows, sample_bytes, what + ": chunk bytes") < (int64_t(1) << 32),
             "DatasetWriter: a chunk of ", rows, " samples of ", sample_bytes, " bytes for '", name,
             "' exceeds HDF5's 4 GiB limit");
    Shape chunk = sample;
    chunk.insert(chunk.begin(), rows);
    h5::DatasetCreateOptions o;
    o.chunk = chunk;
    o.gzip_level = opt.compression_level;
    o.shuffle = opt.shuffle_filter && opt.compression_level > 0;  // only helps compression
    o.fletcher32 = opt.checksum;
    o.chunk_cache_bytes =
        size_t(std::clamp<int64_t>(checked_mul(4, rows * sample_bytes, what), 1 << 20, 256 << 20));
    return file->file().create_dataset(name, opt.dtype, full, o);
  }

  void write(h5::Dataset& ds, const Tensor& batch, int64_t row0, const std::string& name) {
    Tensor host = batch.is_cuda() ? batch.to(Device::CPU) : batch;
    if (opt.check_finite) {
      double v = 0;
      int64_t i = find_nonfinite(host, &v);
      if (i >= 0) {
        int64_t per = host.numel() / host.size(0);
        TG_THROW("DatasetWriter: '", path, "': ", name, " of sample ", row0 + i / per,
                 " has a non-finite value (", v, ") at element ", i % per);
      }
    }
    h5::Dataspace fs = ds.space();
    fs.select_rows(row0, host.size(0));
    h5::Dataspace ms = h5::Dataspace::simple(host.shape());
    if (!is_half_width(opt.dtype)) {
      ds.write(host.raw_data(), host.dtype(), ms, fs);
      return;
    }
    // Rounded here (HDF5's conversion to a custom float is slow): float64 input via float32.
    Tensor f32 = host.to(DType::Float32);
    const size_t n = size_t(f32.numel());
    std::vector<uint16_t> bits(n);
    narrow_to_half(opt.dtype, f32.data<float>(), bits.data(), n);
    if (opt.check_finite) {
      const int64_t i = first_nonfinite_half(opt.dtype, bits.data(), n);
      if (i >= 0) {
        const int64_t per = host.numel() / host.size(0);
        TG_THROW("DatasetWriter: '", path, "': ", name, " of sample ", row0 + i / per,
                 " has the value ", f32.data<float>()[i], " at element ", i % per,
                 ", outside the range of ", element_type_name(opt.dtype),
                 " (it would be stored as ", half_bits::to_float(opt.dtype, bits[size_t(i)]), ")");
      }
    }
    ds.write(bits.data(), opt.dtype, ms, fs);
  }
};

DatasetWriter::DatasetWriter(const std::string& path, const Shape& x_sample_shape,
                             const Shape& y_sample_shape, int64_t total_n,
                             const DatasetWriterOptions& options)
    : impl_(std::make_unique<Impl>()), total_(total_n) {
  Impl& m = *impl_;
  m.opt = options;
  m.path = path;
  m.x_sample = x_sample_shape;
  m.y_sample = y_sample_shape;
  TG_CHECK(total_n >= 1, "DatasetWriter: '", path, "': total_n must be >= 1, got ", total_n);
  for (const Shape* s : {&x_sample_shape, &y_sample_shape}) {
    for (int64_t d : *s) {
      TG_CHECK(d >= 1, "DatasetWriter: '", path, "': sample dimensions must be >= 1, got ", *s);
    }
  }
  for (const std::string* name : {&options.x_name, &options.y_name}) {
    TG_CHECK(!name->empty() && name->find('/') == std::string::npos, "DatasetWriter: '", path,
             "': dataset names must be non-empty and contain no '/', got '", *name, "'");
  }
  TG_CHECK(options.x_name != options.y_name, "DatasetWriter: '", path,
           "': x and y need different names, both are '", options.x_name, "'");
  TG_CHECK(options.compression_level >= 0 && options.compression_level <= 9, "DatasetWriter: '",
           path, "': compression_level must be in 0..9, got ", options.compression_level);
  TG_CHECK(options.chunk_rows >= 0, "DatasetWriter: chunk_rows must be >= 0, got ",
           options.chunk_rows);
  m.file = std::make_unique<h5::AtomicFile>(path);
  m.xds = m.create(options.x_name, x_sample_shape, total_n);
  m.yds = m.create(options.y_name, y_sample_shape, total_n);
}

DatasetWriter::~DatasetWriter() {
  // Unfinished: give the file up before its datasets close, so that they write nothing more.
  if (impl_ && impl_->file && !impl_->closed) impl_->file->abandon();
}

void DatasetWriter::append(const Tensor& x_batch, const Tensor& y_batch) {
  Impl& m = *impl_;
  TG_CHECK(!m.closed, "DatasetWriter::append: '", m.path, "' is already closed");
  TG_CHECK(x_batch.defined() && y_batch.defined(), "DatasetWriter::append: undefined tensor");
  auto check_shape = [&](const Tensor& t, const Shape& sample, const char* what) {
    Shape expected = sample;
    expected.insert(expected.begin(), t.dim() >= 1 ? t.size(0) : 1);
    TG_CHECK(t.dim() >= 1 && t.shape() == expected, "DatasetWriter::append: expected ", what,
             " of shape (B, ", shape_str(sample), "), got ", t.shape());
  };
  check_shape(x_batch, m.x_sample, "x");
  check_shape(y_batch, m.y_sample, "y");
  const int64_t b = x_batch.size(0);
  TG_CHECK(y_batch.size(0) == b, "DatasetWriter::append: x has ", b, " samples but y has ",
           y_batch.size(0));
  TG_CHECK(b >= 1 && written_ + b <= total_, "DatasetWriter::append: '", m.path, "': ", written_,
           " of ", total_, " samples written, cannot append ", b, " more");
  m.write(m.xds, x_batch, written_, m.opt.x_name);
  m.write(m.yds, y_batch, written_, m.opt.y_name);
  written_ += b;
}

void DatasetWriter::close() {
  Impl& m = *impl_;
  if (m.closed) return;
  TG_CHECK(written_ == total_, "DatasetWriter::close: '", m.path, "': only ", written_, " of ",
           total_, " samples were written");
  try {
    m.xds.close();
    m.yds.close();
  } catch (...) {
    m.file->abandon();
    throw;
  }
  m.file->commit();
  m.closed = true;
}

void write_dataset(const std::string& path, const Tensor& x, const Tensor& y,
                   const std::string& x_name, const std::string& y_name) {
  DatasetWriterOptions o;
  o.x_name = x_name;
  o.y_name = y_name;
  write_dataset(path, x, y, o);
}

void write_dataset(const std::string& path, const Tensor& x, const Tensor& y,
                   const DatasetWriterOptions& options) {
  TG_CHECK(x.defined() && y.defined(), "write_dataset: undefined tensor");
  TG_CHECK(x.dim() >= 1 && y.dim() >= 1 && x.size(0) == y.size(0),
           "write_dataset: x and y need the same first dimension (N), got ", x.shape(), " and ",
           y.shape());
  Shape xs(x.shape().begin() + 1, x.shape().end()), ys(y.shape().begin() + 1, y.shape().end());
  DatasetWriter w(path, xs, ys, x.size(0), options);
  w.append(x, y);
  w.close();
}

}  // namespace tg::io
