#!/usr/bin/env bash
# bench/dashboard_cost.sh — what the dashboard costs per task: bench/microbench's task rows with
# the dashboard off and on, interleaved (off, on, off, on, ...) so that the machine's drift biases
# neither, and the median of the invocations each way.
#
#   bench/dashboard_cost.sh [BUILD_DIR] [PAIRS]     # defaults: build/release, 4
#
# Each invocation is `microbench --filter=task --runs=5 --no_peer`, the "on" ones with
# PRISM_DASHBOARD=127.0.0.1:0. Python 3 (standard library) reads their JSON.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build/release}"
pairs="${2:-4}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for ((i = 1; i <= pairs; ++i)); do
  "$build/bench/microbench" --filter=task --runs=5 --no_peer --json="$tmp/off_$i.json" >/dev/null
  PRISM_DASHBOARD=127.0.0.1:0 "$build/bench/microbench" --filter=task --runs=5 --no_peer \
    --json="$tmp/on_$i.json" >/dev/null 2>&1
done
python3 - "$tmp" "$pairs" <<'PY'
import json, statistics, sys
folder, pairs = sys.argv[1], int(sys.argv[2])
rows = {}
for mode in ("off", "on"):
    for i in range(1, pairs + 1):
        with open(f"{folder}/{mode}_{i}.json") as f:
            for r in json.load(f)["rows"]:
                rows.setdefault((r["name"], r["unit"]), {}).setdefault(mode, []).append(r["prism"]["median"])
print(f"{'row':52} {'off':>12} {'on':>12} {'on/off':>7}   (median of {pairs} invocations each)")
for (name, unit), v in rows.items():
    off, on = statistics.median(v["off"]), statistics.median(v["on"])
    print(f"{name + ' [' + unit + ']':52} {off:12,.0f} {on:12,.0f} {on / off:6.2f}x")
PY
