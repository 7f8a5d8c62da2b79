// Tests of checkpoints: round trips with training state, atomic saves, errors, and (when python3
// with h5py is installed) that Python reads exactly the parameters.
#include "io/checkpoint.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "io/hdf5.h"
#include "test_utils.h"

namespace fs = std::filesystem;
using namespace tg;
using namespace tg::io;
using namespace tg::testing;

namespace {

/// The parameters of the seed's model (SPEC.md) for Cin 3, Cout 4, k 3, plus a float64 extra.
NamedTensors model_params(uint64_t seed) {
  return {{"conv.weight", Tensor::randn({4, 3, 3, 3}, seed + 1)},
          {"conv.bias", Tensor::randn({4}, seed + 2)},
          {"bias", Tensor::randn({4, 1, 1}, seed + 3)},
          {"scale", Tensor::randn({4, 1, 1}, seed + 4)},
          {"group_norm.weight", Tensor::full({4}, 1.0 + double(seed))},
          {"group_norm.bias", Tensor::randn({4}, seed + 5)},
          {"extra.f64", Tensor::randn({2, 5}, seed + 6, DType::Float64)}};
}

TrainState make_state() {
  TrainState st;
  st.step = 1234567890123;
  st.epoch = 17;
  st.batch_in_epoch = 5;
  st.seed = 0xDEADBEEFCAFEF00DULL;
  st.config_json = "{\n  \"lr\": 0.01,\n  \"name\": \"tëst \\\"quoted\\\"\"\n}";
  st.momentum_buffers = {{"conv.weight", Tensor::randn({4, 3, 3, 3}, 77)},
                         {"conv.bias", Tensor()},  // no buffer yet: not saved
                         {"extra.f64", Tensor::randn({2, 5}, 78, DType::Float64)}};
  st.scalars = {{"lr", 0.01}, {"best_val_loss", 0.123456789012345}, {"momentum", 0.9}};
  return st;
}

}  // namespace

TEST(Checkpoint, RoundTripParamsAndTrainState) {
  TempDir tmp;
  const std::string path = tmp.file("ck.h5");
  NamedTensors params = model_params(10);
  TrainState st = make_state();
  save_checkpoint(path, params, &st);
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"ck.h5"});

  Checkpoint ck = load_checkpoint(path);
  expect_same(ck.params, params);  // same names, order, shapes, dtypes, bits
  ASSERT_TRUE(ck.state.has_value());
  const TrainState& s = *ck.state;
  EXPECT_EQ(s.step, st.step);
  EXPECT_EQ(s.epoch, st.epoch);
  EXPECT_EQ(s.batch_in_epoch, st.batch_in_epoch);
  EXPECT_EQ(s.seed, st.seed);
  EXPECT_EQ(s.config_json, st.config_json);
  expect_same(s.momentum_buffers, {st.momentum_buffers[0], st.momentum_buffers[2]});
  EXPECT_EQ(s.scalars, st.scalars);
  EXPECT_TRUE(ck.has_param("conv.weight"));
  EXPECT_EQ(ck.param("bias").shape(), (Shape{4, 1, 1}));
  EXPECT_ERROR_HAS(ck.param("nope"), "no parameter 'nope'", "conv.weight", "group_norm.bias");

  // The layout promised in checkpoint.h.
  h5::File f = h5::File::open(path);
  EXPECT_EQ(f.kind_of("conv.weight"), h5::ObjectKind::Dataset);
  EXPECT_EQ(f.kind_of("train_state"), h5::ObjectKind::Group);
  EXPECT_EQ(f.kind_of("train_state/momentum_buffer/conv.weight"), h5::ObjectKind::Dataset);
  EXPECT_EQ(f.open_group("train_state").open_attribute("step").read_int(), st.step);
  EXPECT_EQ(f.open_attribute("tapegrad_format").read_string(), "checkpoint");
}

TEST(Checkpoint, WithoutStateAndWithEmptyState) {
  TempDir tmp;
  const std::string path = tmp.file("p.h5");
  NamedTensors params = model_params(3);
  save_checkpoint(path, params);
  Checkpoint ck = load_checkpoint(path);
  expect_same(ck.params, params);
  EXPECT_FALSE(ck.state.has_value());

  TrainState empty;
  save_checkpoint(path, params, &empty);
  ck = load_checkpoint(path);
  ASSERT_TRUE(ck.state.has_value());
  EXPECT_EQ(ck.state->step, 0);
  EXPECT_EQ(ck.state->config_json, "");
  EXPECT_TRUE(ck.state->momentum_buffers.empty());
  EXPECT_TRUE(ck.state->scalars.empty());
}

TEST(Checkpoint, SaveReplacesThePreviousFile) {
  TempDir tmp;
  const std::string path = tmp.file("ck.h5");
  save_checkpoint(path, model_params(1));
  NamedTensors v2 = {{"only", Tensor::randn({3}, 9)}};
  save_checkpoint(path, v2);
  expect_same(load_checkpoint(path).params, v2);
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"ck.h5"});
}

TEST(Checkpoint, FailedSaveLeavesThePreviousCheckpointIntact) {
  TempDir tmp;
  const std::string path = tmp.file("ck.h5");
  NamedTensors v1 = model_params(1);
  TrainState st = make_state();
  save_checkpoint(path, v1, &st);
  const auto size_before = fs::file_size(path);

  // Fails in the middle of writing (the duplicate is found when its dataset would be created).
  NamedTensors dup = model_params(2);
  dup.push_back({"conv.bias", Tensor::randn({4}, 5)});
  EXPECT_ERROR_HAS(save_checkpoint(path, dup, &st), "duplicate parameter name 'conv.bias'",
                   "ck.h5");
  // Fails while writing the training state.
  TrainState bad = make_state();
  bad.momentum_buffers.push_back({"conv.weight", Tensor::ones({1})});
  EXPECT_ERROR_HAS(save_checkpoint(path, model_params(2), &bad),
                   "duplicate momentum buffer name 'conv.weight'");
  // Fails before writing.
  EXPECT_ERROR_HAS(save_checkpoint(path, {{"a/b", Tensor::ones({1})}}), "'a/b'",
                   "not a valid HDF5 link name");
  EXPECT_ERROR_HAS(save_checkpoint(path, {{"", Tensor::ones({1})}}), "empty name");
  EXPECT_ERROR_HAS(save_checkpoint(path, {{"train_state", Tensor::ones({1})}}), "reserved");
  EXPECT_ERROR_HAS(save_checkpoint(path, {{"w", Tensor()}}), "'w' is an undefined tensor");
  // Fails to create the file at all.
  EXPECT_ERROR_HAS(save_checkpoint(tmp.file("missing_dir/ck.h5"), v1), "cannot create",
                   "missing_dir");

  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"ck.h5"}) << "no temporary file is left";
  EXPECT_EQ(fs::file_size(path), size_before);
  Checkpoint ck = load_checkpoint(path);
  expect_same(ck.params, v1);
  ASSERT_TRUE(ck.state.has_value());
  EXPECT_EQ(ck.state->step, st.step);
}

TEST(Checkpoint, LoadErrors) {
  TempDir tmp;
  EXPECT_ERROR_HAS(load_checkpoint(tmp.file("none.h5")), "none.h5", "no such file");

  const std::string garbage = tmp.file("garbage.h5");
  write_bytes(garbage, "this is not HDF5 at all, just some text that goes on for a while");
  EXPECT_ERROR_HAS(load_checkpoint(garbage), "garbage.h5", "not an HDF5 file");

  const std::string good = tmp.file("good.h5");
  save_checkpoint(good, {{"big", Tensor::randn({256, 64}, 1)}});
  const std::string cut = tmp.file("cut.h5");
  fs::copy_file(good, cut);
  fs::resize_file(cut, fs::file_size(good) / 2);
  EXPECT_ERROR_HAS(load_checkpoint(cut), "cut.h5", "truncated");

  const std::string strings = tmp.file("strings.h5");
  {
    h5::File f = h5::File::create(strings);
    f.write_string("note", "not a parameter");
  }
  EXPECT_ERROR_HAS(load_checkpoint(strings), "dataset 'note'", "strings.h5",
                   "expected float32 or float64", "string");

  const std::string no_step = tmp.file("no_step.h5");
  {
    h5::File f = h5::File::create(no_step);
    f.write_tensor("w", Tensor::ones({2}));
    f.create_group("train_state").set_attr_int("epoch", 1);
  }
  EXPECT_ERROR_HAS(load_checkpoint(no_step), "no_step.h5", "train_state has no attribute 'step'");
}

TEST(Checkpoint, PythonH5pyReadsExactlyTheParameters) {
  std::string python;
  for (const char* candidate : {"python3", "/usr/bin/python3"}) {
    std::string cmd = std::string(candidate) + " -c 'import h5py, numpy' >/dev/null 2>&1";
    if (std::system(cmd.c_str()) == 0) {
      python = candidate;
      break;
    }
  }
  if (python.empty()) GTEST_SKIP() << "python3 with h5py and numpy is not installed";
  TempDir tmp;
  const std::string path = tmp.file("ck.h5");
  NamedTensors params = model_params(4);
  TrainState st = make_state();
  save_checkpoint(path, params, &st);
  const std::string script = tmp.file("read.py");
  {
    std::ofstream f(script);
    f << "import sys, h5py, numpy as np\n"
         "f = h5py.File(sys.argv[1], 'r')\n"
         "d = {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}\n"
         "for k, v in d.items():\n"
         "    assert isinstance(v, np.ndarray)\n"
         "    print('P', k, v.dtype, ','.join(map(str, v.shape)), *map(repr, "
         "v.astype(np.float64).ravel().tolist()))\n"
         "ts = f['train_state']\n"
         "print('S', int(ts.attrs['step']), int(ts.attrs['seed']), "
         "','.join(ts['momentum_buffer'].keys()))\n";
  }
  const std::string out = tmp.file("out.txt");
  ASSERT_EQ(std::system((python + " " + script + " " + path + " > " + out + " 2>&1").c_str()), 0);
  std::ifstream in(out);
  std::map<std::string, std::string> lines;
  std::string line, step_line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string tag, name;
    ls >> tag;
    if (tag == "P") {
      ls >> name;
      lines[name] = line;
    } else if (tag == "S") {
      step_line = line;
    } else {
      ADD_FAILURE() << "python said: " << line;
    }
  }
  ASSERT_EQ(lines.size(), params.size()) << "train_state must not show up as a parameter";
  for (const auto& [name, t] : params) {
    ASSERT_TRUE(lines.count(name)) << name;
    std::istringstream ls(lines[name]);
    std::string tag, n, dtype, shape;
    ls >> tag >> n >> dtype >> shape;
    EXPECT_EQ(dtype, t.dtype() == DType::Float32 ? "float32" : "float64") << name;
    std::string want_shape;
    for (int64_t d : t.shape()) want_shape += (want_shape.empty() ? "" : ",") + std::to_string(d);
    EXPECT_EQ(shape, want_shape) << name;
    std::vector<double> values;
    std::string v;
    while (ls >> v) values.push_back(std::strtod(v.c_str(), nullptr));
    EXPECT_EQ(values, t.to_vector<double>()) << name;
  }
  EXPECT_EQ(step_line, "S 1234567890123 " + std::to_string(st.seed) + " conv.weight,extra.f64");
}

TEST(Checkpoint, CudaTensorsAreSavedFromTheHost) {
  TG_SKIP_WITHOUT_GPU();
  TempDir tmp;
  const std::string path = tmp.file("cuda.h5");
  NamedTensors host = model_params(8);
  NamedTensors dev;
  for (const auto& [name, t] : host) dev.push_back({name, t.to(Device::CUDA)});
  TrainState st = make_state();
  for (auto& mb : st.momentum_buffers) {
    if (mb.second.defined()) mb.second = mb.second.to(Device::CUDA);
  }
  save_checkpoint(path, dev, &st);
  Checkpoint ck = load_checkpoint(path);
  expect_same(ck.params, host);
  ASSERT_TRUE(ck.state.has_value());
  EXPECT_EQ(ck.state->momentum_buffers.size(), 2u);
  EXPECT_EQ(ck.state->momentum_buffers[0].second.device(), Device::CPU);
}
