#!/usr/bin/env bash
# bench/run_all.sh — builds the benchmarks (Release) if needed, runs them all, writes the JSON,
# the logs, a table and a chart into bench/results/<date>/.
#
#   bench/run_all.sh            # the whole suite: under 10 minutes on a 2-vCPU machine
#   bench/run_all.sh --quick    # smaller sizes: a smoke test, 2-3 minutes
#
# On a terminal a line under the output says which program runs and for how long (PRISM_PROGRESS=0:
# none); logs and results never contain it.
#
# Environment: BUILD_DIR (default build/bench), JOBS (default 2), RESULTS (default
# bench/results/<YYYY-mm-dd_HHMMSS>), RUNS (runs per row, default 5).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

quick=()
if [[ "${1:-}" == "--quick" ]]; then
  quick=(--quick)
elif [[ $# -gt 0 ]]; then
  echo "usage: bench/run_all.sh [--quick]" >&2
  exit 2
fi

build="${BUILD_DIR:-build/bench}"
jobs="${JOBS:-2}"
runs="${RUNS:-5}"
out="${RESULTS:-bench/results/$(date +%Y-%m-%d_%H%M%S)}"
mkdir -p "$out"

echo "== building the benchmarks in $build (Release)"
if [[ ! -f "$build/build.ninja" && ! -f "$build/Makefile" ]]; then
  generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DPRISM_BUILD_BENCH=ON -DPRISM_BUILD_TESTS=OFF -DPRISM_BUILD_EXAMPLES=OFF >/dev/null
fi
targets=(bench_microbench bench_scale bench_workloads bench_gpu bench_variants bench_stencil)
# bench_cluster and bench_faults exist when the cluster module was built (UCX found).
if grep -q "bench_cluster" "$build/build.ninja" "$build/Makefile" 2>/dev/null; then
  targets+=(bench_cluster bench_faults)
fi
cmake --build "$build" -j "$jobs" --target "${targets[@]}"

start=$(date +%s)
steps=6
[[ " ${targets[*]} " == *" bench_cluster "* ]] && steps=10
step=0

# On a terminal (and unless PRISM_PROGRESS=0), one line under the output says which program
# runs, for how long, and how many lines it printed; refreshed every second, written to
# /dev/tty (the programs' own output goes through tee), ending in \r so that their next line
# overwrites it.
progress_pid=""
progress_start() {  # progress_start LABEL LOG
  [[ -t 1 && "${PRISM_PROGRESS:-1}" != 0 ]] || return 0
  local label="$1" log="$2" t0
  t0=$(date +%s)
  (
    while sleep 1; do
      now=$(date +%s)
      lines=$(wc -l < "$log" 2>/dev/null || echo 0)
      printf '\033[K  .. %s: %d s, %d lines so far (suite: %d s)\r' \
        "$label" $((now - t0)) "$lines" $((now - start)) > /dev/tty 2>/dev/null || exit 0
    done
  ) &
  progress_pid=$!
}
progress_stop() {
  [[ -n "$progress_pid" ]] || return 0
  kill "$progress_pid" 2>/dev/null || true
  wait "$progress_pid" 2>/dev/null || true
  progress_pid=""
  printf '\033[K' > /dev/tty 2>/dev/null || true
}
trap progress_stop EXIT

run() {  # run NAME[:PROGRAM] ARGS...: prints as it goes, keeps a log, writes NAME.json
  local name="${1%%:*}"
  local program="${1#*:}"
  shift
  step=$((step + 1))
  echo
  echo "== [$step/$steps] $name"
  : > "$out/$name.log"
  progress_start "[$step/$steps] $name" "$out/$name.log"
  "$build/bench/$program" --runs="$runs" --json="$out/$name.json" "${quick[@]}" "$@" \
    2>&1 | tee "$out/$name.log"
  progress_stop
}

# Sizes chosen so that the whole suite fits in 10 minutes on 2 vCPUs: microbench ~2 min,
# scale (10^4..10^6 tasks, 10^3..10^5 actors, a child process per run) ~1 min, workloads
# (sleeps at 0.2x, matmul 400 pairs of 500x500, 50 JPEGs of 3000x3000 generated once) ~4 min,
# gpu a few seconds, variants (1 CPU + 1 GPU, mixed calls, 5 x 3 rounds) ~10 s, stencil (3 patterns
# x 13 kernel lengths x 3 systems, each measured run after a discarded one, short graphs at least
# 0.3 s of runs) ~2 min.
run microbench
run scale
run workloads --scale=0.2 --matmul_n=500 --pairs=400 --images=50 --image_size=3000
run gpu
run variants
run stencil

# Cluster mode on loopback. Its peers are ucx_perftest's figures (Debian's ucx-utils) on the same
# transports and in the same modes as Prism's endpoints, measured here just before, one value
# per run: ucp_am_lat's one-way p50 (us) and ucp_am_bw's bandwidth (MB/s, MB = 2^20 bytes) at
# 1 MiB and 64 MiB. Prism's endpoints are connected by address with peer error handling, which
# leaves UCX 1.13 only tcp (on lo): so ucx_perftest runs with UCX_TLS=tcp and -e (error
# handling), and -E sleep (Prism's progress thread sleeps in epoll when idle). Without those it
# would take shared memory, which Prism's endpoints cannot use.
perftest() {  # perftest FIELD ARGS...: FIELD of the client's "Final:" line, once per run
  local field="$1"
  shift
  local values=() port out server i
  for ((i = 0; i < runs; i++)); do
    port=$((20000 + RANDOM % 20000))
    ucx_perftest -p "$port" "$@" >/dev/null 2>&1 &
    server=$!
    out=""
    for _ in $(seq 50); do  # until the server listens (a refused client exits at once)
      out=$(timeout 120 ucx_perftest 127.0.0.1 -p "$port" "$@" 2>/dev/null) && break
      out=""
      sleep 0.1
    done
    wait "$server" 2>/dev/null || true
    values+=("$(awk -v f="$field" '/^Final:/ {print $f}' <<<"$out")")
  done
  local IFS=,
  echo "${values[*]}"
}
if [[ -x "$build/bench/cluster" ]]; then
  export UCX_NET_DEVICES=lo
  peers=()
  if command -v ucx_perftest >/dev/null 2>&1; then
    echo
    echo "== ucx_perftest (UCX_NET_DEVICES=lo UCX_TLS=tcp, -e -E sleep)"
    lat=$(UCX_TLS=tcp perftest 3 -t ucp_am_lat -s 8 -n 20000 -w 2000 -e -E sleep)
    bw1=$(UCX_TLS=tcp perftest 6 -t ucp_am_bw -s 1048576 -n 500 -w 20 -e -E sleep)
    bw64=$(UCX_TLS=tcp perftest 6 -t ucp_am_bw -s 67108864 -n 40 -w 4 -e -E sleep)
    echo "am_lat one-way p50 us: $lat; am_bw MB/s at 1 MiB: $bw1; at 64 MiB: $bw64"
    peers=(--perftest_lat_us="$lat" --perftest_bw_1m="$bw1" --perftest_bw_64m="$bw64")
  else
    echo "(ucx_perftest not found: the cluster rows have no peer; scripts/setup.sh installs ucx-utils)"
  fi
  run cluster "${peers[@]}"
  # The staged tensor rows again with each device copy whole (not in chunks), for comparison.
  PRISM_STAGE_CHUNK_BYTES=0 run cluster_whole:cluster --filter="(staged" "${peers[@]}"
  # And GPU to GPU on device channels (loopback sockets between logical GPUs, as NCCL would).
  PRISM_DEVICE_CHANNEL=sockets run cluster_channel:cluster --filter="(device channel" "${peers[@]}"
  # The variants bench again, its two processors in two processes (the driver's CPU, a node's
  # GPU): the driver's planner places each call (~15 s).
  run variants_cluster:variants --cluster
  # What failures cost: detecting a dead node, rebuilding a lost chain, spilling (~30 s).
  run faults
fi

echo
echo "== suite took $(( $(date +%s) - start )) s; results in $out"
{
  echo "command: bench/run_all.sh ${quick[*]}"
  echo "date: $(date -Iseconds)"
  echo "host: $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
} > "$out/run.txt"
python3 bench/report "$out" --svg="$out/chart.svg" --markdown="$out/table.md"
