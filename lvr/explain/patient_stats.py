"""Lead statistics with patients, not beats, as the samples: a patient's row is the mean of
their beats, so the tests' samples are independent and a patient with many beats weighs as much
as one with few; bootstrap replicates resample patients.
"""
import numpy as np

from lvr.explain.lead_stats import (MIN_SAMPLES, normalised_importance, subgroup_lead_statistics,
                                    top_leads)

BOOTSTRAP_CHUNK_VALUES = 2_000_000   # values drawn per chunk of replicates (16 MB)


def patient_means(values, patient_ids):
    """The patients (sorted IDs) and the mean of `values` (N, ...) over each one's beats."""
    values = np.asarray(values, dtype=float)
    patients, inverse = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    sums = np.zeros((len(patients),) + values.shape[1:])
    np.add.at(sums, inverse, values)
    return patients, sums / np.bincount(inverse).reshape((-1,) + (1,) * (values.ndim - 1))


def bootstrap_patient_means(rows, n_boot, seed):
    """Mean of `rows` over patients resampled with replacement, n_boot times: (n_boot, columns).
    Replicates are drawn in chunks of at most about BOOTSTRAP_CHUNK_VALUES values."""
    rng = np.random.default_rng(seed)
    n = len(rows)
    chunk = max(1, min(n_boot, BOOTSTRAP_CHUNK_VALUES // max(1, n * rows.shape[1])))
    means = np.empty((n_boot, rows.shape[1]))
    for start in range(0, n_boot, chunk):
        draws = rng.integers(0, n, (min(chunk, n_boot - start), n))
        means[start:start + len(draws)] = rows[draws].mean(axis=1)
    return means


def patient_level_lead_statistics(importance, patient_ids, lead_names, n_key=3, n_boot=1000,
                                  seed=0):
    """The lead statistics with patients, not beats, as the samples.

    Each beat's importance is normalised to sum 1 and a patient's row is the mean of their beats,
    so a patient with ten beats weighs as much as one with two and the tests' samples are
    independent. Returns :func:`subgroup_lead_statistics` of those rows (``sample_count`` =
    patients) plus ``beat_count``, ``patient_count`` and, from ``n_boot`` patient-bootstrap
    replicates (percentile intervals): ``mean_lead_importance_ci95`` (lead -> [lo, hi]) and
    ``key_lead_stability`` (lead -> share of replicates whose key leads include it).
    """
    names = [str(name) for name in lead_names]
    normalised = normalised_importance(importance, names, n_key)
    if len(patient_ids) != len(normalised):
        raise ValueError(f"{len(patient_ids)} patient IDs for {len(normalised)} importance rows")
    patients, rows = patient_means(normalised, patient_ids)   # rows still sum to 1
    result = subgroup_lead_statistics(rows, names, n_key)
    result.update(beat_count=int(len(normalised)), patient_count=int(len(patients)),
                  bootstrap=int(n_boot), mean_lead_importance_ci95=None, key_lead_stability=None)
    if len(patients) < MIN_SAMPLES or n_boot < 1:
        return result
    means = bootstrap_patient_means(rows, n_boot, seed)
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    in_key = np.zeros(len(names))
    np.add.at(in_key, top_leads(means, n_key).ravel(), 1)
    result["mean_lead_importance_ci95"] = {name: [float(lo), float(hi)]
                                           for name, lo, hi in zip(names, low, high, strict=True)}
    result["key_lead_stability"] = {name: float(count / n_boot)
                                    for name, count in zip(names, in_key, strict=True)}
    return result
