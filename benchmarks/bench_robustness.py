"""Learned fusion heads, ``auto``, and robustness to a missing modality (issue 5).

Two measurements, written to ``benchmarks/results/robustness.md`` (+ ``.json``) and the
matching section of ``benchmarks/RESULTS.md``:

1. **Training time** of each learned head (gmu, attention, lowrank; default parameters,
   one torch thread) on 5,000 samples x 3 modalities of seeded synthetic features with the
   classical encoders' widths (image 1764 = HOG, text 2000 ~ TF-IDF, audio 104 = MFCC).
   Median of ``--repeats`` fits.
2. **Robustness**, per bundled dataset (av-digits, sign-av, tuxpaint; classical encoders
   hog / tfidf / mfcc, and tuxpaint once more with the pretrained efficientnet-lite0 /
   minilm / speech-embedding; the dataset's own cross-validation): every single modality, the
   classical strategies (early, weighted, late, stacking), the learned heads, ``auto`` and
   the seed baseline, with 0, 10, 30 and 50% of the samples losing the *best* single
   modality at test time (:func:`mmfuse.evaluate.evaluate_robustness`; models fitted on
   complete training rows; which samples lose it is seeded and nested across levels).

Targets checked (PASS/FAIL in the output): heads train in under 60 s; with 50% of the
best modality missing, the best strategy stays above the second-best single modality on
each dataset; on tuxpaint a learned head or ``auto`` beats the best classical fusion.

Usage::

    PYTHONPATH=src MMFUSE_DATA=../shared/data python benchmarks/bench_robustness.py
    python benchmarks/bench_robustness.py tuxpaint --skip-timing   # one dataset
    python benchmarks/bench_robustness.py --train-missing           # drop at training too

Results of datasets not rerun are kept from the previous JSON, so the script can resume.
Every strategy runs with the library defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import _common  # noqa: F401  (puts src/ on the path)
import numpy as np

os.environ.setdefault("MMFUSE_DATA", str(_common.HERE.parent.parent / "shared" / "data"))

ENCODERS = {"image": "hog", "text": "tfidf", "audio": "mfcc"}
PRETRAINED = {"image": "efficientnet-lite0", "text": "minilm", "audio": "speech-embedding"}
#: run name -> (dataset, encoders): the classical encoders everywhere, plus tuxpaint with the
#: pretrained ones (the heads compared with the classical strategies on the same features)
RUNS = {"av-digits": ("av-digits", ENCODERS), "sign-av": ("sign-av", ENCODERS),
        "tuxpaint": ("tuxpaint", ENCODERS), "tuxpaint-pretrained": ("tuxpaint", PRETRAINED),
        "icons-family": ("icons-family", ENCODERS), "icons-theme": ("icons-theme", ENCODERS)}
DATASETS = list(RUNS)
CLASSICAL = ["early", "weighted", "late", "stacking"]
LEARNED = ["gmu", "attention", "lowrank"]
STRATEGIES = CLASSICAL + LEARNED + ["auto"]
LEVELS = [0.0, 0.1, 0.3, 0.5]
FUSION_PARAMS: dict = {}
TIMING_DIMS = {"audio": 104, "image": 1764, "text": 2000}
TIME_LIMIT_S = 60.0
JSON_PATH = _common.RESULTS_DIR / "robustness.json"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- 1. training time ---------------------------------------------------------------------------

def timing(repeats: int) -> dict:
    from mmfuse.fusion import create_fusion

    rng = np.random.default_rng(0)
    n, k = 5000, 10
    y = rng.integers(0, k, n)
    views = {}
    for m, d in TIMING_DIMS.items():
        centres = rng.normal(size=(k, d))
        views[m] = (0.15 * centres[y] + rng.normal(size=(n, d))).astype(np.float32)
    out = {}
    for head in LEARNED:
        walls, cpus, epochs = [], [], []
        for r in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            f = create_fusion(head, random_state=r).fit(views, y)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            epochs.append(sum(f.n_epochs_))
            log(f"timing {head} #{r}: {walls[-1]:.1f} s wall, {cpus[-1]:.1f} s cpu")
        out[head] = {"median_wall_s": statistics.median(walls), "walls_s": walls,
                     "median_cpu_s": statistics.median(cpus),
                     "median_epochs": statistics.median(epochs),
                     "n_members": int(f.architecture_["n_members"])}
    return {"n_samples": n, "dims": TIMING_DIMS, "n_classes": k, "repeats": repeats,
            "load_avg": os.getloadavg(), "heads": out, "stamp": _common.stamp(),
            "code": _common.code_version(), "machine": _common.machine()}


# -- 2. robustness ------------------------------------------------------------------------------

def robustness(run: str, train_missing: bool, strategies: list[str]) -> dict:
    from mmfuse.data.datasets import dataset_info, load_dataset
    from mmfuse.evaluate import FeatureTable
    from mmfuse.evaluate import evaluate_robustness

    start = time.perf_counter()
    name, wanted = RUNS[run]
    X, y, groups = load_dataset(name)
    cv = dataset_info(name)["cv"]
    encoders = {c: e for c, e in wanted.items() if c in X.columns}
    table = FeatureTable(X, encoders, on_error="skip")  # stateless features cached on disk
    feature_s = time.perf_counter() - start

    def progress(stage, done, total):
        log(f"{name}: {stage} {done}/{total}")

    res = evaluate_robustness(table, y, groups=groups, strategies=strategies,
                              missing_levels=LEVELS, missing_modality="best",
                              train_missing=train_missing, cv=cv, random_state=0,
                              on_error="skip", fusion_params=FUSION_PARAMS, progress=progress)
    doc = res.to_dict()
    for row in doc["rows"]:  # kept for the paired comparisons of the targets
        row["fold_accuracy"] = res.row(row["name"]).fold_accuracy
    doc.update(dataset=name, encoders=encoders, feature_seconds=feature_s,
               wall_seconds=time.perf_counter() - start, peak_rss_mib=_common.peak_rss_mib(),
               skipped=[str(e) for e in table.errors],
               load_avg=os.getloadavg(), stamp=_common.stamp(), code=_common.code_version(),
               machine=_common.machine())
    return doc


# -- targets and report ---------------------------------------------------------------------------

def _rows(doc: dict) -> dict:
    return {r["name"]: r for r in doc["rows"]}


def targets(results: dict) -> list[tuple[str, bool, str]]:
    out = []
    t = results.get("timing")
    if t:
        for head, r in t["heads"].items():
            out.append((f"train {head} on 5,000 x 3 modalities < {TIME_LIMIT_S:.0f} s",
                        r["median_wall_s"] < TIME_LIMIT_S,
                        f"median {r['median_wall_s']:.1f} s wall ({r['median_cpu_s']:.1f} s cpu)"))
    for key, doc in results.get("datasets", {}).items():
        rows = _rows(doc)
        i0, i50 = doc["levels"].index(0.0), doc["levels"].index(0.5)
        singles = sorted((r for r in doc["rows"] if r["kind"] == "single"),
                         key=lambda r: -r["accuracy"][i0])
        if len(singles) >= 2:
            second = singles[1]
            best = max((r for r in doc["rows"] if r["kind"] != "single"),
                       key=lambda r: r["accuracy"][i50])
            out.append((f"{key}: 50% of {doc['missing_modality']} missing, best strategy > "
                        f"second-best single",
                        best["accuracy"][i50] > second["accuracy"][i0],
                        f"{best['name']} {best['accuracy'][i50]:.3f} vs {second['name']} "
                        f"{second['accuracy'][i0]:.3f}"))
        if doc["dataset"] == "tuxpaint":
            for i, what in ((i0, "nothing missing"), (i50, f"50% of {doc['missing_modality']} "
                                                             f"missing")):
                classical = max((rows[s] for s in CLASSICAL if s in rows),
                                key=lambda r: r["accuracy"][i])
                learned = max((rows[s] for s in LEARNED + ["auto"] if s in rows),
                              key=lambda r: r["accuracy"][i])
                out.append(_beats(f"{key}, {what}: a learned head or auto beats the best "
                                  f"classical fusion", learned, classical, i))
    return out


def _beats(target: str, learned: dict, classical: dict, i: int) -> tuple[str, bool, str]:
    """PASS only when the paired per-fold difference is above 0 with 95% confidence: a
    higher mean inside the noise is a tie, and a tie does not beat anything."""
    from scipy import stats

    measured = (f"{learned['name']} {learned['accuracy'][i]:.4f} vs {classical['name']} "
                f"{classical['accuracy'][i]:.4f}")
    a, b = learned.get("fold_accuracy"), classical.get("fold_accuracy")
    if not a or not b:
        return target, False, measured + " (no per-fold results saved: rerun this dataset)"
    diff = np.asarray(a[i]) - np.asarray(b[i])
    mean = float(diff.mean())
    half = float(stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
    wins = int(np.sum(diff > 0)), int(np.sum(diff < 0))
    return target, mean - half > 0, (
        f"{measured}: {100 * mean:+.2f} points, paired 95% CI {100 * (mean - half):+.2f} to "
        f"{100 * (mean + half):+.2f} over {len(diff)} folds (better in {wins[0]}, worse in "
        f"{wins[1]})")


def _auto_summary(chosen: list[str]) -> str:
    """What ``auto`` chose over the outer folds: single picks, then ensemble members."""
    prefix = "ensemble("
    ensembles = [c[len(prefix):-1].split("+") for c in chosen if c.startswith(prefix)]
    singles = [c for c in chosen if not c.startswith(prefix)]
    parts = []
    if singles:
        counts = {c: singles.count(c) for c in sorted(set(singles))}
        parts.append("one candidate in " + str(len(singles)) + " (" + ", ".join(
            f"{c} x{n}" for c, n in counts.items()) + ")")
    if ensembles:
        members = sorted({m for e in ensembles for m in e},
                         key=lambda m: (-sum(m in e for e in ensembles), m))
        parts.append(f"an ensemble in {len(ensembles)}, whose members were "
                     + ", ".join(f"{m} (in {sum(m in e for e in ensembles)})" for m in members))
    return f"`auto` chose, over {len(chosen)} outer folds: " + "; ".join(parts) + "."


def _measured(doc: dict) -> str:
    """When and on which code a section was measured."""
    if "stamp" not in doc:
        return "measured by an earlier run, before sections recorded their date and code"
    return (f"measured {doc['stamp']} on code {doc.get('code', '?')}, "
            f"{doc.get('machine', 'machine not recorded')}")


def markdown(results: dict, checks) -> str:
    from _common import stamp

    lines = ["## Learned fusion, auto, and robustness to a missing modality", "",
             f"`python benchmarks/bench_robustness.py`; report written {stamp()}. Each "
             f"section says when it was measured, on which code and machine (the script "
             f"resumes: a section not rerun keeps its earlier numbers).", ""]
    t = results.get("timing")
    if t:
        load = ", ".join(f"{v:.1f}" for v in t["load_avg"])
        lines += ["### Training time of the learned heads", "",
                  f"{t['n_samples']} samples x 3 modalities (widths "
                  + ", ".join(f"{m} {d}" for m, d in t["dims"].items())
                  + f"), {t['n_classes']} classes, default parameters (an ensemble of "
                  f"{next(iter(t['heads'].values()))['n_members']} members, each early-stopped "
                  f"on its own inner fold; one torch thread); median of {t['repeats']} fits; "
                  f"load average at the end {load} (the machine is shared); "
                  f"{_measured(t)}.", "",
                  "| head | median wall s | median cpu s | epochs (all members) |",
                  "|---|---|---|---|"]
        for head, r in t["heads"].items():
            lines.append(f"| {head} | {r['median_wall_s']:.1f} | {r['median_cpu_s']:.1f} | "
                         f"{r['median_epochs']:.0f} |")
        lines.append("")
    for key, doc in results.get("datasets", {}).items():
        cv = doc["cv"]
        cv_text = f"{cv['kind']}, {cv['n_splits']} folds" + (
            f" x {cv['n_repeats']}" if "n_repeats" in cv else "")
        enc = ", ".join(f"{m}={e}" for m, e in doc["encoders"].items())
        levels = doc["levels"]
        lines += [f"### {key}", "",
                  f"{doc['n_samples']} samples, {doc['n_classes']} classes, cv: {cv_text}; "
                  f"encoders: {enc}; modality dropped: **{doc['missing_modality']}** (the best "
                  f"single modality), at test time"
                  + (" and at training time" if doc["train_missing"] else " only")
                  + f"; wall {doc['wall_seconds']:.0f} s; items skipped (modality missing for "
                  f"that row): {len(doc.get('skipped', []))}; {_measured(doc)}.", "",
                  "| configuration | kind | " + " | ".join(f"{lv:.0%} missing" for lv in levels)
                  + " | 95% CI at 50% | fit s |",
                  "|---|---|" + "---|" * len(levels) + "---|---|"]
        i50 = levels.index(0.5)
        best = {i: max(doc["rows"], key=lambda r: r["accuracy"][i])["name"]
                for i in range(len(levels))}
        for r in doc["rows"]:
            cells = [f"**{a:.3f}**" if best[i] == r["name"] else f"{a:.3f}"
                     for i, a in enumerate(r["accuracy"])]
            lo, hi = r["accuracy_ci95"][i50]
            lines.append(f"| {r['name']} | {r['kind']} | " + " | ".join(cells)
                         + f" | {lo:.3f}–{hi:.3f} | {r['seconds']:.0f} |")
        auto = _rows(doc).get("auto")
        if auto and auto.get("chosen"):
            lines += ["", _auto_summary(auto["chosen"])]
        if doc.get("notes"):
            lines += [""] + [f"- note: {n}" for n in doc["notes"]]
        lines.append("")
    lines += ["### Targets", "",
              "A \"beats\" target passes only when the paired per-fold difference is above 0 "
              "with 95% confidence (t interval over the outer folds; folds of repeated "
              "cross-validation share rows, so even this interval is optimistic). A higher "
              "mean inside the noise is reported as a FAIL.", "",
              "| target | result | measured |", "|---|---|---|"]
    lines += [f"| {t} | {'PASS' if ok else 'FAIL'} | {d} |" for t, ok, d in checks]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-missing", action="store_true",
                        help="drop the modality from the training rows too")
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help="comma-separated strategies (default: all); e.g. leave out the "
                             "slow auto for --train-missing, which refits every level")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the markdown from the saved JSON, measuring nothing")
    args = parser.parse_args(argv)
    if args.report_only:
        args.skip_timing, args.datasets = True, []
    unknown = sorted(set(args.datasets) - set(DATASETS))
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; valid: {DATASETS}")

    from mmfuse._io import atomic_write_json

    def saved() -> dict:
        # re-read before every write, so runs of different datasets in parallel processes
        # keep each other's results
        out = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {}
        out.setdefault("datasets", {})
        return out

    if not args.skip_timing:
        timed = timing(args.repeats)
        results = saved()
        results["timing"] = timed
        atomic_write_json(JSON_PATH, results)
    for name in args.datasets:
        key = name + (" (training too)" if args.train_missing else "")
        log(f"robustness: {key}")
        doc = robustness(name, args.train_missing, args.strategies.split(","))
        results = saved()
        results["datasets"][key] = doc
        atomic_write_json(JSON_PATH, results)
    results = saved()
    order = [d + s for s in ("", " (training too)") for d in DATASETS]
    results["datasets"] = {k: results["datasets"][k] for k in order if k in results["datasets"]}
    checks = targets(results)
    _common.write_section("robustness", markdown(results, checks))
    atomic_write_json(JSON_PATH, results)
    for t, ok, d in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {t}: {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
