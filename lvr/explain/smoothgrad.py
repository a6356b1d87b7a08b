"""SmoothGrad saliency of an ECG classifier, as defined by the original analysis.

SmoothGrad (Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise",
arXiv:1706.03825) averages a gradient map over noisy copies of the input. The original project
differentiates the cross-entropy loss of the true label (not a logit) and takes absolute values:

    S(x) = 1/N * sum_i | d CE(f(x + e_i), y) / dx |,   e_i ~ N(0, sigma^2 I),

with sigma an absolute standard deviation in the units of the per-lead standardised beat
(0.1 in the original) and N = 10 copies.
"""
import math

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_ROWS = 256  # noisy beats per forward/backward pass; bounds memory


def check_eval_mode(model):
    training = [name or type(model).__name__ for name, module in model.named_modules()
                if module.training]
    if training:
        raise ValueError("model must be in eval mode (call model.eval()); modules in training "
                         f"mode: {training[:5]}")


def model_device(model, fallback=None):
    """The device of the model's first parameter (for a model without any: `fallback`, or the
    CPU)."""
    parameter = next(model.parameters(), None)
    if parameter is not None:
        return parameter.device
    return torch.device("cpu") if fallback is None else fallback


def _checked_inputs(x, target):
    x = torch.as_tensor(x)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (B, C, T), got {tuple(x.shape)}")
    target = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if target.shape[0] != x.shape[0]:
        raise ValueError(f"target has {target.shape[0]} labels for a batch of {x.shape[0]} beats")
    return x.detach().float(), target


def smoothgrad(model, x, target, num_samples=10, noise_level=0.1, generator=None,
               chunk_size=None, noise=None):
    """SmoothGrad of the cross-entropy loss of the true label, all noisy copies batched.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier returning logits (B, K). Must be in eval mode (every submodule), otherwise
        ValueError: batch-norm statistics and dropout would mix or randomise the copies. The
        caller's mode is never changed.
    x : torch.Tensor, shape (B, C, T)
        Beats, standardised per lead; moved to the model's device.
    target : torch.Tensor, shape (B,)
        True labels; the loss of this label is differentiated.
    num_samples : int
        Number of noisy copies N per beat (10 in the original).
    noise_level : float
        Absolute noise standard deviation sigma in standardised units (0.1 in the original).
        ``num_samples=1, noise_level=0`` gives the plain absolute loss gradient.
    generator : torch.Generator, optional
        Source of the noise, drawn as one standard normal tensor (N, B, C, T) on the generator's
        device and scaled by ``noise_level``; torch's global generator when None.
    chunk_size : int, optional
        Most noisy beats per forward/backward pass (default: the fewest passes of at most 256,
        all of equal size). The result does not depend on it beyond float rounding.
    noise : torch.Tensor, shape (N, B, C, T), optional
        The additive noise itself (already scaled; ``noise_level`` and ``generator`` are then
        ignored). For tests and for comparisons with the original's loop
        (tests/references.py: ``smoothgrad_seed_loop``).

    Returns
    -------
    torch.Tensor, shape (B, C, T)
        Mean absolute input gradient, float32 on the CPU, detached.

    Notes
    -----
    The loss is summed over the chunk (``reduction='sum'``), so each beat's input gradient is
    the gradient of its own loss; the original used the batch mean, which divides it by the
    batch size (tests/references.py: ``smoothgrad_seed_loop``). Gradients
    are taken with ``torch.autograd.grad`` with respect to the input only; parameter ``.grad``
    is left untouched. A model with an ``inference_copy()`` method (ResNet1D: BatchNorm folded
    into the convs, parameters frozen) is differentiated through that copy, which gives the
    same gradients to float rounding, about 10% faster.
    """
    check_eval_mode(model)
    x, target = _checked_inputs(x, target)
    batch, channels, length = x.shape
    if noise is None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn((num_samples, batch, channels, length), generator=generator,
                            device=device) * float(noise_level)
    elif tuple(noise.shape[1:]) != (batch, channels, length):
        raise ValueError(f"noise must have shape (num_samples, {batch}, {channels}, {length}), "
                         f"got {tuple(noise.shape)}")
    num_samples = noise.shape[0]
    rows_total = num_samples * batch
    if chunk_size is None:  # equal passes: a small last pass costs nearly as much as a full one
        chunk_size = math.ceil(rows_total / math.ceil(rows_total / DEFAULT_CHUNK_ROWS))
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")

    device = model_device(model, x.device)
    x, target = x.to(device), target.to(device)
    # A copy with BatchNorm folded into the convs, when the model offers one: same gradients
    # to float rounding, fewer passes over the activations.
    network = model.inference_copy() if hasattr(model, "inference_copy") else model
    flat_noise = noise.detach().reshape(num_samples * batch, channels, length)
    total = torch.zeros((batch, channels, length), device=device)
    for start in range(0, rows_total, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, rows_total), device=device)
        beat = rows % batch  # row s*B + b holds copy s of beat b
        noisy = (x[beat] + flat_noise[start:start + len(rows)].to(device, torch.float32))
        noisy.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(network(noisy), target[beat], reduction="sum")
            (gradient,) = torch.autograd.grad(loss, noisy)
        total.index_add_(0, beat, gradient.abs())
    return (total / num_samples).detach().float().cpu()


def lead_importance(saliency):
    """Per-lead importance (B, C): saliency averaged over time, as in the original."""
    return _checked_saliency(saliency).mean(dim=2)


def time_importance(saliency):
    """Per-time-step importance (B, T): saliency averaged over leads, as in the original."""
    return _checked_saliency(saliency).mean(dim=1)


def _checked_saliency(saliency):
    saliency = torch.as_tensor(saliency)
    if saliency.ndim != 3:
        raise ValueError(f"saliency must have shape (B, C, T), got {tuple(saliency.shape)}")
    return saliency
