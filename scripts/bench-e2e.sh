#!/usr/bin/env bash
# End-to-end training throughput on the GPU machine (issue 11's table), in one run:
#   a reference-size dataset (1,024 samples, 8 -> 32 channels, 256x256, uncompressed, ~10.6 GB),
#   tg-train with the data device-resident and streamed, the training step alone (tg-bench), the
#   measured pinned host-to-device bandwidth, and the PyTorch idioms (bench/torch_e2e.py): a
#   DataLoader over h5py with 8 and 16 workers, and the device-resident compiled loop.
# Each figure is the samples/s of the last of 3 epochs. Logs under $OUT; the table is printed last.
# Usage: scripts/bench-e2e.sh [SAMPLES]   (default 1024)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out-e2e}
mkdir -p "$OUT"
N=${1:-1024}
DATA=${E2E_DATA:-/tmp/e2e.h5}
if [ ! -x build-gpu/examples/tg-train ] || [ ! -x build-gpu/examples/tg-bench ]; then
  { cmake -S . -B build-gpu -G Ninja -DTG_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DCMAKE_BUILD_TYPE=Release -DTG_BUILD_TESTS=OFF &&
    cmake --build build-gpu -j "$(nproc)"; } >"$OUT/e2e-build.log" 2>&1 || { tail -30 "$OUT/e2e-build.log"; exit 1; }
fi
[ -f "$DATA" ] || python3 bench/make_e2e_data.py --output "$DATA" --samples "$N" | tee "$OUT/e2e-data.log"
cat "$DATA" >/dev/null  # into the page cache, as in the issue's measurement

common="--data $DATA --epochs 3 --batch-size 128 --val-fraction 0 --log-every 1000 --device cuda --overwrite"
rate_of() {  # samples/s of the last epoch record of a run's metrics.jsonl
  python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; e=[x for x in r if x.get('type')=='epoch']; print('%.0f' % e[-1]['samples_per_s'])" "$1/metrics.jsonl" 2>/dev/null || echo "-"
}
build-gpu/examples/tg-train $common --data-cache device --output /tmp/e2e-device >"$OUT/e2e-device.log" 2>&1
DEV=$(rate_of /tmp/e2e-device)
build-gpu/examples/tg-train $common --data-cache off --output /tmp/e2e-stream >"$OUT/e2e-stream.log" 2>&1
STREAM=$(rate_of /tmp/e2e-stream)
build-gpu/examples/tg-bench --sizes reference --items train_step --reps 20 --json "$OUT/e2e-step.json" >"$OUT/e2e-step.log" 2>&1
STEP=$(python3 -c "import json; d=json.load(open('$OUT/e2e-step.json')); print('%.0f' % (128e3 / d['results']['reference']['train_step']['median_ms']))" 2>/dev/null || echo "-")
PYTHONUNBUFFERED=1 python3 bench/torch_e2e.py --data "$DATA" >"$OUT/e2e-torch.log" 2>&1
torch_val() { python3 -c "import json,sys; [print('%.0f' % (json.loads(l).get(sys.argv[2]) or 0)) for l in open(sys.argv[1]) if l.startswith('{') and json.loads(l)['item']==sys.argv[3]]" "$OUT/e2e-torch.log" "$@" 2>/dev/null | head -1; }
H2D=$(torch_val value pinned_h2d_bytes_per_s)
DL8=$(torch_val samples_per_s torch_dataloader_8_workers)
DL16=$(torch_val samples_per_s torch_dataloader_16_workers)
RES=$(torch_val samples_per_s torch_resident_compiled)
SAMPLE_BYTES=$(python3 -c "import h5py; f=h5py.File('$DATA','r'); import numpy as np; print(sum(np.prod(f[k].shape[1:])*f[k].dtype.itemsize for k in ('x','y')))")
{
  echo "| item | samples/s |"
  echo "| --- | ---: |"
  echo "| tg-train, device-resident | $DEV |"
  echo "| tg-train, streaming float32 | $STREAM |"
  echo "| training step alone (tg-bench, 128 / median ms) | $STEP |"
  echo "| pinned host-to-device bandwidth, as samples/s of $SAMPLE_BYTES bytes | $(python3 -c "print('%.0f' % (float('${H2D:-0}') / $SAMPLE_BYTES))") ($(python3 -c "print('%.1f' % (float('${H2D:-0}') / 1e9))") GB/s) |"
  echo "| PyTorch DataLoader over h5py, 8 workers | $DL8 |"
  echo "| PyTorch DataLoader over h5py, 16 workers | $DL16 |"
  echo "| PyTorch device-resident, compiled | $RES |"
} | tee "$OUT/e2e-table.md"
