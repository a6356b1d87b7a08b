"""Beats as the network's input: normalised beat by beat, wrapped as torch Datasets.

StandardisedBeats reads and normalises the beats of a cohort batch by batch; ECGDataset holds
beats and labels (and patient IDs) for training and testing; LeadDropout is the training
augmentation that zeroes leads. set_seed makes a run's random draws repeatable.
"""
import random

import numpy as np
import torch
from torch.utils.data import Dataset

from lvr.choices import NORMALISATIONS, dropout_problem
from lvr.errors import UserError


def set_seed(seed=42):
    """Seed Python, NumPy and torch (CPU and CUDA) and make cuDNN deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


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
        problem = dropout_problem(p)
        if problem:
            raise UserError(problem)
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
