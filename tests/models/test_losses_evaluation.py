from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.evaluation import evaluate, fit_calibration, fit_temperature, partial_auc_above_tpr
from models.losses import FocalLoss, focal_loss


def test_focal_loss_is_half_ce_with_gamma_0_alpha_half():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 2), torch.randint(0, 2, (16,))
    expected = 0.5 * F.cross_entropy(logits, target)
    torch.testing.assert_close(FocalLoss(alpha=0.5, gamma=0.0)(logits, target), expected)


def test_focal_loss_downweights_easy_examples_and_alpha_weights_positives():
    easy = torch.tensor([[-4.0, 4.0]])
    hard = torch.tensor([[0.5, -0.5]])
    one = torch.tensor([1])
    ratio_focal = focal_loss(easy, one, gamma=2.0) / focal_loss(hard, one, gamma=2.0)
    ratio_ce = F.cross_entropy(easy, one) / F.cross_entropy(hard, one)
    assert ratio_focal < ratio_ce / 10
    assert focal_loss(hard, one, alpha=0.9) > focal_loss(hard, one, alpha=0.1)
    with pytest.raises(ValueError, match="alpha"):
        focal_loss(hard, one, alpha=1.5)


def test_evaluate_known_arrays():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    m = evaluate(y, p)
    assert m["roc_auc"] == pytest.approx(15 / 16)
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["sens_at_spec_90"] == pytest.approx(0.75)
    assert m["n"] == 8 and m["n_pos"] == 4
    assert 0.0 <= m["pauc_above_80_tpr"] <= 0.2 and 0 <= m["ece"] <= 1
    perfect = evaluate(y, y * 0.8 + 0.1)
    assert perfect["roc_auc"] == 1.0 and perfect["pauc_above_80_tpr"] == pytest.approx(0.2)
    assert perfect["ece"] == pytest.approx(0.1)


def test_partial_auc_of_random_scores_is_small():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    # A random classifier's ROC is the diagonal: area above TPR 0.8 is 0.2^2 / 2 = 0.02.
    assert partial_auc_above_tpr(y, rng.random(4000)) == pytest.approx(0.02, abs=0.006)


def test_single_class_gives_nan():
    m = evaluate([1, 1, 1], [0.2, 0.5, 0.9])
    for key in ("roc_auc", "balanced_accuracy", "sens_at_spec_90", "pauc_above_80_tpr"):
        assert math.isnan(m[key])
    assert m["n_pos"] == 3 and not math.isnan(m["ece"])
    with pytest.raises(ValueError, match="0/1"):
        evaluate([0, 2], [0.1, 0.2])


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (5000, 2))
    probs = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    labels = (rng.random(5000) < probs[:, 1]).astype(int)
    # The model is over-confident by a factor of 3: fitting should find T close to 3.
    assert fit_temperature(true_logits * 3, labels) == pytest.approx(3.0, rel=0.1)
    margin = (true_logits[:, 1] - true_logits[:, 0]) * 3
    assert fit_temperature(margin, labels) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(true_logits, np.ones(5000)) == 1.0


def test_fit_calibration_recovers_a_temperature_and_a_shift():
    rng = np.random.default_rng(2)
    true_margin = rng.normal(0, 2, 8000)
    labels = (rng.random(8000) < 1 / (1 + np.exp(-true_margin))).astype(int)
    # A model over-confident by 3 whose logits also sit 1.2 too low (it under-calls class 1).
    seen = (true_margin - 1.2) * 3
    temperature, bias = fit_calibration(seen, labels)
    assert temperature == pytest.approx(3.0, rel=0.1) and bias == pytest.approx(1.2, abs=0.15)
    two_class = np.stack([np.zeros_like(seen), seen], axis=1) + 5.0  # only differences matter
    assert fit_calibration(two_class, labels) == pytest.approx((temperature, bias), rel=1e-3)
    # The shift is what a temperature alone cannot fix: ECE is far lower with it.
    t_only = fit_temperature(seen, labels)
    ece_t = evaluate(labels, 1 / (1 + np.exp(-seen / t_only)))["ece"]
    ece_tb = evaluate(labels, 1 / (1 + np.exp(-(seen / temperature + bias))))["ece"]
    assert ece_tb < 0.03 < ece_t
    # Calibrated logits are left alone; one class cannot be fitted.
    assert fit_calibration(true_margin, labels) == pytest.approx((1.0, 0.0), abs=0.1)
    assert fit_calibration(seen, np.ones(8000)) == (1.0, 0.0)


def test_ece_noise_floor_shrinks_with_the_number_of_images():
    from models.evaluation import ece_noise_floor

    rng = np.random.default_rng(1)
    small, large = rng.uniform(0.05, 0.95, 58), rng.uniform(0.05, 0.95, 5000)
    # A perfectly calibrated model still shows ECE ~0.1 on 58 images, and ~0.01 on 5,000.
    assert 0.06 < ece_noise_floor(small) < 0.2
    assert ece_noise_floor(large) < 0.03
    assert ece_noise_floor(small) == ece_noise_floor(small)  # seeded
    assert math.isnan(ece_noise_floor([]))


def _scores(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, n)
    return y, y + rng.normal(0, 1.2, n)  # AUC ~0.7


def test_auc_interval_holds_the_estimate_and_narrows_with_more_images():
    from sklearn.metrics import roc_auc_score

    from models.evaluation import auc_interval

    rng = np.random.default_rng(0)
    y, s = _scores(200, rng)
    low, high = auc_interval(y, s, draws=400)
    assert low < roc_auc_score(y, s) < high
    y_big, s_big = _scores(3000, rng)
    low_big, high_big = auc_interval(y_big, s_big, draws=400)
    assert high_big - low_big < (high - low) / 2  # ~1/sqrt(15) as wide
    assert auc_interval(y, s, draws=400) == (low, high)  # seeded
    assert all(math.isnan(v) for v in auc_interval([1, 1, 1], [0.1, 0.2, 0.3]))


def test_auc_interval_resamples_whole_groups():
    from models.evaluation import auc_interval

    rng = np.random.default_rng(0)
    y, s = _scores(100, rng)
    # Each lesion photographed 5 times (same label, nearly the same score): 500 images, 100 lesions.
    y5, s5 = np.repeat(y, 5), np.repeat(s, 5) + rng.normal(0, 0.01, 500)
    lesions = np.repeat([f"lesion:{i}" for i in range(100)], 5)
    per_image = auc_interval(y5, s5, draws=400)
    per_lesion = auc_interval(y5, s5, groups=lesions, draws=400)
    one_each = auc_interval(y, s, draws=400)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    # Treating the copies as independent images fakes precision; resampling lesions does not.
    assert width(per_image) < 0.6 * width(per_lesion)
    assert width(per_lesion) == pytest.approx(width(one_each), rel=0.3)


def test_evaluate_reports_the_interval_only_when_asked():
    rng = np.random.default_rng(0)
    y, s = _scores(120, rng)
    assert "roc_auc_ci" not in evaluate(y, 1 / (1 + np.exp(-s)))
    m = evaluate(y, 1 / (1 + np.exp(-s)), ci_draws=200)
    low, high = m["roc_auc_ci"]
    assert low < m["roc_auc"] < high


def test_paired_auc_difference_sees_a_better_model_and_its_mirror():
    from models.evaluation import paired_auc_difference

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    good, weak = y + rng.normal(0, 0.6, 300), y + rng.normal(0, 1.5, 300)
    better = paired_auc_difference(y, good, weak, draws=300)
    assert better["difference"] > 0 and better["ci"][0] > 0 and better["share_better"] > 0.95
    worse = paired_auc_difference(y, weak, good, draws=300)
    assert worse["difference"] == pytest.approx(-better["difference"])
    assert worse["ci"][1] < 0 and worse["share_better"] < 0.05
    same = paired_auc_difference(y, good, good, draws=50)
    assert same["difference"] == 0 and same["ci"] == [0.0, 0.0] and same["share_better"] == 0
