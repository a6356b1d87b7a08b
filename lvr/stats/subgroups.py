"""Performance per subgroup: analysis subgroups (STEMI/NSTEMI), groups and covariate levels.

Every number is at patient level: a patient's probability is the mean over its beats in the
subset (lvr.stats.metrics.patient_level_arrays), and the 95% intervals are percentile intervals of a
bootstrap that resamples the subset's patients (the weighted AUC and confusion matrices of
lvr.stats.metrics). Binary tasks give the AUC of P(class 1), and sensitivity and specificity at
`threshold` (a patient is called positive when P(class 1) >= threshold). Multi-class tasks give
the one-vs-rest macro AUC only: there is no single operating point to read sensitivity at.

A subset with fewer than MIN_SUBGROUP_PATIENTS patients, or without every class, is reported as
{"too_small": true, "reason": ...}, never as numbers. A group holds one class by construction,
so its row gives only the one rate defined there (sensitivity of a positive group, specificity
of a negative one).
"""
import re

import numpy as np

from lvr.stats.metrics import (BOOTSTRAP_CHUNK_BYTES, patient_level_arrays, percentile_cis,
                         resampled_patient_weights, weighted_confusion_matrices, weighted_roc_auc)

MIN_SUBGROUP_PATIENTS = 10
# (label, lower bound included, upper bound excluded); None is open
AGE_BANDS = (("<50", None, 50), ("50-59", 50, 60), ("60-69", 60, 70), ("70-79", 70, 80),
             (">=80", 80, None))
AGE_COLUMN = "age"
MAX_LEVELS = 10      # a column with more distinct values is free text or a measurement, skipped
UNKNOWN = "unknown"  # level of patients the table lacks or whose cell is empty
CLASS_SUFFIX = re.compile(r"_\d+$")   # NS_0, NS_1 -> NS: the seed's <subgroup>_<class> names


def performance_subgroups(spec):
    """Analysis subgroup name -> the groups it covers, from cohort.json.

    cohort.json's analysis_subgroups name the positive group of each subgroup (STEMI -> ST_1);
    the subgroup's performance needs its negatives too, the groups that share the name's stem
    before a final _<digits> (ST_0, ST_1). A subgroup that covers only its own group (PTB-XL's
    MI -> MI) has one class and is left out: its group's row reports it.
    """
    out = {}
    for name, group in (spec.get("analysis_subgroups") or {}).items():
        stem = CLASS_SUFFIX.sub("", group)
        members = [g for g in spec["groups"] if CLASS_SUFFIX.sub("", g) == stem]
        if len(members) > 1:
            out[name] = members
    return out


def subset_metrics(y, prob, threshold, weights):
    """{metric: (n_resamples,) values} of patient-level arrays under each row of `weights`."""
    if prob.shape[1] != 2:
        return {"roc_auc": np.mean([weighted_roc_auc(y == k, prob[:, k], weights)
                                    for k in range(prob.shape[1])], axis=0)}
    cm = weighted_confusion_matrices(y, (prob[:, 1] >= threshold).astype(np.int64), weights, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"roc_auc": weighted_roc_auc(y == 1, prob[:, 1], weights),
                "sensitivity": cm[:, 1, 1] / cm[:, 1].sum(1),
                "specificity": cm[:, 0, 0] / cm[:, 0].sum(1)}


def bootstrap_draws(y, prob, threshold, n_boot, seed):
    """{metric: point estimate}, {metric: finite bootstrap draws} of patient-level arrays."""
    n = len(y)
    points = {name: float(v[0])
              for name, v in subset_metrics(y, prob, threshold, np.ones((1, n))).items()}
    rng = np.random.default_rng(seed)
    rows = max(1, BOOTSTRAP_CHUNK_BYTES // (8 * n))
    parts = [subset_metrics(y, prob, threshold,
                            resampled_patient_weights(rng, np.arange(n), n,
                                                      min(rows, n_boot - start)))
             for start in range(0, n_boot, rows)]
    draws = {name: np.concatenate([part[name] for part in parts] or [np.empty(0)])
             for name in points}
    return points, {name: v[np.isfinite(v)] for name, v in draws.items()}


def subset_row(y_true, prob, patient_ids, mask, threshold, n_boot, seed, level):
    """The row of one subset of beats (`mask`): counts, and metrics or why there are none."""
    patients, y, p = patient_level_arrays(y_true[mask], prob[mask], patient_ids[mask])
    n_classes = prob.shape[1]
    row = {"n_patients": int(len(patients))}
    if n_classes == 2:
        row["n_positive"] = int((y == 1).sum())
    else:
        row["n_per_class"] = np.bincount(y, minlength=n_classes).astype(int).tolist()
    if len(patients) < MIN_SUBGROUP_PATIENTS:
        return {**row, "too_small": True,
                "reason": f"{len(patients)} patients, fewer than {MIN_SUBGROUP_PATIENTS}"}
    absent = sorted(set(range(n_classes)) - set(y.tolist()))
    if absent:
        return {**row, "too_small": True,
                "reason": f"no patient of class {', '.join(map(str, absent))}: one class only"
                if n_classes == 2 else f"no patient of class {', '.join(map(str, absent))}"}
    points, draws = bootstrap_draws(y, p, threshold, n_boot, seed)
    cis = percentile_cis(draws, level)
    suffix = f"_ci{int(round(level * 100))}"
    for name, value in points.items():
        row[name], row[name + suffix] = value, cis[name + suffix]
    return row


def group_row(y_true, prob, patient_ids, mask, threshold, n_boot, seed, level):
    """A group's row: one class, so only the rate defined for it (binary) or counts."""
    patients, y, p = patient_level_arrays(y_true[mask], prob[mask], patient_ids[mask])
    row = {"n_patients": int(len(patients))}
    row.update({"n_positive": int((y == 1).sum())} if prob.shape[1] == 2 else
               {"n_per_class": np.bincount(y, minlength=prob.shape[1]).astype(int).tolist()})
    if len(patients) < MIN_SUBGROUP_PATIENTS:
        return {**row, "too_small": True,
                "reason": f"{len(patients)} patients, fewer than {MIN_SUBGROUP_PATIENTS}"}
    if prob.shape[1] != 2:
        return {**row, "note": "one class: no metric of a multi-class model"}
    rate = "sensitivity" if y[0] == 1 else "specificity"
    # the rate of a one-class subset is its share of patients called positive (or negative)
    called = (p[:, 1] >= threshold) == (y[0] == 1)
    rng = np.random.default_rng(seed)
    weights = resampled_patient_weights(rng, np.arange(len(y)), len(y), n_boot)
    key = f"{rate}_ci{int(round(level * 100))}"
    return {**row, rate: float(called.mean()),
            key: percentile_cis({rate: weights @ called / len(y)}, level)[key],
            "note": "one class: AUC undefined"}


def level_name(value):
    """A covariate value as a level label: 1.0 -> '1', text as written."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def age_band(age):
    if age is None or not np.isfinite(age):
        return UNKNOWN
    for label, low, high in AGE_BANDS:
        if (low is None or age >= low) and (high is None or age < high):
            return label
    return UNKNOWN


def covariate_levels(patient_table):
    """{column: (kind, {patient: level}, ordered levels)} and {column: why skipped}."""
    found, skipped = {}, {}
    for column in patient_table.columns:
        values = patient_table[column]
        filled = values.dropna()
        if column.strip().lower() == AGE_COLUMN:
            if values.dtype.kind not in "fiu":
                skipped[column] = "age column is not numeric; age bands need years as numbers"
                continue
            levels = {p: age_band(a) for p, a in values.items()}
            order = [label for label, _, _ in AGE_BANDS]
            found[column] = ("age bands", levels, order)
            continue
        distinct = filled.unique()
        if len(distinct) > MAX_LEVELS:
            skipped[column] = (f"{len(distinct)} distinct values (more than {MAX_LEVELS}): free "
                               f"text or a measurement, not a categorical covariate")
            continue
        order = [level_name(v) for v in sorted(distinct)]
        levels = {p: UNKNOWN if v is None or (isinstance(v, float) and np.isnan(v))
                  else level_name(v) for p, v in values.items()}
        found[column] = ("categorical", levels, order)
    return found, skipped


def subgroup_report(y_true, prob, patient_ids, groups, patient_table=None, subgroups=None,
                    threshold=0.5, n_boot=1000, seed=0, level=0.95):
    """Patient-level AUC, sensitivity and specificity with patient-bootstrap CIs per subset.

    Beat-level inputs of the test set: `y_true` (N,) classes, `prob` (N, K), `patient_ids` (N,),
    `groups` (N,) the group name of each beat (cut_<GROUP>.npy). `patient_table`: the cohort's
    patients.csv (lvr.data.patients; indexed by patient ID as text) or None. `subgroups`: subgroup
    name -> groups (performance_subgroups(cohort.spec)). Each subset's bootstrap uses `seed`, so
    a row does not depend on which other rows are computed. Returns a JSON-able dict (see
    docs/evaluation.md, "Subgroups").
    """
    y_true = np.asarray(y_true).astype(np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    patient_ids = np.asarray(patient_ids).astype(str)
    groups = np.asarray(groups).astype(str)
    if not (len(y_true) == len(prob) == len(patient_ids) == len(groups)):
        raise ValueError(f"y_true, prob, patient_ids and groups must have one entry per beat; "
                         f"got {len(y_true)}, {len(prob)}, {len(patient_ids)}, {len(groups)}")
    binary = prob.shape[1] == 2
    args = (threshold, n_boot, seed, level)
    report = {"level": "patient", "min_patients": MIN_SUBGROUP_PATIENTS, "n_boot": int(n_boot),
              "ci_level": level, "threshold": float(threshold) if binary else None,
              "metrics": ["roc_auc", "sensitivity", "specificity"] if binary else ["roc_auc"],
              "subgroups": {}, "groups": {}, "covariates": {}, "skipped_covariates": {},
              "notes": []}
    if not binary:
        report["notes"].append("multi-class: macro one-vs-rest AUC only, no operating point")
    for name, members in (subgroups or {}).items():
        mask = np.isin(groups, list(members))
        report["subgroups"][name] = {"groups": list(members),
                                     **subset_row(y_true, prob, patient_ids, mask, *args)}
    for group in sorted(set(groups.tolist())):
        report["groups"][group] = group_row(y_true, prob, patient_ids, groups == group, *args)
    if patient_table is None:
        report["notes"].append("no patients.csv: no covariate subgroups")
        return report
    found, skipped = covariate_levels(patient_table)
    report["skipped_covariates"] = skipped
    for column, (kind, levels, order) in found.items():
        beat_level = np.array([levels.get(p, UNKNOWN) for p in patient_ids])
        present = [x for x in order + [UNKNOWN] if (beat_level == x).any()]
        report["covariates"][column] = {
            "kind": kind,
            "levels": {x: subset_row(y_true, prob, patient_ids, beat_level == x, *args)
                       for x in present}}
    return report
