"""Calibrated probabilities and conformal prediction sets on the bundled datasets with
grouped outer folds (issue 29).

For each dataset, on its default outer splits (grouped), with the classical encoders
(image hog, text tfidf, audio mfcc; features from the warm cache), in one evaluation:
every single modality and the default fusion (``late``), each with temperature scaling and
conformal sets (APS and LAC at coverage 0.9 and 0.8) learned in every outer training fold
on grouped inner folds (:mod:`mmfuse.uncertainty`), and each modality masked at test time
in 50% of the rows. Also:

* **calibration diagnosis** (from the main evaluation's folds): the inner out-of-fold
  ECE before and after the temperature, the former log-loss temperature, isotonic and
  vector scaling on the same rows, the best temperature for the test rows themselves (a bound), the ECE floor
  of a perfectly calibrated model on the same rows, and the ECE pooled over the folds;
* **worst-fold**: APS sets with the largest inner fold's threshold (conservative);
* **split**: split-conformal instead of the library's cross-conformal: the fused model fit
  on the first grouped inner fold's training rows only, thresholds on its held-out groups
  (temperature fitted there too), no refit: coverage and set size on the same outer folds;
* **experts**, **bagged**, **refits**: where the calibration rows come from
  (``calibrate_on``), the default fusion alone on the main part's outer folds: its final
  combination on the inner-fold experts' out-of-fold probabilities; the same on experts
  cross-fitted inside each inner training fold and averaged (as the final model averages
  its experts); clones of the whole fusion refit on the inner folds (before issue 29's
  fix). The main part uses the library's default (``auto``: ``AUTO_META`` for late);
* **auto**: ``fusion="auto"`` (classical candidates) calibrated as the strategy it chose
  (the default) and on nested refits of the whole selection (before), paired by outer
  fold, with each evaluation's CPU time;
* **timing**: a ``MultimodalClassifier(fusion="late", calibration="temperature",
  coverage=0.9)`` fit on the first outer training fold (and the same without calibration
  and coverage: what the inner folds cost at fit); ``predict`` and ``predict_set`` on its
  test rows from raw inputs, alternated, 15 times each: the ratio of the medians (wall
  clock and this process's CPU time: the machine is shared, the CPU ratio is the one to
  read); then
  the medians of its steps (features, calibrated probabilities, sets).

The same main part (coverage, set size, ECE and its diagnosis, missing modalities) with the
pretrained encoders ``--encoders auto`` mostly picks (image efficientnet-lite0, text minilm,
audio speech-embedding): ``--encoders pretrained`` (kept as ``<dataset>@pretrained``).

Writes ``benchmarks/results/uncertainty.md`` (+ ``.json``) and rebuilds RESULTS.md;
resumable per dataset and part::

    PYTHONPATH=src MMFUSE_DATA=../shared/data python benchmarks/bench_uncertainty.py

or one process per dataset, then merged (the merge writes the section)::

    python benchmarks/bench_uncertainty.py --datasets icons-family --json /tmp/a.json &
    ...
    python benchmarks/bench_uncertainty.py --merge /tmp/a.json,/tmp/b.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("MMFUSE_DATA", str(REPO.parent / "shared" / "data"))

from _common import code_version, machine, stamp, write_section  # noqa: E402
from mmfuse._io import atomic_write_text  # noqa: E402
from mmfuse.data.datasets import dataset_info, load_dataset  # noqa: E402
from mmfuse.evaluate import FeatureTable, evaluate  # noqa: E402
from mmfuse.uncertainty.evaluation import UncertaintySpec  # noqa: E402
from mmfuse.uncertainty.fit import AUTO_META, groups_needed  # noqa: E402
from mmfuse.uncertainty.metrics import ece_of_bins  # noqa: E402

RESULTS_JSON = HERE / "results" / "uncertainty.json"
# every bundled dataset with grouped outer folds (``mmfuse datasets``: cv group or
# stratified-group); fsdd has one modality (no fusion row)
DATASETS = ("tuxpaint-grouped", "icons-family", "icons-theme", "sign-av", "av-digits",
            "tuxpaint-tabular", "fsdd")
#: encoder configurations: the classical ones (every part) and the pretrained ones a user of
#: ``--encoders auto`` mostly gets (the main part only); tabular: the table columns in both
CONFIGS = {"classical": {"image": "hog", "text": "tfidf", "audio": "mfcc"},
           "pretrained": {"image": "efficientnet-lite0", "text": "minilm",
                          "audio": "speech-embedding"}}
ENCODERS = CONFIGS["classical"]
CONFIG_PARTS = {"classical": None, "pretrained": ("main", "seeds", "calibration_cv")}  # None: every part
#: outer-split seeds of the seeds part, beside the main part's 0
SEEDS = (1, 2, 3)
#: the calibration_cv part: calibration rows from this many grouped inner folds
CALIBRATION_CV = 10
FUSION = "late"
COVERAGES = (0.9, 0.8)
SCORES = ("aps", "raps", "lac")
PARTS = ("main", "seeds", "calibration_cv", "timing", "split", "refits", "bagged", "experts", "auto")
CALIBRATE_WAYS = ("experts", "bagged", "refits")  # calibrate_on, besides the default
REPEATS = 15


def result_key(dataset: str, config: str = "classical") -> str:
    """Where a dataset's results under an encoder configuration are kept in the JSON (the
    classical ones under the dataset's name, as before)."""
    return dataset if config == "classical" else f"{dataset}@{config}"


def _inputs(dataset: str, config: str = "classical"):
    from mmfuse.encoders.tabular import TabularEncoder

    X, y, groups = load_dataset(dataset)
    info = dataset_info(dataset)
    encoders = CONFIGS[config]
    enc = {m: encoders[m] for m in info["modalities"] if m in encoders}
    if "tabular" in info["modalities"]:  # its table columns, by kind (as `mmfuse run`)
        enc["tabular"] = TabularEncoder(**info["tabular"])
    return X, y, groups, enc, info["cv"]


def _rows(result) -> dict:
    return {r.name: {"kind": r.kind, "accuracy": r.accuracy, "uncertainty": r.uncertainty}
            for r in result.rows}


def _set_rows(rows: dict) -> dict:
    """Of :func:`_rows`, only the sets' coverage, size and singletons (what the draws'
    tables read): the draws of the seeds and calibration_cv parts kept small."""
    keep = ("coverage", "set_size", "singletons")
    return {name: {"kind": row["kind"], "accuracy": row["accuracy"], "uncertainty": {"sets": {
        key: {k: v for k, v in sets.items() if k in keep}
        for key, sets in row["uncertainty"]["sets"].items()}}} for name, row in rows.items()}


def run_main(X, y, groups, enc, cv, table) -> dict:
    spec = UncertaintySpec("temperature", COVERAGES, SCORES, mask={m: 0.5 for m in enc},
                           worst_fold=True)
    start = time.perf_counter()
    result = evaluate(X, y, groups=groups, cv=cv, features=table, strategies=[FUSION],
                      baseline=False, on_error="skip", n_jobs=1, uncertainty=spec)
    return {"rows": _rows(result), "cv": result.cv, "seconds": time.perf_counter() - start}


def run_seeds(X, y, groups, enc, cv, table) -> dict:
    """The main part's coverage and set sizes (APS, every row) on the outer folds drawn
    again with other seeds (:data:`SEEDS`; the inner folds and the models' seeds change
    with them): how much of a coverage off its target is the draw of the test groups.
    Skipped where the outer folds leave one group out (no seed changes them)."""
    from mmfuse.evaluate.folds import make_splits

    kind = make_splits(np.unique(y, return_inverse=True)[1], groups, cv, 0)[1]["kind"]
    if kind != "stratified-group":
        return {"skipped": "the outer folds leave one group out: no seed changes them"}
    out: dict = {"seeds": {}}
    for seed in SEEDS:
        spec = UncertaintySpec("temperature", COVERAGES, ("aps",))
        result = evaluate(X, y, groups=groups, cv=cv, features=table, strategies=[FUSION],
                          baseline=False, on_error="skip", n_jobs=1, uncertainty=spec,
                          random_state=seed)
        out["seeds"][str(seed)] = {"rows": _set_rows(_rows(result)), "cv": result.cv}
    return out


def run_calibration_cv(X, y, groups, enc, cv, table) -> dict:
    """The seeds part's evaluations (seed 0 and :data:`SEEDS`) with the calibration rows
    from :data:`CALIBRATION_CV` grouped inner folds instead of 5 (the models' own inner
    folds unchanged): the calibration models train on 90% of the training rows instead of
    80%, closer to the final model. Skipped where the outer folds leave one group out."""
    from mmfuse.evaluate.folds import make_splits

    kind = make_splits(np.unique(y, return_inverse=True)[1], groups, cv, 0)[1]["kind"]
    if kind != "stratified-group":
        return {"skipped": "the outer folds leave one group out"}
    out: dict = {"seeds": {}}
    for seed in (0, *SEEDS):
        spec = UncertaintySpec("temperature", COVERAGES, ("aps",), cv=CALIBRATION_CV)
        cpu = time.process_time()
        result = evaluate(X, y, groups=groups, cv=cv, features=table, strategies=[FUSION],
                          baseline=False, on_error="skip", n_jobs=1, uncertainty=spec,
                          random_state=seed)
        out["seeds"][str(seed)] = {"rows": _set_rows(_rows(result)), "cv": result.cv,
                                   "cpu_seconds": time.process_time() - cpu}
    return out


def run_refits(X, y, groups, enc, cv, table, calibrate_on: str = "refits") -> dict:
    """The default fusion calibrated on refits of the whole fusion on inner folds (before
    the fix), on the main part's outer folds."""
    spec = UncertaintySpec("temperature", COVERAGES, ("aps",), mask={m: 0.5 for m in enc},
                           calibrate_on=calibrate_on)
    start = time.perf_counter()
    result = evaluate(X, y, groups=groups, cv=cv, features=table, strategies=[FUSION],
                      singles=False, baseline=False, on_error="skip", n_jobs=1,
                      uncertainty=spec)
    return {"rows": _rows(result), "cv": result.cv, "seconds": time.perf_counter() - start}


def run_bagged(X, y, groups, enc, cv, table) -> dict:
    """The default fusion's final combination on experts bagged as the final model's are
    (``calibrate_on="bagged"``), on the main part's outer folds."""
    return run_refits(X, y, groups, enc, cv, table, calibrate_on="bagged")


def run_experts(X, y, groups, enc, cv, table) -> dict:
    """The default fusion's final combination on its inner-fold experts' out-of-fold
    probabilities (``calibrate_on="experts"``), on the main part's outer folds."""
    return run_refits(X, y, groups, enc, cv, table, calibrate_on="experts")


AUTO_PARAMS = {"neural": False}  # fusion="auto" without the raced heads (torch: too slow here)
AUTO_WAYS = ("auto", "refits")  # calibrate_on: its choice (the default), nested selections


def run_auto(X, y, groups, enc, cv, table) -> dict:
    """``fusion="auto"`` (classical candidates) with temperature and APS sets, calibrated
    as the strategy it chose (``calibrate_on="auto"``, the default) and on refits of the
    whole selection in each inner fold (``"refits"``, before), on the main part's outer
    folds; each evaluation's CPU time (fits and calibration; the new way first, so any
    warm-up favours the old one)."""
    out = {}
    for way in AUTO_WAYS:
        spec = UncertaintySpec("temperature", COVERAGES, ("aps",),
                               mask={m: 0.5 for m in enc}, calibrate_on=way)
        start, cpu = time.perf_counter(), time.process_time()
        result = evaluate(X, y, groups=groups, cv=cv, features=table, strategies=["auto"],
                          singles=False, baseline=False, on_error="skip", n_jobs=1,
                          uncertainty=spec, fusion_params={"auto": AUTO_PARAMS})
        out[way] = {"rows": _rows(result), "seconds": time.perf_counter() - start,
                    "cpu_seconds": time.process_time() - cpu,
                    "chosen": result.row("auto").chosen}
    return out


def run_split(X, y, groups, enc, cv, table) -> dict:
    """Split conformal: fit on one grouped inner fold's training rows, calibrate on its
    held-out groups, no refit."""
    from mmfuse.evaluate.folds import make_splits
    from mmfuse.fusion import create_fusion
    from mmfuse.splits import inner_splits
    from mmfuse.uncertainty.calibration import fit_calibrator
    from mmfuse.uncertainty.conformal import ConformalSets, thresholds
    from mmfuse.uncertainty.metrics import set_metrics

    classes, y_enc = np.unique(y, return_inverse=True)
    splits, _ = make_splits(y_enc, groups, cv, 0)
    folds = []
    for train, test in splits:
        views, present = table.fold_views(train)
        mods = sorted(views)
        keep = train[np.any(np.stack([present[m][train] for m in mods]), axis=0)]
        tr, cal = inner_splits(y_enc[keep], groups[keep], 5, 0)[0]
        tr, cal = keep[tr], keep[cal]
        model = create_fusion(FUSION, random_state=0).fit(
            {m: views[m][tr] for m in mods}, y_enc[tr], {m: present[m][tr] for m in mods},
            groups[tr])

        def proba(rows, model=model, views=views, present=present, mods=mods):
            out = np.zeros((len(rows), len(classes)))
            out[:, model.classes_] = model.predict_proba({m: views[m][rows] for m in mods},
                                                         {m: present[m][rows] for m in mods})
            return out

        temp = fit_calibrator("temperature", proba(cal), y_enc[cal])
        p_cal, p_test = temp.transform(proba(cal)), temp.transform(proba(test))
        fold = {}
        for score in SCORES:
            for target in COVERAGES:
                sets = ConformalSets(target, score, False, {"all": thresholds(
                    p_cal, y_enc[cal], target, score, False)})
                fold[f"{score}@{target:g}"] = set_metrics(
                    sets.sets(p_test, np.array(["all"] * len(test))), y_enc[test])
        folds.append(fold)
    return {"folds": folds}


def run_timing(X, y, groups, enc, cv, table) -> dict:
    from mmfuse import MultimodalClassifier
    from mmfuse.evaluate.folds import make_splits

    splits, _ = make_splits(np.unique(y, return_inverse=True)[1], groups, cv, 0)
    train, test = splits[0]
    fit_seconds = {}
    for name, extra in (("plain", {}), ("calibrated", {"calibration": "temperature",
                                                        "coverage": 0.9})):
        model = MultimodalClassifier(encoders=enc, fusion=FUSION, on_error="skip",
                                     random_state=0, **extra)
        start = time.perf_counter()
        model.fit(X.iloc[train], y[train], groups[train])
        fit_seconds[name] = time.perf_counter() - start
    Xt = X.iloc[test]
    pred, sets, pred_cpu, sets_cpu = [], [], [], []
    for _ in range(REPEATS):
        start, cpu = time.perf_counter(), time.process_time()
        model.predict(Xt)
        pred.append(time.perf_counter() - start)
        pred_cpu.append(time.process_time() - cpu)
        start, cpu = time.perf_counter(), time.process_time()
        model.predict_set(Xt)
        sets.append(time.perf_counter() - start)
        sets_cpu.append(time.process_time() - cpu)
    # where predict_set's time goes: the features, the (calibrated) probabilities, the sets
    from mmfuse.encoders.featurizer import as_columns

    steps: dict = {"features": [], "proba": [], "sets": []}
    for _ in range(REPEATS):
        start = time.perf_counter()
        views, present, _errors = model.featurizer().transform(as_columns(Xt)[0],
                                                                on_error="skip")
        steps["features"].append(time.perf_counter() - start)
        start = time.perf_counter()
        proba = model.predict_views(views, present)
        steps["proba"].append(time.perf_counter() - start)
        start = time.perf_counter()
        model.predict_set_views(views, present, proba)
        steps["sets"].append(time.perf_counter() - start)
    return {"rows": len(test), "predict": pred, "predict_set": sets,
            "ratio": float(np.median(sets) / np.median(pred)),
            "predict_cpu": pred_cpu, "predict_set_cpu": sets_cpu,
            "ratio_cpu": float(np.median(sets_cpu) / np.median(pred_cpu)),
            "fit_seconds": fit_seconds,
            "steps": {k: float(np.median(v)) for k, v in steps.items()}}


def _dump(saved: dict) -> str:
    """The results as JSON, compact (the per-fold arrays made the indented file pass 2 MB),
    one result (dataset and configuration) a line, so that a rerun's diff names it."""
    return "{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}"
                               for k, v in saved.items()) + "\n}\n"


def run_dataset(dataset: str, parts, saved: dict, path: Path = RESULTS_JSON,
                config: str = "classical") -> dict:
    key = result_key(dataset, config)
    out = saved.get(key, {"dataset": dataset, "config": config})
    allowed = CONFIG_PARTS[config]
    todo = [p for p in parts if p not in out and (allowed is None or p in allowed)]
    if not todo:
        return out
    X, y, groups, enc, cv = _inputs(dataset, config)
    y = np.asarray(y)
    groups = np.asarray(groups)
    print(f"{dataset}: {len(y)} rows, cv {cv}, encoders {enc}", flush=True)
    table = FeatureTable(X, enc, on_error="skip", cache=True)
    out.update({"n": len(y), "encoders": {m: e if isinstance(e, str) else type(e).__name__
                                          for m, e in enc.items()}})
    for part in todo:
        start = time.perf_counter()
        out[part] = globals()[f"run_{part}"](X, y, groups, enc, cv, table)
        out[part]["when"], out[part]["code"] = stamp(), code_version()
        print(f"  {part}: {time.perf_counter() - start:.0f} s", flush=True)
        saved[key] = out
        atomic_write_text(path, _dump(saved))
    return out


# -- the table ------------------------------------------------------------------------------
def _m(d: dict) -> str:
    return f"{d['mean']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"


def summary(r: dict) -> dict:
    rows = r["main"]["rows"]
    singles = {n: v for n, v in rows.items() if v["kind"] == "single"}
    fused = rows[FUSION] if FUSION in rows else None
    strongest = max(singles, key=lambda n: singles[n]["accuracy"])
    s: dict = {"strongest": strongest, "coverage": {}, "size": {}}
    for target in COVERAGES:
        key = f"aps@{target:g}"
        low, high = target - 0.02, target + 0.03
        cov = {n: v["uncertainty"]["sets"][key]["coverage"]["mean"] for n, v in rows.items()}
        s["coverage"][key] = {"values": cov, "ok": all(low <= c <= high for c in cov.values()),
                              "range": [low, high]}
    if fused:
        sizes = {n: v["uncertainty"]["sets"]["aps@0.9"]["set_size"]["mean"]
                 for n, v in singles.items()}
        best = min(sizes, key=sizes.get)
        f = fused["uncertainty"]
        s["size"] = {"fused": f["sets"]["aps@0.9"]["set_size"]["mean"], "best_single": best,
                     "single": sizes[best]}
        s["size"]["reduction"] = 1 - s["size"]["fused"] / s["size"]["single"]
        s["ece"] = {"before": f["raw"]["ece"]["mean"], "after": f["ece"]["mean"],
                    "debiased": f.get("ece_debiased", {}).get("mean")}
        s["accuracy_change"] = fused["accuracy"] - f["raw"]["accuracy"]["mean"]
        s["pooled_ece"] = ece_of_bins(f["reliability"])
        s["masked"] = f.get("sets_masked", {}).get(f"aps@0.9 {strongest}-0.5")
    return s


def _encoders(config: str) -> str:
    return ", ".join(f"{m} {e}" for m, e in CONFIGS[config].items())


def ece_verdict(r: dict) -> str:
    """Whether the default fusion's ECE target (≤ 0.05 after temperature) can be met on these
    test folds: not when a perfectly calibrated model's ECE (the floor) exceeds it, not by
    any temperature when the best temperature for the test rows themselves exceeds it."""
    t = r["main"]["rows"][FUSION]["uncertainty"]
    floor = t["ece_floor"]["mean"]
    best = t["diagnosis"]["test_ece_best_temperature"]["mean"]
    if floor > 0.05:
        return f"unreachable at this test-fold size (floor {floor:.3f})"
    if best > 0.05:
        return f"no temperature reaches it (best {best:.3f})"
    return ("met" if t["ece"]["mean"] <= 0.05 else "**missed**") + (
        f" (best temperature for the test rows {best:.3f}, floor {floor:.3f})")


def render(results: list[dict], pretrained: list[dict] = ()) -> str:
    both = [("classical", r) for r in results] + [("pretrained", r) for r in pretrained]
    lines = [
        "# Calibration and conformal prediction sets (issue 29)",
        "",
        f"Measured by `benchmarks/bench_uncertainty.py` ({machine()}; shared with other jobs, "
        "so times are ratios within one run). Two encoder configurations: *classical* "
        f"({_encoders('classical')}; every part below) and *pretrained* "
        f"({_encoders('pretrained')}: what `--encoders auto` mostly picks, the audio one "
        "runs on the CPU; the coverage, other draws, targets, calibration and top-label tables "
        "only); tabular: the "
        "dataset's table columns (`TabularEncoder`) in both. Outer splits: each dataset's default "
        "(grouped). In every outer training fold, temperature scaling and cross-conformal "
        "thresholds are learned on grouped inner folds, per missingness pattern; the "
        f"default fusion is `{FUSION}`, calibrated on its final combination applied to its "
        "inner-fold experts' out-of-fold probabilities (its 5 inner folds; a single "
        "modality: on its model refit on 10 inner folds, `uncertainty.fit.REFIT_FOLDS`, "
        "in runs on code that has it, on 5 before; the list of runs at the end names each "
        "part's code). Values: mean over outer folds [95% t-interval].",
        "",
        "## Coverage (APS) on unseen groups",
        "",
        "Target: within [0.88, 0.93] at 0.9 and [0.78, 0.83] at 0.8, for the default fusion "
        "and every single modality. *Worst-fold*: the conservative alternative, the largest "
        "of the inner folds' own APS thresholds instead of the pooled one (not the "
        "default).",
        "",
        "| dataset | encoders | row | coverage @0.9 | set size @0.9 | singletons @0.9 "
        "| coverage @0.8 | set size @0.8 | RAPS coverage @0.9 | RAPS set size @0.9 "
        "| LAC coverage @0.9 | LAC set size @0.9 | worst-fold coverage @0.9 "
        "| worst-fold set size @0.9 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config, r in both:
        if "main" not in r:
            continue
        for name, row in r["main"]["rows"].items():
            sets = row["uncertainty"]["sets"]
            lines.append(
                f"| {r['dataset']} | {config} | {name} | {_m(sets['aps@0.9']['coverage'])} | "
                f"{_m(sets['aps@0.9']['set_size'])} | {_m(sets['aps@0.9']['singletons'])} | "
                f"{_m(sets['aps@0.8']['coverage'])} | {_m(sets['aps@0.8']['set_size'])} | "
                f"{_m(sets['raps@0.9']['coverage'])} | {_m(sets['raps@0.9']['set_size'])} | "
                f"{_m(sets['lac@0.9']['coverage'])} | {_m(sets['lac@0.9']['set_size'])} | "
                f"{_m(sets['aps@0.9 worst-fold']['coverage'])} | "
                f"{_m(sets['aps@0.9 worst-fold']['set_size'])} |")
    lines += _render_seeds(both)
    lines += _render_calibration_cv(both)
    lines += ["", "## Targets", "",
              "Both encoder configurations. *ECE verdict*: *unreachable at this test-fold "
              "size* where a perfectly calibrated model's ECE on the same test folds (the "
              "floor, finite sample) exceeds 0.05; *no temperature reaches it* where the best "
              "temperature fitted on the test rows themselves stays above 0.05; else met or "
              "missed.", "",
              "| dataset | encoders | coverage in range @0.9 | @0.8 | fused set size vs smallest single "
              "(≥ 10% smaller) | ECE before → after temperature (≤ 0.05) | debiased ECE "
              "after temperature (beside: the target is on the ECE) | ECE verdict "
              "| ECE pooled over the folds | accuracy change (≤ 0.5 pt) | coverage, 50% of the strongest "
              "modality missing (≥ 0.87) | calibration groups, fewest of the outer folds "
              "(0.9 needs 9, 0.8 needs 4: warned below) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for config, r in both:
        if "main" not in r:
            continue
        s = summary(r)
        cov = [("yes" if s["coverage"][f"aps@{t:g}"]["ok"] else "**no**") for t in COVERAGES]
        size, ece = s.get("size"), s.get("ece")
        lines.append(
            f"| {r['dataset']} | {config} | {cov[0]} | {cov[1]} | "
            + (f"{size['fused']:.2f} vs {size['single']:.2f} ({size['best_single']}): "
               f"{size['reduction']:+.0%} " + ("yes" if size["reduction"] >= 0.10 else "**no**")
               + (" (fused below 1 label a set: part of the cut is empty sets)"
                  if size["fused"] < 1 else "")
               if size else "")
            + " | "
            + (f"{ece['before']:.3f} → {ece['after']:.3f} "
               + ("yes" if ece["after"] <= 0.05 else "**no**") if ece else "")
            + " | "
            + (f"{ece['debiased']:.3f}" if ece and ece["debiased"] is not None else "")
            + " | " + (ece_verdict(r) if ece else "") + " | "
            + (f"{s['pooled_ece']:.3f}" if "pooled_ece" in s else "")
            + " | "
            + (f"{100 * s['accuracy_change']:+.2f} pt" if "accuracy_change" in s else "")
            + " | "
            + (f"{_m(s['masked']['coverage'])} ({s['strongest']}) "
               + ("yes" if s["masked"]["coverage"]["mean"] >= 0.87 else "**no**")
               if s.get("masked") else "") + " | " + _groups(r) + " |")
    lines += _target_summary(both)
    lines += ["", "## Calibration of the default fusion: what limits the ECE", "",
              "Per outer fold (means over folds): the temperature is fitted on the inner "
              "out-of-fold probabilities by the Brier score (the library's objective); the "
              "former log-loss objective, isotonic calibration and vector scaling (a scale and "
              "a bias per class) on the same rows, and the best "
              "temperature for the test rows themselves (fitted on their labels: a bound on "
              "what any temperature reaches, not a model) are shown beside it. *Floor*: the "
              "ECE a perfectly calibrated model shows on the same rows (finite sample); "
              "*debiased*: the ECE less its estimated finite-sample bias (Kumar, Liang & Ma "
              "2019), beside it. "
              "*Pooled*: the ECE of all outer test rows together (the folds' reliability bins "
              "summed). *Inner*: the out-of-fold rows the temperature is fitted on (all "
              "modalities present).", "",
              "| dataset | encoders | ECE raw | ECE temperature | ECE log-loss temperature | best "
              "temperature for the test rows | floor | debiased | pooled: raw → temperature | "
              "temperature (log-loss) | inner ECE raw → temperature | inner → test accuracy "
              "| inner → test confidence | ECE isotonic | accuracy raw → isotonic "
              "| ECE vector scaling | accuracy raw → vector scaling |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for config, r in both:
        if "main" not in r or FUSION not in r["main"]["rows"]:
            continue
        t = r["main"]["rows"][FUSION]["uncertainty"]
        d = {k: v["mean"] for k, v in t["diagnosis"].items()}
        lines.append(
            f"| {r['dataset']} | {config} | {_m(t['raw']['ece'])} | {_m(t['ece'])} | "
            f"{d['test_ece_log_loss_temperature']:.3f} | {d['test_ece_best_temperature']:.3f} "
            f"| {t['ece_floor']['mean']:.3f} | "
            + (f"{t['ece_debiased']['mean']:.3f}" if "ece_debiased" in t else "")
            + f" | {ece_of_bins(t['reliability_raw']):.3f} → "
            f"{ece_of_bins(t['reliability']):.3f} | {d['temperature']:.2f} "
            f"({d['log_loss_temperature']:.2f}) | {d['inner_ece_raw']:.3f} → "
            f"{d['inner_ece']:.3f} | {d['inner_accuracy']:.3f} → "
            f"{t['raw']['accuracy']['mean']:.3f} | {d['inner_confidence']:.3f} → "
            f"{d['test_confidence']:.3f} | {d['test_ece_isotonic']:.3f} | "
            f"{t['raw']['accuracy']['mean']:.3f} → {d['test_accuracy_isotonic']:.3f} | "
            + (f"{d['test_ece_vector']:.3f} | {t['raw']['accuracy']['mean']:.3f} → "
               f"{d['test_accuracy_vector']:.3f} |" if "test_ece_vector" in d else " | |"))
    lines += _render_top_label(both)
    lines += ["", "## Where the calibration rows come from", "",
              f"The default fusion (`{FUSION}`), temperature and APS sets learned per outer "
              "training fold on out-of-fold rows of 5 grouped inner folds, three ways "
              "(`calibrate_on`): *experts*: its final combination (the weights learned on "
              "the inner-fold experts' out-of-fold probabilities) applied to those "
              "out-of-fold probabilities, one inner-fold expert per row; *bagged*: the same "
              "final combination, each held-out inner fold predicted by experts "
              "cross-fitted inside its inner training fold and averaged, as the final model "
              "averages its experts; *refits* (before issue 29's fix): clones of the whole "
              "fusion refit on the inner folds (nested twice). Same outer folds. The "
              f"library's default (`auto`) for `{FUSION}`: *{AUTO_META}*.", "",
              "| dataset | calibrated on | ECE after temperature | coverage @0.9 | set size "
              "@0.9 | coverage @0.8 | set size @0.8 | coverage @0.9, 50% of the strongest "
              "modality missing |", "|---|---|---|---|---|---|---|---|"]

    def ways(r: dict) -> dict:
        out = {AUTO_META: r["main"]} if "main" in r else {}
        out.update({w: r[w] for w in CALIBRATE_WAYS if w in r and w != AUTO_META})
        return {w: out[w]["rows"][FUSION]["uncertainty"] for w in CALIBRATE_WAYS
                if w in out and FUSION in out[w]["rows"]}

    compared = [(r, ways(r)) for r in results if "main" in r and len(ways(r)) > 1]
    for r, by in compared:
        strongest = summary(r)["strongest"]
        for label, u in by.items():
            masked = u.get("sets_masked", {}).get(f"aps@0.9 {strongest}-0.5")
            lines.append(
                f"| {r['dataset']} | {label} | {_m(u['ece'])} | "
                f"{_m(u['sets']['aps@0.9']['coverage'])} | "
                f"{_m(u['sets']['aps@0.9']['set_size'])} | "
                f"{_m(u['sets']['aps@0.8']['coverage'])} | "
                f"{_m(u['sets']['aps@0.8']['set_size'])} | "
                + (_m(masked["coverage"]) if masked else "") + " |")
    if not compared:
        lines.append("| (not measured in this run) | | | | | | | |")
    else:
        from scipy import stats

        def gap(u: dict, target: float) -> list[float]:
            return [abs(c - target) for c in u["sets"][f"aps@{target:g}"]["coverage"]["folds"]]

        lines += ["", f"Paired by outer fold: another way − *{AUTO_META}* (the default), mean "
                  "[95% t-interval]; positive: the default is better (smaller).", "",
                  "| dataset | other way | ECE | distance of coverage @0.9 from 0.9 "
                  "| distance of coverage @0.8 from 0.8 | set size @0.9 |",
                  "|---|---|---|---|---|---|"]
        for r, by in compared:
            e = by[AUTO_META]
            for label, b in by.items():
                if label == AUTO_META:
                    continue
                cells = []
                for before, after in ((b["ece"]["folds"], e["ece"]["folds"]),
                                      (gap(b, 0.9), gap(e, 0.9)), (gap(b, 0.8), gap(e, 0.8)),
                                      (b["sets"]["aps@0.9"]["set_size"]["folds"],
                                       e["sets"]["aps@0.9"]["set_size"]["folds"])):
                    d = np.subtract(before, after)  # paired by outer fold; not cut at 0
                    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1)
                                 / np.sqrt(len(d)))
                    cells.append(f"{d.mean():+.3f} [{d.mean() - half:+.3f}, "
                                 f"{d.mean() + half:+.3f}]")
                lines.append(f"| {r['dataset']} | {label} | " + " | ".join(cells) + " |")
    lines += _render_auto(results)
    lines += ["", "## Cross-conformal (the default) against split conformal", "",
              "Split: the fused model fit on one grouped inner fold's training rows, "
              "thresholds on its held-out groups, no refit. Means over the outer folds.", "",
              "| dataset | score@coverage | cross: coverage | cross: set size | split: "
              "coverage | split: set size |", "|---|---|---|---|---|---|"]
    if not any("split" in r for r in results):
        lines.append("| (not measured in this run) | | | | | |")
    for r in results:
        if "main" in r and "split" in r and FUSION in r["main"]["rows"]:
            cross = r["main"]["rows"][FUSION]["uncertainty"]["sets"]
            for key in [k for k in cross if k in r["split"]["folds"][0]]:
                sp = [f[key] for f in r["split"]["folds"]]
                lines.append(
                    f"| {r['dataset']} | {key} | {cross[key]['coverage']['mean']:.3f} | "
                    f"{cross[key]['set_size']['mean']:.2f} | "
                    f"{np.mean([f['coverage'] for f in sp]):.3f} | "
                    f"{np.mean([f['set_size'] for f in sp]):.2f} |")
    lines += ["", "## predict_set against predict", "",
              f"From raw inputs (features included), {REPEATS} alternating calls each, "
              "medians; target: ≤ 1.10×. *CPU ratio*: of this process's CPU time (the "
              "machine is shared with other jobs: the wall-clock ratio of calls this short "
              "moves with their load).", "",
              "| dataset | test rows | predict (s) | predict_set (s) | ratio | CPU ratio "
              "| of which: "
              "features (s) | probabilities (s) | sets (s) | fit plain (s) "
              "| fit with calibration + coverage (s) | fit ratio |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "timing" in r:
            t, f = r["timing"], r["timing"]["fit_seconds"]
            lines.append(f"| {r['dataset']} | {t['rows']} | {np.median(t['predict']):.3f} | "
                         f"{np.median(t['predict_set']):.3f} | {t['ratio']:.2f}× | "
                         + (f"{t['ratio_cpu']:.2f}× | " if "ratio_cpu" in t else "| ")
                         + f"{t['steps']['features']:.3f} | {t['steps']['proba']:.3f} | "
                         f"{t['steps']['sets']:.4f} | "
                         f"{f['plain']:.1f} | {f['calibrated']:.1f} | "
                         f"{f['calibrated'] / f['plain']:.1f}× |")
    whens = sorted({f"{r[p]['when']} on {r[p]['code']}" for _, r in both for p in PARTS
                    if p in r})
    lines += ["", "Runs: " + "; ".join(whens) + "."]
    return "\n".join(lines)


def _groups(r: dict) -> str:
    """The fewest groups any row's calibration rows came from in an outer fold."""
    counts = [min(v["uncertainty"]["calibration_groups"]["folds"])
              for v in r["main"]["rows"].values()
              if "calibration_groups" in (v["uncertainty"] or {})]
    if not counts:
        return ""
    n = int(min(counts))
    return f"{n}" + (" **too few for 0.9**" if n < groups_needed(0.9) else "")


def _paired(before: list, after: list) -> str:
    """Mean [95% t-interval] of the per-outer-fold differences ``before - after``."""
    from scipy import stats

    d = np.subtract(before, after)
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]"


def _render_seeds(both: list) -> list[str]:
    """The seeds part: APS coverage and set size of every row per outer-split seed."""
    done = [(c, r) for c, r in both if "seeds" in r and "seeds" in r["seeds"] and "main" in r]
    if not done:
        return []
    lines = ["", "## Coverage on other draws of the test groups", "",
             f"The same evaluation (APS, temperature) with the grouped outer folds drawn again "
             f"with seeds {', '.join(map(str, SEEDS))} beside the main part's 0 (the inner "
             "folds and the models' seeds change with them), with the calibration refits on "
             "5 inner folds (the library's default before it moved to "
             f"{CALIBRATION_CV}: seed 0 is the main part as it was measured then; the "
             "table below has the same draws with "
             f"{CALIBRATION_CV}). Per seed: the mean over its "
             "outer folds; *all*: the mean of the per-seed means. Datasets whose outer folds "
             "leave one group out have a single draw and are not listed. Target: [0.88, "
             "0.93] at 0.9, [0.78, 0.83] at 0.8.", "",
             "| dataset | encoders | row | coverage @0.9 per seed (0, "
             + ", ".join(map(str, SEEDS)) + ") | all @0.9 | in range | coverage @0.8 per seed "
             "| all @0.8 | in range | set size @0.9, all |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for config, r in done:
        draws = _five_fold_draws(r)
        for name in r["main"]["rows"]:
            cells = []
            for target in COVERAGES:
                key = f"aps@{target:g}"
                per = [d["rows"][name]["uncertainty"]["sets"][key]["coverage"]["mean"]
                       for d in draws]
                mean = float(np.mean(per))
                ok = target - 0.02 <= mean <= target + 0.03
                cells += [", ".join(f"{v:.3f}" for v in per), f"{mean:.3f}",
                          "yes" if ok else "**no**"]
            size = np.mean([d["rows"][name]["uncertainty"]["sets"]["aps@0.9"]["set_size"]["mean"]
                            for d in draws])
            lines.append(f"| {r['dataset']} | {config} | {name} | " + " | ".join(cells)
                         + f" | {size:.2f} |")
    return lines


def _five_fold_draws(r: dict) -> list[dict]:
    """Seed 0 and :data:`SEEDS` with the calibration refits on 5 inner folds: seed 0 is the
    main part as measured before the default moved to :data:`CALIBRATION_CV` (kept in the
    seeds part as "0"), or the main part itself where it was not rerun since."""
    seeds = r["seeds"]["seeds"]
    return [seeds.get("0", r["main"])] + [seeds[str(s)] for s in SEEDS]


def _render_calibration_cv(both: list) -> list[str]:
    """The calibration_cv part against the main and seeds parts (5 inner folds)."""
    done = [(c, r) for c, r in both if "seeds" in r.get("calibration_cv", {})
            and "seeds" in r.get("seeds", {}) and "main" in r]
    if not done:
        return []
    lines = ["", f"## Calibration rows from {CALIBRATION_CV} inner folds instead of 5", "",
             f"The evaluations of the table above (seeds 0, {', '.join(map(str, SEEDS))}) "
             f"with the temperature and the APS thresholds learned on {CALIBRATION_CV} "
             "grouped inner folds instead of 5 (the fusion's own inner folds unchanged): "
             "the models the calibration rows come from train on 90% of the outer training "
             "rows instead of 80%, closer to the final model, which trains on all of them. "
             f"`{FUSION}` (calibrated on bagged experts) holds out the same 10 folds, each "
             "scored by experts cross-fitted on the strategy's own 5 folds of the other 90% "
             "(72% of the rows against the final model's 80%; with 5 held-out folds, 64%). "
             "Mean of the per-seed means (seed values in brackets).", "",
             "| dataset | encoders | row | coverage @0.9, 5 folds | "
             f"{CALIBRATION_CV} folds | coverage @0.8, 5 folds | {CALIBRATION_CV} folds | "
             f"set size @0.9, 5 folds | {CALIBRATION_CV} folds |",
             "|---|---|---|---|---|---|---|---|---|"]

    def cov(draws, name, key, what="coverage"):
        per = [d["rows"][name]["uncertainty"]["sets"][key][what]["mean"] for d in draws]
        return float(np.mean(per)), per

    for config, r in done:
        five = _five_fold_draws(r)
        ten = [r["calibration_cv"]["seeds"][str(s)] for s in (0, *SEEDS)]
        for name in r["main"]["rows"]:
            cells = []
            for key, target in (("aps@0.9", 0.9), ("aps@0.8", 0.8)):
                for draws in (five, ten):
                    mean, per = cov(draws, name, key)
                    ok = target - 0.02 <= mean <= target + 0.03
                    cells.append(f"{mean:.3f}{'' if ok else ' **out**'} "
                                 f"({', '.join(f'{v:.3f}' for v in per)})")
            cells += [f"{cov(d, name, 'aps@0.9', 'set_size')[0]:.2f}" for d in (five, ten)]
            lines.append(f"| {r['dataset']} | {config} | {name} | " + " | ".join(cells) + " |")
    return lines


def _target_summary(both: list) -> list[str]:
    """Per encoder configuration, each target in one line: met where, missed where."""
    lines = [""]
    for config in dict.fromkeys(c for c, _ in both):
        runs = [r for c, r in both if c == config and "main" in r]
        out, small, ece, acc, masked = [], [], [], [], []
        for r in runs:
            s = summary(r)
            for key, cov in s["coverage"].items():
                low, high = cov["range"]
                out += [f"{r['dataset']} {name} {key.split('@')[1]}: {c:.3f}"
                        for name, c in cov["values"].items() if not low <= c <= high]
            if s.get("size"):
                small.append((r["dataset"], s["size"]["reduction"], s["size"]["fused"] < 1))
                ece.append((r["dataset"], s["ece"]["after"]))
                acc.append(abs(s["accuracy_change"]) <= 0.005)
            if s.get("masked"):
                masked.append((r["dataset"], s["masked"]["coverage"]["mean"]))
        met = [f"{d} ({x:+.0%}" + (", below 1 label a set" if e else "") + ")"
               for d, x, e in small if x >= 0.10]
        lines.append(
            f"*{config}* ({len(runs)} datasets): coverage in range on every row at both "
            "coverages: " + (f"**no**, {len(out)} misses ({'; '.join(out)})" if out else "yes")
            + f". Fused set ≥ 10% below the smallest single's on {len(met)} of {len(small)} "
            + f"(target ≥ 3: {'met' if len(met) >= 3 else '**missed**'}): "
            + (", ".join(met) or "none") + ". ECE ≤ 0.05 after temperature on "
            + f"{sum(e <= 0.05 for _, e in ece)} of {len(ece)} ("
            + ", ".join(d for d, e in ece if e <= 0.05) + "). Accuracy change ≤ 0.5 pt on "
            + f"{sum(acc)} of {len(acc)}. Coverage ≥ 0.87 with 50% of the strongest modality "
            + f"missing on {sum(c >= 0.87 for _, c in masked)} of {len(masked)}.")
        lines.append("")
    return lines


TOP_LABEL = ("binning", "isotonic")


def _render_top_label(both: list) -> list[str]:
    """Top-label calibration (a diagnosis, not a library option) beside temperature."""
    lines = ["", "## Top-label calibration against temperature", "",
             "Per outer fold, on the same inner out-of-fold rows as the temperature: only "
             "the predicted label's confidence recalibrated, per predicted class (Gupta & "
             "Ramdas, *Top-label calibration*, ICLR 2022; `mmfuse.uncertainty.toplabel`): "
             "uniform-mass histogram binning (bins of ≥ 50 rows) or an isotonic map; a class "
             "predicted on fewer than 50 rows shares one map fitted on all rows. The label "
             "is kept, so the accuracy change is 0 by construction (temperature: the same). "
             "ECE of the recalibrated top-label confidence, mean over outer folds; paired: "
             "temperature − top-label per outer fold, mean [95% t-interval] (positive: "
             "top-label is better).", "",
             "| dataset | encoders | ECE raw | ECE temperature | ECE top-label binning "
             "| ECE top-label isotonic | floor | paired: temperature − binning "
             "| paired: temperature − isotonic | accuracy change |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    done = False
    for config, r in both:
        if "main" not in r or FUSION not in r["main"]["rows"]:
            continue
        t = r["main"]["rows"][FUSION]["uncertainty"]
        diag = t["diagnosis"]
        if f"test_ece_top_label_{TOP_LABEL[0]}" not in diag:
            continue
        done = True
        top = [diag[f"test_ece_top_label_{n}"] for n in TOP_LABEL]
        lines.append(
            f"| {r['dataset']} | {config} | {t['raw']['ece']['mean']:.3f} | "
            f"{t['ece']['mean']:.3f} | {top[0]['mean']:.3f} | {top[1]['mean']:.3f} | "
            f"{t['ece_floor']['mean']:.3f} | "
            + " | ".join(_paired(t["ece"]["folds"], x["folds"]) for x in top)
            + " | 0 (label kept) |")
    if not done:
        lines.append("| (not measured in this run) | | | | | | | | | |")
    return lines


def _render_auto(results: list[dict]) -> list[str]:
    lines = ["", "## fusion=auto: calibrated as the strategy it chose", "",
             "`fusion=\"auto\"` (classical candidates: "
             f"`{AUTO_PARAMS}`), temperature and APS sets learned per outer training fold "
             "two ways (`calibrate_on`): *auto* (the default): the strategy auto chose on the "
             "training rows, calibrated as it would be fitted alone (its bagged experts "
             "where it has a meta level, else its refits); *refits* (before): clones of the "
             "whole auto refit on 5 grouped inner folds, each redoing the selection. Same "
             "outer folds. *CPU*: the evaluation's process CPU time (the fits of auto "
             "included), the new way measured first.", "",
             "| dataset | calibrated on | chosen (per outer fold) | accuracy | ECE | "
             "debiased ECE | coverage @0.9 | set size @0.9 | coverage @0.8 | set size @0.8 "
             "| coverage @0.9, 50% of the strongest missing | CPU (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    done = [r for r in results if "auto" in r and "main" in r]
    if not done:
        return lines + ["| (not measured in this run) | | | | | | | | | | | |"]
    for r in done:
        strongest = summary(r)["strongest"]
        for way in AUTO_WAYS:
            a = r["auto"][way]
            u = a["rows"]["auto"]["uncertainty"]
            masked = u.get("sets_masked", {}).get(f"aps@0.9 {strongest}-0.5")
            lines.append(
                f"| {r['dataset']} | {way} | {', '.join(sorted(set(a['chosen'])))} | "
                f"{a['rows']['auto']['accuracy']:.3f} | {_m(u['ece'])} | "
                + (_m(u["ece_debiased"]) if "ece_debiased" in u else "") + " | "
                f"{_m(u['sets']['aps@0.9']['coverage'])} | "
                f"{_m(u['sets']['aps@0.9']['set_size'])} | "
                f"{_m(u['sets']['aps@0.8']['coverage'])} | "
                f"{_m(u['sets']['aps@0.8']['set_size'])} | "
                + (_m(masked["coverage"]) if masked else "") + f" | {a['cpu_seconds']:.0f} |")
    lines += ["", "Paired by outer fold: *refits* − *auto*, mean [95% t-interval]; positive: "
              "the default (*auto*) is better (smaller). CPU ratio: *refits* / *auto*.", "",
              "| dataset | ECE | distance of coverage @0.9 from 0.9 | distance of coverage "
              "@0.8 from 0.8 | set size @0.9 | CPU ratio (wall ratio) |",
              "|---|---|---|---|---|---|"]
    for r in done:
        old, new = (r["auto"][w]["rows"]["auto"]["uncertainty"] for w in ("refits", "auto"))

        def gap(u: dict, target: float) -> list[float]:
            return [abs(c - target) for c in u["sets"][f"aps@{target:g}"]["coverage"]["folds"]]

        cells = [_paired(old["ece"]["folds"], new["ece"]["folds"]),
                 _paired(gap(old, 0.9), gap(new, 0.9)), _paired(gap(old, 0.8), gap(new, 0.8)),
                 _paired(old["sets"]["aps@0.9"]["set_size"]["folds"],
                         new["sets"]["aps@0.9"]["set_size"]["folds"])]
        ra, rr = r["auto"]["auto"], r["auto"]["refits"]
        lines.append(f"| {r['dataset']} | " + " | ".join(cells)
                     + f" | {rr['cpu_seconds'] / ra['cpu_seconds']:.1f}× "
                     f"({rr['seconds'] / ra['seconds']:.1f}×) |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--fresh", action="store_true", help="ignore saved results")
    parser.add_argument("--json", type=Path, default=RESULTS_JSON,
                        help="where this run keeps its results (several runs in parallel: "
                             "one file each, then --merge)")
    parser.add_argument("--merge", default="",
                        help="comma-separated JSON files of parallel runs to merge into "
                             "uncertainty.json (no measuring)")
    parser.add_argument("--render", action="store_true",
                        help="only rebuild the section from the saved results (no measuring)")
    parser.add_argument("--encoders", choices=tuple(CONFIGS), default="classical",
                        help="encoder configuration to measure (pretrained: the main part only)")
    args = parser.parse_args()
    saved = {} if args.fresh or not args.json.exists() else json.loads(args.json.read_text())
    for part in filter(None, args.merge.split(",")):
        saved.update(json.loads(Path(part).read_text()))
    datasets = [] if args.merge or args.render else args.datasets.split(",")
    for dataset in datasets:
        run_dataset(dataset, args.parts.split(","), saved, args.json, args.encoders)
    if args.merge:
        atomic_write_text(args.json, _dump(saved))
    if args.json == RESULTS_JSON:
        results = [saved[d] for d in DATASETS if d in saved]
        pretrained = [saved[k] for k in (result_key(d, "pretrained") for d in DATASETS)
                      if k in saved]
        write_section("uncertainty", render(results, pretrained))
    if args.json == RESULTS_JSON:
        print((HERE / "results" / "uncertainty.md").read_text())


if __name__ == "__main__":
    main()
