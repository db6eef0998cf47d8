"""Tabular columns as a fourth modality (issue 15), on the bundled ``tuxpaint-tabular``.

* Accuracy under the dataset's grouped CV (5 stratified-group folds): every single modality
  (image=hog, text=tfidf, audio=mfcc, tabular), fused with the tabular view and fused
  without it (same folds), with paired per-fold differences and 95% t-intervals.
* The cost of ``explain`` against a plain ``predict`` on raw rows (median of repeats,
  encoding included), for late and weighted fusion.
* Service latency (p50) of one-row requests with and without the tabular fields, through
  the real app (in-process ASGI client), when the serving extra is installed.

Writes benchmarks/results/tabular.md (+ .json) and rebuilds benchmarks/RESULTS.md.
Usage: ``python benchmarks/bench_tabular.py`` (``MMFUSE_DATA`` must point at the data).
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import time

import _common  # noqa: F401 (puts src/ on the path)

ENCODERS = {"image": "hog", "text": "tfidf", "audio": "mfcc"}
STRATEGIES = ("late", "weighted", "early", "stacking")


def paired(a, b):
    import numpy as np
    from scipy import stats

    d = np.asarray(a) - np.asarray(b)
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return float(d.mean()), [float(d.mean() - half), float(d.mean() + half)]


def accuracy(X, y, groups, cv):
    from mmfuse.data.datasets import dataset_info
    from mmfuse.encoders.tabular import TabularEncoder
    from mmfuse.evaluate import FeatureTable, evaluate

    tab = TabularEncoder(**dataset_info("tuxpaint-tabular")["tabular"])
    mods = [m for m in ENCODERS if m in X.columns]
    start = time.perf_counter()
    table = FeatureTable(X, {**{m: ENCODERS[m] for m in mods}, "tabular": tab},
                         on_error="skip")
    feature_seconds = time.perf_counter() - start
    n_jobs = int(os.environ.get("BENCH_N_JOBS", "1"))
    with_tab = evaluate(None, y, features=table, groups=groups, strategies=STRATEGIES, cv=cv,
                        random_state=0, n_jobs=n_jobs, baseline=False)
    without = copy.copy(table)  # the same features, less the tabular view
    without.views = {k: v for k, v in table.views.items() if k != "tabular"}
    without.present = {k: v for k, v in table.present.items() if k != "tabular"}
    without.stateful = {k: v for k, v in table.stateful.items() if k != "tabular"}
    if hasattr(table, "_encoded"):  # the featurizer's FeatureTable (issue 12)
        from mmfuse.encoders.featurizer import Encoded

        without._encoded = Encoded(without.views, without.present, deferred={
            k: v for k, v in table._encoded.deferred.items() if k != "tabular"})
    no_tab = evaluate(None, y, features=without, groups=groups, strategies=STRATEGIES, cv=cv,
                      random_state=0, n_jobs=n_jobs, singles=False, baseline=False)
    rows = {}
    for r in with_tab.rows:
        key = r.name if r.kind == "single" else f"{r.name} (with tabular)"
        rows[key] = dict(kind=r.kind, accuracy=r.accuracy, ci=r.accuracy_ci95,
                         folds=r.fold_accuracy, weights=r.modality_weights)
    for r in no_tab.rows:
        rows[f"{r.name} (without tabular)"] = dict(kind=r.kind, accuracy=r.accuracy,
                                                   ci=r.accuracy_ci95, folds=r.fold_accuracy,
                                                   weights=r.modality_weights)
    return dict(rows=rows, feature_seconds=feature_seconds, n_samples=with_tab.n_samples,
                n_classes=with_tab.n_classes, cv=with_tab.cv,
                skipped=[str(e) for e in table.errors])


def explain_cost(X, y, groups, repeats=5):
    """Median seconds of predict and explain on 160 held-out raw rows."""
    import numpy as np

    from mmfuse import MultimodalClassifier
    from mmfuse.data.datasets import dataset_info
    from mmfuse.encoders.tabular import TabularEncoder
    from mmfuse.evaluate import make_splits

    _, y_enc = np.unique(y, return_inverse=True)
    splits, _ = make_splits(y_enc, groups, {"kind": "stratified-group", "n_splits": 5}, 0)
    train, test = splits[0]
    test = test[:160]
    tab = TabularEncoder(**dataset_info("tuxpaint-tabular")["tabular"])
    out = {}
    for fusion in ("late", "weighted"):
        clf = MultimodalClassifier(encoders={"image": "hog", "text": "tfidf", "tabular": tab},
                                   fusion=fusion, random_state=0, on_error="skip")
        clf.fit(X.iloc[train], y[train], groups=groups[train])
        Xt = X.iloc[test]
        clf.predict_proba(Xt)  # warm (cache, lazy imports)
        t_pred, t_exp, shares = [], [], None
        for _ in range(repeats):
            t = time.perf_counter()
            clf.predict_proba(Xt)
            t_pred.append(time.perf_counter() - t)
            t = time.perf_counter()
            exp = clf.explain(Xt)
            t_exp.append(time.perf_counter() - t)
            shares = {m: float(abs(exp.shares[:, j]).mean()) for j, m in enumerate(exp.modalities)}
        p, e = statistics.median(t_pred), statistics.median(t_exp)
        out[fusion] = dict(predict_s=p, explain_s=e, ratio=e / p, method=exp.method,
                           mean_abs_share=shares, rows=len(test))
    return out


def serve_latency(X, y, groups, n=200):
    """p50 of one-row /predict requests with and without the tabular fields."""
    try:
        import httpx  # noqa: F401
    except ImportError:
        return {"skipped": "the serving extra is not installed"}
    import tempfile

    import numpy as np

    from mmfuse import MultimodalClassifier
    from mmfuse.data.datasets import dataset_info

    try:
        from mmfuse.serving import create_app  # after the serving/ split
    except ImportError:
        from mmfuse.serve import create_app
    from mmfuse.encoders.tabular import TabularEncoder

    cols = dataset_info("tuxpaint-tabular")["tabular"]
    tab = TabularEncoder(**cols)
    with_tab = MultimodalClassifier(encoders={"text": "tfidf-hashed", "tabular": tab},
                                    fusion="late", random_state=0).fit(X, y, groups=groups)
    names = [c for kind in cols.values() for c in kind]
    with tempfile.TemporaryDirectory() as tmp:
        path = with_tab.save(os.path.join(tmp, "m.mmfuse"))
        from mmfuse import load

        app = create_app(load(path), batch_wait_ms=0)
        from starlette.testclient import TestClient

        texts = X["text"].tolist()
        with TestClient(app) as client:
            def one(i, tabular):
                body = {"text": texts[i % len(texts)]}
                if tabular:
                    for c in names:
                        v = X[c].iloc[i % len(X)]
                        body[c] = None if isinstance(v, float) and np.isnan(v) else (
                            v.item() if hasattr(v, "item") else v)
                t = time.perf_counter()
                r = client.post("/predict", json=body)
                dt = time.perf_counter() - t
                if r.status_code != 200:
                    raise RuntimeError(f"/predict answered {r.status_code}: {r.text[:300]}")
                return dt

            for i in range(20):
                one(i, True), one(i, False)
            a, b = [], []
            for i in range(n):  # interleaved, so load changes hit both alike
                a.append(one(i, True))
                b.append(one(i, False))
    pa, pb = statistics.median(a), statistics.median(b)
    return dict(p50_with_ms=pa * 1e3, p50_without_ms=pb * 1e3, ratio=pa / pb, requests=n)


def markdown(res) -> str:
    acc = res["accuracy"]
    rows = acc["rows"]
    lines = ["## Tabular modality (tuxpaint-tabular)", "",
             f"Measured {res['stamp']} on {res['machine']} by `benchmarks/bench_tabular.py`.",
             f"{acc['n_samples']} stamps, {acc['n_classes']} classes, CV {acc['cv']} "
             f"(grouped by sub-folder). Encoders: image=hog, text=tfidf, audio=mfcc, tabular = "
             f"9 columns read from each stamp's files. Features: {acc['feature_seconds']:.0f} s.",
             "", "| configuration | kind | accuracy | 95% CI | weights |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        w = ", ".join(f"{k}={v:.2f}" for k, v in (r["weights"] or {}).items())
        lines.append(f"| {name} | {r['kind']} | {r['accuracy']:.3f} | "
                     f"{r['ci'][0]:.3f}–{r['ci'][1]:.3f} | {w} |")
    lines += ["", "### Targets", "", "| target | result | detail |", "|---|---|---|"]
    for label, ok, detail in res["checks"]:
        lines.append(f"| {label} | {'PASS' if ok else 'FAIL'} | {detail} |")
    lines += ["", "Paired differences are per outer fold, with a 95% t-interval; a target "
              "'≥' passes when the mean difference is ≥ 0, and is *significant* when the "
              "whole interval is above 0.", ""]
    ex = res["explain"]
    lines += ["### explain vs predict", "", "| fusion | method | predict (s) | explain (s) | "
              "ratio | mean abs share |", "|---|---|---|---|---|---|"]
    for f, r in ex.items():
        sh = ", ".join(f"{k}={v:.2f}" for k, v in r["mean_abs_share"].items())
        lines.append(f"| {f} | {r['method']} | {r['predict_s']:.3f} | {r['explain_s']:.3f} | "
                     f"{r['ratio']:.2f}x | {sh} |")
    sv = res.get("serve", {"skipped": "the serve phase was not run"})
    lines += ["", "### Service latency", ""]
    if "skipped" in sv:
        lines.append(f"Not measured: {sv['skipped']}.")
    else:
        lines.append(f"One-row `/predict` (text + 9 tabular fields vs text only, same model, "
                     f"{sv['requests']} interleaved requests each): p50 "
                     f"{sv['p50_with_ms']:.1f} ms vs {sv['p50_without_ms']:.1f} ms, "
                     f"ratio {sv['ratio']:.2f}x.")
    return "\n".join(lines)


def checks(res):
    rows = res["accuracy"]["rows"]
    out = []
    singles = {k: v for k, v in rows.items() if v["kind"] == "single"}
    for s in STRATEGIES:
        a, b = rows[f"{s} (with tabular)"], rows[f"{s} (without tabular)"]
        gap, ci = paired(a["folds"], b["folds"])
        out.append((f"{s}: with tabular ≥ without", gap >= 0,
                    f"{a['accuracy']:.3f} vs {b['accuracy']:.3f}: {gap:+.3f} "
                    f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" + (" (significant)" if ci[0] > 0 else "")))
    for s in ("late", "weighted"):
        a = rows[f"{s} (with tabular)"]
        for name, r in singles.items():
            gap, ci = paired(a["folds"], r["folds"])
            out.append((f"{s} with tabular ≥ {name} alone", gap >= 0,
                        f"{a['accuracy']:.3f} vs {r['accuracy']:.3f}: {gap:+.3f} "
                        f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" + (" (significant)" if ci[0] > 0 else "")))
    for f, r in res["explain"].items():
        out.append((f"{f}: explain ≤ 2x predict", r["ratio"] <= 2.0, f"{r['ratio']:.2f}x"))
    sv = res.get("serve", {})
    if "ratio" in sv:
        out.append(("service p50 with tabular ≤ 1.1x without", sv["ratio"] <= 1.1,
                    f"{sv['ratio']:.2f}x"))
    return out


def main(argv) -> int:
    from _common import machine, stamp, write_section
    from mmfuse._io import atomic_write_json
    from mmfuse.data.datasets import dataset_info, load_dataset

    X, y, groups = load_dataset("tuxpaint-tabular")
    cv = dataset_info("tuxpaint-tabular")["cv"]
    res = {"stamp": stamp(), "machine": machine()}
    phases = argv[1:] or ["accuracy", "explain", "serve"]
    path = _common.RESULTS_DIR / "tabular.json"
    if path.exists():
        old = json.loads(path.read_text())
        res.update({k: v for k, v in old.items() if k in ("accuracy", "explain", "serve")})
        if not set(phases) & {"accuracy", "explain", "serve"}:
            res["stamp"] = old.get("stamp", res["stamp"])  # nothing measured now
    if "accuracy" in phases:
        res["accuracy"] = accuracy(X, y, groups, cv)
        atomic_write_json(path, res)
    if "explain" in phases:
        res["explain"] = explain_cost(X, y, groups)
        atomic_write_json(path, res)
    if "serve" in phases:
        res["serve"] = serve_latency(X, y, groups)
    res["checks"] = checks(res)
    atomic_write_json(path, res)
    write_section("tabular", markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
