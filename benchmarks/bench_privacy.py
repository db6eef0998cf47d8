"""Privacy (issue 14): the accuracy cost of differential privacy, membership-inference AUC,
and canaries.

1. **Accuracy vs epsilon** for early and late fusion, with every single modality at the same
   epsilon beside them, on ``sign-av`` (pretrained encoders: efficientnet-lite0 +
   speech-embedding; 3 grouped folds over the 6 speakers) and ``tuxpaint`` (efficientnet-lite0
   + ``hashing`` text; stratified 5-fold, one repetition). DP models: noisy class directions
   (``dp_model="centroid"``, delta = 1e-5), fixed equal weights, each outer training fold
   trains its own model with the whole budget. epsilon = inf is the same model without
   noise. The standard non-private mmfuse pipeline (logistic regression, learned weights) on
   the same features and folds is the reference. DP logistic regression (objective
   perturbation) is measured on sign-av early fusion for comparison.
2. **Membership inference**: each dataset split 50/50 (stratified, seed 0); models trained on
   one half (members), audited against the other (non-members) with the loss and confidence
   attacks (``mmfuse.privacy.audit``), AUC with a 1,000-resample bootstrap CI.
3. **Canaries**: 20 identifiers planted in Tux Paint captions; ``mmfuse train`` (with and
   without ``--scrub-pii``) and ``mmfuse run`` (JSON, HTML report, feature cache, logs and
   console) are searched for them; a vocabulary ``tfidf`` model saved with
   ``--allow-training-text`` is the positive control.
4. **What the hashed text encoders cost** without DP: tuxpaint text alone, ``tfidf`` vs
   ``tfidf-hashed`` vs ``hashing``.

Noise seeds are fixed so that the numbers can be reproduced (a real model draws secret
noise). Modest by design (shared 2-core machine): 3 or 5 folds, one noise draw per fold.

Usage::

    PYTHONPATH=src MMFUSE_DATA=../shared/data python benchmarks/bench_privacy.py [--parts 1,2,3,4]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("MMFUSE_DATA", str(REPO.parent / "shared" / "data"))

import numpy as np  # noqa: E402

from _common import machine, stamp, write_section  # noqa: E402
from mmfuse._io import atomic_write_text  # noqa: E402
from mmfuse.data.datasets import load_dataset  # noqa: E402
from mmfuse.evaluate import FeatureTable, evaluate  # noqa: E402
from mmfuse.evaluate.dp import evaluate_dp  # noqa: E402

RESULTS_JSON = HERE / "results" / "privacy.json"
EPSILONS = [0.5, 1.0, 2.0, 4.0, 8.0, math.inf]
DELTA = 1e-5
RUNS = {
    "sign-av": {"encoders": {"image": "efficientnet-lite0", "audio": "speech-embedding"},
                "cv": 3},
    "tuxpaint": {"encoders": {"image": "efficientnet-lite0", "text": "hashing"},
                 "cv": {"kind": "stratified", "n_splits": 5}},
}


def _eps(e: float) -> str:
    return "inf" if math.isinf(e) else f"{e:g}"


def features(dataset: str):
    X, y, groups = load_dataset(dataset)
    enc = RUNS[dataset]["encoders"]
    X = X[list(enc)]
    table = FeatureTable(X, enc, on_error="skip", cache=True)
    return X, y, groups, table


def part_curves() -> dict:
    out = {}
    for dataset, cfg in RUNS.items():
        X, y, groups, table = features(dataset)
        rows = []
        for eps in EPSILONS:
            start = time.perf_counter()
            res = evaluate_dp(X, y, epsilon=eps, delta=DELTA, groups=groups,
                                   cv=cfg["cv"], features=table, noise_seed=0,
                                   on_error="skip")
            for r in res.rows:
                rows.append({"epsilon": _eps(eps), "name": r.name, "kind": r.kind,
                             "accuracy": r.accuracy, "ci95": r.accuracy_ci95,
                             "folds": r.fold_accuracy})
            print(f"  {dataset} eps={_eps(eps)}: " + ", ".join(
                f"{r.name} {r.accuracy:.3f}" for r in res.rows)
                + f" ({time.perf_counter() - start:.0f} s)", flush=True)
        logistic = []
        if dataset == "sign-av":
            for eps in (1.0, 8.0):
                res = evaluate_dp(X, y, epsilon=eps, groups=groups, cv=cfg["cv"],
                                       features=table, noise_seed=0, on_error="skip",
                                       dp_model="logistic", strategies=("early",))
                r = res.row("early")
                logistic.append({"epsilon": _eps(eps), "accuracy": r.accuracy,
                                 "ci95": r.accuracy_ci95})
                print(f"  {dataset} logistic eps={_eps(eps)}: early {r.accuracy:.3f}", flush=True)
        start = time.perf_counter()
        ref = evaluate(X, y, groups=groups, cv=cfg["cv"], features=table,
                       strategies=["early", "late"], baseline=False, on_error="skip",
                       n_jobs=1)
        reference = [{"name": r.name, "kind": r.kind, "accuracy": r.accuracy,
                      "ci95": r.accuracy_ci95} for r in ref.rows]
        print(f"  {dataset} non-private reference: " + ", ".join(
            f"{r['name']} {r['accuracy']:.3f}" for r in reference)
            + f" ({time.perf_counter() - start:.0f} s)", flush=True)
        out[dataset] = {"encoders": cfg["encoders"], "cv": res.cv, "n": len(y), "rows": rows,
                        "reference": reference, "logistic": logistic}
    return out


def part_membership() -> dict:
    from sklearn.model_selection import train_test_split

    from mmfuse import MultimodalClassifier
    from mmfuse.privacy.audit import audit_model

    out = {}
    for dataset in RUNS:
        _, y, _, table = features(dataset)
        views = {m: table.views[m] for m in table.views}
        idx = np.arange(len(y))
        members, others = train_test_split(idx, test_size=0.5, stratify=y, random_state=0)
        models = {
            "non-private late (mmfuse default: logistic regression, learned weights)":
                MultimodalClassifier(fusion="late", random_state=0, on_error="skip"),
            "non-private early (mmfuse default)":
                MultimodalClassifier(fusion="early", weights="equal", random_state=0,
                                     on_error="skip"),
            "DP late, epsilon=inf (no noise)":
                MultimodalClassifier(fusion="late", weights="equal", epsilon=math.inf,
                                     on_error="skip"),
            "DP late, epsilon=1": MultimodalClassifier(
                fusion="late", weights="equal", epsilon=1.0, delta=DELTA, on_error="skip",
                fusion_params={"noise_seed": 0}),
            "DP early, epsilon=1": MultimodalClassifier(
                fusion="early", weights="equal", epsilon=1.0, delta=DELTA, on_error="skip",
                fusion_params={"noise_seed": 0}),
        }
        rows = []
        for name, model in models.items():

            def sub(rows, views=views):
                return {m: v[rows] for m, v in views.items()}

            model.fit(sub(members), y[members])
            res = audit_model(model, sub(members), y[members], sub(others), y[others],
                              n_bootstrap=1000, random_state=0)
            rows.append({"model": name, **res.to_dict()})
            loss = res.attacks[0]
            print(f"  {dataset} {name}: loss AUC {loss.auc:.3f} {loss.auc_ci95}, "
                  f"worst {res.worst.auc:.3f}", flush=True)
        out[dataset] = {"n_members": len(members), "n_non_members": len(others), "rows": rows}
    return out


def _canaries() -> list[str]:
    rng = np.random.default_rng(14)
    letters = np.array(list("bcdfghjkmnpqrstvwxz"))
    tokens = ["".join(rng.choice(letters, 8)) + f"{i:02d}" for i in range(8)]
    emails = [f"canary.{t[:6]}@example.org" for t in tokens[:4]]
    phones = ["+44 20 7946 0958", "+1 415 555 0199", "(555) 867-5309", "+33 1 84 88 02 17"]
    cards = ["4111 1111 1111 1111", "5500 0000 0000 0004", "3782 822463 10005",
             "6011 1111 1111 1117"]
    return tokens + emails + phones + cards


def _blobs(path: Path) -> list[bytes]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    out = []
    for f in files:
        stack = [f.read_bytes()]
        while stack:
            data = stack.pop()
            out.append(data)
            if data[:2] == b"PK":
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    stack += [archive.read(n) for n in archive.namelist()]
    return out


def _found(blobs: list[bytes], secrets: list[str]) -> int:
    return sum(any(n in b for b in blobs for n in {s.encode(), s.lower().encode(),
                                                   s.replace(" ", "").encode()})
               for s in secrets)


def part_canaries() -> dict:
    from typer.testing import CliRunner

    from mmfuse.cli import app

    X, y, _ = load_dataset("tuxpaint")
    rows = np.flatnonzero(np.isin(y, ["animals", "food", "vehicles"]))[::6][:30]
    df = X.iloc[rows][["image", "text"]].reset_index(drop=True)
    df["label"] = y[rows]
    canaries = _canaries()
    for i, secret in enumerate(canaries):
        df.loc[i, "text"] = f"{df.loc[i, 'text']} contact {secret}"
    runner = CliRunner()
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(f"{record.name} {record.getMessage()}")

    handler = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            manifest = tmp / "train.csv"
            df.to_csv(manifest, index=False)
            os.environ["MMFUSE_CACHE"] = str(tmp / "cache")
            src = ["--manifest", str(manifest), "--image", "image", "--text", "text",
                   "--label", "label"]
            consoles = []

            def invoke(args):
                res = runner.invoke(app, args)
                consoles.append(res.output)
                if res.exit_code != 0:
                    raise RuntimeError(f"{args[0]} failed: {res.output}")

            for scrub in (False, True):
                flag = ["--scrub-pii"] if scrub else []
                model = tmp / f"model{'-scrub' if scrub else ''}.mmfuse"
                invoke(["train", *src, "--fusion", "late", "--weights", "equal",
                        "--save-model", str(model), *flag])
                results[f"saved model (tfidf-hashed){' --scrub-pii' if scrub else ''}"] = \
                    _found(_blobs(model), canaries)
            invoke(["run", *src, "--encoders", "text=hashing", "--fusion", "late", "--cv",
                    "2", "--no-progress", "--json", str(tmp / "r.json"), "--report",
                    str(tmp / "r.html")])
            results["run --json"] = _found(_blobs(tmp / "r.json"), canaries)
            results["run --report (HTML)"] = _found(_blobs(tmp / "r.html"), canaries)
            results["feature cache"] = _found(_blobs(tmp / "cache"), canaries)
            results["logs (all loggers, DEBUG)"] = _found([r.encode() for r in records], canaries)
            results["console output"] = _found([c.encode() for c in consoles], canaries)
            vocab = tmp / "vocab.mmfuse"
            invoke(["train", *src, "--encoders", "text=tfidf", "--fusion", "late", "--weights",
                    "equal", "--allow-training-text", "--save-model", str(vocab)])
            control = _found(_blobs(vocab), canaries)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    print(f"  canaries found: {results}; positive control (tfidf vocabulary): {control}",
          flush=True)
    return {"n_canaries": len(canaries), "found": results, "positive_control": control}


def part_text_encoders() -> dict:
    X, y, _ = load_dataset("tuxpaint")
    rows = []
    for name in ("tfidf", "tfidf-hashed", "hashing"):
        start = time.perf_counter()
        res = evaluate(X[["text"]], y, encoders={"text": name},
                       cv={"kind": "stratified", "n_splits": 5}, strategies=[],
                       baseline=False, on_error="skip", n_jobs=1)
        r = res.row("text")
        rows.append({"encoder": name, "accuracy": r.accuracy, "ci95": r.accuracy_ci95,
                     "folds": r.fold_accuracy})
        print(f"  tuxpaint text {name}: {r.accuracy:.3f} ({time.perf_counter() - start:.0f} s)",
              flush=True)
    return {"rows": rows}


def _paired(rows: list[dict], eps: str) -> str:
    from scipy import stats

    cells = {r["name"]: r for r in rows if r["epsilon"] == eps}
    best = max((r for r in cells.values() if r["kind"] == "single"),
               key=lambda r: r["accuracy"])
    parts = []
    for s in ("early", "late"):
        diff = np.asarray(cells[s]["folds"]) - np.asarray(best["folds"])
        half = float(stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
        parts.append(f"{s} {diff.mean():+.3f} [{diff.mean() - half:+.3f}, "
                     f"{diff.mean() + half:+.3f}]")
    return f"epsilon={eps} vs {best['name']}: " + ", ".join(parts)


def render(res: dict) -> str:
    lines = ["# Privacy: the cost of differential privacy, membership inference, canaries", "",
             f"Measured by `benchmarks/bench_privacy.py` on {stamp()}; {machine()}. "
             "Modest by design on a shared 2-core machine: sign-av with 3 grouped folds "
             "(the 6 speakers), tuxpaint with 5 stratified folds (one repetition), one "
             "fixed noise draw per fold (a real model draws secret noise).", ""]
    curves = res.get("curves")
    if curves:
        lines += ["## Accuracy vs epsilon",
                  "",
                  f"DP models: data-independent encoders, unit-norm rows, fixed equal weights, "
                  f"noisy class directions (analytic Gaussian mechanism, delta = {DELTA:g}); "
                  "late fusion splits the budget over its modalities. Each cell: mean "
                  "accuracy over the outer folds [95% CI]. `inf`: the same model without "
                  "noise. Reference: the standard non-private mmfuse pipeline (logistic "
                  "regression, learned weights) on the same features and folds.", ""]
        for dataset, d in curves.items():
            names = list(dict.fromkeys(r["name"] for r in d["rows"]))
            eps = list(dict.fromkeys(r["epsilon"] for r in d["rows"]))
            enc = ", ".join(f"{k}={v}" for k, v in d["encoders"].items())
            lines += [f"### {dataset} ({d['n']} samples; {enc})", "",
                      "| epsilon | " + " | ".join(names) + " | best single |",
                      "|---|" + "---:|" * (len(names) + 1)]
            for e in eps:
                cells = {r["name"]: r for r in d["rows"] if r["epsilon"] == e}
                singles = [cells[n] for n in names if cells[n]["kind"] == "single"]
                best = max(singles, key=lambda r: r["accuracy"])
                lines.append(f"| {e} | " + " | ".join(
                    f"{cells[n]['accuracy']:.3f} [{cells[n]['ci95'][0]:.2f}, "
                    f"{cells[n]['ci95'][1]:.2f}]" for n in names)
                    + f" | {best['name']} {best['accuracy']:.3f} |")
            ref = {r["name"]: r for r in d["reference"]}
            lines += ["", "Non-private reference: " + ", ".join(
                f"{n} {r['accuracy']:.3f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
                for n, r in ref.items()) + "."]
            best_np_single = max((r for r in d["reference"] if r["kind"] == "single"),
                                 key=lambda r: r["accuracy"])
            beats = []
            for e in eps:
                if e == "inf":
                    continue
                for s in ("early", "late"):
                    cell = next((r for r in d["rows"] if r["epsilon"] == e and r["name"] == s),
                                None)
                    if cell and cell["ci95"][0] > best_np_single["accuracy"]:
                        beats.append(f"{s} at epsilon={e}")
            lines += ["", "Paired per-fold difference, DP fusion minus the best single "
                          "modality at the same epsilon (mean [95% t-CI over folds]): "
                      + "; ".join(_paired(d["rows"], e) for e in eps if e != "inf") + "."]
            lines += ["", f"DP fusion whose 95% CI lies above the best non-private single "
                          f"modality ({best_np_single['name']}, "
                          f"{best_np_single['accuracy']:.3f}): "
                          + (", ".join(beats) if beats else "none") + "."]
            if d.get("logistic"):
                lines += ["", "DP logistic regression (objective perturbation, pure "
                              "epsilon-DP, diffprivlib) on the same early-fusion design: "
                          + ", ".join(f"epsilon={r['epsilon']}: {r['accuracy']:.3f}"
                                      for r in d["logistic"])
                          + " (its noise grows with the dimension, 1,376 here)."]
            lines.append("")
    mem = res.get("membership")
    if mem:
        lines += ["## Membership inference", "",
                  "Each dataset split 50/50 (stratified, seed 0): trained on one half, "
                  "audited against the other. AUC 0.5 = the attacker does no better than a "
                  "coin; 95% CI from 1,000 bootstrap resamples. Target: AUC <= 0.55 at "
                  "epsilon = 1.", ""]
        for dataset, d in mem.items():
            lines += [f"### {dataset} ({d['n_members']} members, {d['n_non_members']} "
                      "non-members)", "",
                      "| model | acc. members | acc. non-members | loss AUC [95% CI] | "
                      "confidence AUC [95% CI] | worst AUC |", "|---|---:|---:|---:|---:|---:|"]
            for r in d["rows"]:
                a = {x["name"]: x for x in r["attacks"]}
                lines.append(
                    f"| {r['model']} | {r['accuracy_members']:.3f} | "
                    f"{r['accuracy_non_members']:.3f} | {a['loss']['auc']:.3f} "
                    f"[{a['loss']['auc_ci95'][0]:.3f}, {a['loss']['auc_ci95'][1]:.3f}] | "
                    f"{a['confidence']['auc']:.3f} [{a['confidence']['auc_ci95'][0]:.3f}, "
                    f"{a['confidence']['auc_ci95'][1]:.3f}] | {r['worst_auc']:.3f} |")
            eps1 = [r for r in d["rows"] if "epsilon=1" in r["model"]]
            ok = all(r["worst_auc"] <= 0.55 for r in eps1)
            lines += ["", f"Target (epsilon = 1, worst AUC <= 0.55): "
                          f"{'met' if ok else 'NOT met'}.", ""]
    can = res.get("canaries")
    if can:
        lines += ["## Canaries", "",
                  f"{can['n_canaries']} identifiers (8 opaque tokens, 4 e-mail addresses, 4 "
                  "phone numbers, 4 card numbers) planted in 30 Tux Paint training captions; "
                  "each artefact searched (zip members unpacked) for each identifier as "
                  "written, lower-cased and without spaces.", "",
                  "| artefact | canaries found |", "|---|---:|"]
        lines += [f"| {k} | {v} / {can['n_canaries']} |" for k, v in can["found"].items()]
        lines += [f"| positive control: `tfidf` (vocabulary) saved with "
                  f"`--allow-training-text` | {can['positive_control']} / "
                  f"{can['n_canaries']} |", ""]
    text = res.get("text_encoders")
    if text:
        lines += ["## What hashing costs without DP (tuxpaint, text alone)", "",
                  "Stratified 5-fold, logistic regression.", "",
                  "| text encoder | stores | accuracy [95% CI] |", "|---|---|---:|"]
        stores = {"tfidf": "vocabulary (n-grams of the training texts)",
                  "tfidf-hashed": "idf numbers only", "hashing": "nothing"}
        lines += [f"| {r['encoder']} | {stores[r['encoder']]} | {r['accuracy']:.3f} "
                  f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] |" for r in text["rows"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="1,2,3,4")
    parser.add_argument("--render-only", action="store_true",
                        help="Rewrite the section from results/privacy.json, measure nothing.")
    args = parser.parse_args()
    if args.render_only:
        write_section("privacy", render(json.loads(RESULTS_JSON.read_text())))
        return
    parts = {int(p) for p in args.parts.split(",")}
    results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    steps = [(1, "curves", part_curves), (2, "membership", part_membership),
             (3, "canaries", part_canaries), (4, "text_encoders", part_text_encoders)]
    for number, key, func in steps:
        if number not in parts:
            continue
        print(f"part {number}: {key}", flush=True)
        results[key] = func()
        RESULTS_JSON.parent.mkdir(exist_ok=True)
        atomic_write_text(RESULTS_JSON, json.dumps(results, indent=1))
        write_section("privacy", render(results))
    print(f"wrote {RESULTS_JSON}")


if __name__ == "__main__":
    main()
