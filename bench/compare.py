#!/usr/bin/env python3
"""Side-by-side tables of tg-bench and bench/torch_baseline.py results (their --json files).

    compare.py TG_JSON TORCH_JSON                     # tg-bench's items beside eager and compile
    compare.py --sweep JSON [JSON ...]                # scripts/bench.sh --sweep: one Markdown
        table, a row per shape: training step and forward of tapegrad, eager, compile (default
        mode) and autotune (max-autotune-no-cudagraphs), tapegrad over the better compile, the
        step's peak memory, and the path tapegrad's block took

The sweep's files are tg-bench runs of custom sizes (--batch ...: their shape and path are in their
results) and torch_baseline.py --shapes runs, in any number and order (the files of several
partial sweeps join into one table; rows follow bench/shapes.py's list, then the order in which
other shapes first appear). A value
that was not measured (a mode left out, a run that failed) prints as "-".
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapes as sweep_shapes  # noqa: E402

GIB = 1024 ** 3
COMPILE_MODES = ("compile", "autotune")


def side_by_side(tg, pt):
    print(f"GPU: {pt.get('gpu')}, PyTorch {pt.get('torch')}, cuDNN {pt.get('cudnn')}, "
          f"device copy {pt.get('copy_bandwidth_GBps', 0):.0f} GB/s (read + write)")
    print(f"{'size':10} {'item':24} {'tapegrad ms':>12} {'eager ms':>10} {'compile ms':>11} "
          f"{'tg/eager':>9} {'tg/compile':>11}")
    for size, items in tg["results"].items():
        ref = pt["results"].get(size, {})
        for item, v in items.items():
            if not isinstance(v, dict) or "median_ms" not in v:
                continue
            ours = v["median_ms"]
            eager = ref.get(item + "/eager", {}).get("median_ms")
            comp = ref.get(item + "/compile", {}).get("median_ms")
            fmt = lambda x: f"{x:.3f}" if x else "-"
            ratio = lambda x: f"{ours / x:.2f}" if x else "-"
            print(f"{size:10} {item:24} {ours:12.3f} {fmt(eager):>10} {fmt(comp):>11} "
                  f"{ratio(eager):>9} {ratio(comp):>11}")
        if "train_step_peak_bytes" in items:
            ours = items["train_step_peak_bytes"] / GIB
            e = (ref.get("train_step_peak_bytes/eager") or 0) / GIB
            c = (ref.get("train_step_peak_bytes/compile") or 0) / GIB
            print(f"{size:10} {'train_step peak GiB':24} {ours:12.3f} {e:10.3f} {c:11.3f} "
                  f"{ours / e if e else 0:9.2f} {ours / c if c else 0:11.2f}")


def tg_shape(results):
    """The (N, Cin, Cout, HW, k, G) of one tg-bench size's results."""
    s = results["shape"]
    return (s["batch"], s["in_channels"], s["out_channels"], s["size"], s["kernel"], s["groups"])


def ms(d, key):
    v = d.get(key)
    return v.get("median_ms") if isinstance(v, dict) else None


def sweep_row(shape, tg, pt):
    """The cells of one shape's row (tg: tg-bench's results for it or {}; pt: torch's or {})."""
    f = lambda x, p=3: "-" if x is None else f"{x:.{p}f}"
    cells = [sweep_shapes.title(shape), tg.get("path", "-")]
    for item in ("train_step", "forward"):
        ours = ms(tg, item)
        theirs = {m: ms(pt, f"{item}/{m}") for m in ("eager",) + COMPILE_MODES}
        best = min((v for m, v in theirs.items() if m in COMPILE_MODES and v), default=None)
        cells += [f(ours)] + [f(theirs[m]) for m in ("eager",) + COMPILE_MODES]
        cells.append(f(ours / best, 2) if ours and best else "-")
    tg_peak = tg.get("train_step_peak_bytes")
    peaks = [pt.get(f"train_step_peak_bytes/{m}") for m in COMPILE_MODES]
    best_peak = min((p for p in peaks if p), default=None)
    gib = lambda b: b / GIB if b else None
    cells += [f(gib(tg_peak), 2), f(gib(best_peak), 2)]
    return cells


def sweep(docs):
    """docs: tg-bench runs of custom sizes and torch_baseline --shapes runs, in any mix; the rows
    follow the sweep's list (bench/shapes.py), then the order in which other shapes first appear."""
    order, tg, pt, meta, modes = [], {}, {}, {}, {}
    for doc in docs:
        if "modes" in doc:  # torch_baseline.py --shapes
            meta = meta or doc
            modes.update(doc["modes"])
            for lab, res in doc["results"].items():
                shape = sweep_shapes.parse_shape(lab)
                pt.setdefault(shape, {}).update(res)
                order.append(shape)
        else:
            for res in doc["results"].values():
                if "shape" in res:
                    tg[tg_shape(res)] = res
                    order.append(tg_shape(res))
    seen = list(dict.fromkeys(order))
    first = [s for s in sweep_shapes.SWEEP if s in seen]
    seen = first + [s for s in seen if s not in first]
    rows = [sweep_row(s, tg.get(s, {}), pt.get(s, {})) for s in seen]
    modes = ", ".join(m if v is None else f"{m} (torch.compile mode {v})" for m, v in modes.items())
    where = (f"GPU: {meta['gpu']}, cuDNN {meta.get('cudnn')} (TF32 convolutions, cudnn.benchmark)"
             if "gpu" in meta else f"device: {meta.get('device', '-')}")
    print(f"{where}, PyTorch {meta.get('torch', '-')}; measured: {modes or 'nothing'}. Medians in "
          "ms; tg / best compile: tapegrad over the faster of compile and autotune; peak: the "
          "training step's torch.cuda.max_memory_allocated (tapegrad: its allocator's peak), x and "
          "target included; compile peak: the lower of the two.")
    print()
    head = ["N, Cin -> Cout, HxW, k, G", "tapegrad path",
            "step tg", "eager", "compile", "autotune", "tg / best compile",
            "fwd tg", "eager", "compile", "autotune", "tg / best compile",
            "peak GiB tg", "peak GiB compile"]
    print("| " + " | ".join(head) + " |")
    print("| --- | --- |" + " ---: |" * (len(head) - 2))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sweep", action="store_true", help="TORCH_JSON TG_JSON...: the sweep's table")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args(argv)
    docs = []
    for path in args.files:
        try:
            with open(path) as fh:
                docs.append(json.load(fh))
        except (OSError, ValueError) as e:
            ap.error(f"cannot read the results {path}: {e}")
    if args.sweep:
        sweep(docs)
    else:
        if len(docs) != 2:
            ap.error(f"expected TG_JSON TORCH_JSON, got {len(docs)} files")
        side_by_side(docs[0], docs[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
