"""Regression guard on the real labelled photos (pixel evidence only, no metadata).

The default weights were fitted on this data, so this is in-sample; the honest held-out
numbers come from ``python -m benchmarks.phone_filter``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import balanced_accuracy_score

from curation.phone import phone_likeness

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
PER_CLASS = 150
# Measured 0.957 on this subset (in-sample weights); the floor leaves room for small changes.
BA_FLOOR = 0.94


@pytest.fixture(scope="module")
def subset() -> pd.DataFrame:
    if not (DATA / "manifest.csv").is_file():
        pytest.skip(f"real labelled photos not found at {DATA.resolve()} (../shared/data)")
    manifest = pd.read_csv(DATA / "manifest.csv")
    return manifest.groupby("kind", group_keys=False).sample(n=PER_CLASS, random_state=0)


def test_balanced_accuracy_on_real_photos(subset):
    start = time.perf_counter()
    results = []
    for name in subset["file"]:
        with Image.open(DATA / name) as image:
            results.append(phone_likeness(image))
    seconds = time.perf_counter() - start
    truth = subset["kind"].eq("phone").to_numpy()
    scores = np.array([r.score for r in results])
    ba = balanced_accuracy_score(truth, scores >= 0.5)
    review = np.mean([r.verdict == "needs_review" for r in results])
    assert ba >= BA_FLOOR, f"balanced accuracy {ba:.3f} < {BA_FLOOR}"
    assert review <= 0.15, f"needs_review rate {review:.2f}"
    assert seconds < 20, f"{len(results)} images took {seconds:.1f}s"
