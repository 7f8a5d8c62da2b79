#include "synthetic.h"

#include "../core/autograd.h"
#include "../core/rng.h"
#include "../nn/model.h"
#include "dataset.h"

namespace tg::io {

void write_synthetic_dataset(const std::string& path, const SyntheticOptions& o) {
  TG_CHECK(o.samples >= 1 && o.in_channels >= 1 && o.out_channels >= 1 && o.kernel >= 1 &&
               o.height >= o.kernel && o.width >= o.kernel && o.batch >= 1,
           "write_synthetic_dataset: expected positive sizes with kernel <= height, width; got ",
           o.samples, " samples, ", o.in_channels, " -> ", o.out_channels, " channels, ", o.height,
           "x", o.width, ", kernel ", o.kernel);
  TG_CHECK(o.noise >= 0, "write_synthetic_dataset: expected noise >= 0, got ", o.noise);
  autograd::NoGradGuard no_grad;
  Generator gen(o.seed);
  nn::Model teacher(o.in_channels, o.out_channels, o.kernel, o.groups, {o.out_channels, 1, 1},
                    {o.out_channels, 1, 1}, gen);
  const int64_t ho = o.height - o.kernel + 1, wo = o.width - o.kernel + 1;
  DatasetWriterOptions write_options;
  write_options.dtype = o.dtype;
  DatasetWriter writer(path, {o.in_channels, o.height, o.width}, {o.out_channels, ho, wo},
                       o.samples, write_options);
  auto check_cancel = [&](int64_t done) {
    TG_CHECK(!(o.cancel && o.cancel->load()), "write_synthetic_dataset: writing '", path,
             "' interrupted after ", done, " of ", o.samples, " samples; nothing was saved");
  };
  for (int64_t done = 0; done < o.samples; done += o.batch) {
    check_cancel(done);
    const int64_t b = std::min(o.batch, o.samples - done);
    Tensor x = Tensor::rand({b, o.in_channels, o.height, o.width}, gen);
    Tensor y = teacher.forward(x);
    Tensor noise = Tensor::randn(y.shape(), gen, DType::Float32, Device::CPU, 0.0, o.noise);
    y.add_(noise);
    writer.append(x, y);
  }
  check_cancel(o.samples);
  writer.close();
}

}  // namespace tg::io
