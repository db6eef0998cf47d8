"""The report's plots as PNG bytes, drawn with matplotlib's Agg backend.

matplotlib is imported inside the functions (``import mmfuse`` stays light), and no
function touches pyplot's global state: each builds its own Figure on an Agg canvas, so
plots can be drawn from any thread.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._errors import InputError, require

KIND_COLOURS = {"single": "#8fb3d9", "fused": "#2b6cb0", "baseline": "#a0a0a0"}
BEST_COLOUR = "#2f855a"
MODALITY_COLOURS = ("#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#718096")
#: Column names accepted for the x axis of a robustness table, in order of preference.
LEVEL_COLUMNS = ("missing_rate", "drop_rate", "corruption", "noise", "rate", "level", "p", "x")


def _figure(width: float, height: float) -> Any:
    require("matplotlib", "report")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Any) -> bytes:
    """The figure as PNG bytes (no timestamp metadata, so reports are reproducible)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None},
                facecolor="white")
    return buffer.getvalue()


def accuracy_chart(rows: Sequence[Any], *, best: str | None = None,
                   chance: float | None = None) -> bytes:
    """Horizontal bars of accuracy with 95% CI error bars, one per result row.

    Single modalities, fused strategies and the seed baseline get their own colour; the
    best row is green; dashed lines mark the best single modality and chance.
    """
    if not rows:
        raise InputError("no result rows to plot")
    names = [r.name for r in rows]
    acc = np.array([r.accuracy for r in rows], dtype=float)
    ci = np.array([r.accuracy_ci95 for r in rows], dtype=float).reshape(len(rows), 2)
    err = np.vstack([np.clip(acc - ci[:, 0], 0, None), np.clip(ci[:, 1] - acc, 0, None)])
    colours = [BEST_COLOUR if r.name == best else KIND_COLOURS.get(r.kind, "#4a5568")
               for r in rows]
    fig = _figure(7.5, 0.42 * len(rows) + 2.0)
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    ax.barh(y, acc, xerr=err, color=colours, edgecolor="#2d3748", linewidth=0.5,
            error_kw={"ecolor": "#1a202c", "capsize": 3, "linewidth": 1})
    for yi, a, hi in zip(y, acc, ci[:, 1]):
        ax.text(min(max(a, hi) + 0.01, 1.0), yi, f"{a:.3f}", va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("accuracy (mean over folds, 95% CI)")
    singles = [r.accuracy for r in rows if r.kind == "single"]
    handles = []
    if singles:
        handles.append(ax.axvline(max(singles), color="#c05621", linestyle="--", linewidth=1,
                                  label=f"best single modality ({max(singles):.3f})"))
    if chance is not None:
        handles.append(ax.axvline(chance, color="#718096", linestyle=":", linewidth=1,
                                  label=f"majority class ({chance:.3f})"))
    from matplotlib.patches import Patch

    kinds = [k for k in ("single", "fused", "baseline") if any(r.kind == k for r in rows)]
    handles += [Patch(color=KIND_COLOURS[k], label=k) for k in kinds]
    if best is not None:
        handles.append(Patch(color=BEST_COLOUR, label=f"best: {best}"))
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=7, frameon=False)
    ax.set_title("Single modalities vs fusion")
    ax.grid(axis="x", alpha=0.3)
    return to_png(fig)


def confusion_chart(matrix: np.ndarray, labels: Sequence[Any], *, title: str) -> bytes:
    """Confusion matrix (rows: true class), coloured by row-normalised rate, with counts."""
    matrix = np.asarray(matrix)
    k = matrix.shape[0]
    if matrix.shape != (k, k) or len(labels) != k:
        raise InputError(f"confusion matrix of shape {matrix.shape} does not match "
                         f"{len(labels)} labels")
    totals = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, totals, out=np.zeros(matrix.shape, float), where=totals > 0)
    side = min(max(3.5, 0.45 * k + 2.0), 14.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    text = [str(label) for label in labels]
    ax.set_xticks(range(k), text, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center",
                  fontsize=8)
    ax.set_yticks(range(k), text, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.6 else "#1a202c")
    ax.set_title(title)
    return to_png(fig)


def weights_chart(weights: Mapping[str, Mapping[str, float]]) -> bytes:
    """Stacked horizontal bars: each configuration's learned modality weights (sum 1)."""
    if not weights:
        raise InputError("no modality weights to plot")
    names = list(weights)
    modalities = sorted({m for w in weights.values() for m in w})
    fig = _figure(7.5, 0.45 * len(names) + 1.8)
    ax = fig.add_subplot()
    y = np.arange(len(names))[::-1]
    left = np.zeros(len(names))
    for i, m in enumerate(modalities):
        values = np.array([float(weights[n].get(m, 0.0)) for n in names])
        ax.barh(y, values, left=left, color=MODALITY_COLOURS[i % len(MODALITY_COLOURS)],
                edgecolor="white", label=m)
        for yi, lo, v in zip(y, left, values):
            if v >= 0.08:
                ax.text(lo + v / 2, yi, f"{v:.2f}", ha="center", va="center", fontsize=8,
                        color="white")
        left += values
    ax.set_yticks(y, names)
    ax.set_xlim(0, 1)
    ax.set_xlabel("weight (mean over folds)")
    ax.set_title("Learned modality weights")
    fig.legend(loc="outside lower center", fontsize=8, ncols=min(len(modalities), 6),
               frameon=False)
    return to_png(fig)


def robustness_table(robustness: Any) -> tuple[pd.DataFrame, str]:
    """Normalise a robustness result to columns ``series, level, accuracy, low, high``.

    Accepted: a :class:`mmfuse.evaluate.RobustnessResult` (``levels`` and ``rows`` with
    per-level ``accuracy`` and ``accuracy_ci95``); an object with ``to_frame()``; a long
    DataFrame with an accuracy column, a level column (one of :data:`LEVEL_COLUMNS`) and
    optionally ``name``/``strategy``/``config``, ``modality``/``condition`` (series) and
    ``accuracy_ci95`` or ``ci_low``/``ci_high``; a wide DataFrame with one column per level
    (numeric column names) and the series as index or ``name`` column; or a mapping
    ``{series: {level: accuracy}}`` (or ``{series: [(level, accuracy), ...]}``).
    Returns the table and the name of the level (for the axis label).
    """
    if hasattr(robustness, "levels") and hasattr(robustness, "rows"):
        return _result_table(robustness)
    if hasattr(robustness, "to_frame") and not isinstance(robustness, pd.DataFrame):
        robustness = robustness.to_frame()
    if isinstance(robustness, pd.DataFrame) and _level_columns(robustness):
        robustness = _melt_wide(robustness)
    if isinstance(robustness, Mapping):
        records = []
        for series, points in robustness.items():
            pairs = points.items() if isinstance(points, Mapping) else points
            records += [{"series": str(series), "level": float(lv), "accuracy": float(acc)}
                        for lv, acc in pairs]
        frame = pd.DataFrame.from_records(records, columns=["series", "level", "accuracy"])
        level_name = "level"
    elif isinstance(robustness, pd.DataFrame):
        df = robustness
        acc_col = next((c for c in ("accuracy", "acc", "score") if c in df.columns), None)
        level_name = next((c for c in LEVEL_COLUMNS if c in df.columns), None)
        if acc_col is None or level_name is None:
            raise InputError(
                f"a robustness table needs an accuracy column and a level column (one of "
                f"{list(LEVEL_COLUMNS)}); got columns {list(map(str, df.columns))}"
            )
        name_cols = [c for c in ("name", "strategy", "config", "fusion") if c in df.columns][:1]
        name_cols += [c for c in ("modality", "condition", "dropped") if c in df.columns][:1]
        if name_cols:
            series = df[name_cols].astype(str).agg(" / ".join, axis=1)
        else:
            series = pd.Series(["accuracy"] * len(df), index=df.index)
        frame = pd.DataFrame({"series": series.to_numpy(),
                              "level": pd.to_numeric(df[level_name]).to_numpy(float),
                              "accuracy": pd.to_numeric(df[acc_col]).to_numpy(float)})
        if "accuracy_ci95" in df.columns:
            ci = np.array([list(v) for v in df["accuracy_ci95"]], dtype=float)
            frame["low"], frame["high"] = ci[:, 0], ci[:, 1]
        elif {"ci_low", "ci_high"} <= set(df.columns):
            frame["low"] = df["ci_low"].to_numpy(float)
            frame["high"] = df["ci_high"].to_numpy(float)
    else:
        raise InputError(f"robustness must be a DataFrame, a mapping or have to_frame(); got "
                         f"{type(robustness).__name__}")
    if frame.empty:
        raise InputError("the robustness table is empty")
    return frame.sort_values(["series", "level"]).reset_index(drop=True), level_name


def _result_table(result: Any) -> tuple[pd.DataFrame, str]:
    levels = [float(lv) for lv in result.levels]
    records = []
    for row in result.rows:
        cis = list(getattr(row, "accuracy_ci95", None) or [])
        for i, (level, acc) in enumerate(zip(levels, row.accuracy)):
            record = {"series": str(row.name), "level": level, "accuracy": float(acc)}
            if i < len(cis) and cis[i] is not None:
                record["low"], record["high"] = float(cis[i][0]), float(cis[i][1])
            records.append(record)
    if not records:
        raise InputError("the robustness result has no rows")
    frame = pd.DataFrame.from_records(records)
    missing = getattr(result, "missing_modality", None)
    name = f"share of samples missing {missing}" if missing else "level"
    return frame.sort_values(["series", "level"]).reset_index(drop=True), name


def _level_columns(df: pd.DataFrame) -> list[Any]:
    """Columns of a wide table whose names are numbers (the levels)."""
    if any(c in df.columns for c in ("accuracy", "acc", "score")):
        return []
    levels = []
    for c in df.columns:
        try:
            float(c)
        except (TypeError, ValueError):
            continue
        levels.append(c)
    return levels


def _melt_wide(df: pd.DataFrame) -> pd.DataFrame:
    levels = _level_columns(df)
    names = df["name"] if "name" in df.columns else pd.Series(df.index, index=df.index)
    records = [{"name": str(names.loc[i]), "level": float(c), "accuracy": float(df.loc[i, c])}
               for i in df.index for c in levels]
    return pd.DataFrame.from_records(records)


def robustness_chart(frame: pd.DataFrame, level_name: str = "level") -> bytes:
    """Accuracy against the level of degradation, one line per series (CI band if given)."""
    fig = _figure(8.5, 4.2)
    ax = fig.add_subplot()
    for i, (series, part) in enumerate(frame.groupby("series", sort=True)):
        colour = MODALITY_COLOURS[i % len(MODALITY_COLOURS)]
        ax.plot(part["level"], part["accuracy"], marker="o", color=colour, label=str(series))
        if {"low", "high"} <= set(part.columns):
            ax.fill_between(part["level"], part["low"], part["high"], color=colour, alpha=0.1,
                            linewidth=0)
    ax.set_xlabel(level_name.replace("_", " "))
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("Robustness (bands: 95% CI over folds)" if "low" in frame.columns
                 else "Robustness")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return to_png(fig)
