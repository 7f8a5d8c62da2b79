#!/usr/bin/env python3
"""PyTorch side of the side-by-side benchmark: the same items as tg-bench, eager and torch.compile.

Two modes:
  --sizes reference,small   tg-bench's default items for its two named sizes (scripts/bench.sh)
  --shapes "N,Cin,Cout,HW,k,G;..."   the sweep (scripts/bench.sh --sweep): for each shape, the
      forward (no grad) and the training step (forward, MSE, backward, SGD momentum) of the
      reference Model under each of --modes: eager, compile (torch.compile, default mode) and autotune
      (mode="max-autotune-no-cudagraphs"; compiles for minutes per shape: --no-autotune drops it),
      each with the step's peak memory.

Times with CUDA events after warm-up (a steady clock with --device cpu); reports median, min and
max in milliseconds, and the peak memory of a training step (torch.cuda.max_memory_allocated after a
reset: inputs x and target included). Convolutions may use TF32 (PyTorch's default,
torch.backends.cudnn.allow_tf32) and cuDNN picks its algorithms by timing (cudnn.benchmark).
Model and loss are compiled together. Writes JSON with --json PATH: results[label][item/mode].
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_model import Model  # noqa: E402
import shapes as sweep_shapes  # noqa: E402

# --modes: the name in the results and torch.compile's mode (None: eager).
MODES = {"eager": None, "compile": "default", "autotune": "max-autotune-no-cudagraphs"}


def sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, warmup=5, reps=30, dev="cuda"):
    for _ in range(warmup):
        fn()
    sync(dev)
    times = []
    for _ in range(reps):
        if dev == "cuda":
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def peak_bytes(fn, dev):
    """torch.cuda.max_memory_allocated over one call of fn (None on the CPU)."""
    if dev != "cuda":
        fn()
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def bench_size(n, cin, cout, hw, k, groups, compile_mode, items, small=False):
    """tg-bench's default items at one of its named sizes, eager and compiled (CUDA)."""
    torch.manual_seed(0)
    dev = "cuda"
    model = Model(cin, cout, k, groups, (cout, 1, 1), (cout, 1, 1)).to(dev)
    x = torch.rand(n, cin, hw, hw, device=dev)
    ho = hw - k + 1
    t = torch.randn(n, cout, ho, ho, device=dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    res = {}

    def loss_fn(x, t):
        return F.mse_loss(model(x), t)

    def step_with(loss_callable):
        def step():
            opt.zero_grad(set_to_none=True)
            loss_callable(x, t).backward()
            opt.step()
        return step

    z = zr = gy = tt = None
    with torch.no_grad():
        z = model.conv(x)
    if not small:
        with torch.no_grad():
            res["conv_forward/eager"] = time_ms(lambda: model.conv(x))
            res["forward/eager"] = time_ms(lambda: model(x))
            res["tail_forward/eager"] = time_ms(lambda: model.tail(z))
        zr = z.detach().requires_grad_(True)
        gy = torch.randn_like(z)
        res["conv_backward/eager"] = time_ms(
            lambda: torch.autograd.grad(model.conv(x), [model.conv.weight, model.conv.bias], gy))
        res["tail_forward_backward/eager"] = time_ms(lambda: model.tail(zr).backward(gy))
        # each op alone (tg-bench's "ops" items)
        tt = torch.randn_like(z)
        bss = lambda: torch.sigmoid((zr + model.bias) * model.scale)
        gn = lambda: model.group_norm(zr)
        mse = lambda: F.mse_loss(zr, tt)
        with torch.no_grad():
            res["bias_scale_sigmoid_fwd/eager"] = time_ms(bss)
            res["group_norm_fwd/eager"] = time_ms(gn)
            res["mse_loss_fwd/eager"] = time_ms(mse)
        res["bias_scale_sigmoid_fwd_bwd/eager"] = time_ms(lambda: bss().backward(gy))
        res["group_norm_fwd_bwd/eager"] = time_ms(lambda: gn().backward(gy))
        res["mse_loss_fwd_bwd/eager"] = time_ms(lambda: mse().backward())
    # Free the benchmark's own tensors so that the step's peak memory counts only x, the target and
    # what the step itself allocates.
    z = zr = gy = tt = None
    torch.cuda.empty_cache()
    res["train_step/eager"] = time_ms(step_with(loss_fn))
    res["train_step_peak_bytes/eager"] = peak_bytes(step_with(loss_fn), dev)

    if compile_mode != "none":
        mode = "reduce-overhead" if small else None
        cfwd = torch.compile(model, mode=mode)
        closs = torch.compile(loss_fn, mode=mode)
        if not small:
            with torch.no_grad():
                z = model.conv(x)
            zr = z.detach().requires_grad_(True)
            gy = torch.randn_like(z)
            ctail = torch.compile(model.tail)
            with torch.no_grad():
                res["forward/compile"] = time_ms(lambda: cfwd(x), warmup=8)
                res["tail_forward/compile"] = time_ms(lambda: ctail(z), warmup=8)
            res["tail_forward_backward/compile"] = time_ms(lambda: ctail(zr).backward(gy), warmup=8)
            z = zr = gy = None
            torch.cuda.empty_cache()
        res["train_step/compile"] = time_ms(step_with(closs), warmup=8)
        res["train_step_peak_bytes/compile"] = peak_bytes(step_with(closs), dev)
    return {k: v for k, v in res.items() if items is None or k.split("/")[0] in items}


def bench_mode(shape, name, dev, warmup, reps):
    """The forward and training step of one shape under one mode, and the step's peak memory."""
    n, cin, cout, hw, k, g = shape
    ho = hw - k + 1
    mode = MODES[name]
    if mode is not None and hasattr(torch, "_dynamo"):
        torch._dynamo.reset()  # a fresh compile per shape: no recompile limit, no dynamic shapes
    torch.manual_seed(0)
    model = Model(cin, cout, k, g, (cout, 1, 1), (cout, 1, 1)).to(dev)
    x = torch.rand(n, cin, hw, hw, device=dev)
    t = torch.randn(n, cout, ho, ho, device=dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def loss_fn(x, t):
        return F.mse_loss(model(x), t)

    fwd, loss = model, loss_fn
    if mode is not None:
        kw = {} if mode == "default" else {"mode": mode}
        fwd, loss = torch.compile(model, **kw), torch.compile(loss_fn, **kw)

    def step():
        opt.zero_grad(set_to_none=True)
        loss(x, t).backward()
        opt.step()

    warm = warmup + (3 if mode is not None else 0)  # the first call compiles
    with torch.no_grad():
        res = {f"forward/{name}": time_ms(lambda: fwd(x), warm, reps, dev)}
    res[f"train_step/{name}"] = time_ms(step, warm, reps, dev)
    res[f"train_step_peak_bytes/{name}"] = peak_bytes(step, dev)
    return res


def bench_sweep_shape(shape, modes, dev, warmup, reps):
    """bench_mode for each of modes, releasing the cached memory between them."""
    res = {}
    for name in modes:
        res.update(bench_mode(shape, name, dev, warmup, reps))
        print(f"torch_baseline: {sweep_shapes.title(shape)} {name}: step "
              f"{res[f'train_step/{name}']['median_ms']:.3f} ms, forward "
              f"{res[f'forward/{name}']['median_ms']:.3f} ms", file=sys.stderr, flush=True)
        if dev == "cuda":
            torch.cuda.empty_cache()
    return res


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--no-compile", action="store_true", help="eager only (both modes)")
    ap.add_argument("--sizes", default="reference,small",
                    help="tg-bench's named sizes: reference,small")
    ap.add_argument("--shapes", help="the sweep's shapes: N,Cin,Cout,HW,k,G;... (replaces --sizes)")
    ap.add_argument("--modes", default=",".join(MODES),
                    help="with --shapes: comma-separated subset of " + ",".join(MODES))
    ap.add_argument("--no-autotune", action="store_true",
                    help="with --shapes: drop max-autotune-no-cudagraphs (minutes of compiling "
                         "per shape)")
    ap.add_argument("--reps", type=int, default=30, help="timed runs per item (--shapes)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed runs first (--shapes)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cpu: steady-clock times, no peak memory (--shapes only)")
    args = ap.parse_args(argv)
    if args.reps < 1 or args.warmup < 0:
        ap.error(f"--reps must be >= 1 and --warmup >= 0, got {args.reps} and {args.warmup}")
    if args.shapes is not None:
        try:
            args.shape_list = sweep_shapes.parse_shapes(args.shapes)
        except ValueError as e:
            ap.error(f"--shapes: {e}")
        if not args.shape_list:
            ap.error("--shapes: expected at least one shape N,Cin,Cout,HW,k,G")
        modes = [m for m in args.modes.split(",") if m]
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            ap.error(f"--modes: unknown mode {bad[0] if bad else ''!r}; expected a comma-separated "
                     f"subset of {','.join(MODES)}")
        if args.no_compile:
            modes = [m for m in modes if MODES[m] is None]
        if args.no_autotune:
            modes = [m for m in modes if m != "autotune"]
        args.mode_list = modes
    else:
        if args.device != "cuda":
            ap.error("--device cpu: only with --shapes (the --sizes items are CUDA-only)")
        args.size_list = [s for s in args.sizes.split(",") if s]
        bad = [s for s in args.size_list if s not in ("reference", "small")]
        if bad or not args.size_list:
            ap.error(f"--sizes: unknown size {bad[0] if bad else ''!r}; expected reference,small")
    return args


def main(argv=None):
    args = parse_args(argv)
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_baseline: no CUDA device is visible to PyTorch (--device cpu for a CPU run "
                 "of --shapes)")
    compiled = args.shapes is not None and any(MODES[m] for m in args.mode_list)
    compiled = compiled or (args.shapes is None and not args.no_compile)
    if compiled and not hasattr(torch, "compile"):
        sys.exit(f"torch_baseline: torch {torch.__version__} has no torch.compile (PyTorch >= 2.0);"
                 " use --modes eager or --no-compile")
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convolutions
    torch.backends.cudnn.benchmark = True
    out = {"torch": torch.__version__, "cudnn": torch.backends.cudnn.version(), "device": dev,
           "results": {}}
    if dev == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
    if args.shapes is None:
        # measured device copy bandwidth (bytes read + written per second)
        buf = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(buf)
        copy = time_ms(lambda: dst.copy_(buf), reps=20)
        out["copy_bandwidth_GBps"] = 2 * buf.numel() / (copy["median_ms"] * 1e-3) / 1e9
        del buf, dst
    if args.shapes is not None:
        out["modes"] = {m: MODES[m] for m in args.mode_list}
        for shape in args.shape_list:
            out["results"][sweep_shapes.label(shape)] = bench_sweep_shape(
                shape, args.mode_list, dev, args.warmup, args.reps)
    else:
        mode = "none" if args.no_compile else "default"
        if "reference" in args.size_list:
            out["results"]["reference"] = bench_size(128, 8, 32, 256, 3, 8, mode, None)
        if "small" in args.size_list:
            out["results"]["small"] = bench_size(128, 3, 16, 32, 3, 8, mode, None, small=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
