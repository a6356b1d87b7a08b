"""Self-supervised pretraining (pretrain.py): a network's encoder trained on a cohort's beats,
labels ignored, by the patient-contrastive objective of lvr.train.contrastive (CLOCS).

`pretrain(config)` is pretrain.py's whole job and the only function here that reads its options.
A batch holds BATCH_SIZE patients (under torchrun shared by the processes), the learning rate
follows a half cosine over EPOCHS, and every epoch leaves a resumable last_pretraining.pth. The
pretrained_model.pth a finished run writes is one INIT_FROM takes (lvr.train.finetune: its
"pretraining" extra names the cohort, its geometry and its patients).
"""
import contextlib
import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from lvr.progress import progress_bar
from lvr.data.beats import StandardisedBeats, set_seed
from lvr.data.cohort import load_cohort
from lvr.data.demo import resolve_data_dir
from lvr.data.geometry import cohort_geometry
from lvr.errors import UserError
from lvr.report.training_figures import plot_pretraining_curves
from lvr.run_folder import (disk_space_guard, output_lock, prepare_output_dir,
                            removed_temporary_files, run_record, write_json_atomic)
from lvr.train.checkpoints import load_checkpoint, save_checkpoint
from lvr.train.contrastive import (Augmentation, ContrastiveNetwork, batch_views,
                                   contrastive_loss, one_beat_note, pair_batches, patient_beats)
from lvr.train.distributed import barrier, distributed_setup, quiet_log
from lvr.train.finetune import fresh_model, head_parameters
from lvr.train.loop import build_optimizer, check_unchanged_options
from model import parameter_count

OBJECTIVE = "patient_contrastive"
PRETRAINED_CHECKPOINT = "pretrained_model.pth"
LAST_PRETRAINING = "last_pretraining.pth"
HISTORY_FILE = "pretraining_history.json"
CURVES_FIGURE = "pretraining_curves.png"
# options that may change when a pretraining run is resumed; the rest must match
RESUMABLE_CHANGES = {"EPOCHS", "RESUME", "DEVICE"}


@dataclass(frozen=True)
class PretrainingRecipe:
    """How `pretrain_loop` trains: pretrain.py's options of these names in upper case."""
    experiment: str             # the network whose encoder is pretrained
    pairs: str                  # the two views of a patient (lvr.train.contrastive)
    temperature: float          # InfoNCE's
    projection_dim: int         # the projection head's output, dropped after pretraining
    epochs: int
    batch_size: int             # patients per batch, over all processes
    lr: float                   # AdamW's, cosine-decayed to 0 over the epochs
    weight_decay: float
    grad_clip: float            # the gradient's largest norm
    seed: int


@dataclass
class PretrainingData:
    """The cohort's beats and patients that pretraining uses (after EXCLUDE_PATIENTS)."""
    cohort: object
    data_dir: str
    x: StandardisedBeats
    patients: np.ndarray            # patient IDs (text), sorted
    beat_lists: list                # positions in x of each patient's beats
    excluded: dict                  # what EXCLUDE_PATIENTS left out


def pretrain(config, log=print):
    """Pretrain EXPERIMENT's encoder on DATA_DIR as configured; writes OUTPUT_DIR and returns
    the history. Under torchrun every process runs this; only rank 0 prints and writes."""
    start = time.time()
    rank, world_size, device = distributed_setup(config["DEVICE"])
    writer = rank == 0
    if not writer:
        log = quiet_log
    output_dir = config["OUTPUT_DIR"]
    try:
        if config["BATCH_SIZE"] % world_size:
            raise UserError(f"BATCH_SIZE={config['BATCH_SIZE']} must be divisible by the "
                            f"{world_size} processes (each takes an equal share of the patients "
                            f"of every batch)")
        data = pretraining_data(config["DATA_DIR"], exclude_patients=config["EXCLUDE_PATIENTS"],
                                normalisation=config["NORMALISATION"],
                                allow_pickle=config["ALLOW_PICKLE"], log=log)
        if writer:
            prepare_output_dir(output_dir, config["RESUME"], log,
                               finished_file=PRETRAINED_CHECKPOINT, resume_file=LAST_PRETRAINING)
        barrier(world_size)
        fs = data.cohort.spec["sampling_rate"]
        augmentation = Augmentation(scale=tuple(config["AMPLITUDE_RANGE"]),
                                    wander=config["WANDER"], noise=config["NOISE"],
                                    shift=int(round(config["SHIFT_MS"] * fs / 1000)),
                                    lead_mask=config["LEAD_MASK"], fs=float(fs))
        recipe = PretrainingRecipe(
            experiment=config["EXPERIMENT"], pairs=config["PAIRS"],
            temperature=config["TEMPERATURE"], projection_dim=config["PROJECTION_DIM"],
            epochs=config["EPOCHS"], batch_size=config["BATCH_SIZE"], lr=config["LR"],
            weight_decay=config["WEIGHT_DECAY"], grad_clip=config["GRAD_CLIP"],
            seed=config["SEED"])
        with (output_lock(output_dir) if writer else contextlib.nullcontext()), \
                disk_space_guard(output_dir, os.path.join(output_dir, LAST_PRETRAINING)):
            return pretrain_loop(recipe, data, augmentation, output_dir, resume=config["RESUME"],
                                 normalisation=config["NORMALISATION"], run_config=config,
                                 device=device, rank=rank, world_size=world_size, log=log,
                                 start=start)
    except KeyboardInterrupt:
        kept = os.path.join(output_dir, LAST_PRETRAINING)
        raise KeyboardInterrupt(
            f"the last completed epoch is kept in {kept}; run the same command with "
            f"--resume=True to continue from it" if os.path.exists(kept) else
            "no epoch was completed, so nothing is kept; run the command again") from None
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


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


def pretraining_data(data_dir, *, exclude_patients, normalisation, allow_pickle=False,
                     log=print):
    """The cohort of `data_dir` (DATA_DIR; the demo when there is none), labels ignored, its
    beats normalised `normalisation`, without the patients the file `exclude_patients`
    (EXCLUDE_PATIENTS, '' for none) lists."""
    data_dir = resolve_data_dir(data_dir, log=log)
    cohort = load_cohort(data_dir, allow_pickle=allow_pickle)
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
    if exclude_patients:
        if not cohort.patient_ids_given:
            raise UserError(f"--exclude_patients={exclude_patients}: the beats of "
                            f"{data_dir} have no patient IDs, so no patient can be left out; "
                            f"add cut_<GROUP>_patient_ids.npy files")
        listed = excluded_patients(exclude_patients)
        present = np.isin(ids, sorted(listed))
        keep = np.flatnonzero(~present)
        found = len(set(ids[present]))
        excluded = {"file": os.path.abspath(exclude_patients), "listed": len(listed),
                    "patients_left_out": found, "beats_left_out": int(present.sum())}
        log(f"EXCLUDE_PATIENTS: left out {found} patients ({int(present.sum())} beats) listed "
            f"in {exclude_patients}"
            + (f"; {len(listed) - found} listed IDs are not in {data_dir}"
               if found < len(listed) else ""))
    patients, lists = patient_beats(ids[keep])
    if len(patients) < 2:
        raise UserError(f"{data_dir} leaves {len(patients)} patient for pretraining; a "
                        f"contrastive objective needs two patients or more (other patients are "
                        f"the negatives)")
    x = StandardisedBeats(cohort.beats, keep, normalisation=normalisation)
    return PretrainingData(cohort=cohort, data_dir=data_dir, x=x, patients=patients,
                           beat_lists=lists, excluded=excluded)


def pretrain_loop(recipe, data, augmentation, output_dir, *, resume, normalisation, run_config,
                  device, rank, world_size, log, start):
    """Pretrain as `recipe` says on `data` (beats normalised `normalisation`), each view
    augmented by `augmentation`; with `resume`, from the last epoch done in `output_dir`, whose
    options must match `run_config` (recorded in each checkpoint). Returns the history."""
    writer = rank == 0
    cohort = data.cohort
    set_seed(recipe.seed)
    # the head is never trained here (fine-tuning builds its own), so its dropout is moot
    network = fresh_model(recipe.experiment, 2, cohort.beats.shape[1], cohort.beats.shape[2],
                          dropout=0.0)
    for parameter in head_parameters(network):    # out of the optimizer and of DDP's reduction
        parameter.requires_grad_(False)
    net = ContrastiveNetwork(network, recipe.projection_dim)
    history = {"loss": [], "pair_accuracy": [], "lr": [], "seconds": []}
    first_epoch = 1
    net.to(device)      # before the optimizer, so that a resumed state lands on the device
    optimizer = build_optimizer([p for p in net.parameters() if p.requires_grad], recipe.lr,
                                recipe.weight_decay)
    last_path = os.path.join(output_dir, LAST_PRETRAINING)
    if resume:
        if writer:
            removed_temporary_files(output_dir)
        first_epoch, history = resumed(last_path, run_config, net, optimizer)
        if first_epoch > recipe.epochs and \
                os.path.exists(os.path.join(output_dir, PRETRAINED_CHECKPOINT)):
            raise UserError(f"--resume=True: {output_dir} holds a finished run of "
                            f"{first_epoch - 1} epochs ({PRETRAINED_CHECKPOINT}); there is "
                            f"nothing to resume. To train it longer, pass a larger --epochs "
                            f"with --resume=True; to start again, leave --resume out")
        log(f"Resuming {output_dir} after epoch {first_epoch - 1}")
    trained = net if world_size == 1 else nn.parallel.DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None)
    n_patients = len(data.patients)
    batch_size = min(recipe.batch_size, n_patients - n_patients % world_size)
    single = sum(len(b) < 2 for b in data.beat_lists)
    log(f"Data: {data.data_dir} ({cohort.spec['name']}), {len(data.x)} beats of {n_patients} "
        f"patients ({single} with one beat) x {cohort.beats.shape[1]} leads x "
        f"{cohort.beats.shape[2]} samples")
    note = one_beat_note(single, n_patients, recipe.pairs)
    if note:
        log(note)
    n_batches = len(pair_batches(n_patients, batch_size, 0, 0, world_size > 1))
    log(f"Pretraining: {recipe.experiment} encoder ({parameter_count(network):,} parameters) "
        f"+ projection to {recipe.projection_dim} on {device}; {OBJECTIVE}, pairs of "
        f"{recipe.pairs}, temperature {recipe.temperature}; {recipe.epochs} epochs of "
        f"{n_batches} batches of {batch_size} patients, "
        f"AdamW lr {recipe.lr} (cosine)"
        + (f"; {world_size} processes" if world_size > 1 else ""))
    per_rank = batch_size // world_size
    for epoch in range(first_epoch, recipe.epochs + 1):
        epoch_start = time.time()
        rng = np.random.default_rng([recipe.seed, epoch, rank])
        generator = torch.Generator().manual_seed(int(recipe.seed) * 100003 + epoch * 101 + rank)
        batches = pair_batches(n_patients, batch_size, recipe.seed, epoch, world_size > 1)
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(recipe.lr, epoch, recipe.epochs)
        trained.train()
        total_loss = total_correct = 0.0
        progress = progress_bar(batches, desc=f"epoch {epoch}/{recipe.epochs}", show=writer)
        for step, batch in enumerate(progress):
            mine = batch[rank * per_rank:(rank + 1) * per_rank] if world_size > 1 else batch
            x_a, x_b = batch_views(data, mine, recipe.pairs, augmentation, rng, generator)
            z = trained(torch.cat([x_a, x_b]).to(device, non_blocking=True))
            loss, correct = contrastive_loss(z[:len(mine)], z[len(mine):], recipe.temperature,
                                             world_size)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), recipe.grad_clip)
            optimizer.step()
            total_loss += loss.item()
            total_correct += correct.item()
            if not progress.disable:
                progress.set_postfix(loss=f"{total_loss / (step + 1):.4f}",
                                     pairs=f"{total_correct / (step + 1):.3f}", refresh=False)
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
            save_checkpoint(last_path, network, epoch=epoch, run_config=run_config,
                            projection_state_dict=net.projection.state_dict(),
                            optimizer=optimizer.state_dict(),
                            history=history, normalisation=normalisation)
        log(f"epoch {epoch:>3}/{recipe.epochs}  contrastive loss {history['loss'][-1]:.4f}  "
            f"pairs found {history['pair_accuracy'][-1]:.3f} (chance "
            f"{1 / batch_size:.3f}) | lr {lr:.1e} | {history['seconds'][-1]:.1f} s")
    barrier(world_size)
    if writer:
        write_outputs(recipe, data, network, net, history, output_dir,
                      normalisation=normalisation, run_config=run_config, world_size=world_size,
                      device=device, wall=time.time() - start, log=log)
    return history


def cosine_lr(lr, epoch, epochs):
    """The learning rate of epoch 1..epochs: `lr` decayed along a half cosine towards 0. A
    function of the epoch alone, so a resumed run (even with more EPOCHS) follows it exactly."""
    return lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))


def resumed(path, run_config, net, optimizer):
    """(first epoch to run, history) of an interrupted run, whose options must match
    `run_config` (the options a resumed run was given)."""
    model, saved = load_checkpoint(path)
    check_unchanged_options(path, saved.get("run_config", {}), run_config, RESUMABLE_CHANGES)
    net.network.load_state_dict(model.state_dict())
    net.projection.load_state_dict(saved["projection_state_dict"])
    optimizer.load_state_dict(saved["optimizer"])
    return saved["epoch"] + 1, {key: list(value) for key, value in saved["history"].items()}


def pretraining_block(recipe, data, history, world_size):
    """The checkpoint's "pretraining" extra: what lvr.train.finetune reads to check a
    fine-tuning run (the cohort's geometry, its patients) and what the weights were trained by."""
    cohort = data.cohort
    return {"objective": OBJECTIVE, "pairs": recipe.pairs, "epochs": len(history["loss"]),
            "temperature": recipe.temperature, "projection_dim": recipe.projection_dim,
            "data_dir": data.data_dir, "data_fingerprint": cohort.fingerprint(),
            "patients": [str(p) for p in data.patients],
            "patient_ids_given": bool(cohort.patient_ids_given), "demo_data": cohort.is_demo,
            "excluded": data.excluded, "cohort": cohort_geometry(cohort),
            "final_loss": history["loss"][-1], "processes": world_size}


def write_outputs(recipe, data, network, net, history, output_dir, *, normalisation, run_config,
                  world_size, device, wall, log):
    """pretrained_model.pth, the history, its figure and run.json (recording `run_config`),
    rank 0."""
    path = os.path.join(output_dir, PRETRAINED_CHECKPOINT)
    save_checkpoint(path, network, epoch=len(history["loss"]), normalisation=normalisation,
                    pretraining=pretraining_block(recipe, data, history, world_size),
                    projection_state_dict=net.projection.state_dict())
    write_json_atomic(os.path.join(output_dir, HISTORY_FILE), history)
    plot_pretraining_curves(os.path.join(output_dir, CURVES_FIGURE), history,
                            chance=1 / min(recipe.batch_size, len(data.patients)))
    write_json_atomic(os.path.join(output_dir, "run.json"), run_record(
        run_config, wall, cohort=data.cohort, data_dir=data.data_dir, device=device,
        world_size=world_size, patients=len(data.patients), beats=len(data.x),
        excluded=data.excluded))
    log(f"\nPretrained in {wall / 60:.1f} min: {path} (final contrastive loss "
        f"{history['loss'][-1]:.4f}, pairs found {history['pair_accuracy'][-1]:.3f}).")
    log(f"Fine-tune it on a labelled cohort of the same leads, sampling rate and window: "
        f"python train_MCL_ResNet_1D_class2.py --data_dir=YOUR_COHORT --init_from={path} "
        f"--experiment={recipe.experiment} --normalisation={normalisation}")
