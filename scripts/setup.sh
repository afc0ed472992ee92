#!/usr/bin/env bash
# Installs the Debian packages Prism needs to build, test and run its examples and benchmarks.
# Idempotent: asks apt only when something is missing. Needs no input (safe in CI).
set -euo pipefail

# One package per word; extend here.
PRISM_PACKAGES="build-essential cmake ninja-build g++ clang-14 pkg-config ccache
  libgtest-dev libgmock-dev libbenchmark-dev
  libeigen3-dev libtbb-dev libjpeg62-turbo-dev
  libucx-dev ucx-utils libssl-dev libpmix-dev openmpi-bin libcereal-dev
  libclang-rt-14-dev libcpp-httplib-dev chromium libopenblas-dev"

export DEBIAN_FRONTEND=noninteractive

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: not a Debian/Ubuntu system (no dpkg-query/apt-get); install these yourself:" \
       $PRISM_PACKAGES >&2
  exit 0
fi

missing=()
for pkg in $PRISM_PACKAGES; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [ "$status" != "install ok installed" ]; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all $(echo $PRISM_PACKAGES | wc -w) packages already installed"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo -n env DEBIAN_FRONTEND=noninteractive)
else
  echo "setup: missing packages: ${missing[*]}" >&2
  echo "setup: not root and no sudo; install them as root and run again" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
"${as_root[@]}" apt-get update -q </dev/null
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
echo "setup: installed ${#missing[@]} package(s): ${missing[*]}"
