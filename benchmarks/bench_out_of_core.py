"""Out-of-core training and cross-validation from a feature store (issue 30).

Sub-commands::

    python benchmarks/bench_out_of_core.py make-store --rows N --out DIR [--seed S]
    python benchmarks/bench_out_of_core.py measure --work DIR [--sizes 100000,1000000]
                                                   [--compare-rows 20000]

``make-store`` writes a synthetic store through the project's own shard writer
(:func:`mmfuse.features.arrays.write_array_store`): 20 classes, about 2,000 groups, two
modalities ``image`` (1,280-d) and ``text`` (384-d), class-dependent Gaussian blobs with a
per-group shift (1% of the rows lack text). ``mmfuse run --features DIR --label label
--group group`` reads it.

``measure`` times ``mmfuse run --features STORE --out-of-core`` in a subprocess for each
size (fit time, peak RSS of the child via ``resource.getrusage(RUSAGE_CHILDREN)``,
accuracy), compares the streamed and the in-memory path on a store that fits in memory
(same folds, paired per fold), and writes ``benchmarks/results/out_of_core.{md,json}`` and
the ``out_of_core`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import code_version, machine, stamp, write_section  # noqa: E402

RESULTS_JSON = HERE / "results" / "out_of_core.json"
RESULTS_MD = HERE / "results" / "out_of_core.md"
N_CLASSES, N_GROUPS, DIMS = 20, 2000, {"image": 1280, "text": 384}
SEPARATION = {"image": 0.08, "text": 0.1}  # class-mean scale per column
GROUP_SHIFT = 0.05
ROWS_PER_SHARD = 8192
MISSING_TEXT = 0.01


def synthetic_shards(n_rows: int, seed: int, rows_per_shard: int = ROWS_PER_SHARD):
    """``(frame, views)`` per shard: labels ``class-XX``, integer groups, Gaussian blobs."""
    import pandas as pd

    base = np.random.default_rng(seed)
    means = {m: (base.standard_normal((N_CLASSES, d)) * SEPARATION[m]).astype(np.float32)
             for m, d in DIMS.items()}
    shifts = {m: (base.standard_normal((N_GROUPS, d)) * GROUP_SHIFT).astype(np.float32)
              for m, d in DIMS.items()}
    for index, start in enumerate(range(0, n_rows, rows_per_shard)):
        n = min(rows_per_shard, n_rows - start)
        rng = np.random.default_rng([seed, index])
        y = rng.integers(0, N_CLASSES, n)
        g = rng.integers(0, N_GROUPS, n)
        views = {}
        for m, d in DIMS.items():
            x = rng.standard_normal((n, d), dtype=np.float32)
            x += means[m][y]
            x += shifts[m][g]
            views[m] = x
        views["text"][rng.random(n) < MISSING_TEXT] = np.nan
        frame = pd.DataFrame({"label": [f"class-{c:02d}" for c in y], "group": g.astype(np.int64)})
        yield frame, views


def make_store(rows: int, out: Path, seed: int = 0) -> dict:
    from mmfuse.features.arrays import write_array_store

    started = time.perf_counter()
    header = write_array_store(out, synthetic_shards(rows, seed),
                               encoders={m: f"synthetic-{m}" for m in DIMS}, dims=DIMS,
                               n_rows=rows, rows_per_shard=ROWS_PER_SHARD)
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in out.glob("part-*.parquet"))
    return {"rows": rows, "shards": header["n_shards"], "bytes": size, "seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make-store", help="write a synthetic feature store")
    mk.add_argument("--rows", type=int, required=True)
    mk.add_argument("--out", type=Path, required=True)
    mk.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "make-store":
        info = make_store(args.rows, args.out, args.seed)
        print(json.dumps(info))


if __name__ == "__main__":
    main()
