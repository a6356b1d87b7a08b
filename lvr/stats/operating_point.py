"""The operating point of a 2-class model: a threshold on P(class 1), chosen on the validation
patients before the test set is seen, and the metrics at it.

THRESHOLD names the rule: `youden` (largest sensitivity + specificity - 1), `sensitivity:0.90`
(the most specific threshold with at least that sensitivity), `specificity:0.90` (the most
sensitive one with at least that specificity), a probability, or `argmax` (0.5, the original's
rule). Rules are applied to patients (a patient's probability is the mean over its beats), and a
patient (or beat) is called positive when its probability is >= the threshold. Candidate
thresholds lie midway between neighbouring validation probabilities, so a threshold does not sit
on one validation patient's value.
"""
import numpy as np

from lvr.choices import threshold_rule
from lvr.stats.metrics import patient_level_arrays, percentile_cis, resampled_patient_weights

METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1")


def candidate_thresholds(p):
    """Midpoints between neighbouring distinct values of `p`, plus one below all and one above
    all (every patient positive, none positive)."""
    values = np.unique(p)
    return np.concatenate([[values[0] / 2], (values[:-1] + values[1:]) / 2,
                           [(values[-1] + 1) / 2]])


def sensitivity_specificity(y, p, thresholds):
    """Arrays of sensitivity and specificity at each threshold (positive: p >= threshold)."""
    positive = np.asarray(p)[None, :] >= np.asarray(thresholds)[:, None]
    y = np.asarray(y).astype(bool)
    return positive[:, y].mean(1), (~positive[:, ~y]).mean(1)


def chosen_threshold(y, p, value):
    """The threshold THRESHOLD=`value` gives on patients with classes `y` and probabilities `p`
    (of class 1). Ties are broken towards the middle of the tied thresholds."""
    kind, target = threshold_rule(value)
    if kind in ("probability", "argmax"):
        return target
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        raise ValueError(f"THRESHOLD={value} needs validation patients of both classes")
    candidates = candidate_thresholds(np.asarray(p, dtype=np.float64))
    sensitivity, specificity = sensitivity_specificity(y, p, candidates)
    if kind == "youden":
        score = sensitivity + specificity - 1
    elif kind == "sensitivity":
        score = np.where(sensitivity >= target - 1e-12, specificity, -np.inf)
    else:
        score = np.where(specificity >= target - 1e-12, sensitivity, -np.inf)
    best = np.flatnonzero(score == score.max())
    return float(candidates[best[len(best) // 2]])


def validation_operating_point(y_val, prob_val, val_patient_ids, value):
    """The operating point chosen on the validation beats: {"rule", "threshold", "chosen_on",
    "validation": {n_patients, sensitivity, specificity}}, at patient level."""
    _, y_patient, prob_patient = patient_level_arrays(np.asarray(y_val), np.asarray(prob_val),
                                                      val_patient_ids)
    threshold = chosen_threshold(y_patient, prob_patient[:, 1], value)
    sensitivity, specificity = sensitivity_specificity(y_patient, prob_patient[:, 1], [threshold])
    chosen_on = (f"nothing: THRESHOLD={value} fixed it before any data was seen"
                 if is_fixed_rule(value) else
                 "validation patients (patient probability = mean beat probability)")
    return {"rule": str(value), "threshold": threshold, "chosen_on": chosen_on,
            "validation": {"n_patients": int(len(y_patient)),
                           "sensitivity": float(sensitivity[0]),
                           "specificity": float(specificity[0])}}


def is_fixed_rule(rule):
    """Whether THRESHOLD=`rule` is a given probability (or the argmax), not chosen on data."""
    return threshold_rule(rule)[0] in ("probability", "argmax")


def counts_at_threshold(y, p, threshold, weights):
    """True/false positives/negatives (arrays over the rows of `weights`)."""
    y = np.asarray(y).astype(bool)
    positive = np.asarray(p) >= threshold
    return {name: weights[:, mask].sum(1) for name, mask in (
        ("tp", y & positive), ("fp", ~y & positive), ("fn", y & ~positive),
        ("tn", ~y & ~positive))}


def metrics_from_counts(c):
    """Sensitivity, specificity, PPV, NPV and F1 from counts (NaN where undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"sensitivity": c["tp"] / (c["tp"] + c["fn"]),
                "specificity": c["tn"] / (c["tn"] + c["fp"]),
                "ppv": c["tp"] / (c["tp"] + c["fp"]), "npv": c["tn"] / (c["tn"] + c["fn"]),
                "f1": 2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"])}


def metrics_at_threshold(y, p, patient_ids, threshold, n_boot, seed):
    """METRICS at `threshold` on these beats (or patients), with patient-bootstrap 95% CIs, and
    the confusion matrix [[tn, fp], [fn, tp]] (rows: true class)."""
    patients, inverse = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    point = counts_at_threshold(y, p, threshold, np.ones((1, len(y))))
    values = metrics_from_counts(point)
    rng = np.random.default_rng(seed)
    draws = metrics_from_counts(counts_at_threshold(
        y, p, threshold, resampled_patient_weights(rng, inverse, len(patients), n_boot)))
    out = {name: (float(values[name][0]) if np.isfinite(values[name][0]) else None)
           for name in METRICS}
    out.update(percentile_cis({name: v[np.isfinite(v)] for name, v in draws.items()}, 0.95))
    out["confusion_matrix"] = [[int(point["tn"][0]), int(point["fp"][0])],
                               [int(point["fn"][0]), int(point["tp"][0])]]
    return out


def operating_point_report(y_true, prob, patient_ids, point, n_boot, seed):
    """The test report's operating_point block: `point` (validation_operating_point) and the
    metrics at its threshold, at patient level and at beat level."""
    y_true, prob = np.asarray(y_true), np.asarray(prob, dtype=np.float64)
    patients, y_patient, prob_patient = patient_level_arrays(y_true, prob, patient_ids)
    threshold = point["threshold"]
    return {**point,
            "patient_level": metrics_at_threshold(y_patient, prob_patient[:, 1], patients,
                                                  threshold, n_boot, seed),
            "beat_level": metrics_at_threshold(y_true, prob[:, 1], patient_ids, threshold,
                                               n_boot, seed)}


def argmax_note(n_classes):
    """The operating_point block of a multi-class report, which classifies by argmax."""
    return {"rule": "argmax", "threshold": None,
            "note": f"a {n_classes}-class model classifies each beat as its most probable class; "
                    f"THRESHOLD applies to 2-class tasks only"}
