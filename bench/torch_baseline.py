#!/usr/bin/env python3
"""PyTorch side of the side-by-side benchmark: the same items as tg-bench, eager and torch.compile.

Times with CUDA events after warm-up; reports median, min and max in milliseconds, and the peak memory
of a training step (inputs x and target included). Writes JSON with --json PATH.
"""
import argparse
import json
import statistics
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


class Model(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, num_groups, bias_shape, scale_shape):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)
        self.bias = nn.Parameter(torch.randn(bias_shape))
        self.scale = nn.Parameter(torch.randn(scale_shape))
        self.group_norm = nn.GroupNorm(num_groups, out_channels)

    def tail(self, z):
        return self.group_norm(torch.sigmoid((z + self.bias) * self.scale))

    def forward(self, x):
        return self.tail(self.conv(x))


def time_ms(fn, warmup=5, reps=30):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def bench_size(n, cin, cout, hw, k, groups, compile_mode, items, small=False):
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
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step_with(loss_fn)()
    torch.cuda.synchronize()
    res["train_step_peak_bytes/eager"] = torch.cuda.max_memory_allocated()

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
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step_with(closs)()
        torch.cuda.synchronize()
        res["train_step_peak_bytes/compile"] = torch.cuda.max_memory_allocated()
    return {k: v for k, v in res.items() if items is None or k.split("/")[0] in items}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--sizes", default="reference,small")
    args = ap.parse_args()
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convolutions
    out = {"torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
           "gpu": torch.cuda.get_device_name(0), "results": {}}
    # measured device copy bandwidth (bytes read + written per second)
    buf = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(buf)
    copy = time_ms(lambda: dst.copy_(buf), reps=20)
    out["copy_bandwidth_GBps"] = 2 * buf.numel() / (copy["median_ms"] * 1e-3) / 1e9
    del buf, dst
    mode = "none" if args.no_compile else "default"
    sizes = args.sizes.split(",")
    if "reference" in sizes:
        out["results"]["reference"] = bench_size(128, 8, 32, 256, 3, 8, mode, None)
    if "small" in sizes:
        out["results"]["small"] = bench_size(128, 3, 16, 32, 3, 8, mode, None, small=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)


if __name__ == "__main__":
    sys.exit(main())
