#!/usr/bin/env bash
# Per-kernel durations of the reference training step and forward (ncu), on the device machine.
# Usage: scripts/profile.sh [extra tg-bench flags]; assumes build-gpu exists (scripts/bench.sh builds).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out-profile}
mkdir -p "$OUT"
ncu --metrics gpu__time_duration.sum,dram__bytes.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed \
  --csv build-gpu/examples/tg-bench --sizes reference --items train_step,forward --reps 1 --warmup 1 "$@" \
  >"$OUT/ncu.csv" 2>"$OUT/ncu.err"
python3 - "$OUT/ncu.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; rows = rows[1:]
ki, mi, vi, ui = hdr.index("Kernel Name"), hdr.index("Metric Name"), hdr.index("Metric Value"), hdr.index("Metric Unit")
idi = hdr.index("ID")
per = collections.OrderedDict()
for r in rows:
    per.setdefault((r[idi], r[ki][:60]), {})[r[mi]] = (r[vi], r[ui])
print(f"{'id':>4} {'kernel':60} {'time':>12} {'DRAM GB':>8} {'SM%':>6} {'DRAM%':>6}")
for (i, k), m in per.items():
    t = m.get("gpu__time_duration.sum", ("?", ""))
    b = m.get("dram__bytes.sum", ("0", "byte"))
    scale = {"byte": 1e-9, "Kbyte": 1e-6, "Mbyte": 1e-3, "Gbyte": 1}.get(b[1], 1e-9)
    print(f"{i:>4} {k:60} {t[0]:>9} {t[1]:>2} {float(b[0].replace(',', '')) * scale:8.3f} "
          f"{m.get('sm__throughput.avg.pct_of_peak_sustained_elapsed', ('?',))[0]:>6} "
          f"{m.get('dram__throughput.avg.pct_of_peak_sustained_elapsed', ('?',))[0]:>6}")
PY
