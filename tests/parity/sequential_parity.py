#!/usr/bin/env python3
"""Parity with PyTorch for the library's building blocks: nn.Sequential of two ConvBlocks with a
Linear head on mean-pooled features, trained 3 steps with AdamW and with SGD (nesterov, weight decay).

Runs tests/parity/sequential_parity_tg.cpp (tg-sequential-parity), which writes its initial
parameters, batch, losses and final parameters as raw float32; repeats the steps in PyTorch in float64
from the same start (the state-dict names must match: body.0.conv.weight, ..., head.bias) and
compares every loss and parameter (relative L2 error). Exits 1 above --tol (default 1e-5), 77 when
torch is not installed (the test is then skipped).
"""
import argparse
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import torch.nn as nn
except ImportError as e:
    print(f"sequential_parity: skipped ({e})")
    sys.exit(77)


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, k, groups):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k)
        self.bias = nn.Parameter(torch.zeros(cout, 1, 1))
        self.scale = nn.Parameter(torch.ones(cout, 1, 1))
        self.group_norm = nn.GroupNorm(groups, cout)

    def forward(self, x):
        return self.group_norm(torch.sigmoid((self.conv(x) + self.bias) * self.scale))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(ConvBlock(3, 8, 3, 2), ConvBlock(8, 8, 3, 4))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))


def load(path, shape):
    return torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(shape).astype(np.float64))


def rel(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    den = np.linalg.norm(b)
    return np.linalg.norm(a - b) / (den if den > 0 else 1.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tg", required=True, help="path of tg-sequential-parity")
    ap.add_argument("--devices", default="cpu", help="cpu,cuda (cuda is skipped without a GPU)")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    torch.set_default_dtype(torch.float64)
    failures = 0
    with tempfile.TemporaryDirectory() as d:
        for device in args.devices.split(","):
            if device == "cuda" and not torch.cuda.is_available():
                print("cuda: skipped (no GPU)")
                continue
            for opt_name in ("adamw", "sgd"):
                subprocess.run([args.tg, "--dir", d, "--optimizer", opt_name, "--device", device], check=True)
                shapes = {}
                for line in open(os.path.join(d, "manifest.txt")):
                    name, dims = line.split()
                    shapes[name] = tuple(int(v) for v in dims.split(","))
                net = Net()
                state = {n: load(os.path.join(d, "init", n + ".bin"), shapes[n]) for n in net.state_dict()}
                missing = set(net.state_dict()) ^ (set(shapes) - {"x", "t"})
                if missing:
                    print(f"parameter names differ: {sorted(missing)}")
                    return 1
                net.load_state_dict(state)
                x, t = load(os.path.join(d, "x.bin"), shapes["x"]), load(os.path.join(d, "t.bin"), shapes["t"])
                if opt_name == "adamw":
                    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.05)
                else:
                    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
                losses = []
                for _ in range(3):
                    opt.zero_grad()
                    loss = torch.nn.functional.mse_loss(net(x), t)
                    loss.backward()
                    opt.step()
                    losses.append(loss.item())
                out = os.path.join(d, f"{opt_name}_{device}")
                tg_losses = [float(v) for v in open(os.path.join(out, "losses.txt"))]
                worst = max(rel([a], [b]) for a, b in zip(tg_losses, losses))
                for n, p in net.state_dict().items():
                    worst = max(worst, rel(load(os.path.join(out, n + ".bin"), shapes[n]), p))
                ok = worst <= args.tol
                failures += not ok
                print(f"{device} {opt_name}: worst relative error {worst:.3e} {'pass' if ok else 'FAIL'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
