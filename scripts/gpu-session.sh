#!/usr/bin/env bash
# The GPU proof and measurements of one session, in stages that fit one device call each and reuse
# the build when the machine is still warm:
#   tests:   build, every ctest with the GPU active (in parallel), tg-gradcheck --op all on CUDA,
#            compute-sanitizer memcheck and racecheck on the CUDA op and fused-block tests
#   verify:  the ctests matching $VERIFY, racecheck on the CUDA ops' kernels, tg-bench
#   interop: tapegrad_torch's CUDA tests, ModelNew against Model at the sweep shapes, checkpoint parity
#   e2e:     scripts/bench-e2e.sh gpu (issue 11's table)
#   sweep:   scripts/bench.sh --sweep --no-autotune over SWEEP_SHAPES (default: the 9 of bench/shapes.py)
#   ncu:     Nsight Compute (full set, clocks left alone) on one training step at NCU_SHAPES (default:
#            the reference, 64,32->64,96 and the small size): per-kernel table and details
#   proof:   every ctest, memcheck and racecheck on the fused path's random-shape and TF32 tests
#   final:   VERIFY ctests and the Python tests side by side, sanitizers on SANITIZE, tg-bench, e2e
#            without the PyTorch rows
# Usage: scripts/gpu-session.sh STAGE...   Logs: $OUT/logs.tgz; summary: $OUT/summary.txt (printed last).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out-gpu}
L=/tmp/gpu-logs
mkdir -p "$OUT" "$L"
export PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1 TG_KERNEL_CACHE=/tmp/tgk
S="$OUT/summary.txt"
note() { echo "$*" | tee -a "$S"; }
pack() { tar -C "$L" -czf "$OUT/logs.tgz" . 2>/dev/null; }
trap pack EXIT
B=build-gpu/tests/tg_tests
E=build-gpu/examples

build() {
  local t0; t0=$(date +%s)
  { cmake -S . -B build-gpu -G Ninja -DTG_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release \
      -DPython3_EXECUTABLE="$(command -v python3)" && cmake --build build-gpu -j "$(nproc)"; } >"$L/build.log" 2>&1 ||
    { grep -E "error|FAILED" "$L/build.log" | head -30 | tee -a "$S"; exit 1; }
  note "build: ok ($(($(date +%s) - t0)) s) on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
}

# ctest with the selection ARGS (-R / -E ...), J at a time: ctest_run LOG J ARGS...; log $L/LOG.log;
# the summary gets the count, the failed tests and their failure messages.
ctest_run() {
  local log=$1 j=$2 t0; shift 2; t0=$(date +%s)
  timeout 230 ctest --test-dir build-gpu -j "$j" --timeout 200 --output-on-failure "$@" >"$L/$log.log" 2>&1
  note "ctest $*: rc=$? ($(($(date +%s) - t0)) s) $(grep -E 'tests passed|tests failed' "$L/$log.log")"
  grep -E '^\s+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess)' "$L/$log.log" | head -20 | tee -a "$S"
  grep -E 'Failure|actual:|worst relative|Error' "$L/$log.log" | head -30 | tee -a "$S"
}

# The ctests whose names match $1 (a regex), $3 at a time (default 12), log $L/$2.log.
ctest_subset() { ctest_run "$2" "${3:-12}" -R "$1"; }

# compute-sanitizer --tool $1 on the gtests matching the filter $2, log $L/$3.log, at most $4 s.
sanitize() {
  local t0; t0=$(date +%s)
  timeout "$4" compute-sanitizer --tool "$1" --error-exitcode 9 $B --gtest_filter="$2" --gtest_brief=1 >"$L/$3.log" 2>&1
  note "$1 ($2): rc=$? ($(($(date +%s) - t0)) s) $(grep 'RACECHECK SUMMARY\|ERROR SUMMARY' "$L/$3.log" | tail -1) $(grep -E '^\[  (PASSED|FAILED)' "$L/$3.log" | tr '\n' ' ')"
}

# tg-bench at the two built-in sizes: forward, step, step as a CUDA graph.
tgbench() {
  timeout 60 $E/tg-bench --sizes reference,small --items forward,train_step,train_step_graph >"$L/tgbench.txt" 2>&1
  note "tg-bench: rc=$?"; grep -E "path|forward|train_step|peak" "$L/tgbench.txt" | tee -a "$S"
}

stage_tests() {
  ctest_run ctest 12 -E '^parity\.torch'
  timeout 60 $E/tg-gradcheck --op all --device cuda --dtype float64 --trials 5 >"$L/gradcheck.log" 2>&1
  note "tg-gradcheck --op all cuda float64: rc=$? $(tail -1 "$L/gradcheck.log")"
  timeout 30 $E/tg-gradcheck --op all --device cuda --dtype float32 --trials 2 >>"$L/gradcheck.log" 2>&1
  note "tg-gradcheck --op all cuda float32: rc=$? $(tail -1 "$L/gradcheck.log")"
  sanitize memcheck '*Cuda*:-CudaAllocator.*:CudaGraph*:TgTrain*:*Process*' memcheck 110
  sanitize racecheck 'ConvBlockCudaDirect.*:ConvBlockEpilogue*:ReduceCuda.*:BroadcastCuda.*:UnaryCuda.*:ShapeCuda.*:LossCuda.*:GroupNormCuda.*:AdamW*Cuda*:SGDCuda.*' racecheck 110
  tgbench
}

# A subset of stage_tests: the ctest names matching VERIFY (a regex), racecheck on the CUDA ops'
# kernels, tg-bench at the two built-in sizes.
stage_verify() {
  ctest_subset "${VERIFY:-ConvBlock|Trainer|BatchSource|Graph|CapturedStep|parity.sequential}" ctest-verify
  sanitize racecheck 'ReduceCuda.*:BroadcastCuda.*:UnaryCuda.*:ShapeCuda.*:LossCuda.*:MatmulCuda.*:ElementwiseCuda.*:AdamW*Cuda*' racecheck-ops 150
  tgbench
}

stage_interop() {
  local t0; t0=$(date +%s)
  # A crash prints its native stack (a SIGSEGV handler preloaded) and Python's (faulthandler).
  cat >/tmp/segv.c <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <ucontext.h>
#include <unistd.h>
/* Prints each frame as "segv-frame MODULE OFFSET" (for addr2line), the faulting PC first. */
static void frame(void* a) {
  Dl_info d;
  if (dladdr(a, &d) && d.dli_fname)
    fprintf(stderr, "segv-frame %s 0x%lx\n", d.dli_fname, (unsigned long)((char*)a - (char*)d.dli_fbase));
  else
    fprintf(stderr, "segv-frame ? %p\n", a);
}
static void on_segv(int sig, siginfo_t* si, void* ctx) {
  ucontext_t* uc = (ucontext_t*)ctx;
  fprintf(stderr, "segv: fault address %p\n", si->si_addr);
  frame((void*)uc->uc_mcontext.gregs[REG_RIP]);
  void* f[64];
  int n = backtrace(f, 64);
  for (int i = 0; i < n; ++i) frame(f[i]);
  signal(sig, SIG_DFL);
  raise(sig);
}
__attribute__((constructor)) static void install(void) {
  struct sigaction sa = {0};
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &sa, 0);
}
C
  gcc -shared -fPIC -o /tmp/segv.so /tmp/segv.c
  LD_PRELOAD=/tmp/segv.so timeout 240 scripts/build-python.sh --test build-gpu >"$L/python.log" 2>&1
  note "tapegrad_torch (CUDA) tests: rc=$? ($(($(date +%s) - t0)) s) $(grep -E '^(OK|FAILED|Ran)' "$L/python.log" | tr '\n' ' ')"
  note "extension: $(grep -E 'exports|compiling and linking' "$L/python.log" | head -2 | tr '\n' ' ') NEEDED libstdc++: $(readelf -d python/tapegrad_torch/_C*.so | grep -c 'libstdc++') ($(g++ -print-file-name=libstdc++.so))"
  # A crash's frames as functions and lines (the extension has -g; libtapegrad's symbols are there).
  grep -E '^segv' "$L/python.log" | head -24 | while read -r tag mod off; do
    case "$mod" in
      *.so) echo "$tag $mod $off $(addr2line -f -C -e "$mod" "$off" 2>/dev/null | tr '\n' ' ')" ;;
      *) echo "$tag $mod $off" ;;
    esac
  done | tee -a "$S"
  grep -E "^(FAIL|ERROR):|Fatal Python|^/.*\\[0x|File \"" "$L/python.log" | head -40 | tee -a "$S"
  # After a crash, the same tests without the runtime-compiled kernels (TG_DIRECT_KERNELS=0: the
  # epilogue path), which tells whether they are what crashes.
  if grep -q '^segv' "$L/python.log"; then
    TG_DIRECT_KERNELS=0 LD_PRELOAD=/tmp/segv.so timeout 200 scripts/build-python.sh --test build-gpu >"$L/python-nodirect.log" 2>&1
    note "tapegrad_torch (CUDA) tests with TG_DIRECT_KERNELS=0: rc=$? $(grep -E '^(OK|FAILED|Ran)' "$L/python-nodirect.log" | tr '\n' ' ')"
  fi
  # ModelNew and Model eager at every sweep shape (the compiled Model of the same call is the sweep
  # stage's); with torch.compile too at the reference and small sizes.
  PYTHONPATH=python timeout 150 python3 bench/modelnew_bench.py --compile-mode none --json "$L/modelnew.json" >"$L/modelnew.md" 2>"$L/modelnew.err"
  note "modelnew bench (no compile, sweep shapes): rc=$?"; cat "$L/modelnew.md" >>"$S"
  PYTHONPATH=python timeout 150 python3 bench/modelnew_bench.py --no-default-shapes --shapes "128,8,32,256,3,8;128,3,16,32,3,8" \
    --json "$L/modelnew-compile.json" >"$L/modelnew-compile.md" 2>>"$L/modelnew.err"
  note "modelnew bench (compile, reference and small): rc=$?"; cat "$L/modelnew-compile.md" >>"$S"
}

# One call for a session's last changes: the ctests matching $VERIFY and the Python tests at the same
# time (GPU correctness, no timing), then memcheck and racecheck on $SANITIZE (gtest filter), then
# tg-bench, then e2e without the PyTorch rows (E2E_TORCH=0).
stage_final() {
  local t0; t0=$(date +%s)
  ( timeout 240 scripts/build-python.sh --test build-gpu >"$L/python.log" 2>&1; echo "rc=$?" >"$L/python.rc" ) &
  local py=$!
  ctest_subset "${VERIFY:-ConvBlock|Determinism|CapturedStep|Trainer|BatchSource|Graph|Direct|Jit}" ctest-verify 8
  if grep -qE '^\s+[0-9]+ - ' "$L/ctest-verify.log"; then  # failures: again without the TF32 weight gradient
    TG_TF32_WGRAD=0 timeout 120 ctest --test-dir build-gpu --rerun-failed -j 8 --output-on-failure >"$L/ctest-rerun.log" 2>&1
    note "the failed ctests again with TG_TF32_WGRAD=0: rc=$? $(grep -E 'tests passed|tests failed' "$L/ctest-rerun.log")"
  fi
  wait $py
  note "tapegrad_torch (CUDA) tests: $(cat "$L/python.rc") ($(($(date +%s) - t0)) s) $(grep -E '^(OK|FAILED|Ran)' "$L/python.log" | tr '\n' ' ')"
  grep -E "^(FAIL|ERROR):|Error|Fatal Python" "$L/python.log" | head -20 | tee -a "$S"
  local F=${SANITIZE:-Shapes/ConvBlockCuda.*:ConvBlockEpilogue*:ConvBlockCudaTf32.*}
  sanitize memcheck "$F" memcheck-final 75
  sanitize racecheck "$F" racecheck-final 75
  tgbench
  note "TG_TF32_WGRAD=0 reference: $(TG_TF32_WGRAD=0 timeout 30 $E/tg-bench --sizes reference --items train_step 2>&1 | grep -E 'train_step' | tr -s ' ')"
  # The direct kernels against the epilogue path (cuDNN + fused epilogue) at sweep shapes where the
  # direct forward is slow: data for the dispatch between them.
  local sh n ci co hw k g
  for sh in ${AB_SHAPES:-64,32,64,96,3,16 128,4,32,128,5,8}; do
    IFS=, read -r n ci co hw k g <<<"$sh"
    for d in 1 0; do
      note "TG_DIRECT_KERNELS=$d $sh: $(TG_DIRECT_KERNELS=$d timeout 30 $E/tg-bench --batch $n --in-channels $ci --out-channels $co --size $hw --kernel $k --groups $g --items forward,train_step 2>&1 | grep -E 'path|forward|train_step' | tr -s ' ' | tr '\n' ' ')"
    done
  done
  E2E_TORCH=0 stage_e2e
}

# One training step (after one warm-up) of each shape "N,Cin,Cout,HW,k,G" under ncu --set full; the
# summary gets each kernel's duration, throughputs, registers and warp latency, $L/ncu-*.txt the
# details page. The reports stay in /tmp/ncu (tens of MB each: packing them into the logs took a
# whole device call once).
stage_ncu() {
  local sh n ci co hw k g tag R=/tmp/ncu
  mkdir -p $R
  for sh in ${NCU_SHAPES:-128,8,32,256,3,8 64,32,64,96,3,16 128,3,16,32,3,8}; do
    IFS=, read -r n ci co hw k g <<<"$sh"
    tag=${sh//,/-}
    timeout 150 ncu --clock-control none --set full -o "$R/$tag" -f \
      $E/tg-bench --batch $n --in-channels $ci --out-channels $co --size $hw --kernel $k --groups $g \
      --items train_step --warmup 1 --reps 1 >"$L/ncu-$tag.log" 2>&1
    note "ncu $sh: rc=$?"
    timeout 60 ncu -i "$R/$tag.ncu-rep" --page details >"$L/ncu-$tag.txt" 2>&1
    timeout 60 ncu -i "$R/$tag.ncu-rep" --page raw --csv --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,smsp__average_warp_latency_per_inst_issued.ratio,smsp__issue_active.avg.pct_of_peak_sustained_active \
      >"$L/ncu-$tag-raw.csv" 2>&1
    python3 - "$L/ncu-$tag-raw.csv" <<'PY' | tee -a "$S"
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
hdr = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
if hdr is None:
    print("ncu raw: no table"); sys.exit()
h = rows[hdr]
cols = [c for c in h if "__" in c]
print("kernel | " + " | ".join(c.split("__")[1][:40] for c in cols))
for r in rows[hdr + 2:]:
    d = dict(zip(h, r))
    print(d["Kernel Name"][:60] + " | " + " | ".join(d.get(c, "") for c in cols))
PY
  done
}

# Issue 12's proof on the GPU: every ctest, then memcheck and racecheck on the random-shape test of
# the fused path (and the TF32 and epilogue tests), then tg-bench.
stage_proof() {
  ctest_run ctest 12 -E '^parity\.torch'
  local F=${SANITIZE:-ConvBlockCudaDirect.RandomShapesMatchFloat64Composition:ConvBlockCudaTf32.*:ConvBlockEpilogue*}
  sanitize memcheck "$F" memcheck-proof 110
  sanitize racecheck "$F" racecheck-proof 110
  tgbench
}

stage_e2e() {
  OUT=$L timeout 300 scripts/bench-e2e.sh gpu >"$L/e2e.log" 2>&1
  note "e2e: rc=$?"; cat "$L/e2e-table.md" >>"$S" 2>/dev/null
  grep -h "reading\|CUDA graph\|data on the GPU" "$L"/e2e-*.log | sort | uniq -c | tee -a "$S"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader >>"$L/e2e.log" 2>&1
}

stage_sweep() {
  OUT=$L/bench REPS=${REPS:-20} timeout 420 scripts/bench.sh --sweep --no-autotune --no-default-shapes \
    --shapes "${SWEEP_SHAPES:-128,8,32,256,3,8;128,3,16,32,3,8;64,8,64,128,3,8;32,16,32,192,3,4;128,4,32,128,5,8;64,32,64,96,3,16;16,3,32,320,7,8;256,8,16,64,1,4;8,64,128,128,3,32}" \
    >"$L/sweep.log" 2>&1
  note "sweep: rc=$?"; cat "$L/bench/sweep/table.md" >>"$S" 2>/dev/null
  cp "$L/bench/sweep/table.md" "$OUT/sweep-table.md" 2>/dev/null
}

: >"$S"
build
for stage in "$@"; do
  case "$stage" in
    tests | verify | interop | e2e | sweep | ncu | proof | final) "stage_$stage" ;;
    *) echo "gpu-session.sh: unknown stage '$stage'; expected tests, verify, interop, e2e, sweep, ncu, proof or final" >&2; exit 2 ;;
  esac
done
cat "$S"
