"""Does racing change the encoder choice? (issue 16, ``RACE_MARGIN``)

On every outer training fold of the bundled datasets (each dataset's default CV, one
repetition of tuxpaint's), every column's candidates are scored on every inner fold
(``race_margin=None``); racing is then replayed on those per-fold accuracies: after
``RACE_MIN_FOLDS`` folds, a candidate more than the margin below the runner-up stops. A
choice "changes" when the replay's pair of the two best (the ``a+b`` candidate of
``"auto"``) or its pick differs from the full run's. Also reported: the largest gap,
after two or more folds, between the runner-up and a candidate that ends in the top two
(the margin racing must exceed), and the share of single-candidate fits skipped.

Writes ``benchmarks/results/encoder_race.md`` (+ ``.json``)::

    PYTHONPATH=src MMFUSE_DATA=../shared/data python benchmarks/bench_encoder_race.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
os.environ.setdefault("MMFUSE_DATA", str(HERE.parent.parent / "shared" / "data"))

from _common import machine, stamp, write_section  # noqa: E402
from bench_encoders_auto import DATASETS, _cv  # noqa: E402
from mmfuse._io import atomic_write_text  # noqa: E402
from mmfuse.data.datasets import load_dataset  # noqa: E402
from mmfuse.encoder_choice import RACE_MARGIN, RACE_MIN_FOLDS, select_encoder  # noqa: E402
from mmfuse.evaluate import FeatureTable, make_splits  # noqa: E402
from mmfuse.fusion.experts import ExpertsCache  # noqa: E402

MARGINS = (0.02, 0.03, 0.05, 0.10)


def collect(dataset: str) -> list[dict]:
    from threadpoolctl import threadpool_limits

    X, y, groups = load_dataset(dataset)
    table = FeatureTable(X, "auto", on_error="skip", cache=True)
    y = np.unique(y, return_inverse=True)[1]
    splits, _ = make_splits(y, groups, _cv(dataset), 0)
    out = []
    for train, _ in splits:
        g = None if groups is None else np.asarray(groups)[train]
        fold = {}
        cache = ExpertsCache()
        with threadpool_limits(1, "blas"):
            for col, (cands, parts) in table.candidates.items():
                sub = {n: p.subset(train) for n, p in parts.items()}
                s = select_encoder(sub, cands, y[train], g, cv=5, column=col,
                                   race_margin=None, experts_cache=cache)
                fold[col] = {"chosen": s.chosen, "names": list(cands.names),
                             "acc": s.fold_accuracy}
        out.append(fold)
    return out


def replay(col: dict, margin: float) -> tuple[bool, int, int]:
    """(choice changed, fits skipped, fits) of racing with ``margin`` on one column."""
    acc, names = col["acc"], col["names"]
    k = len(acc[names[0]])
    alive, scored = list(names), dict.fromkeys(names, 0)
    for j in range(k):
        for n in alive:
            scored[n] += 1
        if RACE_MIN_FOLDS <= j + 1 < k:
            means = {n: np.mean(acc[n][: j + 1]) for n in alive}
            ref = sorted(means.values())[-2] if len(means) > 1 else -np.inf
            alive = [n for n in alive if means[n] >= ref - margin - 1e-12]
    top = set(sorted(alive, key=lambda n: -np.mean(acc[n]))[:2])
    true_top = set(sorted(names, key=lambda n: -np.mean(acc[n]))[:2])
    pick = max(alive + [n for n in acc if n not in names], key=lambda n: np.mean(acc[n]))
    changed = top != true_top or pick != col["chosen"]
    return changed, sum(k - s for s in scored.values()), k * len(names)


def needed_gap(col: dict) -> float:
    acc, names = col["acc"], col["names"]
    k = len(acc[names[0]])
    top2 = sorted(names, key=lambda n: -np.mean(acc[n]))[:2]
    gap = 0.0
    for j in range(RACE_MIN_FOLDS, k):
        means = {n: np.mean(acc[n][:j]) for n in names}
        ref = sorted(means.values())[-2]
        gap = max(gap, max(ref - means[t] for t in top2))
    return float(gap)


def main() -> None:
    data = {d: collect(d) for d in DATASETS}
    cols = [c for folds in data.values() for fold in folds for c in fold.values()]
    rows = []
    for m in MARGINS:
        res = [replay(c, m) for c in cols]
        rows.append({"margin": m, "changed": sum(r[0] for r in res),
                     "skipped": sum(r[1] for r in res), "fits": sum(r[2] for r in res)})
    gap = max(needed_gap(c) for c in cols)
    doc = {"choices": len(cols), "largest_gap": gap, "rows": rows, "data": data}
    atomic_write_text(HERE / "results" / "encoder_race.json", json.dumps(doc, indent=1))
    lines = ["# Racing in the encoder choice", "",
             f"`benchmarks/bench_encoder_race.py`, {stamp()}; {machine()}. {len(cols)} column "
             f"choices (every outer training fold of {', '.join(DATASETS)}, each dataset's "
             f"default CV), every candidate scored on all 5 inner folds, racing replayed on "
             f"those accuracies (stop a candidate more than the margin below the runner-up "
             f"after {RACE_MIN_FOLDS}+ folds). Largest gap between the runner-up and an "
             f"eventual top-two candidate after {RACE_MIN_FOLDS}+ folds: "
             f"**{gap * 100:.1f} points**. The library's margin: "
             f"`RACE_MARGIN = {RACE_MARGIN}`.", "",
             "| margin | choices changed (pick or pair) | single-candidate fits skipped |",
             "|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['margin']:.2f} | {r['changed']} / {len(cols)} | "
                     f"{r['skipped']} / {r['fits']} ({r['skipped'] / r['fits']:.0%}) |")
    write_section("encoder_race", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
