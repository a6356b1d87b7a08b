"""DeLong's test for two correlated ROC AUCs: two models scored on the same cases.

DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837-845, in the fast midrank form of Sun
& Xu (2014), IEEE Signal Processing Letters 21:1389-1393. The cases must be independent: pass
one score per patient (the mean of the patient's beat probabilities), not one per beat.
"""
import math

import numpy as np
from scipy import stats


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
    auc_a, auc_b, difference (a - b), se, z, p (two-sided) and ci (list). When the two scores
    give identical placements the difference has no variance: se 0, z None, p 1 if the AUCs are
    equal.
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
    covariance = np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]
    variance = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    difference = float(aucs[0] - aucs[1])
    se = math.sqrt(max(variance, 0.0))
    result = {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": difference,
              "se": se, "z": None, "p": 1.0 if difference == 0 else 0.0,
              "ci": [difference, difference], "positives": int(v10.shape[1]),
              "negatives": int(v01.shape[1])}
    if se > 0:
        z = difference / se
        half = stats.norm.ppf(1 - alpha / 2) * se
        result.update(z=float(z), p=float(2 * stats.norm.sf(abs(z))),
                      ci=[difference - half, difference + half])
    return result
