"""Tux Paint stamps: picture, English description and French spoken description per stamp."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from ..._errors import InputError
from . import _fetch
from ._registry import DATASETS, Problems, is_hidden, make_frame

PACKAGE = "tuxpaint-stamps-default"
VERSION = "2022.06.04-1"
DEB_SHA256 = "6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34"
_POOL = f"pool/main/t/tuxpaint-stamps/{PACKAGE}_{VERSION}_all.deb"
URLS = (
    f"https://deb.debian.org/debian/{_POOL}",
    f"https://archive.debian.org/debian/{_POOL}",
    f"https://snapshot.debian.org/archive/debian/20230615T000000Z/{_POOL}",
)
CITATION = (
    "Kendrick, B. and the Tux Paint contributors (2002-2022). Tux Paint stamps, "
    f"Debian package {PACKAGE} {VERSION}. https://tuxpaint.org/"
)
SOURCE_INFO = {"name": "tuxpaint", "url": URLS[0], "package": PACKAGE, "version": VERSION,
               "sha256": DEB_SHA256}

#: Files kept beside a stamp's image, by role; ``desc_fr`` is the audio modality.
_COMPANIONS = {
    "text": ".txt",
    "sound": ".ogg",
    "sound_en_GB": "_en_GB.ogg",
    "sound_fr": "_fr.ogg",
    "desc": "_desc.ogg",
    "desc_fr": "_desc_fr.ogg",
}
_VARIANTS = ("_mirror", "_flip")
_DOC = "usr/share/doc/tuxpaint-stamps-default/copyright"


class Stamp(NamedTuple):
    """One stamp: ``stems`` is ``stamps/<category>/.../<stem>``; files maps role -> path."""

    category: str
    stem: str
    files: dict[str, str]


def find_stamps(relpaths: list[str]) -> list[Stamp]:
    """Stamps among paths relative to the ``tuxpaint`` folder, sorted by stem.

    A stamp is a ``<stem>.png`` (else ``<stem>.svg``) at least one folder below ``stamps/``;
    ``_mirror``/``_flip`` variants of another stamp are not stamps. Companion files that
    belong to no image are ignored.
    """
    files = set(relpaths)
    image_stems = {
        p[:-4] for p in files
        if p.startswith("stamps/") and p.count("/") >= 2 and p.endswith((".png", ".svg"))
        and not is_hidden(p.rsplit("/", 1)[1])
    }
    stamps = []
    for stem in sorted(image_stems):
        if any(stem.endswith(v) and stem[: -len(v)] in image_stems for v in _VARIANTS):
            continue
        roles = {"image": stem + ".png" if stem + ".png" in files else stem + ".svg"}
        roles.update({role: stem + suffix for role, suffix in _COMPANIONS.items()
                      if stem + suffix in files})
        stamps.append(Stamp(stem.split("/")[1], stem, roles))
    return stamps


def _keep(relpaths: list[str]) -> list[str]:
    kept = [path for stamp in find_stamps(relpaths) for path in stamp.files.values()]
    return sorted(kept + [p for p in relpaths if p == "COPYRIGHT"])


def _relocate(name: str) -> str | None:
    name = name.removeprefix("./")
    if name.startswith("usr/share/tuxpaint/stamps/"):
        return name.removeprefix("usr/share/tuxpaint/")
    return "COPYRIGHT" if name == _DOC else None


#: The raw folder this module's datasets are built from.
SOURCE = _fetch.Source(
    folder="tuxpaint",
    marker="stamps",
    urls=URLS,
    archive="deb",
    archive_sha256=DEB_SHA256,
    # Over stamps/ and COPYRIGHT; GPL-2 is Debian's common licence text, not in the .deb.
    content_sha256="4a22137ab101875a03832e239845050edddb0d033476edbdcfb635202cf3d0aa",
    description=(
        f"'stamps/' = usr/share/tuxpaint/stamps/ and 'COPYRIGHT' = {_DOC} of the Debian "
        f"package {PACKAGE} {VERSION} (sha256 {DEB_SHA256})"
    ),
    relocate=_relocate,
    keep=_keep,
)

#: What every dataset built from the Tux Paint stamps registers alike.
REGISTRATION = {"licence": "GPL-2.0-or-later", "citation": CITATION, "source": [SOURCE_INFO],
                "sources": (SOURCE,)}


def _read_description(path: str, problems: Problems) -> str | None:
    from ..._errors import InputError
    from ..._io import check_regular_file

    try:
        check_regular_file(path, "description", 2**20)
    except InputError as exc:
        problems.add(path, str(exc))
        return None
    try:
        with open(path, encoding="utf-8-sig") as f:
            line = f.readline().strip()
    except UnicodeDecodeError:
        problems.add(path, "not UTF-8 text")
        return None
    except OSError as exc:
        problems.add(path, f"cannot be read ({exc.strerror})")
        return None
    if not line:
        problems.add(path, "line 1 (the English description) is empty")
        return None
    return line


def _check_options(require_all: bool, min_per_class: int) -> None:
    if not isinstance(require_all, bool):
        raise InputError(f"require_all must be True or False; got {require_all!r}")
    if isinstance(min_per_class, bool) or not isinstance(min_per_class, int) or min_per_class < 1:
        raise InputError(f"min_per_class must be an integer >= 1; got {min_per_class!r}")


@DATASETS.register(
    "tuxpaint",
    modalities=["audio", "image", "text"],
    n_samples=859,
    n_classes=10,
    **REGISTRATION,
    cv={"kind": "repeated-stratified", "n_splits": 5, "n_repeats": 2},
    description=(
        "Tux Paint stamps: image (PNG, else SVG), English description (line 1 of the .txt), "
        "French spoken description (_desc_fr.ogg); label = top-level category."
    ),
    options={"require_all": True, "min_per_class": 20},
)
def load_tuxpaint(
    root: Path, *, on_error: str, download: bool, require_all: bool = True,
    min_per_class: int = 20,
):
    """Build ``(X, y, None)`` for ``tuxpaint``.

    Parameters
    ----------
    root : pathlib.Path
        Data root holding ``tuxpaint/stamps``.
    on_error, download
        See :func:`mmfuse.data.datasets.load_dataset`.
    require_all : bool, default=True
        Keep only stamps with all three modalities; else keep every stamp with an image and
        leave missing text or audio cells as None.
    min_per_class : int, default=20
        Drop categories with fewer stamps, after the ``require_all`` filter.
    """
    _check_options(require_all, min_per_class)
    rows, skipped = _stamp_rows(root, on_error=on_error, download=download,
                                require_all=require_all)
    counts = Counter(row[0] for row in rows)
    rows = [row for row in rows if counts[row[0]] >= min_per_class]
    return make_frame(
        "tuxpaint",
        {"image": [r[1] for r in rows], "text": [r[2] for r in rows],
         "audio": [r[3] for r in rows]},
        [r[0] for r in rows],
        None,
        skipped,
    )


def _stamp_rows(root: Path, *, on_error: str, download: bool, require_all: bool
                ) -> tuple[list[tuple[str, str, str | None, str | None, str]], list[dict]]:
    """``(category, image, text, audio, stem)`` of every usable stamp, and the skipped files."""
    folder = _fetch.ensure_present(SOURCE, root, download)
    relpaths = ["stamps/" + p for p in _fetch.list_files(folder / "stamps")]
    problems = Problems()
    rows = []
    for stamp in find_stamps(relpaths):
        n_problems = len(problems.items)
        paths = {role: os.path.join(folder, rel) for role, rel in stamp.files.items()}
        for role in ("image", "text", "desc_fr"):
            if role in paths:
                problems.check_size(paths[role])
        text = None
        if "text" in paths and len(problems.items) == n_problems:
            text = _read_description(paths["text"], problems)
        if len(problems.items) > n_problems:
            continue
        audio = paths.get("desc_fr")
        if require_all and (text is None or audio is None):
            continue
        rows.append((stamp.category, paths["image"], text, audio, stamp.stem))
    return rows, problems.resolve("tuxpaint", on_error)


def stamp_group(stem: str) -> str:
    """The sub-folder a stamp lives in, e.g. ``"food/fruit"`` for
    ``stamps/food/fruit/apple``; a stamp directly in its category folder gets the category
    itself (``"food"``), a group of its own."""
    parts = stem.split("/")
    return "/".join(parts[1:3]) if len(parts) > 3 else parts[1]


@DATASETS.register(
    "tuxpaint-grouped",
    modalities=["audio", "image", "text"],
    n_samples=812,
    n_classes=9,
    **REGISTRATION,
    cv={"kind": "stratified-group", "n_splits": 5},
    description=(
        "Tux Paint stamps with real group shift: label = top-level category, group = its "
        "sub-folder (e.g. food/fruit), so test folds hold sub-folders never seen in "
        "training; only categories with >= 3 sub-folders. Image, English text, French audio."
    ),
    options={"require_all": True, "min_groups": 3},
)
def load_tuxpaint_grouped(
    root: Path, *, on_error: str, download: bool, require_all: bool = True,
    min_groups: int = 3,
):
    """Build ``(X, y, groups)`` for ``tuxpaint-grouped``.

    Parameters
    ----------
    root : pathlib.Path
        Data root holding ``tuxpaint/stamps``.
    on_error, download
        See :func:`mmfuse.data.datasets.load_dataset`.
    require_all : bool, default=True
        Keep only stamps with all three modalities; else keep every stamp with an image.
    min_groups : int, default=3
        Keep only categories with at least this many sub-folders holding kept stamps
        (stamps directly in a category folder form one more group but do not count).
    """
    _check_options(require_all, 1)
    if isinstance(min_groups, bool) or not isinstance(min_groups, int) or min_groups < 2:
        raise InputError(f"min_groups must be an integer >= 2; got {min_groups!r}")
    rows, skipped = _stamp_rows(root, on_error=on_error, download=download,
                                require_all=require_all)
    groups = [stamp_group(r[4]) for r in rows]
    sub_folders: dict[str, set[str]] = {}
    for row, group in zip(rows, groups):
        if "/" in group:
            sub_folders.setdefault(row[0], set()).add(group)
    keep = [i for i, row in enumerate(rows) if len(sub_folders.get(row[0], ())) >= min_groups]
    return make_frame(
        "tuxpaint-grouped",
        {"image": [rows[i][1] for i in keep], "text": [rows[i][2] for i in keep],
         "audio": [rows[i][3] for i in keep]},
        [rows[i][0] for i in keep],
        [groups[i] for i in keep],
        skipped,
    )
