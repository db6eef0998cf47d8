"""Sign Language Digits: 2062 photos of hands showing digits 0-9 (image only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from . import _fetch
from ._registry import DATASETS, Problems, is_hidden, make_frame

REPO = "ardamavi/Sign-Language-Digits-Dataset"
COMMIT = "4b09433ef9d5c60602e8805bb54b8aa2428527f8"
CITATION = (
    "Mavi, A. (2020). A New Dataset and Proposed Convolutional Neural Network Architecture "
    "for Classification of American Sign Language Digits. arXiv:2011.08927"
)
SOURCE_INFO = {"name": "sign-digits", "url": f"https://github.com/{REPO}", "commit": COMMIT}

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_DIGITS = tuple(str(d) for d in range(10))


def _keep(relpaths: list[str]) -> list[str]:
    return [
        p for p in relpaths
        if p == "LICENSE" or (p.startswith("Dataset/") and not is_hidden(p.rsplit("/", 1)[1]))
    ]


#: The raw folder this module's datasets are built from.
SOURCE = _fetch.Source(
    folder="sign-digits",
    marker="Dataset",
    urls=(_fetch.github_archive(REPO, COMMIT),),
    archive="zip",
    archive_sha256=None,
    content_sha256="78c035bd151052f358d5fd2b72ecb6386d78cd8bff044cd6ab39df31c67be2ea",
    description=f"the 'Dataset/' folder and 'LICENSE' of GitHub {REPO} at commit {COMMIT}",
    relocate=_fetch.strip_top_folder,
    keep=_keep,
)


class Photo(NamedTuple):
    """One photo ``Dataset/<digit>/<name>.JPG``."""

    path: str
    digit: int


def scan(root: Path, download: bool) -> tuple[list[Photo], Problems]:
    """List the photos under ``root/sign-digits/Dataset`` (sorted by digit, file name).

    Folders that are not a digit, files that are not images and zero-byte files go to the
    returned problems.
    """
    dataset = _fetch.ensure_present(SOURCE, root, download) / "Dataset"
    problems = Problems()
    photos = []
    for folder in sorted(os.listdir(dataset)):
        path = os.path.join(dataset, folder)
        if is_hidden(folder):
            continue
        if folder not in _DIGITS or not os.path.isdir(path):
            problems.add(path, "expected a folder named by its digit 0-9")
            continue
        for name in sorted(os.listdir(path)):
            file = os.path.join(path, name)
            if is_hidden(name):
                continue
            if not name.lower().endswith(_IMAGE_SUFFIXES) or os.path.isdir(file):
                problems.add(file, "not a .jpg/.jpeg/.png image file name")
            elif problems.check_size(file):
                photos.append(Photo(file, int(folder)))
    return photos, problems


@DATASETS.register(
    "sign-digits",
    modalities=["image"],
    n_samples=2062,
    n_classes=10,
    licence="Apache-2.0",
    citation=CITATION,
    source=[SOURCE_INFO],
    # No student id is published, so a split may put one student on both sides.
    cv={"kind": "stratified", "n_splits": 5},
    description="Photos of hands signing digits 0-9; label = digit folder.",
    options={},
    sources=(SOURCE,),
)
def load_sign_digits(root: Path, *, on_error: str, download: bool):
    """Build ``(X, y, None)`` for ``sign-digits``; see :func:`load_dataset`."""
    photos, problems = scan(root, download)
    skipped = problems.resolve("sign-digits", on_error)
    return make_frame(
        "sign-digits", {"image": [p.path for p in photos]}, [p.digit for p in photos], None, skipped
    )
