"""The PyTorch side of the end-to-end comparison (scripts/bench-e2e.sh), on one GPU:

- h2d:       the pinned host-to-device copy bandwidth (1 GiB, CUDA events, median of 10);
- dataloader: what most PyTorch users write: a Dataset over h5py (one sample per item, the file
             opened in each worker), a DataLoader with W workers, pinned memory, non_blocking
             copies, the reference Model eager with MSE and SGD momentum;
- resident:  what an expert writes: the whole dataset on the GPU, a randperm gather per batch, model
             and loss compiled together.

Each mode trains E epochs and reports the samples/s of the last one (wall time between two
synchronisations). Prints one JSON line per measurement.
"""
import argparse
import json
import os
import sys
import time

import h5py
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_model import Model  # noqa: E402  (the one reference Model)


class H5Samples(torch.utils.data.Dataset):
    def __init__(self, path):
        self.path = path
        with h5py.File(path, "r") as f:
            self.n = f["x"].shape[0]
        self.f = None

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self.f is None:
            self.f = h5py.File(self.path, "r")
        return torch.from_numpy(self.f["x"][i]), torch.from_numpy(self.f["y"][i])


def h2d_bandwidth():
    src = torch.empty(1 << 28, dtype=torch.float32).pin_memory()
    dst = torch.empty(1 << 28, dtype=torch.float32, device="cuda")
    times = []
    for _ in range(12):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src, non_blocking=True)
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    t = sorted(times[2:])[len(times[2:]) // 2]
    return src.numel() * 4 / t


def make(info, compiled):
    cin, cout, k = info
    model = Model(cin, cout, k, 8, (cout, 1, 1), (cout, 1, 1)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step(x, t):
        return nn.functional.mse_loss(model(x), t)

    return model, opt, (torch.compile(step) if compiled else step)


def train_epochs(batches_of_epoch, epochs, opt, step):
    rate = 0.0
    for e in range(epochs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        n = 0
        for x, t in batches_of_epoch(e):
            loss = step(x, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += x.shape[0]
        torch.cuda.synchronize()
        rate = n / (time.perf_counter() - t0)
    return rate


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", default="8,16")
    p.add_argument("--modes", default="h2d,dataloader,resident")
    a = p.parse_args()
    torch.backends.cudnn.benchmark = True
    with h5py.File(a.data, "r") as f:
        xs, ys = f["x"].shape, f["y"].shape
    info = (xs[1], ys[1], xs[2] - ys[2] + 1)
    modes = a.modes.split(",")
    if "h2d" in modes:
        print(json.dumps({"item": "pinned_h2d_bytes_per_s", "value": h2d_bandwidth()}), flush=True)
    if "dataloader" in modes:
        for w in [int(v) for v in a.workers.split(",")]:
            ds = H5Samples(a.data)
            dl = torch.utils.data.DataLoader(ds, batch_size=a.batch_size, shuffle=True, num_workers=w,
                                             pin_memory=True, persistent_workers=True, drop_last=False)
            model, opt, step = make(info, compiled=False)

            def batches(_e):
                for x, t in dl:
                    yield x.cuda(non_blocking=True), t.cuda(non_blocking=True)

            rate = train_epochs(batches, a.epochs, opt, step)
            print(json.dumps({"item": f"torch_dataloader_{w}_workers", "samples_per_s": rate}), flush=True)
            del dl
    if "resident" in modes:
        with h5py.File(a.data, "r") as f:
            X = torch.from_numpy(f["x"][()]).cuda()
            Y = torch.from_numpy(f["y"][()]).cuda()
        model, opt, step = make(info, compiled=True)

        def batches(_e):
            perm = torch.randperm(X.shape[0], device="cuda")
            for i in range(0, X.shape[0], a.batch_size):
                idx = perm[i:i + a.batch_size]
                yield X[idx], Y[idx]

        rate = train_epochs(batches, a.epochs, opt, step)
        print(json.dumps({"item": "torch_resident_compiled", "samples_per_s": rate,
                          "peak_bytes": torch.cuda.max_memory_allocated()}), flush=True)


if __name__ == "__main__":
    main()
