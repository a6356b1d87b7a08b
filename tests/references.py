"""Reference implementations kept only to check the library against: the original project's
loops, slow and plain, imported by tests and benchmarks (bench/ puts this folder on sys.path)."""
import numpy as np
import torch
import torch.nn.functional as F

from lvr.data.cohort import load_cohort
from lvr.explain.smoothgrad import check_eval_mode, model_device
from lvr.stats.metrics import classification_metrics, headline_metrics, percentile_cis


def smoothgrad_seed_loop(model, x, target, noise):
    """The original's SmoothGrad loop, the reference for lvr.explain.smoothgrad.smoothgrad.

    One forward/backward pass per noisy copy s of the whole batch: ``x + noise[s]``, the batch
    *mean* cross-entropy of the true labels, ``backward()`` (which, as in the original, also
    computes every parameter gradient), absolute input gradient, averaged over copies.

    Because the loss is a batch mean, each beat's gradient is divided by the batch size B: the
    original's saliency scale depended on the size of the batch a beat happened to fall in.
    ``smoothgrad`` differentiates each beat's own loss, so
    ``smoothgrad(...) == B * smoothgrad_seed_loop(...)`` for the same noise.

    x: (B, C, T); target: (B,) true labels; noise: (N, B, C, T), additive, already scaled.
    `model` must be in eval mode (ValueError otherwise). Returns (B, C, T) float32 on the CPU;
    parameter ``.grad`` are restored.
    """
    check_eval_mode(model)
    x = torch.as_tensor(x).detach().float()
    target = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if tuple(noise.shape[1:]) != tuple(x.shape):
        raise ValueError(f"noise must have shape (num_samples, {', '.join(map(str, x.shape))}), "
                         f"got {tuple(noise.shape)}")
    device = model_device(model, x.device)
    x, target = x.to(device), target.to(device)
    parameters = list(model.parameters())
    saved_grads = [p.grad for p in parameters]
    total = torch.zeros(x.shape, device=device)
    try:
        for s in range(noise.shape[0]):
            model.zero_grad(set_to_none=True)
            noisy = (x + noise[s].to(device, torch.float32)).requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(model(noisy), target)
                loss.backward()
            total += noisy.grad.abs()
    finally:
        for p, grad in zip(parameters, saved_grads, strict=True):
            p.grad = grad
    return (total / noise.shape[0]).detach().float().cpu()


def patient_bootstrap_ci_loop(y_true, prob, patient_ids, class_names, n_boot=1000, seed=0,
                              level=0.95):
    """lvr.stats.metrics.patient_bootstrap_ci as it was first written, one scikit-learn call per
    resample: the reference for tests (same intervals) and bench/run_bench.py (speed)."""
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


def cohort_in_memory(data_dir, allow_pickle=False):
    """lvr.data.cohort.load_cohort with every beat file read whole into one float32 array, the
    data path before memory mapping (it needs the cohort's size in RAM): the reference for the
    memory-mapped BeatFiles."""
    cohort = load_cohort(data_dir, allow_pickle)
    cohort.beats = np.concatenate([np.asarray(part, dtype=np.float32)
                                   for part in cohort.beats.arrays])
    return cohort
