from __future__ import annotations

import base64
import re

import numpy as np

from models import evaluate, render_report


def test_report_embeds_four_png_plots_and_metrics():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    prob = np.clip(y * 0.4 + rng.random(200) * 0.6, 0, 1)
    history = [
        {"epoch": 1, "train_loss": 0.3, "val_auc": 0.7},
        {"epoch": 2, "train_loss": 0.25},  # no val pass this epoch (TrainConfig.val_every)
        {"epoch": 3, "train_loss": 0.2, "val_auc": 0.8},
    ]
    metrics = evaluate(y, prob, ci_draws=100)
    page = render_report(metrics=metrics, y_true=y, prob=prob, history=history, title="A <b>")
    assert page.startswith("<!DOCTYPE html>") and "A &lt;b&gt;" in page
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(pngs) == 4
    assert all(base64.b64decode(p).startswith(b"\x89PNG") for p in pngs)
    assert "roc_auc" in page and "pauc_above_80_tpr" in page
    low, high = metrics["roc_auc_ci"]
    assert f"{low:.4f} – {high:.4f}" in page  # the interval, not a Python list


def test_report_with_one_class_and_no_history():
    y = np.ones(10, int)
    page = render_report(metrics=evaluate(y, np.full(10, 0.7)), y_true=y, prob=np.full(10, 0.7))
    assert page.count("data:image/png;base64,") == 3 and "n/a" in page
