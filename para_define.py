"""Loss, training engine, evaluation and metrics shared by the 2-class and 4-class scripts.

`run_training(config)` is the whole job of a training script: data -> split -> model -> epochs
(best checkpoint by validation accuracy, resumable) -> test metrics with patient-bootstrap
confidence intervals -> figures and provenance files. The scripts only choose constants.
"""
import contextlib
import datetime
import errno
import json
import os
import platform
import socket
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, precision_score,
                             recall_score, roc_auc_score, roc_curve)
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler
from tqdm import tqdm

from cli import UserError
from ECG_dataset import (ECGDataset, LeadDropout, load_cohort, patient_kfold_indices,
                         patient_split_indices, resolve_data_dir, set_seed, standardize_beats)

LAST_CHECKPOINT = "last_checkpoint.pth"
BEST_CHECKPOINT = "best_model.pth"
HISTORY_KEYS = ("train_acc_list", "train_loss_list", "val_acc_list", "val_loss_list")
# Options that may change when a run is resumed; every other option must match the checkpoint.
RESUMABLE_CHANGES = {"EPOCHS", "RESUME", "DEVICE", "NUM_WORKERS"}
LOCK_FILE = ".run.lock"


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


# ----------------------------------------------------------------------------- small helpers

def resolve_device(name):
    """'auto' -> CUDA when available, else CPU; anything else as torch understands it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"DEVICE={name!r} but no CUDA GPU is available; use --device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"DEVICE={name!r} is not a device torch knows (auto, cpu, cuda, cuda:1)") \
            from None


def write_json_atomic(path, payload):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_npy_atomic(path, array):
    tmp = f"{path}.tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def removed_temporary_files(output_dir):
    """Delete half-written files an interrupted run left (atomic writes never renamed them).

    Only called while this run holds the folder's lock, so no other writer owns them.
    """
    count = 0
    for name in os.listdir(output_dir):
        if name.endswith((".tmp", ".tmp.npy", ".tmp.png")):
            os.remove(os.path.join(output_dir, name))
            count += 1
    return count


def library_versions():
    import matplotlib
    import scipy
    import sklearn
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
            "matplotlib": matplotlib.__version__, "platform": platform.platform()}


def prepare_output_dir(output_dir, resume=False, log=print, finished_file="test_eval_results.json"):
    """Make `output_dir` ready for a new run without losing an earlier one.

    A non-empty folder is renamed to `<output_dir>.<timestamp>` (never deleted); with resume it
    must hold the interrupted run's last checkpoint. `finished_file` marks a finished training
    run (None: not a training folder).
    """
    holder = lock_holder(output_dir)
    if holder:
        raise UserError(f"{output_dir} is in use by another run (pid {holder.get('pid')} on "
                        f"{holder.get('host')}); wait for it or choose another --output_dir")
    if resume:
        if not os.path.exists(os.path.join(output_dir, LAST_CHECKPOINT)):
            raise UserError(f"--resume=True but {output_dir} holds no {LAST_CHECKPOINT} to resume "
                            f"from; start a new run without --resume")
        return
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        stamp = datetime.datetime.fromtimestamp(os.path.getmtime(output_dir))
        moved = f"{output_dir.rstrip('/')}.{stamp:%Y%m%d-%H%M%S}"
        suffix = 1
        while os.path.exists(moved):
            moved = f"{output_dir.rstrip('/')}.{stamp:%Y%m%d-%H%M%S}-{suffix}"
            suffix += 1
        os.replace(output_dir, moved)
        unfinished = finished_file and not os.path.exists(os.path.join(moved, finished_file))
        log(f"An earlier run in {output_dir} was kept as {moved}"
            + (" (it had not finished: resume it with --resume=True after moving it back)"
               if unfinished else ""))
    os.makedirs(output_dir, exist_ok=True)


def distributed_setup(device_name):
    """Join the process group when launched by torchrun; returns (rank, world_size, device).

    gloo on CPU, NCCL on CUDA; each process uses the GPU of its LOCAL_RANK. A plain
    ``python script.py`` is one process and starts no group.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world_size == 1:
        return 0, 1, device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world_size, device


def gathered(tensor, world_size):
    """Concatenate each rank's tensor in rank order (identity in one process)."""
    if world_size == 1:
        return tensor
    parts = [None] * world_size
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


def barrier(world_size):
    if world_size > 1:
        dist.barrier()


def lock_holder(output_dir):
    """The live run holding `output_dir`'s lock, as a dict, or None."""
    path = os.path.join(output_dir, LOCK_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            holder = json.load(handle)
    except (OSError, ValueError):
        return None
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder.get("pid", -1)), 0)
        except (ProcessLookupError, ValueError):
            return None
        except PermissionError:
            pass
    return holder


@contextlib.contextmanager
def output_lock(output_dir):
    """Hold OUTPUT_DIR for this run: a second run pointed at it stops with a clear message."""
    path = os.path.join(output_dir, LOCK_FILE)
    holder = lock_holder(output_dir)
    if holder:
        raise UserError(f"{output_dir} is in use by another run (pid {holder.get('pid')} on "
                        f"{holder.get('host')}, since {holder.get('started')}); wait for it or "
                        f"choose another --output_dir. If no such run exists, delete {path}")
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)  # stale: its process is gone
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise UserError(f"{output_dir} was just taken by another run; choose another "
                        f"--output_dir") from None
    with os.fdopen(fd, "w") as handle:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "started": datetime.datetime.now().isoformat(timespec="seconds")}, handle)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def disk_space_guard(output_dir):
    """Turn a full disk into a clear message; atomic writes left every earlier file intact."""
    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        last = os.path.join(output_dir, LAST_CHECKPOINT)
        raise UserError(f"no space left on the device while writing to {output_dir}. Files "
                        f"written before are intact (last complete checkpoint: {last}); free "
                        f"space, then continue with --resume=True") from None


# ----------------------------------------------------------------------------- data

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


def split_summary(name, labels, patient_ids, total):
    counts = np.bincount(labels, minlength=int(labels.max()) + 1 if len(labels) else 0)
    return (f"  {name:<5} {len(np.unique(patient_ids)):>5} patients {len(labels):>6} beats "
            f"({100 * len(labels) / total:4.1f}%)  per class: {counts.tolist()}")


# ----------------------------------------------------------------------------- engine

def build_optimizer(parameters, lr, weight_decay):
    """AdamW, with torch's fused kernel where every parameter's device has one (CPU, CUDA).

    The same update rule as the original's AdamW; torch's default on the CPU is a Python loop
    over the parameter tensors, the fused kernel updates all of them in one call (5% of a
    training step here; bench/run_bench.py measures it).
    """
    parameters = list(parameters)
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in parameters)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=fused or None)


def train_one_epoch(model, loader, criterion, optimizer, device, grad_clip, scaler=None,
                    description="train", world_size=1, show_progress=True):
    """One pass over `loader`; returns (mean loss, accuracy) over the epoch's beats (all ranks)."""
    model.train()
    total_loss = torch.zeros((), device=device)
    total_correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    progress = tqdm(loader, desc=description, leave=False, dynamic_ncols=True,
                    disable=None if show_progress else True)
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
                                 acc=f"{total_correct.item() / seen:.3f}")
    totals = torch.stack([total_loss.double(), total_correct.double(),
                          torch.tensor(float(seen), device=device, dtype=torch.float64)])
    if world_size > 1:
        dist.all_reduce(totals)
    return (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()


def predict_logits(model, x, batch_size, device, rank=0, world_size=1):
    """Logits (N, C) on CPU for the tensor `x`, in eval mode without autograd.

    Under DDP each rank predicts one contiguous share and the shares are gathered in order,
    so every rank gets all N rows.
    """
    model.eval()
    share = np.array_split(np.arange(len(x)), world_size)[rank]
    x = x[share[0]:share[-1] + 1] if len(share) else x[:0]
    step = max(batch_size, 256)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(x), step):
            outputs.append(model(x[start:start + step].to(device, non_blocking=True)).float().cpu())
    local = torch.cat(outputs) if outputs else torch.empty(0)
    return gathered(local, world_size)


# ----------------------------------------------------------------------------- metrics

def classification_metrics(y_true, prob, class_names, sample_weight=None):
    """The original's test metrics (same keys) plus sensitivity and specificity.

    Binary: `roc_auc` is one number for class 1 and fpr/tpr are flat lists. Multi-class:
    `roc_auc` = {"macro": one-vs-rest macro AUC, "class_k": ...}, fpr/tpr one list per class,
    `class_metrics` per class. Sensitivity/specificity are those of class 1 (binary) or the
    macro average of one-vs-rest values (multi-class).
    """
    y_true = np.asarray(y_true)
    prob = np.asarray(prob, dtype=np.float64)
    n_classes = prob.shape[1]
    labels = list(range(n_classes))
    pred = prob.argmax(1)
    w = sample_weight
    cm = confusion_matrix(y_true, pred, labels=labels, sample_weight=w)
    out = {
        "accuracy": float(accuracy_score(y_true, pred, sample_weight=w)),
        "precision": float(precision_score(y_true, pred, labels=labels, average="macro",
                                           zero_division=0, sample_weight=w)),
        "recall": float(recall_score(y_true, pred, labels=labels, average="macro",
                                     zero_division=0, sample_weight=w)),
        "f1": float(f1_score(y_true, pred, labels=labels, average="macro", zero_division=0,
                             sample_weight=w)),
        "confusion_matrix": cm.astype(int).tolist() if w is None else cm.tolist(),
    }
    tp = np.diag(cm).astype(float)
    fn = cm.sum(1) - tp
    fp = cm.sum(0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        spec = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
    present = np.unique(y_true)
    if n_classes == 2:
        out["sensitivity"] = float(sens[1])
        out["specificity"] = float(spec[1])
        if len(present) == 2:
            fpr, tpr, _ = roc_curve(y_true, prob[:, 1], sample_weight=w)
            out["fpr"], out["tpr"] = fpr.tolist(), tpr.tolist()
            out["roc_auc"] = float(roc_auc_score(y_true, prob[:, 1], sample_weight=w))
        else:
            out["fpr"], out["tpr"], out["roc_auc"] = [], [], None
        return out
    out["sensitivity"] = float(np.nanmean(sens))
    out["specificity"] = float(np.nanmean(spec))
    aucs, fprs, tprs, class_metrics = {}, [], [], {}
    for k in labels:
        positive = (y_true == k).astype(int)
        if 0 < positive.sum() < len(positive):
            fpr, tpr, _ = roc_curve(positive, prob[:, k], sample_weight=w)
            aucs[f"class_{k}"] = float(roc_auc_score(positive, prob[:, k], sample_weight=w))
        else:
            fpr, tpr = np.array([]), np.array([])
            aucs[f"class_{k}"] = None
        fprs.append(fpr.tolist())
        tprs.append(tpr.tolist())
        total = float(cm[k].sum())
        precision_k = tp[k] / (tp[k] + fp[k]) if tp[k] + fp[k] > 0 else 0.0
        recall_k = tp[k] / total if total > 0 else 0.0
        class_metrics[f"class_{k}"] = {
            "name": class_names[k], "accuracy": recall_k, "precision": float(precision_k),
            "recall": float(recall_k),
            "f1": float(2 * precision_k * recall_k / (precision_k + recall_k))
            if precision_k + recall_k > 0 else 0.0,
            "auc": aucs[f"class_{k}"], "correct_predictions": float(tp[k]) if w is not None
            else int(tp[k]), "total_samples": total if w is not None else int(total)}
    defined = [a for a in aucs.values() if a is not None]
    aucs = {"macro": float(np.mean(defined)) if len(defined) == n_classes else None, **aucs}
    out.update({"fpr": fprs, "tpr": tprs, "roc_auc": aucs, "class_metrics": class_metrics})
    return out


def headline_metrics(metrics):
    """The scalar metrics a confidence interval is reported for."""
    auc = metrics["roc_auc"]
    return {"roc_auc": auc["macro"] if isinstance(auc, dict) else auc,
            "accuracy": metrics["accuracy"], "precision": metrics["precision"],
            "recall": metrics["recall"], "f1": metrics["f1"],
            "sensitivity": metrics["sensitivity"], "specificity": metrics["specificity"]}


# resamples whose beat weights are computed at once: ~50 MB of weights, ~200 MB at the peak
BOOTSTRAP_CHUNK_BYTES = 50 * 2 ** 20


def resampled_patient_weights(rng, inverse, n_patients, n_resamples):
    """Beat weights (n_resamples, n_beats) of patient resamples: a patient drawn m times weighs m.

    One draw of shape (n_resamples, n_patients) gives the same numbers, in the same order, as one
    `rng.integers(0, n_patients, n_patients)` per resample (a test checks this).
    """
    draws = rng.integers(0, n_patients, (n_resamples, n_patients))
    offsets = np.arange(n_resamples)[:, None] * n_patients
    counts = np.bincount((draws + offsets).ravel(), minlength=n_resamples * n_patients)
    return counts.reshape(n_resamples, n_patients)[:, inverse].astype(np.float64)


def weighted_confusion_matrices(y_true, pred, weights, n_classes):
    """Confusion matrices (n_resamples, true class, predicted class) for each row of `weights`."""
    pairs = np.eye(n_classes * n_classes)[y_true.astype(np.int64) * n_classes + pred]
    return (weights @ pairs).reshape(-1, n_classes, n_classes)


def weighted_roc_auc(positive, score, weights):
    """roc_auc_score(positive, score, sample_weight=w) for each row w of `weights`; NaN for a row
    without positive or without negative weight.

    A positive-negative pair counts 1 when the positive scores higher, 1/2 when tied.
    """
    negatives = np.flatnonzero(~positive)
    negatives = negatives[np.argsort(score[negatives], kind="stable")]
    positives = np.flatnonzero(positive)
    below = np.searchsorted(score[negatives], score[positives], "left")
    up_to = np.searchsorted(score[negatives], score[positives], "right")
    negative_cum = np.zeros((len(weights), len(negatives) + 1))
    np.cumsum(weights[:, negatives], axis=1, out=negative_cum[:, 1:])
    positive_weight = weights[:, positives]
    # twice the weight of correctly ranked pairs: a sum of integers (exact) for integer weights
    pairs = np.add(negative_cum[:, below], negative_cum[:, up_to])
    twice_right = np.einsum("ij,ij->i", positive_weight, pairs)
    n_pos, n_neg = positive_weight.sum(1), negative_cum[:, -1]
    defined = (n_pos > 0) & (n_neg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined, twice_right / (2 * n_pos * n_neg), np.nan)


def confusion_headline_metrics(cm):
    """Accuracy, macro precision/recall/F1 (zero_division=0, every class counts) and per-class
    sensitivity/specificity (NaN when undefined) of confusion matrices (n, K, K)."""
    tp = np.diagonal(cm, axis1=1, axis2=2)
    true, pred, total = cm.sum(2), cm.sum(1), cm.sum((1, 2))
    tn = total[:, None] - true - pred + tp
    negative = total[:, None] - true
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred > 0, tp / pred, 0.0)
        recall = np.where(true > 0, tp / true, 0.0)
        f1 = np.where(true + pred > 0, 2 * tp / (true + pred), 0.0)
        return {"accuracy": tp.sum(1) / total, "precision": precision.mean(1),
                "recall": recall.mean(1), "f1": f1.mean(1),
                "sensitivity": np.where(true > 0, tp / true, np.nan),
                "specificity": np.where(negative > 0, tn / negative, np.nan)}


def row_nanmean(values):
    """np.nanmean(values, axis=1), NaN for an all-NaN row, without its warning."""
    defined = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined, values, 0.0).sum(1) / defined.sum(1)


def bootstrap_headline_metrics(y_true, prob, weights, n_classes):
    """headline_metrics(classification_metrics(y_true, prob, ..., w)) for each row w of `weights`
    (n_resamples, n_beats): {name: array (n_resamples,)}, NaN where the metric is None or NaN.

    Beats of weight 0 count as left out, as when patient_bootstrap_ci dropped them.
    """
    y_true = np.asarray(y_true)
    prob = np.asarray(prob, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    counts = confusion_headline_metrics(
        weighted_confusion_matrices(y_true, prob.argmax(1), weights, n_classes))
    if n_classes == 2:
        auc = weighted_roc_auc(y_true == 1, prob[:, 1], weights)
        sensitivity, specificity = counts["sensitivity"][:, 1], counts["specificity"][:, 1]
    else:
        # the macro AUC is undefined (NaN) as soon as one class's AUC is
        auc = np.mean([weighted_roc_auc(y_true == k, prob[:, k], weights)
                       for k in range(n_classes)], axis=0)
        sensitivity = row_nanmean(counts["sensitivity"])
        specificity = row_nanmean(counts["specificity"])
    return {"roc_auc": auc, "accuracy": counts["accuracy"], "precision": counts["precision"],
            "recall": counts["recall"], "f1": counts["f1"], "sensitivity": sensitivity,
            "specificity": specificity}


def patient_bootstrap_ci(y_true, prob, patient_ids, class_names, n_boot=1000, seed=0, level=0.95):
    """Percentile confidence intervals that resample patients (with all their beats).

    Each resample draws as many patients as the test set has, with replacement; a patient drawn
    m times weighs m in every metric. Returns {"<metric>_ci95": [lo, hi]} for headline metrics.
    The metrics are those of classification_metrics, computed for many resamples at once.
    """
    patients, inverse = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    y_true = np.asarray(y_true)
    prob = np.asarray(prob, dtype=np.float64)
    rng = np.random.default_rng(seed)
    rows = max(1, BOOTSTRAP_CHUNK_BYTES // (8 * max(len(inverse), 1)))
    # n_boot=0 still goes through one (empty) chunk, which names the metrics
    sizes = [min(rows, n_boot - start) for start in range(0, n_boot, rows)] or [0]
    parts = [bootstrap_headline_metrics(
        y_true, prob, resampled_patient_weights(rng, inverse, len(patients), size), prob.shape[1])
        for size in sizes]
    draws = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return percentile_cis({name: v[np.isfinite(v)] for name, v in draws.items()}, level)


def percentile_cis(draws, level):
    """{"<metric>_ci95": [lo, hi]} percentile intervals of each metric's finite draws (None
    with fewer than 10 draws)."""
    tail = (1 - level) / 2 * 100
    key_suffix = f"_ci{int(round(level * 100))}"
    return {f"{name}{key_suffix}": ([float(np.percentile(v, tail)),
                                     float(np.percentile(v, 100 - tail))]
                                    if len(v) >= 10 else None)
            for name, v in draws.items()}


def patient_bootstrap_ci_loop(y_true, prob, patient_ids, class_names, n_boot=1000, seed=0,
                              level=0.95):
    """patient_bootstrap_ci as it was first written, one scikit-learn call per resample: the
    reference for tests (same intervals) and bench/run_bench.py (speed)."""
    patients, inverse = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in headline_metrics(classification_metrics(y_true, prob,
                                                                           class_names))}
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, len(patients), len(patients)),
                             minlength=len(patients))
        weight = counts[inverse].astype(float)
        keep = weight > 0
        values = headline_metrics(classification_metrics(
            np.asarray(y_true)[keep], np.asarray(prob)[keep], class_names, weight[keep]))
        for name, value in values.items():
            if value is not None and np.isfinite(value):
                draws[name].append(value)
    return percentile_cis(draws, level)


def patient_level_arrays(y_true, prob, patient_ids):
    """One row per patient: its class and the mean class probability over its beats."""
    patients, inverse = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    counts = np.bincount(inverse)
    mean_prob = np.stack([np.bincount(inverse, weights=prob[:, k]) / counts
                          for k in range(prob.shape[1])], axis=1)
    y_patient = np.zeros(len(patients), dtype=np.int64)
    y_patient[inverse] = y_true
    return patients, y_patient, mean_prob


def test_report(y_true, prob, patient_ids, class_names, n_boot, seed):
    """Beat-level metrics with patient-bootstrap CIs, and patient-level metrics when relevant."""
    report = classification_metrics(y_true, prob, class_names)
    report.update(patient_bootstrap_ci(y_true, prob, patient_ids, class_names, n_boot, seed))
    patients, y_patient, prob_patient = patient_level_arrays(y_true, prob, patient_ids)
    report["n_beats"] = int(len(y_true))
    report["n_patients"] = int(len(patients))
    if len(patients) < len(y_true):
        level = classification_metrics(y_patient, prob_patient, class_names)
        level.update(patient_bootstrap_ci(y_patient, prob_patient, patients, class_names, n_boot,
                                          seed))
        level["n_patients"] = int(len(patients))
        report["patient_level"] = level
    return report


# ----------------------------------------------------------------------------- the run

def cohort_for_run(config, log):
    data_dir = resolve_data_dir(config["DATA_DIR"], log=log)
    cohort = load_cohort(data_dir, allow_pickle=config.get("ALLOW_PICKLE", False))
    if not cohort.patient_ids_given:
        log("warning: no cut_<GROUP>_patient_ids.npy files, so every beat counts as its own "
            "patient and the split is per beat (beats of one patient may land in train and test)")
    return data_dir, cohort


def class_names_for(config, cohort, task):
    names = list(config.get("CLASS_NAMES") or cohort.class_names(task))
    n_classes = int(cohort.labels(task).max()) + 1
    if len(names) != n_classes or n_classes != config["NUM_CLASSES"]:
        raise UserError(f"the cohort's {task} task has {n_classes} classes ({names}) but this "
                        f"script trains NUM_CLASSES={config['NUM_CLASSES']}; use the other "
                        f"training script or fix cohort.json")
    return names


def checked_resume_state(path, config):
    from model import load_checkpoint
    model, state = load_checkpoint(path)
    saved = state.get("run_config", {})
    changed = sorted(k for k in set(saved) | set(config)
                     if k not in RESUMABLE_CHANGES and saved.get(k) != config.get(k))
    if changed:
        raise UserError(f"cannot resume {path}: these options differ from the interrupted run: "
                        + ", ".join(f"{k} (was {saved.get(k)!r}, now {config.get(k)!r})"
                                    for k in changed))
    return model, state


def run_training(config, log=print):
    """Train, select and test as configured: one split, or CV_FOLDS patient-level folds.

    Under torchrun every process runs this; only rank 0 prints and writes. Returns the test
    report (with CV: the cross-validation summary).
    """
    start_time = time.time()
    rank, world_size, device = distributed_setup(config["DEVICE"])
    if rank != 0:
        log = quiet_log
    try:
        return _run_training(config, log, rank, world_size, device, start_time)
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def quiet_log(*_):
    pass


def _run_training(config, log, rank, world_size, device, start_time):
    task = config["TASK"]
    data_dir, cohort = cohort_for_run(config, log)
    labels = cohort.labels(task)
    class_names = class_names_for(config, cohort, task)
    if config["BATCH_SIZE"] % world_size:
        raise UserError(f"BATCH_SIZE={config['BATCH_SIZE']} must be divisible by the "
                        f"{world_size} processes (each takes an equal share of every batch)")
    folds = int(config.get("CV_FOLDS") or 0)
    output_dir = config["OUTPUT_DIR"]
    if rank == 0:
        if folds and config["RESUME"]:
            if not os.path.isdir(output_dir):
                raise UserError(f"--resume=True but {output_dir} does not exist; start without "
                                f"--resume")
        else:
            prepare_output_dir(output_dir, config["RESUME"], log,
                               finished_file="cv_summary.json" if folds else "test_eval_results.json")
    barrier(world_size)
    log(f"Data: {data_dir} ({cohort.spec['name']}), {len(labels)} beats x "
        f"{cohort.beats.shape[1]} leads x {cohort.beats.shape[2]} samples; task {task}: "
        f"{', '.join(class_names)}")
    if world_size > 1:
        log(f"Distributed: {world_size} processes ({dist.get_backend()}), "
            f"{config['BATCH_SIZE'] // world_size} beats per process per batch")
    run = dict(cohort=cohort, data_dir=data_dir, labels=labels, class_names=class_names,
               x_all=torch.from_numpy(standardize_beats(cohort.beats)), rank=rank,
               world_size=world_size, device=device, log=log)
    with (output_lock(output_dir) if rank == 0 else contextlib.nullcontext()), \
            disk_space_guard(output_dir):
        if not folds:
            parts = patient_split_indices(labels, cohort.patient_ids, config["TEST_SIZE"],
                                          config["VAL_SIZE"], config["SEED"])
            return train_and_test(config, run, parts, output_dir, config["RESUME"], start_time)
        return cross_validate(config, run, folds, output_dir, start_time)


def cross_validate(config, run, folds, output_dir, start_time):
    """k patient-level folds: each is the test set once; train/val come from the other folds."""
    if folds < 2:
        raise UserError(f"CV_FOLDS must be 0 (one split) or at least 2, got {folds}")
    cohort, labels, log = run["cohort"], run["labels"], run["log"]
    fold_indices = patient_kfold_indices(labels, cohort.patient_ids, folds, config["SEED"])
    reports = []
    for k, test_idx in enumerate(fold_indices):
        fold_dir = os.path.join(output_dir, f"fold_{k + 1}")
        if os.path.exists(os.path.join(fold_dir, "test_eval_results.json")):
            with open(os.path.join(fold_dir, "test_eval_results.json"), encoding="utf-8") as f:
                reports.append(json.load(f))
            log(f"fold {k + 1}/{folds}: finished earlier, kept")
            continue
        rest = np.setdiff1d(np.arange(len(labels)), test_idx)
        inner = patient_split_indices(labels[rest], cohort.patient_ids[rest], 0.0,
                                      config["VAL_SIZE"] / (1 - 1 / folds), config["SEED"] + k)
        parts = {"train": rest[inner["train"]], "val": rest[inner["val"]], "test": test_idx}
        log(f"\n===== fold {k + 1}/{folds} =====")
        resume = os.path.exists(os.path.join(fold_dir, LAST_CHECKPOINT))
        if run["rank"] == 0:
            os.makedirs(fold_dir, exist_ok=True)
        reports.append(train_and_test(dict(config, SEED=config["SEED"] + k), run, parts,
                                      fold_dir, resume, time.time()))
    summary = cross_validation_summary(reports)
    summary.update({"folds": folds, "fold_dirs": [f"fold_{k + 1}" for k in range(folds)],
                    "config": config, "data_fingerprint": cohort.fingerprint(),
                    "wall_time_s": round(time.time() - start_time, 2)})
    if run["rank"] == 0:
        write_json_atomic(os.path.join(output_dir, "cv_summary.json"), summary)
    log(f"\n{folds}-fold cross-validation (patient-level, stratified), mean +/- sd over folds:")
    for name, stats in summary["metrics"].items():
        if stats["mean"] is not None:
            log(f"  {name:<12} {stats['mean']:.4f} +/- {stats['sd']:.4f}  "
                f"(min {stats['min']:.4f}, max {stats['max']:.4f})")
    log(f"Per-fold results in {output_dir}/fold_*/, summary in {output_dir}/cv_summary.json")
    return summary


def cross_validation_summary(reports):
    """Mean, sd (ddof=1), min and max over folds of each headline metric."""
    metrics = {}
    for name in headline_metrics(reports[0]):
        values = [headline_metrics(r)[name] for r in reports]
        values = [v for v in values if v is not None]
        metrics[name] = ({"mean": float(np.mean(values)),
                          "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                          "min": float(np.min(values)), "max": float(np.max(values)),
                          "per_fold": values} if values else
                         {"mean": None, "sd": None, "min": None, "max": None, "per_fold": []})
    return {"metrics": metrics}


def train_and_test(config, run, parts, output_dir, resume, start_time):
    """Train on parts['train'], select on parts['val'], test on parts['test'] in output_dir.

    The best checkpoint has the highest validation accuracy; a tie goes to the lower
    validation loss (the original kept the earliest epoch of a tie).
    """
    from model import build_model, load_checkpoint, parameter_count, save_checkpoint
    cohort, labels, class_names, log = run["cohort"], run["labels"], run["class_names"], run["log"]
    rank, world_size, device = run["rank"], run["world_size"], run["device"]
    writer = rank == 0
    task = config["TASK"]
    set_seed(config["SEED"])
    tensors = {name: (run["x_all"][idx], torch.from_numpy(labels[idx]))
               for name, idx in parts.items()}
    for name, idx in parts.items():
        log(split_summary(name, labels[idx], cohort.patient_ids[idx], len(labels)))
    split_record = {
        "seed": config["SEED"], "test_size": config["TEST_SIZE"], "val_size": config["VAL_SIZE"],
        "task": task, "data_dir": run["data_dir"], "data_fingerprint": cohort.fingerprint(),
        "patient_ids_given": cohort.patient_ids_given,
        **{name: sorted(set(cohort.patient_ids[idx].tolist())) for name, idx in parts.items()}}

    train_set = LeadDropout(ECGDataset.from_arrays(*tensors["train"]),
                            config.get("LEAD_DROPOUT", 0.0), config["SEED"])
    train_loader = batch_loader(train_set,
                                config["BATCH_SIZE"] // world_size, shuffle=True,
                                seed=config["SEED"], num_workers=config["NUM_WORKERS"],
                                pin_memory=device.type == "cuda", rank=rank, world_size=world_size)
    criterion = LabelSmoothingLoss(len(class_names), config["LABEL_SMOOTHING"])
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    history = {key: [] for key in HISTORY_KEYS}
    best_val_acc, best_val_loss, best_epoch, first_epoch = -1.0, float("inf"), 0, 1
    last_path = os.path.join(output_dir, LAST_CHECKPOINT)
    best_path = os.path.join(output_dir, BEST_CHECKPOINT)

    if resume:
        if writer:
            removed = removed_temporary_files(output_dir)
            if removed:
                log(f"Removed {removed} unfinished temporary file(s) of the interrupted run")
        model, state = checked_resume_state(last_path, config)
        model.to(device)
    else:
        model = build_model(num_classes=len(class_names), experiment=config["EXPERIMENT"],
                            in_channels=cohort.beats.shape[1], dropout_rate=config["DROPOUT"],
                            input_length=cohort.beats.shape[2]).to(device)
    network = model
    if world_size > 1:
        network = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(network.parameters(), config["LR"], config["WEIGHT_DECAY"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=config["LR_FACTOR"], patience=config["LR_PATIENCE"])
    if resume:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = {key: list(state["history"][key]) for key in HISTORY_KEYS}
        best_val_acc, best_epoch = state["best_val_acc"], state["best_epoch"]
        best_val_loss = state["best_val_loss"]
        first_epoch = state["epoch"] + 1
        torch.set_rng_state(state["torch_rng"])
        log(f"Resuming {output_dir} after epoch {state['epoch']} (best so far: epoch "
            f"{best_epoch}, validation accuracy {best_val_acc:.4f})")
    elif writer:
        write_json_atomic(os.path.join(output_dir, "split.json"), split_record)
    log(f"Model: {config['EXPERIMENT']} ({parameter_count(model):,} parameters) on {device}; "
        f"{config['EPOCHS']} epochs, batch {config['BATCH_SIZE']}, AdamW lr {config['LR']}")

    x_val, y_val = tensors["val"]
    for epoch in range(first_epoch, config["EPOCHS"] + 1):
        epoch_start = time.time()
        train_loader.sampler.sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        train_loss, train_acc = train_one_epoch(
            network, train_loader, criterion, optimizer, device, config["GRAD_CLIP"], scaler,
            description=f"epoch {epoch}/{config['EPOCHS']}", world_size=world_size,
            show_progress=writer)
        val_logits = predict_logits(model, x_val, config["BATCH_SIZE"], device, rank, world_size)
        val_loss = criterion(val_logits, y_val).item()
        val_acc = (val_logits.argmax(1) == y_val).float().mean().item()
        scheduler.step(val_acc)
        for key, value in zip(HISTORY_KEYS, (train_acc, train_loss, val_acc, val_loss)):
            history[key].append(value)
        improved = val_acc > best_val_acc or (val_acc == best_val_acc and val_loss < best_val_loss)
        if improved:
            best_val_acc, best_val_loss, best_epoch = val_acc, val_loss, epoch
        if writer:
            if improved:
                save_checkpoint(best_path, model, epoch=epoch, val_acc=val_acc,
                                class_names=class_names, task=task)
            save_checkpoint(last_path, model, epoch=epoch, run_config=config,
                            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                            history=history, best_val_acc=best_val_acc,
                            best_val_loss=best_val_loss, best_epoch=best_epoch,
                            torch_rng=torch.get_rng_state())
        log(f"epoch {epoch:>3}/{config['EPOCHS']}  train loss {train_loss:.4f} acc {train_acc:.4f}"
            f" | val loss {val_loss:.4f} acc {val_acc:.4f} | lr {optimizer.param_groups[0]['lr']:.1e}"
            f" | {time.time() - epoch_start:.1f} s{'  * best' if improved else ''}")
    barrier(world_size)

    best_model, _ = load_checkpoint(best_path, map_location=device)
    x_test, y_test = tensors["test"]
    logits = predict_logits(best_model, x_test, config["BATCH_SIZE"], device, rank, world_size)
    prob = torch.softmax(logits, 1).numpy()
    test_ids = cohort.patient_ids[parts["test"]]
    report = test_report(y_test.numpy(), prob, test_ids, class_names, config["BOOTSTRAP"],
                         config["SEED"])
    report.update({"best_epoch": best_epoch, "best_val_acc": best_val_acc,
                   "class_names": class_names, "processes": world_size})
    if writer:
        write_run_outputs(config, run, output_dir, history, best_epoch, report, start_time)
    barrier(world_size)
    return report


def write_run_outputs(config, run, output_dir, history, best_epoch, report, start_time):
    """Curves, test results, figures and run.json of a finished run (rank 0 only)."""
    from plot_training_curves import plot_confusion_matrix, plot_roc_curve, plot_training_curves
    class_names, cohort, device = run["class_names"], run["cohort"], run["device"]
    for key in HISTORY_KEYS:
        save_npy_atomic(os.path.join(output_dir, f"{key}.npy"), np.asarray(history[key]))
    plot_training_curves(output_dir, *(history[key] for key in HISTORY_KEYS), best_epoch=best_epoch)
    write_json_atomic(os.path.join(output_dir, "test_eval_results.json"), report)
    plot_roc_curve(os.path.join(output_dir, "test_roc_curve.png"), report["fpr"], report["tpr"],
                   report["roc_auc"], class_names)
    plot_confusion_matrix(os.path.join(output_dir, "test_confusion_matrix.png"),
                          report["confusion_matrix"], class_names)
    wall = time.time() - start_time
    truth = cohort.spec.get("ground_truth") or {}
    write_json_atomic(os.path.join(output_dir, "run.json"), {
        "config": config, "command": sys.argv, "data_dir": run["data_dir"],
        "data_fingerprint": cohort.fingerprint(), "data_files": cohort.files,
        "demo_data": bool(truth.get("synthetic")), "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "processes": run["world_size"], "torch_threads": torch.get_num_threads(),
        "versions": library_versions(), "wall_time_s": round(wall, 2),
        "finished": datetime.datetime.now().isoformat(timespec="seconds")})
    log_test_summary(report, class_names, output_dir, wall, run["log"])


def format_ci(ci):
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "[n/a]"


def log_test_summary(report, class_names, output_dir, wall, log):
    head = headline_metrics(report)
    log(f"\nTest set ({report['n_patients']} patients, {report['n_beats']} beats), best checkpoint "
        f"from epoch {report['best_epoch']}; 95% CIs resample patients:")
    for name in ("roc_auc", "accuracy", "f1", "sensitivity", "specificity"):
        value = head[name]
        label = "AUC (macro one-vs-rest)" if name == "roc_auc" and len(class_names) > 2 else name
        log(f"  {label:<24} {value:.4f}  {format_ci(report.get(f'{name}_ci95'))}"
            if value is not None else f"  {label:<24} n/a")
    if "patient_level" in report:
        level = headline_metrics(report["patient_level"])
        auc = level["roc_auc"]
        log(f"  patient level: AUC {auc:.4f} {format_ci(report['patient_level'].get('roc_auc_ci95'))}"
            f", accuracy {level['accuracy']:.4f}" if auc is not None else
            f"  patient level: accuracy {level['accuracy']:.4f}")
    log(f"Results in {output_dir}/ (test_eval_results.json, figures, best_model.pth) "
        f"after {wall / 60:.1f} min.")
