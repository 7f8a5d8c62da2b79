// Tests of the dataset reader and writers: batches equal the written rows, epoch order, validation
// split, exact resume, prefetching, NaN detection and errors for bad files.
#include "io/dataset.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "io/hdf5.h"
#include "test_utils.h"

namespace fs = std::filesystem;
using namespace tg;
using namespace tg::io;
using namespace tg::testing;

namespace {

/// Sample i of a (N, ...) tensor, as doubles.
std::vector<double> sample(const Tensor& t, int64_t i) {
  auto all = t.to_vector<double>();
  size_t per = all.size() / size_t(t.size(0));
  return std::vector<double>(all.begin() + i * int64_t(per), all.begin() + (i + 1) * int64_t(per));
}

/// A small data set: x (N, 2, 3, 4), y (N, 3, 2, 2), random normal values (never zero).
struct Data {
  Tensor x, y;
  std::string path;
};

Data make_data(const TempDir& tmp, int64_t n, const std::string& name = "data.h5") {
  Data d{Tensor::randn({n, 2, 3, 4}, 100 + uint64_t(n)),
         Tensor::randn({n, 3, 2, 2}, 200 + uint64_t(n)), tmp.file(name)};
  write_dataset(d.path, d.x, d.y);
  return d;
}

/// Checks that every row of the batch equals the written row it names.
void expect_batch_matches(const Batch& b, const Data& d) {
  ASSERT_EQ(int64_t(b.indices.size()), b.x.size(0));
  ASSERT_EQ(b.x.size(0), b.y.size(0));
  EXPECT_EQ(b.x.dtype(), DType::Float32);
  for (size_t j = 0; j < b.indices.size(); ++j) {
    EXPECT_EQ(sample(b.x, int64_t(j)), sample(d.x, b.indices[j])) << "row " << b.indices[j];
    EXPECT_EQ(sample(b.y, int64_t(j)), sample(d.y, b.indices[j])) << "row " << b.indices[j];
  }
}

std::vector<Batch> read_epoch(DatasetReader& r, int64_t epoch, int64_t skip = 0) {
  r.start_epoch(epoch, skip);
  std::vector<Batch> out;
  Batch b;
  while (r.next(b)) out.push_back(b);
  return out;
}

std::vector<int64_t> flat_indices(const std::vector<Batch>& batches) {
  std::vector<int64_t> out;
  for (const auto& b : batches) out.insert(out.end(), b.indices.begin(), b.indices.end());
  return out;
}

class ReaderTest : public ::testing::TestWithParam<bool> {};  // parameter: prefetch

}  // namespace

TEST(Dataset, InspectReportsShapesAndTypes) {
  TempDir tmp;
  Data d = make_data(tmp, 9);
  DatasetInfo info = inspect_dataset(d.path);
  EXPECT_EQ(info.x_shape, (Shape{9, 2, 3, 4}));
  EXPECT_EQ(info.y_shape, (Shape{9, 3, 2, 2}));
  EXPECT_EQ(info.x_type, ElementType::Float32);
  EXPECT_EQ(info.num_samples(), 9);
  // By default the written file is chunked by whole samples (as many as fit in 64 KiB: all 9 here)
  // and filtered (gzip, with the byte shuffle); with compression off it has no filter at all.
  h5::File f = h5::File::open(d.path);
  Shape chunk = f.open_dataset("x").chunk();
  EXPECT_EQ(chunk, (Shape{9, 2, 3, 4}));
  const h5::RawLayout filtered = f.open_dataset("x").raw_layout(DType::Float32);
  EXPECT_FALSE(filtered.direct);
  EXPECT_CONTAINS(filtered.why_not, "filters");
  DatasetWriterOptions plain;
  plain.compression_level = 0;
  write_dataset(tmp.file("plain.h5"), d.x, d.y, plain);
  EXPECT_TRUE(h5::File::open(tmp.file("plain.h5")).open_dataset("x").raw_layout(DType::Float32).direct);
  // and the compression is real: constant samples shrink far below their 96 bytes each
  Tensor ones = Tensor::ones({2000, 2, 3, 4});
  write_dataset(tmp.file("ones.h5"), ones, Tensor::ones({2000, 3, 2, 2}));
  write_dataset(tmp.file("ones_plain.h5"), ones, Tensor::ones({2000, 3, 2, 2}), plain);
  EXPECT_LT(fs::file_size(tmp.file("ones.h5")) * 10, fs::file_size(tmp.file("ones_plain.h5")));
}

TEST_P(ReaderTest, UnshuffledBatchesAreTheRowsInOrder) {
  TempDir tmp;
  Data d = make_data(tmp, 10);
  DatasetReaderOptions o;
  o.path = d.path;
  o.batch_size = 4;
  o.shuffle = false;
  o.prefetch = GetParam();
  DatasetReader r(o);
  EXPECT_EQ(r.num_train_batches(), 3);
  auto batches = read_epoch(r, 0);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0].indices, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(batches[2].indices, (std::vector<int64_t>{8, 9}));
  for (size_t i = 0; i < batches.size(); ++i) {
    EXPECT_EQ(batches[i].epoch, 0);
    EXPECT_EQ(batches[i].index_in_epoch, int64_t(i));
    EXPECT_FALSE(batches[i].validation);
    expect_batch_matches(batches[i], d);
  }
  // Exhausted epochs keep answering false.
  Batch b;
  EXPECT_FALSE(r.next(b));
  // drop_last drops the short last batch.
  o.drop_last = true;
  DatasetReader r2(o);
  EXPECT_EQ(r2.num_train_batches(), 2);
  EXPECT_EQ(read_epoch(r2, 3).size(), 2u);
}

TEST_P(ReaderTest, ShuffledEpochsArePermutationsFromSeedAndEpoch) {
  TempDir tmp;
  Data d = make_data(tmp, 37);
  DatasetReaderOptions o;
  o.path = d.path;
  o.batch_size = 5;
  o.shuffle = true;
  o.seed = 1234;
  o.prefetch = GetParam();
  DatasetReader r(o);
  auto e0 = read_epoch(r, 0);
  ASSERT_EQ(e0.size(), 8u);
  for (const auto& b : e0) expect_batch_matches(b, d);
  // Every index exactly once; each batch ascending; batch sets follow epoch_order.
  auto idx = flat_indices(e0);
  std::vector<int64_t> sorted = idx;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> all(37);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(sorted, all);
  auto order = r.epoch_order(0);
  EXPECT_NE(order, all);
  for (size_t b = 0; b < e0.size(); ++b) {
    EXPECT_TRUE(std::is_sorted(e0[b].indices.begin(), e0[b].indices.end()));
    std::vector<int64_t> expected(order.begin() + b * 5,
                                  order.begin() + std::min<size_t>(37, b * 5 + 5));
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(e0[b].indices, expected);
  }
  // Same seed, same epoch: same batches (also from a second reader).
  DatasetReader r_again(o);
  EXPECT_EQ(flat_indices(read_epoch(r_again, 0)), idx);
  EXPECT_EQ(flat_indices(read_epoch(r, 0)), idx);
  // Another epoch or another seed: another order, still a permutation.
  auto e1 = flat_indices(read_epoch(r, 1));
  EXPECT_NE(e1, idx);
  std::sort(e1.begin(), e1.end());
  EXPECT_EQ(e1, all);
  o.seed = 1235;
  DatasetReader r_other(o);
  EXPECT_NE(flat_indices(read_epoch(r_other, 0)), idx);
}

TEST_P(ReaderTest, ValidationSplitIsTheTailInFileOrder) {
  TempDir tmp;
  Data d = make_data(tmp, 23);
  DatasetReaderOptions o;
  o.path = d.path;
  o.batch_size = 4;
  o.val_fraction = 0.25;  // floor(23 * 0.25) = 5
  o.seed = 7;
  o.prefetch = GetParam();
  DatasetReader r(o);
  EXPECT_EQ(r.num_val(), 5);
  EXPECT_EQ(r.num_train(), 18);
  EXPECT_EQ(r.num_train_batches(), 5);
  EXPECT_EQ(r.num_val_batches(), 2);
  auto train = flat_indices(read_epoch(r, 0));
  std::sort(train.begin(), train.end());
  std::vector<int64_t> first18(18);
  std::iota(first18.begin(), first18.end(), 0);
  EXPECT_EQ(train, first18);

  // Validation interleaved with a training epoch: both streams keep their place.
  r.start_epoch(2);
  Batch t0, t1, v;
  ASSERT_TRUE(r.next(t0));
  r.start_val();
  std::vector<int64_t> val_idx;
  int64_t k = 0;
  while (r.next_val(v)) {
    EXPECT_TRUE(v.validation);
    EXPECT_EQ(v.epoch, -1);
    EXPECT_EQ(v.index_in_epoch, k++);
    expect_batch_matches(v, d);
    val_idx.insert(val_idx.end(), v.indices.begin(), v.indices.end());
  }
  EXPECT_EQ(val_idx, (std::vector<int64_t>{18, 19, 20, 21, 22}));
  ASSERT_TRUE(r.next(t1));
  EXPECT_EQ(t1.index_in_epoch, 1);
  auto e2 = read_epoch(r, 2);
  EXPECT_EQ(t0.indices, e2[0].indices);
  EXPECT_EQ(t1.indices, e2[1].indices);
}

TEST_P(ReaderTest, SkipBatchesResumesExactly) {
  TempDir tmp;
  Data d = make_data(tmp, 29);
  DatasetReaderOptions o;
  o.path = d.path;
  o.batch_size = 4;
  o.seed = 99;
  o.prefetch = GetParam();
  DatasetReader r(o);
  auto full = read_epoch(r, 5);
  ASSERT_EQ(full.size(), 8u);
  for (int64_t skip : {0, 1, 3, 7, 8}) {
    DatasetReader resumed(o);  // a fresh process resuming from a checkpoint
    auto rest = read_epoch(resumed, 5, skip);
    ASSERT_EQ(rest.size(), full.size() - size_t(skip)) << "skip " << skip;
    for (size_t i = 0; i < rest.size(); ++i) {
      EXPECT_EQ(rest[i].indices, full[size_t(skip) + i].indices);
      EXPECT_EQ(rest[i].index_in_epoch, int64_t(skip) + int64_t(i));
      EXPECT_EQ(sample(rest[i].x, 0), sample(full[size_t(skip) + i].x, 0));
    }
  }
  EXPECT_ERROR_HAS(r.start_epoch(5, 9), "skip_batches must be in [0, 8]", "got 9");
  EXPECT_ERROR_HAS(r.start_epoch(-1), "epoch must be >= 0");
}

TEST_P(ReaderTest, RestartingMidEpochDiscardsThePrefetchedBatch) {
  TempDir tmp;
  Data d = make_data(tmp, 20);
  DatasetReaderOptions o;
  o.path = d.path;
  o.batch_size = 3;
  o.prefetch = GetParam();
  DatasetReader r(o);
  auto e1 = read_epoch(r, 1);
  r.start_epoch(0);
  Batch b;
  ASSERT_TRUE(r.next(b));
  r.start_epoch(1);  // the batch prefetched for epoch 0 must not leak into epoch 1
  std::vector<Batch> got;
  while (r.next(b)) got.push_back(b);
  ASSERT_EQ(got.size(), e1.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].indices, e1[i].indices);
    EXPECT_EQ(got[i].epoch, 1);
  }
}

TEST_P(ReaderTest, HeldBatchesStayValidWhileReadingOn) {
  TempDir tmp;
  Data d = make_data(tmp, 30);
  DatasetReaderOptions o;
  o.path = d.path;
  o.batch_size = 3;
  o.prefetch = GetParam();
  DatasetReader r(o);
  r.start_epoch(0);
  Batch first;
  ASSERT_TRUE(r.next(first));
  Tensor kept_x = first.x;  // the caller keeps a reference; its buffer must never be reused
  auto kept_values = kept_x.to_vector<float>();
  Batch b;
  int count = 0;
  while (r.next(b)) {
    expect_batch_matches(b, d);
    EXPECT_FALSE(b.x.same(kept_x));
    ++count;
  }
  EXPECT_EQ(count, 9);
  EXPECT_EQ(kept_x.to_vector<float>(), kept_values);
  expect_batch_matches(first, d);
}

TEST_P(ReaderTest, NaNInDataNamesFileDatasetAndSample) {
  TempDir tmp;
  const std::string path = tmp.file("nan.h5");
  Tensor x = Tensor::randn({12, 1, 2, 2}, 3);
  Tensor y = Tensor::randn({12, 1, 1, 1}, 4);
  y.data<float>()[7] = std::numeric_limits<float>::quiet_NaN();  // sample 7 of y
  DatasetWriterOptions wo;
  wo.check_finite = false;
  write_dataset(path, x, y, wo);
  DatasetReaderOptions o;
  o.path = path;
  o.batch_size = 4;
  o.shuffle = false;
  o.prefetch = GetParam();
  DatasetReader r(o);
  r.start_epoch(0);
  Batch b;
  ASSERT_TRUE(r.next(b));  // samples 0..3 are fine
  EXPECT_ERROR_HAS(r.next(b), "dataset 'y'", "nan.h5", "sample 7", "non-finite", "nan");
  ASSERT_TRUE(r.next(b));  // the failed batch counts as delivered; reading goes on
  EXPECT_EQ(b.indices, (std::vector<int64_t>{8, 9, 10, 11}));
  EXPECT_FALSE(r.next(b));
  // Inf in x is caught the same way, and check_finite = false lets it through.
  const std::string path2 = tmp.file("inf.h5");
  x.data<float>()[2 * 4 + 1] = -std::numeric_limits<float>::infinity();  // sample 2, element 1
  y.data<float>()[7] = 1.0f;
  write_dataset(path2, x, y, wo);
  o.path = path2;
  DatasetReader r2(o);
  r2.start_epoch(0);
  EXPECT_ERROR_HAS(r2.next(b), "dataset 'x'", "inf.h5", "sample 2", "-inf", "element 1 of 4");
  o.check_finite = false;
  DatasetReader r3(o);
  r3.start_epoch(0);
  ASSERT_TRUE(r3.next(b));
  EXPECT_TRUE(std::isinf(b.x.data<float>()[2 * 4 + 1]));
}

INSTANTIATE_TEST_SUITE_P(Prefetch, ReaderTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "prefetch" : "sync"; });

TEST(Dataset, ReadArbitraryRowsInRequestedOrder) {
  TempDir tmp;
  Data d = make_data(tmp, 15);
  DatasetReaderOptions o;
  o.path = d.path;
  DatasetReader r(o);
  std::vector<int64_t> want = {9, 2, 14, 2, 0};
  Batch b = r.read(want);
  EXPECT_EQ(b.indices, want);
  expect_batch_matches(b, d);
  EXPECT_ERROR_HAS(r.read({3, 15}), "index 15 is outside [0, 15)");
}

TEST(Dataset, Float64FilesAndFloat64Batches) {
  TempDir tmp;
  const std::string path = tmp.file("f64.h5");
  Tensor x = Tensor::randn({6, 1, 3, 3}, 11, DType::Float64);
  Tensor y = Tensor::randn({6, 2, 1, 1}, 12, DType::Float64);
  DatasetWriterOptions wo;
  wo.dtype = ElementType::Float64;
  write_dataset(path, x, y, wo);
  EXPECT_EQ(inspect_dataset(path).x_type, ElementType::Float64);
  DatasetReaderOptions o;
  o.path = path;
  o.batch_size = 6;
  o.shuffle = false;
  o.dtype = DType::Float64;
  DatasetReader r64(o);
  r64.start_epoch(0);
  Batch b;
  ASSERT_TRUE(r64.next(b));
  EXPECT_EQ(b.x.dtype(), DType::Float64);
  EXPECT_EQ(b.x.to_vector<double>(), x.to_vector<double>());  // exact
  o.dtype = DType::Float32;
  DatasetReader r32(o);
  r32.start_epoch(0);
  ASSERT_TRUE(r32.next(b));
  EXPECT_EQ(b.x.dtype(), DType::Float32);
  EXPECT_EQ(b.y.to_vector<float>(), y.to_vector<float>());  // converted like a C cast
}

TEST(Dataset, IncrementalWriterEqualsOneShotWrite) {
  TempDir tmp;
  Tensor x = Tensor::randn({10, 2, 2, 3}, 21);
  Tensor y = Tensor::randn({10, 1, 2, 2}, 22);
  const std::string path = tmp.file("inc.h5");
  {
    DatasetWriterOptions wo;
    wo.x_name = "inputs";
    wo.y_name = "targets";
    wo.chunk_rows = 3;
    wo.compression_level = 4;
    DatasetWriter w(path, {2, 2, 3}, {1, 2, 2}, 10, wo);
    auto xs = x.to_vector<float>(), ys = y.to_vector<float>();
    for (int64_t start : {0, 4, 7}) {  // batches of 4, 3, 3
      int64_t n = start == 0 ? 4 : 3;
      w.append(Tensor::from_vector(
                   std::vector<float>(xs.begin() + start * 12, xs.begin() + (start + n) * 12),
                   {n, 2, 2, 3}),
               Tensor::from_vector(
                   std::vector<float>(ys.begin() + start * 4, ys.begin() + (start + n) * 4),
                   {n, 1, 2, 2}));
      EXPECT_FALSE(fs::exists(path)) << "the file appears only on close()";
    }
    EXPECT_EQ(w.written(), 10);
    EXPECT_ERROR_HAS(w.append(x, y), "10 of 10 samples written", "cannot append 10 more");
    w.close();
  }
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"inc.h5"});
  h5::File f = h5::File::open(path);
  EXPECT_EQ(f.open_dataset("inputs").chunk()[0], 3);
  EXPECT_EQ(f.open_dataset("inputs").read_tensor().to_vector<float>(), x.to_vector<float>());
  EXPECT_EQ(f.open_dataset("targets").read_tensor().to_vector<float>(), y.to_vector<float>());
  DatasetReaderOptions o;
  o.path = path;
  o.x_name = "inputs";
  o.y_name = "targets";
  o.batch_size = 10;
  o.shuffle = false;
  DatasetReader r(o);
  r.start_epoch(0);
  Batch b;
  ASSERT_TRUE(r.next(b));
  EXPECT_EQ(b.x.to_vector<float>(), x.to_vector<float>());
}

TEST(Dataset, WriterErrorsAndUnfinishedFiles) {
  TempDir tmp;
  const std::string path = tmp.file("w.h5");
  {
    DatasetWriter w(path, {1, 2, 2}, {1, 1, 1}, 5);
    EXPECT_ERROR_HAS(w.append(Tensor::ones({2, 1, 2, 3}), Tensor::ones({2, 1, 1, 1})),
                     "expected x of shape (B, [1, 2, 2])", "[2, 1, 2, 3]");
    EXPECT_ERROR_HAS(w.append(Tensor::ones({2, 1, 2, 2}), Tensor::ones({3, 1, 1, 1})),
                     "x has 2 samples but y has 3");
    Tensor bad = Tensor::ones({2, 1, 1, 1});
    bad.data<float>()[1] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_ERROR_HAS(w.append(Tensor::ones({2, 1, 2, 2}), bad), "w.h5", "y of sample 1",
                     "non-finite");
    w.append(Tensor::ones({2, 1, 2, 2}), Tensor::ones({2, 1, 1, 1}));
    EXPECT_ERROR_HAS(w.close(), "only 2 of 5 samples were written");
    // destroyed unfinished: nothing is left behind
  }
  EXPECT_TRUE(tmp.entries().empty());
  EXPECT_ERROR_HAS(DatasetWriter(path, {1}, {1}, 0), "total_n must be >= 1");
  EXPECT_ERROR_HAS(DatasetWriter(path, {1, 0}, {1}, 3), "sample dimensions must be >= 1");
  DatasetWriterOptions same;
  same.y_name = "x";
  EXPECT_ERROR_HAS(DatasetWriter(path, {1}, {1}, 3, same), "need different names");
  EXPECT_ERROR_HAS(write_dataset(path, Tensor::ones({3, 1, 1, 1}), Tensor::ones({4, 1, 1, 1})),
                   "same first dimension");
  EXPECT_TRUE(tmp.entries().empty());
}

TEST(Dataset, BadFilesGiveClearErrors) {
  TempDir tmp;
  EXPECT_ERROR_HAS(inspect_dataset(tmp.file("none.h5")), "none.h5", "no such file");
  DatasetReaderOptions o;
  o.path = tmp.file("none.h5");
  EXPECT_ERROR_HAS(DatasetReader{o}, "none.h5", "no such file");

  const std::string garbage = tmp.file("garbage.h5");
  write_bytes(garbage, std::string(10000, '\x42'));
  EXPECT_ERROR_HAS(inspect_dataset(garbage), "garbage.h5", "not an HDF5 file");

  Data d = make_data(tmp, 8);
  EXPECT_ERROR_HAS(inspect_dataset(d.path, "x", "labels"), "no dataset 'labels'", "data.h5",
                   "root holds: x, y");
  const std::string cut = tmp.file("cut.h5");
  fs::copy_file(d.path, cut);
  fs::resize_file(cut, fs::file_size(d.path) * 2 / 3);
  EXPECT_ERROR_HAS(inspect_dataset(cut), "cut.h5", "truncated");

  const std::string rank2 = tmp.file("rank2.h5");
  {
    h5::File f = h5::File::create(rank2);
    f.write_tensor("x", Tensor::randn({10, 3}, 1));
    f.write_tensor("y", Tensor::randn({10, 1, 1, 1}, 2));
    f.create_group("g");
  }
  EXPECT_ERROR_HAS(inspect_dataset(rank2), "dataset 'x' in '", "rank2.h5",
                   "expected rank 4 (N, C, H, W), got 2", "[10, 3]");
  EXPECT_ERROR_HAS(inspect_dataset(rank2, "g", "y"), "'g'", "is not a dataset");

  const std::string mismatch = tmp.file("mismatch.h5");
  write_dataset(mismatch, Tensor::randn({4, 1, 1, 1}, 1), Tensor::randn({4, 1, 1, 1}, 2), "x",
                "y4");
  {
    h5::File f = h5::File::open(mismatch, true);
    f.write_tensor("y5", Tensor::randn({5, 1, 1, 1}, 3));
  }
  EXPECT_ERROR_HAS(inspect_dataset(mismatch, "x", "y5"), "different numbers of samples", "4", "5");

  o.path = d.path;
  o.batch_size = 0;
  EXPECT_ERROR_HAS(DatasetReader{o}, "batch_size must be >= 1");
  o.batch_size = 2;
  o.val_fraction = 1.0;
  EXPECT_ERROR_HAS(DatasetReader{o}, "val_fraction must be in [0, 1)");
  o.val_fraction = 0.95;  // floor(8 * 0.95) = 7 leaves 1
  DatasetReader ok(o);
  EXPECT_EQ(ok.num_train(), 1);
  o.val_fraction = 0.0;
  DatasetReader no_val(o);
  EXPECT_ERROR_HAS(no_val.start_val(), "has no validation set");
  Batch b;
  EXPECT_ERROR_HAS(no_val.next(b), "call start_epoch() before next()");
  EXPECT_ERROR_HAS(no_val.next_val(b), "call start_val() before next_val()");
}

TEST(Dataset, CorruptChunkIsDetectedOnRead) {
  TempDir tmp;
  const std::string path = tmp.file("corrupt.h5");
  // Uncompressed with checksums, so that sample 5's bytes can be found in the file and damaged.
  Tensor x = Tensor::randn({8, 1, 4, 4}, 31);
  float* p = x.data<float>();
  for (int i = 0; i < 16; ++i) p[5 * 16 + i] = 1234.5f + float(i);
  DatasetWriterOptions wo;
  wo.compression_level = 0;
  wo.shuffle_filter = false;
  wo.checksum = true;
  wo.chunk_rows = 1;
  write_dataset(path, x, Tensor::randn({8, 1, 1, 1}, 32), wo);
  std::string bytes;
  {
    std::ifstream f(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  std::string needle(reinterpret_cast<const char*>(p + 5 * 16), 16 * sizeof(float));
  size_t at = bytes.find(needle);
  ASSERT_NE(at, std::string::npos);
  bytes[at + 7] ^= 0x5A;
  write_bytes(path, bytes);
  DatasetReaderOptions o;
  o.path = path;
  o.batch_size = 4;
  o.shuffle = false;
  DatasetReader r(o);
  EXPECT_FALSE(r.direct_x());  // checksummed data goes through HDF5, which verifies it
  r.start_epoch(0);
  Batch b;
  ASSERT_TRUE(r.next(b));  // samples 0..3 are intact
  EXPECT_ERROR_HAS(r.next(b), "cannot read samples 4..7 of dataset 'x'", "corrupt.h5",
                   "Fletcher32");
}

TEST(Dataset, DestroyingAPrefetchingReaderMidEpochDoesNotHang) {
  TempDir tmp;
  Data d = make_data(tmp, 50);
  DatasetReaderOptions o;
  o.path = d.path;
  o.batch_size = 2;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) {
    DatasetReader r(o);
    ASSERT_TRUE(r.options().prefetch);
    r.start_epoch(0);
    Batch b;
    for (int k = 0; k < i; ++k) {
      ASSERT_TRUE(r.next(b));
      expect_batch_matches(b, d);
    }
  }
  // five readers of 25 tiny batches each: well under a second unless a destructor waits on a timeout
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
}

TEST(Dataset, BatchesArePinnedWhenCudaIsAvailable) {
  TG_SKIP_WITHOUT_GPU();
  TempDir tmp;
  Data d = make_data(tmp, 6);
  DatasetReaderOptions o;
  o.path = d.path;
  o.batch_size = 3;
  DatasetReader r(o);
  r.start_epoch(0);
  Batch b;
  ASSERT_TRUE(r.next(b));
  EXPECT_TRUE(b.x.is_pinned());
  EXPECT_TRUE(b.y.is_pinned());
  Tensor xd = b.x.to(Device::CUDA);
  EXPECT_EQ(xd.to_vector<float>(), b.x.to_vector<float>());
}

TEST(Dataset, DirectReadsEqualHdf5Reads) {
  TempDir tmp;
  Tensor x = Tensor::randn({41, 2, 5, 3}, 51), y = Tensor::randn({41, 1, 3, 3}, 52);
  // Three layouts that qualify for direct reads: chunks of one row, chunks of several rows (41 is
  // not a multiple of 4), and contiguous datasets written with the HDF5 layer.
  DatasetWriterOptions one, four;
  one.compression_level = 0;
  one.chunk_rows = 1;
  four.compression_level = 0;
  four.chunk_rows = 4;
  write_dataset(tmp.file("one.h5"), x, y, one);
  write_dataset(tmp.file("four.h5"), x, y, four);
  {
    h5::File f = h5::File::create(tmp.file("contig.h5"));
    f.write_tensor("x", x);
    f.write_tensor("y", y);
  }
  write_dataset(tmp.file("gzip.h5"), x, y);
  for (const char* name : {"one.h5", "four.h5", "contig.h5", "gzip.h5"}) {
    SCOPED_TRACE(name);
    DatasetReaderOptions o;
    o.path = tmp.file(name);
    o.batch_size = 6;
    o.seed = 3;
    o.io_threads = 3;
    o.io_thread_bytes = 1;  // threads even for these few bytes
    DatasetReader direct(o);
    const bool expect_direct = std::string(name) != "gzip.h5";
    EXPECT_EQ(direct.direct_x(), expect_direct) << direct.direct_info();
    EXPECT_EQ(direct.direct_y(), expect_direct) << direct.direct_info();
    if (!expect_direct) {
      EXPECT_NE(direct.direct_info().find("filters"), std::string::npos) << direct.direct_info();
    }
    o.direct_io = false;
    DatasetReader hdf5(o);
    EXPECT_FALSE(hdf5.direct_x());
    auto a = read_epoch(direct, 2), b = read_epoch(hdf5, 2);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].indices, b[i].indices);
      EXPECT_EQ(a[i].x.to_vector<float>(), b[i].x.to_vector<float>());
      EXPECT_EQ(a[i].y.to_vector<float>(), b[i].y.to_vector<float>());
      expect_batch_matches(a[i], Data{x, y, o.path});
    }
  }
  // A stored type other than the batch dtype is converted by HDF5, not read directly.
  DatasetReaderOptions o64;
  o64.path = tmp.file("one.h5");
  o64.dtype = DType::Float64;
  DatasetReader r64(o64);
  EXPECT_FALSE(r64.direct_x());
  EXPECT_NE(r64.direct_info().find("element type"), std::string::npos) << r64.direct_info();
  EXPECT_EQ(r64.read({4}).x.to_vector<double>(), sample(x, 4));
}

TEST(Dataset, DirectReadsOfUnwrittenChunksFallBackToFillValues) {
  TempDir tmp;
  const std::string path = tmp.file("holes.h5");
  Tensor x = Tensor::randn({4, 1, 2, 2}, 61), y = Tensor::randn({4, 1, 1, 1}, 62);
  {
    h5::File f = h5::File::create(path);
    h5::DatasetCreateOptions o;
    o.chunk = {2, 1, 2, 2};
    h5::Dataset dx = f.create_dataset("x", DType::Float32, {8, 1, 2, 2}, o);
    h5::Dataspace sel = dx.space();
    sel.select_rows(0, 4);  // rows 4..7 (chunks 2 and 3) are never written
    dx.write(x.raw_data(), DType::Float32, h5::Dataspace::simple({4, 1, 2, 2}), sel);
    o.chunk = {2, 1, 1, 1};
    h5::Dataset dy = f.create_dataset("y", DType::Float32, {8, 1, 1, 1}, o);
    h5::Dataspace ysel = dy.space();
    ysel.select_rows(0, 4);
    dy.write(y.raw_data(), DType::Float32, h5::Dataspace::simple({4, 1, 1, 1}), ysel);
  }
  DatasetReaderOptions o;
  o.path = path;
  o.batch_size = 8;
  o.shuffle = false;
  DatasetReader r(o);
  EXPECT_TRUE(r.direct_x());
  Batch b = r.read({1, 6});
  EXPECT_EQ(sample(b.x, 0), sample(x, 1));
  EXPECT_EQ(sample(b.x, 1), (std::vector<double>{0, 0, 0, 0}));
}

TEST(Dataset, NaNInLargeSamplesReadDirectlyByThreads) {
  TempDir tmp;
  const std::string path = tmp.file("big.h5");
  // 1.1 M floats (4.4 MB) per sample: each row is cut into two segments read by different threads.
  const int64_t per = 1100 * 1000;
  Tensor x = Tensor::rand({3, 1, 1100, 1000}, 71, DType::Float32, Device::CPU);
  Tensor y = Tensor::rand({3, 1, 1, 1}, 72, DType::Float32, Device::CPU);
  x.data<float>()[2 * per + 1050000] = std::numeric_limits<float>::infinity();
  DatasetWriterOptions wo;
  wo.compression_level = 0;
  wo.check_finite = false;
  write_dataset(path, x, y, wo);
  DatasetReaderOptions o;
  o.path = path;
  o.batch_size = 3;
  o.shuffle = false;
  o.io_threads = 4;
  o.io_thread_bytes = 1;
  DatasetReader r(o);
  ASSERT_TRUE(r.direct_x());
  Batch b;
  EXPECT_ERROR_HAS(b = r.read({0, 2}), "dataset 'x'", "big.h5", "sample 2", "inf",
                   "element 1050000 of 1100000");
  b = r.read({1, 0});
  EXPECT_EQ(sample(b.x, 0), sample(x, 1));
  EXPECT_EQ(sample(b.x, 1), sample(x, 0));
}
