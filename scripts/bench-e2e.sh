#!/usr/bin/env bash
# End-to-end training throughput (issue 11's table), in one run.
#
# gpu (default; on the GPU machine): a reference-size dataset (1,024 samples, 8 -> 32 channels,
#   256x256, uncompressed, ~10.6 GB) and a float16 copy of it, tg-train with the data
#   device-resident and streamed (float32 and float16), the training step alone (tg-bench), the
#   measured pinned host-to-device bandwidth, and the PyTorch idioms (bench/torch_e2e.py): a
#   DataLoader over h5py with 8 and 16 workers, and the device-resident compiled loop.
# cpu: CPU training against the step alone (batch 32, 8 -> 32 channels, 32x32, 512 samples,
#   uncompressed, float32 and a float16 copy), in ROUNDS alternating rounds (default 3) of tg-bench
#   (train_step, 20 reps: 32 / median ms) and tg-train; medians over the rounds, and tg-train's
#   share of the step-alone rate. Builds build-cpu (CUDA off) when it has no tg-train / tg-bench.
# Each tg-train figure is the samples/s of the last of 3 epochs. Logs under $OUT; the table is
# printed last. PYTHON: an interpreter with h5py and numpy (default python3).
# Usage: scripts/bench-e2e.sh [gpu|cpu] [SAMPLES]   (SAMPLES default 1024 for gpu, 512 for cpu)
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=gpu
case "${1:-}" in gpu | cpu) MODE=$1; shift ;; esac
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/out-e2e}
mkdir -p "$OUT"
mem_of() {  # "peak GiB (cache GiB)" of the last epoch record of a run's metrics.jsonl
  "$PY" -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; e=[x for x in r if x.get('type')=='epoch'][-1]; g=2**30; print('%.2f (%.2f)' % (e.get('gpu_peak_bytes', 0) / g, e.get('data_cache_bytes', 0) / g))" "$1/metrics.jsonl" 2>/dev/null || echo "-"
}
rate_of() {  # samples/s of the last epoch record of a run's metrics.jsonl
  "$PY" -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; e=[x for x in r if x.get('type')=='epoch']; print('%.0f' % e[-1]['samples_per_s'])" "$1/metrics.jsonl" 2>/dev/null || echo "-"
}

if [ "$MODE" = cpu ]; then
  N=${1:-512}
  ROUNDS=${ROUNDS:-3}
  DATA=${E2E_DATA:-/tmp/e2e-cpu.h5}
  DATA16=${DATA%.h5}-f16.h5
  if [ ! -x build-cpu/examples/tg-train ] || [ ! -x build-cpu/examples/tg-bench ]; then
    { cmake -S . -B build-cpu -G Ninja -DTG_WITH_CUDA=OFF -DTG_WITH_DIST=OFF -DCMAKE_BUILD_TYPE=Release &&
      cmake --build build-cpu -j "$(nproc)" --target tg-train tg-bench; } >"$OUT/e2e-cpu-build.log" 2>&1 ||
      { tail -30 "$OUT/e2e-cpu-build.log"; exit 1; }
  fi
  shape="--in-channels 8 --out-channels 32 --size 32 --kernel 3"
  [ -f "$DATA" ] || "$PY" bench/make_e2e_data.py --output "$DATA" --samples "$N" $shape | tee "$OUT/e2e-cpu-data.log"
  [ -f "$DATA16" ] || "$PY" bench/make_e2e_data.py --output "$DATA16" --samples "$N" $shape --dtype float16 | tee -a "$OUT/e2e-cpu-data.log"
  cat "$DATA" "$DATA16" >/dev/null
  common="--epochs 3 --batch-size 32 --groups 8 --val-fraction 0 --log-every 1000 --device cpu --overwrite"
  steps="" trains="" trains16=""
  for r in $(seq 1 "$ROUNDS"); do
    build-cpu/examples/tg-bench --device cpu --batch 32 $shape --groups 8 --items train_step \
      --reps 20 --json "$OUT/e2e-cpu-step.json" >"$OUT/e2e-cpu-step-$r.log" 2>&1
    s=$("$PY" -c "import json; d=json.load(open('$OUT/e2e-cpu-step.json')); print('%.0f' % (32e3 / d['results']['custom']['train_step']['median_ms']))" 2>/dev/null || echo "-")
    # float32 and float16 in alternating order (the second run of a round tends to be slower)
    run32() { build-cpu/examples/tg-train --data "$DATA" $common --output /tmp/e2e-cpu-run >"$OUT/e2e-cpu-train-$r.log" 2>&1; }
    run16() { build-cpu/examples/tg-train --data "$DATA16" $common --output /tmp/e2e-cpu-run16 >"$OUT/e2e-cpu-train16-$r.log" 2>&1; }
    if [ $((r % 2)) -eq 1 ]; then run32; run16; else run16; run32; fi
    t=$(rate_of /tmp/e2e-cpu-run)
    t16=$(rate_of /tmp/e2e-cpu-run16)
    echo "round $r: step alone $s, tg-train float32 $t, float16 $t16 samples/s (load average $(cut -d' ' -f1 /proc/loadavg))"
    steps="$steps $s" trains="$trains $t" trains16="$trains16 $t16"
  done
  median() { "$PY" -c "import statistics,sys; v=[float(a) for a in sys.argv[1:] if a!='-']; print('%.0f' % statistics.median(v) if v else '-')" "$@"; }
  share() { "$PY" -c "import sys; print('%.0f%%' % (100*float(sys.argv[1])/float(sys.argv[2])))" "$1" "$2" 2>/dev/null || echo "-"; }
  S=$(median $steps) T=$(median $trains) T16=$(median $trains16)
  {
    echo "| item ($(nproc) cores, batch 32, 8 -> 32, 32x32, $N samples; median of $ROUNDS rounds) | samples/s | of the step alone |"
    echo "| --- | ---: | ---: |"
    echo "| training step alone (tg-bench, 32 / median ms) | $S | 100% |"
    echo "| tg-train, float32 data | $T | $(share "$T" "$S") |"
    echo "| tg-train, float16 data (widened on the CPU) | $T16 | $(share "$T16" "$S") |"
  } | tee "$OUT/e2e-cpu-table.md"
  exit 0
fi

N=${1:-1024}
DATA=${E2E_DATA:-/tmp/e2e.h5}
DATA16=${DATA%.h5}-f16.h5
if [ ! -x build-gpu/examples/tg-train ] || [ ! -x build-gpu/examples/tg-bench ]; then
  { cmake -S . -B build-gpu -G Ninja -DTG_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DCMAKE_BUILD_TYPE=Release -DTG_BUILD_TESTS=OFF &&
    cmake --build build-gpu -j "$(nproc)"; } >"$OUT/e2e-build.log" 2>&1 || { tail -30 "$OUT/e2e-build.log"; exit 1; }
fi
[ -f "$DATA" ] || "$PY" bench/make_e2e_data.py --output "$DATA" --samples "$N" | tee "$OUT/e2e-data.log"
[ -f "$DATA16" ] || "$PY" bench/make_e2e_data.py --output "$DATA16" --samples "$N" --dtype float16 | tee -a "$OUT/e2e-data.log"
cat "$DATA" "$DATA16" >/dev/null  # into the page cache, as in the issue's measurement
# The machine's read rate from the page cache with 16 parallel readers (dd over 16 slices of the
# file): the ceiling of any streaming from this file.
read_rate() {
  local f=$1 size; size=$(stat -c %s "$f")
  local slice=$(((size / 16 + 1048575) / 1048576)) t0 t1
  t0=$(date +%s.%N)
  for i in $(seq 0 15); do dd if="$f" of=/dev/null bs=1M skip=$((i * slice)) count=$slice 2>/dev/null & done
  wait
  t1=$(date +%s.%N)
  "$PY" -c "print('%.1f' % ($size / ($t1 - $t0) / 1e9))"
}
READ=$(read_rate "$DATA")

common="--epochs 3 --batch-size 128 --val-fraction 0 --log-every 1000 --device cuda --overwrite"
build-gpu/examples/tg-train --data "$DATA" $common --data-cache device --output /tmp/e2e-device >"$OUT/e2e-device.log" 2>&1
DEV=$(rate_of /tmp/e2e-device)
build-gpu/examples/tg-train --data "$DATA" $common --data-cache off --output /tmp/e2e-stream >"$OUT/e2e-stream.log" 2>&1
STREAM=$(rate_of /tmp/e2e-stream)
build-gpu/examples/tg-train --data "$DATA16" $common --data-cache off --output /tmp/e2e-stream16 >"$OUT/e2e-stream16.log" 2>&1
STREAM16=$(rate_of /tmp/e2e-stream16)
build-gpu/examples/tg-train --data "$DATA16" $common --data-cache device --output /tmp/e2e-device16 >"$OUT/e2e-device16.log" 2>&1
DEV16=$(rate_of /tmp/e2e-device16)
build-gpu/examples/tg-bench --sizes reference --items train_step --reps 20 --json "$OUT/e2e-step.json" >"$OUT/e2e-step.log" 2>&1
STEP=$("$PY" -c "import json; d=json.load(open('$OUT/e2e-step.json')); print('%.0f' % (128e3 / d['results']['reference']['train_step']['median_ms']))" 2>/dev/null || echo "-")
# E2E_TORCH=0 leaves out the PyTorch rows (the DataLoader idiom takes a minute or two).
if [ "${E2E_TORCH:-1}" != 0 ]; then
  PYTHONUNBUFFERED=1 "$PY" bench/torch_e2e.py --data "$DATA" >"$OUT/e2e-torch.log" 2>&1
else
  PYTHONUNBUFFERED=1 "$PY" bench/torch_e2e.py --data "$DATA" --modes h2d >"$OUT/e2e-torch.log" 2>&1
fi
torch_val() { "$PY" -c "import json,sys; [print('%.0f' % (json.loads(l).get(sys.argv[2]) or 0)) for l in open(sys.argv[1]) if l.startswith('{') and json.loads(l)['item']==sys.argv[3]]" "$OUT/e2e-torch.log" "$@" 2>/dev/null | head -1; }
H2D=$(torch_val value pinned_h2d_bytes_per_s)
DL8=$(torch_val samples_per_s torch_dataloader_8_workers)
DL16=$(torch_val samples_per_s torch_dataloader_16_workers)
RES=$(torch_val samples_per_s torch_resident_compiled)
sample_bytes() { "$PY" -c "import h5py, numpy as np; f=h5py.File('$1','r'); print(sum(np.prod(f[k].shape[1:])*f[k].dtype.itemsize for k in ('x','y')))"; }
SAMPLE_BYTES=$(sample_bytes "$DATA")
# The ceiling of reading into page-locked memory on this machine (bench/read_rate.cpp): one batch
# at a time, $(nproc) threads, 1 MiB preads; then also checked for NaN/Inf; then also overlapped
# with the previous batch's copy to the GPU (what a perfect streaming design would reach).
RR=/tmp/read_rate
g++ -O3 -std=c++17 bench/read_rate.cpp -I/usr/local/cuda/include -L/usr/local/cuda/lib64 -lcudart -pthread -o $RR >"$OUT/e2e-read-rate.log" 2>&1
rr() { $RR "$DATA" $((128 * SAMPLE_BYTES)) "$(nproc)" "$@" 2>>"$OUT/e2e-read-rate.log" || echo 0; }
RR_READ=$(rr); RR_CHECK=$(rr check); RR_COPY=$(rr copy); RR_BOTH=$(rr check copy)
as_samples() { "$PY" -c "print('%.0f' % (float('$1') * 1e9 / $SAMPLE_BYTES))" 2>/dev/null || echo -; }
{
  echo "| item | samples/s |"
  echo "| --- | ---: |"
  echo "| tg-train, device-resident (GPU peak GiB (cache GiB): $(mem_of /tmp/e2e-device)) | $DEV |"
  echo "| tg-train, device-resident, float16 data (16-bit cache; $(mem_of /tmp/e2e-device16)) | $DEV16 |"
  echo "| tg-train, streaming float32 ($(mem_of /tmp/e2e-stream)) | $STREAM |"
  echo "| tg-train, streaming float16 ($(sample_bytes "$DATA16") bytes a sample) | $STREAM16 ($("$PY" -c "print('%.2fx float32' % (float('$STREAM16') / float('$STREAM')))" 2>/dev/null || echo -)) |"
  echo "| training step alone (tg-bench, 128 / median ms) | $STEP |"
  echo "| pinned host-to-device bandwidth, as samples/s of $SAMPLE_BYTES bytes | $("$PY" -c "print('%.0f' % (float('${H2D:-0}') / $SAMPLE_BYTES))") ($("$PY" -c "print('%.1f' % (float('${H2D:-0}') / 1e9))") GB/s) |"
  echo "| page-cache read rate of the float32 file, 16 readers, as samples/s | $("$PY" -c "print('%.0f' % (float('$READ') * 1e9 / $SAMPLE_BYTES))" 2>/dev/null || echo -) ($READ GB/s) |"
  echo "| read into a page-locked batch, $(nproc) threads (bench/read_rate.cpp) | $(as_samples "$RR_READ") ($RR_READ GB/s) |"
  echo "| the same, checked for NaN/Inf | $(as_samples "$RR_CHECK") ($RR_CHECK GB/s) |"
  echo "| read (unchecked), overlapped with the previous batch's copy to the GPU | $(as_samples "$RR_COPY") ($RR_COPY GB/s) |"
  echo "| read and checked, overlapped with the copy (what streaming could reach) | $(as_samples "$RR_BOTH") ($RR_BOTH GB/s) |"
  echo "| PyTorch DataLoader over h5py, 8 workers | $DL8 |"
  echo "| PyTorch DataLoader over h5py, 16 workers | $DL16 |"
  echo "| PyTorch device-resident, compiled | $RES |"
} | tee "$OUT/e2e-table.md"
