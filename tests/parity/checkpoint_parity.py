#!/usr/bin/env python3
"""Checkpoint parity with PyTorch: tapegrad's checkpoints, HDF5 and safetensors, load into the
reference PyTorch Model and give the outputs of tg::nn::Model loaded from the same files.

1. PyTorch writes the initial parameters with safetensors.torch.save_file (PyTorch -> tapegrad),
   h5py a small dataset.
2. tg-train trains a few steps from them (--init init.safetensors) and writes last.h5; a second run
   writes last.safetensors with --checkpoint-format safetensors when tg-train has that flag, else
   last.h5 is converted (`tg-train convert`, or tg-checkpoint-forward convert).
3. For each checkpoint: PyTorch loads it, model.load_state_dict(safetensors.torch.load_file(path))
   or the h5py one-liner (strict: exactly the model's names), and computes the output on a random
   input in float64; tg-checkpoint-forward loads the same file into tg::nn::Model and computes the
   output on each device asked for, in float64 (and float32 without TF32, to --tol32).
4. The safetensors file's metadata holds the train state (train_state/step = the steps run).

Exits 0 when every relative L2 error is within tolerance, 1 otherwise; prints SKIP and exits 0 when
torch, safetensors or h5py is not installed.

    tests/parity/checkpoint_parity.py --build build [--devices cpu,cuda]
"""
import argparse
import os
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
except ImportError as e:  # not a failure: this check needs the GPU machine's Python packages
    print(f"SKIP checkpoint parity: {e}")
    sys.exit(0)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from reference_model import Model  # noqa: E402  (the one reference Model)


def rel(a, b):
    a = a.detach().double().cpu().numpy()
    b = b.detach().double().cpu().numpy()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, help="build folder (examples/tg-train, tests/tg-checkpoint-forward)")
    ap.add_argument("--devices", default="cpu", help="comma-separated: cpu,cuda")
    ap.add_argument("--tol", type=float, default=1e-6, help="float64 outputs (relative L2)")
    ap.add_argument("--tol32", type=float, default=1e-5, help="float32 outputs, TF32 off")
    args = ap.parse_args()
    tg_train = os.path.join(args.build, "examples", "tg-train")
    forward = os.path.join(args.build, "tests", "tg-checkpoint-forward")

    N, CIN, COUT, H, K, G, STEPS = 8, 3, 16, 12, 3, 4, 3
    torch.manual_seed(1)
    ref = Model(CIN, COUT, K, G, (COUT, 1, 1), (COUT, 1, 1))
    with torch.no_grad():
        ref.group_norm.weight.uniform_(0.5, 1.5)
        ref.group_norm.bias.uniform_(-0.5, 0.5)
    work = tempfile.mkdtemp(prefix="tg-ckpt-parity-")
    init = os.path.join(work, "init.safetensors")
    save_file({k: v.detach().contiguous() for k, v in ref.state_dict().items()}, init)
    data = os.path.join(work, "data.h5")
    with h5py.File(data, "w") as f:
        f["x"] = torch.rand(N, CIN, H, H).numpy()
        f["y"] = torch.randn(N, COUT, H - K + 1, H - K + 1).numpy()
    train = [tg_train, "--data", data, "--init", init, "--steps", str(STEPS), "--batch-size", "4",
             "--lr", "0.05", "--momentum", "0.9", "--groups", str(G), "--val-fraction", "0",
             "--device", "cpu"]

    run(train + ["--output", os.path.join(work, "run-h5")])
    h5_path = os.path.join(work, "run-h5", "last.h5")
    st_path = os.path.join(work, "run-st", "last.safetensors")
    if "--checkpoint-format" in run([tg_train, "--help"]):
        run(train + ["--output", os.path.join(work, "run-st"), "--checkpoint-format", "safetensors"])
        how = "tg-train --checkpoint-format safetensors"
    else:
        os.makedirs(os.path.dirname(st_path))
        if subprocess.run([tg_train, "convert", "--help"], capture_output=True).returncode == 0:
            run([tg_train, "convert", h5_path, st_path])
            how = "tg-train convert last.h5"
        else:
            run([forward, "convert", h5_path, st_path])
            how = "io::convert_checkpoint(last.h5) (tg-checkpoint-forward convert)"
    print(f"last.safetensors written by {how}")

    meta = safe_open(st_path, "pt").metadata()
    ok = meta.get("train_state/step") == str(STEPS) and "train_state/momentum_buffer" in meta
    print(f"safetensors metadata: train_state/step = {meta.get('train_state/step')!r}, "
          f"{len(meta)} keys{'' if ok else '  FAIL'}")

    x = torch.rand(2, CIN, H + 3, H + 1, dtype=torch.float64)
    x_path = os.path.join(work, "x.safetensors")
    save_file({"x": x}, x_path)
    loaders = {
        "hdf5": (h5_path, lambda p: {k: torch.from_numpy(f[k][()]) for f in [h5py.File(p, "r")]
                                     for k in f if isinstance(f[k], h5py.Dataset)}),
        "safetensors": (st_path, load_file),
    }
    rows = []
    for fmt, (path, load) in loaders.items():
        model = Model(CIN, COUT, K, G, (COUT, 1, 1), (COUT, 1, 1))
        model.load_state_dict(load(path))  # strict: the names are exactly the model's
        with torch.no_grad():
            want = model.double()(x)
        for dev in args.devices.split(","):
            for dtype, tol in (("float64", args.tol), ("float32", args.tol32)):
                y_path = os.path.join(work, f"y-{fmt}-{dev}-{dtype}.safetensors")
                run([forward, path, x_path, y_path, str(G), dev, dtype])
                rows.append((fmt, dev, dtype, rel(load_file(y_path)["y"], want), tol))

    print(f"{'checkpoint':12} {'device':6} {'dtype':8} {'rel L2 error':>12}")
    for fmt, dev, dtype, e, tol in rows:
        print(f"{fmt:12} {dev:6} {dtype:8} {e:12.2e}{'' if e <= tol else '  FAIL'}")
    ok = ok and all(e <= tol for *_, e, tol in rows)
    print("checkpoint parity:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
