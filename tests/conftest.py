"""Shared fixtures: synthetic multi-view data and the location of the real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMFUSE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real datasets (../shared/data in this workplace); tests needing them skip without."""
    if not (DATA / "fsdd").is_dir():
        pytest.skip(f"real datasets not found at {DATA} (set MMFUSE_DATA)")
    return DATA


def make_views(n: int = 400, n_classes: int = 4, seed: int = 0, noise_view: bool = False):
    """Two informative views that see different aspects of the label (so fusion helps)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    a = rng.normal(size=(n, 12)).astype(np.float32)
    a[:, 0] += 2.5 * (y % 2)          # view a knows the parity
    b = rng.normal(size=(n, 8)).astype(np.float32)
    b[:, 0] += 2.5 * (y // 2)         # view b knows the half
    views = {"a": a, "b": b}
    if noise_view:
        views["noise"] = rng.normal(size=(n, 5)).astype(np.float32)
    return views, y


@pytest.fixture
def two_views():
    return make_views()


def spy_inner_splits(monkeypatch, module):
    """Record ``(groups, splits)`` of every ``inner_splits`` call made through ``module``."""
    seen = []
    real = module.inner_splits

    def spy(y, groups, n_splits, random_state, rows=None):
        splits = real(y, groups, n_splits, random_state, rows)
        seen.append((groups, splits))
        return splits

    monkeypatch.setattr(module, "inner_splits", spy)
    return seen


# -- fake encoders (registered once) for tests about the pipeline, not about features --------
from mmfuse import InputError  # noqa: E402
from mmfuse.encoders import Encoder, MissingItem, register_encoder  # noqa: E402
from mmfuse.encoders.registry import ENCODERS  # noqa: E402


class NumberEncoder(Encoder):
    """Text like "3.5" -> [value, value**2]; "bad" items raise, "   " after strip is missing."""

    name = "test-number"
    modality = "text"

    def prepare(self, item):
        if not isinstance(item, str):
            raise InputError(f"expected a string, got {type(item).__name__}")
        item = item.strip()
        if item == "-":
            raise MissingItem
        try:
            return float(item)
        except ValueError:
            raise InputError(f"cannot parse {item!r} as a number") from None

    def embed(self, prepared):
        x = np.asarray(prepared, dtype=np.float32)
        return np.stack([x, x**2], axis=1)

    @property
    def dim(self):
        return 2


class VocabEncoder(NumberEncoder):
    """Stateful: remembers the values seen in fit (to test that fitting happens per fold)."""

    name = "test-vocab"
    stateless = False
    fitted_on: list = []

    def fit_prepared(self, prepared):
        self.vocab_ = sorted(set(prepared))
        VocabEncoder.fitted_on.append(len(prepared))
        return self

    def embed(self, prepared):
        return np.array([[p in self.vocab_, p] for p in prepared], dtype=np.float32)


if "test-number" not in ENCODERS:
    register_encoder("test-number", modality="text", dim=2)(NumberEncoder)
    register_encoder("test-vocab", modality="text", dim=2)(VocabEncoder)


def number_frame(n: int = 300, seed: int = 0):
    """A DataFrame with two numeric-text columns that each see half of a 4-class label."""
    import pandas as pd

    views, y = make_views(n=n, seed=seed)
    df = pd.DataFrame({"left": [f"{v:.4f}" for v in views["a"][:, 0]],
                       "right": [f"{v:.4f}" for v in views["b"][:, 0]]})
    return df, y


# -- feature store (tests/test_features.py, tests/test_distributed.py) ------------------------
STORE_COLUMNS = {"image": "image", "text": "text", "audio": "audio"}
STORE_ENCODERS = {"image": "hog", "text": "wordllama", "audio": "mfcc"}


@pytest.fixture(scope="session")
def store_manifest(data_root, tmp_path_factory) -> Path:
    """A 24-row slice of tuxpaint (image + text + audio, 4 classes) as a CSV manifest, with
    relative paths, one unreadable image, one missing text and an id column."""
    pytest.importorskip("pyarrow")
    pytest.importorskip("wordllama")
    import pandas as pd

    from mmfuse.data.datasets import load_dataset

    X, _, _ = load_dataset("tuxpaint", root=data_root)
    top = X["label"].value_counts().index[:4]
    df = pd.concat([X[X["label"] == c].head(6) for c in top])
    df = df.sample(frac=1, random_state=0).reset_index(drop=True)
    folder = tmp_path_factory.mktemp("store-manifest")
    df.insert(0, "id", [f"item-{i:03d}" for i in range(len(df))])
    df.loc[3, "image"] = str(folder / "secret-holiday-photo.png")  # does not exist
    df.loc[7, "text"] = None
    (folder / "copy.png").write_bytes(Path(df.loc[0, "image"]).read_bytes())
    df.loc[0, "image"] = "copy.png"  # relative to the manifest's folder
    path = folder / "manifest.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def reference_store(store_manifest, tmp_path_factory):
    """The single-process store of ``store_manifest`` (8 rows per shard, skip bad items)."""
    from mmfuse.features import extract_store

    out = tmp_path_factory.mktemp("reference") / "store"
    result = extract_store(store_manifest, STORE_COLUMNS, out, encoders=STORE_ENCODERS,
                           rows_per_shard=8, on_error="skip")
    return result


def tar_xz(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """An xz tar of ``files`` (name -> bytes) and symbolic ``links`` (name -> target), as a
    Debian package's ``data.tar.xz``."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def ar_archive(members: dict[str, bytes]) -> bytes:
    """An ``ar`` archive of ``members``: the container of a ``.deb``."""
    out = b"!<arch>\n"
    for name, data in members.items():
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n"
        out += header.encode() + data + (b"\n" if len(data) % 2 else b"")
    return out


def write_small_store(path: Path, n: int = 1200, seed: int = 0, rows_per_shard: int = 256,
                      missing_text: float = 0.05) -> Path:
    """A small feature store (written through the store's shard writer): 4 classes, 40
    groups, views ``image`` (24-d, knows the parity) and ``text`` (8-d, knows the half),
    some rows without text. Labels ``c0``..``c3`` in column ``label``, groups in ``group``."""
    import pandas as pd

    from mmfuse.features.arrays import write_array_store

    def shards():
        for i, start in enumerate(range(0, n, rows_per_shard)):
            m = min(rows_per_shard, n - start)
            rng = np.random.default_rng([seed, i])
            y = rng.integers(0, 4, m)
            g = rng.integers(0, 40, m)
            image = rng.normal(size=(m, 24)).astype(np.float32)
            image[:, 0] += 2.0 * (y % 2)
            image[:, 1] += 0.05 * g  # a group shift
            text = rng.normal(size=(m, 8)).astype(np.float32)
            text[:, 0] += 2.0 * (y // 2)
            text[rng.random(m) < missing_text] = np.nan
            yield (pd.DataFrame({"label": [f"c{v}" for v in y], "group": g}),
                   {"image": image, "text": text})

    write_array_store(path, shards(), encoders={"image": "test-image", "text": "test-text"},
                      dims={"image": 24, "text": 8}, n_rows=n, rows_per_shard=rows_per_shard)
    return path


@pytest.fixture(scope="session")
def small_store(tmp_path_factory) -> Path:
    return write_small_store(tmp_path_factory.mktemp("store") / "store")
