"""Desktop icon themes: three artists' drawings of the freedesktop icon names (image + text).

Oxygen (48x48 PNG), Tango (32x32 PNG) and Breeze (SVG, needs ``mmfuse[svg]``) follow the
same icon naming specification, so one name (``document-open``) is often drawn by several
artists. A row is one drawing: image = the icon file, text = its name as words
(``audio-volume-high`` -> ``"audio volume high"``), label = its context (the theme's folder:
actions, apps, devices, ...). Two datasets with real group shift are built from them:
``icons-family`` (test folds hold icon families never seen in training) and ``icons-theme``
(test folds hold a whole theme, an artist never seen in training).

Contexts: ``preferences`` (Breeze only) is merged into ``apps``, where the naming
specification and Oxygen file the same ``preferences-desktop-*`` names; ``animations``
(spinner sprite strips, 4 files) and ``applets`` (Breeze only, 4 files) are dropped.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from ..._errors import InputError
from . import _fetch
from ._registry import DATASETS, Problems, is_hidden, make_frame

THEMES = ("breeze", "oxygen", "tango")


class Theme(NamedTuple):
    """One icon theme's Debian package and where its kept files lie in the package.

    ``prefix`` (a package path) becomes ``local`` in ``icons/<theme>``; below it lie
    ``<context>/<name><extension>``, or, with ``size_folders``, ``<context>/<size>/<name>``.
    """

    package: str
    version: str
    deb_sha256: str
    content_sha256: str
    licence: str
    url: str
    prefix: str
    local: str
    extension: str
    size_folders: bool = False

    @property
    def marker(self) -> str:
        return self.local.rstrip("/") or "actions"


_THEMES = {
    "breeze": Theme(
        "breeze-icon-theme", "4:5.103.0-1",
        "268e05fd9626b659f473ade05153bd5ec3b8bf704fcd07d27d91d2ce5db1bbfd",
        "be028a710373e4606d0f7ca1d02eaaed6871665171cdcb112fd1aa6c743a106c",
        "LGPL-3.0-or-later", "https://invent.kde.org/frameworks/breeze-icons",
        "usr/share/icons/breeze/", "", ".svg", size_folders=True),
    "oxygen": Theme(
        "oxygen-icon-theme", "5:5.103.0-1",
        "3e49023e148906e41457a98a19a09858ddd761ef4f212fa356232924b3cebcce",
        "7c3492b863f783c28a57a2a5f045ab414f2f78fa78fa4c9119d5166f61bcb8eb",
        "LGPL-3.0-or-later", "https://invent.kde.org/frameworks/oxygen-icons5",
        "usr/share/icons/oxygen/base/48x48/", "48x48/", ".png"),
    "tango": Theme(
        "tango-icon-theme", "0.8.90-11",
        "dff317aca52fde744b884a02dd9fc2702a0cc6aaecc22271b5abf6906cd90b94",
        "75a71eaa1daf941273ffa113481afa5f1962ee1a36b8663d0592a8e7263a069d",
        "public domain", "http://tango.freedesktop.org/Tango_Icon_Library",
        "usr/share/icons/Tango/32x32/", "32x32/", ".png"),
}
#: Breeze keeps one size folder per context: the first of these that holds icons.
BREEZE_SIZES = ("32", "22", "48", "64", "16", "128", "96", "256", "8")
#: Contexts merged into another (see the module docstring) or dropped (None).
CONTEXTS = {"preferences": "apps", "animations": None, "applets": None}
#: Leading words that are the same family as another (plural or ``x-`` prefixed names).
FAMILY_ALIASES = {"applications": "application", "bookmarks": "bookmark", "colors": "color",
                  "tools": "tool"}
#: Names one theme draws pixel for pixel alike (24x24 renderings, mean difference < 0.2%)
#: though their first words differ: their families form one group (re-checked by a test).
SAME_DRAWING = (("document-save", "system-save-session"), ("internet-mail", "kmail"),
                ("system-search", "kfind"), ("system-reboot", "view-refresh"))
_WORD_SPLIT = re.compile(r"[-_.+]+")


def _relocate_for(theme: str):
    info = _THEMES[theme]
    doc = f"usr/share/doc/{info.package}/copyright"
    depth = 3 if info.size_folders else 2  # <context>/<size>/<file> or <context>/<file>

    def relocate(name: str) -> str | None:
        name = name.removeprefix("./")
        if name == doc:
            return "COPYRIGHT"
        if not name.startswith(info.prefix) or not name.endswith(info.extension):
            return None
        rel = name[len(info.prefix):]
        return info.local + rel if rel.count("/") == depth - 1 else None

    return relocate


def _keep_for(theme: str):
    def keep(relpaths: list[str]) -> list[str]:
        return sorted([p for p, _, _ in icon_files(theme, relpaths)]
                      + [p for p in relpaths if p == "COPYRIGHT"])

    return keep


def icon_files(theme: str, relpaths: Iterable[str]) -> list[tuple[str, str, str]]:
    """``(relpath, context, name)`` of the icons among paths relative to ``icons/<theme>``.

    Oxygen and Tango: ``<size>/<context>/<name>.png``; Breeze: ``<context>/<size>/<name>.svg``,
    only the first size of :data:`BREEZE_SIZES` that a context has.
    """
    info = _THEMES[theme]
    found = []
    for rel in relpaths:
        parts = rel.split("/")
        if (len(parts) != 3 or is_hidden(parts[2]) or not rel.startswith(info.local)
                or not parts[2].endswith(info.extension)):
            continue
        stem = parts[2][: -len(info.extension)]
        if info.size_folders and parts[1] in BREEZE_SIZES:
            found.append((rel, parts[0], stem, parts[1]))
        elif not info.size_folders:
            found.append((rel, parts[1], stem, parts[0]))
    if info.size_folders:
        sizes: dict[str, set[str]] = {}
        for _, context, _, size in found:
            sizes.setdefault(context, set()).add(size)
        first = {c: next(s for s in BREEZE_SIZES if s in have) for c, have in sizes.items()}
        found = [f for f in found if f[3] == first[f[1]]]
    return sorted((rel, context, name) for rel, context, name, _ in found)


def _source(theme: str) -> _fetch.Source:
    info = _THEMES[theme]
    layout = (f"<context>/<size>/<name>{info.extension}, one size per context"
              if info.size_folders else f"{info.local}<context>/<name>{info.extension}")
    return _fetch.Source(
        folder=f"icons/{theme}",
        marker=info.marker,
        urls=(),
        archive="deb",
        archive_sha256=info.deb_sha256,
        content_sha256=info.content_sha256,
        description=(
            f"the {theme} icons as {layout} (= {info.prefix} of the Debian package "
            f"{info.package} {info.version}, sha256 {info.deb_sha256}, unpacked with "
            f"`dpkg-deb -x`; symbolic links left out) and its copyright file as 'COPYRIGHT'"
        ),
        relocate=_relocate_for(theme),
        keep=_keep_for(theme),
        apt=f"{info.package}={info.version}",
    )


#: The raw folders (``<root>/icons/<theme>``) the icon datasets are built from.
SOURCES = {theme: _source(theme) for theme in THEMES}

CITATION = (
    "The Oxygen and Breeze icon themes (KDE, LGPL-3+) and the Tango icon theme (Tango "
    "Desktop Project, public domain); Debian packages " + ", ".join(
        f"{info.package} {info.version}" for info in _THEMES.values())
)
REGISTRATION = {
    "licence": "LGPL-3.0-or-later (oxygen, breeze), public domain (tango)",
    "citation": CITATION,
    "source": [{"name": f"icons/{theme}", "url": info.url, "package": info.package,
                "version": info.version, "sha256": info.deb_sha256}
               for theme, info in _THEMES.items()],
    "sources": tuple(SOURCES.values()),
}


def icon_words(name: str) -> list[str]:
    """The words of an icon name: ``"text-x-c++src"`` -> ``["text", "x", "c", "src"]``."""
    return [word for word in _WORD_SPLIT.split(name.lower()) if word]


def icon_family(name: str) -> str:
    """An icon's family: its first word (after an ``x-`` prefix), plurals as the singular.

    ``document-open`` and ``document-save`` -> ``"document"``; ``x-office-calendar`` ->
    ``"office"``; ``applications-games`` -> ``"application"``.
    """
    words = icon_words(name)
    first = words[1] if words[0] == "x" and len(words) > 1 else words[0]
    return FAMILY_ALIASES.get(first, first)


def family_groups(names: Iterable[str]) -> dict[str, str]:
    """Name -> group: its family, joined (``+``) with families it shares a drawing with."""
    parent: dict[str, str] = {}

    def find(family: str) -> str:
        while parent.setdefault(family, family) != family:
            family = parent[family]
        return family

    for a, b in SAME_DRAWING:
        ra, rb = find(icon_family(a)), find(icon_family(b))
        parent[max(ra, rb)] = min(ra, rb)
    members: dict[str, set[str]] = {}
    for family in list(parent):
        members.setdefault(find(family), set()).add(family)
    groups = {}
    for name in names:
        family = icon_family(name)
        groups[name] = "+".join(sorted(members.get(find(family), {family})))
    return groups


class Icon(NamedTuple):
    theme: str
    label: str
    name: str
    path: str


def load_icons(root: Path, themes: Sequence[str], *, on_error: str, download: bool,
               dataset: str) -> tuple[list[Icon], list[dict]]:
    """Every usable icon of ``themes`` with a kept context, sorted by theme, label, name."""
    problems = Problems()
    icons = []
    for theme in sorted(themes):
        folder = _fetch.ensure_present(SOURCES[theme], root, download)
        for rel, context, name in icon_files(theme, _fetch.list_files(folder)):
            label = CONTEXTS.get(context, context)
            path = os.path.join(folder, rel)
            if label is not None and problems.check_size(path):
                icons.append(Icon(theme, label, name, path))
    return sorted(icons), problems.resolve(dataset, on_error)


def _frame(dataset: str, icons: list[Icon], groups: list[str], skipped: list[dict]):
    return make_frame(dataset, {"image": [i.path for i in icons],
                                "text": [" ".join(icon_words(i.name)) for i in icons]},
                      [i.label for i in icons], groups, skipped)


def _check_count(name: str, value: object, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InputError(f"{name} must be an integer >= {least}; got {value!r}")


@DATASETS.register(
    "icons-family",
    modalities=["image", "text"],
    n_samples=1990,
    n_classes=6,
    **REGISTRATION,
    cv={"kind": "stratified-group", "n_splits": 5},
    description=(
        "Desktop icons of 3 themes pooled (Oxygen, Tango, Breeze): image + name as words; "
        "label = context, group = icon family (first word of the name), so test folds hold "
        "families never seen in training, in every theme's drawing."
    ),
    options={"themes": list(THEMES), "min_outside_largest": 20},
)
def load_icons_family(root: Path, *, on_error: str, download: bool,
                      themes: Sequence[str] = THEMES, min_outside_largest: int = 20):
    """Build ``(X, y, groups)`` for ``icons-family``: 1990 icons, 6 contexts, 246 groups.

    The group is the icon's family, the first word of its name (``document-open``,
    ``document-save`` -> ``document``; see :func:`icon_family` and :func:`family_groups`).
    One family's icons are variations of one drawing (``folder-*`` are folders with an
    emblem, ``application-x-*`` are pages with a logo, ``audio-volume-*`` one speaker), and
    every theme draws the same names, so a family is the unit that keeps near-duplicates,
    and the identical name text of several themes, out of the test folds of each other.
    Families sharing a pixel-identical drawing are joined (:data:`SAME_DRAWING`); looser
    look-alikes across families remain (Breeze draws ``user-home`` as a folder, like its
    ``folder-*``; ``application-x-*`` and ``text-*`` pages look alike).
    Contexts whose icons nearly all belong to one family (``emotes`` are ``face-*``,
    ``emblems`` ``emblem-*``, ``categories`` ``applications-*``) cannot be learnt from
    other families and are dropped: a context is kept when at least
    ``min_outside_largest`` of its icons lie outside its largest group.

    With the defaults (counts asserted by ``tests/data/test_icons.py``): actions 863,
    mimetypes 391, apps 331, status 147, places 136, devices 122; dropped: emotes (56 of
    59 are ``face-*``), categories (45 of 56 ``applications-*``), emblems (30 of 41
    ``emblem-*``). The largest groups: ``document+kfind+system+view`` 231 (linked by
    :data:`SAME_DRAWING`), ``application`` 223, ``preferences`` 175, ``folder`` 117.

    Parameters
    ----------
    root : pathlib.Path
        Data root holding ``icons/<theme>``.
    on_error, download
        See :func:`mmfuse.data.datasets.load_dataset`.
    themes : list of str, default=["breeze", "oxygen", "tango"]
        Themes to pool; one theme gives a within-theme set.
    min_outside_largest : int, default=20
        Keep a context only when this many of its icons lie outside its largest group.
    """
    themes = _check_themes(themes, 1)
    _check_count("min_outside_largest", min_outside_largest, 1)
    icons, skipped = load_icons(root, themes, on_error=on_error, download=download,
                                dataset="icons-family")
    group_of = family_groups(i.name for i in icons)
    per_label: dict[str, Counter] = {}
    for icon in icons:
        per_label.setdefault(icon.label, Counter())[group_of[icon.name]] += 1
    kept = {label for label, counts in per_label.items()
            if sum(counts.values()) - max(counts.values()) >= min_outside_largest}
    icons = [i for i in icons if i.label in kept]
    return _frame("icons-family", icons, [group_of[i.name] for i in icons], skipped)


@DATASETS.register(
    "icons-theme",
    modalities=["image", "text"],
    n_samples=2146,
    n_classes=9,
    **REGISTRATION,
    cv={"kind": "group", "n_splits": 3},
    description=(
        "Desktop icons of 3 themes (Oxygen, Tango, Breeze): image + name as words; label = "
        "context, group = theme, so each test fold is an artist never seen in training "
        "(leave one theme out)."
    ),
    options={"min_per_theme": 5},
)
def load_icons_theme(root: Path, *, on_error: str, download: bool, min_per_theme: int = 5):
    """Build ``(X, y, groups)`` for ``icons-theme``: 2146 icons, 9 contexts, 3 groups
    (oxygen 1137, breeze 795, tango 214).

    The group is the theme: each theme is one artist team's style (Oxygen's shaded 48x48
    PNGs, Tango's 32x32 PNGs, Breeze's flat monochrome SVGs), so leaving one theme out
    tests on drawings by an unseen artist, the image shift a new icon set brings. The text
    shifts little: many names exist in several themes. A context is kept when every theme
    has at least ``min_per_theme`` icons of it (all 9 with the default: actions, apps,
    categories, devices, emblems, emotes, mimetypes, places, status).

    Parameters
    ----------
    root : pathlib.Path
        Data root holding ``icons/<theme>``.
    on_error, download
        See :func:`mmfuse.data.datasets.load_dataset`.
    min_per_theme : int, default=5
        Keep a context only when every theme has this many icons of it.
    """
    _check_count("min_per_theme", min_per_theme, 1)
    icons, skipped = load_icons(root, THEMES, on_error=on_error, download=download,
                                dataset="icons-theme")
    counts = Counter((i.label, i.theme) for i in icons)
    kept = {label for label, _ in counts
            if all(counts[label, theme] >= min_per_theme for theme in THEMES)}
    icons = [i for i in icons if i.label in kept]
    return _frame("icons-theme", icons, [i.theme for i in icons], skipped)


def _check_themes(themes: object, least: int) -> list[str]:
    if isinstance(themes, str) or not isinstance(themes, (list, tuple)):
        raise InputError(f"themes must be a list of theme names ({', '.join(THEMES)}); "
                         f"got {themes!r}")
    unknown = sorted({str(t) for t in themes} - set(THEMES))
    if unknown:
        raise InputError(f"unknown theme(s) {', '.join(unknown)}; valid: {', '.join(THEMES)}")
    if len(set(themes)) < least:
        raise InputError(f"themes must name at least {least} of {', '.join(THEMES)}; "
                         f"got {list(themes)!r}")
    return sorted(set(themes))
