#!/usr/bin/env bash
# Mutation check: plants each bug of scripts/mutations/*.sed in the source, one at a time, rebuilds
# incrementally (CPU-only, its own build dir), runs the tests and reports the mutations that no test
# caught ("survived"). The source is restored after each mutation, also on Ctrl-C or an error.
#
#   scripts/mutate.sh [--full] [--build-dir DIR] [--timeout S] [mutation.sed ...]
#
# Each mutation file is a sed script that changes exactly one line, with a header:
#   # what the planted bug is
#   # file: ops/conv2d.cpp          the file it edits
#   # tests: Conv2d.*:ConvBlock*    gtest filter of the tests that should catch it
# By default the tg_tests binary runs with that filter (fast); --full runs the whole ctest suite
# instead. A mutation that no longer applies (its line changed) or does not compile is an error.
# Ends with "mutations: M run, S survived"; exits 0 when none survived and none was in error.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

build=build-mutate
full=0
timeout_s=600
files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --full) full=1 ;;
    --build-dir) build="$2"; shift ;;
    --timeout) timeout_s="$2"; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "mutate: unknown option $1" >&2; exit 2 ;;
    *) files+=("$1") ;;
  esac
  shift
done
if [ ${#files[@]} -eq 0 ]; then files=(scripts/mutations/*.sed); fi

backup_dir="$build/mutate-backup"
log_dir="$build/mutate-logs"

# Puts back every file saved in the backup folder (the current mutation's; or a previous run's
# leftovers, if that run was killed before it could restore).
restore() {
  [ -d "$backup_dir" ] || return 0
  (cd "$backup_dir" && find . -type f -print0) | while IFS= read -r -d '' f; do
    cp "$backup_dir/$f" "$root/$f" && rm "$backup_dir/$f"
  done
}
trap restore EXIT
trap 'echo; echo "mutate: interrupted; source restored"; exit 130' INT TERM

mkdir -p "$backup_dir" "$log_dir"
if [ -n "$(find "$backup_dir" -type f)" ]; then
  echo "mutate: restoring files left mutated by an earlier run:"
  (cd "$backup_dir" && find . -type f)
  restore
fi

export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$root}"
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
jobs="${JOBS:-$(nproc)}"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DTG_WITH_CUDA=OFF -DTG_WITH_DIST=OFF \
    -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >"$log_dir/configure.log" 2>&1 ||
    { echo "mutate: configuring $build failed (see $log_dir/configure.log)"; exit 2; }
fi
echo "mutate: building the unmutated tree in $build"
if ! cmake --build "$build" -j "$jobs" >"$log_dir/build.log" 2>&1; then
  echo "mutate: the unmutated tree does not build (see $log_dir/build.log)"; exit 2
fi

# the fast mode needs only the test binary (and tg-train, which it depends on); --full needs all
targets=(--target tg_tests)
if [ "$full" = 1 ]; then targets=(); fi

run_tests() {  # $1: gtest filter; output in $2
  if [ "$full" = 1 ]; then
    timeout "$timeout_s" ctest --test-dir "$build" -j "$jobs" >"$2" 2>&1
  else
    timeout "$timeout_s" "$build/tests/tg_tests" --gtest_filter="$1" --gtest_brief=1 >"$2" 2>&1
  fi
}

run=0
survived=()
errors=()
for m in "${files[@]}"; do
  name=$(basename "$m" .sed)
  what=$(sed -n '1s/^# //p' "$m")
  target=$(sed -n 's/^# file: *//p' "$m")
  filter=$(sed -n 's/^# tests: *//p' "$m")
  if [ -z "$target" ] || [ ! -f "$target" ] || [ -z "$filter" ]; then
    echo "ERROR    $name: needs '# file:' (an existing file) and '# tests:' lines"
    errors+=("$name")
    continue
  fi
  mkdir -p "$backup_dir/$(dirname "$target")"
  cp "$target" "$backup_dir/$target"
  sed -i -f "$m" "$target"
  changed=$(diff "$backup_dir/$target" "$target" | grep -c '^[<>]')
  if [ "$changed" -ne 2 ]; then
    echo "ERROR    $name: expected to change one line of $target, changed $((changed / 2)) (stale pattern?)"
    restore
    errors+=("$name")
    continue
  fi
  if ! cmake --build "$build" -j "$jobs" "${targets[@]}" >"$log_dir/$name.build.log" 2>&1; then
    echo "ERROR    $name: does not compile (see $log_dir/$name.build.log)"
    restore
    errors+=("$name")
    continue
  fi
  run=$((run + 1))
  t0=$(date +%s)
  run_tests "$filter" "$log_dir/$name.test.log"
  rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "SURVIVED $name: $what ($target; tests $filter)"
    survived+=("$name")
  else
    if [ "$full" = 1 ]; then  # ctest: "  3/256 Test  #12: Suite.Name ....***Failed"
      caught=$(grep -E '\*\*\*(Failed|Timeout|Exception)' "$log_dir/$name.test.log" |
               sed -E 's/.*Test +#[0-9]+: ([^ ]+) .*/\1/' | head -3 | tr '\n' ' ')
    else
      caught=$(grep '^\[  FAILED  \]' "$log_dir/$name.test.log" | grep -v 'listed below' |
               sed 's/^\[  FAILED  \] //; s/, where GetParam.*//; s/ (.*//' | head -3 | tr '\n' ' ')
    fi
    if [ "$rc" -eq 124 ]; then
      caught="${caught}(timed out after $timeout_s s)"
    elif [ -z "$caught" ]; then
      caught="(exit status $rc; see $log_dir/$name.test.log)"
    fi
    echo "caught   $name ($(($(date +%s) - t0)) s): $caught"
  fi
  restore
done
# leave the build dir matching the restored source
cmake --build "$build" -j "$jobs" "${targets[@]}" >"$log_dir/build.log" 2>&1 || true

if [ ${#survived[@]} -gt 0 ]; then echo "survivors: ${survived[*]}"; fi
if [ ${#errors[@]} -gt 0 ]; then echo "not run (errors): ${errors[*]}"; fi
echo "mutations: $run run, ${#survived[@]} survived"
[ ${#survived[@]} -eq 0 ] && [ ${#errors[@]} -eq 0 ]
