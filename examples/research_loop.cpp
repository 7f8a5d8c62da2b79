// A researcher's own training loop, through tapegrad's public API only, and then the same training
// through the library's Trainer (the loop tg-train runs). It is built against the
// installed package (find_package(tapegrad)), like any program outside this repository:
//
//   cmake -S my_project -B build -DCMAKE_PREFIX_PATH=/path/to/tapegrad/prefix
//
// Usage: research_loop [work-dir]   (writes data.h5 and model.h5 there; default: current directory)
#include <tapegrad/tapegrad.h>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : ".";
  try {
    const tg::Device device = tg::cuda::is_available() ? tg::Device::CUDA : tg::Device::CPU;

    // 1. Data: a small synthetic teacher-student set, read back batch by batch from HDF5.
    tg::io::SyntheticOptions data;
    data.samples = 256;
    data.in_channels = 3;
    data.out_channels = 8;
    data.height = data.width = 16;
    tg::io::write_synthetic_dataset(dir + "/data.h5", data);
    tg::io::DatasetReaderOptions ro;
    ro.path = dir + "/data.h5";
    ro.batch_size = 32;
    ro.seed = 7;
    tg::io::DatasetReader reader(ro);

    // 2. The model (PyTorch's parameter names and initialisation) and PyTorch's SGD.
    tg::nn::Model model(/*in_channels=*/3, /*out_channels=*/8, /*kernel_size=*/3, /*num_groups=*/4,
                        /*seed=*/0);
    model.to(device);
    tg::optim::SGD opt(model.named_parameters(), {/*lr=*/0.05, /*momentum=*/0.9});

    // 3. The loop: the loss is composed from ops; backward() replays the tape.
    for (int64_t epoch = 0; epoch < 3; ++epoch) {
      reader.start_epoch(epoch);
      tg::io::Batch batch;
      double last = 0;
      while (reader.next(batch)) {
        tg::Tensor x = batch.x.to(device), target = batch.y.to(device);
        tg::Tensor y = model.forward(x);
        tg::Tensor loss = tg::ops::mean(tg::ops::square(y - target));  // = ops::mse_loss(y, target)
        opt.zero_grad();
        loss.backward();
        opt.step();
        last = loss.item();
      }
      std::printf("epoch %lld: loss %.5f\n", (long long)epoch, last);
    }

    // 4. A checkpoint that PyTorch reads: one dataset per parameter, named as in PyTorch.
    tg::io::save_checkpoint(dir + "/model.h5", model.named_parameters());
    std::printf("saved %s/model.h5\n", dir.c_str());

    // 5. The same training through tg::train::Trainer: the loop, validation (the file's last 10%),
    //    checkpoints (run/last.h5, run/best.h5), run/metrics.jsonl and run/loss.svg in one call.
    //    Callbacks see every step and epoch; one may stop the run (last.h5 is saved first).
    tg::train::TrainerConfig cfg;
    cfg.data = dir + "/data.h5";
    cfg.output = dir + "/run";
    cfg.overwrite = true;  // replace the run of an earlier invocation
    cfg.epochs = 3;
    cfg.batch_size = 32;
    cfg.groups = 4;
    cfg.seed = 7;
    cfg.verbose = false;
    tg::train::Trainer trainer(cfg);
    trainer.on_epoch([](const tg::train::EpochInfo& e) {
      std::printf("Trainer epoch %lld: train loss %.5f, validation loss %.5f\n",
                  (long long)e.epoch, e.train_loss, e.val_loss);
    });
    const tg::train::TrainResult r = trainer.run();
    std::printf("Trainer: %lld steps, best validation loss %.5f; outputs in %s/run\n",
                (long long)r.steps, r.best_val_loss, dir.c_str());
    return 0;
  } catch (const tg::Error& e) {
    std::fprintf(stderr, "research_loop: %s\n", e.what());
    return 1;
  }
}
