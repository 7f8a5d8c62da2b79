#!/usr/bin/env python3
"""ModelNew (tapegrad's fused block in PyTorch) beside the reference Model, eager and torch.compile.

For each shape: forward (no grad) and training step (forward, MSE, backward, SGD momentum) of
  Model eager | Model torch.compile (model and loss compiled together) | ModelNew | ModelNew with
  torch.compile around the loss (the op stays one custom op in the graph)
CUDA-event medians after warm-up, and the step's peak memory (torch.cuda.max_memory_allocated: x,
target and what the step allocates; ModelNew's buffers come from PyTorch's caching allocator, so they
count). Prints a Markdown table (and JSON with --json) and which tapegrad path each shape ran.
The reference Model is bench/reference_model.py's; the shapes are bench/shapes.py's sweep (the
reference and small sizes first), then those of --shapes, as scripts/bench.sh --sweep takes them.

    PYTHONPATH=python python3 bench/modelnew_bench.py                 # issue 12's sweep
    PYTHONPATH=python python3 bench/modelnew_bench.py --no-default-shapes --reps 50 \
        --shapes "128,8,32,256,3,8;8,64,128,128,3,32"
    PYTHONPATH=python python3 bench/modelnew_bench.py --compile-mode max-autotune-no-cudagraphs
"""
import argparse
import json
import os
import statistics
import sys
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_model import Model  # noqa: E402
import shapes as sweep_shapes  # noqa: E402


def time_ms(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def peak_bytes(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def bench_shape(shape, args, tgt):
    n, cin, cout, hw, k, g = shape
    ho = hw - k + 1
    x = torch.rand(n, cin, hw, hw, device="cuda")
    t = torch.randn(n, cout, ho, ho, device="cuda")
    row = {}
    variants = [("Model eager", Model, False), ("Model compile", Model, True),
                ("ModelNew", tgt.ModelNew, False), ("ModelNew compile", tgt.ModelNew, True)]
    for name, cls, compiled in variants:
        if compiled and args.compile_mode == "none":
            continue
        if compiled and hasattr(torch, "_dynamo"):
            torch._dynamo.reset()  # a fresh compile per shape: no recompile limit, static shapes
        torch.manual_seed(0)
        model = cls(cin, cout, k, g, (cout, 1, 1), (cout, 1, 1)).cuda()
        if cls is tgt.ModelNew:
            row["path"] = model.path(x)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def loss_fn(x, t):
            return F.mse_loss(model(x), t)

        mode = None if args.compile_mode == "default" else args.compile_mode
        fwd = torch.compile(model, mode=mode) if compiled else model
        loss = torch.compile(loss_fn, mode=mode) if compiled else loss_fn

        def step():
            opt.zero_grad(set_to_none=True)
            loss(x, t).backward()
            opt.step()

        warm = args.warmup + (5 if compiled else 0)
        with torch.no_grad():
            row[f"{name} fwd"] = time_ms(lambda: fwd(x), warm, args.reps)
        row[f"{name} step"] = time_ms(step, warm, args.reps)
        row[f"{name} peak"] = peak_bytes(step)
        del model, opt, fwd, loss
        torch.cuda.empty_cache()
    return row


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shapes", default="",
                    help="more shapes after the sweep's: N,Cin,Cout,HW,k,G;...")
    ap.add_argument("--no-default-shapes", action="store_true", help="only the --shapes given")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile-mode", default="default",
                    help="default, max-autotune-no-cudagraphs, ... or none (no torch.compile)")
    ap.add_argument("--tf32", choices=("on", "off"), default="on",
                    help="torch.backends.cudnn.allow_tf32 (on: PyTorch's default); ModelNew follows it")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.reps < 1 or args.warmup < 0:
        ap.error(f"--reps must be >= 1 and --warmup >= 0, got {args.reps} and {args.warmup}")
    try:
        args.shape_list = sweep_shapes.resolve(args.shapes, not args.no_default_shapes)
    except ValueError as e:
        ap.error(f"--shapes: {e}")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        import tapegrad_torch as tgt
    except ImportError as e:
        sys.exit(f"modelnew_bench: cannot import tapegrad_torch ({e}); build it with "
                 "scripts/build-python.sh and run with PYTHONPATH=python")
    if not torch.cuda.is_available() or not tgt.built_with_cuda():
        sys.exit("modelnew_bench: needs a CUDA device and tapegrad_torch built with CUDA "
                 "(scripts/build-python.sh on a machine with nvcc and a CUDA PyTorch)")
    warnings.simplefilter("ignore")
    torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    torch.backends.cudnn.benchmark = True
    out = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "tf32": args.tf32,
           "compile_mode": args.compile_mode, "rows": {}}
    cols = ["Model eager", "Model compile", "ModelNew", "ModelNew compile"]
    print(f"# {out['gpu']}, torch {out['torch']}, TF32 {args.tf32}, compile mode "
          f"{args.compile_mode}; CUDA-event medians of {args.reps} runs, ms")
    print("| N, Cin -> Cout, HxW, k, G | path | item | " + " | ".join(cols) +
          " | ModelNew / Model compile |")
    print("| --- | --- | --- |" + " ---: |" * (len(cols) + 1))
    for shape in args.shape_list:
        row = bench_shape(shape, args, tgt)
        out["rows"][sweep_shapes.label(shape)] = {"shape": shape, **row}
        label = sweep_shapes.title(shape)
        for item, unit in (("fwd", "forward ms"), ("step", "train step ms"),
                           ("peak", "step peak GiB")):
            vals = [row.get(f"{c} {item}") for c in cols]
            scale = 2.0 ** -30 if item == "peak" else 1.0
            cells = ["" if v is None else f"{v * scale:.3f}" for v in vals]
            ratio = (f"{vals[2] / vals[1]:.2f}" if vals[1] and vals[2] else "")
            print(f"| {label} | {row['path']} | {unit} | " + " | ".join(cells) + f" | {ratio} |",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
