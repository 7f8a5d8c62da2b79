// Half-width datasets: the float16 / bfloat16 conversions (exact widening, round-to-nearest-even
// narrowing, checked against independent references), files of either type read as exactly the
// rounded values (direct and HDF5 paths, float32 and float64 batches, subnormals, +-0, inf),
// non-finite values reported as for float32, unsupported types named, and CPU training on a float16
// file bit-identical to training on a float32 file of the same values.
#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#include "io/dataset.h"
#include "io/float16.h"
#include "io/hdf5.h"
#include "nn/model.h"
#include "test_utils.h"
#include "train/trainer.h"

using namespace tg;
using namespace tg::io;
using tg::testing::TempDir;

namespace {

// The value of float16 bits from the format's definition (not from the code under test).
double f16_reference(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  const double sign = s ? -1.0 : 1.0;
  if (e == 31) return m ? NAN : sign * INFINITY;
  if (e == 0) return sign * std::ldexp(double(m), -24);
  return sign * std::ldexp(1.0 + m / 1024.0, e - 15);
}

bool is_nan_bits(ElementType t, uint16_t h) {
  return (h & 0x7fffu) > (t == ElementType::Float16 ? 0x7c00u : 0x7f80u);
}

TEST(HalfFloat, EveryFloat16AndBFloat16WidensExactlyAndNarrowsBack) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = uint16_t(i);
    const float f = half_bits::f16_to_float(h);
    const double want = f16_reference(h);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(f)) << "float16 " << i;
      EXPECT_TRUE(is_nan_bits(ElementType::Float16, half_bits::float_to_f16(f))) << i;
    } else {
      ASSERT_EQ(double(f), want) << "float16 bits " << i;
      ASSERT_EQ(std::signbit(f), bool(h >> 15)) << i;  // -0 stays -0
      ASSERT_EQ(half_bits::float_to_f16(f), h) << "float16 round trip of " << i;
    }
    const float b = half_bits::bf16_to_float(h);
    if (is_nan_bits(ElementType::BFloat16, h)) {
      EXPECT_TRUE(std::isnan(b)) << "bfloat16 " << i;
      EXPECT_TRUE(is_nan_bits(ElementType::BFloat16, half_bits::float_to_bf16(b))) << i;
    } else {
      ASSERT_EQ(half_bits::float_to_bf16(b), h) << "bfloat16 round trip of " << i;
    }
  }
  // The bulk conversions agree with the scalar ones, to float64 too.
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i);
  std::vector<float> f(all.size());
  std::vector<double> d(all.size());
  widen_half(ElementType::Float16, all.data(), f.data(), all.size());
  widen_half(ElementType::Float16, all.data(), d.data(), all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    if (std::isnan(f16_reference(uint16_t(i)))) continue;
    ASSERT_EQ(f[i], half_bits::f16_to_float(uint16_t(i))) << i;
    ASSERT_EQ(d[i], f16_reference(uint16_t(i))) << i;
  }
}

// Nearest of the candidate bit patterns lo and lo + 1 (adjacent values of the format), ties to the
// even pattern, computed in double (exact for these values).
uint16_t nearest(float v, uint16_t lo, ElementType t) {
  const uint16_t hi = uint16_t(lo + 1);
  const double a = std::fabs(double(half_bits::to_float(t, lo)) - double(v));
  const double b = std::fabs(double(half_bits::to_float(t, hi)) - double(v));
  if (a != b) return a < b ? lo : hi;
  return (lo & 1) ? hi : lo;
}

TEST(HalfFloat, NarrowingRoundsToNearestEvenOverflowsToInfAndKeepsNaN) {
  using half_bits::float_to_bf16;
  using half_bits::float_to_f16;
  // Ties between neighbours go to the even mantissa; just above a tie goes up.
  EXPECT_EQ(float_to_f16(1.0f + 0x1p-11f), 0x3c00);
  EXPECT_EQ(float_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
  EXPECT_EQ(float_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(float_to_f16(65520.0f), 0x7c00);  // the tie above the largest finite: inf
  EXPECT_EQ(float_to_f16(-1e30f), 0xfc00);
  EXPECT_EQ(float_to_f16(0x1p-25f), 0x0000);  // half the smallest subnormal: to even (0)
  EXPECT_EQ(float_to_f16(0x1p-25f * 1.0001f), 0x0001);
  EXPECT_EQ(float_to_f16(3 * 0x1p-25f), 0x0002);  // 1.5 subnormal steps: to even (2)
  EXPECT_EQ(float_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(float_to_f16(0x1p-14f - 0x1p-26f), 0x0400);  // rounds up into the normals
  EXPECT_EQ(float_to_bf16(1.0f + 0x1p-8f), 0x3f80);
  EXPECT_EQ(float_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  EXPECT_EQ(float_to_bf16(3.4028235e38f), 0x7f80);
  EXPECT_TRUE(std::isnan(half_bits::f16_to_float(float_to_f16(NAN))));
  EXPECT_TRUE(std::isnan(half_bits::bf16_to_float(float_to_bf16(-NAN))));
  // Against the nearest neighbour, for values spread over every binade of each format. The
  // positive finite float16 values ascend with their bit patterns 0 .. 0x7bff.
  std::vector<float> f16_values(0x7c00);
  for (size_t i = 0; i < f16_values.size(); ++i)
    f16_values[i] = half_bits::f16_to_float(uint16_t(i));
  Generator gen(7);
  for (int i = 0; i < 200000; ++i) {
    const float av = float(std::ldexp(1.0 + gen.uniform(), int(gen.below(44)) - 26));
    const bool negative = gen.below(2) == 1;
    const float v = negative ? -av : av;
    const uint16_t sign = negative ? 0x8000 : 0;
    if (av < 65504.0f) {  // the pattern just below av, and its neighbour above
      const auto above = std::upper_bound(f16_values.begin(), f16_values.end(), av);
      const uint16_t lo = uint16_t(above - f16_values.begin() - 1);
      ASSERT_EQ(float_to_f16(v), nearest(av, lo, ElementType::Float16) | sign) << v;
    }
    uint32_t u;
    std::memcpy(&u, &av, 4);
    ASSERT_EQ(float_to_bf16(v), nearest(av, uint16_t(u >> 16), ElementType::BFloat16) | sign) << v;
  }
}

TEST(HalfFloat, ParsesElementTypes) {
  EXPECT_EQ(parse_element_type("float16"), ElementType::Float16);
  EXPECT_EQ(parse_element_type("bfloat16"), ElementType::BFloat16);
  EXPECT_EQ(parse_element_type("float32"), ElementType::Float32);
  EXPECT_ERROR_HAS(parse_element_type("half"), "'half'", "float32, float64, float16 or bfloat16");
}

// x (n, 2, 3, 4), y (n, 1, 2, 2): normal values, with specials in sample 1 of x: +-0, the smallest
// and largest subnormals and normals of float16, values that round, and (when with_inf) +-inf.
std::pair<Tensor, Tensor> special_data(int64_t n, bool with_inf) {
  Tensor x = Tensor::randn({n, 2, 3, 4}, 21), y = Tensor::randn({n, 1, 2, 2}, 22);
  float* p = x.data<float>() + 24;
  const float specials[] = {0.0f,     -0.0f,    0x1p-24f,  -0x1p-24f,       0x3ffp-24f,
                            0x1p-14f, 65504.0f, -65504.0f, 1.0f + 0x1p-11f, 0x1p-130f,
                            1e-3f,    3.14159f, 100.0f,    -7.25f};
  std::copy(std::begin(specials), std::end(specials), p);
  if (with_inf) {
    p[20] = INFINITY;
    p[21] = -INFINITY;
  }
  return {x, y};
}

// t rounded to type (float16 / bfloat16) and widened back: the values a file of that type holds.
Tensor rounded(const Tensor& t, ElementType type, DType dtype = DType::Float32) {
  const size_t n = size_t(t.numel());
  std::vector<uint16_t> bits(n);
  narrow_to_half(type, t.data<float>(), bits.data(), n);
  Tensor out = Tensor::empty(t.shape(), dtype);
  if (dtype == DType::Float32)
    widen_half(type, bits.data(), out.data<float>(), n);
  else
    widen_half(type, bits.data(), out.data<double>(), n);
  return out;
}

void expect_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  ASSERT_EQ(got.shape(), want.shape()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  EXPECT_EQ(std::memcmp(got.raw_data(), want.raw_data(), want.nbytes()), 0) << what;
}

Tensor rows_of(const Tensor& t, const std::vector<int64_t>& rows) {
  Shape s = t.shape();
  s[0] = int64_t(rows.size());
  Tensor out = Tensor::empty(s, t.dtype());
  const size_t row_bytes = t.nbytes() / size_t(t.size(0));
  for (size_t i = 0; i < rows.size(); ++i)
    std::memcpy(static_cast<char*>(out.raw_data()) + i * row_bytes,
                static_cast<const char*>(t.raw_data()) + size_t(rows[i]) * row_bytes, row_bytes);
  return out;
}

TEST(HalfDataset, Float16AndBFloat16FilesReadAsExactlyTheRoundedValues) {
  TempDir tmp;
  const auto [x, y] = special_data(13, true);
  for (ElementType type : {ElementType::Float16, ElementType::BFloat16}) {
    for (int level : {0, 1}) {  // uncompressed: direct reads; gzip: through HDF5
      SCOPED_TRACE(std::string(element_type_name(type)) + (level ? " gzip" : " plain"));
      DatasetWriterOptions wo;
      wo.dtype = type;
      wo.compression_level = level;
      wo.check_finite = false;  // the file holds +-inf
      const std::string path =
          tmp.file(std::string(element_type_name(type)) + std::to_string(level) + ".h5");
      write_dataset(path, x, y, wo);
      const DatasetInfo info = inspect_dataset(path);
      EXPECT_EQ(info.x_type, type);
      EXPECT_EQ(info.y_type, type);
      for (DType dt : {DType::Float32, DType::Float64}) {
        DatasetReaderOptions o;
        o.path = path;
        o.batch_size = 5;
        o.dtype = dt;
        o.check_finite = false;
        o.io_threads = 2;
        o.io_thread_bytes = 1;  // two threads, each widening its part
        DatasetReader r(o);
        EXPECT_EQ(r.direct_x(), level == 0) << r.direct_info();
        const Tensor wx = rounded(x, type, dt), wy = rounded(y, type, dt);
        r.start_epoch(0);
        Batch b;
        int batches = 0;
        while (r.next(b)) {
          EXPECT_FALSE(b.x_half.defined());
          expect_bits(b.x, rows_of(wx, b.indices), "x of batch " + std::to_string(batches));
          expect_bits(b.y, rows_of(wy, b.indices), "y of batch " + std::to_string(batches));
          ++batches;
        }
        EXPECT_EQ(batches, 3);
        Batch some = r.read({12, 1, 1});
        expect_bits(some.x, rows_of(wx, {12, 1, 1}), "read()");
        // The specials really are what the format holds: -0, a subnormal, inf.
        const Tensor sample1 = rows_of(rounded(x, type), {1});
        const float* s1 = sample1.data<float>();
        EXPECT_TRUE(std::signbit(s1[1]) && s1[1] == 0.0f);
        EXPECT_EQ(s1[20], INFINITY);
        if (type == ElementType::Float16) EXPECT_EQ(s1[2], 0x1p-24f);
      }
    }
  }
}

TEST(HalfDataset, KeepHalfWidthHandsOverTheStoredBits) {
  TempDir tmp;
  const auto [x, y] = special_data(9, false);
  const std::string path = tmp.file("h.h5");
  DatasetWriterOptions wo;
  wo.dtype = ElementType::Float16;
  wo.compression_level = 0;
  write_dataset(path, x, y, wo);
  DatasetReaderOptions o;
  o.path = path;
  o.batch_size = 4;
  o.keep_half_width = true;
  DatasetReader r(o), widened([&] {
    DatasetReaderOptions w = o;
    w.keep_half_width = false;
    return w;
  }());
  r.start_epoch(2);
  widened.start_epoch(2);
  Batch b, w;
  while (r.next(b)) {
    ASSERT_TRUE(widened.next(w));
    EXPECT_EQ(b.indices, w.indices);
    EXPECT_FALSE(b.x.defined());
    ASSERT_TRUE(b.x_half.defined() && b.y_half.defined());
    EXPECT_EQ(b.x_half.type, ElementType::Float16);
    EXPECT_EQ(b.x_half.shape, w.x.shape());
    EXPECT_EQ(b.x_half.nbytes(), w.x.nbytes() / 2);
    Tensor mine = Tensor::empty(w.x.shape());
    widen_half(b.x_half.type, b.x_half.bits(), mine.data<float>(), size_t(mine.numel()));
    expect_bits(mine, w.x, "x");
    Tensor theirs = Tensor::empty(w.y.shape());
    widen_half(b.y_half.type, b.y_half.bits(), theirs.data<float>(), size_t(theirs.numel()));
    expect_bits(theirs, w.y, "y");
  }
  EXPECT_FALSE(widened.next(w));
}

TEST(HalfDataset, NonFiniteValuesAreReportedAsForFloat32) {
  TempDir tmp;
  for (ElementType type : {ElementType::Float16, ElementType::BFloat16}) {
    for (int level : {0, 1}) {
      SCOPED_TRACE(std::string(element_type_name(type)) + (level ? " gzip" : " plain"));
      Tensor x = Tensor::randn({6, 2, 3, 4}, 31), y = Tensor::randn({6, 1, 2, 2}, 32);
      x.data<float>()[3 * 24 + 5] = NAN;
      DatasetWriterOptions wo;
      wo.dtype = type;
      wo.compression_level = level;
      wo.check_finite = false;
      const std::string path = tmp.file("nan" + std::to_string(level) + ".h5");
      write_dataset(path, x, y, wo);
      DatasetReaderOptions o;
      o.path = path;
      o.batch_size = 6;
      DatasetReader r(o);
      EXPECT_ERROR_HAS(r.read({0, 3}), "dataset 'x'", path.c_str(), "sample 3",
                       "non-finite value (nan) at element 5 of 24");
      o.keep_half_width = true;
      DatasetReader kept(o);
      EXPECT_ERROR_HAS(kept.read({3}), "sample 3", "non-finite value (nan)");
    }
  }
}

TEST(HalfDataset, TheWriterRefusesValuesBeyondTheRangeAndNonFiniteOnes) {
  TempDir tmp;
  Tensor x = Tensor::randn({4, 1, 2, 2}, 41), y = Tensor::randn({4, 1, 1, 1}, 42);
  x.data<float>()[2 * 4 + 3] = 70000.0f;
  DatasetWriterOptions wo;
  wo.dtype = ElementType::Float16;
  EXPECT_ERROR_HAS(write_dataset(tmp.file("big.h5"), x, y, wo), "x of sample 2", "70000",
                   "element 3", "outside the range of float16", "inf");
  wo.dtype = ElementType::BFloat16;  // its range is float32's
  write_dataset(tmp.file("big.h5"), x, y, wo);
  DatasetReaderOptions o;
  o.path = tmp.file("big.h5");
  EXPECT_EQ(DatasetReader(o).read({2}).x.data<float>()[3], 70144.0f);  // rounded to 8 bits
  x.data<float>()[0] = NAN;
  EXPECT_ERROR_HAS(write_dataset(tmp.file("nan.h5"), x, y, wo), "x of sample 0", "non-finite");
}

// A root dataset `x` of the given HDF5 file type (rank 4, written from zero bytes) and a float32 y.
void write_typed(const std::string& path, hid_t ftype) {
  h5::File f = h5::File::create(path);
  {
    std::lock_guard<std::recursive_mutex> lock(h5::library_mutex());
    hsize_t dims[4] = {2, 1, 2, 2};
    hid_t space = H5Screate_simple(4, dims, nullptr);
    hid_t d = H5Dcreate2(hid_t(f.id()), "x", ftype, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    std::vector<char> zeros(8 * H5Tget_size(ftype), 0);
    H5Dwrite(d, ftype, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros.data());
    H5Dclose(d);
    H5Sclose(space);
  }
  f.write_tensor("y", Tensor::zeros({2, 1, 1, 1}));
  f.close();
}

hid_t custom_float(size_t spos, size_t epos, size_t esize, size_t msize, size_t bytes, size_t ebias,
                   bool big_endian) {
  hid_t t = H5Tcopy(H5T_IEEE_F32LE);
  H5Tset_fields(t, spos, epos, esize, 0, msize);
  H5Tset_size(t, bytes);
  H5Tset_ebias(t, ebias);
  if (big_endian) H5Tset_order(t, H5T_ORDER_BE);
  return t;
}

TEST(HalfDataset, OtherTypesAreAClearErrorNamingTheFileAndTheType) {
  TempDir tmp;
  const std::string ints = tmp.file("int16.h5");
  write_typed(ints, H5T_STD_I16LE);
  EXPECT_ERROR_HAS(inspect_dataset(ints), "dataset 'x'", "int16.h5",
                   "expected float32, float64, float16 or bfloat16", "got int16");
  const std::string fp8 = tmp.file("fp8.h5");
  hid_t e4m3 = custom_float(7, 3, 4, 3, 1, 7, false);
  write_typed(fp8, e4m3);
  H5Tclose(e4m3);
  DatasetReaderOptions o;
  o.path = fp8;
  EXPECT_ERROR_HAS(DatasetReader{o}, "dataset 'x'", "fp8.h5", "float16 or bfloat16",
                   "8-bit float (sign bit 7, exponent bits 3..6 with bias 7, mantissa bits 0..2)");
  const std::string be = tmp.file("be16.h5");
  hid_t f16be = custom_float(15, 10, 5, 10, 2, 15, true);
  write_typed(be, f16be);
  H5Tclose(f16be);
  EXPECT_ERROR_HAS(inspect_dataset(be), "be16.h5", "16-bit float", "bias 15", "big-endian");
  // The little-endian float16 of the same description is accepted (numpy / h5py's float16).
  const std::string le = tmp.file("le16.h5");
  hid_t f16le = custom_float(15, 10, 5, 10, 2, 15, false);
  write_typed(le, f16le);
  H5Tclose(f16le);
  EXPECT_EQ(inspect_dataset(le).x_type, ElementType::Float16);
}

// Training on a float16 file equals training on a float32 file of the same (rounded) values, bit
// for bit: the widening is exact, so the runs see the same batches.
TEST(HalfDataset, CpuTrainingOnFloat16EqualsFloat32OfTheRoundedValues) {
  TempDir tmp;
  Tensor x = Tensor::rand({40, 2, 7, 7}, 51), y = Tensor::randn({40, 4, 5, 5}, 52);
  DatasetWriterOptions half;
  half.dtype = ElementType::Float16;
  half.compression_level = 0;
  write_dataset(tmp.file("f16.h5"), x, y, half);
  write_dataset(tmp.file("f32.h5"), rounded(x, ElementType::Float16),
                rounded(y, ElementType::Float16));
  auto run = [&](const std::string& data, const std::string& out) {
    train::TrainerConfig c;
    c.data = tmp.file(data);
    c.device = "cpu";
    c.batch_size = 8;
    c.groups = 2;
    c.epochs = 2;
    c.log_every = 1;
    c.val_fraction = 0.2;
    c.verbose = false;
    c.output = tmp.file(out);
    train::Trainer t(c);
    std::vector<double> losses;
    t.on_step([&](const train::StepInfo& s) { losses.push_back(s.loss.item()); });
    t.run();
    std::vector<float> params;
    for (const auto& np : t.model().named_parameters()) {
      auto v = np.second.to_vector<float>();
      params.insert(params.end(), v.begin(), v.end());
    }
    return std::make_pair(losses, params);
  };
  const auto a = run("f16.h5", "a"), b = run("f32.h5", "b");
  ASSERT_EQ(a.first.size(), size_t(2 * 4));  // 32 training samples: 4 batches an epoch
  EXPECT_EQ(a.first, b.first);
  EXPECT_EQ(a.second, b.second);
}

}  // namespace
