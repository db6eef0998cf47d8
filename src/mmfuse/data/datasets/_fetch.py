"""Fetch a raw dataset folder from its pinned upstream archive, verified before it lands.

The archive comes from its URLs, or, for a Debian package, from ``apt-get download
<package>=<version>`` (the system's own package client and mirrors). A fetch downloads into a temporary folder next to the target, extracts only the files the
dataset keeps, checks the sha256 of their ``sha256sum`` listing against the pinned value
and only then renames the result into place. On any failure nothing is left behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..._errors import InputError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass
class Source:
    """Where a raw dataset folder comes from and how to check it.

    One object per raw folder, named in the ``sources`` of every dataset registration built
    from it (:data:`~mmfuse.data.datasets._registry.DATASETS`): the datasets' registry is
    the only place that knows it.

    Attributes
    ----------
    folder : str
        Folder under the data root, e.g. ``"fsdd"``; ``/`` nests it (``"icons/tango"``).
    marker : str
        Entry of ``folder`` whose absence means the dataset must be fetched.
    urls : tuple of str
        Archive URLs, tried in order; empty when ``apt`` names the package.
    archive : {"zip", "deb"}
        Archive format.
    archive_sha256 : str or None
        sha256 of the archive itself, when upstream publishes one.
    content_sha256 : str
        sha256 of the sorted ``sha256sum`` listing of the kept files.
    description : str
        What to put in ``folder`` and where it comes from, for error messages.
    relocate : callable
        Maps an archive member name to a path relative to ``folder``, or None to ignore it.
    keep : callable
        Selects, from all relative paths, the ones the dataset keeps.
    apt : str or None
        ``"<package>=<version>"`` of a Debian package fetched with ``apt-get download``
        instead of from ``urls`` (its ``archive_sha256`` is still checked).
    """

    folder: str
    marker: str
    urls: tuple[str, ...]
    archive: str
    archive_sha256: str | None
    content_sha256: str
    description: str
    relocate: Callable[[str], str | None]
    keep: Callable[[list[str]], list[str]]
    apt: str | None = None

    @property
    def name(self) -> str:
        return self.folder

    @property
    def origin(self) -> str:
        """Where the archive comes from, for messages."""
        return f"`apt-get download {self.apt}`" if self.apt else self.urls[0]

    def verify(self, root: Path) -> dict:
        """Recompute the content hash of ``root/<folder>`` (see ``verify_dataset``)."""
        folder = root / self.folder
        if not (folder / self.marker).is_dir():
            raise InputError(f"{folder / self.marker} is missing; nothing to verify "
                             f"(load_dataset downloads {self.description})")
        kept = self.keep(list_files(folder))
        got = content_sha256(folder, kept)
        return {"source": self.name, "path": str(folder), "n_files": len(kept), "sha256": got,
                "expected": self.content_sha256, "ok": got == self.content_sha256}


@dataclass(frozen=True)
class PackagedSource:
    """A raw source shipped inside an installed package (nothing to fetch): its name and
    the function that checks it, ``verify(root) -> dict`` as :meth:`Source.verify`."""

    name: str
    check: Callable[[Path], dict]

    def verify(self, root: Path) -> dict:
        return self.check(root)




def github_archive(owner_repo: str, commit: str) -> str:
    """URL of the zip archive of ``owner_repo`` at ``commit`` on GitHub."""
    return f"https://github.com/{owner_repo}/archive/{commit}.zip"


def strip_top_folder(name: str) -> str | None:
    """Drop the ``<repo>-<commit>/`` folder that GitHub archives put around everything."""
    _, sep, rest = name.partition("/")
    return rest if sep and rest else None


def content_sha256(folder: Path, relpaths: Iterable[str]) -> str:
    """sha256 of the ``sha256sum`` listing of ``relpaths`` in C-locale sorted order.

    Equal to ``sort | xargs sha256sum | sha256sum`` run inside ``folder``.

    Parameters
    ----------
    folder : pathlib.Path
        Folder the relative paths start from.
    relpaths : iterable of str
        ``/``-separated paths relative to ``folder``.

    Returns
    -------
    str
        Hex digest.
    """
    listing = hashlib.sha256()
    for rel in sorted(relpaths, key=lambda p: p.encode("utf-8")):
        listing.update(_sha256sum_line(_file_sha256(folder / rel), rel).encode("utf-8"))
    return listing.hexdigest()


def list_files(folder: Path) -> list[str]:
    """All non-folder entries under ``folder``, relative and ``/``-separated, sorted.

    Symbolic links are listed (a broken one too, so that it is reported, not lost).
    """
    found = []
    for dirpath, _, filenames in os.walk(folder):
        base = Path(dirpath).relative_to(folder)
        found.extend((base / filename).as_posix() for filename in filenames)
    return sorted(found)


def ensure_present(source: Source, root: Path, download: bool) -> Path:
    """Return ``root/<folder>`` of ``source``, fetching it first when it is missing.

    Parameters
    ----------
    source : Source
        The raw source (a dataset module's ``SOURCE``).
    root : pathlib.Path
        Data root.
    download : bool
        Whether a missing folder may be downloaded.

    Returns
    -------
    pathlib.Path
        The dataset folder.

    Raises
    ------
    InputError
        When the folder is missing and cannot be fetched, or the fetched content does not
        match its pinned hash.
    """
    target = root / source.folder
    if (target / source.marker).is_dir():
        return target
    if not download:
        raise InputError(_missing_message(source, target, "download=False"))
    fetch(source, root)
    return target


def fetch(source: Source, root: Path) -> None:
    """Download, unpack, verify and atomically install ``source`` under ``root``.

    Raises
    ------
    InputError
        When no URL can be read, an archive or content hash does not match, or the archive
        is not in the expected format. Nothing is written under ``root/<folder>`` then.
    """
    target = root / source.folder
    root.mkdir(parents=True, exist_ok=True)
    prefix = "." + source.folder.replace("/", "-") + ".partial-"
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        archive = staging / f"archive.{source.archive}"
        obtain = _apt_download if source.apt else _download_first
        url, archive_sha256 = obtain(source, archive, target)
        if source.archive_sha256 is not None and archive_sha256 != source.archive_sha256:
            raise InputError(
                f"archive {url} has sha256 {archive_sha256}, expected "
                f"{source.archive_sha256}; nothing was written to {target}"
            )
        content = staging / "content"
        unpack = _unpack_deb if source.archive == "deb" else _unpack_zip
        kept = unpack(archive, source, content, url)
        got = content_sha256(content, kept)
        if got != source.content_sha256:
            raise InputError(
                f"content of {source.folder} fetched from {url} does not match the pinned "
                f"sha256: expected {source.content_sha256}, got {got} over {len(kept)} files; "
                f"nothing was written to {target}"
            )
        _install(content, target)
        logger.info("installed %d files of %s into %s", len(kept), source.folder, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _missing_message(source: Source, target: Path, why: str) -> str:
    return (
        f"{target / source.marker} is missing ({why}); fill {target} with {source.description}, "
        f"from {source.origin}"
    )


def _download_first(source: Source, dest: Path, target: Path) -> tuple[str, str]:
    errors = []
    for url in source.urls:
        try:
            logger.info("downloading %s", url)
            return url, _download(url, dest)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"{url}: {exc}")
    raise InputError(_missing_message(source, target, "download failed: " + "; ".join(errors)))


def _apt_download(source: Source, dest: Path, target: Path) -> tuple[str, str]:
    """``apt-get download`` the pinned package into ``dest``'s folder; its origin and sha256."""
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise InputError(_missing_message(
            source, target, "apt-get, which downloads it, is not available here; or point "
            "MMFUSE_DATA (or root=) at a folder holding it"))
    workdir = dest.parent / "apt"
    workdir.mkdir()
    logger.info("apt-get download %s", source.apt)
    try:
        done = subprocess.run([apt_get, "download", source.apt], cwd=workdir,
                              capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(_missing_message(source, target, f"apt-get failed: {exc}")) from None
    debs = sorted(workdir.glob("*.deb"))
    if done.returncode != 0 or len(debs) != 1:
        lines = [line for line in (done.stderr or "").splitlines() if line.startswith("E:")]
        why = lines[-1] if lines else f"exit status {done.returncode}, {len(debs)} .deb file(s)"
        raise InputError(_missing_message(source, target, f"apt-get download failed: {why}"))
    os.replace(debs[0], dest)
    return source.origin, _file_sha256(dest)


def _download(url: str, dest: Path) -> str:
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        while chunk := response.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _unpack_zip(archive: Path, source: Source, dest: Path, url: str) -> list[str]:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = {}
            for info in zf.infolist():
                is_link = stat.S_ISLNK(info.external_attr >> 16)
                rel = None if info.is_dir() or is_link else source.relocate(info.filename)
                if rel is not None:
                    members[_safe_relpath(rel, url)] = info
            kept = sorted(source.keep(sorted(members)))
            for rel in kept:
                with zf.open(members[rel]) as src:
                    _write(src, dest / rel)
    except zipfile.BadZipFile as exc:
        raise InputError(f"{url} is not a valid zip archive: {exc}") from None
    return kept


def _unpack_deb(archive: Path, source: Source, dest: Path, url: str) -> list[str]:
    data_tar = archive.with_name("data.tar")
    _extract_ar_member(archive, "data.tar", data_tar, url)
    try:
        with tarfile.open(data_tar, "r:*") as tar:
            members = {}
            for member in tar.getmembers():
                rel = source.relocate(member.name) if member.isfile() or member.islnk() else None
                if rel is not None:
                    members[_safe_relpath(rel, url)] = member
            kept = set(source.keep(sorted(members)))
            # Archive order keeps the decompression stream going forward.
            for rel, member in members.items():
                if rel in kept:
                    src = tar.extractfile(member)
                    if src is None:
                        raise InputError(f"{url}: cannot read {member.name} from data.tar")
                    with src:
                        _write(src, dest / rel)
    except tarfile.TarError as exc:
        raise InputError(f"{url}: cannot read its data.tar ({exc})") from None
    return sorted(kept)


def _extract_ar_member(archive: Path, prefix: str, dest: Path, url: str) -> None:
    """Copy the first member of the ``ar`` archive whose name starts with ``prefix``."""
    with open(archive, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise InputError(f"{url} is not a Debian package (no ar header)")
        while header := f.read(60):
            if len(header) < 60 or header[58:60] != b"`\n":
                raise InputError(f"{url} has a damaged ar member header")
            name = header[:16].decode("ascii", "replace").strip().rstrip("/")
            size = int(header[48:58].decode("ascii").strip())
            if name.startswith(prefix):
                with open(dest, "wb") as out:
                    _copy_exact(f, out, size)
                return
            f.seek(size + size % 2, os.SEEK_CUR)
    raise InputError(f"{url} has no {prefix}* member")


def _copy_exact(src, dst, size: int) -> None:
    while size:
        chunk = src.read(min(size, _CHUNK))
        if not chunk:
            raise InputError("archive member is truncated")
        dst.write(chunk)
        size -= len(chunk)


def _safe_relpath(rel: str, url: str) -> str:
    parts = rel.split("/")
    if rel.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise InputError(f"{url} contains an unsafe path {rel!r}")
    return rel


def _write(src, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        shutil.copyfileobj(src, out, _CHUNK)


def _install(content: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.replace(content, target)
        return
    # The folder exists without its data (e.g. only ATTRIBUTION.md): move entries in one by one.
    for entry in sorted(content.iterdir()):
        if not (target / entry.name).exists():
            os.replace(entry, target / entry.name)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise InputError(f"{path} cannot be read ({exc.strerror})") from None
    return digest.hexdigest()


def _sha256sum_line(hexdigest: str, rel: str) -> str:
    # sha256sum escapes names with a backslash or newline and marks the line with "\".
    if "\\" in rel or "\n" in rel:
        return "\\" + hexdigest + "  " + rel.replace("\\", "\\\\").replace("\n", "\\n") + "\n"
    return f"{hexdigest}  {rel}\n"
