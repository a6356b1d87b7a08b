"""Calibration measures against scikit-learn and scipy, and on outcomes of known calibration."""
import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from lvr.stats.calibration import (calibration_report, calibration_values, logit, reliability_bins,
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


def separable_test_set(seed=17):
    """40 patients at AUC 0.97: about 4% of the patient resamples separate the classes."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0.0, 1.0], 20)
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, 40) + 3.1 * y - 1.55)))
    return y, p


def test_resamples_that_separate_the_classes_are_counted_and_open_the_slope_interval():
    from sklearn.metrics import roc_auc_score
    y, p = separable_test_set()
    assert roc_auc_score(y, p) == pytest.approx(0.97, abs=0.005)
    report = calibration_report(y, p, np.arange(40), n_boot=1000, seed=0)
    failed = report["bootstrap_failed"]["calibration_slope"]
    assert report["bootstrap_resamples"] == 1000 and 25 < failed < 60     # a few percent
    low, high = report["calibration_slope_ci95"]
    assert high is None and 1 < low < report["calibration_slope"]       # slope -> +infinity
    # the intercept (slope fixed at 1) has a finite fit whenever both classes are drawn
    assert report["bootstrap_failed"]["calibration_intercept"] == 0
    assert None not in report["calibration_intercept_ci95"]
    assert report["bootstrap_failed"]["brier"] == 0


def test_failed_resamples_count_beyond_every_draw_on_their_side():
    from lvr.stats.calibration import interval_with_failures
    draws = np.arange(980.0)
    # 20 of 1000 (2%) diverge upwards: the 97.5th percentile of all 1000, not of the 980
    low, high = interval_with_failures(draws, below=0, above=20)
    assert low == pytest.approx(np.percentile(np.arange(1000.0), 2.5))
    assert high == pytest.approx(np.percentile(np.arange(1000.0), 97.5))
    assert interval_with_failures(np.arange(970.0), below=0, above=30)[1] is None     # 3%
    assert interval_with_failures(np.arange(970.0), below=30, above=0)[0] is None
    assert interval_with_failures(np.arange(5.0), below=0, above=0) is None          # < 10
    y, p = outcomes(300, 4)                       # nothing separates: the old intervals
    ids = np.arange(300) // 3
    report = calibration_report(y, p, ids, n_boot=300, seed=0)
    assert report["bootstrap_failed"] == {"brier": 0, "calibration_intercept": 0,
                                          "calibration_slope": 0}


def test_the_reliability_figure_draws_a_report_with_open_bounds(tmp_path):
    from lvr.report.training_figures import plot_reliability_diagram
    y, p = separable_test_set()
    report = calibration_report(y, p, np.arange(40), n_boot=200, seed=0)
    report["calibration_slope"] = None
    plot_reliability_diagram(tmp_path / "c.png", {"pos": report})
    assert (tmp_path / "c.png").stat().st_size > 0


def test_the_console_summary_names_the_failed_fits_and_the_open_bound():
    from lvr.report.results import calibration_failure_notes
    y, p = separable_test_set()
    report = calibration_report(y, p, np.arange(40), n_boot=1000, seed=0)
    notes = calibration_failure_notes({"LVR": report})
    assert len(notes) == 1 and notes[0].startswith("calibration slope of LVR: the fit failed in")
    assert notes[0].endswith("its upper 95% bound is open")
