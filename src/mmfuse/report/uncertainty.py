"""The report's calibration and prediction-set section: a reliability diagram of the best
row and the single modalities, coverage against mean set size for every row, and a table
of log-loss, Brier score and ECE (and set scores) with their fold intervals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .plots import BEST_COLOUR, KIND_COLOURS, MODALITY_COLOURS, _figure, to_png


def reliability_chart(rows: Sequence[Any], *, title: str = "Reliability") -> bytes:
    """Accuracy against mean top probability per bin (15 bins, pooled over the folds), one
    line per row; the diagonal is perfect calibration, marker area the bin's rows."""
    fig = _figure(6.0, 5.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#a0aec0", linestyle="--", linewidth=1,
            label="perfectly calibrated")
    for i, r in enumerate(rows):
        bins = r.uncertainty["reliability"]
        count = np.asarray(bins["count"], dtype=float)
        used = count > 0
        conf = np.asarray([c for c, u in zip(bins["confidence"], used) if u], dtype=float)
        acc = np.asarray([a for a, u in zip(bins["accuracy"], used) if u], dtype=float)
        ece = r.uncertainty["ece"]["mean"]
        colour = MODALITY_COLOURS[i % len(MODALITY_COLOURS)]
        ax.plot(conf, acc, marker="o", markersize=3, color=colour, linewidth=1.2,
                label=f"{r.name} (ECE {ece:.3f})")
        ax.scatter(conf, acc, s=8 + 200 * count[used] / max(count.sum(), 1.0), color=colour,
                   alpha=0.35)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean top probability in the bin")
    ax.set_ylabel("accuracy in the bin")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return to_png(fig)


def coverage_chart(rows: Sequence[Any], key: str, target: float, best: str) -> bytes:
    """Each row's empirical coverage against its mean set size (fold means, 95% interval
    bars); the dashed line is the target coverage."""
    fig = _figure(6.5, 4.5)
    ax = fig.add_subplot()
    for r in rows:
        sets = r.uncertainty["sets"][key]
        cov, size = sets["coverage"], sets["set_size"]
        colour = BEST_COLOUR if r.name == best else KIND_COLOURS.get(r.kind, "#4a5568")
        ax.errorbar(size["mean"], cov["mean"],
                    xerr=[[size["mean"] - size["ci95"][0]], [size["ci95"][1] - size["mean"]]],
                    yerr=[[cov["mean"] - cov["ci95"][0]], [cov["ci95"][1] - cov["mean"]]],
                    fmt="o", color=colour, ecolor=colour, capsize=2, linewidth=0.8)
        ax.annotate(r.name, (size["mean"], cov["mean"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    ax.axhline(target, color="#c05621", linestyle="--", linewidth=1,
               label=f"target coverage {target:g}")
    ax.set_xlabel("mean set size (labels per row)")
    ax.set_ylabel("empirical coverage")
    ax.set_title(f"Coverage and set size ({key})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return to_png(fig)


def uncertainty_section(result: Any, best: str, img: Any, escape: Any) -> list[str]:
    """The HTML of the section (empty when no row has probability scores)."""
    rows = [r for r in result.rows if getattr(r, "uncertainty", None)]
    if not rows:
        return []
    spec = getattr(result, "uncertainty", None)
    calibration = getattr(spec, "calibration", None)
    shown = [r for r in rows if r.name == best or r.kind == "single"]
    out = ["<h2>Calibration and prediction sets</h2>",
           "<p>Out-of-fold probabilities" + (f", {escape(calibration)}-calibrated inside "
                                             "each training fold" if calibration else "")
           + ". ECE: the row-weighted mean, over 15 equal-width bins of the top probability, "
           "of |accuracy − mean top probability|. Fold mean and 95% interval.</p>"]
    if any("reliability" in r.uncertainty for r in shown):
        out.append(img(reliability_chart([r for r in shown if "reliability" in r.uncertainty],
                                         title=f"Reliability: {best} and the single "
                                               "modalities"),
                       "Reliability diagram", "Accuracy against confidence per bin; the "
                       "closer to the diagonal, the better calibrated."))
    keys = [f"{spec.scores[0]}@{t:g}" for t in getattr(spec, "coverage", ())]
    for key, target in zip(keys, getattr(spec, "coverage", ())):
        with_sets = [r for r in rows if key in r.uncertainty.get("sets", {})]
        if with_sets:
            out.append(img(coverage_chart(with_sets, key, target, best),
                           "Coverage against set size", "Conformal sets learned in each "
                           "training fold: coverage on the test fold against the mean "
                           "number of labels per set (smaller at the same coverage is "
                           "better)."))

    def cell(d: Any) -> str:
        return ("<td></td>" if not d else f'<td class="num">{d["mean"]:.3f} '
                f'({d["ci95"][0]:.3f}&ndash;{d["ci95"][1]:.3f})</td>')

    head = ("<tr><th>configuration</th><th>log-loss</th><th>Brier</th><th>ECE</th>"
            "<th>ECE debiased</th>") + "".join(
        f"<th>coverage {escape(k)}</th><th>set size</th><th>singletons</th>" for k in keys)
    body = ""
    for r in rows:
        u = r.uncertainty
        body += (f"<tr><td>{escape(r.name)}</td>{cell(u.get('log_loss'))}"
                 f"{cell(u.get('brier'))}{cell(u.get('ece'))}{cell(u.get('ece_debiased'))}"
                 + "".join(
                     cell(u.get("sets", {}).get(k, {}).get(m)) for k in keys
                     for m in ("coverage", "set_size", "singletons")) + "</tr>")
    out.append(f"<table>{head}</tr>{body}</table>")
    return out
