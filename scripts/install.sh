#!/usr/bin/env bash
# Install cmsf for development and testing, from a clone of the repository (the README's first
# command). Every step prints what it runs; any failure stops the script.
#
#   bash scripts/install.sh          torch from PyPI (on Linux: with its CUDA libraries, ~2.7 GB)
#   bash scripts/install.sh --cpu    torch from PyTorch's CPU-only wheel index (no CUDA libraries)
set -euo pipefail
cd "$(dirname "$0")/.."

torch_index=()
case "${1:-}" in
  --cpu) torch_index=(--index-url https://download.pytorch.org/whl/cpu) ;;
  "") ;;
  *) echo "usage: bash scripts/install.sh [--cpu]" >&2; exit 2 ;;
esac

run() { echo "+ $*"; "$@"; }

# 1. torch first, at the versions cmsf is tested with (its wheel index decides CUDA or CPU only)
run pip install "${torch_index[@]}" torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0

# 2. cmsf itself, editable, with the test extra (pytest, hypothesis, pytest-benchmark, the test
#    oracles OpenCV / scikit-image, Ray Data); see setup.cfg
run pip install -e ".[test]"

# 3. Meta's ImageBind code, a test oracle only, without its dependencies (they pin packages that no
#    longer import; the ones it needs are in the test extra)
run pip install --no-deps imagebind-unofficial==0.1.1

# 4. Chromium, for the test that opens a `cmsf report` page in a headless browser: as root on
#    Debian only (elsewhere that test is skipped and says why)
if [ "$(id -u)" = 0 ] && grep -qx 'ID=debian' /etc/os-release 2>/dev/null; then
  run apt-get update -qq
  run apt-get install -y -qq chromium
fi
