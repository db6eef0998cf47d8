"""A feature store: the features of a whole manifest, extracted once, as a folder of Parquet.

::

    out/
      _mmfuse_features.json      header: encoders + fingerprints, manifest hash, row count,
                                 failed items (row, modality, cause), complete or not
      part-000000.parquet        rows [0, S)        one shard per task, written by the
      part-000001.parquet        rows [S, 2S)       worker that computed it (temp + rename)
      ...

Each shard holds ``mmfuse_row`` (the manifest row), every non-modality column of the
manifest (label, group, ids), one ``float32`` fixed-size list column per encoded modality
(NaN vectors where the item is absent or failed) and a ``<modality>_present`` flag.
``pandas.read_parquet(out)`` reads the whole store (files starting with ``_`` or ``.`` are
not data).

Shard ``i`` always covers manifest rows ``[i*S, (i+1)*S)`` and is computed by the same
function wherever it runs (:func:`extract_store` in this process, on a ``LocalCluster`` or
on a remote Dask scheduler), so a store is bit-for-bit the same however it was made. An
interrupted run, started again with the same arguments, computes only the shards that are
missing; a retried task rewrites the same shard under the same name, so no row is ever
duplicated, and a shard is never visible half-written.

Privacy by default: the store keeps no modality column (no paths, no text); failed items
are listed by row, modality and cause with the item's own value blanked out. File paths of
failed items are recorded only with ``record_paths=True``.

Read a store with :func:`load`; :class:`~mmfuse.MultimodalClassifier` fits on
``store.views``.
"""

from .store import (FORMAT, HEADER, PATH_MODALITIES, ROW, SHARD_NAME, VERSION, FeatureStore,
                    attach_encoders, check_encoders, load, read_header)
from .write import ExtractResult, extract_store

__all__ = ["FORMAT", "HEADER", "PATH_MODALITIES", "ROW", "SHARD_NAME", "VERSION", "ExtractResult",
           "FeatureStore", "attach_encoders", "check_encoders", "extract_store", "load",
           "read_header"]
