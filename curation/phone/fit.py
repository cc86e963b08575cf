"""Fit the pixel weights of ``PhoneThresholds`` from labelled feature tables."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from .thresholds import FITTED_FEATURES, PhoneThresholds

__all__ = ["fit_thresholds"]


def fit_thresholds(
    features: pd.DataFrame,
    is_phone: Sequence[bool] | np.ndarray,
    *,
    base: PhoneThresholds | None = None,
    columns: Sequence[str] = FITTED_FEATURES,
    c: float = 1.0,
) -> PhoneThresholds:
    """Class-balanced L2 logistic regression on standardised ``columns``.

    Returns ``base`` (default ``PhoneThresholds()``) with ``bias``, ``coefficients``,
    ``centres`` and ``scales`` replaced; features not in ``columns`` get no weight.
    """
    missing = [name for name in columns if name not in features.columns]
    if missing:
        raise ValueError(f"feature table lacks columns {missing}; expected {list(columns)}")
    y = np.asarray(is_phone, dtype=bool)
    if len(y) != len(features):
        raise ValueError(f"got {len(y)} labels for {len(features)} feature rows")
    if y.all() or not y.any():
        raise ValueError("need both phone and non-phone examples to fit")
    x = features[list(columns)].to_numpy(dtype=np.float64)
    centres = x.mean(axis=0)
    scales = x.std(axis=0)
    scales[scales == 0] = 1.0
    model = LogisticRegression(class_weight="balanced", C=c, max_iter=2000)
    model.fit((x - centres) / scales, y)
    names = list(columns)
    return dataclasses.replace(
        base or PhoneThresholds(),
        bias=float(model.intercept_[0]),
        coefficients=dict(zip(names, map(float, model.coef_[0]), strict=True)),
        centres=dict(zip(names, map(float, centres), strict=True)),
        scales=dict(zip(names, map(float, scales), strict=True)),
    )
