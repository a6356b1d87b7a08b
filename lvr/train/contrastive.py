"""Patient-contrastive learning, in the spirit of CLOCS: pairs, augmentations, network, loss.

CLOCS (Kiyasseh et al., ICML 2021) treats two views of one patient as a positive pair and the
other patients' views in the batch as negatives. A batch holds patients; each gives two views
(PAIRS): two of its beats ("beats", CLOCS's CMSC), one beat seen through two disjoint halves of
the leads ("leads", CMLC) or two beats through disjoint halves ("beats_and_leads", CMSMLC). A
patient with one beat gives that beat twice, differently augmented. Every view is augmented as
an ECG may differ between recordings (`augmented`), passed through the network's encoder
(model.features) and a projection head (`ContrastiveNetwork`), and the loss is the symmetric
InfoNCE of the CLOCS paper (`contrastive_loss`): view a of patient i must pick view b of patient
i among every patient's view b, and the other way round. Under torchrun each process takes its
share of the batch's patients and the negatives are gathered from all of them.

lvr.train.pretraining runs it: the cohort, the epochs, the checkpoints.
"""
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- patients and pairs

def patient_beats(patient_ids):
    """(patient IDs as text, sorted; for each, the positions of its beats)."""
    ids = np.asarray(patient_ids).astype(str)
    patients, inverse = np.unique(ids, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(patients)))[:-1]
    return patients, np.split(order, bounds)


def pair_batches(n_patients, batch_size, seed, epoch, full_only=False):
    """The patients (indices) of each batch of an epoch: a permutation seeded by (seed, epoch),
    cut into batches of `batch_size`. A last batch of fewer than 2 patients has no negatives and
    is dropped; with `full_only` (several processes, whose shares must be equal) any short one."""
    order = np.random.default_rng([seed, epoch]).permutation(n_patients)
    batches = [order[i:i + batch_size] for i in range(0, n_patients, batch_size)]
    return [b for b in batches if len(b) == batch_size or (len(b) >= 2 and not full_only)]


def pair_rows(beat_lists, batch, rng):
    """Two beat positions for each patient of `batch`: two different beats where it has two,
    else its one beat twice."""
    first, second = [], []
    for patient in batch:
        beats = beat_lists[patient]
        chosen = rng.choice(beats, 2, replace=len(beats) < 2)
        first.append(chosen[0])
        second.append(chosen[1])
    return np.array(first), np.array(second)


def lead_halves(n, n_leads, generator):
    """Two complementary lead masks (n, n_leads, 1) of float 0/1: a random half of the leads
    and the other half, drawn per patient."""
    order = torch.argsort(torch.rand(n, n_leads, generator=generator), dim=1)
    half = torch.zeros(n, n_leads)
    half.scatter_(1, order[:, :n_leads // 2], 1.0)
    return half.unsqueeze(2), (1.0 - half).unsqueeze(2)


# ----------------------------------------------------------------------------- augmentations

@dataclass(frozen=True)
class Augmentation:
    """How much two recordings of one patient may differ; amplitudes in the normalised beat's
    units (per_lead: one standard deviation of the lead; none: mV)."""
    scale: tuple = (0.8, 1.2)       # amplitude factor per lead, uniform in this range
    wander: float = 0.1             # baseline wander: amplitude of a slow sinusoid, up to this
    noise: float = 0.05             # Gaussian noise standard deviation
    shift: int = 10                 # time shift, up to this many samples either way
    lead_mask: float = 0.1          # chance each lead is zeroed (one lead always stays)
    fs: float = 500.0               # sampling rate (the wander's frequency is 0.05-0.5 Hz)


def augmented(x, augmentation, generator, allowed_leads=None):
    """x (n, leads, T) with each beat scaled, wandered, noised, shifted and lead-masked by its
    own random draws from `generator`. `allowed_leads` (n, leads, 1) of 0/1, where given, are
    the only leads a view may keep (its lead half): the others end exactly zero, noise and all."""
    n, leads, length = x.shape
    low, high = augmentation.scale
    x = x * (low + (high - low) * torch.rand(n, leads, 1, generator=generator))
    if augmentation.wander > 0:
        t = torch.arange(length) / augmentation.fs
        frequency = 0.05 + 0.45 * torch.rand(n, leads, 1, generator=generator)
        phase = 2 * math.pi * torch.rand(n, leads, 1, generator=generator)
        amplitude = augmentation.wander * torch.rand(n, leads, 1, generator=generator)
        x = x + amplitude * torch.sin(2 * math.pi * frequency * t + phase)
    if augmentation.noise > 0:
        x = x + augmentation.noise * torch.randn(x.shape, generator=generator)
    if augmentation.shift > 0:
        # a shifted beat repeats its edge sample where it moved away from (no wrap-around)
        offsets = torch.randint(-augmentation.shift, augmentation.shift + 1, (n, 1, 1),
                                generator=generator)
        index = (torch.arange(length).view(1, 1, -1) - offsets).clamp(0, length - 1)
        x = torch.gather(x, 2, index.expand(n, leads, length))
    if augmentation.lead_mask > 0 or allowed_leads is not None:
        allowed = torch.ones(n, leads, 1) if allowed_leads is None else allowed_leads
        keep = allowed.clone()
        if augmentation.lead_mask > 0:
            keep *= (torch.rand(n, leads, 1, generator=generator)
                     >= augmentation.lead_mask).float()
        none_left = keep.sum((1, 2)) == 0
        # one lead always stays: the first of the leads this view may keep
        first_allowed = allowed[none_left].squeeze(2).argmax(1)
        keep[none_left.nonzero().squeeze(1), first_allowed] = 1.0
        x = x * keep
    return x


# ----------------------------------------------------------------------------- network and loss

class ContrastiveNetwork(nn.Module):
    """A network's encoder (its features) and a projection head: unit vectors of PROJECTION_DIM."""

    def __init__(self, network, projection_dim):
        super().__init__()
        self.network = network
        width = network.features(torch.zeros(2, network.config["in_channels"],
                                             network.config["input_length"])).shape[1]
        self.projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True),
                                        nn.Linear(width, projection_dim))

    def forward(self, x):
        return F.normalize(self.projection(self.network.features(x)), dim=1)


class GatherWithGradient(torch.autograd.Function):
    """All processes' rows in rank order; backward sums every process's gradient of them and
    hands each process the part for its own rows (what torch.distributed.nn's deprecated
    all_gather did)."""

    @staticmethod
    def forward(ctx, z):
        parts = [torch.empty_like(z) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, z.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        rows = len(grad) // dist.get_world_size()
        return grad[dist.get_rank() * rows:(dist.get_rank() + 1) * rows]


def gathered_with_gradient(z, world_size):
    """(every process's embeddings in rank order, where this process's rows start). The gather
    is differentiable: each process's loss sends gradients to the views of the others it used
    as negatives, so with DDP's averaging a step is that of one process holding the whole
    batch, not one that ignores its negatives' side of the gradient."""
    if world_size == 1:
        return z, 0
    return GatherWithGradient.apply(z), dist.get_rank() * len(z)


def contrastive_loss(z_a, z_b, temperature, world_size=1):
    """(symmetric InfoNCE loss, share of views that pick their partner) of two views' unit
    embeddings; the partners of rows 0..n-1 are rows offset..offset+n-1 of the gathered batch."""
    all_a, offset = gathered_with_gradient(z_a, world_size)
    all_b, _ = gathered_with_gradient(z_b, world_size)
    target = torch.arange(len(z_a), device=z_a.device) + offset
    logits_ab = z_a @ all_b.T / temperature
    logits_ba = z_b @ all_a.T / temperature
    loss = (F.cross_entropy(logits_ab, target) + F.cross_entropy(logits_ba, target)) / 2
    correct = ((logits_ab.argmax(1) == target).float().mean()
               + (logits_ba.argmax(1) == target).float().mean()) / 2
    return loss, correct.detach()


# ----------------------------------------------------------------------------- views of a batch

def batch_views(data, batch, pairs, augmentation, rng, generator):
    """The two augmented views (n, leads, T) of the patients `batch` of `data` (its beats `x`
    and each patient's `beat_lists`). With pairs of beats, a patient with a single beat is
    paired by two lead halves of it (see `one_beat_note`)."""
    first, second = pair_rows(data.beat_lists, batch, rng)
    if pairs == "leads":
        second = first
    x_a, x_b = data.x[first], data.x[second]
    halves = (None, None)
    if pairs in ("leads", "beats_and_leads"):
        halves = lead_halves(len(batch), x_a.shape[1], generator)
    else:
        single = torch.tensor([len(data.beat_lists[p]) < 2 for p in batch]).view(-1, 1, 1)
        if single.any():
            half_a, half_b = lead_halves(len(batch), x_a.shape[1], generator)
            every = torch.ones_like(half_a)
            halves = torch.where(single, half_a, every), torch.where(single, half_b, every)
    return (augmented(x_a, augmentation, generator, halves[0]),
            augmented(x_b, augmentation, generator, halves[1]))


def one_beat_note(single, n_patients, pairs):
    """The console line about the `single` patients (of `n_patients`) with one beat, or None."""
    if not single or pairs == "leads":
        return None
    if pairs == "beats":
        return (f"note: {single} of {n_patients} patients have one beat; PAIRS=beats needs "
                f"two, so each of them is paired by two complementary lead halves of its beat "
                f"(as PAIRS=leads)")
    return (f"note: {single} of {n_patients} patients have one beat; their pairs are two lead "
            f"halves of that beat")
