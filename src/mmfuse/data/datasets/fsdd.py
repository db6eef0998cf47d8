"""Free Spoken Digit Dataset: 3000 spoken digits by 6 speakers (audio only)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

from . import _fetch
from ._registry import DATASETS, Problems, is_hidden, make_frame

REPO = "Jakobovski/free-spoken-digit-dataset"
COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
CITATION = (
    "Jackson, Z., Souza, C., Flaks, J., Pan, Y., Nicolas, H. and Thite, A. (2018). "
    "Jakobovski/free-spoken-digit-dataset: v1.0.8. Zenodo. doi:10.5281/zenodo.1342401"
)
SOURCE_INFO = {"name": "fsdd", "url": f"https://github.com/{REPO}", "commit": COMMIT}

_NAME = re.compile(r"([0-9])_([^_/]+)_([0-9]+)\.wav")


def _keep(relpaths: list[str]) -> list[str]:
    # Upstream's flat recordings/ folder only; code and metadata.py are not part of the data.
    return [
        p for p in relpaths
        if p.startswith("recordings/") and p.count("/") == 1 and not is_hidden(p[11:])
    ]


#: The raw folder this module's datasets are built from.
SOURCE = _fetch.Source(
    folder="fsdd",
    marker="recordings",
    urls=(_fetch.github_archive(REPO, COMMIT),),
    archive="zip",
    archive_sha256=None,
    content_sha256="04e1baae96c6a26e39c623f2b01d0182ddae627ba0ac02a3cdc17ba2af99fd9b",
    description=f"the 'recordings/' folder of GitHub {REPO} at commit {COMMIT}",
    relocate=_fetch.strip_top_folder,
    keep=_keep,
)


class Recording(NamedTuple):
    """One FSDD file: ``{digit}_{speaker}_{take}.wav``."""

    path: str
    digit: int
    speaker: str
    take: int


def scan(root: Path, download: bool) -> tuple[list[Recording], Problems]:
    """List the recordings under ``root/fsdd/recordings`` (sorted by digit, speaker, take).

    Files whose name does not parse and zero-byte files go to the returned problems.
    """
    folder = _fetch.ensure_present(SOURCE, root, download) / "recordings"
    problems = Problems()
    recordings = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if is_hidden(entry.name):
                continue
            path = os.path.join(folder, entry.name)
            match = _NAME.fullmatch(entry.name)
            if match is None or entry.is_dir():
                problems.add(path, "name is not <digit>_<speaker>_<take>.wav")
            elif problems.check_size(path):
                digit, speaker, take = match.groups()
                recordings.append(Recording(path, int(digit), speaker, int(take)))
    recordings.sort(key=lambda r: (r.digit, r.speaker, r.take))
    return recordings, problems


@DATASETS.register(
    "fsdd",
    modalities=["audio"],
    n_samples=3000,
    n_classes=10,
    licence="CC-BY-SA-4.0",
    citation=CITATION,
    source=[SOURCE_INFO],
    cv={"kind": "group", "n_splits": 6},
    description="Spoken digits 0-9 (8 kHz WAV); label = digit, group = speaker.",
    options={},
    sources=(SOURCE,),
)
def load_fsdd(root: Path, *, on_error: str, download: bool):
    """Build ``(X, y, groups)`` for ``fsdd``; see :func:`mmfuse.data.datasets.load_dataset`."""
    recordings, problems = scan(root, download)
    skipped = problems.resolve("fsdd", on_error)
    return make_frame(
        "fsdd",
        {"audio": [r.path for r in recordings]},
        [r.digit for r in recordings],
        [r.speaker for r in recordings],
        skipped,
    )
