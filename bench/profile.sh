#!/usr/bin/env bash
# bench/profile.sh — where the time of one microbench row goes, with perf (software clock:
# these VMs have no hardware counters), Prism only, in a frame-pointer build so call chains
# are complete.
#
#   bench/profile.sh "single client tasks async"          # flat profile + callers
#   bench/profile.sh "queued tasks" scale                  # a row of another program
#   bench/profile.sh "(stencil)" stencil --lengths=0.2 --prism_only --runs=100
#                                                          # further flags go to the program
#
# Flags after the program go to it (e.g. --runs=100, or the stencil's --lengths and --prism_only).
# Environment: BUILD_DIR (default build/bench-fp, configured RelWithDebInfo with
# -fno-omit-frame-pointer), TRIAL_S (seconds per run, default 2), OUT (default /tmp).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
row="${1:?usage: bench/profile.sh ROW [PROGRAM]}"
program="${2:-microbench}"
shift $(( $# < 2 ? $# : 2 ))
build="${BUILD_DIR:-build/bench-fp}"
out="${OUT:-/tmp}/prism-profile-$(echo "$row" | tr -c 'A-Za-z0-9' '_').data"

command -v perf >/dev/null || { echo "profile: perf is not installed" >&2; exit 1; }
if [[ ! -f "$build/build.ninja" && ! -f "$build/Makefile" ]]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS="-O2 -fno-omit-frame-pointer" \
    -DPRISM_BUILD_BENCH=ON -DPRISM_BUILD_TESTS=OFF -DPRISM_BUILD_EXAMPLES=OFF >/dev/null
fi
cmake --build "$build" -j "${JOBS:-2}" --target "bench_$program" >/dev/null

args=(--filter="$row" --runs=1)
[[ "$program" == microbench ]] && args+=(--trial_s="${TRIAL_S:-2}" --no_peer)
args+=("$@")  # (a later --runs=N overrides the one above)
perf record -q -e cpu-clock -F 4000 --call-graph fp -o "$out" -- "$build/bench/$program" "${args[@]}"

echo
echo "== flat profile (self time, all threads)"
perf report -i "$out" --no-children --sort=sym --stdio -g none --percent-limit=1 2>/dev/null |
  grep '%' | head -40
echo
echo "== by thread"
perf report -i "$out" --no-children --sort=pid --stdio -g none 2>/dev/null | grep '%' | head
echo
echo "== inclusive time (children included) of the heaviest functions"
perf report -i "$out" --children --sort=sym --stdio -g none --percent-limit=4 2>/dev/null |
  grep '%' | head -40
echo
echo "(raw data: $out — perf report -i $out)"
