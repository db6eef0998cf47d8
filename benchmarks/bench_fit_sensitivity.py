"""How much a per-modality expert's fit moves when only its arithmetic changes (issue 27:
which speed-ups of the one command keep its choices).

The one command's encoder choice and ``auto`` score candidates by inner-fold accuracy of
scikit-learn's ``LogisticRegression`` (L-BFGS, stopped by its tolerance). Ways to fit the
same objective faster change the arithmetic, not the model: the Gram-factor fit
(:func:`mmfuse.fusion.linear.fit_logistic_gram`, a rotated design), a sparse design made
dense, its all-zero columns dropped, float64 instead of float32. On icons-family's first
outer training fold, for each inner fold of it (the splits the encoder choice uses) and a
few candidate views as the experts see them (``ViewScaler`` on the inner training rows),
this fits the expert's classifier as the library does and each variant, and reports the
CPU time, the L-BFGS iterations, and how far the inner test rows' probabilities and
predicted classes move. A control refits the same design: it must not move at all.

Writes ``benchmarks/results/fit_sensitivity.md`` (+ ``.json``)::

    PYTHONPATH=src MMFUSE_DATA=../shared/data python benchmarks/bench_fit_sensitivity.py
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
sys.path.insert(0, str(HERE.parent / "src"))
os.environ.setdefault("MMFUSE_DATA", str(HERE.parent.parent / "shared" / "data"))

from _common import code_version, machine, stamp, write_section  # noqa: E402
from mmfuse._io import atomic_write_text  # noqa: E402

RESULTS_JSON = HERE / "results" / "fit_sensitivity.json"
VIEWS = (("text", "tfidf+minilm"), ("image", "hog+efficientnet-lite0"), ("image", "pixels"),
         ("image", "efficientnet-lite0"))


def _variants(z):
    """name -> (fit(y) -> model, how the inner test rows are given to it) for each way to
    fit the expert's objective."""
    from sklearn.linear_model import LogisticRegression

    from mmfuse.fusion.linear import fit_logistic_gram, make_classifier
    from mmfuse.views import is_sparse

    def direct(x):
        return lambda y: make_classifier(None, None, x).fit(x, y)

    same = lambda t: t  # noqa: E731
    out = {"same design again (control)": (direct(z), same),
           "Gram factor": (lambda y: fit_logistic_gram(
               LogisticRegression(max_iter=2000, C=1.0), [z], y), same),
           "float64 design": (direct(z.astype(np.float64)), lambda t: t.astype(np.float64))}
    if is_sparse(z):
        d = z.toarray()
        out["sparse design made dense"] = (lambda y: make_classifier(None, None, z).fit(d, y),
                                           lambda t: t.toarray())
        keep = np.flatnonzero(np.diff(z.tocsc().indptr) > 0)
        if len(keep) < z.shape[1]:
            out["all-zero columns dropped"] = (direct(z.tocsc()[:, keep].tocsr()),
                                               lambda t: t.tocsc()[:, keep].tocsr())
    return out


def measure(dataset: str) -> dict:
    from threadpoolctl import threadpool_limits

    from mmfuse.data.datasets import dataset_info, load_dataset
    from mmfuse.encoders.parts import candidate_view
    from mmfuse.evaluate import FeatureTable
    from mmfuse.evaluate.folds import make_splits
    from mmfuse.fusion.linear import make_classifier
    from mmfuse.fusion.scaling import ViewScaler
    from mmfuse.splits import inner_splits

    X, y, groups = load_dataset(dataset)
    X = X[[c for c in ("image", "text") if c in X.columns]]
    table = FeatureTable(X, "auto", on_error="skip", cache=True)
    y = np.unique(y, return_inverse=True)[1]
    groups = np.asarray(groups)
    train, _ = make_splits(y, groups, dataset_info(dataset)["cv"], 0)[0][0]
    inner = inner_splits(y[train], groups[train], 5, 0)
    rows: dict = {}
    for column, name in VIEWS:
        view, present, _ = candidate_view(table.candidates[column][1], name, train)
        for itr, ite in inner:
            tr, te = train[itr], train[ite]
            scaler = ViewScaler().fit(view[tr], present[tr])
            z = scaler.transform(view[tr], present[tr])
            zt = scaler.transform(view[te], present[te])
            with threadpool_limits(limits=1, user_api="blas"):
                start = time.process_time()
                ref = make_classifier(None, None, z).fit(z, y[tr])
                ref_cpu = time.process_time() - start
                p_ref = ref.predict_proba(zt)
                for label, (fit, given) in _variants(z).items():
                    start = time.process_time()
                    model = fit(y[tr])
                    cpu = time.process_time() - start
                    p = model.predict_proba(given(zt))
                    entry = rows.setdefault(f"{name} ({z.shape[1]} columns, "
                                            f"{'sparse' if hasattr(z, 'tocsc') else 'dense'})",
                                            {}).setdefault(label, [])
                    entry.append({
                        "cpu_ratio": cpu / ref_cpu,
                        "iterations": [int(ref.n_iter_[0]), int(np.max(model.n_iter_))],
                        "max_abs_proba": float(np.abs(p - p_ref).max()),
                        "class_changed": float(np.mean(p.argmax(1) != p_ref.argmax(1))),
                        "accuracy_change": float(np.mean(p.argmax(1) == y[te])
                                                 - np.mean(p_ref.argmax(1) == y[te]))})
    return {"dataset": dataset, "outer_training_rows": int(len(train)), "rows": rows,
            "code": code_version(), "when": stamp(), "machine": machine()}


def render(result: dict) -> str:
    lines = ["# How much an expert's fit moves when only its arithmetic changes (issue 27)", "",
             f"`benchmarks/bench_fit_sensitivity.py` on {result['dataset']}'s first outer "
             f"training fold ({result['outer_training_rows']} rows), its 5 inner folds (the "
             "encoder choice's), code "
             f"{result['code']}, {result['when']}, {result['machine']}; one BLAS thread. The "
             "expert's classifier (scikit-learn's `LogisticRegression`, L-BFGS to its "
             "tolerance, as `ModalityExpert` fits it) against the same objective fitted "
             "another way. Columns: the CPU time over the expert's own (median over the inner "
             "folds), L-BFGS iterations (expert → variant, per fold), the largest change of an "
             "inner test row's probability, the share of inner test rows whose predicted class "
             "changes (mean) and the largest change of an inner fold's accuracy. The choices "
             "of the one command are made on these inner-fold accuracies: a variant that moves "
             "them can change a choice.", "",
             "| view | variant | CPU / expert's | iterations | max abs Δ proba | rows whose class "
             "changes | max abs Δ inner accuracy |", "|---|---|---:|---|---:|---:|---:|"]
    for view, variants in result["rows"].items():
        for label, folds in variants.items():
            its = ", ".join(f"{a}→{b}" for a, b in (f["iterations"] for f in folds))
            lines.append(
                f"| {view} | {label} | "
                f"{np.median([f['cpu_ratio'] for f in folds]):.2f}× | {its} | "
                f"{max(f['max_abs_proba'] for f in folds):.2g} | "
                f"{np.mean([f['class_changed'] for f in folds]):.1%} | "
                f"{max(abs(f['accuracy_change']) for f in folds):.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="icons-family")
    parser.add_argument("--render", action="store_true",
                        help="only write the RESULTS.md section from the results file")
    args = parser.parse_args()
    if not args.render:
        result = measure(args.dataset)
        atomic_write_text(RESULTS_JSON, json.dumps(result, indent=1))
    result = json.loads(RESULTS_JSON.read_text())
    write_section("fit_sensitivity", render(result))


if __name__ == "__main__":
    main()
