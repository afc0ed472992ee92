#!/usr/bin/env bash
# Usage: scripts/gpu_check.sh [build dir]   (default: build/release)
#
# The first-run check on a machine with NVIDIA GPUs, from an already built tree (no package
# access needed): it cannot pass without testing real devices.
#   1. nvidia-smi and the driver version (CUDA 13 builds need driver 580 or newer);
#   2. every GPU test (prism_gpu_tests: the Cuda* tests, and the others, which then run their
#      kernels and tensors on CUDA) with PRISM_REQUIRE_CUDA=1, so a missing or unusable CUDA
#      backend aborts instead of falling back to the host backend; it fails if any test was
#      skipped, except tests that need more GPUs than the machine has and tests of the host
#      backend's logical GPUs;
#   3. compute-sanitizer memcheck with stream-ordered race tracking over the same tests (the
#      out-of-memory test and the 256 MiB copies excluded: too slow under the tool; the illegal
#      address test excluded: the tool reports its deliberate fault); the check
#      fails if compute-sanitizer (part of the CUDA toolkit) cannot be found;
#   4. the --gpu examples at full size (they check their results and exit non-zero otherwise);
#   5. GPU tensors across nodes: the cluster tests of tensors with node processes on this machine
#      (UCX on loopback); with 2 or more GPUs, two nodes with a GPU each send tensors GPU to GPU
#      on NCCL device channels (AGpuChainAcrossNodesGoesGpuToGpuOnADeviceChannel), the only
#      test that runs NCCL's joins and transfers (gpu/src/cuda/nccl_pairs.cc);
#   6. with 2 or more GPUs: the peer-copy tests 50 times over (a 256 MiB peer copy whose source is
#      dropped at once, a kernel reading a peer's tensor through its pointer, ...).
# Each step has a time limit (120 + 150 + 2 x 90 + 240 + 90 s at most); a healthy run takes a few
# minutes, so a rerun fits in a 15-minute device session.
# Exit status: 0 only if every step ran and passed.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-"$root/build/release"}
tests="$build/tests/prism_gpu_tests"
examples="$build/examples"
scratch=$(mktemp -d /tmp/prism-gpu-check.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
export PRISM_REQUIRE_CUDA=1
failed=()

step() { printf '\n==== %s ====\n' "$*"; }
fail() {
  echo "FAILED: $*"
  failed+=("$*")
}

step "GPUs and driver"
if ! command -v nvidia-smi > /dev/null; then
  echo "nvidia-smi not found: this is not a machine with NVIDIA GPUs (or the driver is missing)"
  exit 1
fi
nvidia-smi || fail "nvidia-smi"
nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_mode --format=csv ||
  fail "nvidia-smi --query-gpu"
gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
echo "GPUs: $gpus"
[ -x "$tests" ] || { echo "no test binary at $tests: build first (scripts/build.sh release)"; exit 1; }

# Runs the CUDA tests and fails on any skip that is not for want of GPUs this machine lacks.
step "GPU tests (PRISM_REQUIRE_CUDA=1)"
log="$scratch/gpu_tests.log"
timeout 120 "$tests" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || fail "GPU tests (exit $rc)"
ran=$(grep -c '^\[       OK \] Cuda' "$log")
echo "Cuda* tests passed: $ran"
[ "$ran" -gt 0 ] || fail "no Cuda* test passed"
# gtest prints "...: Skipped", then the reason, then "[  SKIPPED ] Name (N ms)".
bad_skips=$(awk -v gpus="$gpus" '
  /: Skipped$/ { getline reason; next }
  /^\[  SKIPPED \] .* \([0-9]+ ms\)$/ {
    allowed = 0
    if (match(reason, /needs [0-9]+/) && substr(reason, RSTART + 6, RLENGTH - 6) + 0 > gpus + 0) {
      allowed = 1
    }
    if (reason ~ /^logical GPUs only on the host backend/) allowed = 1
    if (!allowed) print $4 ": " reason
    reason = ""
  }' "$log")
if [ -n "$bad_skips" ]; then
  echo "skipped on a machine that should run them:"
  echo "$bad_skips"
  fail "GPU tests skipped"
fi

step "compute-sanitizer memcheck (stream-ordered races tracked)"
sanitizer=$(command -v compute-sanitizer || true)
[ -z "$sanitizer" ] && [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/compute-sanitizer" ] &&
  sanitizer="$CUDA_HOME/bin/compute-sanitizer"
[ -z "$sanitizer" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] &&
  sanitizer=/usr/local/cuda/bin/compute-sanitizer
if [ -z "$sanitizer" ]; then
  fail "compute-sanitizer not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)"
else
  timeout 150 "$sanitizer" --tool memcheck --track-stream-ordered-races all --error-exitcode 90 \
    "$tests" --gtest_filter='-*OutOfMemory*:*256MiB*:*IllegalAddress*' 2>&1 | tail -n 40
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || fail "memcheck (exit $rc)"
fi

step "--gpu examples at full size"
run_example() {
  local name=$1
  shift
  echo "-- $name $*"
  timeout 90 "$examples/$name" "$@" 2>&1 | tail -n 25
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || fail "example $name $* (exit $rc)"
}
run_example matmul_tree --gpu
run_example image_preprocess --gpu "--dir=$scratch/images"

step "GPU tensors across nodes (cluster tests; NCCL device channels with 2+ GPUs)"
cluster_tests="$build/tests/prism_cluster_tests"
if [ -x "$cluster_tests" ]; then
  UCX_NET_DEVICES=lo timeout 240 "$cluster_tests" \
    --gtest_filter='ClusterTest.*Gpu*:ClusterTest.*Tensor*:ClusterTest.*DeviceChannel*:ClusterTest.TwoPulls*:DyingHolderTest.*' \
    2>&1 | tail -n 40
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || fail "cluster GPU tests (exit $rc)"
else
  fail "no cluster test binary at $cluster_tests (built without UCX?)"
fi

if [ "$gpus" -ge 2 ]; then
  step "peer copies, 50 times over"
  timeout 90 "$tests" --gtest_repeat=50 --gtest_brief=1 \
    --gtest_filter='CudaTensorTest.PeerCopy:CudaTensorTest.FreeingATensorOnAnotherDevice*:CudaDeviceTest.PeerCopy*:CudaDeviceTest.AKernelReadsAPeersTensorThroughItsPointer' \
    2>&1 | tail -n 20
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || fail "repeated peer-copy tests (exit $rc)"
else
  step "peer copies: one GPU, nothing to repeat"
fi

step "summary"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "gpu_check: all steps passed on $gpus GPU(s)"
