"""Calibration of predicted probabilities: Brier score, calibration intercept and slope, and the
reliability diagram's bins, with patient-bootstrap confidence intervals.

Slope: the coefficient b of the logistic regression logit P(y=1) = a + b logit(p) (1: the
probabilities spread as they should, below 1: too extreme). Intercept (calibration in the large):
a in logit P(y=1) = a + logit(p), the slope fixed at 1 (0: the mean probability is right, above
0: the model under-predicts). Van Calster et al. (2019), BMC Medicine 17:230. Binary tasks use
the positive class; with more classes each class is scored one against the rest.

A resample whose logistic fit diverges (the classes separated, or one class drawn) has no value,
but it is not missing at random: it lies beyond every finite draw on one side (see
failure_side). It counts there, so a bound is open (None) once the failures on its side reach
past the percentile (about 2.5% of the resamples); `bootstrap_failed` counts them.
"""
import numpy as np
from scipy.special import expit

from lvr.stats.metrics import resampled_patient_weights

EPS = 1e-6          # probabilities are clipped to [EPS, 1 - EPS] before the logit
BINS = 10           # equal-width bins of the reliability diagram
NEWTON_STEPS = 50
LEVEL = 0.95        # confidence of the bootstrap intervals
MIN_DRAWS = 10      # fewer finite draws: no interval


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


def failure_side(name, y, p, weights):
    """Where a resample without a `name` value belongs: +1 above every finite draw, -1 below,
    0 nowhere (left out).

    Slope: the fit diverges when logit(p) separates the drawn classes; positives above
    negatives drive the slope to +infinity, the reverse to -infinity; one class drawn leaves
    the slope undefined. Intercept (slope fixed at 1): its score sum w (y - expit(a + logit p))
    falls in a, so a diverges (only with one class drawn) towards the sign of sum w (y - p):
    all positives +infinity, all negatives -infinity."""
    present = weights > 0
    if name == "calibration_intercept":
        return 1 if np.sum(weights * (y - p)) > 0 else -1
    if name != "calibration_slope" or len(np.unique(y[present])) < 2:
        return 0
    x = logit(p)[present]
    positive = y[present] == 1
    if x[positive].min() >= x[~positive].max():
        return 1
    if x[positive].max() <= x[~positive].min():
        return -1
    return 0


def interval_with_failures(draws, below=0, above=0, level=LEVEL):
    """Percentile interval [lo, hi] of the finite `draws` with `below` more draws at -infinity
    and `above` at +infinity; a bound that reaches one of those is None. None with fewer than
    MIN_DRAWS finite draws."""
    draws = np.sort(np.asarray(draws, dtype=np.float64))
    if len(draws) < MIN_DRAWS:
        return None
    tail = (1 - level) / 2 * 100
    if below == above == 0:
        return [float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))]
    ordered = np.concatenate([np.full(below, -np.inf), draws, np.full(above, np.inf)])
    bounds = []
    for q in (tail, 100 - tail):
        position = q / 100 * (len(ordered) - 1)
        i = int(np.floor(position))
        a, b = ordered[i], ordered[min(i + 1, len(ordered) - 1)]
        if position == i:
            bounds.append(float(a) if np.isfinite(a) else None)
        else:
            finite = np.isfinite(a) and np.isfinite(b)
            bounds.append(float(a + (b - a) * (position - i)) if finite else None)
    return bounds


def calibration_report(y, p, patient_ids, n_boot=1000, seed=0):
    """calibration_values with patient-bootstrap percentile 95% CIs (`<name>_ci95`, a bound
    None where failed fits open it), the failed fits per value (`bootstrap_failed`) out of
    `bootstrap_resamples`, and the reliability bins, for one binary outcome."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    report = calibration_values(y, p)
    patients, inverse = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in report}
    sides = {name: {-1: 0, 0: 0, 1: 0} for name in report}
    for start in range(0, n_boot, 100):
        for weights in resampled_patient_weights(rng, inverse, len(patients),
                                                 min(100, n_boot - start)):
            for name, value in calibration_values(y, p, weights).items():
                if value is None:
                    sides[name][failure_side(name, y, p, weights)] += 1
                else:
                    draws[name].append(value)
    for name in draws:
        report[f"{name}_ci{int(round(LEVEL * 100))}"] = interval_with_failures(
            draws[name], below=sides[name][-1], above=sides[name][1])
    report["bootstrap_resamples"] = int(n_boot)
    report["bootstrap_failed"] = {name: int(sum(counts.values())) for name, counts in
                                  sides.items()}
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
