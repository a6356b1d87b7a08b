"""Cohort data layer: beat files -> validated arrays -> standardised tensors -> patient-level split.

A cohort folder (``DATA_DIR``) holds one file per group, ``cut_<GROUP>.npy`` of shape
(N, 12, T), optionally ``cut_<GROUP>_patient_ids.npy`` (length N) and ``cohort.json`` describing
the groups; without ``cohort.json`` the original project's four groups and label mapping apply.
docs/data.md is the full contract; lvr.data.cohort_json checks cohort.json. Every problem with the
files raises ``CohortError`` naming the file, what is wrong and what to do.
"""
import hashlib
import os
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from lvr.choices import NORMALISATIONS, TASKS
from lvr.config import UserError
from lvr.data.cohort_json import (FORMAT_HELP, SEED_COHORT, CohortError, cohort_spec,
                             problem_report, window_problems)
from lvr.data.patients import PATIENTS_FILE, patient_table

CHECK_CHUNK_BYTES = 64 << 20   # bytes of a beat file read at a time when checking it for NaN/Inf
# A beat with fewer distinct values than this over its 12 leads has been cut to a few levels
# (an integer cast of mV values, a wrong gain): it carries almost no waveform.
QUANTISED_LEVELS = 16
QUANTISATION_SAMPLE = 64       # beats per group whose distinct values are counted


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


def set_seed(seed=42):
    """Seed Python, NumPy and torch (CPU and CUDA) and make cuDNN deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


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


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def npy_array(path, allow_pickle=False, what="beat", mmap=False):
    """np.load with a clear error for everything that is not a plain numpy array file.

    `mmap`: open a numeric array memory-mapped (read-only; its pages are the file's page cache,
    not this process's memory); an object array is still loaded whole (it cannot be mapped).
    """
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except OSError as error:
        raise CohortError(f"cannot read {path} ({error.strerror})") from None
    if magic != b"\x93NUMPY":
        raise CohortError(f"{path} is not a readable .npy file (it does not start with the numpy "
                          f"file header); save the array with np.save")
    header = npy_header(path)
    if header is not None and not header[1].hasobject:
        shape, dtype, data_start = header
        expected = data_start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        size = os.path.getsize(path)
        if size < expected:
            raise CohortError(f"{path} is truncated: its header describes an array of shape "
                              f"{shape} ({expected} bytes) but the file has {size} bytes (an "
                              f"interrupted copy or save?); write the file again with np.save")
    mmap_mode = "r" if mmap and header is not None and not header[1].hasobject else None
    try:
        return np.load(path, allow_pickle=allow_pickle, mmap_mode=mmap_mode)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise CohortError(
                f"{path} holds an object (pickled) array. Loading it would run code stored in "
                f"the file, so it is refused by default. Save the {what}s as a plain numeric "
                f"array (np.save(path, np.asarray(x, dtype=np.float32))), or, only if you trust "
                f"the file, set ALLOW_PICKLE=True (--allow_pickle=True)") from None
        raise CohortError(f"{path} is not a readable .npy file ({error})") from None
    except (OSError, EOFError) as error:
        raise CohortError(f"{path} is not a readable .npy file ({error}); save it with np.save") \
            from None
    except Exception as error:  # pickle errors when allow_pickle=True on a non-npy file
        raise CohortError(f"{path} is not a readable .npy file ({type(error).__name__}: {error})") \
            from None


def npy_header(path):
    """(shape, dtype, offset of the data) from a .npy header, or None if it cannot be parsed
    (np.load then reports the problem)."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(handle)
            return shape, dtype, handle.tell()
    except Exception:  # noqa: BLE001 - any malformed header: np.load gives the message
        return None


def checked_beats(path, n_leads, allow_pickle=False):
    """The beats of one group file (N, leads, T), memory-mapped in their stored dtype (an object
    array: loaded and converted to float32), or a CohortError saying why not."""
    beats = npy_array(path, allow_pickle, mmap=True)
    if not isinstance(beats, np.ndarray) or beats.dtype == object:
        if allow_pickle and isinstance(beats, np.ndarray):
            try:
                beats = np.asarray(beats.tolist(), dtype=np.float32)
            except (ValueError, TypeError) as error:
                raise CohortError(f"{path}: its objects do not form a numeric (N, {n_leads}, T) "
                                  f"array ({error})") from None
        else:
            raise CohortError(f"{path} does not hold a numeric array")
    if not (np.issubdtype(beats.dtype, np.floating) or np.issubdtype(beats.dtype, np.integer)):
        raise CohortError(f"{path} has dtype {beats.dtype}; expected real numbers "
                          f"(float32/float64 or integers)")
    if beats.ndim != 3:
        raise CohortError(f"{path} has shape {beats.shape} ({beats.ndim} dimensions); expected "
                          f"(N beats, {n_leads} leads, T samples); {FORMAT_HELP}")
    if beats.shape[0] == 0:
        raise CohortError(f"{path} holds no beats (shape {beats.shape}); every group needs beats")
    if beats.shape[1] != n_leads:
        hint = ""
        if beats.shape[2] == n_leads:
            hint = (f" It looks like (N, T, {n_leads}): leads last. Transpose it yourself with "
                    f"np.save(path, np.transpose(x, (0, 2, 1))); it is never transposed silently.")
        raise CohortError(f"{path} has shape {beats.shape}: {beats.shape[1]} leads on axis 1, "
                          f"expected {n_leads} (N, {n_leads}, T).{hint}")
    bad = nonfinite_beats(beats)
    if bad.size:
        raise CohortError(f"{path}: {bad.size} of {beats.shape[0]} beats contain NaN or Inf "
                          f"(first: beat {bad[0]}); clean or drop them before training")
    return beats


def nonfinite_beats(beats):
    """Indices of the beats with a NaN or Inf as float32 (a float64 value beyond float32's range
    becomes Inf when read), read CHECK_CHUNK_BYTES at a time."""
    step = max(1, CHECK_CHUNK_BYTES // max(1, beats[:1].nbytes))
    with np.errstate(over="ignore"):   # the overflow is what this reports
        bad = [start + np.flatnonzero(~np.isfinite(
            np.asarray(beats[start:start + step], dtype=np.float32)).all(axis=(1, 2)))
            for start in range(0, len(beats), step)]
    return np.concatenate(bad)


def signal_warnings(beats, name):
    """Warnings, naming the file, for beats that load but can carry little or no signal: every
    beat all zeros, beats that are constant on every lead, values cut to a few levels."""
    step = max(1, CHECK_CHUNK_BYTES // max(1, beats[:1].nbytes))
    flat = zero = 0
    for start in range(0, len(beats), step):
        chunk = np.asarray(beats[start:start + step], dtype=np.float32)
        constant = np.ptp(chunk, axis=2).max(axis=1) == 0
        flat += int(constant.sum())
        zero += int((constant & (np.abs(chunk).max(axis=(1, 2)) == 0)).sum())
    n = len(beats)
    if zero == n:
        return [f"{name}: every beat is all zeros; the group carries no signal (an export that "
                f"failed?)"]
    found = []
    if flat:
        found.append(f"{name}: {flat} of {n} beats are constant on every lead (no waveform)")
    rows = np.unique(np.linspace(0, n - 1, min(n, QUANTISATION_SAMPLE)).astype(np.int64))
    levels = np.median([len(np.unique(np.asarray(beats[int(i)]))) for i in rows])
    if levels < QUANTISED_LEVELS:
        found.append(f"{name}: a beat holds {levels:.0f} distinct values (median of {len(rows)} "
                     f"beats), as if cut to a few levels by an integer cast or a wrong gain; "
                     f"store the beats as float (mV)")
    return found


def checked_patient_ids(path, n_beats, allow_pickle=False):
    ids = npy_array(path, allow_pickle, what="patient ID")
    if ids.dtype == object:
        ids = np.asarray([str(v) for v in ids.ravel()]).reshape(ids.shape)
    if ids.ndim != 1:
        raise CohortError(f"{path} has shape {ids.shape}; expected a 1-D array of {n_beats} "
                          f"patient IDs")
    if ids.shape[0] != n_beats:
        raise CohortError(f"{path} has {ids.shape[0]} patient IDs but its beat file has "
                          f"{n_beats} beats; they must match one to one")
    if np.issubdtype(ids.dtype, np.floating):
        if not np.isfinite(ids).all() or not np.all(ids == np.round(ids)):
            raise CohortError(f"{path}: patient IDs must be integers or strings, found "
                              f"non-integer floats")
        ids = ids.astype(np.int64)
    if not (np.issubdtype(ids.dtype, np.integer) or ids.dtype.kind in "US"):
        raise CohortError(f"{path} has dtype {ids.dtype}; patient IDs must be integers or strings")
    return ids.astype(str)


class BeatFiles:
    """The beats of every group file as one read-only (N, leads, T) float32 array, read on demand.

    Nothing is concatenated: the files stay memory-mapped, so reading beats costs page cache
    (shared with other processes and given back under memory pressure), not private memory.
    Indexing with an int, a slice, a boolean mask or an index array returns those beats, in that
    order, as a float32 numpy array. Pickling keeps only the paths (and the arrays of groups
    that were pickled object files), so each DataLoader worker opens its own maps.
    """
    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(self, paths, arrays):
        self.paths, self.arrays = list(paths), list(arrays)
        self.starts = np.cumsum([0] + [len(a) for a in self.arrays])
        self.shape = (int(self.starts[-1]),) + tuple(self.arrays[0].shape[1:])

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, tuple):
            raise TypeError("BeatFiles takes beat indices only; index the beats it returns")
        rows = self.row_numbers(key)
        if rows.ndim == 0:
            return self[rows[None]][0]
        part = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((len(rows),) + self.shape[1:], dtype=np.float32)
        for p in np.unique(part):
            where = np.flatnonzero(part == p)
            local = rows[where] - self.starts[p]
            if where.size > 1 and np.all(np.diff(local) == 1):   # a run of beats: one read
                out[where] = self.arrays[p][local[0]:local[-1] + 1]
            else:
                out[where] = self.arrays[p][local]
        return out

    def row_numbers(self, key):
        """Global beat numbers (int64, non-negative) selected by `key`."""
        n = len(self)
        if isinstance(key, slice):
            return np.arange(*key.indices(n), dtype=np.int64)
        key = np.asarray(key)
        if key.dtype == bool:
            if key.shape != (n,):
                raise IndexError(f"boolean index of shape {key.shape} for {n} beats")
            return np.flatnonzero(key)
        if not np.issubdtype(key.dtype, np.integer):
            raise IndexError(f"beats are indexed by integers, slices or masks, not {key.dtype}")
        rows = np.where(key < 0, key + n, key).astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"beat index out of range for {n} beats")
        return rows

    def __array__(self, dtype=None, copy=None):
        beats = self[:]
        return beats if dtype is None else beats.astype(dtype, copy=False)

    def __getstate__(self):
        return {"paths": self.paths,
                "arrays": [None if isinstance(a, np.memmap) else a for a in self.arrays]}

    def __setstate__(self, state):
        arrays = [np.load(path, mmap_mode="r") if a is None else a
                  for path, a in zip(state["paths"], state["arrays"], strict=True)]
        self.__init__(state["paths"], arrays)


def load_cohort(data_dir, allow_pickle=False, in_memory=False):
    """Validate every file of the cohort in `data_dir`; its beats stay in their files, mapped
    (BeatFiles), checked chunk by chunk. `in_memory`: read every file whole into one float32
    array instead (the data path before memory mapping; it needs the cohort's size in RAM)."""
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
    files, beats, id_arrays, paths = {}, [], [], []
    for group in spec["groups"]:
        path = os.path.join(data_dir, f"cut_{group}.npy")
        beats.append(checked_beats(path, n_leads, allow_pickle))
        paths.append(path)
        files[os.path.basename(path)] = file_sha256(path)
        id_path = os.path.join(data_dir, f"cut_{group}_patient_ids.npy")
        if os.path.exists(id_path):
            id_arrays.append(checked_patient_ids(id_path, beats[-1].shape[0], allow_pickle))
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
    if not all(given):
        id_arrays = [np.array([f"{g}:{i}" for i in range(b.shape[0])])
                     for g, b in zip(spec["groups"], beats, strict=True)]
    group_index = np.concatenate([np.full(b.shape[0], i, dtype=np.int64)
                                  for i, b in enumerate(beats)])
    all_beats = (np.concatenate([np.asarray(b, dtype=np.float32) for b in beats]) if in_memory
                 else BeatFiles(paths, beats))
    warnings = [text for path, group_beats in zip(paths, beats, strict=True)
                for text in signal_warnings(group_beats, path)]
    patient_ids = np.concatenate(id_arrays)
    patients = patient_table(data_dir, patient_ids)
    cohort = Cohort(data_dir=data_dir, spec=spec, beats=all_beats,
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


# ----------------------------------------------------------------------------- preprocessing

def standardize_beats(beats):
    """Each beat, lead by lead, to zero mean and unit variance over time (float32).

    Matches sklearn's StandardScaler applied per sample to sample.T, as the original did; a flat
    lead (zero variance) becomes zeros, never NaN.
    """
    beats = np.asarray(beats, dtype=np.float32)
    mean = beats.mean(axis=-1, keepdims=True, dtype=np.float64)
    std = beats.std(axis=-1, keepdims=True, dtype=np.float64)
    std[std < 10 * np.finfo(np.float64).eps] = 1.0
    return ((beats - mean) / std).astype(np.float32)


def normalised_beats(beats, normalisation="per_lead"):
    """Beats as the network's input (float32), by one of lvr.choices.NORMALISATIONS.

    per_lead is standardize_beats; per_beat standardises each beat over all its leads and time
    together, so a lead twice as tall as another stays twice as tall; none keeps the mV values.
    """
    if normalisation == "per_lead":
        return standardize_beats(beats)
    beats = np.asarray(beats, dtype=np.float32)
    if normalisation == "none":
        return np.ascontiguousarray(beats)
    if normalisation != "per_beat":
        raise ValueError(f"unknown normalisation {normalisation!r}; use one of "
                         f"{', '.join(NORMALISATIONS)}")
    mean = beats.mean(axis=(-2, -1), keepdims=True, dtype=np.float64)
    std = beats.std(axis=(-2, -1), keepdims=True, dtype=np.float64)
    std[std < 10 * np.finfo(np.float64).eps] = 1.0
    return ((beats - mean) / std).astype(np.float32)


class StandardisedBeats(Dataset):
    """Beats `index` of an (N, leads, T) array (BeatFiles or numpy), standardised when read.

    ``x[key]`` (an int, a slice, a list or an array of positions) reads those beats and returns
    them normalised (`normalisation`, lvr.choices.NORMALISATIONS) as a float32 tensor; every
    normalisation works beat by beat, so a batch gets exactly the numbers the whole array
    would. ``x.rows(index)`` is the subset at positions `index`; nothing is read until it is
    indexed. Training, validation and test batches are taken this way, so no split is ever
    copied whole.
    """

    def __init__(self, beats, index=None, normalisation="per_lead"):
        self.beats = beats
        self.index = (np.arange(len(beats), dtype=np.int64) if index is None
                      else np.asarray(index, dtype=np.int64))
        self.shape = (len(self.index),) + tuple(beats.shape[1:])
        self.normalisation = normalisation

    def __len__(self):
        return len(self.index)

    def __getitem__(self, key):
        if torch.is_tensor(key):
            key = key.numpy()
        rows = self.index[key]
        if rows.ndim == 0:
            return self[[key]][0]
        return torch.from_numpy(normalised_beats(self.beats[rows], self.normalisation))

    def rows(self, index):
        return StandardisedBeats(self.beats, self.index[index], self.normalisation)


# ----------------------------------------------------------------------------- split

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
    if not (0 <= test_size < 1 and 0 < val_size < 1 and test_size + val_size < 1):
        raise UserError(f"test_size ({test_size}) and val_size ({val_size}) must be in (0, 1) "
                        f"and leave room for training")
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


# ----------------------------------------------------------------------------- tensors

class ECGDataset(Dataset):
    """Beats and labels (and optional patient IDs) held as tensors, built once.

    Accepts the seed's list of [x, y] or [x, y, patient_id] items, or arrays via `from_arrays`;
    beats given as StandardisedBeats stay where they are and are read batch by batch.
    """

    def __init__(self, data=None, *, x=None, y=None, patient_ids=None):
        if data is not None:
            x = np.stack([np.asarray(item[0], dtype=np.float32) for item in data])
            y = np.array([item[1] for item in data])
            if len(data[0]) == 3:
                patient_ids = np.array([item[2] for item in data])
        self.x_data = (x if isinstance(x, StandardisedBeats)
                       else torch.as_tensor(x, dtype=torch.float32))  # no copy for float32 tensors
        self.y_data = torch.as_tensor(y).long()
        self.patient_ids = None if patient_ids is None else np.asarray(patient_ids)
        self.has_patient_ids = self.patient_ids is not None
        self.len = len(self.y_data)

    @classmethod
    def from_arrays(cls, x, y, patient_ids=None):
        return cls(x=x, y=y, patient_ids=patient_ids)

    def __getitem__(self, index):
        if self.has_patient_ids:
            return self.x_data[index], self.y_data[index], self.patient_ids[index]
        return self.x_data[index], self.y_data[index]

    def __len__(self):
        return self.len


class LeadDropout(Dataset):
    """Training augmentation: each lead of each beat is zeroed with probability `p`.

    Zero is the lead's mean in standardised units, the same value a missing lead or the
    deletion test (explanation_checks.deletion_test) puts there. A model that has seen zeroed
    leads in both classes reads them as "no information" instead of as a flat, unusual signal
    (a flat lead looks like a flattened T wave), so it tolerates missing leads and lead
    deletion measures what a lead contributed (Hooker et al. 2019 on why removal must stay in
    the training distribution). A beat never loses all its leads (such a draw drops none).

    The mask of beat i in epoch e depends only on (seed, e, i): the same under resume, with
    DataLoader workers, and in every process of a torchrun job. Call ``set_epoch(e)`` before
    each epoch. Indexing with a list or tensor of indices returns a batch, like ECGDataset.
    """

    def __init__(self, dataset, p, seed=0):
        if not 0.0 <= float(p) < 1.0:
            raise UserError(f"LEAD_DROPOUT must be in [0, 1), got {p}")
        self.dataset, self.p, self.seed = dataset, float(p), int(seed)
        self.n_leads = dataset.x_data.shape[1]
        self.epoch, self._masks = 0, None

    def set_epoch(self, epoch):
        if epoch != self.epoch:
            self.epoch, self._masks = int(epoch), None

    def masks(self):
        """(N, leads) bool: True where this epoch zeroes the lead."""
        if self._masks is None:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            masks = torch.rand((len(self.dataset), self.n_leads), generator=generator) < self.p
            masks[masks.all(dim=1)] = False
            self._masks = masks
        return self._masks

    def __getitem__(self, index):
        items = self.dataset[index]
        if self.p == 0.0:
            return items
        dropped = self.masks()[index]
        return (items[0].masked_fill(dropped.unsqueeze(-1), 0.0), *items[1:])

    def __len__(self):
        return len(self.dataset)


def package_dataset(data, labels, patient_ids=None):
    """The seed's packaging: (dataset, channels, data_length, classes), dataset tensor-backed."""
    dataset = ECGDataset.from_arrays(data, labels, patient_ids)
    return dataset, dataset.x_data.shape[1], dataset.x_data.shape[2], len(np.unique(labels))
