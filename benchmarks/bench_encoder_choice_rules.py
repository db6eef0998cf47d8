"""Why does ``--encoders auto`` lose to the best fixed combination? Choice rules compared.

For one dataset, on the outer splits of ``bench_encoders_auto.py`` (same folds, same seed),
every outer training fold scores each column's candidate encoders **once** (both inner
accuracy and inner log-loss, from the same grouped stratified inner folds, as
:func:`mmfuse.encoder_choice.select_encoder` does), and several choice rules pick
from those scores:

* ``acc, 1-SE cheaper``: inner accuracy, one-SE rule toward the cheaper encoder (the
  rule of the code under test), with the best pair as one more candidate;
* ``acc, best mean``: inner accuracy, the best mean (no one-SE rule), with the pair;
* ``log-loss, 1-SE cheaper`` / ``log-loss, best mean``: the same with inner log-loss;
* ``..., no pair``: the same rules over single encoders only;
* the fixed reference combinations (the best fixed one of ``bench_encoders_auto.py``,
  and each modality's best single encoder on the outer test folds, in hindsight).

Each distinct choice is then fused on the outer fold (``late`` and ``auto`` fusion,
features from the warm cache) and scored on the outer test rows. The table gives, per
rule, the single-modality regret (outer accuracy of the best candidate in hindsight minus
that of the pick, mean over folds and columns) and the fused accuracies, with the paired
difference to the best fixed combination.

Writes ``benchmarks/results/encoder_choice_rules.md`` (+ ``.json``)::

    PYTHONPATH=src MMFUSE_DATA=../shared/data python benchmarks/bench_encoder_choice_rules.py \
        --dataset tuxpaint-grouped
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("MMFUSE_DATA", str(REPO.parent / "shared" / "data"))

from _common import machine, write_section  # noqa: E402
from bench_encoders_auto import _cv  # noqa: E402
from mmfuse._io import atomic_write_text  # noqa: E402
from mmfuse.data.datasets import load_dataset  # noqa: E402
from mmfuse.evaluate import FeatureTable, make_configs, make_splits  # noqa: E402
from mmfuse.evaluate.crossval import run_fold  # noqa: E402

RESULTS_JSON = HERE / "results" / "encoder_choice_rules.json"
#: fused accuracy of each (outer fold, choice) already measured: an interrupted run resumes
CACHE_JSON = Path(os.environ.get("MMFUSE_CACHE", "/tmp")) / "encoder_choice_rules_fused.json"
FUSIONS = ["late", "auto"]
#: the best fixed combination of bench_encoders_auto.py per dataset (its "fixed" part)
REFERENCE = {"tuxpaint-grouped": {"image": "efficientnet-lite0", "text": "minilm",
                                  "audio": "mfcc"}}


def _rules(acc, loss, names, costs):
    from mmfuse.encoder_choice import SEPARATOR, _score_dict, one_se_cheapest

    singles = [n for n in names if SEPARATOR not in n]
    out = {}
    for metric in ("accuracy", "log_loss"):
        score = _score_dict(acc, loss, metric)
        label = "acc" if metric == "accuracy" else "log-loss"
        top = sorted(singles, key=lambda n: -float(np.mean(score[n])))[:2]
        pair = SEPARATOR.join(sorted(top, key=lambda n: (costs[n], n)))
        for with_pair in (True, False):
            pool = singles + ([pair] if with_pair and len(singles) > 1 else [])
            sub = {n: score[n] for n in pool}
            suffix = "" if with_pair else ", no pair"
            out[f"{label}, 1-SE cheaper{suffix}"] = one_se_cheapest(
                sub, {n: costs[n] for n in pool})
            out[f"{label}, 1-SE cheaper, <= 1 pt{suffix}"] = one_se_cheapest(
                sub, {n: costs[n] for n in pool}, acc, 0.01)
            out[f"{label}, best mean{suffix}"] = max(pool, key=lambda n: float(np.mean(sub[n])))
    return out


def study(dataset: str) -> dict:
    from threadpoolctl import threadpool_limits

    from mmfuse.encoder_choice import SEPARATOR, score_candidates
    from mmfuse.encoders.candidates import encoder_cost
    from mmfuse.encoders.parts import candidate_features
    from mmfuse.fusion.experts import ModalityExpert
    from mmfuse.splits import inner_splits

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()  # at the start
    X, y, groups = load_dataset(dataset)
    cv = _cv(dataset)
    table = FeatureTable(X, "auto", on_error="skip", cache=True)
    y_enc = np.unique(y, return_inverse=True)[1]
    n_classes = int(y_enc.max()) + 1
    usable = np.any(np.stack(list(table.present.values())), axis=0)
    splits, _ = make_splits(y_enc, groups, cv, 0)
    folds = [(tr[usable[tr]], te[usable[te]]) for tr, te in splits]
    cols = sorted(table.candidates)
    configs = make_configs(cols, FUSIONS, singles=False, baseline=False)
    # fused results of earlier (interrupted) runs: deterministic, so reused
    fused_cache: dict = {}
    if CACHE_JSON.exists():
        fused_cache = {tuple(json.loads(k)): v for k, v in json.loads(
            CACHE_JSON.read_text()).get(dataset, {}).items()}
    per_fold = []
    start = time.perf_counter()
    for k, (train, test) in enumerate(folds):
        g_train = None if groups is None else np.asarray(groups)[train]
        inner = inner_splits(y_enc[train], g_train, 5, 0)
        picks: dict[str, dict[str, str]] = {}
        outer_single: dict[str, dict[str, float]] = {}
        inner_scores: dict[str, dict] = {}
        for col in cols:
            cands, parts = table.candidates[col]
            singles = list(cands.names)
            costs = {n: encoder_cost(n) for n in singles}
            sub = {n: p.subset(train) for n, p in parts.items()}
            acc, loss = score_candidates(sub, singles, y_enc[train], inner)
            pairs = set()
            for metric in (acc, {n: [-v for v in loss[n]] for n in loss}):
                top = sorted(singles, key=lambda n: -float(np.mean(metric[n])))[:2]
                pairs.add(SEPARATOR.join(sorted(top, key=lambda n: (costs[n], n))))
            pairs = sorted(p for p in pairs if p not in acc)
            if pairs:
                a2, l2 = score_candidates(sub, pairs, y_enc[train], inner)
                acc.update(a2)
                loss.update(l2)
            names = list(acc)
            costs = {n: encoder_cost(n) for n in names}
            rules = _rules(acc, loss, names, costs)
            outer = {}
            for n in names:
                view, present = candidate_features(parts, n, train)
                e = ModalityExpert(None, 0).fit(view[train], y_enc[train], present[train],
                                                n_classes)
                p = e.predict_proba(view[test], present[test])
                prior = np.bincount(y_enc[train], minlength=n_classes) / len(train)
                p[np.isnan(p).any(axis=1)] = prior
                outer[n] = float(np.mean(p.argmax(1) == y_enc[test]))
            outer_single[col] = outer
            inner_scores[col] = {n: {"acc": [float(v) for v in acc[n]],
                                     "log_loss": [float(v) for v in loss[n]]} for n in names}
            best_single = max((n for n in names if SEPARATOR not in n), key=lambda n: outer[n])
            rules["hindsight: best single per modality"] = best_single
            for rule, pick in rules.items():
                picks.setdefault(rule, {})[col] = pick
        if dataset in REFERENCE:
            picks["fixed: " + ", ".join(f"{c}={e}" for c, e in REFERENCE[dataset].items())] = {
                c: REFERENCE[dataset][c] for c in cols}
        fused: dict[str, dict[str, float]] = {}
        for rule, choice in picks.items():
            key = (k, json.dumps(sorted(choice.items())))
            if key not in fused_cache:
                views, present = table.fold_views(train)
                views, present = dict(views), dict(present)
                for col, name in choice.items():
                    views[col], present[col] = candidate_features(
                        table.candidates[col][1], name, train)
                with threadpool_limits(limits=1, user_api="blas"):  # one ExpertsCache
                    res = run_fold(views, present, y_enc, groups, train, test, configs, None,
                                   5, 0)
                fused_cache[key] = {name: float(np.mean(pred == y_enc[test]))
                                    for name, pred, *_ in res}
                print(f"  fold {k}: {dict(choice)} -> {fused_cache[key]}", flush=True)
                saved = json.loads(CACHE_JSON.read_text()) if CACHE_JSON.exists() else {}
                saved[dataset] = {json.dumps(list(key)): v for key, v in fused_cache.items()}
                atomic_write_text(CACHE_JSON, json.dumps(saved))
            fused[rule] = fused_cache[key]
        per_fold.append({"picks": picks, "fused": fused, "outer_single": outer_single,
                         "inner": inner_scores})
        print(f"fold {k} done ({time.perf_counter() - start:.0f} s)", flush=True)
    return {"dataset": dataset, "cv": cv, "commit": commit, "folds": per_fold,
            "seconds": time.perf_counter() - start}


def _ci(diff):
    from scipy import stats

    diff = np.asarray(diff, float)
    half = float(np.std(diff, ddof=1) / np.sqrt(len(diff)) * stats.t.ppf(0.975, len(diff) - 1))
    return float(diff.mean()), float(diff.mean() - half), float(diff.mean() + half)


def render(results: list[dict]) -> str:
    lines = ["# Encoder choice rules compared (why `--encoders auto` can lose)", "",
             f"Measured by `benchmarks/bench_encoder_choice_rules.py` ({machine()}). Same "
             "outer folds as `bench_encoders_auto.py`; each outer training fold scores every "
             "candidate once (inner accuracy and log-loss on the same grouped stratified "
             "inner folds), each rule picks from those scores, and the pick is fused "
             "(`late`, `auto`) on the outer fold. Regret: outer single-modality accuracy of "
             "the best single candidate in hindsight minus that of the pick (mean over "
             "folds and columns). Δ: paired difference of `auto` fusion to the first fixed "
             "row, mean and 95% t-interval over outer folds."]
    for r in results:
        folds = r["folds"]
        rules = list(folds[0]["fused"])
        ref = next((x for x in rules if x.startswith("fixed:")), None)
        lines += ["", f"**{r['dataset']}** ({len(folds)} outer folds, code {r['commit']}, "
                  f"{r['seconds']:.0f} s)", "",
                  "| rule | regret (single modality) | late | auto | Δ auto vs fixed "
                  "[95% CI] | picks (per fold) |", "|---|---:|---:|---:|---|---|"]
        for rule in rules:
            regrets = []
            for f in folds:
                for col, pick in f["picks"][rule].items():
                    outer = f["outer_single"][col]
                    best = max(v for n, v in outer.items() if "+" not in n)
                    regrets.append(best - outer[pick])
            late = [f["fused"][rule]["late"] for f in folds]
            auto = [f["fused"][rule]["auto"] for f in folds]
            delta = ""
            if ref and rule != ref:
                m, lo, hi = _ci(np.asarray(auto) - [f["fused"][ref]["auto"] for f in folds])
                delta = f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            picks = "; ".join(", ".join(f"{c}={e}" for c, e in sorted(f["picks"][rule].items()))
                              for f in folds)
            lines.append(f"| {rule} | {np.mean(regrets):.3f} | {np.mean(late):.3f} | "
                         f"{np.mean(auto):.3f} | {delta} | {picks} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="tuxpaint-grouped")
    args = parser.parse_args()
    results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else []
    results = [r for r in results if r["dataset"] != args.dataset]
    results.append(study(args.dataset))
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS_JSON, json.dumps(results, indent=1))
    write_section("encoder_choice_rules", render(results))
    print(render(results))


if __name__ == "__main__":
    main()
