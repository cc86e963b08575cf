"""A self-contained HTML model report: metrics table plus ROC, PR, calibration and training curves.

Plots are matplotlib PNGs embedded as base64, so the report is one file that can be stored next to
the checkpoint and opened anywhere without a server. Figures are made with ``Figure`` directly, not
pyplot: no global state, no GUI backend, safe in worker threads.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

__all__ = ["render_report"]

_BINS = 15
_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
    "th{text-align:left}img{width:48%;min-width:320px}"
)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _roc(y, p) -> str:
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label="model")
        ax.axhspan(0.8, 1.0, color="tab:orange", alpha=0.1, label="pAUC region (TPR >= 0.8)")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate (sensitivity)", title="ROC")
    ax.legend(loc="lower right")
    return _png(fig)


def _pr(y, p) -> str:
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    if len(np.unique(y)) == 2:
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, label=f"AP = {average_precision_score(y, p):.3f}")
        ax.axhline(np.mean(y), ls="--", color="grey", label="prevalence")
        ax.legend(loc="upper right")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.02))
    return _png(fig)


def _calibration(y, p) -> str:
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    index = np.minimum((p * _BINS).astype(int), _BINS - 1)
    bins = [b for b in range(_BINS) if (index == b).any()]
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.plot(
        [p[index == b].mean() for b in bins],
        [y[index == b].mean() for b in bins],
        "o-",
        label="model",
    )
    ax.set(xlabel="mean predicted P(malignant)", ylabel="observed malignant rate")
    ax.set(title=f"Calibration ({_BINS} bins)", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    return _png(fig)


def _curves(history: Sequence[Mapping]) -> str:
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    ax.plot(epochs, [h.get("train_loss", math.nan) for h in history], "o-", label="train loss")
    ax.set(xlabel="epoch", ylabel="train loss", title="Training")
    right = ax.twinx()
    checked = [(e, h["val_auc"]) for e, h in zip(epochs, history, strict=True) if "val_auc" in h]
    right.plot(*zip(*checked, strict=True) if checked else ([], []), "s-", color="tab:green")
    right.set(ylabel="validation ROC AUC", ylim=(0.4, 1.0))
    ax.legend([*ax.get_lines(), *right.get_lines()], ["train loss", "val AUC"], loc="center right")
    return _png(fig)


def _format(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, float) for v in value):
        return " – ".join(_format(v) for v in value)  # an interval
    return html.escape(str(value))


def render_report(
    *,
    metrics: Mapping,
    y_true,
    prob,
    history: Sequence[Mapping] = (),
    title: str = "birthmark model report",
) -> str:
    """An HTML page with ``metrics`` as a table and the four diagnostic plots."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(prob, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"y_true and prob must have the same shape, got {y.shape}, {p.shape}")
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{_format(v)}</td></tr>" for k, v in metrics.items()
    )
    plots = [_roc(y, p), _pr(y, p), _calibration(y, p)]
    if history:
        plots.append(_curves(history))
    images = "".join(f'<img alt="plot" src="data:image/png;base64,{png}">' for png in plots)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<table>{rows}</table><div>{images}</div></body></html>"
    )
