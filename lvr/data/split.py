"""Patient-level splits: train/validation/test and k folds, stratified by class, so that no
patient has beats on two sides of a split.
"""
import numpy as np

from lvr.choices import split_sizes_problem
from lvr.data.cohort_json import CohortError
from lvr.errors import UserError

MIN_TRAIN_PATIENTS = 2   # of each class: a model does not learn a class from one person


def patient_classes(labels, patient_ids):
    """Unique patients and each patient's class (a patient with two classes is an error)."""
    patients, inverse = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    labels = np.asarray(labels)
    first = np.full(len(patients), -1, dtype=np.int64)
    first[inverse[::-1]] = labels[::-1]
    if np.any(first[inverse] != labels):
        bad = str(patients[inverse[np.flatnonzero(first[inverse] != labels)[0]]])
        raise CohortError(f"patient {bad!r} has beats of different classes; "
                          f"a patient must belong to one class")
    return patients, first, inverse


def patient_split_indices(labels, patient_ids, test_size=0.1, val_size=0.2, random_state=42):
    """Beat indices of train/val/test, split by patient and stratified by class.

    Each class's patients are shuffled with `random_state` and divided so that roughly
    `test_size` and `val_size` of them (at least one each) go to test and validation.
    """
    problem = split_sizes_problem(test_size, val_size)
    if problem:
        raise UserError(problem)
    needed = 3 if test_size > 0 else 2
    patients, classes, inverse = patient_classes(labels, patient_ids)
    rng = np.random.default_rng(random_state)
    split_of_patient = np.empty(len(patients), dtype=np.int64)  # 0 train, 1 val, 2 test
    for cls in np.unique(classes):
        members = np.flatnonzero(classes == cls)
        if len(members) < needed:
            raise CohortError(
                f"class {cls} has only {len(members)} patient(s); a patient-level split needs at "
                f"least {needed} (one per split). Add patients of that class")
        members = rng.permutation(members)
        n_test = max(1, int(round(test_size * len(members)))) if test_size > 0 else 0
        n_val = max(1, int(round(val_size * len(members))))
        if n_test + n_val >= len(members):
            n_test, n_val = needed - 2, 1
        split_of_patient[members[:n_test]] = 2
        split_of_patient[members[n_test:n_test + n_val]] = 1
        split_of_patient[members[n_test + n_val:]] = 0
    beat_split = split_of_patient[inverse]
    return {name: np.flatnonzero(beat_split == code)
            for code, name in enumerate(("train", "val", "test"))}


def too_few_training_patients(labels, patient_ids, parts):
    """Why a training run refuses the split `parts` (train/val/test beat indices of beats with
    `labels` and `patient_ids`) that leaves a class fewer than MIN_TRAIN_PATIENTS training
    patients, with the patients of each class in each part; None if it does not."""
    patients, classes, inverse = patient_classes(labels, patient_ids)
    split_of_patient = np.full(len(patients), -1)
    for code, name in enumerate(("train", "val", "test")):
        split_of_patient[inverse[parts[name]]] = code
    kinds = np.unique(classes)
    counts = {part: [int(np.sum((classes == c) & (split_of_patient == code))) for c in kinds]
              for code, part in enumerate(("train", "validation", "test"))}
    short = [int(c) for c, n in zip(kinds, counts["train"], strict=True) if n < MIN_TRAIN_PATIENTS]
    if not short:
        return None
    parts = ", ".join(f"{part} {' / '.join(map(str, counts[part]))}" for part in counts
                      if any(counts[part]))
    return (f"the patient-level split leaves fewer than {MIN_TRAIN_PATIENTS} training patients "
            f"of class {', '.join(map(str, short))} (patients of class "
            f"{' / '.join(map(str, kinds.tolist()))}: {parts}): a model cannot learn a class "
            f"from one patient or none. Add patients of that "
            f"class, or give validation and test smaller shares (a smaller TEST_SIZE or "
            f"VAL_SIZE; with CV_FOLDS, fewer folds); each takes at least one patient per class")


def patient_kfold_indices(labels, patient_ids, n_folds, random_state=42):
    """k folds of beat indices, each fold a disjoint set of patients, stratified by class."""
    patients, classes, inverse = patient_classes(labels, patient_ids)
    rng = np.random.default_rng(random_state)
    fold_of_patient = np.empty(len(patients), dtype=np.int64)
    offset = 0
    for cls in np.unique(classes):
        members = rng.permutation(np.flatnonzero(classes == cls))
        if len(members) < n_folds:
            raise CohortError(f"class {cls} has {len(members)} patient(s), fewer than the "
                              f"{n_folds} folds asked for; lower CV_FOLDS")
        fold_of_patient[members] = (np.arange(len(members)) + offset) % n_folds
        offset += len(members)
    return [np.flatnonzero(fold_of_patient[inverse] == k) for k in range(n_folds)]


def split_dataset_by_patients(data, labels, patient_ids, test_size=0.1, val_size=0.2,
                              random_state=42):
    """The seed's split, now stratified by class at patient level.

    Returns (X_train, y_train, X_val, y_val, X_test, y_test, patient_ids_test) like the original.
    """
    patient_ids = np.asarray(patient_ids)
    parts = patient_split_indices(labels, patient_ids, test_size, val_size, random_state)
    data, labels = np.asarray(data), np.asarray(labels)
    train, val, test = parts["train"], parts["val"], parts["test"]
    return (data[train], labels[train], data[val], labels[val], data[test], labels[test],
            patient_ids[test])
