"""Self-supervised pretraining: a patient-contrastive objective in the spirit of CLOCS.

CLOCS (Kiyasseh et al., ICML 2021) treats two views of one patient as a positive pair and the
other patients' views in the batch as negatives. Here a batch holds BATCH_SIZE patients; each
gives two views (PAIRS): two of its beats ("beats", CLOCS's CMSC), one beat seen through two
disjoint halves of the leads ("leads", CMLC) or two beats through disjoint halves
("beats_and_leads", CMSMLC). A patient with one beat gives that beat twice, differently
augmented. Every view is augmented as an ECG may differ between recordings (`augmented`), passed
through the network's encoder (model.features) and a projection head, and the loss is the
symmetric InfoNCE of the CLOCS paper at temperature TEMPERATURE: view a of patient i must pick
view b of patient i among every patient's view b, and the other way round. Under torchrun each
process takes its share of the batch's patients and the negatives are gathered from all of them.

`pretrain(config)` is pretrain.py's whole job; the checkpoint it writes is one INIT_FROM takes
(lvr.train.finetune: the "pretraining" extra names the cohort, its geometry and its patients).
"""
import contextlib
import datetime
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from lvr.train.checkpoints import load_checkpoint, save_checkpoint
from lvr.data.beats import StandardisedBeats, set_seed
from lvr.data.cohort import load_cohort
from lvr.config import UserError
from lvr.data.demo import resolve_data_dir
from lvr.train.distributed import barrier, distributed_setup
from lvr.report.training_figures import plot_pretraining_curves
from lvr.train.finetune import fresh_model, head_parameters
from lvr.data.geometry import cohort_geometry
from lvr.run_folder import (code_version, disk_space_guard, library_versions, output_lock,
                            prepare_output_dir, removed_temporary_files, write_json_atomic)
from lvr.train.loop import build_optimizer
from model import parameter_count

OBJECTIVE = "patient_contrastive"
PRETRAINED_CHECKPOINT = "pretrained_model.pth"
LAST_PRETRAINING = "last_pretraining.pth"
HISTORY_FILE = "pretraining_history.json"
CURVES_FIGURE = "pretraining_curves.png"
# options that may change when a pretraining run is resumed; the rest must match
RESUMABLE_CHANGES = {"EPOCHS", "RESUME", "DEVICE"}


# ----------------------------------------------------------------------------- patients and pairs

def patient_beats(patient_ids):
    """(patient IDs as text, sorted; for each, the positions of its beats)."""
    ids = np.asarray(patient_ids).astype(str)
    patients, inverse = np.unique(ids, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(patients)))[:-1]
    return patients, np.split(order, bounds)


def excluded_patients(path):
    """The patient IDs (text) listed in `path`: a split.json (its "test" patients) or a text
    file with one ID per line; a UserError for anything else."""
    if not os.path.isfile(path):
        raise UserError(f"--exclude_patients={path}: file not found; give a run's split.json "
                        f"(its test patients are left out) or a text file, one patient ID a line")
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as handle:
                split = json.load(handle)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserError(f"--exclude_patients={path} is not valid JSON ({error})") from None
        if not isinstance(split, dict) or not isinstance(split.get("test"), list):
            raise UserError(f"--exclude_patients={path}: a JSON file must be a run's split.json "
                            f"with a 'test' list of patient IDs")
        return {str(p) for p in split["test"]}
    with open(path, encoding="utf-8", errors="replace") as handle:
        return {line.strip() for line in handle if line.strip()}


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


# ----------------------------------------------------------------------------- the run

@dataclass
class PretrainingData:
    """The cohort's beats and patients that pretraining uses (after EXCLUDE_PATIENTS)."""
    cohort: object
    data_dir: str
    x: StandardisedBeats
    patients: np.ndarray            # patient IDs (text), sorted
    beat_lists: list                # positions in x of each patient's beats
    excluded: dict                  # what EXCLUDE_PATIENTS left out


def pretraining_data(config, log):
    """The cohort of DATA_DIR (the demo when there is none), labels ignored, without the
    patients EXCLUDE_PATIENTS lists."""
    data_dir = resolve_data_dir(config["DATA_DIR"], log=log)
    cohort = load_cohort(data_dir, allow_pickle=config["ALLOW_PICKLE"])
    for text in cohort.warnings:
        log(f"warning: {text}")
    has_labels = any(cohort.spec.get(f"{task}_labels") for task in ("binary", "multiclass"))
    if has_labels:
        log(f"note: {data_dir} has labelled groups ({', '.join(cohort.groups)}); pretraining "
            f"ignores the labels")
    if not cohort.patient_ids_given:
        log("warning: no cut_<GROUP>_patient_ids.npy files, so every beat counts as its own "
            "patient: each pair is two lead halves of one beat, and no fine-tuning run can "
            "check that its test patients were left out of pretraining")
    ids = cohort.patient_ids.astype(str)
    keep = np.arange(len(ids))
    excluded = {"file": None}
    if config["EXCLUDE_PATIENTS"]:
        if not cohort.patient_ids_given:
            raise UserError(f"--exclude_patients={config['EXCLUDE_PATIENTS']}: the beats of "
                            f"{data_dir} have no patient IDs, so no patient can be left out; "
                            f"add cut_<GROUP>_patient_ids.npy files")
        listed = excluded_patients(config["EXCLUDE_PATIENTS"])
        present = np.isin(ids, sorted(listed))
        keep = np.flatnonzero(~present)
        found = len(set(ids[present]))
        excluded = {"file": os.path.abspath(config["EXCLUDE_PATIENTS"]), "listed": len(listed),
                    "patients_left_out": found, "beats_left_out": int(present.sum())}
        log(f"EXCLUDE_PATIENTS: left out {found} patients ({int(present.sum())} beats) listed "
            f"in {config['EXCLUDE_PATIENTS']}"
            + (f"; {len(listed) - found} listed IDs are not in {data_dir}"
               if found < len(listed) else ""))
    patients, lists = patient_beats(ids[keep])
    if len(patients) < 2:
        raise UserError(f"{data_dir} leaves {len(patients)} patient for pretraining; a "
                        f"contrastive objective needs two patients or more (other patients are "
                        f"the negatives)")
    x = StandardisedBeats(cohort.beats, keep, normalisation=config["NORMALISATION"])
    return PretrainingData(cohort=cohort, data_dir=data_dir, x=x, patients=patients,
                           beat_lists=lists, excluded=excluded)


def augmentation_of(config, cohort):
    return Augmentation(scale=tuple(config["AMPLITUDE_RANGE"]), wander=config["WANDER"],
                        noise=config["NOISE"],
                        shift=int(round(config["SHIFT_MS"] * cohort.spec["sampling_rate"] / 1000)),
                        lead_mask=config["LEAD_MASK"], fs=float(cohort.spec["sampling_rate"]))


def batch_views(data, batch, pairs, augmentation, rng, generator):
    """The two augmented views (n, leads, T) of the patients `batch`. With pairs of beats, a
    patient with a single beat is paired by two lead halves of it (see `one_beat_note`)."""
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


def pretrain(config, log=print):
    """Pretrain EXPERIMENT's encoder on DATA_DIR as configured; writes OUTPUT_DIR and returns
    the history. Under torchrun every process runs this; only rank 0 prints and writes."""
    start = time.time()
    rank, world_size, device = distributed_setup(config["DEVICE"])
    writer = rank == 0
    if not writer:
        log = quiet
    try:
        if config["BATCH_SIZE"] % world_size:
            raise UserError(f"BATCH_SIZE={config['BATCH_SIZE']} must be divisible by the "
                            f"{world_size} processes (each takes an equal share of the patients "
                            f"of every batch)")
        data = pretraining_data(config, log)
        output_dir = config["OUTPUT_DIR"]
        if writer:
            prepare_output_dir(output_dir, config["RESUME"], log,
                               finished_file=PRETRAINED_CHECKPOINT, resume_file=LAST_PRETRAINING)
        barrier(world_size)
        with (output_lock(output_dir) if writer else contextlib.nullcontext()), \
                disk_space_guard(output_dir, os.path.join(output_dir, LAST_PRETRAINING)):
            return pretrain_loop(config, data, output_dir, device, rank, world_size, log, start)
    except KeyboardInterrupt:
        kept = os.path.join(config["OUTPUT_DIR"], LAST_PRETRAINING)
        raise KeyboardInterrupt(
            f"the last completed epoch is kept in {kept}; run the same command with "
            f"--resume=True to continue from it" if os.path.exists(kept) else
            "no epoch was completed, so nothing is kept; run the command again") from None
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def quiet(*_):
    pass


def pretrain_loop(config, data, output_dir, device, rank, world_size, log, start):
    writer = rank == 0
    cohort = data.cohort
    set_seed(config["SEED"])
    # the head is never trained here (fine-tuning builds its own), so its dropout is moot
    network = fresh_model(dict(config, DROPOUT=0.0), 2, cohort.beats.shape[1],
                          cohort.beats.shape[2])
    for parameter in head_parameters(network):    # out of the optimizer and of DDP's reduction
        parameter.requires_grad_(False)
    net = ContrastiveNetwork(network, config["PROJECTION_DIM"])
    history = {"loss": [], "pair_accuracy": [], "lr": [], "seconds": []}
    first_epoch = 1
    net.to(device)      # before the optimizer, so that a resumed state lands on the device
    optimizer = build_optimizer([p for p in net.parameters() if p.requires_grad], config["LR"],
                                config["WEIGHT_DECAY"])
    last_path = os.path.join(output_dir, LAST_PRETRAINING)
    if config["RESUME"]:
        if writer:
            removed_temporary_files(output_dir)
        first_epoch, history = resumed(last_path, config, net, optimizer)
        if first_epoch > config["EPOCHS"] and \
                os.path.exists(os.path.join(output_dir, PRETRAINED_CHECKPOINT)):
            raise UserError(f"--resume=True: {output_dir} holds a finished run of "
                            f"{first_epoch - 1} epochs ({PRETRAINED_CHECKPOINT}); there is "
                            f"nothing to resume. To train it longer, pass a larger --epochs "
                            f"with --resume=True; to start again, leave --resume out")
        log(f"Resuming {output_dir} after epoch {first_epoch - 1}")
    trained = net if world_size == 1 else nn.parallel.DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None)
    augmentation = augmentation_of(config, cohort)
    n_patients = len(data.patients)
    batch_size = min(config["BATCH_SIZE"], n_patients - n_patients % world_size)
    single = sum(len(b) < 2 for b in data.beat_lists)
    log(f"Data: {data.data_dir} ({cohort.spec['name']}), {len(data.x)} beats of {n_patients} "
        f"patients ({single} with one beat) x {cohort.beats.shape[1]} leads x "
        f"{cohort.beats.shape[2]} samples")
    note = one_beat_note(single, n_patients, config["PAIRS"])
    if note:
        log(note)
    n_batches = len(pair_batches(n_patients, batch_size, 0, 0, world_size > 1))
    log(f"Pretraining: {config['EXPERIMENT']} encoder ({parameter_count(network):,} parameters) "
        f"+ projection to {config['PROJECTION_DIM']} on {device}; {OBJECTIVE}, pairs of "
        f"{config['PAIRS']}, temperature {config['TEMPERATURE']}; {config['EPOCHS']} epochs of "
        f"{n_batches} batches of {batch_size} patients, "
        f"AdamW lr {config['LR']} (cosine)"
        + (f"; {world_size} processes" if world_size > 1 else ""))
    per_rank = batch_size // world_size
    for epoch in range(first_epoch, config["EPOCHS"] + 1):
        epoch_start = time.time()
        rng = np.random.default_rng([config["SEED"], epoch, rank])
        generator = torch.Generator().manual_seed(int(config["SEED"]) * 100003 + epoch * 101
                                                  + rank)
        batches = pair_batches(n_patients, batch_size, config["SEED"], epoch, world_size > 1)
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(config["LR"], epoch, config["EPOCHS"])
        trained.train()
        total_loss = total_correct = 0.0
        progress = tqdm(batches, desc=f"epoch {epoch}/{config['EPOCHS']}", leave=False,
                        dynamic_ncols=True, disable=None if writer else True)
        for step, batch in enumerate(progress):
            mine = batch[rank * per_rank:(rank + 1) * per_rank] if world_size > 1 else batch
            x_a, x_b = batch_views(data, mine, config["PAIRS"], augmentation, rng, generator)
            z = trained(torch.cat([x_a, x_b]).to(device, non_blocking=True))
            loss, correct = contrastive_loss(z[:len(mine)], z[len(mine):],
                                             config["TEMPERATURE"], world_size)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), config["GRAD_CLIP"])
            optimizer.step()
            total_loss += loss.item()
            total_correct += correct.item()
            if not progress.disable:
                progress.set_postfix(loss=f"{total_loss / (step + 1):.4f}",
                                     pairs=f"{total_correct / (step + 1):.3f}")
        lr = optimizer.param_groups[0]["lr"]
        totals = torch.tensor([total_loss, total_correct, float(len(batches))])
        if world_size > 1:
            dist.all_reduce(totals)
            totals[2] /= world_size
        history["loss"].append(float(totals[0] / world_size / totals[2]))
        history["pair_accuracy"].append(float(totals[1] / world_size / totals[2]))
        history["lr"].append(lr)
        history["seconds"].append(round(time.time() - epoch_start, 2))
        if writer:
            save_checkpoint(last_path, network, epoch=epoch, run_config=config,
                            projection_state_dict=net.projection.state_dict(),
                            optimizer=optimizer.state_dict(),
                            history=history, normalisation=config["NORMALISATION"])
        log(f"epoch {epoch:>3}/{config['EPOCHS']}  contrastive loss {history['loss'][-1]:.4f}  "
            f"pairs found {history['pair_accuracy'][-1]:.3f} (chance "
            f"{1 / batch_size:.3f}) | lr {lr:.1e} | {history['seconds'][-1]:.1f} s")
    barrier(world_size)
    if writer:
        write_outputs(config, data, network, net, history, output_dir, world_size, device,
                      time.time() - start, log)
    return history


def cosine_lr(lr, epoch, epochs):
    """The learning rate of epoch 1..epochs: `lr` decayed along a half cosine towards 0. A
    function of the epoch alone, so a resumed run (even with more EPOCHS) follows it exactly."""
    return lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))


def resumed(path, config, net, optimizer):
    """(first epoch to run, history) of an interrupted run, whose options must match."""
    model, saved = load_checkpoint(path)
    before = saved.get("run_config", {})
    changed = sorted(k for k in set(before) | set(config)
                     if k not in RESUMABLE_CHANGES and before.get(k) != config.get(k))
    if changed:
        raise UserError(f"cannot resume {path}: these options differ from the interrupted run: "
                        + ", ".join(f"{k} (was {before.get(k)!r}, now {config.get(k)!r})"
                                    for k in changed))
    net.network.load_state_dict(model.state_dict())
    net.projection.load_state_dict(saved["projection_state_dict"])
    optimizer.load_state_dict(saved["optimizer"])
    return saved["epoch"] + 1, {key: list(value) for key, value in saved["history"].items()}


def pretraining_block(config, data, history, world_size):
    """The checkpoint's "pretraining" extra: what lvr.train.finetune reads to check a fine-tuning run
    (the cohort's geometry, its patients) and what the weights were trained by."""
    cohort = data.cohort
    return {"objective": OBJECTIVE, "pairs": config["PAIRS"], "epochs": len(history["loss"]),
            "temperature": config["TEMPERATURE"], "projection_dim": config["PROJECTION_DIM"],
            "data_dir": data.data_dir, "data_fingerprint": cohort.fingerprint(),
            "patients": [str(p) for p in data.patients],
            "patient_ids_given": bool(cohort.patient_ids_given), "demo_data": cohort.is_demo,
            "excluded": data.excluded, "cohort": cohort_geometry(cohort),
            "final_loss": history["loss"][-1], "processes": world_size}


def write_outputs(config, data, network, net, history, output_dir, world_size, device, wall, log):
    """pretrained_model.pth, the history, its figure and run.json (rank 0)."""
    path = os.path.join(output_dir, PRETRAINED_CHECKPOINT)
    save_checkpoint(path, network, epoch=len(history["loss"]),
                    normalisation=config["NORMALISATION"],
                    pretraining=pretraining_block(config, data, history, world_size),
                    projection_state_dict=net.projection.state_dict())
    write_json_atomic(os.path.join(output_dir, HISTORY_FILE), history)
    plot_pretraining_curves(os.path.join(output_dir, CURVES_FIGURE), history,
                            chance=1 / min(config["BATCH_SIZE"], len(data.patients)))
    cohort = data.cohort
    write_json_atomic(os.path.join(output_dir, "run.json"), {
        "config": config, "command": sys.argv, "data_dir": data.data_dir,
        "data_fingerprint": cohort.fingerprint(), "data_files": cohort.files,
        "demo_data": cohort.is_demo, "patients": len(data.patients), "beats": len(data.x),
        "excluded": data.excluded, "device": str(device), "processes": world_size,
        "torch_threads": torch.get_num_threads(), "versions": library_versions(),
        "code": code_version(), "wall_time_s": round(wall, 2),
        "finished": datetime.datetime.now().isoformat(timespec="seconds")})
    log(f"\nPretrained in {wall / 60:.1f} min: {path} (final contrastive loss "
        f"{history['loss'][-1]:.4f}, pairs found {history['pair_accuracy'][-1]:.3f}).")
    log(f"Fine-tune it on a labelled cohort of the same leads, sampling rate and window: "
        f"python train_MCL_ResNet_1D_class2.py --data_dir=YOUR_COHORT --init_from={path} "
        f"--experiment={config['EXPERIMENT']} --normalisation={config['NORMALISATION']}")
