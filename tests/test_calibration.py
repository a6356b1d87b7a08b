"""Calibration measures against scikit-learn and scipy, and on outcomes of known calibration."""
import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from lvr.calibration import (calibration_report, calibration_values, logit, reliability_bins,
                             calibration_by_class)


def outcomes(n, seed, spread=1.0, shift=0.0):
    """Probabilities p and outcomes drawn from logit P(y) = (logit(p) - shift) / spread."""
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-rng.normal(0, 1.5, n)))
    truth = 1 / (1 + np.exp(-(logit(p) - shift) / spread))
    return (rng.random(n) < truth).astype(float), p


def test_values_equal_sklearn_and_scipy():
    y, p = outcomes(400, 0)
    found = calibration_values(y, p)
    assert found["brier"] == pytest.approx(brier_score_loss(y, p))
    fit = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(logit(p)[:, None], y)
    assert found["calibration_slope"] == pytest.approx(fit.coef_[0, 0], rel=1e-5)

    def loss(a):                                   # intercept with logit(p) as an offset
        q = 1 / (1 + np.exp(-(a + logit(p))))
        return -np.sum(y * np.log(q) + (1 - y) * np.log(1 - q))
    assert found["calibration_intercept"] == pytest.approx(
        minimize_scalar(loss, bounds=(-5, 5), method="bounded", options={"xatol": 1e-10}).x,
        abs=1e-6)


def test_known_miscalibration_is_found():
    y, p = outcomes(20000, 1)                              # calibrated
    good = calibration_values(y, p)
    assert good["calibration_slope"] == pytest.approx(1, abs=0.05)
    assert good["calibration_intercept"] == pytest.approx(0, abs=0.05)
    y, p = outcomes(20000, 2, spread=2.0)                  # twice too extreme
    assert calibration_values(y, p)["calibration_slope"] == pytest.approx(0.5, abs=0.05)
    y, p = outcomes(20000, 3, shift=1.0)                   # over-predicts
    assert calibration_values(y, p)["calibration_intercept"] == pytest.approx(-1, abs=0.08)


def test_weights_are_repeated_cases_and_the_bootstrap_resamples_patients():
    y, p = outcomes(300, 4)
    weights = np.random.default_rng(0).integers(0, 3, 300).astype(float)
    repeated = np.repeat(np.arange(300), weights.astype(int))
    weighted = calibration_values(y, p, weights)
    expanded = calibration_values(y[repeated], p[repeated])
    for key in weighted:
        assert weighted[key] == pytest.approx(expanded[key], rel=1e-6)
    ids = np.arange(300) // 3
    report = calibration_report(y, p, ids, n_boot=300, seed=0)
    low, high = report["calibration_slope_ci95"]
    assert low < report["calibration_slope"] < high
    # every beat three times: same patients, same point estimates and intervals
    thrice = calibration_report(np.repeat(y, 3), np.repeat(p, 3), np.repeat(ids, 3), 300, 0)
    assert thrice["brier_ci95"] == pytest.approx(report["brier_ci95"])
    other = calibration_report(y, p, ids, n_boot=300, seed=1)
    assert other["brier_ci95"] != report["brier_ci95"]


def test_reliability_bins_and_per_class_reports():
    bins = reliability_bins(np.array([0, 1, 1, 0]), np.array([0.05, 0.95, 0.91, 0.5]))
    assert [(b["low"], b["count"], b["observed"]) for b in bins] == [
        (0.0, 1, 0.0), (0.5, 1, 0.0), (0.9, 2, 1.0)]
    rng = np.random.default_rng(5)
    prob = rng.dirichlet(np.ones(4), 80)
    y = rng.integers(0, 4, 80)
    found = calibration_by_class(y, prob, np.arange(80) // 2, ["a", "b", "c", "d"], n_boot=20)
    assert set(found) == {"a", "b", "c", "d"}
    assert found["c"]["brier"] == pytest.approx(brier_score_loss(y == 2, prob[:, 2]))
    binary = calibration_by_class(y % 2, np.column_stack([1 - prob[:, 0], prob[:, 0]]),
                                     np.arange(80), ["neg", "pos"], n_boot=20)
    assert list(binary) == ["pos"]
