"""Writes the end-to-end benchmark's dataset with h5py: x (N, Cin, H, W) ~ U[0, 1) and y (N, Cout,
H-k+1, W-k+1) ~ N(0, 1) float32, uncompressed, one sample per chunk (what tg-train's direct reads
and a per-sample h5py Dataset both like). Throughput does not depend on the values.

    python3 bench/make_e2e_data.py --output /tmp/e2e.h5 --samples 1024
"""
import argparse

import h5py
import numpy as np


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--output", required=True)
    p.add_argument("--samples", type=int, default=1024)
    p.add_argument("--in-channels", type=int, default=8)
    p.add_argument("--out-channels", type=int, default=32)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    a = p.parse_args()
    n, ci, co, s, k = a.samples, a.in_channels, a.out_channels, a.size, a.kernel
    so = s - k + 1
    rng = np.random.default_rng(0)
    with h5py.File(a.output, "w") as f:
        x = f.create_dataset("x", (n, ci, s, s), dtype=a.dtype, chunks=(1, ci, s, s))
        y = f.create_dataset("y", (n, co, so, so), dtype=a.dtype, chunks=(1, co, so, so))
        step = 16
        for i in range(0, n, step):
            b = min(step, n - i)
            x[i:i + b] = rng.random((b, ci, s, s), dtype=np.float32).astype(a.dtype)
            y[i:i + b] = rng.standard_normal((b, co, so, so), dtype=np.float32).astype(a.dtype)
    print(f"wrote {a.output}: x {(n, ci, s, s)}, y {(n, co, so, so)} {a.dtype}")


if __name__ == "__main__":
    main()
