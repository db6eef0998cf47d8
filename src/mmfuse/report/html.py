"""A self-contained HTML report of an evaluation: one file, plots embedded as PNG data URIs,
no scripts and no external resources, so it opens anywhere (mail it, archive it, open it
offline)."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
from pathlib import Path
from typing import Any

import numpy as np

MAX_ERRORS_SHOWN = 100

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 2rem auto; max-width: 1100px; padding: 0 1rem; color: #1a202c; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #e2e8f0; padding-bottom: .2rem; }
.meta { color: #4a5568; font-size: .9rem; }
table { border-collapse: collapse; font-size: .88rem; margin: .6rem 0; }
th, td { border-bottom: 1px solid #e2e8f0; padding: .3rem .6rem; text-align: left; }
th { background: #f7fafc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.best td { background: #f0fff4; font-weight: 600; }
tr.baseline td { color: #4a5568; font-style: italic; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e2e8f0; }
figcaption { color: #4a5568; font-size: .85rem; }
ul.errors { font-family: ui-monospace, monospace; font-size: .8rem; }
footer { margin-top: 3rem; color: #718096; font-size: .8rem; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _weights_text(weights: Any) -> str:
    if not weights:
        return ""
    return " ".join(f"{m}={w:.2f}" for m, w in weights.items())


def _results_table(result: Any, best: str) -> str:
    head = ("<tr><th>configuration</th><th>kind</th><th>modalities</th><th>fusion</th>"
            "<th>weights</th><th>accuracy</th><th>95% CI</th><th>macro-F1</th>"
            "<th>learned weights</th><th>folds</th><th>seconds</th></tr>")
    body = []
    for r in result.rows:
        cls = "best" if r.name == best else ("baseline" if r.kind == "baseline" else "")
        spec = r.weights if isinstance(r.weights, (str, type(None))) else _weights_text(r.weights)
        folds = len(getattr(r, "fold_accuracy", []) or [])
        body.append(
            f'<tr class="{cls}"><td>{_e(r.name)}</td><td>{_e(r.kind)}</td>'
            f"<td>{_e(', '.join(r.modalities))}</td><td>{_e(r.fusion or '')}</td>"
            f"<td>{_e(spec or '')}</td><td class=\"num\">{r.accuracy:.3f}</td>"
            f'<td class="num">{r.accuracy_ci95[0]:.3f}&ndash;{r.accuracy_ci95[1]:.3f}</td>'
            f'<td class="num">{r.macro_f1:.3f}</td>'
            f"<td>{_e(_weights_text(getattr(r, 'modality_weights', None)))}</td>"
            f'<td class="num">{folds}</td><td class="num">{r.seconds:.1f}</td></tr>'
        )
    return f"<table>{head}{''.join(body)}</table>"


def _fused_weights(result: Any) -> dict[str, dict[str, float]]:
    return {r.name: dict(r.modality_weights) for r in result.rows
            if r.kind != "single" and getattr(r, "modality_weights", None)}


def _chance(result: Any) -> float | None:
    y = np.asarray(getattr(result, "y", []))
    if y.size == 0:
        return None
    _, counts = np.unique(y, return_counts=True)
    return float(counts.max() / counts.sum())


def _contributions(exp: Any) -> list[str]:
    """The per-class average modality shares and three example rows of an Explanation."""
    mods = list(exp.modalities)
    head = "".join(f"<th>{_e(m)}</th>" for m in mods)
    means = exp.mean_by_class()
    rows = "".join(
        f"<tr><td>{_e(label)}</td><td class=\"num\">{int((exp.labels == label).sum())}</td>"
        + "".join(f'<td class="num">{share[m]:+.2f}</td>' for m in mods) + "</tr>"
        for label, share in means.items())
    order = np.argsort(-exp.proba.max(axis=1), kind="stable")
    picks = [int(order[0]), int(order[len(order) // 2]), int(order[-1])] if len(order) else []
    truth = getattr(exp, "true_labels", None)
    examples = "".join(
        f"<tr><td>{_e(kind)}</td><td>{_e(exp.labels[i])}</td>"
        + (f"<td>{_e(truth[i])}</td>" if truth is not None else "")
        + f'<td class="num">{exp.proba[i].max():.2f}</td>'
        + "".join(f'<td class="num">{exp.shares[i, j]:+.2f}</td>' for j in range(len(mods)))
        + "</tr>"
        for kind, i in zip(("most confident", "median confidence", "least confident"), picks))
    method = ("each modality's weighted log-probability share of the predicted class"
              if exp.method == "log-share" else
              "the drop in the predicted class's log-probability when the modality is "
              "left out (the strategy imputes it as it learned to)")
    return [
        "<h2>Modality contributions per prediction</h2>",
        f"<p>{_e(getattr(exp, 'strategy', ''))} fit on the first outer training fold and "
        f"explained on its {len(exp.labels)} held-out rows. Share = {_e(method)}, divided "
        f"by the row's total (negative: the modality argued against the prediction).</p>",
        f"<table><tr><th>predicted class</th><th>rows</th>{head}</tr>{rows}</table>",
        "<p>Three example rows:</p>",
        "<table><tr><th>example</th><th>predicted</th>"
        + ("<th>true</th>" if truth is not None else "")
        + f"<th>probability</th>{head}</tr>{examples}</table>",
    ]


def render_report(result: Any, *, title: str = "mmfuse report", robustness: Any = None,
                  created: _dt.datetime | None = None, explanation: Any = None) -> str:
    """The report of an :class:`~mmfuse.evaluate.EvaluationResult` as one HTML string.

    Parameters
    ----------
    result : EvaluationResult
        What :func:`mmfuse.evaluate.evaluate` returned.
    title : str, default="mmfuse report"
    robustness : DataFrame, mapping or object with ``to_frame()``, optional
        Accuracy under degraded inputs, drawn as curves (see
        :func:`mmfuse.report.plots.robustness_table` for the accepted shapes). Defaults to
        ``result.robustness`` when the result has one.
    created : datetime, optional
        Timestamp shown in the header (default: now, UTC).
    explanation : mmfuse.explain.Explanation, optional
        Per-row modality contributions on held-out rows (see
        :func:`mmfuse.explain.holdout_explanation`): the report shows their average per
        predicted class and three example rows.

    Returns
    -------
    str
        A complete HTML document: inline CSS, PNG data URIs, no scripts, no external URL.
    """
    from .. import __version__
    from . import plots

    if robustness is None:
        robustness = getattr(result, "robustness", None)
    # checked before any plot is drawn: a bad argument fails fast
    curves = None if robustness is None else plots.robustness_table(robustness)
    created = created or _dt.datetime.now(_dt.timezone.utc)
    best = result.best.name
    cv = dict(result.cv)
    cv_text = f"{cv.get('kind', '?')}, {cv.get('n_splits', '?')} folds" + (
        f" x {cv['n_repeats']} repeats" if "n_repeats" in cv else "")
    classes = [str(c) for c in result.classes]
    shown_classes = ", ".join(classes[:30]) + (f", ... ({len(classes)} in all)"
                                               if len(classes) > 30 else "")

    sections = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{result.n_samples} samples, {result.n_classes} classes '
        f"({_e(shown_classes)}); cross-validation: {_e(cv_text)}; best configuration: "
        f"<strong>{_e(best)}</strong> ({result.best.accuracy:.3f}). Generated "
        f"{_e(created.strftime('%Y-%m-%d %H:%M UTC'))} by mmfuse {_e(__version__)}.</p>",
        "<h2>Results</h2>",
        "<p>Accuracy is the mean over the outer folds with a 95% t-interval; everything "
        "tuned (weights, meta-models) was learned inside the training folds only.</p>",
        _results_table(result, best),
        _img(plots.accuracy_chart(result.rows, best=best, chance=_chance(result)),
             "Bar chart of accuracy with 95% confidence intervals per configuration",
             "Accuracy of each single modality, each fusion strategy and the seed baseline; "
             "error bars: 95% CI over folds."),
        "<h2>Confusion matrix of the best configuration</h2>",
        _img(plots.confusion_chart(result.confusion(best), classes,
                                   title=f"{best} (out-of-fold predictions)"),
             f"Confusion matrix of {best}",
             f"Rows: true class; columns: predicted class; out-of-fold predictions of {best}."),
    ]

    weights = _fused_weights(result)
    sections.append("<h2>Learned modality weights</h2>")
    if weights:
        rows = "".join(
            f"<tr><td>{_e(name)}</td>" + "".join(
                f'<td class="num">{w.get(m, 0.0):.3f}</td>'
                for m in sorted({k for v in weights.values() for k in v})) + "</tr>"
            for name, w in weights.items())
        mods = sorted({k for v in weights.values() for k in v})
        sections += [
            _img(plots.weights_chart(weights), "Stacked bars of learned modality weights",
                 "Per-modality weights of each fused configuration, averaged over folds "
                 "(learned on training folds only)."),
            "<table><tr><th>configuration</th>"
            + "".join(f"<th>{_e(m)}</th>" for m in mods) + f"</tr>{rows}</table>",
        ]
    else:
        sections.append("<p>No fused configuration reports modality weights.</p>")

    from .uncertainty import uncertainty_section

    sections += uncertainty_section(result, best, _img, _e)

    if curves is not None:
        frame, level_name = curves
        table = frame.pivot_table(index="series", columns="level", values="accuracy",
                                  sort=False)
        head = "".join(f"<th>{level:g}</th>" for level in table.columns)
        body = "".join(
            f"<tr><td>{_e(name)}</td>" + "".join(
                f'<td class="num">{v:.3f}</td>' if v == v else "<td></td>" for v in values)
            + "</tr>" for name, values in zip(table.index, table.to_numpy()))
        sections += [
            "<h2>Robustness</h2>",
            _img(plots.robustness_chart(frame, level_name), "Robustness curves",
                 f"Accuracy as the {level_name.replace('_', ' ')} grows."),
            f"<p>Accuracy by {_e(level_name.replace('_', ' '))}:</p>"
            f"<table><tr><th>configuration</th>{head}</tr>{body}</table>",
        ]

    if explanation is not None:
        sections += _contributions(explanation)

    errors = list(getattr(result, "errors", []) or [])
    if errors:
        items = "".join(f"<li>{_e(err)}</li>" for err in errors[:MAX_ERRORS_SHOWN])
        more = (f"<p>... and {len(errors) - MAX_ERRORS_SHOWN} more.</p>"
                if len(errors) > MAX_ERRORS_SHOWN else "")
        sections += [f"<h2>Skipped items ({len(errors)})</h2>",
                     f'<ul class="errors">{items}</ul>{more}']

    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        # an empty data: icon stops browsers asking for /favicon.ico
        "<link rel=\"icon\" href=\"data:,\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n"
        f"<footer>mmfuse {_e(__version__)}</footer>\n</body></html>\n"
    )


def write_report(result: Any, path: str | os.PathLike, *, title: str = "mmfuse report",
                 robustness: Any = None, explanation: Any = None) -> Path:
    """Write :func:`render_report`'s HTML to ``path`` atomically; returns the path.

    Needs matplotlib (``pip install "mmfuse[report]"``).
    """
    from .._io import atomic_write_text

    return atomic_write_text(path, render_report(result, title=title, robustness=robustness,
                                                 explanation=explanation))
