#!/usr/bin/env python3
"""Side-by-side table of tg-bench and bench/torch_baseline.py results (both --json files)."""
import json
import sys


def main():
    tg = json.load(open(sys.argv[1]))
    pt = json.load(open(sys.argv[2]))
    print(f"GPU: {pt.get('gpu')}, PyTorch {pt.get('torch')}, cuDNN {pt.get('cudnn')}, "
          f"device copy {pt.get('copy_bandwidth_GBps', 0):.0f} GB/s (read + write)")
    print(f"{'size':10} {'item':24} {'tapegrad ms':>12} {'eager ms':>10} {'compile ms':>11} "
          f"{'tg/eager':>9} {'tg/compile':>11}")
    for size, items in tg["results"].items():
        ref = pt["results"].get(size, {})
        for item, v in items.items():
            if not isinstance(v, dict):
                continue
            ours = v["median_ms"]
            eager = ref.get(item + "/eager", {}).get("median_ms")
            comp = ref.get(item + "/compile", {}).get("median_ms")
            fmt = lambda x: f"{x:.3f}" if x else "-"
            ratio = lambda x: f"{ours / x:.2f}" if x else "-"
            print(f"{size:10} {item:24} {ours:12.3f} {fmt(eager):>10} {fmt(comp):>11} "
                  f"{ratio(eager):>9} {ratio(comp):>11}")
        if "train_step_peak_bytes" in items:
            gib = 1024 ** 3
            ours = items["train_step_peak_bytes"] / gib
            e = ref.get("train_step_peak_bytes/eager", 0) / gib
            c = ref.get("train_step_peak_bytes/compile", 0) / gib
            print(f"{size:10} {'train_step peak GiB':24} {ours:12.3f} {e:10.3f} {c:11.3f} "
                  f"{ours / e if e else 0:9.2f} {ours / c if c else 0:11.2f}")


if __name__ == "__main__":
    main()
