#!/usr/bin/env python3
"""PyTorch's CPU training step for the CPU target (batch 32, 8 -> 32, 32x32, 8 groups by default):
median of --reps steps after warm-up, with torch using --threads threads (default: all cores)."""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_model import Model  # noqa: E402  (the one reference Model)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--cin", type=int, default=8)
    ap.add_argument("--cout", type=int, default=32)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = Model(a.cin, a.cout, 3, a.groups, (a.cout, 1, 1), (a.cout, 1, 1))
    x = torch.rand(a.batch, a.cin, a.size, a.size)
    t = torch.randn(a.batch, a.cout, a.size - 2, a.size - 2)
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        F.mse_loss(m(x), t).backward()
        opt.step()

    for _ in range(5):
        step()
    ms = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        step()
        ms.append((time.perf_counter() - t0) * 1e3)
    print(f"torch {torch.__version__} cpu threads {torch.get_num_threads()}: train_step median "
          f"{statistics.median(ms):.3f} ms (min {min(ms):.3f}, max {max(ms):.3f})")


if __name__ == "__main__":
    main()
