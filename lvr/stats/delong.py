"""DeLong's test for two correlated ROC AUCs: two models scored on the same cases.

DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837-845, in the fast midrank form of Sun
& Xu (2014), IEEE Signal Processing Letters 21:1389-1393. The cases must be independent: pass
one score per patient (the mean of the patient's beat probabilities), not one per beat.
"""
import math

import numpy as np
from scipy import stats

# below this a float p-value has underflowed, or lost its digits to subnormal rounding
SMALLEST_P = 1e-300


def p_text(p, digits=4):
    """'p = 0.0123' or, for a p that underflows (0 or below SMALLEST_P), 'p < 1e-300': a p of
    exactly 0 is a float's limit, not a certainty."""
    if p is None:
        return "p not computable"
    if p < SMALLEST_P:
        return f"p < {SMALLEST_P:.0e}"
    return f"p = {p:.{digits}g}"


def placements(positive, negative):
    """DeLong's structural components of one score: V10 (per positive case, the share of
    negatives it outranks, ties counting half) and V01 (per negative, the share of positives
    that outrank it), from midranks."""
    m, n = len(positive), len(negative)
    ranks = stats.rankdata(np.concatenate([positive, negative]))
    v10 = (ranks[:m] - stats.rankdata(positive)) / n
    v01 = 1.0 - (ranks[m:] - stats.rankdata(negative)) / m
    return v10, v01


def delong_paired_test(y_true, score_a, score_b, alpha=0.05):
    """AUCs of two scores of the same cases, their difference, its standard error, the z test
    and a (1 - alpha) confidence interval of the difference.

    y_true: 0/1 labels; score_a, score_b: higher = more likely positive. Returns a dict with
    auc_a, auc_b, difference (a - b), se, z, p (two-sided), ci (list) and reason (None, or why
    the test is not computable). When the two scores give identical placements the difference
    has no variance: se 0, z None, p 1 (the AUCs are equal). When the variance cannot be
    estimated (a class of one case) or is 0 while the AUCs differ, there is no test: se, z, p
    and ci are None and reason says why.
    """
    y = np.asarray(y_true).astype(int).ravel()
    scores = [np.asarray(s, dtype=float).ravel() for s in (score_a, score_b)]
    if any(len(s) != len(y) for s in scores):
        raise ValueError(f"{len(y)} labels but scores of {[len(s) for s in scores]} cases")
    if not set(np.unique(y)) <= {0, 1} or y.min() == y.max():
        raise ValueError("y_true must hold both classes, as 0 and 1")
    if not all(np.isfinite(s).all() for s in scores):
        raise ValueError("scores must be finite")
    components = [placements(s[y == 1], s[y == 0]) for s in scores]
    v10 = np.array([c[0] for c in components])           # (2, m)
    v01 = np.array([c[1] for c in components])           # (2, n)
    aucs = v10.mean(axis=1)
    difference = float(aucs[0] - aucs[1])
    result = {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": difference,
              "se": None, "z": None, "p": None, "ci": None, "reason": None,
              "positives": int(v10.shape[1]), "negatives": int(v01.shape[1])}
    small = [f"one {name} case" for name, v in (("positive", v10), ("negative", v01))
             if v.shape[1] < 2]
    if small:
        result["reason"] = (f"not computable: {' and '.join(small)}; the variance of the AUC "
                            f"difference needs at least 2 cases of each class")
        return result
    covariance = np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]
    variance = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    se = math.sqrt(max(variance, 0.0)) if math.isfinite(variance) else None
    result["se"] = se
    if se is None or (se == 0 and difference != 0):
        result["reason"] = ("not computable: the variance of the AUC difference is not finite"
                            if se is None else
                            f"not computable: the standard error is 0 while the AUCs differ by "
                            f"{difference:+.4g} (every case's placements differ by the same "
                            f"amount)")
        return result
    if se == 0:   # identical placements: the same AUC, nothing to test
        result.update(p=1.0, ci=[0.0, 0.0])
        return result
    z = difference / se
    half = stats.norm.ppf(1 - alpha / 2) * se
    result.update(z=float(z), p=float(2 * stats.norm.sf(abs(z))),
                  ci=[difference - half, difference + half])
    return result
