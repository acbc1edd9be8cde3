#!/bin/sh
# Install everything that building and testing libmegalodon needs:
#  - Debian packages (as root, or through sudo);
#  - a Python virtual environment `.venv` at the top of the tree, made from Debian's python3
#    with its system packages (torch, numpy, sentencepiece) plus the `gguf` package from
#    PyPI, for megalodon-convert and its test. ./configure finds it there.
# Usage: tools/install-deps.sh [--no-venv]
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
GGUF_VERSION=0.19.0

PACKAGES="
  build-essential autoconf automake libtool pkgconf make
  libopenblas-dev libfftw3-dev
  python3 python3-venv python3-torch python3-numpy python3-sentencepiece
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
  clang libclang-rt-14-dev libomp-dev
  valgrind
  ocl-icd-opencl-dev opencl-c-headers pocl-opencl-icd clinfo libclblast-dev
  gnuplot-nox
"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "install-deps: must run as root (or have sudo) to install: $PACKAGES" >&2
    exit 1
  fi
fi

missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done

if [ -n "$missing" ]; then
  echo "install-deps: installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -q --no-install-recommends $missing
else
  echo "install-deps: all Debian packages already installed"
fi

[ "${1:-}" = "--no-venv" ] && exit 0
venv="$top/.venv"
if [ -x "$venv/bin/python3" ] && "$venv/bin/python3" -c 'import gguf, torch' 2>/dev/null; then
  echo "install-deps: $venv ready"
else
  echo "install-deps: creating $venv (Debian python3 + system packages + gguf from PyPI)"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/python3" -m pip install -q --disable-pip-version-check "gguf==$GGUF_VERSION"
fi
