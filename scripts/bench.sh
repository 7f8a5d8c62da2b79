#!/usr/bin/env bash
# Builds tg-bench, runs it and the PyTorch baseline on the same GPU in one go, and prints the
# side-by-side table. Run on the device machine (logs and JSON under $OUT, default out-bench/):
#
#   scripts/bench.sh                 # tg-bench's items at its reference and small sizes, beside
#                                    # PyTorch eager and torch.compile (bench/compare.py)
#   scripts/bench.sh --sweep [--shapes "N,Cin,Cout,HW,k,G;..."] [--no-default-shapes] [--no-autotune]
#                                    # issue 12's sweep: one Markdown table (bench/compare.py --sweep)
#
# The sweep runs, for each shape of bench/shapes.py's list (then those of --shapes), tg-bench's
# forward and train_step (with its peak memory and the block's path), and then
# bench/torch_baseline.py's forward and training step in eager, torch.compile (default mode) and
# torch.compile mode="max-autotune-no-cudagraphs" (minutes of compiling per shape; --no-autotune
# leaves it out), each with its peak memory, and rewrites the table. Files: $OUT/sweep/
# tg-<shape>.json, torch-<shape>.json, tg-bench.txt, torch.log, table.md; the JSON files of several
# partial sweeps join into one table with bench/compare.py --sweep A/*.json B/*.json.
# REPS (default 20) sets the timed runs of both sides; TG_BENCH_ARGS and
# TORCH_ARGS pass more flags through; TG_BENCH (a built tg-bench: no build then) and PYTHON (default
# python3) pick the programs. Bad arguments exit 2 before anything is built.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
SWEEP=0 SHAPES="" DEFAULTS=1 AUTOTUNE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --sweep) SWEEP=1 ;;
    --shapes)
      [ $# -ge 2 ] || { echo "bench.sh: --shapes needs a value: N,Cin,Cout,HW,k,G;..." >&2; exit 2; }
      SHAPES="$2"; shift ;;
    --shapes=*) SHAPES="${1#--shapes=}" ;;
    --no-default-shapes) DEFAULTS=0 ;;
    --no-autotune) AUTOTUNE=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1'; expected --sweep, --shapes LIST, --no-default-shapes," \
         "--no-autotune or --help" >&2; exit 2 ;;
  esac
  shift
done
if [ $SWEEP -eq 0 ] && { [ -n "$SHAPES" ] || [ $DEFAULTS -eq 0 ] || [ $AUTOTUNE -eq 0 ]; }; then
  echo "bench.sh: --shapes, --no-default-shapes and --no-autotune go with --sweep" >&2
  exit 2
fi
REPS=${REPS:-20}
PYTHON=${PYTHON:-python3}
if [ $SWEEP -eq 1 ]; then
  # The resolved shape list, one "N Cin Cout HW k G" a line; a bad entry is named here and exits 2.
  shape_args=(--shapes "$SHAPES")
  [ $DEFAULTS -eq 1 ] || shape_args+=(--no-default-shapes)
  SHAPE_LINES=$("$PYTHON" bench/shapes.py "${shape_args[@]}") || exit 2
fi

OUT=${OUT:-$PWD/out-bench}
mkdir -p "$OUT"
if [ -n "${TG_BENCH:-}" ]; then
  [ -x "$TG_BENCH" ] || { echo "bench.sh: TG_BENCH=$TG_BENCH is not an executable tg-bench" >&2; exit 2; }
else
  TG_BENCH=build-gpu/examples/tg-bench
  if [ ! -x "$TG_BENCH" ]; then
    cmake -S . -B build-gpu -G Ninja -DTG_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DCMAKE_BUILD_TYPE=Release -DTG_BUILD_TESTS=OFF >"$OUT/bench-build.log" 2>&1 &&
    cmake --build build-gpu -j "$(nproc)" >>"$OUT/bench-build.log" 2>&1 || { tail -30 "$OUT/bench-build.log"; exit 1; }
  fi
fi

if [ $SWEEP -eq 0 ]; then
  "$TG_BENCH" --reps "$REPS" --json "$OUT/tg-bench.json" ${TG_BENCH_ARGS:-} | tee "$OUT/tg-bench.txt"
  PYTHONUNBUFFERED=1 "$PYTHON" bench/torch_baseline.py --json "$OUT/torch.json" ${TORCH_ARGS:-} >"$OUT/torch.log" 2>&1 || tail -20 "$OUT/torch.log"
  "$PYTHON" bench/compare.py "$OUT/tg-bench.json" "$OUT/torch.json" | tee "$OUT/table.txt"
  exit 0
fi

# The sweep, shape by shape: tg-bench, then PyTorch in a process of its own (no memory or compiled
# graphs left from another shape), then the table so far, so that a run cut short keeps its rows.
DIR="$OUT/sweep"
mkdir -p "$DIR"
rm -f "$DIR"/tg-*.json "$DIR"/torch-*.json
: >"$DIR/tg-bench.txt"
: >"$DIR/torch.log"
status=0 results=()
torch_flags=(--reps "$REPS")
[ $AUTOTUNE -eq 1 ] || torch_flags+=(--no-autotune)
while read -r n cin cout hw k g; do
  name="${n}_${cin}_${cout}_${hw}_${k}_${g}"
  echo "== $n, $cin -> $cout, $hw, k$k, G$g: tg-bench" | tee -a "$DIR/tg-bench.txt"
  "$TG_BENCH" --batch "$n" --in-channels "$cin" --out-channels "$cout" --size "$hw" --kernel "$k" \
    --groups "$g" --items forward,train_step --reps "$REPS" --json "$DIR/tg-$name.json" \
    ${TG_BENCH_ARGS:-} 2>&1 | tee -a "$DIR/tg-bench.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "bench.sh: tg-bench failed on $n,$cin,$cout,$hw,$k,$g" >&2; status=1; }
  echo "== $n, $cin -> $cout, $hw, k$k, G$g: bench/torch_baseline.py (log: $DIR/torch.log)"
  if ! PYTHONUNBUFFERED=1 "$PYTHON" bench/torch_baseline.py --shapes "$n,$cin,$cout,$hw,$k,$g" \
      "${torch_flags[@]}" --json "$DIR/torch-$name.json" ${TORCH_ARGS:-} >>"$DIR/torch.log" 2>&1; then
    tail -5 "$DIR/torch.log"
    echo "bench.sh: bench/torch_baseline.py failed on $n,$cin,$cout,$hw,$k,$g" >&2
    rm -f "$DIR/torch-$name.json"
    status=1
  fi
  for f in "$DIR/tg-$name.json" "$DIR/torch-$name.json"; do [ -f "$f" ] && results+=("$f"); done
  [ ${#results[@]} -eq 0 ] || "$PYTHON" bench/compare.py --sweep "${results[@]}" >"$DIR/table.md"
done <<<"$SHAPE_LINES"
[ ${#results[@]} -eq 0 ] || cat "$DIR/table.md"
exit $status
