"""Attribution maps of an ECG beat classifier by several methods, to compare with SmoothGrad.

Every map has the beats' shape (N, leads, T) and is non-negative: the absolute value of the
attribution, the magnitude of the evidence a sample carries whatever its sign. The captum
methods attribute log P(true class), the log-softmax of the logits at the true label, so that
"gradient" is |d CE / dx|, SmoothGrad with one copy and no noise.

- smoothgrad: mean |d CE / dx| over noisy copies of the beat, as in the original analysis
  (Smilkov et al. 2017, arXiv:1706.03825; lvr.explain.smoothgrad).
- gradient: |d log P / dx|, the saliency map (Simonyan et al. 2014, arXiv:1312.6034).
- input_x_gradient: |x * d log P / dx| (Shrikumar et al. 2016, arXiv:1605.01713).
- integrated_gradients: |x * mean of d log P / dx along the straight path from the all-zero
  baseline to x| (Sundararajan et al. 2017, arXiv:1703.01365).
- occlusion: |log P(x) - log P(x with one lead's time window set to 0)|, the same value for
  every sample of the window (Zeiler & Fergus 2014, arXiv:1311.2901).
- grad_cam: relu of the last residual block's activations weighted by their time-averaged
  gradients, upsampled to T (Selvaraju et al. 2017, arXiv:1610.02391). It has no lead
  resolution: every lead gets the same time curve.
"""
import torch
import torch.nn.functional as F

from lvr.progress import progress_bar
from lvr.choices import METHODS
from lvr.explain.smoothgrad import DEFAULT_CHUNK_ROWS, check_eval_mode, model_device, smoothgrad


def attribution_maps(model, x, target, method="smoothgrad", *, num_samples=10, noise_level=0.1,
                     generator=None, ig_steps=32, occlusion_window=25, batch_size=32,
                     progress=False):
    """Non-negative attribution maps (N, leads, T) float32 numpy for beats x (N, leads, T)
    float32 numpy and their true labels target (N,) int.

    The model must be in eval mode (ValueError otherwise; its mode is never changed) and runs
    on the device of its first parameter. Beats go through in batches of `batch_size`.
    `num_samples`, `noise_level` and `generator` are SmoothGrad's (see lvr.explain.smoothgrad; the
    generator is consumed batch by batch, as lvr.explain.analysis does); `ig_steps` is the number of
    integration steps of integrated_gradients; `occlusion_window` the length in samples of
    the occluded window (a shorter last window covers the end of the beat). `progress`: True
    for a progress bar of its own, or a bar (tqdm) to advance by each batch's beats.
    """
    check_eval_mode(model)
    x, target = checked_attribution_input(x, target)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    attribute = batch_attribution(model, method, x.shape[2], num_samples=num_samples,
                                  noise_level=noise_level, generator=generator,
                                  ig_steps=ig_steps, occlusion_window=occlusion_window)
    device = model_device(model)
    maps = [torch.zeros(0, *x.shape[1:])]  # so that no beats give an empty map
    bar = progress if hasattr(progress, "update") else progress_bar(
        total=len(x), desc=METHODS[method], unit="beat", show=bool(progress))
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device)
            yb = target[start:start + batch_size].to(device)
            maps.append(attribute(xb, yb).detach().float().cpu())
            bar.update(len(xb))
    finally:
        if bar is not progress:
            bar.close()
    return torch.cat(maps).numpy()


def has_lead_resolution(method):
    """Whether `method` gives each lead its own map (all but grad_cam)."""
    check_method(method)
    return method != "grad_cam"


def check_method(method):
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; valid methods: "
                         f"{', '.join(METHODS)}")


def checked_attribution_input(x, target):
    """x as a float32 tensor (N, leads, T) and target as a long tensor (N,), or ValueError."""
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (N, leads, T), got {tuple(x.shape)}")
    target = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if len(target) != len(x):
        raise ValueError(f"target has {len(target)} labels for {len(x)} beats")
    return x, target


def batch_attribution(model, method, length, *, num_samples, noise_level, generator, ig_steps,
                      occlusion_window):
    """The function (beats, labels) -> maps of one batch that computes `method`."""
    check_method(method)
    if method == "smoothgrad":
        return lambda xb, yb: smoothgrad(model, xb, yb, num_samples, noise_level,
                                         generator=generator)
    attr = captum_attr()
    log_prob = log_probability(model)
    if method == "gradient":
        return lambda xb, yb: attr.Saliency(log_prob).attribute(differentiable(xb), target=yb,
                                                                abs=True)
    if method == "input_x_gradient":
        return lambda xb, yb: attr.InputXGradient(log_prob).attribute(differentiable(xb),
                                                                      target=yb).abs()
    if method == "integrated_gradients":
        if ig_steps < 1:
            raise ValueError(f"ig_steps must be at least 1, got {ig_steps}")
        return lambda xb, yb: integrated_gradients(attr, log_prob, xb, yb, ig_steps).abs()
    if method == "occlusion":
        if not 1 <= occlusion_window <= length:
            raise ValueError(f"occlusion_window must be between 1 and the beat length "
                             f"{length}, got {occlusion_window}")
        return lambda xb, yb: occlusion(attr, log_prob, xb, yb, occlusion_window).abs()
    layer = last_block(model)
    return lambda xb, yb: grad_cam(attr, log_prob, layer, xb, yb)


def captum_attr():
    """The captum.attr module."""
    import captum.attr  # lazy: captum takes 0.7 s to import; only the non-default methods need it
    return captum.attr


def log_probability(model):
    """The function beats -> log-probabilities (B, classes) of `model`, which captum attributes."""
    return lambda x: F.log_softmax(model(x), dim=1)


def differentiable(xb):
    """A leaf copy of `xb` that requires grad (captum warns when it has to set that itself)."""
    return xb.detach().requires_grad_(True)


def integrated_gradients(attr, log_prob, xb, yb, steps):
    """Signed integrated gradients from the all-zero baseline: zero is the mean of a beat
    standardised per lead, a flat line at its average level."""
    return attr.IntegratedGradients(log_prob).attribute(
        xb, baselines=torch.zeros_like(xb), target=yb, n_steps=steps,
        internal_batch_size=max(DEFAULT_CHUNK_ROWS, len(xb)))  # path points per pass


def occlusion(attr, log_prob, xb, yb, window):
    """Signed occlusion of one lead x time window at a time, each replaced by 0.

    Windows do not overlap (stride = window), so each sample gets the value of its one
    window; captum cuts the last window short where T is not a multiple of it.
    """
    return attr.Occlusion(log_prob).attribute(
        xb, sliding_window_shapes=(1, window), strides=(1, window), baselines=0, target=yb,
        perturbations_per_eval=max(1, DEFAULT_CHUNK_ROWS // len(xb)))  # ~256 rows per pass


def last_block(model):
    """The last residual block of a ResNet1D, the layer Grad-CAM explains."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise ValueError(f"grad_cam needs a model with residual blocks in `model.blocks` (it "
                         f"explains the last one); {type(model).__name__} has no `blocks`")
    return blocks[-1]


def grad_cam(attr, log_prob, layer, xb, yb):
    """Grad-CAM time curve of `layer`, upsampled linearly to the beat and copied to every lead."""
    cam = attr.LayerGradCam(log_prob, layer).attribute(xb, target=yb, relu_attributions=True)
    cam = attr.LayerAttribution.interpolate(cam, (xb.shape[2],), interpolate_mode="linear")
    return cam.expand(-1, xb.shape[1], -1).contiguous()
