"""predictions.csv: every test beat's identity, true label and class probabilities.

One rule aggregates beats everywhere: a record's probability is the mean over its beats and a
patient's the mean over the patient's beats (lvr.metrics.patient_level_arrays); this file keeps
the beats so users can aggregate, calibrate or compare runs themselves.
"""
import csv
import os

import numpy as np

from lvr.run_folder import atomic_write

MANIFEST = "beats_manifest.csv"   # written by prepare_data.py: the record each beat came from


def rows_in_group(group_index):
    """Each beat's row in its group's beat file (groups are stored one after another)."""
    rows = np.zeros(len(group_index), dtype=np.int64)
    for group in np.unique(group_index):
        members = np.flatnonzero(group_index == group)
        rows[members] = np.arange(len(members))
    return rows


def beat_records(data_dir, groups, group_index):
    """The source record of every beat from beats_manifest.csv, or "" when there is none."""
    records = np.full(len(group_index), "", dtype=object)
    path = os.path.join(data_dir, MANIFEST)
    if not os.path.exists(path):
        return records
    with open(path, newline="", encoding="utf-8") as handle:
        listed = {(row["group"], int(row["row"])): row["record"] for row in csv.DictReader(handle)}
    for i, (group, row) in enumerate(zip(group_index, rows_in_group(group_index))):
        records[i] = listed.get((groups[group], int(row)), "")
    return records


def write_predictions(path, cohort, index, y_true, prob, class_names):
    """predictions.csv: one row per beat of `index` (cohort rows), in that order; y_true and prob
    hold the same beats in the same order."""
    groups = cohort.spec["groups"]
    in_group = rows_in_group(cohort.group_index)[index]
    records = beat_records(cohort.data_dir, groups, cohort.group_index)[index]
    with atomic_write(path) as temporary, open(temporary, "w", newline="",
                                                encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "patient", "record", "beat", "true_label",
                         *(f"prob_{name}" for name in class_names)])
        for k, i in enumerate(index):
            writer.writerow([groups[cohort.group_index[i]], cohort.patient_ids[i], records[k],
                             int(in_group[k]), int(y_true[k]),
                             *(f"{p:.6f}" for p in prob[k])])
