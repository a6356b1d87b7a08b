"""The training loop: the loss, batches, the optimizer, one epoch, predictions, and `fit`.

`fit` trains one split as its `Recipe` says for `epochs` epochs, keeps the best checkpoint (by
`select_by`: highest validation accuracy, the original's rule, or highest validation AUC, or
lowest validation loss; a tie goes to the lower validation loss, where the original kept the
earliest epoch) and a resumable last checkpoint. lvr.train.run decides what to fit and what to
do with the result; `predict_logits` is the one batched prediction loop of the package.
"""
import os
import time
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler
from tqdm import tqdm

from lvr.progress import progress_bar
from lvr.data.beats import ECGDataset, LeadDropout, set_seed
from lvr.errors import UserError
from lvr.report.results import TEST_RESULTS
from lvr.run_folder import invocation_record, removed_temporary_files
from lvr.stats.metrics import macro_roc_auc
from lvr.train.checkpoints import load_checkpoint, save_checkpoint
from lvr.train.distributed import barrier, gathered
from lvr.train.finetune import (fresh_model, hold_encoder_statistics, initial_model,
                                optimizer_groups, set_encoder_frozen)
from model import parameter_count

LAST_CHECKPOINT = "last_checkpoint.pth"
BEST_CHECKPOINT = "best_model.pth"
HISTORY_KEYS = ("train_acc_list", "train_loss_list", "val_acc_list", "val_loss_list")
EXTRA_HISTORY_KEYS = ("val_auc_list",)   # not in the original's files; written beside them
# Options added after runs were made: an interrupted run without them used these values.
LEGACY_DEFAULTS = {"NORMALISATION": "per_lead", "SELECT_BY": "val_acc", "INIT_FROM": "",
                   "FREEZE_EPOCHS": 0, "ENCODER_LR_FACTOR": 1.0,
                   "ALLOW_PRETRAINING_OVERLAP": False}
# Options that may change when a run is resumed; every other option must match the checkpoint.
# THRESHOLD and REPORT act after training.
RESUMABLE_CHANGES = {"EPOCHS", "RESUME", "DEVICE", "NUM_WORKERS", "THRESHOLD", "REPORT"}


class LabelSmoothingLoss(nn.Module):
    """(1 - e) * NLL(true class) + e * mean over classes of -log p, averaged over the batch.

    The original project's label-smoothing loss; with smoothing 0 it is cross-entropy.
    """

    def __init__(self, classes, smoothing=0.0, dim=-1):
        super().__init__()
        self.classes = classes
        self.smoothing = smoothing
        self.dim = dim

    def forward(self, pred, target):
        log_prob = F.log_softmax(pred.float(), dim=self.dim)
        nll = -log_prob.gather(self.dim, target.unsqueeze(self.dim)).squeeze(self.dim)
        uniform = -log_prob.mean(dim=self.dim)
        return ((1.0 - self.smoothing) * nll + self.smoothing * uniform).mean()


def batch_loader(dataset, batch_size, shuffle, seed=0, num_workers=0, pin_memory=False,
                 rank=0, world_size=1):
    """A DataLoader that fetches whole batches by tensor indexing (no per-item collate).

    With shuffle, epoch e visits the beats in the order of a permutation seeded by seed + e
    (call ``loader.sampler.sampler.set_epoch(e)``), split across `world_size` processes:
    the union of the ranks' batches at a step is one batch of the single-process run.
    """
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle,
                                 seed=seed, drop_last=False)
    return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last=False),
                      batch_size=None, num_workers=num_workers, pin_memory=pin_memory)


def build_optimizer(parameters, lr, weight_decay):
    """AdamW, with torch's fused kernel where every parameter's device has one (CPU, CUDA).
    `parameters`: tensors, or parameter groups (dicts with "params" and their own "lr").

    The same update rule as the original's AdamW; torch's default on the CPU is a Python loop
    over the parameter tensors, the fused kernel updates all of them in one call (5% of a
    training step here; bench/run_bench.py measures it).
    """
    parameters = list(parameters)
    tensors = [p for item in parameters
               for p in (item["params"] if isinstance(item, dict) else [item])]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in tensors)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=fused or None)


def train_one_epoch(model, loader, criterion, optimizer, device, grad_clip, scaler=None,
                    description="train", world_size=1, show_progress=True,
                    frozen_encoder=False):
    """One pass over `loader`; returns (mean loss, accuracy) over the epoch's beats (all ranks).
    `frozen_encoder`: the encoder's BatchNorm statistics stay as they are (FREEZE_EPOCHS)."""
    model.train()
    if frozen_encoder:
        hold_encoder_statistics(model)
    total_loss = torch.zeros((), device=device)
    total_correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    progress = progress_bar(loader, desc=description, show=show_progress)
    for step, (x, y) in enumerate(progress):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=scaler is not None):
            logits = model(x)
        loss = criterion(logits, y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        total_loss += loss.detach() * len(y)
        total_correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if not progress.disable and step % 5 == 0:
            progress.set_postfix(loss=f"{total_loss.item() / seen:.4f}",
                                 acc=f"{total_correct.item() / seen:.3f}", refresh=False)
    totals = torch.stack([total_loss.double(), total_correct.double(),
                          torch.tensor(float(seen), device=device, dtype=torch.float64)])
    if world_size > 1:
        dist.all_reduce(totals)
    return (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()


def predict_logits(model, x, batch_size, device, rank=0, world_size=1, progress=None):
    """Logits (N, C) on CPU for the beats `x` (a tensor, or StandardisedBeats read batch by
    batch), in eval mode without autograd, in batches of max(batch_size, 256); `progress`: the
    description of a progress bar over the beats (rank 0), or None for none.

    Under DDP each rank predicts one contiguous share and the shares are gathered in order,
    so every rank gets all N rows.
    """
    model.eval()
    share = np.array_split(np.arange(len(x)), world_size)[rank]
    step = max(batch_size, 256)
    outputs = []
    bar = progress_bar(total=len(share), desc=progress or "", unit="beat",
                       show=bool(progress) and rank == 0)
    with torch.inference_mode(), bar:
        for start in range(0, len(share), step):
            rows = share[start:start + step]
            xb = x[int(rows[0]):int(rows[-1]) + 1]
            outputs.append(model(xb.to(device, non_blocking=True)).float().cpu())
            bar.update(len(rows))
    local = torch.cat(outputs) if outputs else torch.empty(0)
    return gathered(local, world_size)


def selection_score(rule, val_acc, val_loss, val_auc):
    """The number SELECT_BY `rule` maximises (an AUC that cannot be computed scores -inf)."""
    if rule == "val_loss":
        return -val_loss
    value = val_auc if rule == "val_auc" else val_acc
    return value if np.isfinite(value) else -np.inf


@dataclass(frozen=True)
class Recipe:
    """How `fit` trains: the training scripts' options of these names in upper case."""
    experiment: str             # the network (model.EXPERIMENTS)
    dropout: float              # dropout before the network's head
    epochs: int
    batch_size: int             # beats per optimizer step, over all processes
    lr: float                   # AdamW's learning rate (of the head, with encoder_lr_factor)
    weight_decay: float
    label_smoothing: float
    grad_clip: float            # the gradient's largest norm
    lr_factor: float            # the plateau schedule on validation accuracy: factor, patience
    lr_patience: int
    select_by: str              # the rule that picks the best epoch (lvr.choices)
    seed: int
    lead_dropout: float = 0.0   # chance a training beat's lead is zeroed
    freeze_epochs: int = 0      # the first epochs train the head alone (fine-tuning)
    encoder_lr_factor: float = 1.0
    num_workers: int = 0        # DataLoader worker processes

    @classmethod
    def from_options(cls, options):
        """The Recipe a training script's options give (UPPER_CASE name -> value): how
        run_training, and the benchmarks that train as the scripts do, build it."""
        return cls(**{f.name: options[f.name.upper()] for f in fields(cls)
                      if f.name.upper() in options})


@dataclass
class FitState:
    """Where training stands after an epoch: what a resumed run continues from."""
    history: dict = field(default_factory=lambda: {key: []
                                                   for key in HISTORY_KEYS + EXTRA_HISTORY_KEYS})
    best_val_acc: float = -1.0
    best_val_loss: float = float("inf")
    best_val_auc: float = float("nan")
    best_epoch: int = 0
    epoch: int = 0
    select_by: str = "val_acc"
    init_from: dict | None = None   # lvr.train.finetune.initial_model's record; None: random start
    earlier_runs: list = field(default_factory=list)  # interrupted invocations' records
    first_epoch: int = 1            # the first epoch this invocation trains

    @property
    def epochs_trained(self):
        """[first, last] epoch this invocation trained, or None (a resumed run already done)."""
        return [self.first_epoch, self.epoch] if self.epoch >= self.first_epoch else None

    def improved_by(self, val_acc, val_loss, val_auc=float("nan")):
        """Record an epoch's validation result; True when it is the new best by `select_by`."""
        score = selection_score(self.select_by, val_acc, val_loss, val_auc)
        best = (selection_score(self.select_by, self.best_val_acc, self.best_val_loss,
                                self.best_val_auc) if self.best_epoch else -np.inf)
        better = self.best_epoch == 0 or score > best or (score == best
                                                          and val_loss < self.best_val_loss)
        if better:
            self.best_val_acc, self.best_val_loss, self.best_val_auc = val_acc, val_loss, val_auc
            self.best_epoch = self.epoch
        return better


def fit(recipe, train, val, class_names, output_dir, resume, *, in_channels, input_length,
        device, task, normalisation, run_config, rank=0, world_size=1, log=print, on_epoch=None,
        init_from=None, started=None):
    """Train on `train` = (x, y) as `recipe` says, select on `val`; returns the final FitState.
    x: a tensor or StandardisedBeats (read batch by batch), y: a tensor of labels.

    Writes best_model.pth (recording `task` and the beats' `normalisation`) and
    last_checkpoint.pth (recording `run_config`, the run's options) in `output_dir` (rank 0).
    With `resume`, it continues from last_checkpoint.pth, whose options must match
    `run_config`. `init_from`, a checked lvr.train.finetune.Source, is the checkpoint a new run
    starts from (INIT_FROM); a resumed run continues from its own last checkpoint. For the first
    `recipe.freeze_epochs` epochs only the head trains. `on_epoch(epoch, model, val_logits)`, if
    given, is called after each epoch (bench/model_bench.py records the validation predictions
    of every epoch with it). `started` (time.time(), default now): when this invocation began;
    last_checkpoint.pth records it with the invocations before it (run.json's history).
    """
    started = time.time() if started is None else started
    writer = rank == 0
    set_seed(recipe.seed)
    train_set = LeadDropout(ECGDataset.from_arrays(*train), recipe.lead_dropout, recipe.seed)
    loader = batch_loader(train_set, recipe.batch_size // world_size, shuffle=True,
                          seed=recipe.seed, num_workers=recipe.num_workers,
                          pin_memory=device.type == "cuda", rank=rank, world_size=world_size)
    criterion = LabelSmoothingLoss(len(class_names), recipe.label_smoothing)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    last_path = os.path.join(output_dir, LAST_CHECKPOINT)
    init_record = None
    if resume:
        if writer:
            removed = removed_temporary_files(output_dir)
            if removed:
                log(f"Removed {removed} unfinished temporary file(s) of the interrupted run")
        model, saved = checked_resume_state(last_path, run_config)
        check_not_finished(output_dir, saved["epoch"], recipe.epochs)
        init_record = saved.get("init_from")
    elif init_from is not None:
        model, init_record = initial_model(init_from, class_names, in_channels, input_length,
                                           experiment=recipe.experiment, dropout=recipe.dropout,
                                           log=log)
    else:
        model = fresh_model(recipe.experiment, len(class_names), in_channels, input_length,
                            dropout=recipe.dropout)
    model.to(device)
    freeze_epochs = recipe.freeze_epochs
    frozen = network = None

    def wrapped():
        """The network one step trains; DDP is rebuilt when the freeze ends, since it
        synchronises only the parameters that took gradients when it was made."""
        if world_size == 1:
            return model
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(optimizer_groups(model, recipe.lr, recipe.encoder_lr_factor),
                                recipe.lr, recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=recipe.lr_factor, patience=recipe.lr_patience)
    state = FitState(select_by=recipe.select_by, init_from=init_record)
    if resume:
        state = resumed_state(saved, optimizer, scheduler, recipe.select_by)
        state.init_from = init_record
        state.earlier_runs = earlier_runs(saved)
        log(f"Resuming {output_dir} after epoch {state.epoch} (best so far: epoch "
            f"{state.best_epoch}, validation accuracy {state.best_val_acc:.4f})")
    log(f"Model: {recipe.experiment} ({parameter_count(model):,} parameters) on {device}; "
        f"{recipe.epochs} epochs, batch {recipe.batch_size}, AdamW lr {recipe.lr}"
        + (f", encoder lr x {recipe.encoder_lr_factor}" if recipe.encoder_lr_factor != 1 else "")
        + (f"; head alone for the first {freeze_epochs} epochs" if freeze_epochs else ""))

    x_val, y_val = val
    state.first_epoch = state.epoch + 1
    with epoch_progress(recipe.epochs, state.epoch, show=writer) as progress:
        for epoch in range(state.epoch + 1, recipe.epochs + 1):
            epoch_start = time.time()
            state.epoch = epoch
            if frozen is not (epoch <= freeze_epochs):
                frozen = epoch <= freeze_epochs
                set_encoder_frozen(model, frozen)
                network = wrapped()
            loader.sampler.sampler.set_epoch(epoch)
            train_set.set_epoch(epoch)
            train_loss, train_acc = train_one_epoch(
                network, loader, criterion, optimizer, device, recipe.grad_clip, scaler,
                description=f"epoch {epoch}/{recipe.epochs}", world_size=world_size,
                show_progress=writer, frozen_encoder=frozen)
            val_logits = predict_logits(model, x_val, recipe.batch_size, device, rank,
                                        world_size)
            val_loss = criterion(val_logits, y_val).item()
            val_acc = (val_logits.argmax(1) == y_val).float().mean().item()
            val_auc = macro_roc_auc(y_val.numpy(), torch.softmax(val_logits, 1).numpy())
            # on validation accuracy whatever select_by is: one training serves every rule, so
            # bench/model_bench.py compares the rules on the same runs
            scheduler.step(val_acc)
            epoch_values = (train_acc, train_loss, val_acc, val_loss, val_auc)
            for key, value in zip(HISTORY_KEYS + EXTRA_HISTORY_KEYS, epoch_values, strict=True):
                state.history[key].append(value)
            improved = state.improved_by(val_acc, val_loss, val_auc)
            if writer:
                save_epoch_checkpoints(output_dir, model, optimizer, scheduler, state,
                                       class_names=class_names, task=task,
                                       normalisation=normalisation, run_config=run_config,
                                       improved=improved, started=started)
            if on_epoch is not None:
                on_epoch(epoch, model, val_logits)
            progress.update(1)
            with tqdm.external_write_mode():
                log(epoch_line(epoch, recipe.epochs, train=(train_loss, train_acc),
                               val=(val_loss, val_acc, val_auc), optimizer=optimizer,
                               frozen=frozen, seconds=time.time() - epoch_start,
                               improved=improved))
    set_encoder_frozen(model, False)
    barrier(world_size)
    return state


def epoch_progress(epochs, done, show):
    """The bar over the run's `epochs` (`done` of them before this invocation) with its ETA,
    above each epoch's bar of batches; on rank 0 (`show`) only."""
    return progress_bar(total=epochs, initial=done, desc="training", unit="epoch", show=show)


def epoch_line(epoch, epochs, *, train, val, optimizer, frozen, seconds, improved):
    """The console line of one epoch: `train` (loss, accuracy), `val` (loss, accuracy, AUC), the
    learning rates, whether the encoder was `frozen`, its `seconds` and whether it `improved`."""
    lr = optimizer.param_groups[-1]["lr"]
    encoder_lr = (f" (encoder {optimizer.param_groups[0]['lr']:.1e})"
                  if len(optimizer.param_groups) > 1 else "")
    return (f"epoch {epoch:>3}/{epochs}  train loss {train[0]:.4f} acc {train[1]:.4f}"
            f" | val loss {val[0]:.4f} acc {val[1]:.4f} auc {val[2]:.4f} | lr {lr:.1e}"
            f"{encoder_lr}{' head only' if frozen else ''}"
            f" | {seconds:.1f} s{'  * best' if improved else ''}")


def save_epoch_checkpoints(output_dir, model, optimizer, scheduler, state, *, class_names, task,
                           normalisation, run_config, improved, started):
    """best_model.pth when the epoch improved, and always the resumable last_checkpoint.pth,
    which holds the run's history: the interrupted invocations', and this one's, begun at
    `started` (time.time()), up to this epoch."""
    if improved:
        save_checkpoint(os.path.join(output_dir, BEST_CHECKPOINT), model, epoch=state.epoch,
                        val_acc=state.best_val_acc, val_loss=state.best_val_loss,
                        val_auc=float(state.best_val_auc), selected_by=state.select_by,
                        class_names=class_names, task=task, normalisation=normalisation,
                        init_from=state.init_from)
    save_checkpoint(os.path.join(output_dir, LAST_CHECKPOINT), model, epoch=state.epoch,
                    run_config=run_config, optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(), history=state.history,
                    best_val_acc=state.best_val_acc, best_val_loss=state.best_val_loss,
                    best_val_auc=float(state.best_val_auc), best_epoch=state.best_epoch,
                    torch_rng=torch.get_rng_state(), normalisation=normalisation,
                    init_from=state.init_from,
                    run_history=state.earlier_runs + [invocation_record(started,
                                                                        state.epochs_trained)])


def checked_resume_state(path, run_config):
    """(model, checkpoint dict) of an interrupted run whose options match `run_config` (the
    options a resumed run was given, compared with those its last checkpoint recorded)."""
    model, state = load_checkpoint(path)
    check_unchanged_options(path, {**LEGACY_DEFAULTS, **state.get("run_config", {})}, run_config,
                            RESUMABLE_CHANGES)
    return model, state


def check_unchanged_options(path, saved, run_config, resumable):
    """A UserError naming each option of `run_config` that differs from `saved`, the options the
    interrupted run resumed from `path` recorded, unless it is one of the `resumable` ones."""
    changed = sorted(k for k in set(saved) | set(run_config)
                     if k not in resumable and saved.get(k) != run_config.get(k))
    if changed:
        raise UserError(f"cannot resume {path}: these options differ from the interrupted run: "
                        + ", ".join(f"{k} (was {saved.get(k)!r}, now {run_config.get(k)!r})"
                                    for k in changed))


def resumed_state(saved, optimizer, scheduler, select_by):
    """Restore the optimizer, scheduler and torch RNG; the FitState after the saved epoch. A run
    saved before validation AUCs were recorded has NaN for its earlier epochs."""
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    history = {key: list(saved["history"].get(key, [float("nan")] * saved["epoch"]))
               for key in HISTORY_KEYS + EXTRA_HISTORY_KEYS}
    return FitState(history=history, best_val_acc=saved["best_val_acc"],
                    best_val_loss=saved["best_val_loss"],
                    best_val_auc=saved.get("best_val_auc", float("nan")),
                    best_epoch=saved["best_epoch"], epoch=saved["epoch"], select_by=select_by)


def check_not_finished(output_dir, epochs_done, epochs):
    """A resumed run that finished (its test results written) after `epochs_done` epochs is
    refused unless EPOCHS (`epochs`) asks for more: there is nothing to resume, and resuming
    would test it again and rewrite its results."""
    if epochs_done >= epochs and os.path.exists(os.path.join(output_dir, TEST_RESULTS)):
        raise UserError(f"--resume=True: the run in {output_dir} finished ({TEST_RESULTS}) "
                        f"after {epochs_done} epochs; there is nothing to resume. To train it "
                        f"longer, pass a larger --epochs with --resume=True; to start a new "
                        f"run, leave --resume out (this one is then kept as "
                        f"{output_dir}.<timestamp>)")


def earlier_runs(saved):
    """The invocations of the run before this one, from its last checkpoint `saved`: one entry
    of unknown command and times for a checkpoint written before the history was kept."""
    return list(saved.get("run_history") or [
        {"command": None, "started": None, "ended": None, "epochs": [1, saved["epoch"]],
         "wall_time_s": None}])
