"""predictions.csv: every test beat's identity, true label and class probabilities.

One rule aggregates beats everywhere: a record's probability is the mean over its beats and a
patient's the mean over the patient's beats (lvr.stats.metrics.patient_level_arrays); this file
keeps the beats so users can aggregate, calibrate or compare runs themselves.
"""
import csv
import json
import os

import numpy as np
import pandas as pd

from lvr.errors import UserError
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
    for i, (group, row) in enumerate(zip(group_index, rows_in_group(group_index), strict=True)):
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
                             *(f"{p:.9g}" for p in prob[k])])


KEY = ["group", "patient", "record", "beat"]


def read_predictions(path):
    """A run's predictions.csv (a run folder or the file itself) as a DataFrame, checked."""
    if os.path.isdir(path):
        path = os.path.join(path, "predictions.csv")
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: give a finished run's folder (training or "
                        f"--evaluate) or its predictions.csv")
    table = pd.read_csv(path, dtype={"group": str, "patient": str, "record": str},
                        keep_default_na=False)
    missing = [c for c in KEY + ["true_label"] if c not in table.columns]
    if missing or not any(c.startswith("prob_") for c in table.columns):
        raise UserError(f"{path} is not a predictions.csv of this project (missing "
                        f"{', '.join(missing) or 'prob_<class> columns'})")
    return table


def scored_cohort(path):
    """(data folder, data fingerprint) of the cohort a run's predictions.csv scored, from the
    split.json beside it, or None when there is none."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    split_path = os.path.join(folder, "split.json")
    if not os.path.isfile(split_path):
        return None
    with open(split_path, encoding="utf-8") as handle:
        split = json.load(handle)
    return split.get("data_dir"), split.get("data_fingerprint")


def same_cohort_problem(path_a, path_b):
    """Why two runs' predictions cannot be paired because they scored different cohorts, a
    warning when that cannot be checked, or None. Patient IDs alone do not tell: two cohorts
    can number their patients alike."""
    found = {path: scored_cohort(path) for path in (path_a, path_b)}
    unknown = [path for path, cohort in found.items() if not cohort or not cohort[1]]
    if unknown:
        return "warning", (f"cannot check that both runs scored the same cohort: no split.json "
                           f"with a data fingerprint beside {', '.join(unknown)}")
    (dir_a, print_a), (dir_b, print_b) = found[path_a], found[path_b]
    if print_a != print_b:
        return "error", (f"the runs scored different cohorts: {path_a} scored {dir_a} "
                         f"(fingerprint {print_a[:12]}), {path_b} scored {dir_b} (fingerprint "
                         f"{print_b[:12]}); DeLong's paired test needs the same beats of the "
                         f"same cohort")
    return None


def paired_scores(a, b, positive, level, names=("A", "B")):
    """(labels, score of run A, score of run B) on the same cases: beats, or patients (the mean
    of each patient's beat probabilities). Both runs must have scored the same beats.

    positive: the class scored one-vs-rest ("" = the last class, a binary run's positive one).
    """
    classes = [c[5:] for c in a.columns if c.startswith("prob_")]
    if [c[5:] for c in b.columns if c.startswith("prob_")] != classes:
        raise UserError("the runs have different classes; DeLong's test compares two models of "
                        "the same task")
    positive = positive or classes[-1]
    if positive not in classes:
        raise UserError(f"--positive_class={positive!r} is not a class of the runs "
                        f"({', '.join(classes)})")
    column = f"prob_{positive}"
    merged = a[KEY + ["true_label", column]].merge(
        b[KEY + ["true_label", column]], on=KEY, how="outer", suffixes=("_a", "_b"),
        indicator=True)
    unmatched = merged["_merge"] != "both"
    if unmatched.any():
        only_a = int((merged["_merge"] == "left_only").sum())
        raise UserError(f"the runs scored different beats ({only_a} only in {names[0]}, "
                        f"{int(unmatched.sum()) - only_a} only in {names[1]}); DeLong's paired "
                        f"test needs the same test patients: use the same data and SEED")
    if (merged["true_label_a"] != merged["true_label_b"]).any():
        raise UserError("the runs give the same beats different true labels; they were not "
                        "trained for the same task")
    y = (merged["true_label_a"] == classes.index(positive)).astype(int)
    if level == "patient":
        grouped = merged.assign(y=y).groupby("patient")
        if (grouped["y"].nunique() > 1).any():
            raise UserError("a patient has beats of both classes; compare at --level=beat")
        frame = grouped.agg(y=("y", "first"), a=(f"{column}_a", "mean"),
                            b=(f"{column}_b", "mean"))
        return frame["y"].to_numpy(), frame["a"].to_numpy(), frame["b"].to_numpy()
    return y.to_numpy(), merged[f"{column}_a"].to_numpy(), merged[f"{column}_b"].to_numpy()
