// Tests of safetensors files and checkpoints: round trips (parameters, training state), format
// detection by content, conversion, atomic saves, every class of corrupt file, and (when python3 is
// installed) that Python's standard library reads the bytes we wrote.
#include "io/safetensors.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "io/checkpoint.h"
#include "io/hdf5.h"
#include "test_utils.h"

using namespace tg;
using namespace tg::io;
using namespace tg::testing;

namespace {

NamedTensors some_params(uint64_t seed) {
  return {{"conv.weight", Tensor::randn({4, 3, 3, 3}, seed + 1)},
          {"conv.bias", Tensor::randn({4}, seed + 2)},
          {"bias", Tensor::randn({4, 1, 1}, seed + 3)},
          {"a.f64", Tensor::randn({2, 5}, seed + 4, DType::Float64)},
          {"empty", Tensor::zeros({0, 3})},
          {"scalar", Tensor::full({}, 2.5, DType::Float64)}};
}

TrainState make_state() {
  TrainState st;
  st.step = 1234567890123;
  st.epoch = 17;
  st.batch_in_epoch = 5;
  st.seed = 0xDEADBEEFCAFEF00DULL;
  st.config_json = "{\"lr\": 0.01, \"name\": \"t\\u00ebst \\\"quoted\\\"\"}";
  st.momentum_buffers = {{"conv.weight", Tensor::randn({4, 3, 3, 3}, 77)},
                         {"conv.bias", Tensor()},  // no buffer yet: not saved
                         {"a.f64", Tensor::randn({2, 5}, 78, DType::Float64)},
                         {"bias", Tensor::randn({4, 1, 1}, 79)}};
  st.scalars = {{"lr", 0.01},
                {"best_val_loss", 0.123456789012345678},
                {"inf", std::numeric_limits<double>::infinity()},
                {"tiny", 4.9e-324}};
  return st;
}

void expect_same_state(const TrainState& s, const TrainState& st) {
  EXPECT_EQ(s.step, st.step);
  EXPECT_EQ(s.epoch, st.epoch);
  EXPECT_EQ(s.batch_in_epoch, st.batch_in_epoch);
  EXPECT_EQ(s.seed, st.seed);
  EXPECT_EQ(s.config_json, st.config_json);
  EXPECT_EQ(s.scalars, st.scalars);
  NamedTensors defined;
  for (const auto& b : st.momentum_buffers) {
    if (b.second.defined()) defined.push_back(b);
  }
  expect_same(s.momentum_buffers, defined);  // the optimizer's order, bit for bit
}

std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Writes a crafted file: the header's length (or length_override), the header, data_bytes bytes.
void write_raw(const std::string& path, const std::string& header, size_t data_bytes,
               int64_t length_override = -1) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = length_override >= 0 ? uint64_t(length_override) : header.size();
  for (int i = 0; i < 8; ++i) out.put(char(n >> (8 * i)));
  out << header << std::string(data_bytes, '\x01');
}

}  // namespace

TEST(Safetensors, RoundTripTensorsAndMetadataInOrder) {
  TempDir tmp;
  const std::string path = tmp.file("t.safetensors");
  const NamedTensors ts = some_params(1);
  const std::map<std::string, std::string> meta = {{"who", "me"}, {"with \"quotes\"", "a\nb"}};
  write_safetensors(path, ts, meta);
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"t.safetensors"});
  const SafetensorsFile f = read_safetensors(path);
  expect_same(f.tensors, ts);
  EXPECT_EQ(f.metadata, meta);

  // The layout: little-endian u64 length, a JSON header padded to 8 bytes, then the bytes in order.
  const std::string b = bytes_of(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | uint8_t(b[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
  EXPECT_EQ(b[8], '{');
  float first = 0;
  std::memcpy(&first, b.data() + 8 + n, 4);
  EXPECT_EQ(first, ts[0].second.to_vector<float>()[0]);
  EXPECT_EQ(b.size(), 8 + n + (108 + 4 + 4) * 4 + 10 * 8 + 8);
}

TEST(Safetensors, ReadsOnlyTheNamedTensors) {
  TempDir tmp;
  const std::string path = tmp.file("t.safetensors");
  const NamedTensors ts = some_params(2);
  write_safetensors(path, ts);
  const SafetensorsFile f = read_safetensors(path, {"a.f64", "conv.bias"});
  expect_same(f.tensors, {ts[3], ts[1]});
  EXPECT_ERROR_HAS(read_safetensors(path, {"bias", "nope", "also"}), "t.safetensors",
                   "has no tensor nope, also", "(it has: conv.weight, conv.bias, bias");
}

TEST(Safetensors, CheckpointRoundTripWithTrainState) {
  TempDir tmp;
  const std::string path = tmp.file("last.safetensors");
  const NamedTensors params = some_params(3);
  const TrainState st = make_state();
  save_checkpoint(path, params, &st);
  EXPECT_TRUE(is_safetensors(path));
  EXPECT_FALSE(h5::File::is_hdf5(path));
  const Checkpoint ck = load_checkpoint(path);
  expect_same(ck.params, params);
  ASSERT_TRUE(ck.state.has_value());
  expect_same_state(*ck.state, st);

  // The state lives in the metadata (load_state_dict sees only the parameters), as in the layout.
  const SafetensorsFile f = read_safetensors(path);
  EXPECT_EQ(f.tensors.size(), params.size());
  EXPECT_EQ(f.metadata.at("format"), "pt");
  EXPECT_EQ(f.metadata.at("tapegrad_format"), "checkpoint");
  EXPECT_EQ(f.metadata.at("train_state/seed"), "16045690984503111693");
  EXPECT_EQ(f.metadata.at("train_state/scalars/inf"), "inf");
  EXPECT_CONTAINS(f.metadata.at("train_state/momentum_buffer"), "\"name\":\"conv.weight\"");

  // Without a state there is none after loading.
  save_checkpoint(path, params);
  EXPECT_FALSE(load_checkpoint(path).state.has_value());
}

TEST(Safetensors, FormatByArgumentOrNameAndDetectedByContent) {
  TempDir tmp;
  const NamedTensors params = some_params(4);
  EXPECT_EQ(resolve_checkpoint_format("a/b.safetensors", CheckpointFormat::Auto),
            CheckpointFormat::Safetensors);
  EXPECT_EQ(resolve_checkpoint_format("a/b.h5", CheckpointFormat::Auto), CheckpointFormat::Hdf5);
  EXPECT_EQ(resolve_checkpoint_format("safetensors", CheckpointFormat::Auto),
            CheckpointFormat::Hdf5);
  EXPECT_EQ(resolve_checkpoint_format("b.safetensors", CheckpointFormat::Hdf5),
            CheckpointFormat::Hdf5);

  // The argument wins over the name; loading goes by the content either way.
  const std::string st_named_h5 = tmp.file("really_safetensors.h5");
  const std::string h5_named_st = tmp.file("really_hdf5.safetensors");
  save_checkpoint(st_named_h5, params, nullptr, CheckpointFormat::Safetensors);
  save_checkpoint(h5_named_st, params, nullptr, CheckpointFormat::Hdf5);
  EXPECT_TRUE(is_safetensors(st_named_h5));
  EXPECT_TRUE(h5::File::is_hdf5(h5_named_st));
  EXPECT_FALSE(is_safetensors(h5_named_st));
  expect_same(load_checkpoint(st_named_h5).params, params);
  expect_same(load_checkpoint(h5_named_st).params, params);

  EXPECT_FALSE(is_safetensors(tmp.file("missing")));
  EXPECT_ERROR_HAS(load_checkpoint(tmp.file("missing.safetensors")), "missing.safetensors");
  write_raw(tmp.file("junk.bin"), "not a checkpoint at all", 0);
  EXPECT_ERROR_HAS(load_checkpoint(tmp.file("junk.bin")), "junk.bin", "not an HDF5 file");
}

TEST(Safetensors, ConvertBetweenFormatsKeepsEverything) {
  TempDir tmp;
  const NamedTensors params = some_params(5);
  const TrainState st = make_state();
  save_checkpoint(tmp.file("a.h5"), params, &st);
  convert_checkpoint(tmp.file("a.h5"), tmp.file("b.safetensors"));
  convert_checkpoint(tmp.file("b.safetensors"), tmp.file("c.h5"));
  for (const char* name : {"b.safetensors", "c.h5"}) {
    SCOPED_TRACE(name);
    const Checkpoint ck = load_checkpoint(tmp.file(name));
    expect_same(ck.params, params);
    ASSERT_TRUE(ck.state.has_value());
    expect_same_state(*ck.state, st);
  }
  EXPECT_TRUE(is_safetensors(tmp.file("b.safetensors")));
  EXPECT_TRUE(h5::File::is_hdf5(tmp.file("c.h5")));
}

TEST(Safetensors, FailedSaveKeepsThePreviousFileAndLeavesNoTemporary) {
  TempDir tmp;
  const std::string path = tmp.file("ck.safetensors");
  const NamedTensors params = some_params(6);
  save_checkpoint(path, params);
  const std::string before = bytes_of(path);

  NamedTensors dup = params;
  dup.emplace_back("bias", Tensor::zeros({1}));
  EXPECT_ERROR_HAS(save_checkpoint(path, dup), "ck.safetensors", "duplicate parameter name 'bias'");
  EXPECT_ERROR_HAS(write_safetensors(path, dup), "ck.safetensors", "duplicate tensor name 'bias'");
  EXPECT_ERROR_HAS(write_safetensors(path, {{"__metadata__", Tensor::zeros({1})}}),
                   "'__metadata__' is reserved");
  EXPECT_ERROR_HAS(write_safetensors(path, {{"", Tensor::zeros({1})}}), "an empty name");
  EXPECT_ERROR_HAS(save_checkpoint(path, {{"w", Tensor()}}), "parameter 'w' is an undefined tensor");
  EXPECT_ERROR_HAS(write_safetensors(tmp.file("no/such/dir/x.safetensors"), params),
                   "cannot create", "no/such/dir/x.safetensors");
  EXPECT_EQ(bytes_of(path), before);
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"ck.safetensors"});
}

TEST(Safetensors, CorruptFilesAreClearErrors) {
  TempDir tmp;
  const std::string p = tmp.file("bad.safetensors");
  auto expect_bad = [&](const std::string& header, size_t data, std::vector<const char*> parts,
                        int64_t length = -1) {
    SCOPED_TRACE(header);
    write_raw(p, header, data, length);
    const std::string msg = error_of([&] { read_safetensors(p); });
    EXPECT_CONTAINS(msg, "bad.safetensors");
    for (const char* part : parts) EXPECT_CONTAINS(msg, part);
    // load_checkpoint detects the format by content and reports the same problem.
    EXPECT_EQ(error_of([&] { load_checkpoint(p); }), msg);
  };
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

  // the header length runs past the end of the file
  expect_bad(ok, 8, {"header length 1000", "past the end of the file (", " bytes)"}, 1000);
  expect_bad(ok, 8, {"header length 9223372036854775807", "past the end"},
             std::numeric_limits<int64_t>::max());
  write_raw(p, "", 0);
  EXPECT_ERROR_HAS(read_safetensors(p), "too short for a JSON object");
  // not JSON, or not a header
  expect_bad("{\"a\": [1, 2", 0, {"not valid JSON"});
  write_raw(p, "[1, 2, 3]", 0);  // not detected as safetensors: load_checkpoint tries HDF5
  EXPECT_ERROR_HAS(read_safetensors(p), "the header does not start with '{'");
  EXPECT_ERROR_HAS(load_checkpoint(p), "bad.safetensors", "not an HDF5 file");
  expect_bad(R"({"a": 3})", 0, {"tensor 'a'", "not an object with dtype, shape and data_offsets"});
  expect_bad(R"({"__metadata__": {"k": 1}})", 0, {"__metadata__ value of 'k' is not a string"});
  // unknown or unsupported dtype
  expect_bad(R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})", 4,
             {"tensor 'a' has dtype 'BF16'", "expected F32 or F64"});
  expect_bad(R"({"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,4]}})", 4, {"dtype 'Q9'"});
  // shape * dtype size differs from the byte range
  expect_bad(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20,
             {"tensor 'a' of dtype F32 and shape [2, 3] has 24 bytes", "[0, 20] hold 20"});
  expect_bad(R"({"a":{"dtype":"F64","shape":[-1],"data_offsets":[0,8]}})", 8,
             {"the shape of 'a'", "no integer in [0, 2^63): -1"});
  expect_bad(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8, {"2.5"});
  // sizes that overflow 64 bits
  expect_bad(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", 8,
             {"bytes of tensor 'a' of shape [4611686018427387904, 4]", "does not fit in 64 bits"});
  expect_bad(R"({"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}})", 8,
             {"bytes of tensor 'a'", "does not fit in 64 bits"});
  expect_bad(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}})", 8,
             {"data_offsets of 'a'", "no integer"});
  // offsets out of range, reversed, overlapping, or leaving holes
  expect_bad(R"({"a":{"dtype":"F32","shape":[25],"data_offsets":[0,100]}})", 8,
             {"data_offsets [0, 100] of 'a' lie outside the 8 bytes of data"});
  expect_bad(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8,
             {"data_offsets [8, 0] of 'a' lie outside"});
  expect_bad(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4,
             {"data_offsets of 'a' is not a list [begin, end]"});
  expect_bad(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
             12, {"tensors 'a' [0, 8] and 'b' [4, 12] overlap"});
  expect_bad(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
             R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
             12, {"bytes [4, 8] of the data belong to no tensor"});
  expect_bad(ok, 12, {"bytes [8, 12] of the data belong to no tensor"});

  // A real file cut short.
  save_checkpoint(p, some_params(7));
  const std::string full = bytes_of(p);
  {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << full.substr(0, full.size() - 10);
  }
  EXPECT_ERROR_HAS(load_checkpoint(p), "bad.safetensors", "lie outside the");
}

TEST(Safetensors, MalformedTrainStateIsAClearError) {
  TempDir tmp;
  const std::string p = tmp.file("state.safetensors");
  const NamedTensors params = {{"w", Tensor::ones({2})}};
  auto with_meta = [&](std::map<std::string, std::string> meta) {
    write_safetensors(p, params, meta);
    return error_of([&] { load_checkpoint(p); });
  };
  const std::map<std::string, std::string> good = {{"train_state/step", "3"},
                                                   {"train_state/epoch", "1"},
                                                   {"train_state/batch_in_epoch", "0"},
                                                   {"train_state/seed", "9"}};
  EXPECT_EQ(with_meta(good), "(no tg::Error thrown)");
  auto m = good;
  m.erase("train_state/seed");
  EXPECT_CONTAINS(with_meta(m), "the metadata has no 'train_state/seed'");
  m = good;
  m["train_state/step"] = "3x";
  EXPECT_CONTAINS(with_meta(m), "metadata 'train_state/step' is '3x', expected an integer");
  m = good;
  m["train_state/seed"] = "-1";
  EXPECT_CONTAINS(with_meta(m), "expected an unsigned integer");
  m = good;
  m["train_state/scalars/lr"] = "fast";
  EXPECT_CONTAINS(with_meta(m), "'train_state/scalars/lr' is 'fast', expected a number");
  m = good;
  m["train_state/momentum_buffer"] = "[{\"name\":\"w\"}]";
  EXPECT_CONTAINS(with_meta(m), "an entry is not {name, dtype, shape, data_base64}");
  m["train_state/momentum_buffer"] =
      R"([{"name":"w","dtype":"F32","shape":[2],"data_base64":"AAAA"}])";
  EXPECT_CONTAINS(with_meta(m), "momentum buffer 'w' is not the base64 form of the 8 bytes");
  m["train_state/momentum_buffer"] =
      R"([{"name":"w","dtype":"F32","shape":[2],"data_base64":"AAAAAAA*AAA="}])";
  EXPECT_CONTAINS(with_meta(m), "not the base64 form");
  m["train_state/momentum_buffer"] =
      R"([{"name":"w","dtype":"F32","shape":[2],"data_base64":"AACAPwAAAEA="}])";
  EXPECT_EQ(with_meta(m), "(no tg::Error thrown)");
  const Checkpoint ck = load_checkpoint(p);
  ASSERT_TRUE(ck.state.has_value());
  EXPECT_EQ(ck.state->momentum_buffers.at(0).second.to_vector<float>(),
            (std::vector<float>{1.0f, 2.0f}));
}

TEST(Safetensors, SavesTensorsFromTheGpu) {
  TG_SKIP_WITHOUT_GPU();
  TempDir tmp;
  const NamedTensors host = some_params(8);
  NamedTensors dev;
  for (const auto& [name, t] : host) dev.emplace_back(name, t.cuda());
  TrainState st = make_state();
  for (auto& b : st.momentum_buffers) {
    if (b.second.defined()) b.second = b.second.cuda();
  }
  save_checkpoint(tmp.file("g.safetensors"), dev, &st);
  const Checkpoint ck = load_checkpoint(tmp.file("g.safetensors"));
  expect_same(ck.params, host);
  EXPECT_EQ(ck.state->momentum_buffers.at(0).second.to_vector<double>(),
            make_state().momentum_buffers.at(0).second.to_vector<double>());
}

TEST(Safetensors, PythonStandardLibraryReadsTheBytes) {
  if (std::system("python3 -c 'import json, struct' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3 is not installed";
  }
  TempDir tmp;
  const std::string path = tmp.file("ck.safetensors");
  const NamedTensors params = some_params(9);
  TrainState st = make_state();
  save_checkpoint(path, params, &st);
  const CommandResult r = run_command(std::string("python3 ") + TG_SOURCE_DIR +
                                      "/tests/io/read_safetensors.py " + path);
  ASSERT_EQ(r.code, 0) << r.output;

  std::map<std::string, std::vector<double>> values;
  std::map<std::string, std::string> shapes, meta;
  std::istringstream lines(r.output);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream ls(line);
    std::string kind, name, dtype, shape;
    ls >> kind;
    if (kind == "meta") {
      const std::string rest = line.substr(5);
      meta[rest.substr(0, rest.find('='))] = rest.substr(rest.find('=') + 1);
      continue;
    }
    ASSERT_EQ(kind, "tensor") << line;
    ls >> name >> dtype >> shape;
    shapes[name] = dtype + " " + shape;
    for (std::string v; ls >> v;) values[name].push_back(std::strtod(v.c_str(), nullptr));
  }
  ASSERT_EQ(shapes.size(), params.size()) << r.output;
  EXPECT_EQ(shapes["conv.weight"], "F32 [4,3,3,3]");
  EXPECT_EQ(shapes["a.f64"], "F64 [2,5]");
  EXPECT_EQ(shapes["empty"], "F32 [0,3]");
  EXPECT_EQ(shapes["scalar"], "F64 []");
  for (const auto& [name, t] : params) {
    if (t.numel() > 0) EXPECT_EQ(values[name], t.to_vector<double>()) << name;  // exact
  }
  EXPECT_EQ(meta["train_state/step"], "1234567890123");
  EXPECT_EQ(meta["train_state/config_json"], st.config_json);
  EXPECT_EQ(meta["tapegrad_format"], "checkpoint");
}
