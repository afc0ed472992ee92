#!/usr/bin/env bash
# Usage: scripts/build.sh [name] [extra cmake args...]
#   Configures into build/<name> (default: release) and builds with all cores.
#   Names with preset settings:
#     release  RelWithDebInfo (-O2 -g), tests, examples and benchmarks
#     debug    Debug
#     asan     AddressSanitizer + UndefinedBehaviorSanitizer, tests only
#     tsan     ThreadSanitizer, tests only
#     clang    clang++-14 (thread-safety analysis as errors), gpu host backend, tests, examples
#   Any other name gets the defaults; extra arguments go to cmake's configure step,
#   e.g. scripts/build.sh shared -DBUILD_SHARED_LIBS=ON
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

name=release
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then
  name=$1
  shift
fi
build_dir="$root/build/$name"

args=()
case "$name" in
  release) ;;
  debug) args+=(-DCMAKE_BUILD_TYPE=Debug) ;;
  asan) args+=(-DPRISM_SANITIZE=asan -DPRISM_BUILD_EXAMPLES=OFF -DPRISM_BUILD_BENCH=OFF) ;;
  tsan) args+=(-DPRISM_SANITIZE=tsan -DPRISM_BUILD_EXAMPLES=OFF -DPRISM_BUILD_BENCH=OFF) ;;
  clang) args+=(-DCMAKE_CXX_COMPILER=clang++-14 -DPRISM_WITH_CUDA=OFF -DPRISM_BUILD_BENCH=OFF) ;;
esac

# A non-login shell may lack the CUDA profile; find nvcc ourselves (the build reports its use).
nvcc=""
if [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then
  nvcc="$CUDA_HOME/bin/nvcc"
elif [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  nvcc=/usr/local/cuda/bin/nvcc
fi
# (Not for the clang configuration: it builds the host backend only.)
[ -n "$nvcc" ] && [ "$name" != clang ] && args+=("-DCMAKE_CUDA_COMPILER=$nvcc")

# The generator can only be chosen when the build folder is first configured.
if [ ! -f "$build_dir/CMakeCache.txt" ] && command -v ninja >/dev/null 2>&1; then
  args+=(-G Ninja)
fi

jobs=$(nproc 2>/dev/null || echo 2)
start=$SECONDS
echo "build: configuring build/$name"
cmake -S "$root" -B "$build_dir" "${args[@]}" "$@"
echo "build: building build/$name with $jobs jobs"
cmake --build "$build_dir" -j "$jobs"
echo "build: build/$name done in $((SECONDS - start)) s"
