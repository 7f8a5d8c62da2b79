// --checkpoint-format safetensors: the run writes last.safetensors / best.safetensors, resumes from
// them bit for bit, and `tg-train convert` turns them into HDF5 (and back) with nothing lost.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "io/checkpoint.h"
#include "io/synthetic.h"
#include "nn/model.h"
#include "test_utils.h"
#include "train/trainer.h"

namespace tg {
namespace {

namespace fs = std::filesystem;

std::vector<float> flat(const io::NamedTensors& params) {
  std::vector<float> out;
  for (const auto& np : params) {
    auto v = np.second.to_vector<float>();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

struct FormatRun {
  testing::TempDir tmp;
  std::string data = tmp.file("data.h5");
  FormatRun() {
    io::SyntheticOptions o;
    o.samples = 60;
    o.in_channels = 2;
    o.out_channels = 4;
    o.height = o.width = 8;
    o.groups = 2;
    io::write_synthetic_dataset(data, o);
  }
  train::TrainerConfig config(const std::string& out, const std::string& format) const {
    train::TrainerConfig c;
    c.data = data;
    c.device = "cpu";
    c.batch_size = 8;
    c.groups = 2;
    c.epochs = 2;
    c.log_every = 1;
    c.verbose = false;
    c.checkpoint_format = format;
    c.output = tmp.file(out);
    return c;
  }
};

TEST(CheckpointFormat, SafetensorsRunsWriteTheirFilesAndResumeBitForBit) {
  FormatRun fr;
  train::Trainer whole(fr.config("whole", "hdf5"));
  whole.run();
  const std::vector<float> want = flat(whole.model().named_parameters());

  train::TrainerConfig c = fr.config("st", "safetensors");
  {
    train::Trainer t(c);
    t.on_step([&](const train::StepInfo& s) {
      if (s.step == 9) t.request_stop();
    });
    EXPECT_TRUE(t.run().stopped);
  }
  EXPECT_TRUE(fs::exists(c.output + "/last.safetensors"));
  EXPECT_FALSE(fs::exists(c.output + "/last.h5"));
  io::Checkpoint stopped = io::load_checkpoint(c.output + "/last.safetensors");
  ASSERT_TRUE(stopped.state.has_value());
  EXPECT_EQ(stopped.state->step, 9);
  c.resume = c.output + "/last.safetensors";
  {
    train::Trainer resumed(c);
    resumed.run();
    EXPECT_EQ(flat(resumed.model().named_parameters()), want);
  }  // (its lock on the folder goes with it)
  EXPECT_TRUE(fs::exists(c.output + "/best.safetensors"));
  // A second run into the folder is refused, naming the safetensors checkpoint to resume from.
  EXPECT_ERROR_HAS(train::Trainer(fr.config("st", "safetensors")).run(), "already holds a run",
                   "last.safetensors", "--overwrite");
}

TEST(CheckpointFormat, ConvertKeepsParametersAndTrainState) {
  FormatRun fr;
  train::TrainerConfig c = fr.config("run", "hdf5");
  train::Trainer(c).run();
  const std::string tg_train = std::string(TG_BINARY_DIR) + "/examples/tg-train";
  const std::string h5 = c.output + "/last.h5", st = fr.tmp.file("last.safetensors"),
                    back = fr.tmp.file("back.h5");
  auto r = testing::run_command(tg_train + " convert " + h5 + " " + st);
  ASSERT_EQ(r.code, 0) << r.output;
  r = testing::run_command(tg_train + " convert " + st + " " + back);
  ASSERT_EQ(r.code, 0) << r.output;
  io::Checkpoint a = io::load_checkpoint(h5), b = io::load_checkpoint(st), d = io::load_checkpoint(back);
  EXPECT_EQ(flat(a.params), flat(b.params));
  EXPECT_EQ(flat(a.params), flat(d.params));
  ASSERT_TRUE(b.state && d.state);
  EXPECT_EQ(b.state->step, a.state->step);
  EXPECT_EQ(d.state->config_json, a.state->config_json);
  EXPECT_EQ(flat(b.state->momentum_buffers), flat(a.state->momentum_buffers));
  r = testing::run_command(tg_train + " convert " + fr.tmp.file("missing.h5") + " " + st);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "missing.h5");
}

}  // namespace
}  // namespace tg
