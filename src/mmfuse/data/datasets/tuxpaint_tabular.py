"""``tuxpaint-tabular``: the grouped Tux Paint stamps with real table columns beside them.

The rows, labels and groups are those of ``tuxpaint-grouped`` (label = top-level category,
group = sub-folder, so a test fold holds sub-folders never seen in training). Beside the
image, the English description and the French spoken description, each stamp gets columns
read from its own files in the package (nothing is synthetic, nothing is derived from the
label or the folder names):

==========================  =========  =====================================================
column                      kind       what
==========================  =========  =====================================================
``n_translations``          numeric    locales in the description file (``xx.utf8=`` lines)
``image_kbytes``            numeric    size of the image file, KiB
``image_width``             numeric    PNG width in pixels (empty for SVG-only stamps)
``image_height``            numeric    PNG height in pixels (empty for SVG-only stamps)
``speech_fr_seconds``       numeric    length of the French spoken description
``sound_effect_seconds``    numeric    length of the sound effect (empty when none)
``image_format``            category   ``png`` or ``svg``
``has_sound_effect``        boolean    the stamp has a (default) sound effect
``has_english_speech``      boolean    the stamp has an English spoken description
==========================  =========  =====================================================

The package's ``.dat`` stamp options (tintable, mirrorable...) are not in the data folder
(see ``ATTRIBUTION.md``), so they are not used.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..._errors import InputError
from . import _fetch
from ._registry import DATASETS, Problems, make_frame
from .tuxpaint import REGISTRATION, SOURCE, find_stamps, load_tuxpaint_grouped

NUMERIC = ["n_translations", "image_kbytes", "image_width", "image_height",
           "speech_fr_seconds", "sound_effect_seconds"]
CATEGORICAL = ["image_format"]
BOOLEAN = ["has_sound_effect", "has_english_speech"]
TABULAR = {"numeric": NUMERIC, "categorical": CATEGORICAL, "boolean": BOOLEAN}


def _n_translations(path: str) -> float:
    with open(path, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()[1:]
    return float(sum(1 for line in lines if ".utf8=" in line.split("=", 1)[0] + "="))


def _png_size(path: str) -> tuple[float, float]:
    if not path.endswith(".png"):
        return math.nan, math.nan
    from PIL import Image

    with Image.open(path) as img:  # reads the header only
        return float(img.width), float(img.height)


def _seconds(path: str | None) -> float:
    if path is None:
        return math.nan
    import soundfile as sf

    return float(sf.info(path).duration)


def stamp_columns(paths: dict[str, str], problems: Problems) -> dict[str, object] | None:
    """The table columns of one stamp from its files (``role -> absolute path``); None
    (and a recorded problem) when one of them cannot be read."""
    try:
        width, height = _png_size(paths["image"])
        return {
            "n_translations": _n_translations(paths["text"]),
            "image_kbytes": os.stat(paths["image"]).st_size / 1024.0,
            "image_width": width,
            "image_height": height,
            "speech_fr_seconds": _seconds(paths.get("desc_fr")),
            "sound_effect_seconds": _seconds(paths.get("sound")),
            "image_format": os.path.splitext(paths["image"])[1].lstrip("."),
            "has_sound_effect": "sound" in paths,
            "has_english_speech": "desc" in paths,
        }
    except Exception as exc:  # noqa: BLE001 - one unreadable file drops one row, reported
        problems.add(paths["image"], f"stamp metadata cannot be read: {type(exc).__name__}: "
                                     f"{exc}")
        return None


@DATASETS.register(
    "tuxpaint-tabular",
    modalities=["audio", "image", "tabular", "text"],
    n_samples=812,
    n_classes=9,
    **REGISTRATION,
    cv={"kind": "stratified-group", "n_splits": 5},
    description=(
        "tuxpaint-grouped plus 9 real table columns read from each stamp's own files "
        "(translations, image size/format, speech and sound lengths, which sounds exist); "
        "image, English text, French audio, tabular."
    ),
    options={"min_groups": 3},
    tabular=TABULAR,
)
def load_tuxpaint_tabular(root: Path, *, on_error: str, download: bool, min_groups: int = 3):
    """Build ``(X, y, groups)`` for ``tuxpaint-tabular``.

    Parameters
    ----------
    root : pathlib.Path
        Data root holding ``tuxpaint/stamps``.
    on_error, download
        See :func:`mmfuse.data.datasets.load_dataset`.
    min_groups : int, default=3
        As for ``tuxpaint-grouped``.
    """
    X, y, groups = load_tuxpaint_grouped(root, on_error=on_error, download=download,
                                         min_groups=min_groups)
    folder = _fetch.ensure_present(SOURCE, root, download)
    relpaths = ["stamps/" + p for p in _fetch.list_files(folder / "stamps")]
    by_image = {}
    for stamp in find_stamps(relpaths):
        paths = {role: os.path.join(folder, rel) for role, rel in stamp.files.items()}
        by_image[paths["image"]] = paths
    problems = Problems()
    table = [stamp_columns(by_image[image], problems) for image in X["image"]]
    skipped = list(X.attrs.get("skipped", [])) + problems.resolve("tuxpaint-tabular", on_error)
    keep = [i for i, row in enumerate(table) if row is not None]
    if not keep:
        raise InputError("no stamp of tuxpaint-tabular could be read")
    columns = {c: [table[i][c] for i in keep] for c in NUMERIC + CATEGORICAL + BOOLEAN}
    return make_frame(
        "tuxpaint-tabular",
        {m: [X[m].iloc[i] for i in keep] for m in ("audio", "image", "text")},
        [y[i] for i in keep],
        [groups[i] for i in keep],
        skipped,
        extra=columns,
    )
