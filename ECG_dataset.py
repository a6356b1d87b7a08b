"""The original's data module: its loaders, split and dataset, on top of lvr.data.

The data layer itself is lvr/data/: cohort files and validation (cohort.py), standardisation and
datasets (beats.py), patient-level splits (split.py); this module keeps the original's names
working and adds its two loaders, which read DATA_DIR (the demo cohort when it holds none).
"""
import numpy as np

from lvr.data.beats import (ECGDataset, LeadDropout, package_dataset,  # noqa: F401
                            set_seed, standardize_beats)
from lvr.data.cohort import Cohort, load_cohort  # noqa: F401
from lvr.data.cohort_json import SEED_COHORT, CohortError  # noqa: F401
from lvr.data.split import (patient_kfold_indices, patient_split_indices,  # noqa: F401
                            split_dataset_by_patients)
from lvr.data.demo import DATA_DIR, DEMO_DIR, resolve_data_dir  # noqa: F401
from lvr.leads import LEAD_NAMES  # noqa: F401

ALLOW_PICKLE = False   # load object arrays with pickle (unsafe: runs code from the file)


def task_arrays(task):
    """(standardised beats, labels, patient IDs) of DATA_DIR for 'binary' or 'multiclass'."""
    cohort = load_cohort(resolve_data_dir(DATA_DIR), ALLOW_PICKLE)
    labels = cohort.labels(task)
    ids = cohort.patient_ids if cohort.patient_ids_given else np.arange(len(labels))
    print(f"Loaded {task} data, samples per class: {np.bincount(labels)}")
    return standardize_beats(cohort.beats), labels, ids


def load_and_process_data():
    """The seed's 4-class loader: (standardised beats, labels 0..3, patient IDs) from DATA_DIR."""
    return task_arrays("multiclass")


def load_and_process_data_binary():
    """The seed's binary loader: (standardised beats, LVR labels 0/1, patient IDs) from DATA_DIR."""
    return task_arrays("binary")
