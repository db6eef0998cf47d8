"""Accuracy with pretrained encoders against classical ones (issue 4).

For ``sign-av`` (image + audio, leave-one-speaker-out), ``tuxpaint`` (image + text +
audio, repeated stratified 5-fold), ``icons-family`` and ``icons-theme`` (image + text,
grouped by icon family / leave one theme out), cross-validates every single modality, every fused
strategy and the seed baseline twice: once with classical encoders (hog / tfidf / mfcc),
once with pretrained ones (efficientnet-lite0 / minilm / speech-embedding). Features are
extracted once per encoder by ``mmfuse.evaluate.FeatureTable`` (which streams them through
``mmfuse.extract.extract_features``, feature cache on), then ``evaluate`` runs the folds.

Writes ``benchmarks/results/pretrained_accuracy.md`` (+ ``.json``) and its section of
``benchmarks/RESULTS.md``. Usage::

    PYTHONPATH=src MMFUSE_DATA=../shared/data python benchmarks/bench_pretrained_accuracy.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("MMFUSE_DATA", str(REPO.parent / "shared" / "data"))

from _common import write_section  # noqa: E402
from mmfuse._io import atomic_write_text  # noqa: E402
from mmfuse.data.datasets import dataset_info, load_dataset  # noqa: E402
from mmfuse.evaluate import FeatureTable, evaluate  # noqa: E402

RESULTS_MD = HERE / "results" / "pretrained_accuracy.md"
RESULTS_JSON = HERE / "results" / "pretrained_accuracy.json"

ENCODER_SETS = {
    "classical": {"image": "hog", "text": "tfidf", "audio": "mfcc"},
    "pretrained": {"image": "efficientnet-lite0", "text": "minilm", "audio": "speech-embedding"},
}
DATASETS = ("sign-av", "tuxpaint", "icons-family", "icons-theme")


def run(dataset: str, kind: str, strategies: list[str]) -> dict:
    X, y, groups = load_dataset(dataset)
    cv = dataset_info(dataset)["cv"]
    encoders = {col: name for col, name in ENCODER_SETS[kind].items() if col in X.columns}
    start = time.perf_counter()
    # Stateless encoders stream through mmfuse.extract.extract_features, with the cache on.
    table = FeatureTable(X, encoders, on_error="skip", cache=True)
    feature_s = time.perf_counter() - start
    result = evaluate(X, y, encoders=encoders, groups=groups, cv=cv, features=table,
                      strategies=strategies, on_error="skip")
    rows = [{"name": r.name, "kind": r.kind, "accuracy": r.accuracy, "ci95": r.accuracy_ci95,
             "seconds": r.seconds} for r in result.rows]
    fused = [r for r in rows if r["kind"] == "fused"]
    best = max(fused, key=lambda r: r["accuracy"]) if fused else None
    print(f"  {dataset:<9} {kind:<10} best fused {best['name']} {best['accuracy']:.3f}  "
          f"({feature_s:.0f} s features, {time.perf_counter() - start:.0f} s total)", flush=True)
    return {"dataset": dataset, "kind": kind, "encoders": encoders, "cv": cv, "n": len(y),
            "strategies": list(strategies),
            "rows": rows, "best_fused": best, "errors": len(result.errors),
            "feature_seconds": feature_s, "total_seconds": time.perf_counter() - start}


def render(results: list[dict]) -> str:
    lines = [
        "## Accuracy: pretrained against classical encoders",
        "",
        f"Measured by `benchmarks/bench_pretrained_accuracy.py` on {time.strftime('%Y-%m-%d')}. "
        "Mean accuracy over the outer folds with its 95% CI; every fused strategy learns its "
        "weights inside the training folds only. Strategies run: "
        + ", ".join(sorted({s for r in results for s in r["strategies"]})) + ".",
        "",
    ]
    for dataset in DATASETS:
        runs = {r["kind"]: r for r in results if r["dataset"] == dataset}
        if not runs:
            continue
        first = next(iter(runs.values()))
        cv = first["cv"]
        cv_text = ", ".join(f"{k}={v}" for k, v in cv.items())
        lines += [f"### {dataset} ({first['n']} samples; folds: {cv_text})", "",
                  "| configuration | " + " | ".join(
                      f"{kind}: {', '.join(f'{m}={e}' for m, e in runs[kind]['encoders'].items())}"
                      for kind in runs) + " |",
                  "|---|" + "---:|" * len(runs)]
        names = [row["name"] for row in first["rows"]]
        for name in names:
            cells = []
            for kind in runs:
                row = next((r for r in runs[kind]["rows"] if r["name"] == name), None)
                cells.append("" if row is None else
                             f"{row['accuracy']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}]")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        best = " · ".join(f"{kind}: **{runs[kind]['best_fused']['accuracy']:.3f}** "
                          f"({runs[kind]['best_fused']['name']})" for kind in runs)
        lines += ["", f"Best fused — {best}", ""]
    return "\n".join(lines)


def write(results: list[dict]) -> None:
    """Write this benchmark's JSON and section; RESULTS.md is rebuilt from the sections."""
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS_JSON, json.dumps(results, indent=1))
    write_section("pretrained_accuracy", render(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--kinds", nargs="*", default=list(ENCODER_SETS), choices=ENCODER_SETS)
    parser.add_argument("--strategies", default="early,weighted,late,stacking",
                        help="comma-separated fusion strategies (default: every one that "
                             "evaluate() runs by default)")
    args = parser.parse_args()
    strategies = [s for s in args.strategies.split(",") if s]
    # Runs already measured with the same strategies are kept: the script can resume.
    done = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else []
    results = [r for r in done if r.get("strategies") == strategies]
    for dataset in args.datasets:
        for kind in args.kinds:
            if any(r["dataset"] == dataset and r["kind"] == kind for r in results):
                continue
            results.append(run(dataset, kind, strategies))
            RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(RESULTS_JSON, json.dumps(results, indent=1))  # resumable
    write(results)
    print(f"wrote {RESULTS_MD} and rebuilt {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
