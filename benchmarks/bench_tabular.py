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
STRATEGIES = ("late", "weighted", "early", "stacking", "auto")
# every fused row: the strategies above plus the seed baseline (evaluate's "seed-baseline")
FUSED = STRATEGIES + ("seed-baseline",)


def paired(a, b):
    import numpy as np
    from scipy import stats

    d = np.asarray(a) - np.asarray(b)
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return float(d.mean()), [float(d.mean() - half), float(d.mean() + half)]


# Variants of the feature-space strategies (the "variants" phase): why they gain little
# from the tabular view. Row label -> (strategy, its parameters); one evaluation each.
# (early[cv] with block scaling was tried too: its 4-modality weight grid with TF-IDF ran
# over 25 min on the shared 2 cores without finishing, so it is not part of the phase.)
VARIANTS = {"early [block_scaling=True]": ("early", {"block_scaling": True}),
            "early [block_scaling=mfa]": ("early", {"block_scaling": "mfa"}),
            "weighted [direct_sum=True]": ("weighted", {"direct_sum": True}),
            # (equal weights through the strategy's name: evaluate's ``weights`` would
            # override a "weights" entry of the parameters)
            "weighted [weights=equal]": ("weighted[equal]", {}),
            "weighted [weights=equal, direct_sum=True]": ("weighted[equal]",
                                                          {"direct_sum": True}),
            "weighted [projection=pca]": ("weighted", {"projection": "pca"}),
            "weighted [projection=class-scores]": ("weighted", {"projection": "class-scores"})}


def accuracy(X, y, groups, cv, strategies=STRATEGIES, fusion_params=None, singles=True,
             baseline=True, names=None):
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
    common = dict(features=None, groups=groups, strategies=strategies, cv=cv, random_state=0,
                  n_jobs=n_jobs, baseline=baseline, fusion_params=fusion_params)
    with_tab = evaluate(None, y, **{**common, "features": table}, singles=singles)
    without = copy.copy(table)  # the same features, less the tabular view
    without.views = {k: v for k, v in table.views.items() if k != "tabular"}
    without.present = {k: v for k, v in table.present.items() if k != "tabular"}
    without.stateful = {k: v for k, v in table.stateful.items() if k != "tabular"}
    if hasattr(table, "_encoded"):  # the featurizer's FeatureTable (issue 12)
        from mmfuse.encoders.featurizer import Encoded

        without._encoded = Encoded(without.views, without.present, deferred={
            k: v for k, v in table._encoded.deferred.items() if k != "tabular"})
    no_tab = evaluate(None, y, **{**common, "features": without}, singles=False)
    names = names or {}
    rows = {}
    for r in with_tab.rows:
        key = r.name if r.kind == "single" else f"{names.get(r.name, r.name)} (with tabular)"
        rows[key] = dict(kind=r.kind, accuracy=r.accuracy, ci=r.accuracy_ci95,
                         folds=r.fold_accuracy, weights=r.modality_weights,
                         chosen=list(r.chosen))
    for r in no_tab.rows:
        rows[f"{names.get(r.name, r.name)} (without tabular)"] = dict(kind=r.kind, accuracy=r.accuracy,
                                                   ci=r.accuracy_ci95, folds=r.fold_accuracy,
                                                   weights=r.modality_weights,
                                                   chosen=list(r.chosen))
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


def _interleaved(post, rounds: int, pairs: int, warmup: int) -> dict:
    """p50 of ``post(i, tabular)`` with and without the tabular fields, interleaved.

    ``warmup`` pairs first (not counted), then ``rounds`` rounds of ``pairs`` pairs; the
    order within a pair flips every pair, so load drift hits both alike. Each round gives
    its own ratio of p50s; the result is the median of the rounds' ratios with their
    range, and the p50s of all the requests pooled.
    """
    for i in range(warmup):
        post(i, True), post(i, False)
    with_all, without_all, ratios = [], [], []
    for r in range(rounds):
        a, b = [], []
        for i in range(pairs):
            k = warmup + r * pairs + i
            for tabular in ((True, False) if i % 2 == 0 else (False, True)):
                (a if tabular else b).append(post(k, tabular))
        ratios.append(statistics.median(a) / statistics.median(b))
        with_all += a
        without_all += b
    pa, pb = statistics.median(with_all), statistics.median(without_all)
    return dict(p50_with_ms=pa * 1e3, p50_without_ms=pb * 1e3, ratio_pooled=pa / pb,
                round_ratios=ratios, ratio=statistics.median(ratios), ratio_min=min(ratios),
                ratio_max=max(ratios), rounds=rounds, pairs=pairs, warmup=warmup,
                requests=2 * rounds * pairs)


def serve_latency(X, y, groups, rounds=7, pairs=100, warmup=40):
    """p50 of one-row /predict requests with and without the tabular fields.

    Measured twice, on the same saved model (text + tabular, late fusion): through the
    real service (``mmfuse serve`` in its own process on 127.0.0.1, one keep-alive HTTP
    client: what a user calls; this is the target), and in-process through the ASGI app
    (Starlette's TestClient: no socket, so the app's own share of the time is larger).
    """
    try:
        import httpx
    except ImportError:
        return {"skipped": "the serving extra is not installed"}
    import tempfile
    from pathlib import Path

    import numpy as np

    import bench_serve
    from mmfuse import MultimodalClassifier, load
    from mmfuse.data.datasets import dataset_info
    from mmfuse.encoders.tabular import TabularEncoder
    from mmfuse.serving import create_app

    cols = dataset_info("tuxpaint-tabular")["tabular"]
    tab = TabularEncoder(**cols)
    with_tab = MultimodalClassifier(encoders={"text": "tfidf-hashed", "tabular": tab},
                                    fusion="late", random_state=0).fit(X, y, groups=groups)
    names = [c for kind in cols.values() for c in kind]
    texts = X["text"].tolist()
    rows = []
    for i in range(len(X)):
        row = {}
        for c in names:
            v = X[c].iloc[i]
            row[c] = None if isinstance(v, float) and np.isnan(v) else (
                v.item() if hasattr(v, "item") else v)
        rows.append(row)

    def body(i, tabular):
        out = {"text": texts[i % len(texts)]}
        if tabular:
            out.update(rows[i % len(rows)])
        return out

    def timed(client):
        def post(i, tabular):
            payload = body(i, tabular)
            t = time.perf_counter()
            r = client.post("/predict", json=payload)
            dt = time.perf_counter() - t
            if r.status_code != 200:
                raise RuntimeError(f"/predict answered {r.status_code}: {r.text[:300]}")
            used = r.json()["modalities_used"]
            sent = tabular and any(v is not None for v in rows[i % len(rows)].values())
            if used != (["tabular", "text"] if sent else ["text"]):
                raise RuntimeError(f"the service used {used} (tabular sent: {tabular})")
            return dt
        return post

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = with_tab.save(os.path.join(tmp, "m.mmfuse"))
        port = bench_serve.free_port()
        proc = bench_serve.start_server(Path(path), port, "--batch-wait-ms", "0")
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
                out["http"] = _interleaved(timed(client), rounds, pairs, warmup)
        finally:
            bench_serve.stop_server(proc)
        from starlette.testclient import TestClient

        with TestClient(create_app(load(path), batch_wait_ms=0)) as client:
            out["asgi"] = _interleaved(timed(client), rounds, pairs, warmup)
    return out


def markdown(res) -> str:
    acc = res["accuracy"]
    rows = acc["rows"]
    lines = ["## Tabular modality (tuxpaint-tabular)", "",
             f"Measured {res['stamp']} on {res['machine']} by `benchmarks/bench_tabular.py`"
             + (" (phases: " + ", ".join(
                 f"{k} {res['stamps'].get(k, '(an earlier run, time not recorded)')}"
                 for k in ("accuracy", "variants", "explain", "serve") if k in res) + ")"
                if res.get("stamps") else "") + ".",
             f"{acc['n_samples']} stamps, {acc['n_classes']} classes, CV {acc['cv']} "
             f"(grouped by sub-folder). Encoders: image=hog, text=tfidf, audio=mfcc, tabular = "
             f"9 columns read from each stamp's files. Features: {acc['feature_seconds']:.0f} s.",
             "", "| configuration | kind | accuracy | 95% CI | weights (auto: choice per fold) |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        w = ", ".join(f"{k}={v:.2f}" for k, v in (r["weights"] or {}).items())
        if r.get("chosen"):
            w = (w + "; " if w else "") + "chosen per fold: " + ", ".join(r["chosen"])
        lines.append(f"| {name} | {r['kind']} | {r['accuracy']:.3f} | "
                     f"{r['ci'][0]:.3f}–{r['ci'][1]:.3f} | {w} |")
    lines += ["", "### Targets", "", "| target | result | detail |", "|---|---|---|"]
    for label, ok, detail in res["checks"]:
        lines.append(f"| {label} | {'PASS' if ok else 'FAIL'} | {detail} |")
    lines += ["", "Paired differences are per outer fold, with a 95% t-interval; a target "
              "'≥' passes when the mean difference is ≥ 0, and is *significant* when the "
              "whole interval is above 0.", ""]
    lines += _summary(res["checks"])
    var = res.get("variants")
    if var:
        lines += ["### Feature-space variants (investigation)", "",
                  "The same folds; each variant with and without the tabular view, against "
                  "tabular alone (paired per fold, 95% t-interval). `block_scaling=True` "
                  "gives every view of early fusion the total variance D/M (D columns, M "
                  "views), so a few tabular columns weigh as much as thousands of TF-IDF "
                  "ones; `block_scaling=mfa` (Multiple Factor Analysis) divides each view by "
                  "its leading singular value, so every view's first principal direction has "
                  "variance 1; `direct_sum=True` keeps the views of the weighted sum in their own "
                  "columns (the default zero-pads them onto the widest view's leading "
                  "columns, the seed's formula). Each principle, measured on every "
                  "bundled dataset: "
                  "`benchmarks/bench_fusion_space.py` (section \"Feature space of early and "
                  "weighted fusion\").", "",
                  "| variant | with tabular | without | with − without | with − tabular alone |",
                  "|---|---|---|---|---|"]
        for label in VARIANTS:
            a = var["rows"].get(f"{label} (with tabular)")
            b = var["rows"].get(f"{label} (without tabular)")
            if a is None or b is None:
                continue
            g1, c1 = paired(a["folds"], b["folds"])
            g2, c2 = paired(a["folds"], rows["tabular"]["folds"])
            lines.append(f"| {label} | {a['accuracy']:.3f} | {b['accuracy']:.3f} | "
                         f"{g1:+.3f} [{c1[0]:+.3f}, {c1[1]:+.3f}] | "
                         f"{g2:+.3f} [{c2[0]:+.3f}, {c2[1]:+.3f}] |")
        lines.append("")
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
    elif "http" not in sv:
        lines.append("Not measured with this version of the script; rerun the serve phase.")
    else:
        h = sv["http"]
        lines += [
            f"One-row `POST /predict` (JSON: text + 9 tabular fields vs text only, the same "
            f"saved model: text=tfidf-hashed + tabular, late fusion). {h['warmup']} warm-up "
            f"pairs, then {h['rounds']} rounds of {h['pairs']} pairs; within a pair the order "
            f"flips every pair. Ratio = p50 with / p50 without, per round; the target uses "
            f"the median over rounds.", "",
            "| transport | p50 with (ms) | p50 without (ms) | ratio (median of rounds) | "
            "rounds' range | pooled ratio |", "|---|---|---|---|---|---|"]
        for key, label in (("http", "real service (`mmfuse serve`, 127.0.0.1)"),
                           ("asgi", "in-process ASGI (TestClient, no socket)")):
            r = sv[key]
            lines.append(f"| {label} | {r['p50_with_ms']:.2f} | {r['p50_without_ms']:.2f} | "
                         f"{r['ratio']:.3f}x | {r['ratio_min']:.3f}–{r['ratio_max']:.3f} | "
                         f"{r['ratio_pooled']:.3f}x |")
    return "\n".join(lines)


def _summary(checked) -> list[str]:
    """Which fused rows meet every accuracy target, and which one a user gets by default."""
    from inspect import signature

    from mmfuse import MultimodalClassifier
    from mmfuse.cli.model import train

    default = signature(MultimodalClassifier).parameters["fusion"].default
    cli_default = signature(train).parameters["fusion"].default
    meets = [s for s in FUSED
             if all(ok for label, ok, _ in checked
                    if label.startswith((f"{s}: with tabular", f"{s} with tabular")))]
    return [f"Fused rows meeting every accuracy target above (with ≥ without, and ≥ each "
            f"single modality, on the mean): {', '.join(meets) or 'none'}. The default "
            f"fusion of `MultimodalClassifier` is `{default}` "
            f"({'it meets them' if default in meets else 'it does not meet them'}), that "
            f"of `mmfuse train` `{cli_default}` "
            f"({'it meets them' if cli_default in meets else 'it does not meet them'}); "
            f"`auto` and the other strategies are opt-in (`fusion=`, `--fusion`).", ""]


def checks(res):
    rows = res["accuracy"]["rows"]
    out = []
    singles = {k: v for k, v in rows.items() if v["kind"] == "single"}
    for s in FUSED:
        a, b = rows[f"{s} (with tabular)"], rows[f"{s} (without tabular)"]
        gap, ci = paired(a["folds"], b["folds"])
        out.append((f"{s}: with tabular ≥ without", gap >= 0,
                    f"{a['accuracy']:.3f} vs {b['accuracy']:.3f}: {gap:+.3f} "
                    f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" + (" (significant)" if ci[0] > 0 else "")))
    for s in FUSED:
        a = rows[f"{s} (with tabular)"]
        for name, r in singles.items():
            gap, ci = paired(a["folds"], r["folds"])
            out.append((f"{s} with tabular ≥ {name} alone", gap >= 0,
                        f"{a['accuracy']:.3f} vs {r['accuracy']:.3f}: {gap:+.3f} "
                        f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" + (" (significant)" if ci[0] > 0 else "")))
    for f, r in res["explain"].items():
        out.append((f"{f}: explain ≤ 2x predict", r["ratio"] <= 2.0, f"{r['ratio']:.2f}x"))
    sv = res.get("serve", {})
    if "http" in sv:
        for key, label in (("http", "real service"), ("asgi", "in-process ASGI")):
            r = sv[key]
            out.append((f"service p50 with tabular ≤ 1.1x without ({label})",
                        r["ratio"] <= 1.1, f"{r['ratio']:.3f}x (rounds {r['ratio_min']:.3f}–"
                        f"{r['ratio_max']:.3f})"))
    return out


def main(argv) -> int:
    from _common import machine, stamp, write_section
    from mmfuse._io import atomic_write_json
    from mmfuse.data.datasets import dataset_info, load_dataset

    X, y, groups = load_dataset("tuxpaint-tabular")
    cv = dataset_info("tuxpaint-tabular")["cv"]
    res = {"stamp": stamp(), "machine": machine()}
    all_phases = ("accuracy", "variants", "explain", "serve")
    phases = argv[1:] or list(all_phases)
    path = _common.RESULTS_DIR / "tabular.json"
    if path.exists():
        old = json.loads(path.read_text())
        res.update({k: v for k, v in old.items() if k in all_phases + ("stamps",)})
        if not set(phases) & set(all_phases):
            res["stamp"] = old.get("stamp", res["stamp"])  # nothing measured now
    stamps = res.setdefault("stamps", {})
    for phase in set(phases) & set(all_phases):
        stamps[phase] = res["stamp"]
    if "accuracy" in phases:
        res["accuracy"] = accuracy(X, y, groups, cv)
        atomic_write_json(path, res)
    if "variants" in phases:
        merged = None
        for label, (strategy, params) in VARIANTS.items():
            name = strategy.partition("[")[0]
            part = accuracy(X, y, groups, cv, strategies=[strategy],
                            fusion_params={name: params}, singles=False, baseline=False,
                            names={strategy: label})
            if merged is None:
                merged = part
            else:
                merged["rows"].update(part["rows"])
        res["variants"] = merged
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
