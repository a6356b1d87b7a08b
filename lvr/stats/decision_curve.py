"""Decision curve: the net benefit of acting on the model's probability, against treating every
patient and treating none, over a range of threshold probabilities (Vickers & Elkin, Med Decis
Making 2006;26:565-74).

At a threshold probability pt a case counts as positive (treated) when p >= pt, as in dcurves.
With n cases, TP true and FP false positives:

    model:      NB = TP/n - FP/n * pt/(1 - pt)
    treat all:  NB = pi - (1 - pi) * pt/(1 - pt)      (pi: prevalence)
    treat none: NB = 0

pt/(1 - pt) is the harm of a needless treatment relative to the benefit of a needed one that a
clinician who would treat at pt accepts. Net interventions avoided per 100 patients are
(NB_model - NB_all) / (pt/(1 - pt)) * 100, dcurves' `net_intervention_avoided` with nper=100.

`decision_curve` works over patients (one probability per patient, the mean of its beats'),
with percentile bands from a bootstrap that resamples patients.
"""
import csv

import numpy as np

from lvr.stats.metrics import BOOTSTRAP_CHUNK_BYTES, patient_level_arrays, resampled_patient_weights
from lvr.run_folder import atomic_write

THRESHOLDS = np.arange(5, 61) / 100   # 0.05, 0.06, ..., 0.60, each the double nearest k/100
LEVEL = 0.95
MIN_RESAMPLES = 10                    # fewer give no band, as lvr.stats.metrics.percentile_cis
PER_PATIENTS = 100                    # net interventions avoided per this many patients

CSV_COLUMNS = ["threshold", "net_benefit_model", "net_benefit_model_ci95_low",
               "net_benefit_model_ci95_high", "net_benefit_treat_all", "net_benefit_treat_none",
               "model_minus_treat_all", "model_minus_treat_all_ci95_low",
               "model_minus_treat_all_ci95_high", "net_interventions_avoided_per_100"]


def checked_thresholds(thresholds):
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or len(t) == 0 or not np.all((t > 0) & (t < 1)):
        raise ValueError(f"thresholds: expected a non-empty 1-D sequence of probabilities "
                         f"strictly between 0 and 1, found {thresholds!r}")
    return t


def checked_outcomes(y, p=None):
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0 or not np.isin(y, (0, 1)).all():
        raise ValueError(f"y: expected a non-empty 1-D array of 0/1 labels, found shape "
                         f"{y.shape} with values {np.unique(y)[:5]}")
    if p is None:
        return y.astype(np.int64)
    p = np.asarray(p, dtype=np.float64)
    if p.shape != y.shape or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p: expected {len(y)} probabilities in [0, 1] (one per label), found "
                         f"shape {p.shape}" + ("" if p.shape != y.shape else
                                               f", range [{np.nanmin(p)}, {np.nanmax(p)}]"))
    return y.astype(np.int64), p


def checked_weights(weights, n):
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim not in (1, 2) or w.shape[-1] != n or np.any(w < 0) or np.any(w.sum(-1) <= 0):
        raise ValueError(f"weights: expected non-negative multiplicities of shape ({n},) or "
                         f"(n_resamples, {n}), each row with a positive sum, found shape "
                         f"{w.shape}")
    return w


def treatment_odds(thresholds):
    return thresholds / (1 - thresholds)


def net_benefit(y, p, thresholds, weights=None):
    """Net benefit of treating the cases with p >= pt, at each threshold pt:
    TP/n - FP/n * pt/(1 - pt).

    `weights` are multiplicities (a case of weight m counts m times): shape (n,), or
    (n_resamples, n) for many weightings at once. Returns (len(thresholds),), or
    (n_resamples, len(thresholds)).
    """
    y, p = checked_outcomes(y, p)
    t = checked_thresholds(thresholds)
    w = checked_weights(weights, len(y))
    treated = p[:, None] >= t[None, :]
    tp = w @ (treated & (y == 1)[:, None]).astype(np.float64)
    fp = w @ (treated & (y == 0)[:, None]).astype(np.float64)
    n = w.sum(-1)[..., None]
    return tp / n - fp / n * treatment_odds(t)


def treat_all_net_benefit(y, thresholds, weights=None):
    """Net benefit of treating every case, pi - (1 - pi) * pt/(1 - pt), with pi the (weighted)
    prevalence; shapes as in net_benefit. Treating none has net benefit 0."""
    y = checked_outcomes(y)
    t = checked_thresholds(thresholds)
    w = checked_weights(weights, len(y))
    prevalence = (w @ y.astype(np.float64) / w.sum(-1))[..., None]
    return prevalence - (1 - prevalence) * treatment_odds(t)


def threshold_runs(thresholds, mask):
    """[first, last] threshold of each run of consecutive grid points where `mask` holds."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [[float(thresholds[a]), float(thresholds[b])] for a, b in zip(starts, stops,
                                                                        strict=True)]


def decision_curve(y, p, patient_ids, thresholds=THRESHOLDS, n_boot=1000, seed=0):
    """The decision curve over patients, with patient-bootstrap percentile 95% bands.

    y (0/1), p (probability of class 1) and patient_ids are per beat. A patient's probability is
    the mean of its beats' (lvr.stats.metrics.patient_level_arrays); its label is its beats' label.
    Each of the `n_boot` resamples draws as many patients as there are, with replacement. The
    bands (`*_ci95_low`/`_high`) are pointwise and None with fewer than 10 resamples.
    `useful_threshold_ranges` are the runs of grid thresholds where the model's net benefit
    exceeds both treat-all's and 0; `useful_threshold_ranges_lower_band` the runs where the lower
    bands of model - treat all and of the model's net benefit both exceed 0.
    """
    y, p = checked_outcomes(y, p)
    t = checked_thresholds(thresholds)
    patient_ids = np.asarray(patient_ids)
    if patient_ids.shape != y.shape:
        raise ValueError(f"patient_ids: expected one per beat ({len(y)}), found shape "
                         f"{patient_ids.shape}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ValueError(f"n_boot: expected a non-negative integer, found {n_boot!r}")
    patients, y_patient, prob = patient_level_arrays(y, np.column_stack([1 - p, p]), patient_ids)
    _, inverse = np.unique(patient_ids.astype(str), return_inverse=True)
    if np.any(y_patient[inverse] != y):
        mixed = sorted(set(patients[inverse[y_patient[inverse] != y]]))
        raise ValueError(f"patient_ids: patients with beats of both classes: {mixed[:5]}")
    p_patient = prob[:, 1]
    n = len(patients)

    model = net_benefit(y_patient, p_patient, t)
    treat_all = treat_all_net_benefit(y_patient, t)
    rng = np.random.default_rng(seed)
    rows = max(1, BOOTSTRAP_CHUNK_BYTES // (8 * n))
    model_draws, difference_draws = [], []
    for start in range(0, n_boot, rows):
        weights = resampled_patient_weights(rng, np.arange(n), n, min(rows, n_boot - start))
        drawn = net_benefit(y_patient, p_patient, t, weights)
        model_draws.append(drawn)
        difference_draws.append(drawn - treat_all_net_benefit(y_patient, t, weights))

    curve = {"thresholds": t.tolist(), "net_benefit_model": model.tolist(),
             "net_benefit_treat_all": treat_all.tolist(),
             "net_benefit_treat_none": [0.0] * len(t),
             "model_minus_treat_all": (model - treat_all).tolist(),
             "net_interventions_avoided_per_100":
                 ((model - treat_all) / treatment_odds(t) * PER_PATIENTS).tolist()}
    tail = (1 - LEVEL) / 2 * 100
    lower = {}
    for name, draws in (("net_benefit_model", model_draws),
                        ("model_minus_treat_all", difference_draws)):
        if n_boot >= MIN_RESAMPLES:
            low, high = np.percentile(np.concatenate(draws), [tail, 100 - tail], axis=0)
            lower[name] = low
            curve[f"{name}_ci95_low"], curve[f"{name}_ci95_high"] = low.tolist(), high.tolist()
        else:
            curve[f"{name}_ci95_low"] = curve[f"{name}_ci95_high"] = None
    curve["useful_threshold_ranges"] = threshold_runs(t, (model > treat_all) & (model > 0))
    curve["useful_threshold_ranges_lower_band"] = (
        threshold_runs(t, (lower["model_minus_treat_all"] > 0) & (lower["net_benefit_model"] > 0))
        if lower else None)
    curve.update({"n_patients": int(n), "n_positive_patients": int(y_patient.sum()),
                  "prevalence": float(y_patient.mean()), "n_boot": int(n_boot),
                  "seed": int(seed), "level": LEVEL})
    return curve


def write_decision_curve_csv(path, curve):
    """One row per threshold of `curve` (decision_curve's dict), columns CSV_COLUMNS; a band of
    fewer than 10 resamples is left empty."""
    columns = [curve[name] if curve[name] is not None else [None] * len(curve["thresholds"])
               for name in CSV_COLUMNS[1:]]
    with atomic_write(path) as temporary, open(temporary, "w", newline="",
                                                encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for threshold, *values in zip(curve["thresholds"], *columns, strict=True):
            writer.writerow([repr(float(threshold)),
                             *("" if v is None else repr(float(v)) for v in values)])
    return path
