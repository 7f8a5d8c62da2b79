// Tests of the HDF5 RAII layer: round trips, selections, attributes, errors, atomic files, threads.
#include "io/hdf5.h"

#include <filesystem>
#include <thread>

#include "test_utils.h"

namespace fs = std::filesystem;
using namespace tg;
using namespace tg::io;
using namespace tg::testing;

TEST(Hdf5, TensorRoundTripBothDtypesAndScalar) {
  TempDir tmp;
  const std::string path = tmp.file("a.h5");
  Tensor a = Tensor::randn({3, 4, 5}, 1, DType::Float32);
  Tensor b = Tensor::randn({7}, 2, DType::Float64);
  Tensor s = Tensor::full({}, 2.5, DType::Float64);
  {
    h5::File f = h5::File::create(path);
    f.write_tensor("a.weight", a);
    h5::Group g = f.create_group("sub");
    g.write_tensor("b", b);
    g.write_tensor("s", s);
    f.close();
  }
  h5::File f = h5::File::open(path);
  Tensor a2 = f.open_dataset("a.weight").read_tensor();
  EXPECT_EQ(a2.dtype(), DType::Float32);
  EXPECT_EQ(a2.shape(), a.shape());
  EXPECT_EQ(a2.to_vector<float>(), a.to_vector<float>());
  Tensor b2 = f.open_group("sub").open_dataset("b").read_tensor();
  EXPECT_EQ(b2.dtype(), DType::Float64);
  EXPECT_EQ(b2.to_vector<double>(), b.to_vector<double>());
  Tensor s2 = f.open_dataset("sub/s").read_tensor();
  EXPECT_EQ(s2.shape(), Shape{});
  EXPECT_EQ(s2.item(), 2.5);
  EXPECT_EQ(f.open_dataset("sub/b").name(), "/sub/b");
}

TEST(Hdf5, ChildrenInCreationOrderAndKinds) {
  TempDir tmp;
  const std::string path = tmp.file("order.h5");
  {
    h5::File f = h5::File::create(path);
    for (const char* n : {"zeta", "alpha", "mid.dle"}) f.write_tensor(n, Tensor::ones({2}));
    f.create_group("grp").create_group("inner");
  }
  h5::File f = h5::File::open(path);
  EXPECT_EQ(f.children(), (std::vector<std::string>{"zeta", "alpha", "mid.dle", "grp"}));
  EXPECT_EQ(f.kind_of("alpha"), h5::ObjectKind::Dataset);
  EXPECT_EQ(f.kind_of("grp"), h5::ObjectKind::Group);
  EXPECT_EQ(f.kind_of("grp/inner"), h5::ObjectKind::Group);
  EXPECT_EQ(f.kind_of("nope"), h5::ObjectKind::None);
  EXPECT_EQ(f.kind_of("nope/deeper"), h5::ObjectKind::None);
  EXPECT_TRUE(f.has("mid.dle"));
}

TEST(Hdf5, AttributesRoundTripAndReplace) {
  TempDir tmp;
  const std::string path = tmp.file("attr.h5");
  {
    h5::File f = h5::File::create(path);
    h5::Group g = f.create_group("g");
    g.set_attr_int("step", -42);
    g.set_attr_uint("seed", 0xFEDCBA9876543210ULL);
    g.set_attr_double("lr", 0.125);
    g.set_attr_string("note", "héllo \"json\"");
    g.set_attr_string("empty", "");
    g.set_attr_int("step", 7);  // replaces
  }
  h5::File f = h5::File::open(path);
  h5::Group g = f.open_group("g");
  EXPECT_EQ(g.open_attribute("step").read_int(), 7);
  EXPECT_EQ(g.open_attribute("seed").read_uint(), 0xFEDCBA9876543210ULL);
  EXPECT_EQ(g.open_attribute("lr").read_double(), 0.125);
  EXPECT_EQ(g.open_attribute("step").read_double(), 7.0);
  EXPECT_EQ(g.open_attribute("note").read_string(), "héllo \"json\"");
  EXPECT_EQ(g.open_attribute("empty").read_string(), "");
  EXPECT_FALSE(g.has_attribute("missing"));
  EXPECT_ERROR_HAS(g.open_attribute("missing"), "no attribute 'missing'", "attr.h5");
  EXPECT_ERROR_HAS(g.open_attribute("note").read_int(), "attribute 'note'", "expected an integer",
                   "string");
  EXPECT_ERROR_HAS(g.open_attribute("lr").read_int(), "expected an integer", "float64");
}

TEST(Hdf5, StringDataset) {
  TempDir tmp;
  const std::string path = tmp.file("str.h5");
  const std::string json = R"({"lr": 0.1, "name": "ünïcode", "list": [1, 2, 3]})";
  {
    h5::File f = h5::File::create(path);
    f.write_string("cfg", json);
    f.write_string("empty", "");
  }
  h5::File f = h5::File::open(path);
  EXPECT_EQ(f.open_dataset("cfg").read_string(), json);
  EXPECT_EQ(f.open_dataset("empty").read_string(), "");
  EXPECT_EQ(f.open_dataset("cfg").stored_type().cls, h5::StoredType::Class::String);
  EXPECT_ERROR_HAS(f.open_dataset("cfg").float_dtype(), "dataset 'cfg'", "str.h5",
                   "expected float32 or float64", "string");
  EXPECT_ERROR_HAS(f.open_dataset("cfg").read_tensor(), "expected float32 or float64");
}

TEST(Hdf5, ChunkedCompressedPartialWritesAndUnionRead) {
  TempDir tmp;
  const std::string path = tmp.file("rows.h5");
  const int64_t n = 10, c = 3;
  Tensor full = Tensor::randn({n, c}, 5, DType::Float32);
  auto all = full.to_vector<float>();
  {
    h5::File f = h5::File::create(path);
    h5::DatasetCreateOptions o;
    o.chunk = {2, c};
    o.gzip_level = 4;
    o.shuffle = true;
    o.fletcher32 = true;
    h5::Dataset d = f.create_dataset("x", DType::Float32, {n, c}, o);
    EXPECT_EQ(d.chunk(), (Shape{2, c}));
    // Write rows in three uneven pieces, out of order.
    for (auto [start, count] : {std::pair<int64_t, int64_t>{7, 3}, {0, 4}, {4, 3}}) {
      Tensor part = Tensor::from_vector(
          std::vector<float>(all.begin() + start * c, all.begin() + (start + count) * c),
          {count, c});
      h5::Dataspace fsel = d.space();
      fsel.select_rows(start, count);
      EXPECT_EQ(fsel.selected(), count * c);
      d.write(part.raw_data(), DType::Float32, h5::Dataspace::simple({count, c}), fsel);
    }
  }
  h5::File f = h5::File::open(path);
  h5::Dataset d = f.open_dataset("x");
  EXPECT_EQ(d.shape(), (Shape{n, c}));
  EXPECT_EQ(d.float_dtype(), DType::Float32);
  EXPECT_EQ(d.read_tensor().to_vector<float>(), all);
  // Blocks added in the order 8-9, 1-2, 5: HDF5 returns them in file order 1, 2, 5, 8, 9.
  h5::Dataspace fsel = d.space();
  fsel.select_rows(8, 2);
  fsel.select_rows(1, 2, true);
  fsel.select_rows(5, 1, true);
  EXPECT_EQ(fsel.selected(), 5 * c);
  std::vector<double> got(5 * c, -1.0);
  d.read(got.data(), DType::Float64, h5::Dataspace::simple({5, c}), fsel);
  std::vector<int64_t> rows = {1, 2, 5, 8, 9};
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int64_t j = 0; j < c; ++j) {
      EXPECT_EQ(got[i * c + size_t(j)], double(all[size_t(rows[i] * c + j)]));
    }
  }
  EXPECT_ERROR_HAS(fsel.select_rows(9, 2), "outside a dataspace of shape [10, 3]");
}

TEST(Hdf5, DataspaceBasics) {
  h5::Dataspace s = h5::Dataspace::simple({4, 5, 6});
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s.dims(), (Shape{4, 5, 6}));
  EXPECT_EQ(s.selected(), 120);
  s.select_none();
  EXPECT_EQ(s.selected(), 0);
  s.select_block({1, 0, 2}, {2, 5, 3});
  EXPECT_EQ(s.selected(), 30);
  s.select_all();
  EXPECT_EQ(s.selected(), 120);
  h5::Dataspace sc = h5::Dataspace::simple({});
  EXPECT_EQ(sc.rank(), 0);
  EXPECT_EQ(sc.selected(), 1);
  EXPECT_ERROR_HAS(s.select_block({0}, {1}), "needs 3 starts and counts");
}

TEST(Hdf5, HandlesMoveAndClose) {
  TempDir tmp;
  const std::string path = tmp.file("move.h5");
  h5::File f = h5::File::create(path);
  h5::Dataset d = f.create_dataset("x", DType::Float64, {2});
  EXPECT_TRUE(d.valid());
  h5::Dataset moved = std::move(d);
  EXPECT_FALSE(d.valid());  // NOLINT(bugprone-use-after-move): moved-from handles are empty
  EXPECT_TRUE(moved.valid());
  std::vector<double> v = {1.5, -2.5};
  moved.write(v.data(), DType::Float64);
  h5::Dataset other = f.create_dataset("y", DType::Float32, {1});
  other = std::move(moved);  // closes y's handle, takes x's
  EXPECT_EQ(other.shape(), Shape{2});
  other.close();
  EXPECT_FALSE(other.valid());
  other.close();  // closing twice is a no-op
  f.close();
  EXPECT_FALSE(f.valid());
  h5::File g = h5::File::open(path);
  std::vector<double> back(2);
  g.open_dataset("x").read(back.data(), DType::Float64);
  EXPECT_EQ(back, v);
}

TEST(Hdf5, OpenErrorsNameTheFileAndTheProblem) {
  TempDir tmp;
  const std::string missing = tmp.file("missing.h5");
  EXPECT_ERROR_HAS(h5::File::open(missing), "hdf5: cannot open", "missing.h5", "no such file");
  EXPECT_ERROR_HAS(h5::File::open(tmp.dir.string()), "not a regular file");

  const std::string garbage = tmp.file("garbage.h5");
  write_bytes(garbage, std::string(4096, 'z'));
  EXPECT_FALSE(h5::File::is_hdf5(garbage));
  EXPECT_ERROR_HAS(h5::File::open(garbage), "garbage.h5", "not an HDF5 file");

  const std::string good = tmp.file("good.h5");
  {
    h5::File f = h5::File::create(good);
    f.write_tensor("w", Tensor::randn({64, 64}, 3));
  }
  EXPECT_TRUE(h5::File::is_hdf5(good));
  const std::string cut = tmp.file("cut.h5");
  fs::copy_file(good, cut);
  fs::resize_file(cut, fs::file_size(good) / 2);
  EXPECT_ERROR_HAS(h5::File::open(cut), "cut.h5", "truncated");

  h5::File f = h5::File::open(good);
  EXPECT_ERROR_HAS(f.open_dataset("nope"), "no dataset 'nope'", "good.h5");
  EXPECT_ERROR_HAS(f.open_group("w"), "'w' in '", "is not a group");
  EXPECT_ERROR_HAS(f.create_dataset("w", DType::Float32, {1}), "cannot create dataset 'w'",
                   "name is taken");
  // A file opened read-only cannot be written: the HDF5 failure becomes a tg::Error.
  EXPECT_ERROR_HAS(f.write_tensor("new", Tensor::ones({1})), "cannot create dataset 'new'",
                   "good.h5", "HDF5:");
}

TEST(Hdf5, CreateDatasetOptionErrors) {
  TempDir tmp;
  h5::File f = h5::File::create(tmp.file("opts.h5"));
  h5::DatasetCreateOptions o;
  o.gzip_level = 3;
  EXPECT_ERROR_HAS(f.create_dataset("a", DType::Float32, {4}, o), "need chunked storage");
  o.chunk = {8};
  EXPECT_ERROR_HAS(f.create_dataset("a", DType::Float32, {4}, o),
                   "cannot have chunks of shape [8]");
  o.chunk = {2};
  o.gzip_level = 12;
  EXPECT_ERROR_HAS(f.create_dataset("a", DType::Float32, {4}, o), "gzip level must be in 0..9");
}

TEST(Hdf5, AtomicFileCommitAndAbandon) {
  TempDir tmp;
  const std::string path = tmp.file("atomic.h5");
  {
    h5::AtomicFile af(path);
    EXPECT_TRUE(fs::exists(af.temp_path()));
    EXPECT_NE(af.temp_path().find("atomic.h5.tmp-"), std::string::npos);
    af.file().write_tensor("v", Tensor::full({3}, 1.0));
    af.commit();
    EXPECT_FALSE(fs::exists(af.temp_path()));
  }
  EXPECT_EQ(h5::File::open(path).open_dataset("v").read_tensor().to_vector<float>(),
            (std::vector<float>{1, 1, 1}));
  std::string temp;
  {
    h5::AtomicFile af(path);
    temp = af.temp_path();
    af.file().write_tensor("v", Tensor::full({3}, 2.0));
    // destroyed without commit: the previous file stays, the temporary one goes
  }
  EXPECT_FALSE(fs::exists(temp));
  EXPECT_EQ(h5::File::open(path).open_dataset("v").read_tensor().to_vector<float>(),
            (std::vector<float>{1, 1, 1}));
  EXPECT_ERROR_HAS(h5::AtomicFile(tmp.file("no/such/dir/x.h5")), "cannot create", "x.h5.tmp-");
}

TEST(Hdf5, ConcurrentReadersFromSeveralThreads) {
  TempDir tmp;
  const std::string path = tmp.file("mt.h5");
  Tensor t = Tensor::randn({40, 50}, 9, DType::Float64);
  {
    h5::File f = h5::File::create(path);
    h5::DatasetCreateOptions o;
    o.chunk = {1, 50};
    o.gzip_level = 1;
    f.create_dataset("x", DType::Float64, {40, 50}, o).write(t.raw_data(), DType::Float64);
  }
  auto expected = t.to_vector<double>();
  std::vector<int> ok(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      h5::File f = h5::File::open(path);
      h5::Dataset d = f.open_dataset("x");
      int good = 0;
      for (int it = 0; it < 40; ++it) {
        int64_t row = (it * 7 + k) % 40;
        h5::Dataspace fsel = d.space();
        fsel.select_rows(row, 1);
        std::vector<double> v(50);
        d.read(v.data(), DType::Float64, h5::Dataspace::simple({1, 50}), fsel);
        good += std::equal(v.begin(), v.end(), expected.begin() + row * 50);
      }
      ok[size_t(k)] = good;
    });
  }
  for (auto& th : threads) th.join();
  for (int g : ok) EXPECT_EQ(g, 40);
}

TEST(Hdf5, LibraryVersion) { EXPECT_EQ(h5::library_version().substr(0, 2), "1."); }
