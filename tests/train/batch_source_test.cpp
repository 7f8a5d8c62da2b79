// The Trainer's batch sources: host, streaming (copy stream + events) and device-resident (gather)
// yield the reader's batches bit for bit; the streaming source never lets the reader refill a
// pinned buffer whose copy is still queued.
#include "train/batch_source.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "core/cuda_context.h"
#include "io/dataset.h"
#include "nn/model.h"
#include "test_utils.h"
#include "train/trainer.h"
#ifdef TG_WITH_CUDA
#include "train/batch_source_cuda.h"
#endif

namespace tg {
namespace {

using testing::TempDir;

// x (n, 3, 5, 7), y (n, 2, 3, 5): rows of 420 and 120 bytes (float32), not multiples of 16, so the
// gather takes its narrow path; float64 rows (840, 240) do too.
std::string write_data(const TempDir& tmp, int64_t n) {
  const std::string path = tmp.file("data.h5");
  Tensor x = Tensor::randn({n, 3, 5, 7}, 11);
  Tensor y = Tensor::randn({n, 2, 3, 5}, 12);
  io::write_dataset(path, x, y);
  return path;
}

// The same shapes stored as float16 / bfloat16 (x: 105 values a row, an odd count), uncompressed
// (direct reads) or gzip-compressed (through HDF5); sample 0 of x is scaled into float16's
// subnormals and holds +-0.
std::string write_half_data(const TempDir& tmp, int64_t n, io::ElementType type, int level) {
  const std::string path =
      tmp.file(std::string(io::element_type_name(type)) + std::to_string(level) + ".h5");
  Tensor x = Tensor::randn({n, 3, 5, 7}, 11);
  Tensor y = Tensor::randn({n, 2, 3, 5}, 12);
  float* p = x.data<float>();
  for (int i = 0; i < 105; ++i) p[i] *= 1e-6f;
  p[0] = 0.0f;
  p[1] = -0.0f;
  io::DatasetWriterOptions wo;
  wo.dtype = type;
  wo.compression_level = level;
  io::write_dataset(path, x, y, wo);
  return path;
}

io::DatasetReaderOptions options(const std::string& path, DType dtype = DType::Float32) {
  io::DatasetReaderOptions o;
  o.path = path;
  o.batch_size = 6;
  o.val_fraction = 0.2;
  o.seed = 5;
  o.dtype = dtype;
  return o;
}

void expect_same_bits(const io::Batch& got, const io::Batch& want, const std::string& where) {
  SCOPED_TRACE(where);
  ASSERT_TRUE(got.x.defined() && got.y.defined());
  EXPECT_EQ(got.indices, want.indices);
  EXPECT_EQ(got.index_in_epoch, want.index_in_epoch);
  EXPECT_EQ(got.validation, want.validation);
  ASSERT_EQ(got.x.shape(), want.x.shape());
  ASSERT_EQ(got.y.shape(), want.y.shape());
  Tensor gx = got.x.cpu(), gy = got.y.cpu(), wx = want.x.cpu(), wy = want.y.cpu();
  EXPECT_EQ(std::memcmp(gx.raw_data(), wx.raw_data(), wx.nbytes()), 0) << "x differs";
  EXPECT_EQ(std::memcmp(gy.raw_data(), wy.raw_data(), wy.nbytes()), 0) << "y differs";
}

// Every batch of two epochs (the second resumed at batch 2) and two validation passes.
void expect_like_reader(train::BatchSource& src, io::DatasetReader& ref_reader) {
  for (int64_t epoch : {0, 1}) {
    const int64_t skip = epoch == 1 ? 2 : 0;
    src.start_epoch(epoch, skip);
    ref_reader.start_epoch(epoch, skip);
    io::Batch got, want;
    int64_t count = 0;
    while (ref_reader.next(want)) {
      ASSERT_TRUE(src.next(got)) << "source ended early at batch " << count;
      expect_same_bits(got, want,
                       "epoch " + std::to_string(epoch) + " batch " + std::to_string(count));
      ++count;
    }
    EXPECT_FALSE(src.next(got));
    EXPECT_EQ(count, ref_reader.num_train_batches() - skip);
    src.start_val();
    ref_reader.start_val();
    int64_t vcount = 0;
    while (ref_reader.next_val(want)) {
      ASSERT_TRUE(src.next_val(got));
      expect_same_bits(got, want, "validation batch " + std::to_string(vcount++));
    }
    EXPECT_FALSE(src.next_val(got));
    EXPECT_GT(vcount, 0);
  }
}

TEST(BatchSource, ParsesTheCacheModeAndNamesTheChoices) {
  EXPECT_EQ(train::parse_data_cache("auto"), train::DataCache::Auto);
  EXPECT_EQ(train::parse_data_cache("device"), train::DataCache::Device);
  EXPECT_EQ(train::parse_data_cache("off"), train::DataCache::Off);
  EXPECT_ERROR_HAS(train::parse_data_cache("gpu"), "'gpu'", "auto, device or off");
}

TEST(BatchSource, CacheBytesAreTheWholeDatasetInTheReadersDtype) {
  TempDir tmp;
  const std::string path = write_data(tmp, 23);
  io::DatasetReader r32(options(path)), r64(options(path, DType::Float64));
  EXPECT_EQ(train::device_cache_bytes(r32), size_t(23 * (105 + 30) * 4));
  EXPECT_EQ(train::device_cache_bytes(r64), size_t(23 * (105 + 30) * 8));
  // Half-width data is cached as its 16-bit values, in 4-byte words: x's 2415 values take 1208.
  io::DatasetReader r16(options(write_half_data(tmp, 23, io::ElementType::Float16, 0)));
  EXPECT_EQ(train::device_cache_bytes(r16), size_t((1208 + 345) * 4));
}

TEST(BatchSource, EpochBatchesAreWhatTheReaderDelivers) {
  TempDir tmp;
  const std::string path = write_data(tmp, 41);
  for (int shards : {1, 3}) {
    for (int r = 0; r < shards; ++r) {
      io::DatasetReaderOptions o = options(path);
      o.batch_size = 7;
      o.shard_count = shards;
      o.shard_index = r;
      io::DatasetReader reader(o);
      auto batches = reader.epoch_batches(3);
      reader.start_epoch(3);
      io::Batch b;
      size_t i = 0;
      while (reader.next(b)) {
        ASSERT_LT(i, batches.size());
        EXPECT_EQ(b.indices, batches[i]) << "shard " << r << " of " << shards << ", batch " << i;
        ++i;
      }
      EXPECT_EQ(i, batches.size());
      auto val = reader.val_batches();
      reader.start_val();
      i = 0;
      while (reader.next_val(b)) EXPECT_EQ(b.indices, val[i++]);
      EXPECT_EQ(i, val.size());
    }
  }
}

TEST(BatchSource, CpuTrainingTakesTheReadersBatches) {
  TempDir tmp;
  const std::string path = write_data(tmp, 31);
  io::DatasetReader reader(options(path)), ref(options(path));
  auto src = train::make_batch_source(reader, Device::CPU);
  EXPECT_EQ(src->describe(), "host");
  EXPECT_EQ(src->device_bytes(), 0u);
  expect_like_reader(*src, ref);
}

TEST(BatchSource, ViewRowsSharesStorageAndChecksBounds) {
  Tensor t = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {4, 3});
  Tensor v = t.view_rows(1, 2);
  EXPECT_EQ(v.shape(), (Shape{2, 3}));
  EXPECT_EQ(v.to_vector<float>(), (std::vector<float>{3, 4, 5, 6, 7, 8}));
  v.fill_(-1);
  EXPECT_EQ(t.to_vector<float>()[3], -1.0f);
  EXPECT_EQ(t.to_vector<float>()[9], 9.0f);
  EXPECT_EQ(t.view_rows(4, 0).numel(), 0);
  EXPECT_ERROR_HAS(t.view_rows(3, 2), "view_rows", "[3, 3 + 2)", "4 rows");
  EXPECT_ERROR_HAS(t.view_rows(-1, 1), "view_rows");
  Tensor w = Tensor::zeros({2, 2}).set_requires_grad();
  EXPECT_ERROR_HAS(w.view_rows(0, 1), "autograd");
}

TEST(BatchSourceCuda, StreamingAndDeviceResidentEqualTheReaderBitForBit) {
  TG_SKIP_WITHOUT_GPU();
  TempDir tmp;
  const std::string path = write_data(tmp, 47);
  for (DType dt : {DType::Float32, DType::Float64}) {
    SCOPED_TRACE(dtype_name(dt));
    io::DatasetReader r1(options(path, dt)), r2(options(path, dt)), ref(options(path, dt));
    auto streaming = train::make_streaming_source(r1);
    EXPECT_EQ(streaming->describe(), "streaming");
    expect_like_reader(*streaming, ref);
    int64_t loaded = -1, total = -1;
    auto cached = train::make_device_cache_source(r2, [&](int64_t d, int64_t n) {
      loaded = d;
      total = n;
    });
    EXPECT_EQ(loaded, 47);
    EXPECT_EQ(total, 47);
    EXPECT_EQ(cached->device_bytes(), train::device_cache_bytes(r2));
    EXPECT_CONTAINS(cached->describe(), "device-resident");
    expect_like_reader(*cached, ref);
  }
}

// float16 / bfloat16 files: streamed (16-bit values copied, widened on the copy stream) and
// device-resident (16-bit cache, widening gather) batches equal the CPU's widening bit for bit.
TEST(BatchSourceCuda, HalfWidthDataWidenedOnTheGpuEqualsTheCpuConversion) {
  TG_SKIP_WITHOUT_GPU();
  TempDir tmp;
  for (io::ElementType type : {io::ElementType::Float16, io::ElementType::BFloat16}) {
    for (int level : {0, 1}) {
      const std::string path = write_half_data(tmp, 47, type, level);
      for (DType dt : {DType::Float32, DType::Float64}) {
        SCOPED_TRACE(std::string(io::element_type_name(type)) + (level ? " gzip " : " plain ") +
                     dtype_name(dt));
        io::DatasetReader r1(options(path, dt)), r2(options(path, dt)), ref(options(path, dt));
        auto streaming = train::make_streaming_source(r1);
        expect_like_reader(*streaming, ref);
        auto cached = train::make_device_cache_source(r2);
        EXPECT_EQ(cached->device_bytes(), train::device_cache_bytes(r2));
        EXPECT_LT(cached->device_bytes(), size_t(47 * (105 + 30) * 4));
        expect_like_reader(*cached, ref);
      }
    }
  }
}

TEST(BatchSourceCuda, AutoPicksTheCacheWhenItFitsAndDeviceRefusesWhatDoesNot) {
  TG_SKIP_WITHOUT_GPU();
  TempDir tmp;
  const std::string path = write_data(tmp, 20);
  io::DatasetReader reader(options(path));
  train::BatchSourceOptions o;
  EXPECT_CONTAINS(train::make_batch_source(reader, Device::CUDA, o)->describe(), "device-resident");
  o.cache = train::DataCache::Off;
  EXPECT_EQ(train::make_batch_source(reader, Device::CUDA, o)->describe(), "streaming");
  o.step_bytes = size_t(1) << 60;  // a step larger than any GPU: nothing is left for a cache
  o.cache = train::DataCache::Auto;
  EXPECT_EQ(train::make_batch_source(reader, Device::CUDA, o)->describe(), "streaming");
  o.cache = train::DataCache::Device;
  EXPECT_ERROR_HAS(train::make_batch_source(reader, Device::CUDA, o), "--data-cache device",
                   "MiB are free", "data.h5");
}

#ifdef TG_WITH_CUDA
// The copies queue behind a busy compute stream (a spinning kernel per batch) while the host runs
// ahead; if the source let the reader refill a pinned buffer before its copy ran, the device would
// receive a later batch's values. Each device batch is cloned on the device and compared at the
// end. Float32 data (pinned batch tensors) and float16 data (pinned buffers of 16-bit values).
TEST(BatchSourceCuda, APinnedBufferIsRefilledOnlyAfterItsCopyRan) {
  TG_SKIP_WITHOUT_GPU();
  TempDir tmp;
  for (const std::string& path :
       {write_data(tmp, 60), write_half_data(tmp, 60, io::ElementType::Float16, 0)}) {
    SCOPED_TRACE(path);
    io::DatasetReaderOptions o = options(path);
    o.val_fraction = 0;
    o.batch_size = 4;
    io::DatasetReader reader(o), ref(o);
    auto src = train::make_streaming_source(reader);
    src->start_epoch(0, 0);
    std::vector<Tensor> xs, ys;
    io::Batch b;
    while (src->next(b)) {
      train::detail::spin_stream_cuda(20.0);
      xs.push_back(b.x.clone());
      ys.push_back(b.y.clone());
    }
    cuda::synchronize();
    ref.start_epoch(0);
    for (size_t i = 0; i < xs.size(); ++i) {
      ASSERT_TRUE(ref.next(b));
      EXPECT_EQ(testing::max_abs_diff(xs[i].cpu(), b.x), 0.0) << "x of batch " << i;
      EXPECT_EQ(testing::max_abs_diff(ys[i].cpu(), b.y), 0.0) << "y of batch " << i;
    }
    EXPECT_EQ(int64_t(xs.size()), ref.num_train_batches());
  }
}
#endif

}  // namespace
}  // namespace tg

namespace tg {
namespace {

// The same run with the data streamed and device-resident: the same losses at every step and the
// same final parameters, bit for bit (and a stop + resume inside an epoch in the cached mode).
TEST(BatchSourceCuda, TrainerRunsAreBitIdenticalStreamedAndDeviceResident) {
  TG_SKIP_WITHOUT_GPU();
  testing::TempDir tmp;
  const std::string data = write_data(tmp, 90);
  auto run = [&](const std::string& cache, const std::string& out, int64_t stop_at,
                 const std::string& resume) {
    train::TrainerConfig c;
    c.data = data;
    c.device = "cuda";
    c.batch_size = 8;
    c.groups = 2;
    c.epochs = 2;
    c.log_every = 1;
    c.val_fraction = 0.2;
    c.tf32 = "off";
    c.verbose = false;
    c.data_cache = cache;
    c.output = tmp.file(out);
    c.resume = resume;
    train::Trainer t(c);
    if (stop_at > 0)
      t.on_step([&](const train::StepInfo& s) {
        if (s.step == stop_at) t.request_stop();
      });
    t.run();
    std::vector<double> losses;
    std::ifstream f(c.output + "/metrics.jsonl");
    std::string line;
    while (std::getline(f, line)) {
      const auto p = line.find("\"loss\":");
      if (p != std::string::npos && line.find("\"type\":\"step\"") != std::string::npos)
        losses.push_back(std::stod(line.substr(p + 7)));
    }
    std::vector<float> params;
    for (const auto& np : t.model().named_parameters()) {
      auto v = np.second.to_vector<float>();
      params.insert(params.end(), v.begin(), v.end());
    }
    return std::make_pair(losses, params);
  };
  const auto streamed = run("off", "streamed", 0, "");
  const auto cached = run("device", "cached", 0, "");
  ASSERT_EQ(streamed.first.size(), size_t(2 * 9));  // 72 training samples: 9 batches an epoch
  EXPECT_EQ(streamed.first, cached.first);
  EXPECT_EQ(streamed.second, cached.second);
  run("device", "resumed", 12, "");
  const auto resumed = run("device", "resumed", 0, tmp.file("resumed") + "/last.h5");
  EXPECT_EQ(resumed.second, streamed.second);
}

}  // namespace
}  // namespace tg
