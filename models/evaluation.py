"""Binary classification metrics (scikit-learn) and post-hoc calibration (temperature, bias)."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from sklearn.metrics import balanced_accuracy_score, roc_auc_score, roc_curve

__all__ = [
    "auc_interval",
    "ece_noise_floor",
    "expected_calibration_error",
    "evaluate",
    "fit_calibration",
    "fit_temperature",
    "paired_auc_difference",
    "partial_auc_above_tpr",
    "sensitivity_at_specificity",
]

NAN = float("nan")


def sensitivity_at_specificity(y_true, prob, *, specificity: float) -> float:
    """Highest TPR reachable while FPR <= 1 - ``specificity`` (NaN with a single class)."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return NAN
    fpr, tpr, _ = roc_curve(y_true, prob)
    return float(tpr[fpr <= 1.0 - specificity + 1e-12].max())


def partial_auc_above_tpr(y_true, prob, *, min_tpr: float = 0.8) -> float:
    """ISIC 2024's metric: area under the ROC curve above ``min_tpr``, in [0, 1 - min_tpr].

    As in the challenge's scorer: flip labels and scores so the TPR band becomes an FPR band, take
    sklearn's McClish-standardised partial AUC and undo the standardisation.
    """
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return NAN
    max_fpr = abs(1.0 - min_tpr)
    scaled = roc_auc_score(np.abs(y_true - 1), -np.asarray(prob, dtype=np.float64), max_fpr=max_fpr)
    return float(0.5 * max_fpr**2 + (max_fpr - 0.5 * max_fpr**2) / (1.0 - 0.5) * (scaled - 0.5))


def expected_calibration_error(y_true, prob, *, bins: int = 15) -> float:
    """ECE of the malignant probability: bin-weighted |mean predicted - observed rate|."""
    y_true = np.asarray(y_true, dtype=np.float64)
    prob = np.asarray(prob, dtype=np.float64)
    if len(y_true) == 0:
        return NAN
    index = np.minimum((prob * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(index):
        mask = index == b
        total += mask.sum() * abs(prob[mask].mean() - y_true[mask].mean())
    return float(total / len(y_true))


def ece_noise_floor(prob, *, draws: int = 200, seed: int = 0) -> float:
    """Mean ECE of a perfectly calibrated model with these probabilities on this many images.

    Labels are drawn as Bernoulli(prob): the ECE they give is sampling noise alone. On a small
    test set (58 phone photos here) it is far from zero, so an ECE is only meaningful next to it.
    """
    prob = np.asarray(prob, dtype=np.float64)
    if len(prob) == 0:
        return NAN
    rng = np.random.default_rng(seed)
    draws_ = rng.random((draws, len(prob))) < prob
    return float(np.mean([expected_calibration_error(y, prob) for y in draws_]))


def _bootstrap(y_true, statistic, *, groups, draws: int, seed: int) -> np.ndarray:
    """``statistic(index)`` over ``draws`` bootstrap resamples that hold both classes.

    With ``groups`` whole groups are drawn (all rows of a patient or lesion together).
    """
    keys = np.arange(len(y_true)) if groups is None else np.asarray(groups).astype(str)
    _, inverse = np.unique(keys, return_inverse=True)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        index = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        if y_true[index].min() != y_true[index].max():
            values.append(statistic(index))
    return np.asarray(values, dtype=np.float64)


def _interval(values: np.ndarray, level: float) -> list[float]:
    if values.size == 0:
        return [NAN, NAN]
    tail = (1.0 - level) / 2
    return [float(v) for v in np.quantile(values, [tail, 1.0 - tail])]


def auc_interval(
    y_true, prob, *, groups=None, draws: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap interval for ROC AUC: ``(low, high)`` at ``level``, NaNs without both classes.

    With ``groups`` (a patient or lesion key per row) whole groups are resampled, as the split kept
    them together; images of one lesion are not independent, so a per-image bootstrap is too narrow.
    """
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=np.float64)
    if len(np.unique(y_true)) < 2:
        return NAN, NAN
    aucs = _bootstrap(
        y_true, lambda i: roc_auc_score(y_true[i], prob[i]), groups=groups, draws=draws, seed=seed
    )
    low, high = _interval(aucs, level)
    return low, high


def paired_auc_difference(
    y_true,
    prob_new,
    prob_old,
    *,
    groups=None,
    draws: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """AUC(new) - AUC(old) on the same images, with a paired bootstrap (both models, same draws).

    Returns ``difference``, ``ci`` (``[low, high]`` at ``level``) and ``share_better``: the share
    of resamples in which the new model's AUC is higher. NaNs without both classes.
    """
    y_true = np.asarray(y_true).astype(int)
    new, old = np.asarray(prob_new, np.float64), np.asarray(prob_old, np.float64)
    if len(np.unique(y_true)) < 2:
        return {"difference": NAN, "ci": [NAN, NAN], "share_better": NAN}

    def difference(i) -> float:
        return roc_auc_score(y_true[i], new[i]) - roc_auc_score(y_true[i], old[i])

    diffs = _bootstrap(y_true, difference, groups=groups, draws=draws, seed=seed)
    return {
        "difference": float(difference(slice(None))),
        "ci": _interval(diffs, level),
        "share_better": float(np.mean(diffs > 0)) if diffs.size else NAN,
    }


def evaluate(y_true, prob, *, threshold: float = 0.5, groups=None, ci_draws: int = 0) -> dict:
    """Metrics for malignant probabilities ``prob`` against 0/1 labels ``y_true``.

    Keys: roc_auc, balanced_accuracy, sens_at_spec_90, sens_at_spec_95, pauc_above_80_tpr, ece,
    ece_floor (``ece_noise_floor``), n, n_pos; with ``ci_draws`` > 0 also roc_auc_ci, a 95%
    bootstrap interval (``auc_interval``, resampling ``groups`` when given). Metrics that need both
    classes are NaN when only one is present.
    """
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=np.float64)
    if y_true.shape != prob.shape or y_true.ndim != 1:
        raise ValueError(
            f"y_true and prob must be 1-D of equal length, got {y_true.shape}, {prob.shape}"
        )
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError(f"y_true must hold 0/1 labels, got values {sorted(set(y_true.tolist()))}")
    both = len(np.unique(y_true)) == 2
    extra = {}
    if ci_draws > 0:
        extra["roc_auc_ci"] = list(auc_interval(y_true, prob, groups=groups, draws=ci_draws))
    return {
        "roc_auc": float(roc_auc_score(y_true, prob)) if both else NAN,
        "balanced_accuracy": (
            float(balanced_accuracy_score(y_true, prob >= threshold)) if both else NAN
        ),
        "sens_at_spec_90": sensitivity_at_specificity(y_true, prob, specificity=0.90),
        "sens_at_spec_95": sensitivity_at_specificity(y_true, prob, specificity=0.95),
        "pauc_above_80_tpr": partial_auc_above_tpr(y_true, prob, min_tpr=0.8),
        "ece": expected_calibration_error(y_true, prob),
        "ece_floor": ece_noise_floor(prob),
        "n": int(len(y_true)),
        "n_pos": int(y_true.sum()),
        **extra,
    }


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_temperature(logits, labels, *, bounds: tuple[float, float] = (0.25, 20.0)) -> float:
    """Temperature T minimising the NLL of ``softmax(logits / T)`` (1.0 when it cannot be fit).

    ``logits`` is ``[N, C]`` or ``[N]`` (a binary logit, treated as ``[0, z]``). The lower bound
    stops a small, perfectly separated validation set from driving T towards 0 (infinitely sure).
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    if logits.ndim == 1:
        logits = np.stack([np.zeros_like(logits), logits], axis=1)
    if len(labels) == 0 or len(np.unique(labels)) < 2:
        return 1.0
    # Search log T: NLL is smooth and unimodal there, and the bounds stay symmetric around T = 1.
    result = minimize_scalar(
        lambda log_t: _nll(logits, labels, math.exp(log_t)),
        bounds=(math.log(bounds[0]), math.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(math.exp(result.x)) if result.success else 1.0


def _margins(logits) -> np.ndarray:
    """The malignant-minus-benign logit of ``[N, 2]`` logits; ``[N]`` passes through."""
    logits = np.asarray(logits, dtype=np.float64)
    return logits[:, 1] - logits[:, 0] if logits.ndim == 2 else logits


def fit_calibration(
    logits, labels, *, bounds: tuple[float, float] = (0.25, 20.0), max_bias: float = 5.0
) -> tuple[float, float]:
    """Temperature T and bias b minimising the NLL of ``sigmoid(z / T + b)`` on a held-out set.

    ``z`` is the binary logit (``[N]``, or ``[N, 2]`` reduced to class 1 minus class 0): Platt
    scaling, written as a temperature and a shift. The shift corrects a model whose
    probabilities are off in one direction, which a temperature alone cannot (it only stretches
    around 0.5). Returns ``(1.0, 0.0)`` when the labels hold one class.
    """
    z = _margins(logits)
    y = np.asarray(labels).astype(np.float64)
    if len(y) == 0 or len(np.unique(y)) < 2:
        return 1.0, 0.0

    def nll(params: np.ndarray) -> float:
        s = z * math.exp(-params[0]) + params[1]
        return float(np.mean(np.logaddexp(0.0, s) - y * s))  # binary cross-entropy, stable form

    start = np.array([math.log(fit_temperature(z, y.astype(int), bounds=bounds)), 0.0])
    result = minimize(
        nll,
        start,
        method="L-BFGS-B",
        bounds=[(math.log(bounds[0]), math.log(bounds[1])), (-max_bias, max_bias)],
    )
    best = result.x if result.success and nll(result.x) <= nll(start) else start
    return float(math.exp(best[0])), float(best[1])
