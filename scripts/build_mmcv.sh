#!/usr/bin/env bash
# Build mmcv 2.1.0 with its CPU ops into a wheel cached outside the clone, once per machine.
#
# Why: no prebuilt mmcv 2.1.0 wheel exists for torch 2.14 / CPU, and the sdist does not build as is:
#   * its setup.py imports pkg_resources (gone from setuptools >= 81, while torch 2.14 wants
#     setuptools >= 77), so we build with --no-build-isolation and a setuptools<70 shadowing the
#     venv's one through PYTHONPATH (the venv itself is left untouched);
#   * its setup.py hard-codes -std=c++14 / -std=c++17, while torch 2.14's headers need C++20.
# We patch the *downloaded sdist* (never an installed package) and build with 2 jobs.
#
# Usage: scripts/build_mmcv.sh [PYTHON]   (PYTHON: an interpreter with torch installed, default .venv/bin/python)
# Prints the path of the cached wheel on its last line.
set -euo pipefail

PY="${1:-.venv/bin/python}"
# Absolute path without resolving symlinks (a venv's python is a symlink to the base interpreter).
if [[ "$PY" == */* ]]; then PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"; fi
MMCV_VERSION=2.1.0
if ! TAG="$("$PY" -c 'import sys, torch; v = torch.__version__.split("+")[0]; print(f"torch{v}-cp{sys.version_info[0]}{sys.version_info[1]}")')"; then
    echo "build_mmcv.sh: '$PY' cannot import torch; pass a venv python with torch installed (e.g. .venv/bin/python)" >&2
    exit 2
fi
CACHE="${CACIM_WHEEL_CACHE:-$HOME/.cache/cacim/wheels}/$TAG"
mkdir -p "$CACHE"

shopt -s nullglob
cached=("$CACHE"/mmcv-"$MMCV_VERSION"-*.whl)
if (( ${#cached[@]} )); then
    echo "mmcv $MMCV_VERSION wheel already cached for $TAG"
    echo "${cached[0]}"
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# Old setuptools (with pkg_resources) for the build only, shadowing the venv's newer one; setuptools<70
# has no bdist_wheel of its own, so the `wheel` package that still ships one (<0.46) goes with it.
"$PY" -m pip install -q --no-deps --target "$WORK/buildtools" "setuptools<70" "wheel<0.46"
# pip download runs the sdist's setup.py egg_info, so it needs the old setuptools too.
PYTHONPATH="$WORK/buildtools" "$PY" -m pip download -q --no-deps --no-build-isolation --no-binary :all: \
    "mmcv==$MMCV_VERSION" -d "$WORK/sdist"
tar -xzf "$WORK"/sdist/mmcv-"$MMCV_VERSION".tar.gz -C "$WORK"
SRC="$WORK/mmcv-$MMCV_VERSION"
sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
if grep -q -e '-std=c++1[47]' "$SRC/setup.py"; then
    echo "build_mmcv.sh: could not patch the C++ standard flags in mmcv's setup.py" >&2
    exit 1
fi

start=$(date +%s)
(cd "$SRC" && PYTHONPATH="$WORK/buildtools" MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
    "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$WORK/wheel" .)
echo "mmcv $MMCV_VERSION built in $(( $(date +%s) - start )) s"

built=("$WORK"/wheel/mmcv-"$MMCV_VERSION"-*.whl)
tmp="$CACHE/.$(basename "${built[0]}").tmp"
cp "${built[0]}" "$tmp"
mv "$tmp" "$CACHE/$(basename "${built[0]}")"
echo "$CACHE/$(basename "${built[0]}")"
