// Hostile and damaged inputs to io/ (issue 9): every crafted file is written here with the HDF5 C
// API, and every case must give a tg::Error that names the file, the dataset and its shape (never a
// crash, a wrapped size or silently wrong data). Also a full disk (a small tmpfs, where the test
// may mount one), stale temporaries of killed processes, and an interrupted dataset write.
#include <hdf5.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <mutex>

#include "io/checkpoint.h"
#include "io/dataset.h"
#include "io/hdf5.h"
#include "io/synthetic.h"
#include "test_utils.h"

namespace fs = std::filesystem;
using namespace tg;
using namespace tg::io;
using namespace tg::testing;

namespace {

constexpr int64_t k2_30 = int64_t(1) << 30, k2_31 = int64_t(1) << 31;

/// Holds the HDF5 layer's lock while the test calls the C API directly (see io/hdf5.h).
struct H5Lock {
  std::lock_guard<std::recursive_mutex> lock{h5::library_mutex()};
};

NamedTensors small_params() {
  return {{"conv.weight", Tensor::randn({4, 3, 3, 3}, 1)},
          {"conv.bias", Tensor::randn({4}, 2)},
          {"scale", Tensor::randn({4, 1, 1}, 3)}};
}

TrainState small_state() {
  TrainState st;
  st.step = 12;
  st.epoch = 1;
  st.batch_in_epoch = 2;
  st.seed = 7;
  st.config_json = "{\"lr\": 0.01, \"groups\": 4}";
  st.momentum_buffers = {{"conv.weight", Tensor::randn({4, 3, 3, 3}, 4)}};
  st.scalars = {{"best_val_loss", 0.5}, {"lr", 0.01}};
  return st;
}

/// x and y (N, 1, 2, 2) / (N, 1, 1, 1) written normally.
void write_small_data(const std::string& path, int64_t n = 4) {
  write_dataset(path, Tensor::randn({n, 1, 2, 2}, 11), Tensor::randn({n, 1, 1, 1}, 12));
}

/// A chunked float32 dataset that is created but never written (no storage allocated).
void declare_unwritten(h5::Group& g, const std::string& name, const Shape& shape,
                       const Shape& chunk) {
  h5::DatasetCreateOptions o;
  o.chunk = chunk;
  g.create_dataset(name, DType::Float32, shape, o);
}

/// A scalar fixed-length string of exactly bytes.size() bytes with the given padding, as an
/// attribute (attr) or a dataset of loc.
void write_fixed_string(hid_t loc, const char* name, const std::string& bytes, H5T_str_t pad,
                        bool attr) {
  H5Lock lock;
  hid_t t = H5Tcopy(H5T_C_S1);
  ASSERT_GE(H5Tset_size(t, bytes.size()), 0);
  ASSERT_GE(H5Tset_strpad(t, pad), 0);
  hid_t space = H5Screate(H5S_SCALAR);
  if (attr) {
    hid_t a = H5Acreate2(loc, name, t, space, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(a, 0);
    ASSERT_GE(H5Awrite(a, t, bytes.data()), 0);
    H5Aclose(a);
  } else {
    hid_t d = H5Dcreate2(loc, name, t, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(d, 0);
    ASSERT_GE(H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()), 0);
    H5Dclose(d);
  }
  H5Sclose(space);
  H5Tclose(t);
}

void write_variable_string(hid_t loc, const char* name, const std::string& value, bool attr) {
  H5Lock lock;
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  hid_t space = H5Screate(H5S_SCALAR);
  const char* p = value.c_str();
  if (attr) {
    hid_t a = H5Acreate2(loc, name, t, space, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(H5Awrite(a, t, &p), 0);
    H5Aclose(a);
  } else {
    hid_t d = H5Dcreate2(loc, name, t, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, &p), 0);
    H5Dclose(d);
  }
  H5Sclose(space);
  H5Tclose(t);
}

/// A filter that passes data through unchanged: registered while a test writes with it, then
/// unregistered, so that the file needs a filter this HDF5 library does not have.
size_t passthrough_filter(unsigned, size_t, const unsigned[], size_t nbytes, size_t*, void**) {
  return nbytes;
}
constexpr H5Z_filter_t kTestFilter = 32001;
const H5Z_class2_t kTestFilterClass = {H5Z_CLASS_T_VERS, kTestFilter, 1, 1, "tg-test-filter",
                                       nullptr,          nullptr,     passthrough_filter};

/// x (4, 1, 2, 2) stored with kTestFilter (optional or required), y plain.
void write_filtered_data(const std::string& path, bool optional) {
  H5Lock lock;
  ASSERT_GE(H5Zregister(&kTestFilterClass), 0);
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  std::vector<float> values(16, 0.25f);
  hsize_t xd[4] = {4, 1, 2, 2}, yd[4] = {4, 1, 1, 1}, chunk[4] = {1, 1, 2, 2};
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, 4, chunk);
  ASSERT_GE(H5Pset_filter(dcpl, kTestFilter, optional ? H5Z_FLAG_OPTIONAL : H5Z_FLAG_MANDATORY, 0,
                          nullptr),
            0);
  hid_t xs = H5Screate_simple(4, xd, nullptr), ys = H5Screate_simple(4, yd, nullptr);
  hid_t x = H5Dcreate2(f, "x", H5T_IEEE_F32LE, xs, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  hid_t y = H5Dcreate2(f, "y", H5T_IEEE_F32LE, ys, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(H5Dwrite(x, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0);
  ASSERT_GE(H5Dwrite(y, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0);
  H5Dclose(x);
  H5Dclose(y);
  H5Sclose(xs);
  H5Sclose(ys);
  H5Pclose(dcpl);
  H5Fclose(f);
  ASSERT_GE(H5Zunregister(kTestFilter), 0);
  ASSERT_LE(H5Zfilter_avail(kTestFilter), 0) << "an HDF5 plugin provides filter 32001 here";
}

/// A small tmpfs mounted on a folder for the duration of a test (needs root; CI may not allow it).
struct SmallDisk {
  std::string dir;
  bool mounted = false;
  std::string why;
  SmallDisk(const std::string& d, const char* size) : dir(d) {
    fs::create_directories(dir);
    mounted = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, size) == 0;
    if (!mounted) why = std::strerror(errno);
  }
  ~SmallDisk() {
    if (mounted) ::umount2(dir.c_str(), MNT_DETACH);
  }
};

/// Runs f in a forked child, then shuts the HDF5 library down there (H5close: where a failed close
/// used to leave a dangling identifier that crashed) and exits. Returns the child's exit status
/// and what f returned (or the message of what it threw).
std::pair<int, std::string> in_child(const std::function<std::string()>& f) {
  int fds[2];
  if (::pipe(fds) != 0) return {-1, "pipe failed"};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    std::string msg;
    try {
      msg = f();
    } catch (const std::exception& e) {
      msg = std::string("unexpected exception: ") + e.what();
    }
    ssize_t ignored = ::write(fds[1], msg.data(), msg.size());
    (void)ignored;
    ::close(fds[1]);
    H5close();
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return {status, out};
}

/// A pid that no process has (a child that has exited and been reaped).
pid_t dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;
}

}  // namespace

// ---- sizes --------------------------------------------------------------------------------------

TEST(HostileFiles, DatasetTooLargeFor64BitSizesIsAnErrorNamingIt) {
  TempDir tmp;
  const std::string path = tmp.file("huge.h5");
  {
    h5::File f = h5::File::create(path);
    declare_unwritten(f, "x", {1, 1, k2_31, k2_31}, {1, 1, 1, 1024});  // 2^62 elements
    f.write_tensor("y", Tensor::ones({1, 1, 1, 1}));
  }
  EXPECT_LT(fs::file_size(path), 100000u);
  EXPECT_ERROR_HAS(inspect_dataset(path), "dataset 'x'", "huge.h5",
                   "[1, 1, 2147483648, 2147483648]", "does not fit in 64 bits");
  DatasetReaderOptions o;
  o.path = path;
  o.batch_size = 1;
  EXPECT_ERROR_HAS(DatasetReader{o}, "dataset 'x'", "huge.h5", "[1, 1, 2147483648, 2147483648]",
                   "does not fit in 64 bits");
}

TEST(HostileFiles, BatchTooLargeForMemoryIsAnErrorNamingTheDataset) {
  TempDir tmp;
  const std::string path = tmp.file("wide.h5");
  const int64_t side = int64_t(1) << 22;  // a sample of 2^44 floats: 64 TiB
  {
    h5::File f = h5::File::create(path);
    h5::DatasetCreateOptions o;
    o.chunk = {1, 1, 1, 1024};
    h5::Dataset x = f.create_dataset("x", DType::Float32, {2, 1, side, side}, o);
    h5::Dataspace sel = x.space();  // one chunk is written: storage is allocated
    sel.select_block({0, 0, 0, 0}, {1, 1, 1, 1024});
    std::vector<float> ones(1024, 1.0f);
    x.write(ones.data(), DType::Float32, h5::Dataspace::simple({1, 1, 1, 1024}), sel);
    f.write_tensor("y", Tensor::ones({2, 1, 1, 1}));
  }
  EXPECT_NO_THROW(inspect_dataset(path));
  DatasetReaderOptions o;
  o.path = path;
  o.batch_size = 2;
  EXPECT_ERROR_HAS(DatasetReader{o}, "a batch of shape [2, 1, 4194304, 4194304]", "dataset 'x'",
                   "wide.h5", "more than this machine's memory");
}

// ---- data declared but never written ------------------------------------------------------------

TEST(HostileFiles, DatasetsWithNoStorageAreErrorsNamingThem) {
  TempDir tmp;
  const std::string path = tmp.file("empty.h5");
  {
    h5::File f = h5::File::create(path);
    declare_unwritten(f, "x", {10000000, 8, 256, 256}, {1, 8, 256, 256});
    declare_unwritten(f, "y", {10000000, 1, 1, 1}, {1024, 1, 1, 1});
  }
  EXPECT_LT(fs::file_size(path), 100000u);
  EXPECT_ERROR_HAS(inspect_dataset(path), "dataset 'x'", "empty.h5",
                   "[10000000, 8, 256, 256]", "never written");
  DatasetReaderOptions o;
  o.path = path;
  EXPECT_ERROR_HAS(DatasetReader{o}, "dataset 'x'", "empty.h5", "never written");

  const std::string no_y = tmp.file("no_y.h5");
  {
    h5::File f = h5::File::create(no_y);
    f.write_tensor("x", Tensor::ones({3, 1, 2, 2}));
    f.create_dataset("y", DType::Float32, {3, 1, 1, 1});  // contiguous, never written
  }
  EXPECT_ERROR_HAS(inspect_dataset(no_y), "dataset 'y'", "no_y.h5", "[3, 1, 1, 1]",
                   "never written");

  // Checkpoints: a parameter, a momentum buffer and the configuration.
  const std::string ck = tmp.file("ck.h5");
  TrainState st = small_state();
  save_checkpoint(ck, small_params(), &st);
  {
    h5::File f = h5::File::open(ck, true);
    f.create_dataset("ghost", DType::Float32, {4, 4});
  }
  EXPECT_ERROR_HAS(load_checkpoint(ck), "dataset 'ghost'", "ck.h5", "[4, 4]", "never written");
  EXPECT_ERROR_HAS(load_checkpoint(ck, {"conv.weight", "ghost"}), "dataset 'ghost'",
                   "never written");
  Checkpoint ok = load_checkpoint(ck, {"conv.weight", "conv.bias", "scale"});
  EXPECT_EQ(ok.unknown, std::vector<std::string>{"ghost"});

  const std::string ck2 = tmp.file("ck2.h5");
  save_checkpoint(ck2, small_params(), &st);
  {
    h5::File f = h5::File::open(ck2, true);
    h5::Group mg = f.open_group("train_state/momentum_buffer");
    mg.create_dataset("conv.bias", DType::Float32, {4});
  }
  EXPECT_ERROR_HAS(load_checkpoint(ck2), "dataset 'train_state/momentum_buffer/conv.bias'",
                   "ck2.h5", "never written");
}

// ---- checkpoints: unknown datasets are never read -----------------------------------------------

TEST(HostileFiles, CheckpointReadsOnlyTheNamedParameters) {
  TempDir tmp;
  const std::string path = tmp.file("extra.h5");
  TrainState st = small_state();
  const NamedTensors params = small_params();
  save_checkpoint(path, params, &st);
  {
    h5::File f = h5::File::open(path, true);
    declare_unwritten(f, "zzz", {k2_30, k2_30, 4}, {1, 1, 4});  // 2^64 bytes if it were read
  }
  EXPECT_LT(fs::file_size(path), 100000u);

  Checkpoint ck = load_checkpoint(path, {"scale", "conv.weight", "conv.bias"});
  expect_same(ck.params, {params[2], params[0], params[1]});  // in the order asked for
  EXPECT_EQ(ck.unknown, std::vector<std::string>{"zzz"});
  ASSERT_TRUE(ck.state.has_value());
  EXPECT_EQ(ck.state->step, 12);
  EXPECT_EQ(ck.state->config_json, st.config_json);
  expect_same(ck.state->momentum_buffers, st.momentum_buffers);

  // Without names every dataset is read, and this one cannot be.
  EXPECT_ERROR_HAS(load_checkpoint(path), "dataset 'zzz'", "extra.h5",
                   "[1073741824, 1073741824, 4]", "does not fit in 64 bits");
  // Missing parameters: one error listing all of them and what the file has.
  EXPECT_ERROR_HAS(load_checkpoint(path, {"conv.weight", "gn.weight", "gn.bias"}), "extra.h5",
                   "lacks 2 of the 3 parameters", "'gn.weight', 'gn.bias'",
                   "its parameters: 'conv.weight', 'conv.bias', 'scale', 'zzz'");
  EXPECT_ERROR_HAS(load_checkpoint(path, {"scale", "scale"}), "'scale' is asked for twice");
  EXPECT_ERROR_HAS(load_checkpoint(path, {"train_state"}), "'train_state'", "is not a dataset");
}

TEST(HostileFiles, DatasetTooLargeForMemoryIsNamedNotBadAlloc) {
  TempDir tmp;
  const std::string path = tmp.file("big.h5");
  save_checkpoint(path, small_params());
  {
    h5::File f = h5::File::open(path, true);
    h5::DatasetCreateOptions o;
    o.chunk = {1, 1024, 4};
    h5::Dataset d = f.create_dataset("wide", DType::Float32, {int64_t(1) << 32, 1 << 20, 4}, o);
    h5::Dataspace sel = d.space();  // one chunk written: 2^54 bytes declared, 16 KiB stored
    sel.select_block({0, 0, 0}, {1, 1024, 4});
    std::vector<float> ones(4096, 1.0f);
    d.write(ones.data(), DType::Float32, h5::Dataspace::simple({1, 1024, 4}), sel);
  }
  EXPECT_ERROR_HAS(load_checkpoint(path), "dataset 'wide'", "big.h5", "[4294967296, 1048576, 4]",
                   "more than this machine's memory");
  EXPECT_EQ(load_checkpoint(path, {"conv.bias"}).unknown,
            (std::vector<std::string>{"conv.weight", "scale", "wide"}));
}

// ---- strings ------------------------------------------------------------------------------------

TEST(HostileFiles, FixedAndVariableLengthStringsAreReadExactly) {
  TempDir tmp;
  const std::string path = tmp.file("strings.h5");
  const std::string text = "{\"lr\": 0.5}";
  {
    H5Lock lock;
    hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    for (bool attr : {true, false}) {
      const std::string k = attr ? "a_" : "d_";
      write_fixed_string(f, (k + "nullpad_exact").c_str(), text, H5T_STR_NULLPAD, attr);
      write_fixed_string(f, (k + "nullpad_padded").c_str(), text + std::string(5, '\0'),
                         H5T_STR_NULLPAD, attr);
      write_fixed_string(f, (k + "spacepad").c_str(), text + "   ", H5T_STR_SPACEPAD, attr);
      write_fixed_string(f, (k + "nullterm").c_str(), text + '\0', H5T_STR_NULLTERM, attr);
      write_fixed_string(f, (k + "one_char").c_str(), "x", H5T_STR_NULLPAD, attr);
      write_variable_string(f, (k + "variable").c_str(), text, attr);
    }
    H5Fclose(f);
  }
  h5::File f = h5::File::open(path);
  for (const char* kind : {"nullpad_exact", "nullpad_padded", "spacepad", "nullterm", "variable"}) {
    EXPECT_EQ(f.open_attribute(std::string("a_") + kind).read_string(), text) << kind;
    EXPECT_EQ(f.open_dataset(std::string("d_") + kind).read_string(), text) << kind;
  }
  EXPECT_EQ(f.open_attribute("a_one_char").read_string(), "x");
  EXPECT_EQ(f.open_dataset("d_one_char").read_string(), "x");
}

TEST(HostileFiles, ConfigRewrittenAsFixedLengthStringIsReadExactly) {
  TempDir tmp;
  const std::string path = tmp.file("ck.h5");
  TrainState st = small_state();
  save_checkpoint(path, small_params(), &st);
  {
    // What h5py does with f["train_state/config_json"] = np.bytes_(config): a null-padded
    // fixed-length string of exactly the text's length.
    H5Lock lock;
    hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, "train_state", H5P_DEFAULT);
    ASSERT_GE(H5Ldelete(g, "config_json", H5P_DEFAULT), 0);
    write_fixed_string(g, "config_json", st.config_json, H5T_STR_NULLPAD, false);
    H5Gclose(g);
    H5Fclose(f);
  }
  Checkpoint ck = load_checkpoint(path);
  ASSERT_TRUE(ck.state.has_value());
  EXPECT_EQ(ck.state->config_json, st.config_json);
}

// ---- load-time validation -----------------------------------------------------------------------

TEST(HostileFiles, NonFiniteParametersAndMomentumAreRejectedAtLoad) {
  TempDir tmp;
  const std::string path = tmp.file("nan.h5");
  TrainState st = small_state();
  save_checkpoint(path, small_params(), &st);
  {
    h5::File f = h5::File::open(path, true);
    std::vector<float> bias = {1, 2, std::numeric_limits<float>::quiet_NaN(), 4};
    f.open_dataset("conv.bias").write(bias.data(), DType::Float32);
  }
  EXPECT_ERROR_HAS(load_checkpoint(path), "nan.h5", "parameter 'conv.bias'", "[4]",
                   "non-finite value (nan) at flat index 2");
  EXPECT_ERROR_HAS(load_checkpoint(path, {"conv.bias"}), "parameter 'conv.bias'", "non-finite");

  const std::string inf = tmp.file("inf.h5");
  save_checkpoint(inf, small_params(), &st);
  {
    h5::File f = h5::File::open(inf, true);
    std::vector<float> m(108, 0.5f);
    m[100] = -std::numeric_limits<float>::infinity();
    f.open_dataset("train_state/momentum_buffer/conv.weight").write(m.data(), DType::Float32);
  }
  EXPECT_ERROR_HAS(load_checkpoint(inf), "inf.h5", "momentum buffer 'conv.weight'",
                   "[4, 3, 3, 3]", "non-finite value (-inf) at flat index 100");
}

TEST(HostileFiles, TrainStateOutOfRangeIsRejectedAtLoad) {
  TempDir tmp;
  const std::string path = tmp.file("state.h5");
  auto with = [&](const std::function<void(h5::Group&)>& edit) {
    TrainState st = small_state();
    save_checkpoint(path, small_params(), &st);
    h5::File f = h5::File::open(path, true);
    h5::Group g = f.open_group("train_state");
    edit(g);
  };
  with([](h5::Group& g) { g.set_attr_int("step", -1); });
  EXPECT_ERROR_HAS(load_checkpoint(path), "state.h5", "train_state step must be >= 0, got -1");
  with([](h5::Group& g) { g.set_attr_int("epoch", std::numeric_limits<int64_t>::min()); });
  EXPECT_ERROR_HAS(load_checkpoint(path), "train_state epoch must be >= 0, got -9223372036854775808");
  with([](h5::Group& g) { g.set_attr_int("batch_in_epoch", -3); });
  EXPECT_ERROR_HAS(load_checkpoint(path), "train_state batch_in_epoch must be >= 0, got -3");
  auto set_best = [](double v) {
    return [v](h5::Group& g) {
      g.open_dataset("scalars/best_val_loss").write(&v, DType::Float64);
    };
  };
  with(set_best(std::numeric_limits<double>::quiet_NaN()));
  EXPECT_ERROR_HAS(load_checkpoint(path), "state.h5", "best_val_loss is NaN");
  with(set_best(std::numeric_limits<double>::infinity()));  // no best loss yet: fine
  EXPECT_EQ(load_checkpoint(path).state->scalars.at("best_val_loss"),
            std::numeric_limits<double>::infinity());
}

// ---- vague messages -----------------------------------------------------------------------------

TEST(HostileFiles, UnavailableFilterIsNamed) {
  TempDir tmp;
  const std::string required = tmp.file("required.h5"), optional = tmp.file("optional.h5");
  write_filtered_data(required, false);
  write_filtered_data(optional, true);
  // A required filter: known at open.
  EXPECT_ERROR_HAS(inspect_dataset(required), "dataset 'x'", "required.h5", "HDF5 filter 32001",
                   "tg-test-filter", "required", "HDF5_PLUGIN_PATH");
  // An optional one that was applied: needed to read.
  DatasetReaderOptions o;
  o.path = optional;
  DatasetReader r(o);
  EXPECT_ERROR_HAS(r.read({0}), "dataset 'x'", "optional.h5", "HDF5 filter 32001",
                   "tg-test-filter", "optional");
  // A checkpoint parameter stored with it.
  EXPECT_ERROR_HAS(load_checkpoint(required, {"x"}), "dataset 'x'", "HDF5 filter 32001");
}

TEST(HostileFiles, BrokenLinksSayWhatTheyPointTo) {
  TempDir tmp;
  const std::string soft = tmp.file("soft.h5"), external = tmp.file("external.h5");
  for (const std::string* path : {&soft, &external}) {
    write_small_data(*path);
    H5Lock lock;
    hid_t f = H5Fopen(path->c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(H5Ldelete(f, "x", H5P_DEFAULT), 0);
    if (path == &soft) {
      ASSERT_GE(H5Lcreate_soft("/data/x_moved", f, "x", H5P_DEFAULT, H5P_DEFAULT), 0);
    } else {
      ASSERT_GE(H5Lcreate_external("gone.h5", "/x", f, "x", H5P_DEFAULT, H5P_DEFAULT), 0);
    }
    H5Fclose(f);
  }
  EXPECT_EQ(h5::File::open(soft).kind_of("x"), h5::ObjectKind::BrokenLink);
  EXPECT_ERROR_HAS(inspect_dataset(soft), "'x'", "soft.h5", "broken link",
                   "a soft link to '/data/x_moved'");
  EXPECT_ERROR_HAS(inspect_dataset(external), "'x'", "external.h5", "broken link",
                   "an external link to '/x' in 'gone.h5'");
  EXPECT_ERROR_HAS(h5::File::open(soft).open_dataset("x"), "broken link", "'/data/x_moved'");
  EXPECT_ERROR_HAS(load_checkpoint(external, {"x", "y"}), "broken link", "'gone.h5'");
  EXPECT_EQ(load_checkpoint(external, {"y"}).unknown, std::vector<std::string>{"x"});
}

// ---- temporaries --------------------------------------------------------------------------------

TEST(HostileFiles, StaleTemporariesOfDeadProcessesAreRemoved) {
  TempDir tmp;
  const std::string path = tmp.file("last.h5");
  const std::string dead = std::to_string(dead_pid()), self = std::to_string(::getpid());
  for (const std::string& name : std::vector<std::string>{"last.h5.tmp-" + dead + "-0", "last.h5.tmp-" + dead + "-17", "last.h5.tmp-" + self + "-3",
        "last.h5.tmp-" + dead, "last.h5.tmp-x-1", "best.h5.tmp-" + dead + "-0", "last.h5"}) {
    write_bytes(tmp.file(name), "junk");
  }
  remove_stale_temporaries(path);
  std::vector<std::string> kept = {"best.h5.tmp-" + dead + "-0", "last.h5", "last.h5.tmp-" + dead,
                                   "last.h5.tmp-" + self + "-3", "last.h5.tmp-x-1"};
  std::sort(kept.begin(), kept.end());
  EXPECT_EQ(tmp.entries(), kept);

  // Every atomic write cleans up first: a checkpoint save and a dataset write.
  write_bytes(tmp.file("last.h5.tmp-" + dead + "-5"), "junk");
  write_bytes(tmp.file("data.h5.tmp-" + dead + "-0"), "junk");
  save_checkpoint(path, small_params());
  write_small_data(tmp.file("data.h5"));
  auto entries = tmp.entries();
  EXPECT_EQ(std::count(entries.begin(), entries.end(), "last.h5.tmp-" + dead + "-5"), 0);
  EXPECT_EQ(std::count(entries.begin(), entries.end(), "data.h5.tmp-" + dead + "-0"), 0);
  EXPECT_EQ(std::count(entries.begin(), entries.end(), "last.h5.tmp-" + self + "-3"), 1);
}

TEST(HostileFiles, InterruptedSyntheticWriteLeavesNothing) {
  TempDir tmp;
  const std::string path = tmp.file("data.h5");
  SyntheticOptions o;
  o.samples = 40;
  o.batch = 8;
  o.height = o.width = 6;
  std::atomic<bool> stop{true};
  o.cancel = &stop;
  EXPECT_ERROR_HAS(write_synthetic_dataset(path, o), "data.h5", "interrupted after 0 of 40");
  EXPECT_TRUE(tmp.entries().empty());
  // A previous file at path survives an interrupted rewrite.
  stop = false;
  write_synthetic_dataset(path, o);
  EXPECT_EQ(inspect_dataset(path).num_samples(), 40);
  stop = true;
  o.samples = 80;
  EXPECT_ERROR_HAS(write_synthetic_dataset(path, o), "interrupted");
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"data.h5"});
  EXPECT_EQ(inspect_dataset(path).num_samples(), 40);
}

// ---- a full disk --------------------------------------------------------------------------------

TEST(HostileFiles, SaveOnAFullDiskFailsCleanlyAndKeepsThePreviousCheckpoint) {
  TempDir tmp;
  SmallDisk disk(tmp.file("disk"), "size=64k");
  if (!disk.mounted) GTEST_SKIP() << "cannot mount a 64 KiB tmpfs (" << disk.why << ")";
  const std::string path = disk.dir + "/last.h5";
  const NamedTensors good = small_params();
  save_checkpoint(path, good);
  // One large parameter (written at once), then many small ones (cached by HDF5 and written when
  // closed), each more than the disk holds.
  NamedTensors large = {{"w", Tensor::randn({64, 1024}, 5)}}, many;
  for (int i = 0; i < 40; ++i) many.push_back({"p" + std::to_string(i), Tensor::randn({512}, i)});
  for (const NamedTensors* params : {&large, &many}) {
    auto [status, msg] = in_child([&] { return error_of([&] { save_checkpoint(path, *params); }); });
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "the child crashed (signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0) << ")";
    EXPECT_CONTAINS(msg, "last.h5");
    EXPECT_CONTAINS(msg, "No space left on device");
    std::vector<std::string> entries;
    for (const auto& e : fs::directory_iterator(disk.dir)) entries.push_back(e.path().filename());
    EXPECT_EQ(entries, std::vector<std::string>{"last.h5"}) << "no temporary is left";
    expect_same(load_checkpoint(path).params, good);
  }
}

TEST(HostileFiles, MakeDataOnAFullDiskFailsCleanly) {
  TempDir tmp;
  SmallDisk disk(tmp.file("disk"), "size=64k");
  if (!disk.mounted) GTEST_SKIP() << "cannot mount a 64 KiB tmpfs (" << disk.why << ")";
  const std::string path = disk.dir + "/data.h5";
  auto entries = [&] {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(disk.dir)) out.push_back(e.path().filename());
    return out;
  };
  SyntheticOptions small;
  small.samples = 4;
  small.height = small.width = 6;
  write_synthetic_dataset(path, small);
  // In this process (without the fix, HDF5 crashed when this test binary exits).
  SyntheticOptions o;
  o.samples = 64;
  o.height = o.width = 32;
  EXPECT_ERROR_HAS(write_synthetic_dataset(path, o), "data.h5", "No space left on device");
  EXPECT_EQ(entries(), std::vector<std::string>{"data.h5"}) << "no temporary is left";
  EXPECT_EQ(inspect_dataset(path).num_samples(), 4);
  // The same writer in a child that shuts HDF5 down (the teacher model of the synthetic data
  // uses OpenMP, which cannot run in a forked child, so the data is made here).
  Tensor x = Tensor::rand({64, 3, 32, 32}, 1), y = Tensor::rand({64, 8, 30, 30}, 2);
  auto [status, msg] = in_child([&] { return error_of([&] { write_dataset(path, x, y); }); });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the child crashed (signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0) << ")";
  EXPECT_CONTAINS(msg, "data.h5");
  EXPECT_CONTAINS(msg, "No space left on device");
  EXPECT_EQ(entries(), std::vector<std::string>{"data.h5"}) << "no temporary is left";
  EXPECT_EQ(inspect_dataset(path).num_samples(), 4);
}
