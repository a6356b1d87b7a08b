"""Calibration of predicted probabilities: Brier score, calibration intercept and slope, and the
reliability diagram's bins, with patient-bootstrap confidence intervals.

Slope: the coefficient b of the logistic regression logit P(y=1) = a + b logit(p) (1: the
probabilities spread as they should, below 1: too extreme). Intercept (calibration in the large):
a in logit P(y=1) = a + logit(p), the slope fixed at 1 (0: the mean probability is right, above
0: the model under-predicts). Van Calster et al. (2019), BMC Medicine 17:230. Binary tasks use
the positive class; with more classes each class is scored one against the rest.
"""
import numpy as np
from scipy.special import expit

from lvr.metrics import percentile_cis, resampled_patient_weights

EPS = 1e-6          # probabilities are clipped to [EPS, 1 - EPS] before the logit
BINS = 10           # equal-width bins of the reliability diagram
NEWTON_STEPS = 50


def logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def logistic_fit(y, x, weights, offset=None):
    """Weighted maximum-likelihood (intercept, slope) of logit P(y) = a + b x (+ offset), by
    Newton's method; x None fits the intercept alone. None when the fit does not converge (e.g.
    the classes are separated)."""
    design = np.ones((len(y), 1)) if x is None else np.column_stack([np.ones(len(y)), x])
    offset = np.zeros(len(y)) if offset is None else offset
    beta = np.zeros(design.shape[1])
    for _ in range(NEWTON_STEPS):
        p = expit(design @ beta + offset)
        gradient = design.T @ (weights * (y - p))
        hessian = (design * (weights * p * (1 - p))[:, None]).T @ design
        try:
            step = np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            return None
        beta += step
        if np.max(np.abs(step)) < 1e-10:
            return beta if np.all(np.abs(beta) < 1e3) else None
    return None


def calibration_values(y, p, weights=None):
    """Brier score, calibration intercept and slope of probabilities p for 0/1 outcomes y."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    weights = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    values = {"brier": float(np.sum(weights * (p - y) ** 2) / np.sum(weights)),
              "calibration_intercept": None, "calibration_slope": None}
    present = weights > 0
    if len(np.unique(y[present])) < 2:
        return values
    large = logistic_fit(y, None, weights, offset=logit(p))
    fit = logistic_fit(y, logit(p), weights)
    values["calibration_intercept"] = None if large is None else float(large[0])
    values["calibration_slope"] = None if fit is None else float(fit[1])
    return values


def reliability_bins(y, p, bins=BINS):
    """Per equal-width bin of p: mean predicted probability, observed share of positives, count."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        members = which == b
        if members.any():
            rows.append({"low": float(edges[b]), "high": float(edges[b + 1]),
                         "mean_predicted": float(np.mean(p[members])),
                         "observed": float(np.mean(y[members])), "count": int(members.sum())})
    return rows


def calibration_report(y, p, patient_ids, n_boot=1000, seed=0):
    """calibration_values with patient-bootstrap percentile 95% CIs (`<name>_ci95`) and the
    reliability bins, for one binary outcome."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    report = calibration_values(y, p)
    patients, inverse = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in report}
    for start in range(0, n_boot, 100):
        for weights in resampled_patient_weights(rng, inverse, len(patients),
                                                 min(100, n_boot - start)):
            for name, value in calibration_values(y, p, weights).items():
                if value is not None:
                    draws[name].append(value)
    report.update(percentile_cis({k: np.asarray(v) for k, v in draws.items()}, 0.95))
    report["reliability"] = reliability_bins(y, p)
    return report


def calibration_by_class(y_true, prob, patient_ids, class_names, n_boot=1000, seed=0):
    """Calibration of a test set: the positive class of a binary task, or each class against
    the rest, as {"<class name>": calibration_report}."""
    y_true = np.asarray(y_true)
    classes = [1] if prob.shape[1] == 2 else range(prob.shape[1])
    return {class_names[k]: calibration_report(y_true == k, prob[:, k], patient_ids, n_boot,
                                               seed + k)
            for k in classes}
