#!/usr/bin/env bash
# Sets up, builds and runs every test: the release build (GCC: unit tests, examples,
# compile-fail tests, install/consumer test), the clang build (clang 14 with its thread-safety
# analysis as errors: the same tests; PRISM_TEST_CLANG=0 skips it), then the sanitizer builds
# named in PRISM_TEST_SANITIZERS (default "tsan asan"; "" = none).
# Stops at the first failure; prints one summary line per configuration and the total time.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

sanitizers=${PRISM_TEST_SANITIZERS-tsan asan}
for san in $sanitizers; do
  case "$san" in
    tsan | asan) ;;
    *) echo "test: unknown sanitizer '$san' in PRISM_TEST_SANITIZERS (use tsan, asan)" >&2; exit 2 ;;
  esac
done
jobs=2
start=$SECONDS
summary=()
current=""

finish() {
  local rc=$?
  echo
  echo "==== test summary ===="
  for line in "${summary[@]}"; do echo "$line"; done
  if [ $rc -ne 0 ] && [ -n "$current" ]; then
    echo "$current: FAILED"
  fi
  echo "total: $((SECONDS - start)) s, $([ $rc -eq 0 ] && echo passed || echo "FAILED (exit $rc)")"
}
trap finish EXIT

# run_config <name> [extra ctest args...]: builds build/<name> and runs its tests, with ctest
# started under the command in the array `wrap` (environment settings), if any.
wrap=()
run_config() {
  local name=$1
  shift
  local t0=$SECONDS
  current="$name"
  echo
  echo "==== $name: build ===="
  bash scripts/build.sh "$name"
  echo "==== $name: test ===="
  "${wrap[@]}" ctest --test-dir "build/$name" --output-on-failure -j "$jobs" --timeout 600 "$@"
  summary+=("$name: passed ($((SECONDS - t0)) s)")
  current=""
}

current=setup
bash scripts/setup.sh
current=""

run_config release

if [ "${PRISM_TEST_CLANG:-1}" != 0 ]; then
  run_config clang
fi

for san in $sanitizers; do
  case "$san" in
    tsan)
      # GCC 12's TSan runtime cannot map its shadow memory when the kernel randomizes mmap with
      # more than 28 bits; run without ASLR then (when the kernel lets us).
      # UCX_MEM_EVENTS=no: UCX's memory hooks crash under TSan (PLATFORM.md); read at load time.
      wrap=(env UCX_MEM_EVENTS=no TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tests/tsan.supp)
      bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)
      if [ "$bits" -gt 28 ]; then
        if setarch "$(uname -m)" -R true 2>/dev/null; then
          wrap=(setarch "$(uname -m)" -R "${wrap[@]}")
        else
          echo "test: vm.mmap_rnd_bits=$bits and ASLR cannot be turned off here; TSan may fail to start" >&2
        fi
      fi
      run_config tsan -LE install
      ;;
    asan)
      wrap=(env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
            LSAN_OPTIONS=suppressions=$root/tests/lsan.supp
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
      run_config asan -LE install
      ;;
  esac
done
