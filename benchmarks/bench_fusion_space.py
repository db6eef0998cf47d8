"""The feature space of early and weighted fusion: does a view's width decide its influence,
and do views of different widths belong in one sum? (issue 15's accuracy target)

On every bundled multimodal dataset (classical encoders: image=hog, text=tfidf,
audio=mfcc, plus the tabular view of ``tuxpaint-tabular``), the same outer folds as
``bench_fusion.py`` / ``bench_tabular.py`` (tuxpaint: one repeat):

* ``early``: the standardised views concatenated (a view's total variance = its width);
* ``early [block_scaling=True]``: each view scaled to the same total variance D/M;
* ``early [block_scaling=mfa]``: Multiple Factor Analysis weighting, each view divided by
  its leading singular value (its first principal direction gets variance 1; one common
  factor keeps the total variance D);
* ``seed-baseline``: the seed's sum, views zero-padded to the widest (cross terms between
  unrelated features); ``weighted`` with equal weights is the same;
* ``weighted [equal, direct_sum=True]``: the weighted sum as a *direct* sum when the widths
  differ (each view in its own columns: the kernel is Σ w_m² K_m, no cross terms);
* ``weighted (cv)`` (the default, padded) and ``weighted (cv) [direct_sum=True]``: the
  same with the weights learned by grouped inner CV (one-SE rule).

Paired per-fold differences with 95% t-intervals. Writes
benchmarks/results/fusion_space.md (+ .json) and rebuilds benchmarks/RESULTS.md.
Usage: ``MMFUSE_DATA=... python benchmarks/bench_fusion_space.py [dataset ...]``.
"""

from __future__ import annotations

import sys
import time

import _common  # noqa: F401  (puts src/ on the path)

DATASETS = ["tuxpaint-grouped", "av-digits", "sign-av", "tuxpaint", "tuxpaint-tabular",
            "icons-family", "icons-theme"]
ENCODERS = {"image": "hog", "text": "tfidf", "audio": "mfcc"}
CONFIGS = {
    "early": ("early", {"weights": "equal"}),
    "early [block_scaling=True]": ("early", {"weights": "equal", "block_scaling": True}),
    "early [block_scaling=mfa]": ("early", {"weights": "equal", "block_scaling": "mfa"}),
    "seed-baseline (padded sum)": ("seed-baseline", {}),
    "weighted [equal, direct_sum=True]": ("weighted", {"weights": "equal", "direct_sum": True}),
    "weighted (cv)": ("weighted", {}),
    "weighted (cv) [direct_sum=True]": ("weighted", {"direct_sum": True}),
}
# (row, reference) pairs reported as paired differences
PAIRS = [("early [block_scaling=True]", "early"),
         ("early [block_scaling=mfa]", "early"),
         ("weighted [equal, direct_sum=True]", "seed-baseline (padded sum)"),
         ("weighted (cv) [direct_sum=True]", "weighted (cv)")]


def paired(a, b):
    import numpy as np
    from scipy import stats

    d = np.asarray(a) - np.asarray(b)
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return float(d.mean()), [float(d.mean() - half), float(d.mean() + half)]


def run_one(name: str) -> dict:
    import numpy as np
    from threadpoolctl import threadpool_limits

    from mmfuse.datasets import dataset_info, load_dataset
    from mmfuse.evaluate import FeatureTable, make_splits
    from mmfuse.fusion import create_fusion

    X, y, groups = load_dataset(name)
    info = dataset_info(name)
    mods = [m for m in ENCODERS if m in X.columns]
    enc = {m: ENCODERS[m] for m in mods}
    if "tabular" in info:
        from mmfuse.encoders.tabular import TabularEncoder

        enc["tabular"] = TabularEncoder(**info["tabular"])
    else:
        X = X[mods]
    cv = dict(info["cv"])
    if "n_repeats" in cv:
        cv["n_repeats"] = 1
    table = FeatureTable(X, enc, on_error="skip")
    _, y_enc = np.unique(y, return_inverse=True)
    splits, _ = make_splits(y_enc, groups, cv, 0)
    views_all = sorted(enc)
    configs = dict(CONFIGS)
    if "tabular" in enc:
        configs["tabular alone"] = ("early", {"_only": "tabular"})
    folds = {k: [] for k in configs}
    seconds = {k: 0.0 for k in configs}
    widths = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for train, test in splits:
            views, present = table.fold_views(train)
            for label, (strategy, params) in configs.items():
                params = dict(params)
                only = params.pop("_only", None)
                use = [only] if only else views_all
                keep = np.any(np.stack([present[m][train] for m in use]), axis=0)
                tr = train[keep]
                v_tr = {m: views[m][tr] for m in use}
                p_tr = {m: present[m][tr] for m in use}
                g_tr = None if groups is None else np.asarray(groups)[tr]
                t0 = time.perf_counter()
                model = create_fusion(strategy, random_state=0, **params).fit(
                    v_tr, y_enc[tr], p_tr, g_tr)
                pred = model.predict({m: views[m][test] for m in use},
                                     {m: present[m][test] for m in use})
                seconds[label] += time.perf_counter() - t0
                folds[label].append(float(np.mean(pred == y_enc[test])))
            widths = {m: int(views[m].shape[1]) for m in views_all}
    rows = {k: dict(accuracy=float(np.mean(v)), folds=v, seconds=seconds[k])
            for k, v in folds.items()}
    pairs = [dict(row=a, ref=b, diff=paired(folds[a], folds[b])) for a, b in PAIRS]
    if "tabular" in enc:
        pairs += [dict(row=k, ref="tabular alone", diff=paired(folds[k], folds["tabular alone"]))
                  for k in CONFIGS]
    return dict(dataset=name, n_samples=int(len(y)), n_folds=len(splits),
                cv=info["cv"] if "n_repeats" not in cv else cv, widths=widths, rows=rows,
                pairs=pairs)


def markdown(results: list[dict], when: str, machine: str) -> str:
    out = ["## Feature space of early and weighted fusion (issue 15)", "",
           f"`python benchmarks/bench_fusion_space.py`, {when}; machine: {machine}.", "",
           "Classical encoders (image=hog, text=tfidf, audio=mfcc; the "
           "tabular view on tuxpaint-tabular), the datasets' own outer folds (tuxpaint: one "
           "repeat). Widths are a first training fold's. Two questions: (1) should each "
           "view get the same total variance whatever its width (`block_scaling=True`), or the "
           "same variance along its first principal direction (`block_scaling=mfa`, Multiple "
           "Factor Analysis)? (2) should "
           "views of different widths be summed in one set of coordinates, zero-padded (the "
           "seed's formula), or kept in their own (a direct sum, no cross terms)?", ""]
    for r in results:
        w = ", ".join(f"{m}={d}" for m, d in r["widths"].items())
        out += [f"### {r['dataset']}", "",
                f"{r['n_samples']} samples, {r['n_folds']} outer folds; widths: {w}.", "",
                "| configuration | accuracy | per fold |", "|---|---|---|"]
        for k, row in r["rows"].items():
            per = " ".join(f"{a:.3f}" for a in row["folds"])
            out.append(f"| {k} | {row['accuracy']:.3f} | {per} |")
        out += ["", "| paired difference | mean [95% CI] |", "|---|---|"]
        for p in r["pairs"]:
            m, (lo, hi) = p["diff"]
            out.append(f"| {p['row']} − {p['ref']} | {m:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    from _common import RESULTS_DIR, machine, stamp, write_section
    from mmfuse._io import atomic_write_json

    names = argv or DATASETS
    results = []
    for name in names:
        start = time.perf_counter()
        print(f"running {name} ...", flush=True)
        results.append(run_one(name))
        print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
    when, where = stamp(), machine()
    atomic_write_json(RESULTS_DIR / "fusion_space.json",
                      {"stamp": when, "machine": where, "results": results})
    md = markdown(results, when, where)
    write_section("fusion_space", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
