"""A cohort folder -> a validated Cohort: its beats (memory-mapped), groups and patients.

A cohort folder (``DATA_DIR``) holds one file per group, ``cut_<GROUP>.npy`` of shape
(N, 12, T), optionally ``cut_<GROUP>_patient_ids.npy`` (length N) and ``cohort.json`` describing
the groups; without ``cohort.json`` the original project's four groups and label mapping apply.
docs/data.md is the full contract; lvr.data.cohort_json checks cohort.json, lvr.data.beat_files
each file. Every problem with the files raises ``CohortError`` naming the file, what is wrong and
what to do. What comes after loading: lvr.data.beats (the network's input), lvr.data.split
(patient-level splits).
"""
import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from lvr.choices import TASKS
from lvr.data.beat_files import BeatFiles, checked_beats, checked_patient_ids, file_sha256, \
    signal_warnings, whitespace_twins_problem
from lvr.data.cohort_json import (FORMAT_HELP, SEED_COHORT, CohortError, cohort_spec,
                                  problem_report, window_problems)
from lvr.data.patients import PATIENTS_FILE, patient_table


@dataclass
class Cohort:
    """A loaded, validated cohort: raw beats (not standardised) and what each beat is."""
    data_dir: str
    spec: dict
    beats: object                # BeatFiles (memory-mapped) or float32 ndarray (N, leads, T)
    group_index: np.ndarray      # int64 (N,), index into spec["groups"]
    patient_ids: np.ndarray      # str (N,)
    patient_ids_given: bool      # False: every beat is its own patient (the seed's behaviour)
    files: dict = field(default_factory=dict)  # file name -> sha256
    warnings: list = field(default_factory=list)   # data that loads but may carry no signal
    # patients.csv (lvr.data.patients): DataFrame indexed by patient ID (str), or None without the
    # file; outside the fingerprint, its sha256 is recorded for provenance
    patient_table: object = None
    patient_table_sha256: str = None
    notes: list = field(default_factory=list)      # things ignored on purpose, for the log

    @property
    def groups(self):
        return self.spec["groups"]

    def labels(self, task):
        """Integer class of every beat for `task` ('binary' or 'multiclass')."""
        mapping = task_mapping(self.spec, task, self.data_dir)
        lookup = np.array([mapping[g] for g in self.groups], dtype=np.int64)
        return lookup[self.group_index]

    def class_names(self, task):
        mapping = task_mapping(self.spec, task, self.data_dir)
        names = self.spec.get(f"{task}_class_names")
        n_classes = max(mapping.values()) + 1
        return list(names) if names else [f"class_{i}" for i in range(n_classes)]

    @property
    def is_demo(self):
        """True for a cohort written by the demo generator (its beats are simulated)."""
        source = self.spec.get("source")
        return isinstance(source, dict) and source.get("generator") == "demo_cohort.py"

    def fingerprint(self):
        """One sha256 over every file of the cohort, in a fixed order."""
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(f"{name}:{self.files[name]}\n".encode())
        return digest.hexdigest()


# ----------------------------------------------------------------------------- cohort.json

def task_mapping(spec, task, data_dir="."):
    """group -> class for `task`; a clear error when the cohort does not define that task."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    mapping = spec.get(f"{task}_labels")
    if not mapping:
        unlabelled = not any(spec.get(f"{t}_labels") for t in TASKS)
        raise CohortError(f"the cohort in {data_dir} defines no '{task}_labels', so it cannot be "
                          f"used for the {task} task; add the mapping to cohort.json"
                          + ("; a cohort without any labels (prepare_data.py --task=unlabelled) "
                             "is for pretrain.py" if unlabelled else ""))
    return mapping


# ----------------------------------------------------------------------------- files

def expected_files(spec):
    return [f"cut_{g}.npy" for g in spec["groups"]]


def load_cohort(data_dir, allow_pickle=False):
    """Validate every file of the cohort in `data_dir`; its beats stay in their files, mapped
    (BeatFiles), checked chunk by chunk."""
    if not os.path.isdir(data_dir):
        raise CohortError(f"data folder {data_dir!r} does not exist. Put your beat files there "
                          f"({', '.join(expected_files(SEED_COHORT))}, or those named in "
                          f"cohort.json); {FORMAT_HELP}")
    spec = cohort_spec(data_dir)
    missing = [name for name in expected_files(spec)
               if not os.path.exists(os.path.join(data_dir, name))]
    if missing:
        raise CohortError(f"{data_dir} lacks {', '.join(missing)}; a cohort needs "
                          f"{', '.join(expected_files(spec))}; {FORMAT_HELP}")
    n_leads = len(spec["leads"])
    files, beats, id_arrays, paths, id_paths = {}, [], [], [], []
    for group in spec["groups"]:
        path = os.path.join(data_dir, f"cut_{group}.npy")
        beats.append(checked_beats(path, n_leads, allow_pickle))
        paths.append(path)
        files[os.path.basename(path)] = file_sha256(path)
        id_path = os.path.join(data_dir, f"cut_{group}_patient_ids.npy")
        if os.path.exists(id_path):
            id_arrays.append(checked_patient_ids(id_path, beats[-1].shape[0], allow_pickle))
            id_paths.append(id_path)
            files[os.path.basename(id_path)] = file_sha256(id_path)
        else:
            id_arrays.append(None)
    if os.path.exists(os.path.join(data_dir, "cohort.json")):
        files["cohort.json"] = file_sha256(os.path.join(data_dir, "cohort.json"))
    lengths = {g: b.shape[2] for g, b in zip(spec["groups"], beats, strict=True)}
    if len(set(lengths.values())) > 1:
        raise CohortError(f"beats in {data_dir} differ in length between groups "
                          f"({', '.join(f'cut_{g}.npy: T={t}' for g, t in lengths.items())}); "
                          f"cut all beats to the same window")
    problems = window_problems(spec, beats[0].shape[2])
    if problems:
        raise CohortError(problem_report(os.path.join(data_dir, "cohort.json"), problems))
    given = [ids is not None for ids in id_arrays]
    if any(given) and not all(given):
        lacking = [f"cut_{g}_patient_ids.npy"
                   for g, ok in zip(spec["groups"], given, strict=True) if not ok]
        raise CohortError(f"{data_dir} has patient-ID files for some groups but lacks "
                          f"{', '.join(lacking)}; give IDs for every group or for none")
    twins = all(given) and whitespace_twins_problem(zip(id_paths, id_arrays, strict=True))
    if twins:
        raise CohortError(twins)
    if not all(given):
        id_arrays = [np.array([f"{g}:{i}" for i in range(b.shape[0])])
                     for g, b in zip(spec["groups"], beats, strict=True)]
    group_index = np.concatenate([np.full(b.shape[0], i, dtype=np.int64)
                                  for i, b in enumerate(beats)])
    warnings = [text for path, group_beats in zip(paths, beats, strict=True)
                for text in signal_warnings(group_beats, path)]
    warnings += unlisted_files_warning(data_dir, spec)
    patient_ids = np.concatenate(id_arrays)
    patients = patient_table(data_dir, patient_ids)
    cohort = Cohort(data_dir=data_dir, spec=spec, beats=BeatFiles(paths, beats),
                    group_index=group_index, patient_ids=patient_ids,
                    patient_ids_given=all(given), files=files, warnings=warnings)
    if patients is not None:
        cohort.patient_table = patients.table
        cohort.patient_table_sha256 = file_sha256(os.path.join(data_dir, PATIENTS_FILE))
        cohort.warnings += patients.warnings
        cohort.notes += patients.notes
    for task in TASKS:
        if spec.get(f"{task}_labels"):
            check_one_class_per_patient(cohort, task)
    return cohort


def unlisted_files_warning(data_dir, spec):
    """[a warning naming the cut_*.npy files of `data_dir` that are no group's beats or patient
    IDs in `spec` (cohort.json), so are not read], or []: a group left out of cohort.json would
    otherwise vanish from the run without a word."""
    listed = set(expected_files(spec)) | {f"cut_{g}_patient_ids.npy" for g in spec["groups"]}
    unlisted = sorted(name for name in os.listdir(data_dir)
                      if name.startswith("cut_") and name.endswith(".npy") and name not in listed)
    if not unlisted:
        return []
    source = ("cohort.json does not list" if os.path.exists(os.path.join(data_dir, "cohort.json"))
              else "without cohort.json the original four groups do not include")
    return [f"{data_dir} holds {', '.join(unlisted)}, which {source}: not read. To use them, "
            f"add their group to 'groups' (and its labels) in cohort.json"]


def check_one_class_per_patient(cohort, task):
    labels = cohort.labels(task)
    order = np.argsort(cohort.patient_ids, kind="stable")
    ids, labels_sorted = cohort.patient_ids[order], labels[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    lo = np.minimum.reduceat(labels_sorted, starts)
    hi = np.maximum.reduceat(labels_sorted, starts)
    mixed = np.flatnonzero(lo != hi)
    if mixed.size:
        patient = str(ids[starts[mixed[0]]])
        rows = cohort.patient_ids == patient
        groups = sorted({cohort.groups[g] for g in cohort.group_index[rows]})
        raise CohortError(
            f"{cohort.data_dir}: patient {patient!r} has beats in groups of different {task} "
            f"class ({', '.join(f'cut_{g}_patient_ids.npy' for g in groups)}); "
            f"{mixed.size} patient(s) affected. A patient must belong to one class")
