"""Icon theme datasets: counts, groups that never straddle a family, fetch and verification."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import ar_archive, tar_xz

from mmfuse import InputError
from mmfuse.data.datasets import _fetch, dataset_info, list_datasets, load_dataset, verify_dataset
from mmfuse.data.datasets.icons import (
    SAME_DRAWING,
    SOURCES,
    THEMES,
    family_groups,
    icon_family,
    icon_words,
)

DATA = Path(os.environ.get("MMFUSE_DATA")
            or Path(__file__).resolve().parents[3] / "shared" / "data")
ICONS = DATA / "icons"
FAMILY_COUNTS = {"actions": 863, "mimetypes": 391, "apps": 331, "status": 147, "places": 136,
                 "devices": 122}
THEME_COUNTS = {**FAMILY_COUNTS, "emotes": 59, "categories": 56, "emblems": 41}
PER_THEME = {"oxygen": 1137, "breeze": 795, "tango": 214}
N_FILES = {"breeze": 801, "oxygen": 1140, "tango": 216}  # icons + COPYRIGHT


def needs_icons() -> None:
    if not all((ICONS / theme).is_dir() for theme in THEMES):
        pytest.skip(f"real data {ICONS} is absent (set MMFUSE_DATA)")


def relative_parts(path: str) -> tuple[str, ...]:
    return Path(path).relative_to(ICONS).parts


def context_of(path: str) -> str:
    """The context folder, read from the path independently of the loader."""
    parts = relative_parts(path)
    return parts[1] if parts[0] == "breeze" else parts[2]


@pytest.mark.parametrize(("name", "words", "family"), [
    ("audio-volume-high", ["audio", "volume", "high"], "audio"),
    ("text-x-c++src", ["text", "x", "c", "src"], "text"),
    ("application-vnd.oasis.opendocument.text", ["application", "vnd", "oasis",
                                                 "opendocument", "text"], "application"),
    ("x-office-calendar", ["x", "office", "calendar"], "office"),
    ("applications-games", ["applications", "games"], "application"),
    ("skrooge_credit_card", ["skrooge", "credit", "card"], "skrooge"),
    ("Charm", ["charm"], "charm"),
])
def test_icon_words_and_family(name, words, family):
    assert icon_words(name) == words
    assert icon_family(name) == family


def test_same_drawing_links_join_families_into_one_group():
    groups = family_groups(["document-open", "system-run", "view-refresh", "kfind", "kmail",
                            "internet-web-browser", "folder", "go-up"])
    assert groups["document-open"] == groups["system-run"] == groups["view-refresh"] == \
        groups["kfind"] == "document+kfind+system+view"
    assert groups["kmail"] == groups["internet-web-browser"] == "internet+kmail"
    assert groups["folder"] == "folder" and groups["go-up"] == "go"


def test_icon_datasets_are_listed_with_their_cv():
    by_name = {info["name"]: info for info in list_datasets()}
    assert by_name["icons-family"]["cv"] == {"kind": "stratified-group", "n_splits": 5}
    assert by_name["icons-theme"]["cv"] == {"kind": "group", "n_splits": 3}
    for name in ("icons-family", "icons-theme"):
        info = by_name[name]
        assert info["modalities"] == ["image", "text"]
        assert [s["package"] for s in info["source"]] == [
            "breeze-icon-theme", "oxygen-icon-theme", "tango-icon-theme"]
        # no download host of the Debian archive is written anywhere (workplace rule)
        assert "debian.org" not in str(info)


def test_mmfuse_datasets_lists_them():
    from typer.testing import CliRunner

    from mmfuse.cli import app

    result = CliRunner().invoke(app, ["datasets"])
    assert result.exit_code == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()}
    assert rows["icons-family"][1:5] == ["image, text", "1990", "6", "stratified-group (5 folds)"]
    assert rows["icons-theme"][1:5] == ["image, text", "2146", "9", "group (3 folds)"]


def test_icons_family_counts_labels_texts_and_groups():
    needs_icons()
    X, y, groups = load_dataset("icons-family", DATA)
    info = dataset_info("icons-family")
    assert list(X.columns) == ["image", "text", "label", "group"]
    assert X.attrs == {"dataset": "icons-family", "skipped": []}
    assert len(X) == info["n_samples"] == 1990
    assert Counter(y.tolist()) == FAMILY_COUNTS and info["n_classes"] == len(FAMILY_COUNTS)
    assert len(set(groups)) == 246
    names = [Path(p).stem for p in X["image"]]
    assert X["text"].tolist() == [" ".join(icon_words(n)) for n in names]
    assert [("apps" if c == "preferences" else c) for c in map(context_of, X["image"])] == \
        y.tolist()
    assert Counter(relative_parts(p)[0] for p in X["image"]) == {
        "oxygen": 1090, "breeze": 718, "tango": 182}
    # every kept context has >= 20 icons outside its largest group; the dropped ones do not
    for label in FAMILY_COUNTS:
        counts = Counter(groups[y == label])
        assert sum(counts.values()) - max(counts.values()) >= 20, label


def test_icons_family_groups_never_straddle_a_family_or_a_name():
    needs_icons()
    X, y, groups = load_dataset("icons-family", DATA)
    names = [Path(p).stem for p in X["image"]]
    group_of_family: dict[str, set] = {}
    group_of_name: dict[str, set] = {}
    for name, group in zip(names, groups):
        group_of_family.setdefault(icon_family(name), set()).add(group)
        group_of_name.setdefault(name, set()).add(group)
    assert all(len(g) == 1 for g in group_of_family.values())
    # the same name drawn by several themes (identical text) lies in one group
    assert all(len(g) == 1 for g in group_of_name.values())
    shared = [n for n, c in Counter(names).items() if c == 3]
    assert len(shared) > 50
    for a, b in SAME_DRAWING:
        if a in group_of_name and b in group_of_name:
            assert group_of_name[a] == group_of_name[b]


def test_icons_family_within_one_theme_and_bad_options():
    needs_icons()
    X, y, groups = load_dataset("icons-family", DATA, themes=["tango"])
    assert {relative_parts(p)[0] for p in X["image"]} == {"tango"}
    assert set(y) <= set(THEME_COUNTS) and len(X) < 215
    with pytest.raises(InputError, match=r"unknown theme\(s\) gnome; valid: breeze, oxygen, "
                                         r"tango$"):
        load_dataset("icons-family", DATA, themes=["tango", "gnome"])
    with pytest.raises(InputError, match=r"themes must name at least 1 of breeze, oxygen, "
                                         r"tango; got \[\]"):
        load_dataset("icons-family", DATA, themes=[])
    with pytest.raises(InputError, match="themes must be a list"):
        load_dataset("icons-family", DATA, themes="tango")
    with pytest.raises(InputError, match="min_outside_largest must be an integer >= 1"):
        load_dataset("icons-family", DATA, min_outside_largest=0)
    with pytest.raises(InputError, match="min_per_theme must be an integer >= 1"):
        load_dataset("icons-theme", DATA, min_per_theme=True)


def test_icons_theme_is_leave_one_theme_out():
    needs_icons()
    X, y, groups = load_dataset("icons-theme", DATA)
    info = dataset_info("icons-theme")
    assert list(X.columns) == ["image", "text", "label", "group"]
    assert len(X) == info["n_samples"] == 2146 and len(set(y)) == info["n_classes"] == 9
    assert Counter(y.tolist()) == THEME_COUNTS
    assert Counter(groups.tolist()) == PER_THEME
    assert [relative_parts(p)[0] for p in X["image"]] == groups.tolist()
    assert all(p.endswith(".svg") == (g == "breeze") for p, g in zip(X["image"], groups))
    # every class is drawn by every theme, so each held-out theme tests every class
    per_theme = Counter(zip(y, groups))
    assert min(per_theme[label, theme] for label in THEME_COUNTS for theme in THEMES) == 5
    X6, y6, _ = load_dataset("icons-theme", DATA, min_per_theme=6)
    assert "emblems" not in set(y6) and len(X6) == 2146 - 41  # oxygen has 5 emblems


def test_loading_is_deterministic():
    needs_icons()
    for name in ("icons-family", "icons-theme"):
        first, y1, g1 = load_dataset(name, DATA)
        again, y2, g2 = load_dataset(name, DATA)
        assert first.equals(again) and (y1 == y2).all() and (g1 == g2).all()


# --- verification and fetching --------------------------------------------------------------

def test_verify_matches_the_pinned_hashes():
    needs_icons()
    report = verify_dataset("icons-family", DATA)
    assert report["ok"]
    assert {p["source"]: p["n_files"] for p in report["sources"]} == {
        f"icons/{theme}": n for theme, n in N_FILES.items()}


def copy_tango(root: Path) -> Path:
    needs_icons()
    shutil.copytree(ICONS / "tango", root / "icons" / "tango")
    return root / "icons" / "tango"


def test_verify_refuses_a_modified_file(tmp_path):
    tango = copy_tango(tmp_path)
    assert SOURCES["tango"].verify(tmp_path)["ok"]
    icon = tango / "32x32" / "actions" / "document-open.png"
    icon.write_bytes(icon.read_bytes()[:-1] + b"\0")
    report = SOURCES["tango"].verify(tmp_path)
    assert not report["ok"] and report["expected"] == SOURCES["tango"].content_sha256
    (tango / "32x32" / "actions" / "extra.png").write_bytes(b"added")
    icon.unlink()
    assert not SOURCES["tango"].verify(tmp_path)["ok"]


def tango_deb(path: Path, tamper: bool = False) -> None:
    """The tango package rebuilt from the unpacked tree, with files the dataset leaves out
    (other sizes, scalable SVGs, symbolic-link aliases, index.theme)."""
    needs_icons()
    files = {}
    for rel in _fetch.list_files(ICONS / "tango"):
        data = (ICONS / "tango" / rel).read_bytes()
        name = ("./usr/share/doc/tango-icon-theme/copyright" if rel == "COPYRIGHT"
                else "./usr/share/icons/Tango/" + rel)
        files[name] = data
    files["./usr/share/icons/Tango/16x16/actions/document-open.png"] = b"small"
    files["./usr/share/icons/Tango/scalable/actions/document-open.svg"] = b"<svg/>"
    files["./usr/share/icons/Tango/index.theme"] = b"[Icon Theme]\n"
    files["./usr/share/icons/Tango/32x32/actions/notes.txt"] = b"not an icon"
    if tamper:
        files["./usr/share/icons/Tango/32x32/actions/go-up.png"] += b"\0"
    links = {"./usr/share/icons/Tango/32x32/actions/gtk-open.png": "document-open.png"}
    path.write_bytes(ar_archive({"debian-binary": b"2.0\n",
                                 "control.tar.xz": tar_xz({"./control": b""}, {}),
                                 "data.tar.xz": tar_xz(files, links)}))


def fake_apt_get(tmp_path: Path, deb: Path | None) -> str:
    """An ``apt-get`` that 'downloads' ``deb`` into the current folder (or fails)."""
    script = tmp_path / "bin" / "apt-get"
    script.parent.mkdir()
    body = (f'cp "{deb}" "./tango-icon-theme_0.8.90-11_all.deb"\n' if deb is not None
            else 'echo "E: Unable to locate package $2" >&2\nexit 100\n')
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def test_fetch_with_apt_get_unpacks_and_verifies_the_tango_package(tmp_path, monkeypatch):
    deb = tmp_path / "tango.deb"
    tango_deb(deb)
    monkeypatch.setattr(shutil, "which", lambda name: fake_apt_get(tmp_path, deb))
    monkeypatch.setattr(SOURCES["tango"], "archive_sha256",
                        hashlib.sha256(deb.read_bytes()).hexdigest())
    root = tmp_path / "root"
    folder = _fetch.ensure_present(SOURCES["tango"], root, download=True)
    assert folder == root / "icons" / "tango"
    # the kept files are exactly the unpacked tree, and match the pinned content hash
    assert _fetch.list_files(folder) == _fetch.list_files(ICONS / "tango")
    assert SOURCES["tango"].verify(root)["ok"]
    assert sorted(os.listdir(root)) == ["icons"]


@pytest.mark.parametrize("problem", ["archive", "content", "no package", "no apt-get"])
def test_fetch_failures_leave_nothing_and_say_how_to_get_the_data(tmp_path, monkeypatch,
                                                                  problem):
    deb = tmp_path / "tango.deb"
    tango_deb(deb, tamper=problem == "content")
    apt_get = None if problem == "no apt-get" else fake_apt_get(
        tmp_path, None if problem == "no package" else deb)
    monkeypatch.setattr(shutil, "which", lambda name: apt_get)
    if problem != "archive":
        monkeypatch.setattr(SOURCES["tango"], "archive_sha256",
                            hashlib.sha256(deb.read_bytes()).hexdigest())
    message = {"archive": "has sha256 .* expected dff317ac",
               "content": "does not match the pinned sha256",
               "no package": "apt-get download failed: E: Unable to locate package",
               "no apt-get": "apt-get, which downloads it, is not available here; or point "
                             "MMFUSE_DATA"}[problem]
    root = tmp_path / "root"
    with pytest.raises(InputError, match=message) as info:
        _fetch.ensure_present(SOURCES["tango"], root, download=True)
    assert "\n" not in str(info.value)
    if problem in ("no package", "no apt-get"):
        assert "tango-icon-theme 0.8.90-11" in str(info.value)
        assert "`apt-get download tango-icon-theme=0.8.90-11`" in str(info.value)
    assert os.listdir(root) == []


def test_missing_themes_without_download_name_the_package(tmp_path):
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "icons" / "breeze"))) as info:
        load_dataset("icons-theme", tmp_path, download=False)
    assert "breeze-icon-theme 4:5.103.0-1" in str(info.value)
    assert "download=False" in str(info.value)


def test_a_zero_byte_icon_is_reported_or_skipped(tmp_path):
    tango = copy_tango(tmp_path)
    for theme in ("oxygen", "breeze"):
        (tmp_path / "icons" / theme).symlink_to(ICONS / theme)
    (tango / "32x32" / "status" / "weather-clear.png").write_bytes(b"")
    with pytest.raises(InputError, match=r"1 unusable file\(s\) in dataset 'icons-theme'"
                                         r".*weather-clear.png: zero-byte file"):
        load_dataset("icons-theme", tmp_path)
    X, _, _ = load_dataset("icons-theme", tmp_path, on_error="skip")
    assert len(X) == 2145 and X.attrs["skipped"][0]["reason"] == "zero-byte file"


# --- near-duplicate drawings ----------------------------------------------------------------

def thumbnails(paths: list[str]) -> np.ndarray:
    from mmfuse.preprocess.image import load_image

    return np.stack([np.asarray(load_image(p, size_hint=24).convert("L").resize((24, 24)),
                                dtype=np.float32).ravel() / 255 for p in paths])


@pytest.mark.slow
def test_no_pixel_identical_drawings_straddle_two_family_groups():
    """Within each theme, drawings that differ by < 0.2% (24x24 grey thumbnails) are in
    one group: the SAME_DRAWING links are complete."""
    pytest.importorskip("cairosvg")
    needs_icons()
    X, _, groups = load_dataset("icons-family", DATA)
    themes = np.array([relative_parts(p)[0] for p in X["image"]])
    straddling = []
    for theme in THEMES:
        index = np.flatnonzero(themes == theme)
        thumbs = thumbnails(X["image"].to_numpy()[index].tolist())
        for k, i in enumerate(index[:-1]):
            diff = np.abs(thumbs[k + 1:] - thumbs[k]).mean(axis=1)
            for j in index[k + 1:][diff < 0.002]:
                if groups[i] != groups[j]:
                    straddling.append((X["image"][i], X["image"][j]))
    assert straddling == []


def test_readme_table_holds_the_loaded_counts():
    needs_icons()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for name in ("icons-family", "icons-theme"):
        row = re.search(rf"^\| `{name}` \| (\d+) \| (\d+) \| (\d+) \|", readme, re.MULTILINE)
        assert row is not None, name
        X, y, groups = load_dataset(name, DATA)
        assert [int(v) for v in row.groups()] == [len(X), len(set(y)), len(set(groups))]
