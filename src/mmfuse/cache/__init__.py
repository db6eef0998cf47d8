"""On-disk feature cache: one SQLite database keyed by encoder fingerprint + content hash.

Why SQLite rather than memory-mapped shards with an index
---------------------------------------------------------
The cache has to survive a ``kill -9`` mid-run, be shared by two processes writing at the
same time, and answer "do you have row X?" for single items as they stream past. SQLite
gives all three out of the box, in the standard library:

* **crash safety**: every batch is written in one transaction (write-ahead log). A killed
  process leaves either the whole batch or none of it; a rerun finds what was committed and
  computes the rest. Shards would need our own journal to get that.
* **two processes at once**: WAL mode lets readers run beside a writer; writers queue on
  SQLite's lock (``busy_timeout``) instead of corrupting each other's index files.
* **point lookups**: the primary key is a B-tree, so a lookup costs tens of microseconds
  whatever the cache size, and memory stays flat: nothing is loaded up front.

Memory-mapped shards would read faster in bulk, but the features of one dataset are a few
MB to a few hundred MB, read once per run: lookup cost is not the bottleneck, the model is.

What is stored
--------------
``features(encoder, content) -> (dim, crc32, float32 blob)``. ``encoder`` is the encoder's
``fingerprint`` (name + weights hash + config), ``content`` the hash of the input's *bytes*
(file content, text, array values), never its path: a renamed file hits, an edited one
misses. Every blob carries its dimension and CRC-32, checked on read, so a damaged row is
a miss, never a feature vector.

Damage and versions
-------------------
A file that is not a database, is truncated or malformed (SQLite reports
``SQLITE_CORRUPT`` / ``SQLITE_NOTADB``), or was written with another schema version, is
set aside and rebuilt empty; the run goes on and recomputes what it needs. Any other
failure of the cache (read-only folder, full disk) is logged and the run goes on without
caching: the cache may make extraction faster, never make it fail.

Location: ``$MMFUSE_CACHE``, else the user cache directory (``platformdirs``). Exported
ONNX models live beside the database, in ``models/``.

The parts: :mod:`.keys` (content hashes), :mod:`.store` (the SQLite store, its location,
the file lock, ``cache_info``/``clear_cache``).
"""

from .keys import content_key, hash_file
from .store import (APPLICATION_ID, DB_NAME, MODELS_DIR, SCHEMA_VERSION, CacheCorrupt,
                    FeatureCache, FileLock, cache_dir, cache_info, clear_cache, models_dir)

__all__ = ["APPLICATION_ID", "DB_NAME", "MODELS_DIR", "SCHEMA_VERSION", "CacheCorrupt",
           "FeatureCache", "FileLock", "cache_dir", "cache_info", "clear_cache", "content_key",
           "hash_file", "models_dir"]
