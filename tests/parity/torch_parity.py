#!/usr/bin/env python3
"""Parity with PyTorch: three SGD steps (momentum, nesterov and weight decay on) from the same
parameters on the same batches, in tg-train (strict float32: --tf32 off) and in PyTorch (float64).

Writes a random checkpoint and dataset with h5py, runs `tg-train --init ... --steps 3 --no-shuffle`
on each device asked for, runs the same steps in PyTorch, and compares the loss of each step (relative
error, --tol, default 1e-5) and every parameter's UPDATE p_after - p_before (relative L2 error,
--update-tol, default 2e-5: the update is small against the parameter, so float32 rounding of p weighs
more; on the CPU the worst is ~2e-6). Comparing the updates, not the parameters, keeps the shared initial values from hiding an
error in the step. Exits 1 when any error exceeds its tolerance, and 77 (ctest's SKIP_RETURN_CODE)
with the reason when PyTorch or h5py is missing, or a CUDA device is asked for and none is there.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
try:
    import h5py
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:
    print(f"SKIPPED: the parity check needs PyTorch, NumPy and h5py ({e}); on Debian: "
          "apt-get install python3-torch python3-h5py")
    sys.exit(SKIP)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from reference_model import Model  # noqa: E402  (the one reference Model)


def rel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tg-train", required=True, help="path to the tg-train executable")
    ap.add_argument("--devices", default="cpu", help="comma-separated: cpu,cuda")
    ap.add_argument("--tol", type=float, default=1e-5, help="relative error of each step's loss")
    ap.add_argument("--update-tol", type=float, default=2e-5,
                    help="relative L2 error of each parameter's update")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    if "cuda" in args.devices.split(","):
        smi = shutil.which("nvidia-smi")
        listed = smi and subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.strip()
        if not listed:
            print("SKIPPED: --devices includes cuda, but no NVIDIA GPU is visible (nvidia-smi -L)")
            return SKIP

    N, CIN, COUT, H, K, G, B = 12, 3, 16, 14, 3, 4, 4  # 3 -> 16: the fused CUDA kernels run
    LR, MOM, WD = 0.05, 0.9, 0.01
    torch.manual_seed(0)
    ref = Model(CIN, COUT, K, G, (COUT, 1, 1), (COUT, 1, 1)).double()
    with torch.no_grad():  # non-trivial GroupNorm affine parameters
        ref.group_norm.weight.uniform_(0.5, 1.5)
        ref.group_norm.bias.uniform_(-0.5, 0.5)
    x = torch.rand(N, CIN, H, H, dtype=torch.float64)
    y = torch.randn(N, COUT, H - K + 1, H - K + 1, dtype=torch.float64)
    x = x.float().double()  # the dataset is float32: both sides see the same values
    y = y.float().double()
    init = {k: v.detach().float().double().clone() for k, v in ref.state_dict().items()}
    ref.load_state_dict(init)

    work = tempfile.mkdtemp(prefix="tg-parity-")
    ckpt = os.path.join(work, "init.h5")
    data = os.path.join(work, "data.h5")
    with h5py.File(ckpt, "w") as f:
        for k, v in init.items():
            f[k] = v.float().numpy()
    with h5py.File(data, "w") as f:
        f["x"] = x.float().numpy()
        f["y"] = y.float().numpy()

    # PyTorch reference (float64)
    opt = torch.optim.SGD(ref.parameters(), lr=LR, momentum=MOM, nesterov=True, weight_decay=WD)
    torch_losses = []
    for s in range(args.steps):
        xb = x[(s * B) % N:(s * B) % N + B]
        yb = y[(s * B) % N:(s * B) % N + B]
        opt.zero_grad()
        loss = F.mse_loss(ref(xb), yb)
        loss.backward()
        opt.step()
        torch_losses.append(loss.item())
    torch_params = {k: v.detach().numpy() for k, v in ref.state_dict().items()}

    worst = worst_update = 0.0
    rows = []
    for dev in args.devices.split(","):
        out = os.path.join(work, "out-" + dev)
        cmd = [args.tg_train, "--data", data, "--init", ckpt, "--steps", str(args.steps),
               "--no-shuffle", "--batch-size", str(B), "--lr", str(LR), "--momentum", str(MOM),
               "--nesterov", "--weight-decay", str(WD), "--groups", str(G), "--device", dev,
               "--tf32", "off", "--val-fraction", "0", "--log-every", "1", "--output", out]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print("tg-train failed on", dev, ":\n", r.stdout, r.stderr)
            return 1
        losses = []
        with open(os.path.join(out, "metrics.jsonl")) as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("type") == "step":
                    losses.append(rec["loss"])
        if len(losses) != args.steps:
            print(f"{dev}: expected {args.steps} step records, got {len(losses)}")
            return 1
        for s in range(args.steps):
            e = abs(losses[s] - torch_losses[s]) / abs(torch_losses[s])
            rows.append((dev, f"loss step {s + 1}", losses[s], torch_losses[s], e, args.tol))
            worst = max(worst, e)
        with h5py.File(os.path.join(out, "last.h5"), "r") as f:
            got = {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}
        if set(got) != set(torch_params):
            print(f"{dev}: checkpoint names {sorted(got)} != {sorted(torch_params)}")
            return 1
        for k in torch_params:
            before = init[k].numpy()
            d_tg = got[k].astype(np.float64) - before
            d_torch = torch_params[k] - before
            if not np.any(d_torch):
                print(f"{dev}: PyTorch did not change {k}: the comparison would be empty")
                return 1
            e = rel(d_tg, d_torch)
            rows.append((dev, "update " + k, float(np.linalg.norm(d_tg)),
                         float(np.linalg.norm(d_torch)), e, args.update_tol))
            worst_update = max(worst_update, e)

    print(f"{'device':6} {'quantity':28} {'tapegrad':>14} {'pytorch':>14} {'rel error':>10}")
    failed = False
    for dev, name, a, b, e, tol in rows:
        flag = "" if e <= tol else "  FAIL"
        failed = failed or e > tol
        print(f"{dev:6} {name:28} {a:14.8g} {b:14.8g} {e:10.2e}{flag}")
    print(f"worst relative error: losses {worst:.2e} (tolerance {args.tol:g}), updates "
          f"{worst_update:.2e} (tolerance {args.update_tol:g}); updates compared by L2 norm")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
