#!/bin/sh
# Install every Debian package that building and testing libmegalodon needs.
# Usage: tools/install-deps.sh        (as root, or with sudo available)
set -eu

PACKAGES="
  build-essential autoconf automake libtool pkgconf make
  libopenblas-dev libfftw3-dev
  python3 python3-torch python3-numpy
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

if [ -z "$missing" ]; then
  echo "install-deps: all packages already installed"
  exit 0
fi

echo "install-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
