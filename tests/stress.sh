#!/usr/bin/env bash
# The test suite on a busy machine: run it while N other processes keep cores busy.
#
#   tests/stress.sh                 both README passes, once, beside 2 busy processes
#   tests/stress.sh -n 3 -r 5       3 busy processes, 5 rounds in a row
#   tests/stress.sh --quick         only the tests with signals, threads, processes, locks, sockets
#   tests/stress.sh -- -k pair      anything after -- goes to pytest (both passes)
#
# Each pass prints its closing pytest line and its time; the script exits non-zero if any pass
# failed. The busy processes are plain Python loops, stopped when the script ends.
set -uo pipefail
cd "$(dirname "$0")/.."

busy=2 rounds=1 quick=0 extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n) busy=$2; shift 2 ;;
    -r) rounds=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: tests/stress.sh [-n BUSY] [-r ROUNDS] [--quick] [-- PYTEST ARGS]" >&2; exit 2 ;;
  esac
done

targets=()
if [ "$quick" = 1 ]; then
  targets=(tests/test_pair.py tests/test_fused.py tests/test_train.py tests/test_reliability.py
           tests/test_threads.py tests/test_download.py tests/test_files.py tests/test_sweep.py
           tests/test_cluster.py)
fi

pids=()
stop_busy() { [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; }
trap stop_busy EXIT INT TERM
for _ in $(seq "$busy"); do python -c "while True: pass" & pids+=($!); done
echo "stress: $busy busy processes on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"

failed=0
run_pass() {  # name, then the command
  local name=$1; shift
  local log start rc
  log=$(mktemp)
  start=$(date +%s)
  "$@" >"$log" 2>&1
  rc=$?
  printf 'round %s, %s: %s (%d s, exit %d)\n' "$round" "$name" \
    "$(grep -E '(passed|failed|error)' "$log" | tail -n 1 | tr -d '=' | xargs)" "$(( $(date +%s) - start ))" "$rc"
  if [ "$rc" != 0 ]; then
    failed=1
    grep -E '^(FAILED|ERROR)' "$log" | sed 's/^/    /'
    cp "$log" "stress-round$round-$name.log" && echo "    log: stress-round$round-$name.log"
  fi
  rm -f "$log"
}

for round in $(seq "$rounds"); do
  # The two passes of the README's test command.
  run_pass first python -m pytest -q -p no:cacheprovider "${targets[@]}" "${extra[@]}"
  run_pass second env NUMBA_DISABLE_JIT=1 python -m pytest -q -p no:cacheprovider -m "not slow" "${targets[@]}" "${extra[@]}"
done
exit $failed
