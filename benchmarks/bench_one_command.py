"""The one command (``--encoders auto --fusion auto``) against what a careful person gets by
trying a few combinations, on the bundled datasets with real group shift (issue 27).

For each grouped dataset (tuxpaint-grouped, icons-family, icons-theme), on the dataset's
default outer splits (stratified grouped 5-fold, or leave one theme out), in one run:

* **one command**: ``evaluate(encoders="auto", strategies=["auto"])``, the library's
  defaults (parsimonious encoder choice, gmu raced among ``auto``'s candidates);
* **without heads**: the same with ``auto``'s ``neural=False``: what the raced head adds to
  the one command, in accuracy and in time;
* **without parsimony**: the same with the encoder choice of main before issue 27 (the best
  inner mean, a concatenation chosen on any edge; ``--ablations`` only);
* **single encoders**: the same with the encoder choice limited to single encoders (no
  concatenation ``a+b`` of the best two; ``no_pairs``): what the concatenations the choice
  makes (under its parsimony rule) gain on the outer folds (``--ablations`` only);
* **eigen factor**: the one command with the Gram-factor fits of wide designs
  (``mmfuse.fusion.linear.gram_factor``) factored by the eigendecomposition, as before
  issue 27's pivoted Cholesky (``eigen_factor``): the speed-up and its effect on
  accuracy, in one run (``--ablations`` only);
* **seed twice**: the one command with the seed baseline's views made dense twice per fit
  (for its scaler, then for its sum), as before issue 27's speed-up of it: the same
  choices and accuracies (its arithmetic is the same), and the CPU time it saves, in one
  run (``seed_twice``; ``--ablations`` only);
* **where**: the one command's CPU time by stage (the encoder choice per column, ``auto``'s
  per-modality experts and candidates; ``where``; ``--ablations`` only);
* **fixed**: every combination of image hog / efficientnet-lite0 and text tfidf / minilm,
  with every single modality and the strategies early, late, seed-baseline, stacking and
  gmu; the best row is "the best fixed combination";
* **baseline time**: the single-modality rows of the default encoders (hog, tfidf);
* **separate**: the one command with ``encoder_choice.SEPARATE_EXPERTS`` switched (the best
  two encoders of a modality also scored as separate experts ``a|b``);
* **stacking:i**: stacking and the single modalities alone on combination i (measured again
  after a change to stacking, without the whole fixed part).

Reports, with paired 95% t-intervals over the outer folds: the one command − the best
fixed combination (target ≥ −1 point); stacking − the best single modality of the same
encoders (target ≥ −1 point), for every combination; gmu − the best of early/late/seed of
the same encoders, with gmu's fit time over late's (the heads' gain and cost); the one
command's time over the baseline's (target ≤ 30×), in wall-clock time and in this
process's CPU time (the machine is shared: the CPU ratio does not move with the other jobs'
load). Features come from the warm cache.

Writes ``benchmarks/results/one_command.md`` (+ ``.json``); resumable per dataset and
part::

    PYTHONPATH=src MMFUSE_DATA=../shared/data python benchmarks/bench_one_command.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from unittest import mock

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("MMFUSE_DATA", str(REPO.parent / "shared" / "data"))

from _common import code_version, machine, write_section  # noqa: E402
from mmfuse._io import atomic_write_text  # noqa: E402
from mmfuse.data.datasets import dataset_info, load_dataset  # noqa: E402
from mmfuse.evaluate import FeatureTable, evaluate  # noqa: E402

RESULTS_JSON = HERE / "results" / "one_command.json"
DATASETS = ("tuxpaint-grouped", "icons-family", "icons-theme")
MODALITIES = ("image", "text")
COMBOS = ({"image": "hog", "text": "tfidf"}, {"image": "efficientnet-lite0", "text": "tfidf"},
          {"image": "hog", "text": "minilm"}, {"image": "efficientnet-lite0", "text": "minilm"})
DEFAULT = COMBOS[0]
FIXED_STRATEGIES = ["early", "late", "seed-baseline", "stacking", "gmu"]
SIMPLE = ("early", "late", "seed-baseline")
TIME_TARGET = 30
BASELINE_RUNS = 2


def _t_interval(diff) -> dict:
    from scipy import stats

    diff = np.asarray(diff, float)
    half = float(np.std(diff, ddof=1) / np.sqrt(len(diff))) * float(
        stats.t.ppf(0.975, len(diff) - 1)) if len(diff) > 1 else float("nan")
    return {"mean": float(diff.mean()), "ci95": [float(diff.mean() - half),
                                                 float(diff.mean() + half)]}


def _timed(X, y, groups, cv, encoders, strategies, fusion_params=None, singles=True,
           cpu: dict | None = None):
    start, cpu_start = time.perf_counter(), time.process_time()
    table = FeatureTable(X, encoders, on_error="skip", cache=True)
    result = evaluate(X, y, groups=groups, cv=cv, features=table, strategies=strategies,
                      on_error="skip", baseline=False, singles=singles, n_jobs=1,
                      fusion_params=fusion_params)
    if cpu is not None:  # this process's CPU time: less sensitive to other jobs' load
        cpu["seconds"] = time.process_time() - cpu_start
    return result, time.perf_counter() - start


def _rows(result) -> list[dict]:
    return [{"name": r.name, "kind": r.kind, "accuracy": r.accuracy,
             "fold_accuracy": r.fold_accuracy, "seconds": r.seconds, "chosen": r.chosen}
            for r in result.rows]


def _one(X, y, groups, cv, fusion_params=None) -> dict:
    cpu: dict = {}
    result, secs = _timed(X, y, groups, cv, "auto", ["auto"], fusion_params, cpu=cpu)
    row = result.row("auto")
    return {"accuracy": row.accuracy, "fold_accuracy": row.fold_accuracy,
            "chosen_fusion": row.chosen, "chosen_encoders": result.chosen_encoders,
            "seconds": secs, "cpu_seconds": cpu["seconds"],
            "singles": {r.name: r.accuracy for r in result.rows
                                         if r.kind == "single"},
            "code": code_version(), "machine": machine()}


def _where(X, y, groups, cv) -> dict:
    """The one command's CPU time by stage (this process's CPU, summed over the outer
    folds): the encoder choice per column (its single candidates, its pairs, and of both
    the TF-IDF fits per inner fold), ``auto``'s shared per-modality experts and each of
    its candidates' inner CV; the rest (``auto``'s refit of its choice, the evaluation's
    single-modality rows, the feature table) is the total less these."""
    from mmfuse import encoder_choice as selection
    from mmfuse.encoders import parts as encoder_parts
    from mmfuse.fusion import auto as auto_module

    stages: Counter = Counter()

    def timed(name_of, fn):
        def wrapper(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                stages[name_of(*args, **kwargs)] += time.process_time() - start
        return wrapper

    def choice_stage(parts, names, y, splits, classifier=None, random_state=None,
                     shared=None, **kwargs):
        pairs = any("+" in n or "|" in n for n in names)
        column = shared[0] if shared is not None else "?"
        return f"encoder choice: {column} {'pairs' if pairs else 'single encoders'}"

    patches = [
        mock.patch.object(selection, "score_candidates",
                          timed(choice_stage, selection.score_candidates)),
        mock.patch.object(encoder_parts, "fit_on_rows",
                          timed(lambda *a, **k: "of which TF-IDF fits (encoder choice and "
                                                "outer folds)", encoder_parts.fit_on_rows)),
        mock.patch.object(auto_module, "out_of_fold_probas",
                          timed(lambda *a, **k: "auto: per-modality experts (inner CV)",
                                auto_module.out_of_fold_probas)),
        mock.patch.object(auto_module.AutoFusion, "_candidate_oof",
                          timed(lambda self, c, *a, **k: f"auto: {c.name} (inner CV)",
                                auto_module.AutoFusion._candidate_oof)),
    ]
    for patch in patches:
        patch.start()
    try:
        one = _one(X, y, groups, cv)
    finally:
        for patch in reversed(patches):
            patch.stop()
    known = sum(v for k, v in stages.items() if not k.startswith("of which"))
    return {"cpu_seconds": one["cpu_seconds"], "accuracy": one["accuracy"],
            "stages": {**dict(stages.most_common()),
                       "rest (auto's refit, the single-modality rows, the table)":
                       one["cpu_seconds"] - known},
            "code": one["code"]}


def _eigen_factor(gram):
    """The Gram fit's factor before issue 27's pivoted Cholesky: V Λ^{1/2}, directions
    with an eigenvalue below GRAM_RCOND of the largest dropped."""
    from mmfuse.fusion.linear import GRAM_RCOND

    vals, vecs = np.linalg.eigh(gram)
    keep = vals > max(float(vals.max()), 0.0) * GRAM_RCOND
    vals, vecs = vals[keep], vecs[:, keep]
    root = np.sqrt(vals)
    return vecs * root, lambda coef: (np.asarray(coef) / root) @ vecs.T


def _seed_twice():
    """The seed baseline's fit and sum before issue 27's speed-up: each view made dense
    for its scaler, then again for the sum, with a zero array and a row copy per view."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from mmfuse.fusion.linear import fit_logistic_gram, gram_applicable
    from mmfuse.views import dense

    def _sum(self, views, present):
        views = {m: dense(v) for m, v in views.items()}
        width = max(v.shape[1] for v in views.values())
        dtype = np.result_type(*(v.dtype for v in views.values()), np.float32)
        total = np.zeros((next(iter(views.values())).shape[0], width), dtype=dtype)
        for m in sorted(views):
            z = np.zeros_like(views[m])
            if present[m].any():
                z[present[m]] = self.scalers_[m].transform(views[m][present[m]])
            total[:, : z.shape[1]] += z / len(views)
        return total

    def _fit(self, views, y, present, groups):
        self.scalers_ = {m: StandardScaler().fit(dense(views[m][np.flatnonzero(present[m])]))
                         for m in sorted(views)}
        self.modality_weights_ = {m: 1.0 / len(views) for m in sorted(views)}
        f = self._sum(views, present)
        self.model_ = LogisticRegression(max_iter=1000)
        if gram_applicable(self.model_, f.shape[0], f.shape[1]):
            fit_logistic_gram(self.model_, [f], y)
        else:
            self.model_.fit(f, y)

    return _fit, _sum


SEED_REPEATS = 3


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _same_choices(one: dict, other: dict) -> str:
    """Whether a same-run ablation chose the one command's fusion and encoders in every
    fold: "yes" or "no"."""
    return _yes(other["chosen_fusion"] == one["chosen_fusion"]
                and other["chosen_encoders"] == one["chosen_encoders"])


def _seed_fits(X, y, groups, cv, chosen: dict | None) -> dict:
    """The seed baseline fitted as before its speed-up (:func:`_seed_twice`) and as now,
    alternately, on each inner fold of the first outer training fold (the inner CV of
    ``auto``: the views the one command chose there, TF-IDF fit on the outer training rows),
    each :data:`SEED_REPEATS` times: this process's CPU per fit (median of the repeats, summed
    over the folds) and whether the two fits are equal to the bit."""
    from threadpoolctl import threadpool_limits

    from mmfuse.encoders.parts import candidate_view
    from mmfuse.evaluate.folds import make_splits
    from mmfuse.fusion.baseline import SeedBaseline
    from mmfuse.splits import inner_splits

    table = FeatureTable(X, "auto", on_error="skip", cache=True)
    codes = np.unique(y, return_inverse=True)[1]
    groups = np.asarray(groups)
    train = make_splits(codes, groups, cv, 0)[0][0][0]
    chosen = chosen or {c: spec.names[0] for c, (spec, _) in table.candidates.items()}
    views, present = {}, {}
    for column, (_, parts) in table.candidates.items():
        views[column], present[column], _ = candidate_view(parts, chosen[column], train)
    fit, add = _seed_twice()

    class Twice(SeedBaseline):
        _fit, _sum = fit, add

    cpu = {"twice": 0.0, "once": 0.0}
    equal = True
    for inner_train, _ in inner_splits(codes[train], groups[train], 5, 0):
        rows = train[inner_train]
        v = {m: views[m][rows] for m in views}
        p = {m: present[m][rows] for m in views}
        times: dict = {"twice": [], "once": []}
        models = {}
        with threadpool_limits(limits=1, user_api="blas"):
            for _ in range(SEED_REPEATS):
                for label, cls in (("twice", Twice), ("once", SeedBaseline)):
                    start = time.process_time()
                    models[label] = cls().fit(v, codes[rows], p)
                    times[label].append(time.process_time() - start)
        for label in cpu:
            cpu[label] += float(np.median(times[label]))
        a, b = models["twice"].model_, models["once"].model_
        equal &= bool(np.array_equal(a.coef_, b.coef_)
                      and np.array_equal(a.intercept_, b.intercept_))
    return {"cpu_twice": cpu["twice"], "cpu_once": cpu["once"], "equal": equal,
            "encoders": chosen, "repeats": SEED_REPEATS, "code": code_version()}


def run_part(dataset: str, part: str, out: dict) -> None:
    X, y, groups = load_dataset(dataset)
    cv = dataset_info(dataset)["cv"]
    X = X[[m for m in MODALITIES if m in X.columns]]
    print(f"{dataset} / {part}: {len(y)} rows, cv {cv}", flush=True)
    if part == "warm":
        start = time.perf_counter()
        FeatureTable(X, "auto", on_error="skip", cache=True)
        out["warm_seconds"] = time.perf_counter() - start
    elif part == "one":
        out["one"] = _one(X, y, groups, cv)
    elif part == "where":
        out["where"] = _where(X, y, groups, cv)
    elif part == "no_heads":
        out["no_heads"] = _one(X, y, groups, cv, {"auto": {"neural": False}})
    elif part == "no_parsimony":
        from mmfuse import encoder_choice as selection

        with mock.patch.object(selection, "PARSIMONY", False):
            out["no_parsimony"] = _one(X, y, groups, cv)
    elif part == "no_pairs":
        import dataclasses

        from mmfuse import encoder_choice as selection

        select = selection.select_encoder

        def singles_only(parts, candidates, *args, **kwargs):
            return select(parts, dataclasses.replace(candidates, pair=False), *args,
                          **kwargs)

        # read at call time by the evaluation
        with mock.patch.object(selection, "select_encoder", singles_only):
            out["no_pairs"] = _one(X, y, groups, cv)
    elif part == "eigen_factor":
        from mmfuse.fusion import linear

        # read at call time by fit_logistic_gram
        with mock.patch.object(linear, "gram_factor", _eigen_factor):
            out["eigen_factor"] = _one(X, y, groups, cv)
    elif part == "seed_twice":
        from mmfuse.fusion.baseline import SeedBaseline

        fit, add = _seed_twice()
        with mock.patch.object(SeedBaseline, "_fit", fit), \
                mock.patch.object(SeedBaseline, "_sum", add):
            out["seed_twice"] = _one(X, y, groups, cv)
    elif part == "early_own":
        from mmfuse.fusion.early import EarlyFusion

        # early fusion of one view fitting its own model, as before it shared the expert's
        with mock.patch.object(EarlyFusion, "_is_the_expert", lambda *args: False):
            out["early_own"] = _one(X, y, groups, cv)
    elif part == "seed_fits":
        out["seed_fits"] = _seed_fits(X, y, groups, cv,
                                      (out.get("one") or {}).get("chosen_encoders", [None])[0])
    elif part == "separate":
        from mmfuse import encoder_choice as selection

        switched = not selection.SEPARATE_EXPERTS
        with mock.patch.object(selection, "SEPARATE_EXPERTS", switched):
            out["separate"] = {**_one(X, y, groups, cv), "separate_experts": switched}
    elif part == "baseline":
        runs, cpus = [], []
        for _ in range(BASELINE_RUNS):
            cpu: dict = {}
            runs.append(_timed(X, y, groups, cv, DEFAULT, [], cpu=cpu)[1])
            cpus.append(cpu["seconds"])
        out["baseline_seconds"] = float(np.median(runs))
        out["baseline_runs"] = runs
        out["baseline_cpu_seconds"] = float(np.median(cpus))
        out["baseline_machine"] = machine()
    elif part.startswith("stacking:"):
        # stacking and the single modalities alone, on one combination (cheaper than the
        # whole fixed part, whose other rows a change to stacking leaves as they were)
        combo = COMBOS[int(part.split(":")[1])]
        result, secs = _timed(X, y, groups, cv, combo, ["stacking"])
        out.setdefault("stacking_rerun", {})[_label(combo)] = {
            "rows": _rows(result), "seconds": secs, "code": code_version()}
    elif part.startswith("fixed:"):
        combo = COMBOS[int(part.split(":")[1])]
        result, secs = _timed(X, y, groups, cv, combo, FIXED_STRATEGIES)
        label = ", ".join(f"{m}={e}" for m, e in combo.items())
        out.setdefault("fixed", {})[label] = {"rows": _rows(result), "seconds": secs,
                                              "code": code_version()}
    print(f"  done: {part}", flush=True)


def parts_of(with_ablations: bool) -> list[str]:
    parts = ["warm", "one", "baseline"] + [f"fixed:{i}" for i in range(len(COMBOS))]
    parts += ["no_heads", "separate"]
    return parts + (["no_parsimony", "no_pairs", "eigen_factor", "seed_twice", "seed_fits",
                     "early_own", "where"]
                    if with_ablations else [])


def summary(r: dict) -> dict:
    """The targets' numbers for one dataset's result (what is measured so far)."""
    s: dict = {}
    fixed = r.get("fixed", {})
    rows = [(label, row) for label, f in fixed.items() for row in f["rows"]]
    if "one" in r and rows:
        label, best = max(rows, key=lambda lr: lr[1]["accuracy"])
        s["best_fixed"] = {"encoders": label, "name": best["name"],
                           "accuracy": best["accuracy"]}
        s["one_vs_best"] = _t_interval(np.subtract(r["one"]["fold_accuracy"],
                                                   best["fold_accuracy"]))
    s["stacking"], s["heads"] = {}, {}
    for label, f in fixed.items():
        by = {row["name"]: row for row in f["rows"]}
        singles = [row for row in f["rows"] if row["kind"] == "single"]
        rerun = r.get("stacking_rerun", {}).get(label)
        if rerun is not None:  # stacking measured again, with its singles in the same run
            by["stacking"] = next(row for row in rerun["rows"] if row["name"] == "stacking")
            singles = [row for row in rerun["rows"] if row["kind"] == "single"]
        if "stacking" in by and singles:
            single = max(singles, key=lambda row: row["accuracy"])
            s["stacking"][label] = {"stacking": by["stacking"]["accuracy"],
                                    "best_single": single["name"],
                                    "single": single["accuracy"],
                                    **_t_interval(np.subtract(by["stacking"]["fold_accuracy"],
                                                              single["fold_accuracy"]))}
        simple = [by[n] for n in SIMPLE if n in by]
        if "gmu" in by and simple:
            ref = max(simple, key=lambda row: row["accuracy"])
            s["heads"][label] = {"gmu": by["gmu"]["accuracy"], "best_simple": ref["name"],
                                 "simple": ref["accuracy"],
                                 "cost": by["gmu"]["seconds"] / max(by["late"]["seconds"], 1e-9)
                                 if "late" in by else float("nan"),
                                 **_t_interval(np.subtract(by["gmu"]["fold_accuracy"],
                                                           ref["fold_accuracy"]))}
    for variant in ("no_heads", "no_parsimony", "separate", "no_pairs", "eigen_factor",
                    "seed_twice", "early_own"):
        if "one" in r and variant in r:
            s[variant] = _t_interval(np.subtract(r["one"]["fold_accuracy"],
                                                 r[variant]["fold_accuracy"]))
    if "one" in r and "baseline_seconds" in r:
        s["time_ratio"] = r["one"]["seconds"] / r["baseline_seconds"]
    if "cpu_seconds" in r.get("one", {}) and "baseline_cpu_seconds" in r:
        s["cpu_ratio"] = r["one"]["cpu_seconds"] / r["baseline_cpu_seconds"]
    return s


def _time_ratio(a: dict, b: dict) -> str:
    """a's time over b's, where both ran on the same code (one run of the script, one
    load of the shared machine); CPU time where both have it."""
    if a.get("code") != b.get("code"):
        return f"not comparable ({a.get('code')} / {b.get('code')})"
    if "cpu_seconds" in a and "cpu_seconds" in b:
        return f"{a['cpu_seconds'] / b['cpu_seconds']:.2f}× (CPU)"
    return f"{a['seconds'] / b['seconds']:.2f}×"


def _ci(d: dict) -> str:
    return f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"


def render(results: list[dict]) -> str:
    lines = [
        "# The one command on grouped data with real shift (issue 27)",
        "",
        f"Measured by `benchmarks/bench_one_command.py` ({machine()}; shared with other "
        "jobs, so times are ratios within one run; each part records when and on which code "
        "it ran). **One command**: `evaluate(encoders=\"auto\", strategies=[\"auto\"])` with "
        "the library's defaults. **Best fixed**: the best row (single modality, early, late, "
        "seed-baseline, stacking or gmu) over every combination of image hog / "
        "efficientnet-lite0 and text tfidf / minilm, on the same outer splits. Δ: paired "
        "differences over the outer folds, mean [95% t-interval]. Outer splits: each "
        "dataset's default (stratified grouped 5-fold; icons-theme: leave one theme out, 3 "
        "folds).",
        "",
        "| dataset | rows | one command | best fixed | Δ one − best [95% CI] | ≥ best − 1 pt "
        "| time ratio (≤ 30×) | encoders chosen (per fold) | fusion chosen (per fold) |",
        "|---|---:|---:|---|---|---|---:|---|---|",
    ]
    for r in results:
        s = summary(r)
        if "one" not in r:
            continue
        enc = Counter(", ".join(f"{c}={e}" for c, e in sorted(f.items()))
                      for f in r["one"]["chosen_encoders"])
        fus = Counter(r["one"]["chosen_fusion"])
        best = s.get("best_fixed")
        lines.append(
            f"| {r['dataset']} | {r['n']} | {r['one']['accuracy']:.3f} | "
            + (f"{best['accuracy']:.3f} ({best['name']}; {best['encoders']}) | "
               f"{_ci(s['one_vs_best'])} | "
               + ("yes" if s["one_vs_best"]["mean"] >= -0.01 else "**no**")
               if best else "not measured | | ")
            + " | "
            + (f"{s['time_ratio']:.1f}× ({r['one']['seconds']:.0f} s / "
               f"{r['baseline_seconds']:.1f} s)" if "time_ratio" in s else "")
            + (f"; CPU {s['cpu_ratio']:.1f}× ({r['one']['cpu_seconds']:.0f} s / "
               f"{r['baseline_cpu_seconds']:.1f} s)" if "cpu_ratio" in s else "")
            + f" | {'; '.join(f'{k} ×{v}' for k, v in enc.most_common())} | "
            f"{'; '.join(f'{k} ×{v}' for k, v in fus.most_common())} |")
    lines += ["", "### Stacking against the best single modality of the same encoders", "",
              "| dataset | encoders | stacking | best single | Δ [95% CI] | ≥ single − 1 pt |",
              "|---|---|---:|---:|---|---|"]
    for r in results:
        for label, st in summary(r)["stacking"].items():
            lines.append(f"| {r['dataset']} | {label} | {st['stacking']:.3f} | "
                         f"{st['single']:.3f} ({st['best_single']}) | {_ci(st)} | "
                         + ("yes" if st["mean"] >= -0.01 else "**no**") + " |")
    lines += ["", "### The learned head (gmu): gain and cost", "",
              "Fixed encoders: gmu against the best of early, late and seed-baseline, and "
              "gmu's fit time over late fusion's (outer folds summed). In the one command: "
              "the one command against the same with `auto(neural=False)` (gmu not raced), "
              "and the time it adds.", "",
              "| dataset | encoders | gmu | best simple | Δ [95% CI] | time gmu / late |",
              "|---|---|---:|---:|---|---:|"]
    for r in results:
        for label, h in summary(r)["heads"].items():
            lines.append(f"| {r['dataset']} | {label} | {h['gmu']:.3f} | {h['simple']:.3f} "
                         f"({h['best_simple']}) | {_ci(h)} | {h['cost']:.1f}× |")
    lines += ["", "| dataset | one command | without heads | Δ [95% CI] | time with / without |",
              "|---|---:|---:|---|---:|"]
    for r in results:
        s = summary(r)
        if "no_heads" in s:
            lines.append(f"| {r['dataset']} | {r['one']['accuracy']:.3f} | "
                         f"{r['no_heads']['accuracy']:.3f} | {_ci(s['no_heads'])} | "
                         f"{_time_ratio(r['one'], r['no_heads'])} |")
    separate = [r for r in results if "separate" in summary(r)]
    if separate:
        lines += ["", "### Several experts per modality in the encoder choice", "",
                  "The one command against the same with `encoder_choice.SEPARATE_EXPERTS` "
                  "switched (the best two encoders of a modality also scored as separate "
                  "experts `a|b`, chosen between the two forms by the same rule).", "",
                  "| dataset | one command | switched | SEPARATE_EXPERTS when switched | "
                  "Δ one − switched [95% CI] | time switched / one | encoders chosen when "
                  "switched |", "|---|---:|---:|---|---|---:|---|"]
        for r in separate:
            sep = r["separate"]
            enc = Counter(", ".join(f"{c}={e}" for c, e in sorted(f.items()))
                          for f in sep["chosen_encoders"])
            lines.append(f"| {r['dataset']} | {r['one']['accuracy']:.3f} | "
                         f"{sep['accuracy']:.3f} | {sep['separate_experts']} | "
                         f"{_ci(summary(r)['separate'])} | "
                         f"{_time_ratio(sep, r['one'])} | "
                         f"{'; '.join(f'{k} ×{v}' for k, v in enc.most_common())} |")
    ablated = [r for r in results if "no_parsimony" in summary(r)]
    if ablated:
        lines += ["", "### Parsimony in the encoder choice", "",
                  "The one command against the same with the encoder choice before issue 27 "
                  "(a concatenation chosen on any edge of its inner mean).", "",
                  "| dataset | one command | without parsimony | Δ [95% CI] | encoders "
                  "chosen without parsimony |", "|---|---:|---:|---|---|"]
        for r in ablated:
            enc = Counter(", ".join(f"{c}={e}" for c, e in sorted(f.items()))
                          for f in r["no_parsimony"]["chosen_encoders"])
            lines.append(f"| {r['dataset']} | {r['one']['accuracy']:.3f} | "
                         f"{r['no_parsimony']['accuracy']:.3f} | "
                         f"{_ci(summary(r)['no_parsimony'])} | "
                         f"{'; '.join(f'{k} ×{v}' for k, v in enc.most_common())} |")
    factored = [r for r in results if "eigen_factor" in summary(r)]
    if factored:
        lines += ["", "### The Gram factor of wide fits", "",
                  "The one command against the same with the Gram-factor fits of wide designs "
                  "(early fusion, the seed baseline) factored by the eigendecomposition, as "
                  "before the pivoted Cholesky (`mmfuse.fusion.linear.gram_factor`), in the "
                  "same run.", "",
                  "| dataset | one command | eigen factor | Δ one − eigen [95% CI] | same fusion "
                  "and encoders chosen | time one / eigen |", "|---|---:|---:|---|---|---:|"]
        for r in factored:
            other = r["eigen_factor"]
            same = _same_choices(r["one"], other)
            lines.append(f"| {r['dataset']} | {r['one']['accuracy']:.3f} | "
                         f"{other['accuracy']:.3f} | {_ci(summary(r)['eigen_factor'])} | "
                         f"{same} | {_time_ratio(r['one'], other)} |")
    twice = [r for r in results if "seed_twice" in summary(r)]
    if twice:
        lines += ["", "### The seed baseline's dense views", "",
                  "The one command against the same with the seed baseline as before its "
                  "speed-up (each view made dense twice per fit, a zero array and a row copy "
                  "per view; `seed_twice`), in the same run: the same arithmetic, so the same "
                  "choices and accuracies. The time ratio of two whole runs is mostly this "
                  "shared machine's run-to-run spread (the paired measure is below).", "",
                  "| dataset | one command | seed twice | Δ one − twice [95% CI] | same fusion "
                  "and encoders chosen | same per-fold accuracies | time one / twice |",
                  "|---|---:|---:|---|---|---|---:|"]
        for r in twice:
            other = r["seed_twice"]
            same = _same_choices(r["one"], other)
            folds = _yes(other["fold_accuracy"] == r["one"]["fold_accuracy"])
            lines.append(f"| {r['dataset']} | {r['one']['accuracy']:.3f} | "
                         f"{other['accuracy']:.3f} | {_ci(summary(r)['seed_twice'])} | "
                         f"{same} | {folds} | "
                         f"{_time_ratio(r['one'], other)} |")
    own = [r for r in results if "early_own" in summary(r)]
    if own:
        lines += ["", "### Early fusion of one view shares its expert", "",
                  "The one command against the same with early fusion of one view (the "
                  "evaluation's single-modality rows) fitting its own model instead of sharing "
                  "the per-modality expert a late fusion refit on the same rows (`early_own`), "
                  "in the same run: the same model, so the same choices and accuracies; it "
                  "saves a fit only in folds whose choice refits that expert (late fusion, a "
                  "single modality).", "",
                  "| dataset | one command | early own fit | same fusion and encoders chosen | "
                  "same per-fold accuracies | time one / own |", "|---|---:|---:|---|---|---:|"]
        for r in own:
            other = r["early_own"]
            same = _same_choices(r["one"], other)
            folds = _yes(other["fold_accuracy"] == r["one"]["fold_accuracy"])
            lines.append(f"| {r['dataset']} | {r['one']['accuracy']:.3f} | "
                         f"{other['accuracy']:.3f} | {same} | "
                         f"{folds} | {_time_ratio(r['one'], other)} |")
    fitted = [r for r in results if "seed_fits" in r]
    if fitted:
        lines += ["", "The seed baseline's fits alone (`seed_fits`): on each inner fold of the "
                  "first outer training fold, with the encoders the one command chose there, "
                  "fitted as before and as now alternately (CPU per fit: the median of "
                  f"{SEED_REPEATS} repeats, summed over the inner folds): a paired measure "
                  "of the change, which the whole command's run-to-run spread on this shared "
                  "machine hides.", "",
                  "| dataset | encoders | CPU before | CPU now | now / before | same model to "
                  "the bit |", "|---|---|---:|---:|---:|---|"]
        for r in fitted:
            f = r["seed_fits"]
            enc = ", ".join(f"{c}={e}" for c, e in sorted(f["encoders"].items()))
            lines.append(f"| {r['dataset']} | {enc} | {f['cpu_twice']:.2f} s | "
                         f"{f['cpu_once']:.2f} s | {f['cpu_once'] / f['cpu_twice']:.2f}× | "
                         f"{'yes' if f['equal'] else '**no**'} |")
    located = [r for r in results if "where" in r]
    if located:
        lines += ["", "### Where the one command's CPU goes", "",
                  "This process's CPU time by stage, summed over the outer folds (`where`: "
                  "the stages timed by wrapping them with `unittest.mock.patch.object`; "
                  "\"of which\" is part of the rows above it). Share: of the one command's "
                  "CPU in that run.", "",
                  "| dataset | stage | CPU s | share |", "|---|---|---:|---:|"]
        for r in located:
            total = r["where"]["cpu_seconds"]
            for stage, secs in r["where"]["stages"].items():
                if secs >= 0.005 * total:
                    lines.append(f"| {r['dataset']} | {stage} | {secs:.1f} | "
                                 f"{secs / total:.0%} |")
            lines.append(f"| {r['dataset']} | **total** ({r['where']['code']}) | "
                         f"{total:.1f} | 100% |")
    paired = [r for r in results if "no_pairs" in summary(r)]
    if paired:
        lines += ["", "### Concatenations in the encoder choice", "",
                  "How often the one command's encoder choice takes a concatenation `a+b` "
                  "of a modality's best two encoders (under its parsimony rule: it must beat "
                  "the best single encoder by more than one SE of the paired inner-fold "
                  "differences, on at least 3 inner folds), and the one command against the "
                  "same with single encoders only.", "",
                  "| dataset | concatenations chosen (column-folds) | one command | single "
                  "encoders only | Δ one − singles [95% CI] | time one / singles | encoders "
                  "chosen with singles only |", "|---|---|---:|---:|---|---:|---|"]
        for r in paired:
            chosen = [e for f in r["one"]["chosen_encoders"] for e in f.values()]
            joined = sum("+" in e or "|" in e for e in chosen)
            enc = Counter(", ".join(f"{c}={e}" for c, e in sorted(f.items()))
                          for f in r["no_pairs"]["chosen_encoders"])
            lines.append(f"| {r['dataset']} | {joined} of {len(chosen)} | "
                         f"{r['one']['accuracy']:.3f} | {r['no_pairs']['accuracy']:.3f} | "
                         f"{_ci(summary(r)['no_pairs'])} | "
                         f"{_time_ratio(r['one'], r['no_pairs'])} | "
                         f"{'; '.join(f'{k} ×{v}' for k, v in enc.most_common())} |")
    missing = [(r["dataset"], p) for r in results for p in r.get("todo", [])]
    if missing:
        lines += ["", "Not measured yet (the script resumes with them): "
                  + ", ".join(f"{d} {p}" for d, p in missing) + "."]
    codes = sorted({r[p]["code"] for r in results
                    for p in ("one", "no_heads", "no_parsimony", "separate", "no_pairs",
                              "eigen_factor", "seed_twice", "seed_fits", "early_own",
                              "where")
                    if p in r}
                   | {f["code"] for r in results for key in ("fixed", "stacking_rerun")
                      for f in r.get(key, {}).values()})
    machines = sorted({r[p]["machine"] for r in results for p in ("one", "seed_twice")
                       if "machine" in r.get(p, {})}
                      | {r["baseline_machine"] for r in results if "baseline_machine" in r})
    if machines:
        lines += ["", "The one command and its baseline (the time ratio) were last measured "
                  "on " + "; ".join(machines) + ". Parts measured in earlier sessions may have "
                  "run on other hardware (this shared workspace's machine changes between "
                  "sessions): compare times only within one machine."]
    lines += ["", f"Code measured: {', '.join(codes)}; "
              f"{', '.join(r['dataset'] + ': ' + r['when'] for r in results)}."]
    return "\n".join(lines)


def _label(combo: dict) -> str:
    return ", ".join(f"{m}={e}" for m, e in combo.items())


def measured(r: dict, part: str) -> bool:
    if part.startswith("fixed:"):
        return _label(COMBOS[int(part.split(":")[1])]) in r.get("fixed", {})
    if part.startswith("stacking:"):
        return _label(COMBOS[int(part.split(":")[1])]) in r.get("stacking_rerun", {})
    return {"baseline": "baseline_seconds", "warm": "warm_seconds"}.get(part, part) in r


def _part_keys(part: str) -> tuple[str, str | None]:
    """Where a part's result is kept in a dataset's entry: (key, sub-key or None)."""
    for prefix, key in (("fixed:", "fixed"), ("stacking:", "stacking_rerun")):
        if part.startswith(prefix):
            return key, _label(COMBOS[int(part.split(":")[1])])
    if part == "baseline":
        return "baseline", None
    return {"warm": "warm_seconds"}.get(part, part), None


def merge(into: list[dict], new: list[dict], parts: list[str] | None = None) -> list[dict]:
    """``into`` with the results of ``parts`` (every part measured, by default) taken from
    ``new``, dataset by dataset: what two runs of this script measured (resumed, or run
    side by side on different parts) in one results file."""
    out = {x["dataset"]: dict(x) for x in into}
    for r in new:
        entry = out.setdefault(r["dataset"], {k: r[k] for k in ("dataset", "n", "when")
                                              if k in r})
        names = parts if parts is not None else [p for p in parts_of(True) + [
            f"stacking:{i}" for i in range(len(COMBOS))] if measured(r, p)]
        for part in names:
            key, sub = _part_keys(part)
            if key == "baseline":
                for k in ("baseline_seconds", "baseline_runs", "baseline_cpu_seconds",
                          "baseline_machine"):
                    if k in r:
                        entry[k] = r[k]
                    else:
                        entry.pop(k, None)
            elif sub is not None and sub in r.get(key, {}):
                entry[key] = {**entry.get(key, {}), sub: r[key][sub]}
            elif sub is None and key in r:
                entry[key] = r[key]
        entry["when"] = max(entry.get("when", ""), r.get("when", ""))
        wanted = parts_of(False)
        entry["todo"] = [p for p in wanted if not measured(entry, p)]
    return sorted(out.values(), key=lambda x: DATASETS.index(x["dataset"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--parts", nargs="*", default=None,
                        help="parts to (re)measure: warm one baseline fixed:0..3 no_heads "
                             "separate no_pairs eigen_factor seed_twice seed_fits early_own where "
                             "no_parsimony "
                             "stacking:0..3 (default: "
                             "every "
                             "part not measured yet)")
    parser.add_argument("--ablations", action="store_true",
                        help="also measure the one command without parsimony, with "
                             "single encoders only, and with the eigen Gram factor")
    parser.add_argument("--render", action="store_true",
                        help="only write the RESULTS.md section from the results file")
    parser.add_argument("--merge", nargs="*", default=None, metavar="FILE",
                        help="merge the parts measured in these results files (another "
                             "run's, in order; FILE@one,baseline: only those parts; only "
                             "--datasets) into the results file, then write the section")
    args = parser.parse_args()
    results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else []
    if args.merge is not None:
        for spec in args.merge:  # FILE, or FILE@part,part (only those parts)
            path, _, names = spec.partition("@")
            other = [x for x in json.loads(Path(path).read_text())
                     if x["dataset"] in args.datasets]
            results = merge(results, other, names.split(",") if names else None)
        atomic_write_text(RESULTS_JSON, json.dumps(results, indent=1))
    if args.render or args.merge is not None:
        write_section("one_command", render(results))
        return
    for dataset in args.datasets:
        r = next((x for x in results if x["dataset"] == dataset), None)
        if r is None:
            r = {"dataset": dataset, "n": dataset_info(dataset).get("n_samples"),
                 "when": time.strftime("%Y-%m-%d")}
            results.append(r)
        wanted = parts_of(args.ablations)
        todo = args.parts if args.parts is not None else [
            p for p in wanted if not measured(r, p)]
        for part in todo:
            r["todo"] = [p for p in wanted if not measured(r, p) and p != part]
            run_part(dataset, part, r)
            r["when"] = time.strftime("%Y-%m-%d")
            r["todo"] = [p for p in wanted if not measured(r, p)]
            # this part into what is on disk now: other runs may write the same file
            # meanwhile (other datasets, or other parts of this one)
            on_disk = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else []
            results = merge(on_disk, [r], [part])
            atomic_write_text(RESULTS_JSON, json.dumps(results, indent=1))  # resumable
            write_section("one_command", render(results))


if __name__ == "__main__":
    main()
