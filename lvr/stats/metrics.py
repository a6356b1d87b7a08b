"""Test metrics: the original's metrics (same keys), patient-bootstrap confidence intervals and
patient-level metrics.

The bootstrap resamples patients with all their beats. `patient_bootstrap_ci` computes every
resample at once from beat weights; the one-scikit-learn-call-per-resample version it replaced
is tests/references.py's `patient_bootstrap_ci_loop`, the reference for tests and the benchmark.
"""
import numpy as np
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, precision_score,
                             recall_score, roc_auc_score, roc_curve)


def classification_metrics(y_true, prob, class_names, sample_weight=None):
    """The original's test metrics (same keys) plus sensitivity and specificity.

    Binary: `roc_auc` is one number for class 1 and fpr/tpr are flat lists. Multi-class:
    `roc_auc` = {"macro": one-vs-rest macro AUC, "class_k": ...}, fpr/tpr one list per class,
    `class_metrics` per class. Sensitivity/specificity are those of class 1 (binary) or the
    macro average of one-vs-rest values (multi-class).
    """
    y_true = np.asarray(y_true)
    prob = np.asarray(prob, dtype=np.float64)
    n_classes = prob.shape[1]
    labels = list(range(n_classes))
    pred = prob.argmax(1)
    w = sample_weight
    cm = confusion_matrix(y_true, pred, labels=labels, sample_weight=w)
    out = {
        "accuracy": float(accuracy_score(y_true, pred, sample_weight=w)),
        "precision": float(precision_score(y_true, pred, labels=labels, average="macro",
                                           zero_division=0, sample_weight=w)),
        "recall": float(recall_score(y_true, pred, labels=labels, average="macro",
                                     zero_division=0, sample_weight=w)),
        "f1": float(f1_score(y_true, pred, labels=labels, average="macro", zero_division=0,
                             sample_weight=w)),
        "confusion_matrix": cm.astype(int).tolist() if w is None else cm.tolist(),
    }
    tp = np.diag(cm).astype(float)
    fn = cm.sum(1) - tp
    fp = cm.sum(0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        spec = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
    present = np.unique(y_true)
    if n_classes == 2:
        out["sensitivity"] = float(sens[1])
        out["specificity"] = float(spec[1])
        if len(present) == 2:
            fpr, tpr, _ = roc_curve(y_true, prob[:, 1], sample_weight=w)
            out["fpr"], out["tpr"] = fpr.tolist(), tpr.tolist()
            out["roc_auc"] = float(roc_auc_score(y_true, prob[:, 1], sample_weight=w))
        else:
            out["fpr"], out["tpr"], out["roc_auc"] = [], [], None
        return out
    out["sensitivity"] = float(np.nanmean(sens))
    out["specificity"] = float(np.nanmean(spec))
    aucs, fprs, tprs, class_metrics = {}, [], [], {}
    for k in labels:
        positive = (y_true == k).astype(int)
        if 0 < positive.sum() < len(positive):
            fpr, tpr, _ = roc_curve(positive, prob[:, k], sample_weight=w)
            aucs[f"class_{k}"] = float(roc_auc_score(positive, prob[:, k], sample_weight=w))
        else:
            fpr, tpr = np.array([]), np.array([])
            aucs[f"class_{k}"] = None
        fprs.append(fpr.tolist())
        tprs.append(tpr.tolist())
        total = float(cm[k].sum())
        precision_k = tp[k] / (tp[k] + fp[k]) if tp[k] + fp[k] > 0 else 0.0
        recall_k = tp[k] / total if total > 0 else 0.0
        class_metrics[f"class_{k}"] = {
            "name": class_names[k], "accuracy": recall_k, "precision": float(precision_k),
            "recall": float(recall_k),
            "f1": float(2 * precision_k * recall_k / (precision_k + recall_k))
            if precision_k + recall_k > 0 else 0.0,
            "auc": aucs[f"class_{k}"], "correct_predictions": float(tp[k]) if w is not None
            else int(tp[k]), "total_samples": total if w is not None else int(total)}
    defined = [a for a in aucs.values() if a is not None]
    aucs = {"macro": float(np.mean(defined)) if len(defined) == n_classes else None, **aucs}
    out.update({"fpr": fprs, "tpr": tprs, "roc_auc": aucs, "class_metrics": class_metrics})
    return out


def macro_roc_auc(y_true, prob):
    """AUC of P(class 1) for two classes, else the mean of the one-vs-rest AUCs (the reports'
    macro AUC); NaN when a class is absent from `y_true`."""
    y_true, prob = np.asarray(y_true), np.asarray(prob)
    classes = range(prob.shape[1])
    if any(not 0 < (y_true == k).sum() < len(y_true) for k in classes):
        return float("nan")
    if prob.shape[1] == 2:
        return float(roc_auc_score(y_true, prob[:, 1]))
    return float(np.mean([roc_auc_score(y_true == k, prob[:, k]) for k in classes]))


def headline_metrics(metrics):
    """The scalar metrics a confidence interval is reported for."""
    auc = metrics["roc_auc"]
    return {"roc_auc": auc["macro"] if isinstance(auc, dict) else auc,
            "accuracy": metrics["accuracy"], "precision": metrics["precision"],
            "recall": metrics["recall"], "f1": metrics["f1"],
            "sensitivity": metrics["sensitivity"], "specificity": metrics["specificity"]}


# resamples whose beat weights are computed at once: ~50 MB of weights, ~200 MB at the peak
BOOTSTRAP_CHUNK_BYTES = 50 * 2 ** 20


def resampled_patient_weights(rng, inverse, n_patients, n_resamples):
    """Beat weights (n_resamples, n_beats) of patient resamples: a patient drawn m times weighs m.

    One draw of shape (n_resamples, n_patients) gives the same numbers, in the same order, as one
    `rng.integers(0, n_patients, n_patients)` per resample (a test checks this).
    """
    draws = rng.integers(0, n_patients, (n_resamples, n_patients))
    offsets = np.arange(n_resamples)[:, None] * n_patients
    counts = np.bincount((draws + offsets).ravel(), minlength=n_resamples * n_patients)
    return counts.reshape(n_resamples, n_patients)[:, inverse].astype(np.float64)


def weighted_confusion_matrices(y_true, pred, weights, n_classes):
    """Confusion matrices (n_resamples, true class, predicted class) for each row of `weights`."""
    pairs = np.eye(n_classes * n_classes)[y_true.astype(np.int64) * n_classes + pred]
    return (weights @ pairs).reshape(-1, n_classes, n_classes)


def weighted_roc_auc(positive, score, weights):
    """roc_auc_score(positive, score, sample_weight=w) for each row w of `weights`; NaN for a row
    without positive or without negative weight.

    A positive-negative pair counts 1 when the positive scores higher, 1/2 when tied.
    """
    negatives = np.flatnonzero(~positive)
    negatives = negatives[np.argsort(score[negatives], kind="stable")]
    positives = np.flatnonzero(positive)
    below = np.searchsorted(score[negatives], score[positives], "left")
    up_to = np.searchsorted(score[negatives], score[positives], "right")
    negative_cum = np.zeros((len(weights), len(negatives) + 1))
    np.cumsum(weights[:, negatives], axis=1, out=negative_cum[:, 1:])
    positive_weight = weights[:, positives]
    # twice the weight of correctly ranked pairs: a sum of integers (exact) for integer weights
    pairs = np.add(negative_cum[:, below], negative_cum[:, up_to])
    twice_right = np.einsum("ij,ij->i", positive_weight, pairs)
    n_pos, n_neg = positive_weight.sum(1), negative_cum[:, -1]
    defined = (n_pos > 0) & (n_neg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined, twice_right / (2 * n_pos * n_neg), np.nan)


def confusion_headline_metrics(cm):
    """Accuracy, macro precision/recall/F1 (zero_division=0, every class counts) and per-class
    sensitivity/specificity (NaN when undefined) of confusion matrices (n, K, K)."""
    tp = np.diagonal(cm, axis1=1, axis2=2)
    true, pred, total = cm.sum(2), cm.sum(1), cm.sum((1, 2))
    tn = total[:, None] - true - pred + tp
    negative = total[:, None] - true
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred > 0, tp / pred, 0.0)
        recall = np.where(true > 0, tp / true, 0.0)
        f1 = np.where(true + pred > 0, 2 * tp / (true + pred), 0.0)
        return {"accuracy": tp.sum(1) / total, "precision": precision.mean(1),
                "recall": recall.mean(1), "f1": f1.mean(1),
                "sensitivity": np.where(true > 0, tp / true, np.nan),
                "specificity": np.where(negative > 0, tn / negative, np.nan)}


def row_nanmean(values):
    """np.nanmean(values, axis=1), NaN for an all-NaN row, without its warning."""
    defined = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined, values, 0.0).sum(1) / defined.sum(1)


def bootstrap_headline_metrics(y_true, prob, weights, n_classes):
    """headline_metrics(classification_metrics(y_true, prob, ..., w)) for each row w of `weights`
    (n_resamples, n_beats): {name: array (n_resamples,)}, NaN where the metric is None or NaN.

    Beats of weight 0 count as left out, as when patient_bootstrap_ci dropped them.
    """
    y_true = np.asarray(y_true)
    prob = np.asarray(prob, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    counts = confusion_headline_metrics(
        weighted_confusion_matrices(y_true, prob.argmax(1), weights, n_classes))
    if n_classes == 2:
        auc = weighted_roc_auc(y_true == 1, prob[:, 1], weights)
        sensitivity, specificity = counts["sensitivity"][:, 1], counts["specificity"][:, 1]
    else:
        # the macro AUC is undefined (NaN) as soon as one class's AUC is
        auc = np.mean([weighted_roc_auc(y_true == k, prob[:, k], weights)
                       for k in range(n_classes)], axis=0)
        sensitivity = row_nanmean(counts["sensitivity"])
        specificity = row_nanmean(counts["specificity"])
    return {"roc_auc": auc, "accuracy": counts["accuracy"], "precision": counts["precision"],
            "recall": counts["recall"], "f1": counts["f1"], "sensitivity": sensitivity,
            "specificity": specificity}


def patient_bootstrap_ci(y_true, prob, patient_ids, class_names, n_boot=1000, seed=0, level=0.95):
    """Percentile confidence intervals that resample patients (with all their beats).

    Each resample draws as many patients as the test set has, with replacement; a patient drawn
    m times weighs m in every metric. Returns {"<metric>_ci95": [lo, hi]} for headline metrics.
    The metrics are those of classification_metrics, computed for many resamples at once.
    """
    patients, inverse = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    y_true = np.asarray(y_true)
    prob = np.asarray(prob, dtype=np.float64)
    rng = np.random.default_rng(seed)
    rows = max(1, BOOTSTRAP_CHUNK_BYTES // (8 * max(len(inverse), 1)))
    # n_boot=0 still goes through one (empty) chunk, which names the metrics
    sizes = [min(rows, n_boot - start) for start in range(0, n_boot, rows)] or [0]
    parts = [bootstrap_headline_metrics(
        y_true, prob, resampled_patient_weights(rng, inverse, len(patients), size), prob.shape[1])
        for size in sizes]
    draws = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return percentile_cis({name: v[np.isfinite(v)] for name, v in draws.items()}, level)


def percentile_cis(draws, level):
    """{"<metric>_ci95": [lo, hi]} percentile intervals of each metric's finite draws (None
    with fewer than 10 draws)."""
    tail = (1 - level) / 2 * 100
    key_suffix = f"_ci{int(round(level * 100))}"
    return {f"{name}{key_suffix}": ([float(np.percentile(v, tail)),
                                     float(np.percentile(v, 100 - tail))]
                                    if len(v) >= 10 else None)
            for name, v in draws.items()}


def patient_level_arrays(y_true, prob, patient_ids):
    """One row per patient: its class and the mean class probability over its beats."""
    patients, inverse = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    counts = np.bincount(inverse)
    mean_prob = np.stack([np.bincount(inverse, weights=prob[:, k]) / counts
                          for k in range(prob.shape[1])], axis=1)
    y_patient = np.zeros(len(patients), dtype=np.int64)
    y_patient[inverse] = y_true
    return patients, y_patient, mean_prob


# A test set smaller than this gives intervals too wide, or too unstable, to report as they are
# (with 4 patients a perfect AUC has a bootstrap interval of [1, 1]); its report says so.
SMALL_TEST_PATIENTS = 20
SMALL_TEST_PATIENTS_PER_CLASS = 5


def small_sample_warning(y_patient, class_names):
    """A warning for a test set of too few patients (overall or in a class), or None."""
    counts = {name: int((np.asarray(y_patient) == i).sum()) for i, name in enumerate(class_names)}
    few = {name: n for name, n in counts.items() if n < SMALL_TEST_PATIENTS_PER_CLASS}
    if len(y_patient) >= SMALL_TEST_PATIENTS and not few:
        return None
    per_class = ", ".join(f"{name}: {n}" for name, n in counts.items())
    plural = "" if len(y_patient) == 1 else "s"
    return (f"small test set: {len(y_patient)} patient{plural} ({per_class}); below "
            f"{SMALL_TEST_PATIENTS} patients or {SMALL_TEST_PATIENTS_PER_CLASS} per class the "
            f"metrics and their bootstrap CIs are unstable, and a CI of [1, 1] does not mean "
            f"certainty. Report them as such, or test on more patients")


def test_report(y_true, prob, patient_ids, class_names, n_boot, seed):
    """Beat-level metrics with patient-bootstrap CIs, and patient-level metrics when relevant."""
    report = classification_metrics(y_true, prob, class_names)
    report.update(patient_bootstrap_ci(y_true, prob, patient_ids, class_names, n_boot, seed))
    patients, y_patient, prob_patient = patient_level_arrays(y_true, prob, patient_ids)
    report["n_beats"] = int(len(y_true))
    report["n_patients"] = int(len(patients))
    warning = small_sample_warning(y_patient, class_names)
    if warning:
        report["small_sample_warning"] = warning
    if len(patients) < len(y_true):
        level = classification_metrics(y_patient, prob_patient, class_names)
        level.update(patient_bootstrap_ci(y_patient, prob_patient, patients, class_names, n_boot,
                                          seed))
        level["n_patients"] = int(len(patients))
        report["patient_level"] = level
    return report
