"""Participant flow (TRIPOD+AI item 20a): for PTB-XL the database (records per device and per
diagnostic superclass) and the task's records, then records read, rejected by reason, kept ->
patients -> beats, per class and per split.

The records part comes from prepare_summary.json, which prepare_data.py writes into the cohort
folder (its "database" block for PTB-XL); a cohort made otherwise (or whose files no longer
match that summary) starts at its patients and beats. The split part comes from a run's
split.json (patient IDs per split).
"""
import json
import os

import numpy as np

from lvr.data.cohort import task_mapping

SUMMARY_FILE = "prepare_summary.json"   # written by lvr.prepare.writer
SPLIT_NAMES = ("train", "val", "test")


def split_patients(split):
    """{split name: set of patient IDs as text} of split.json (or a plain mapping)."""
    return {name: {str(p) for p in split[name]} for name in SPLIT_NAMES if name in split}


def split_masks(cohort, split):
    """{split name: boolean mask of the cohort's beats whose patient is in that split}."""
    return {name: np.isin(cohort.patient_ids, sorted(ids))
            for name, ids in split_patients(split).items()}


def counts(patient_ids, labels, mask, class_names):
    """Patients and beats in `mask`, overall and per class."""
    per_class = {name: {"patients": int(len(np.unique(patient_ids[mask & (labels == k)]))),
                        "beats": int((mask & (labels == k)).sum())}
                 for k, name in enumerate(class_names)}
    return {"patients": int(len(np.unique(patient_ids[mask]))), "beats": int(mask.sum()),
            "per_class": per_class}


def prepare_summary(data_dir):
    """prepare_summary.json of the cohort folder, or None (absent or unreadable)."""
    path = os.path.join(data_dir, SUMMARY_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            summary = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return summary if isinstance(summary, dict) else None


def records_flow(summary, mapping, class_names):
    """The records part of the flow from prepare_summary.json: the database the records were
    chosen from (PTB-XL; None for a table), read, kept, rejected by reason, per class (a
    record's class is its group's)."""
    rejected_groups = [r.get("group") for r in summary.get("rejections", [])]
    per_class = {}
    for k, name in enumerate(class_names):
        groups = [g for g, c in mapping.items() if c == k]
        kept = sum(summary["records_per_group"].get(g, 0) for g in groups)
        rejected = sum(g in groups for g in rejected_groups)
        per_class[name] = {"read": kept + rejected, "kept": kept, "rejected": rejected}
    return {"read": int(summary["records_read"]), "kept": int(summary["records_kept"]),
            "rejected": int(summary["records_rejected"]),
            "rejected_by_reason": dict(summary.get("rejection_counts", {})),
            "per_class": per_class, "database": summary.get("database")}


def participant_flow(cohort, task, split=None, class_names=None):
    """The flow of a cohort (lvr.data.cohort.Cohort) for `task`, and of a run's `split` (split.json,
    or {"train": [patient IDs], "val": [...], "test": [...]}) when given. JSON-able:

    {"class_names": [...],
     "records": None | {"read", "kept", "rejected", "rejected_by_reason": {reason: n},
                        "per_class": {class: {"read", "kept", "rejected"}},
                        "database": None | {"name", "records", "patients",
                                            "per_device": {family: n},
                                            "per_superclass": {class: n}, "selection",
                                            "task_records", "not_in_task": {reason: n}}},
     "cohort": {"patients", "beats", "per_class": {class: {"patients", "beats"}}},
     "splits": None | {split: {"patients", "beats", "per_class": {...}}},
     "outside_splits": None | {"patients", "beats", "per_class": {...}},
     "notes": [...]}
    """
    class_names = list(class_names or cohort.class_names(task))
    labels = cohort.labels(task)
    ids = cohort.patient_ids
    everything = np.ones(len(ids), dtype=bool)
    flow = {"class_names": class_names, "records": None,
            "cohort": counts(ids, labels, everything, class_names),
            "splits": None, "outside_splits": None, "notes": []}
    summary = prepare_summary(cohort.data_dir)
    if summary is None:
        flow["notes"].append(f"no {SUMMARY_FILE}: the cohort was not made by prepare_data.py, so "
                             f"the flow starts at its patients and beats")
    else:
        written = {g: int(n) for g, n in summary.get("beats_per_group", {}).items()}
        present = {g: int((cohort.group_index == i).sum()) for i, g in enumerate(cohort.groups)}
        if written != present:
            flow["notes"].append(f"{SUMMARY_FILE} counts other beats per group ({written}) than "
                                 f"the cohort's files ({present}); the records part is left out")
        else:
            flow["records"] = records_flow(summary, task_mapping(cohort.spec, task),
                                           class_names)
    if split is not None:
        masks = split_masks(cohort, split)
        flow["splits"] = {name: counts(ids, labels, mask, class_names)
                          for name, mask in masks.items()}
        inside = np.any(list(masks.values()), axis=0) if masks else ~everything
        flow["outside_splits"] = counts(ids, labels, ~inside, class_names)
        named = set().union(*split_patients(split).values())
        unknown = named - set(np.unique(ids).tolist())
        if unknown:
            flow["notes"].append(f"the split names {len(unknown)} patient(s) that this cohort "
                                 f"does not have (another cohort's split?)")
    return flow
