#!/usr/bin/env bash
# Sets up, builds the release configuration and runs the quickstart example.
# Arguments are passed to the example.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash scripts/setup.sh
bash scripts/build.sh release

demo=build/release/examples/demo
if [ ! -x "$demo" ]; then
  echo "demo: $demo was not built (is examples/demo.cc present and PRISM_BUILD_EXAMPLES on?)" >&2
  exit 1
fi
echo "==== $demo ===="
exec "$demo" "$@"
