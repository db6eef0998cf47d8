"""The feature cache's SQLite store (:class:`FeatureCache`), where it lives, a
cross-process file lock, and what ``mmfuse cache info|clear`` calls. The design notes
are in :mod:`mmfuse.cache`."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__package__)  # "mmfuse.cache", as before the split

#: Bump when the table layout or the meaning of a stored row changes.
SCHEMA_VERSION = 1
#: ``PRAGMA application_id`` marking a database as an mmfuse feature cache ("mmfc").
APPLICATION_ID = 0x6D6D6663
DB_NAME = "features.sqlite"
MODELS_DIR = "models"

_CORRUPT_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


# -- locations -------------------------------------------------------------------------------


def cache_dir() -> Path:
    """The cache root: ``$MMFUSE_CACHE``, else the user cache directory for mmfuse."""
    env = os.environ.get("MMFUSE_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mmfuse", appauthor=False))


def models_dir(root: str | os.PathLike | None = None) -> Path:
    """Where exported ONNX models are kept (created on demand)."""
    return Path(root) / MODELS_DIR if root is not None else cache_dir() / MODELS_DIR


# -- the store -------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS features (
    encoder TEXT NOT NULL,
    content TEXT NOT NULL,
    dim INTEGER NOT NULL,
    crc INTEGER NOT NULL,
    vector BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (encoder, content)
);
"""


class CacheCorrupt(Exception):
    """Internal: the database file is damaged or of another version."""


class FeatureCache:
    """A feature store in ``<root>/features.sqlite`` (see the module docstring for why).

    Thread-safe (one SQLite connection per thread) and process-safe (WAL, busy timeout).
    Pickles as its location only, so it can be shipped to workers.

    Parameters
    ----------
    root : str or path-like, optional
        Cache folder; default :func:`cache_dir` (``$MMFUSE_CACHE`` or the user cache dir).
    timeout : float, default=60
        Seconds a writer waits for another process's transaction before giving up.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> cache = FeatureCache(tempfile.mkdtemp())
    >>> cache.put_many("enc-1", ["k1"], np.ones((1, 3), np.float32))
    1
    >>> cache.get_many("enc-1", ["k1", "k2"], dim=3)["k1"]
    array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, root: str | os.PathLike | None = None, *, timeout: float = 60.0):
        self.root = Path(root) if root is not None else cache_dir()
        self.timeout = timeout
        self._local = threading.local()
        self._generation = 0  # bumped on rebuild so every thread reopens
        self._rebuild_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.disabled_reason: str | None = None
        #: Features that could not be written (the run goes on; they are recomputed next
        #: time). Reported in the run's JSON (``cache.features_not_cached``).
        self.not_cached = 0

    @property
    def path(self) -> Path:
        return self.root / DB_NAME

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], timeout=state["timeout"])

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r})"

    # -- connections ---------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.generation == self._generation:
            return conn
        if conn is not None:
            conn.close()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._open_locked()
        except CacheCorrupt as exc:
            self._rebuild(str(exc))
            conn = self._open_locked()
        local.conn, local.generation = conn, self._generation
        return conn

    def _open_locked(self) -> sqlite3.Connection:
        """Open under the cache's file lock: creating the database, its schema and the
        switch to WAL are serialised across processes (two processes creating a new
        cache at once made SQLite answer "database is locked" without waiting)."""
        with FileLock(self.root / (DB_NAME + ".lock")):
            return self._open_checked()

    def _open_checked(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = %d" % int(self.timeout * 1000))
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables and app_id == 0:
                self._initialise(conn)
            elif app_id != APPLICATION_ID or version != SCHEMA_VERSION:
                raise CacheCorrupt(
                    f"{self.path} is not an mmfuse feature cache of schema version "
                    f"{SCHEMA_VERSION} (application_id={app_id:#x}, user_version={version})")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if _is_corrupt(exc):
                raise CacheCorrupt(f"{self.path} is damaged: {exc}") from exc
            raise
        except CacheCorrupt:
            conn.close()
            raise
        return conn

    def _initialise(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have initialised it while we waited for the lock.
            if conn.execute("PRAGMA application_id").fetchone()[0] == 0:
                for statement in _SCHEMA.strip().split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('created', ?)",
                             (repr(time.time()),))
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _rebuild(self, reason: str) -> None:
        """Set a damaged / foreign database aside and start an empty one."""
        with self._rebuild_lock, FileLock(self.root / (DB_NAME + ".lock")):
            # Someone (another thread or process) may have rebuilt it already.
            try:
                self._open_checked().close()
                self._generation += 1
                return
            except CacheCorrupt:
                pass
            log.warning("feature cache rebuilt: %s", reason)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for suffix in ("", "-wal", "-shm"):
                old = Path(str(self.path) + suffix)
                if old.exists():
                    if suffix == "":
                        os.replace(old, self.root / f"{DB_NAME}.bad-{stamp}-{os.getpid()}")
                    else:
                        old.unlink()
            self._generation += 1

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- reads and writes ----------------------------------------------------------------
    def _guarded(self, operation: str, func: Any, default: Any) -> Any:
        """Run ``func(conn)``; rebuild on damage, wait and retry while another process holds
        the database (up to ``timeout`` seconds), degrade to no-cache on other failures."""
        if self.disabled_reason is not None:
            return default
        rebuilt = False
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                return func(self._connect())
            except sqlite3.DatabaseError as exc:
                if _is_corrupt(exc) and not rebuilt:
                    rebuilt = True
                    self._rebuild(f"{self.path} is damaged ({exc}) during {operation}")
                    continue
                if _is_busy(exc) and time.monotonic() < deadline:
                    # SQLite gives up without waiting in a few cases (a lock upgrade that
                    # could deadlock, WAL recovery): wait and try again, as a writer should.
                    self.close()
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)
                    continue
                self._disable(f"{operation} failed: {exc}")
                return default
            except OSError as exc:
                self._disable(f"{operation} failed: {exc}")
                return default

    def _disable(self, reason: str) -> None:
        if self.disabled_reason is None:  # said once per run
            log.warning("feature cache at %s disabled for this run: %s", self.root, reason)
        self.disabled_reason = reason

    def get_many(self, encoder: str, keys: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        """The cached vectors among ``keys``; damaged or mismatched rows count as misses."""
        keys = [k for k in keys if k is not None]
        if not keys:
            return {}

        def read(conn: sqlite3.Connection) -> dict[str, np.ndarray]:
            found: dict[str, np.ndarray] = {}
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT content, dim, crc, vector FROM features "
                    f"WHERE encoder = ? AND content IN ({marks})", (encoder, *chunk))
                for content, row_dim, crc, blob in rows:
                    vector = _decode_row(row_dim, crc, blob, dim)
                    if vector is not None:
                        found[content] = vector
            return found

        return self._guarded("read", read, {})

    def get(self, encoder: str, key: str | None, dim: int) -> np.ndarray | None:
        """One cached vector, or None."""
        if key is None:
            return None

        def read(conn: sqlite3.Connection) -> np.ndarray | None:
            row = conn.execute(
                "SELECT dim, crc, vector FROM features WHERE encoder = ? AND content = ?",
                (encoder, key)).fetchone()
            return None if row is None else _decode_row(*row, dim)

        return self._guarded("read", read, None)

    def put_many(self, encoder: str, keys: Sequence[str | None], vectors: np.ndarray) -> int:
        """Store rows (one transaction: all or nothing); returns how many were written."""
        vectors = np.asarray(vectors, dtype=np.float32)
        now = time.time()
        rows = []
        for key, vector in zip(keys, vectors):
            if key is None or not np.all(np.isfinite(vector)):
                continue
            blob = np.ascontiguousarray(vector, dtype="<f4").tobytes()
            rows.append((encoder, key, vector.shape[0], zlib.crc32(blob), blob, now))
        if not rows:
            return 0

        def write(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return len(rows)

        written = self._guarded("write", write, 0)
        if written < len(rows):
            with self._count_lock:
                self.not_cached += len(rows) - written
        return written

    # -- housekeeping --------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Location, size on disk, and entries per encoder fingerprint."""
        info: dict[str, Any] = {"path": str(self.path), "exists": self.path.exists(),
                                "schema_version": SCHEMA_VERSION, "entries": 0,
                                "bytes": _size_on_disk(self.path), "encoders": {}}
        if not info["exists"]:
            return info

        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            rows = conn.execute(
                "SELECT encoder, COUNT(*), MAX(dim), SUM(LENGTH(vector)) FROM features "
                "GROUP BY encoder ORDER BY encoder").fetchall()
            return {enc: {"entries": n, "dim": d, "bytes": b} for enc, n, d, b in rows}

        info["encoders"] = self._guarded("info", read, {})
        info["entries"] = sum(e["entries"] for e in info["encoders"].values())
        info["bytes"] = _size_on_disk(self.path)
        return info

    def clear(self, encoder: str | None = None) -> int:
        """Delete every entry, or those of one encoder (a fingerprint, or a name: all its
        fingerprints). Returns the number of entries removed."""
        if not self.path.exists():
            return 0

        def delete(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if encoder is None:
                    cursor = conn.execute("DELETE FROM features")
                else:
                    cursor = conn.execute(
                        "DELETE FROM features WHERE encoder = ? OR encoder LIKE ? ESCAPE '\\'",
                        (encoder, _like_prefix(encoder) + "-%"))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return cursor.rowcount

        removed = self._guarded("clear", delete, 0)
        if encoder is None:
            self._guarded("vacuum", lambda conn: conn.execute("VACUUM"), None)
        return removed


def _decode_row(row_dim: int, crc: int, blob: bytes, dim: int) -> np.ndarray | None:
    if row_dim != dim or blob is None or len(blob) != 4 * dim or zlib.crc32(blob) != crc:
        return None
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    if any(name.startswith(code) for code in _CORRUPT_CODES):
        return True
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def _is_busy(exc: sqlite3.DatabaseError) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return True
    text = str(exc).lower()
    return "database is locked" in text or "database table is locked" in text or "busy" in text


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _size_on_disk(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        candidate = Path(str(path) + suffix)
        if candidate.exists():
            total += candidate.stat().st_size
    return total


class FileLock:
    """An exclusive advisory lock on a file (POSIX flock; a no-op where unavailable)."""

    def __init__(self, path: Path):
        self.path = path
        self._handle: Any = None

    def __enter__(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a+b")
        try:
            import fcntl

            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows
            pass
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            import fcntl

            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        except ImportError:  # pragma: no cover
            pass
        self._handle.close()


# -- module-level helpers (what ``mmfuse cache info|clear`` calls) ----------------------------


def cache_info(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """What the cache holds: ``{"root", "path", "bytes", "entries", "encoders": {fingerprint:
    {"entries", "dim", "bytes"}}, "models": [{"name", "bytes"}], "total_bytes"}``."""
    cache = FeatureCache(root)
    info = {"root": str(cache.root), **cache.info()} if cache.root.exists() else {
        "root": str(cache.root), "path": str(cache.path), "exists": False,
        "schema_version": SCHEMA_VERSION, "entries": 0, "bytes": 0, "encoders": {}}
    cache.close()
    models = models_dir(cache.root)
    info["models"] = sorted(
        ({"name": p.name, "bytes": p.stat().st_size} for p in models.glob("*.onnx")),
        key=lambda m: m["name"]) if models.exists() else []
    info["total_bytes"] = info["bytes"] + sum(m["bytes"] for m in info["models"])
    return info


def clear_cache(root: str | os.PathLike | None = None, *, encoder: str | None = None,
                models: bool = False) -> dict[str, int]:
    """Empty the feature cache (or one encoder's entries); ``models=True`` also deletes the
    exported ONNX models (they are rebuilt on next use). Returns what was removed."""
    cache = FeatureCache(root)
    removed = {"entries": 0, "models": 0}
    if cache.root.exists():
        removed["entries"] = cache.clear(encoder)
        cache.close()
        for stale in cache.root.glob(DB_NAME + ".bad-*"):
            stale.unlink(missing_ok=True)
    if models:
        folder = models_dir(cache.root)
        for model in folder.glob("*.onnx") if folder.exists() else ():
            model.unlink(missing_ok=True)
            model.with_suffix(".lock").unlink(missing_ok=True)
            removed["models"] += 1
    return removed
