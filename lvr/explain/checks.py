"""Checks of the SmoothGrad explanations: wave-level importance, randomisation sanity check and
lead-deletion test. Pure functions: they return numbers; the script prints and writes them.

1. Wave-level importance. Each beat is cut into P, PR, QRS, ST and T segments
   (lvr/measure/delineation.py), and each lead's saliency is split into the share that falls in
   each.
2. Model parameter randomisation test (Adebayo et al. 2018, "Sanity checks for saliency maps",
   NeurIPS; Quantus' ModelParameterRandomisation): Spearman rank correlation between the map of
   the trained model and the map of a copy whose parameters are re-initialised, cascading from
   the head down to the input. A map that barely changes does not explain the model.
3. Deletion test (pixel flipping / region perturbation, Bach et al. 2015; Samek et al. 2017),
   at lead level: replace a beat's k most important leads by a baseline and follow the model's
   probability of the true class, against k leads taken in a random order.
"""
import copy
import zlib

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from lvr.progress import progress_bar
from lvr.explain.patient_stats import patient_means
from lvr.explain.predict import true_class_probability
from lvr.explain.smoothgrad import check_eval_mode, smoothgrad
from lvr.leads import WAVES

LOCALISATION_CHUNK = 1024   # maps per float64 copy in localisation


def _segment_array(segments, n):
    """(n, 5, 2) int array of (start, end) from one dict or a list of n dicts."""
    if isinstance(segments, dict):
        segments = [segments] * n
    if len(segments) != n:
        raise ValueError(f"segments has {len(segments)} entries for {n} saliency maps")
    return np.array([[segment[w] for w in WAVES] for segment in segments], dtype=int)


def wave_importance_shares(saliency, segments):
    """Share of each lead's total saliency that falls in each wave: (N, C, 5) in WAVES order.

    share[n, c, w] = sum of saliency[n, c, t] over t in segment w / sum over all t. Samples in
    no wave (before P onset, after T offset) are kept in the denominator, so the five shares sum
    to at most 1 and ``1 - sum`` is the "other" share. A lead with zero saliency gets zeros.
    `segments` is one dict (the same for every beat) or a list of N dicts from beat_segments.
    The plain share is the primary measure; see :func:`wave_importance_density` for shares
    corrected for segment length.
    """
    saliency = np.asarray(saliency, dtype=float)
    if saliency.ndim != 3:
        raise ValueError(f"saliency must have shape (N, C, T), got {saliency.shape}")
    n, _, length = saliency.shape
    spans = np.clip(_segment_array(segments, n), 0, length)
    cumulative = np.concatenate([np.zeros(saliency.shape[:2] + (1,)),
                                 np.cumsum(saliency, axis=2)], axis=2)
    rows = np.arange(n)[:, None]
    mass = (cumulative[rows, :, spans[:, :, 1]] - cumulative[rows, :, spans[:, :, 0]])
    mass = mass.transpose(0, 2, 1)                       # (N, C, 5)
    total = cumulative[:, :, -1:]
    return np.divide(mass, total, out=np.zeros_like(mass), where=total > 0)


def wave_importance_density(shares, segments, length):
    """Shares relative to segment length: share / (segment samples / window samples).

    1 means the wave holds as much saliency as its duration alone would give it (uniform
    saliency); 2 means twice as much per millisecond. Removes the advantage of long waves
    (T ~200 ms) over short ones (QRS ~100 ms). NaN for an empty segment.
    """
    shares = np.asarray(shares, dtype=float)
    spans = _segment_array(segments, shares.shape[0])
    fraction = (spans[:, :, 1] - spans[:, :, 0]) / float(length)          # (N, 5)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(fraction[:, None, :] > 0, shares / fraction[:, None, :], np.nan)


def _mean_sd(values):
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"mean": None, "sd": None}
    sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return {"mean": float(values.mean()), "sd": sd}


def wave_importance_table(shares, lead_names, density=None):
    """Per lead: each wave's share {"mean", "sd"} over beats, "other", and "top_wave".

    sd is the sample sd (ddof=1; 0 for one beat). "top_wave" is the wave with the largest mean
    plain share. With `density` (from wave_importance_density) each lead also gets
    "density" {wave: {"mean", "sd"}} (NaN entries of empty segments skipped) and
    "top_wave_density". Plain floats and strings only: JSON-serialisable.
    """
    shares = np.asarray(shares, dtype=float)
    if shares.ndim != 3 or shares.shape[2] != len(WAVES):
        raise ValueError(f"shares must have shape (N, C, {len(WAVES)}), got {shares.shape}")
    if len(lead_names) != shares.shape[1]:
        raise ValueError(f"lead_names has {len(lead_names)} names for {shares.shape[1]} leads")
    table = {"sample_count": int(shares.shape[0])}
    for c, lead in enumerate(lead_names):
        entry = {wave: _mean_sd(shares[:, c, w]) for w, wave in enumerate(WAVES)}
        entry["other"] = _mean_sd(1.0 - shares[:, c].sum(axis=1))
        means = [entry[wave]["mean"] for wave in WAVES]
        entry["top_wave"] = WAVES[int(np.argmax(means))] if shares.shape[0] else None
        if density is not None:
            dens = {wave: _mean_sd(np.asarray(density)[:, c, w]) for w, wave in enumerate(WAVES)}
            entry["density"] = dens
            finite = [d["mean"] if d["mean"] is not None else -np.inf for d in dens.values()]
            entry["top_wave_density"] = WAVES[int(np.argmax(finite))] if shares.shape[0] else None
        table[lead] = entry
    return table


# ----------------------------------------------------------------------------- randomisation

def _has_parameters(module):
    return any(True for _ in module.parameters())


def cascading_layer_names(model):
    """Parameterised top-level blocks, from the output (head) down to the input.

    The model's children in registration order, read as forward order (true of ResNet1D:
    lead_gate, stem, blocks, pool, head; pass your own list if not). A Sequential or ModuleList
    child whose members are themselves composite (ResNet1D.blocks) is split into its members
    ("blocks.5" ... "blocks.0"); one made of plain layers (the stem) stays one block. Children
    without parameters (dropout) are skipped.
    """
    names = []
    for name, child in model.named_children():
        members = list(child.named_children()) if isinstance(child, (nn.Sequential,
                                                                      nn.ModuleList)) else []
        if members and all(any(True for _ in member.children()) for _, member in members):
            names += [f"{name}.{sub}" for sub, member in members if _has_parameters(member)]
        elif _has_parameters(child):
            names.append(name)
    return names[::-1]


def _module_seed(seed, name):
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2 ** 63)


def randomized_copy(model, layers="all", seed=0):
    """A deep copy of `model` whose `layers` (module names, or "all") are re-initialised.

    Every submodule with ``reset_parameters`` (Conv, Linear, BatchNorm, ...) calls it: PyTorch's
    default initialisation (Kaiming-uniform weights for conv/linear). BatchNorm is reset in full,
    affine weight 1, bias 0 AND running mean 0, variance 1, i.e. as freshly built: trained
    running statistics would keep trained information in a "randomised" layer. Parameters held
    directly by a module without reset_parameters get N(0, sd of their trained values, or 0.02).
    Initialisation is deterministic per (seed, module name), so a module gets the same random
    values whether it is randomised alone, in a cascade, or with "all"; the global torch RNG is
    left untouched. The copy keeps the original's train/eval mode.
    """
    clone = copy.deepcopy(model)
    modules = dict(clone.named_modules())
    targets = [""] if layers == "all" else list(layers)
    unknown = [name for name in targets if name not in modules]
    if unknown:
        raise ValueError(f"unknown layer names {unknown}; valid: cascading_layer_names(model) = "
                         f"{cascading_layer_names(model)}")
    done = set()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        for target in targets:
            for name, module in modules[target].named_modules(prefix=target):
                if id(module) in done:
                    continue
                done.add(id(module))
                torch.manual_seed(_module_seed(seed, name))
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
                    continue
                for p in module.parameters(recurse=False):  # e.g. a bare nn.Parameter
                    sd = float(p.std()) if p.numel() > 1 else 0.0
                    p.normal_(0.0, sd if sd > 0 else 0.02)
    return clone


def spearman_per_sample(a, b):
    """Spearman rank correlation of a[i] and b[i] over all their values, per sample i: (N,).

    Ranks with average ties (scipy.stats.rankdata), then Pearson of the ranks: the same value as
    scipy.stats.spearmanr. NaN where either map is constant (no ranking to compare).
    """
    a = np.asarray(a, dtype=float).reshape(len(a), -1)
    b = np.asarray(b, dtype=float).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {a.shape} vs {b.shape}")
    ra = rankdata(a, axis=1) - (a.shape[1] + 1) / 2
    rb = rankdata(b, axis=1) - (b.shape[1] + 1) / 2
    denominator = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(1) / denominator, np.nan)


def smoothgrad_saliency_fn(num_samples=10, noise_level=0.1, seed=0, chunk_size=None):
    """saliency_fn(model, x, y) running lvr.explain.smoothgrad.smoothgrad with the same noise on
    every call.

    Re-seeding per call makes the trained and randomised maps share their noise, so their
    difference comes from the model alone.
    """

    def saliency_fn(model, x, y):
        generator = torch.Generator().manual_seed(seed)
        return smoothgrad(model, torch.as_tensor(x), torch.as_tensor(y), num_samples,
                          noise_level, generator=generator, chunk_size=chunk_size)
    return saliency_fn


def sanity_check(model, x, y, saliency_fn, seed=0, threshold=0.5, cascading=True, layers=None,
                 progress=False):
    """Model parameter randomisation test (Adebayo et al. 2018).

    For each beat, the Spearman rank correlation over all lead x time values between
    ``saliency_fn(model, x, y)`` and the same map of a randomised copy (maps used as given:
    SmoothGrad's are already absolute). Per-sample correlations are averaged (NaN ones, from a
    constant map, skipped and counted; if all are NaN the mean is NaN and the flag False).
    Per sample, not pooled over beats: pooling would let differences between beats (one beat
    with larger gradients everywhere) drive the correlation.

    Returns a dict: "sanity_spearman" (full randomisation: every parameter), its "_sd",
    "sanity_cascading" (when `cascading`): [{"layers_randomised": name, "spearman": mean}] where
    stage i randomises the first i+1 names of `layers` (default cascading_layer_names: head
    first), "sanity_flag": sanity_spearman >= `threshold` (True: the explanation barely changes
    when the model is destroyed, so it does not explain the model; 0.5 by default, a "strong"
    rank correlation), "sanity_threshold", "sanity_undefined" (beats with a constant map) and
    "sample_count". `model` must be in eval mode; it is never modified. `progress`: a progress
    bar over the maps computed (the trained model's, then one per randomised copy).
    """
    check_eval_mode(model)
    names = ((cascading_layer_names(model) if layers is None else list(layers)) if cascading
             else [])
    bar = progress_bar(total=2 + len(names), desc="sanity check", unit="map",
                       show=bool(progress))

    def maps_of(network):
        maps = np.asarray(saliency_fn(network, x, y))
        bar.update()
        return maps

    def mean_similarity(randomised):
        values = spearman_per_sample(trained, maps_of(randomised))
        return values, (float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"))

    with bar:
        trained = maps_of(model)
        full, full_mean = mean_similarity(randomized_copy(model, "all", seed))
        stages = [{"layers_randomised": name,
                   "spearman": mean_similarity(randomized_copy(model, names[:i + 1], seed))[1]}
                  for i, name in enumerate(names)]
    finite = full[np.isfinite(full)]
    result = {"sanity_spearman": full_mean,
              "sanity_spearman_sd": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
              "sanity_flag": bool(full_mean >= threshold), "sanity_threshold": float(threshold),
              "sanity_undefined": int(np.isnan(full).sum()), "sample_count": int(len(trained))}
    if cascading:
        result["sanity_cascading"] = stages
    return result


# ----------------------------------------------------------------------------- deletion

def deletion_test(model, x, y, lead_importance, max_k=6, random_draws=10, seed=0, baseline=0.0,
                  batch_size=256, tie_tolerance=1e-6, progress=False):
    """Lead deletion: the true-class probability as a beat's most important leads are removed.

    For each beat and k = 1..max_k, its k leads of highest `lead_importance` (its own ranking,
    ties broken by lead order) are set to `baseline` and the model's probability of the true
    label is recorded. `baseline`: a number (0 = the lead's own mean, in standardised units),
    an array broadcastable to (C, T) (e.g. a mean beat), or (N, C, T) (one per beat). A
    baseline is only neutral if the model does not read it as evidence: a flat lead looks
    like a flattened T wave, the LVR sign of the demo cohort. The random reference
    takes, per draw, a uniformly random ordering of ALL leads and removes its first k (the top
    leads are not excluded: the reference is "an explanation that ranks leads at random", and
    leaving out the top leads would bias it towards harmless leads); curves are averaged over
    `random_draws` draws with a fixed numpy generator (`seed`). k = 0 is the intact beat.

    Per beat the area under the probability-vs-k curve is the trapezoid over k = 0..max_k
    divided by max_k (in [0, 1]). Removing the top leads "hurts more" when its area is smaller
    than the random area by more than `tie_tolerance`; within the tolerance it is a tie (0.5).
    deletion_win_rate is the mean over beats of win = 1, tie = 0.5, loss = 0: a model that
    ignores its input scores exactly 0.5.

    Returns a dict: "deletion_curve" {"k", "top_mean", "random_mean", "top_sd", "random_sd"}
    (mean and sample sd over beats; random per beat is its mean over draws),
    "deletion_auc_top", "deletion_auc_random" (means over beats), "deletion_win_rate",
    "auc_top_per_sample", "auc_random_per_sample", "max_k", "random_draws", "sample_count".
    All forward passes run batched under torch.inference_mode; `model` must be in eval mode.
    `progress`: a progress bar over the batches of beats with leads removed.
    """
    check_eval_mode(model)
    x = torch.as_tensor(x).detach().cpu().float()
    y = torch.as_tensor(y).detach().cpu().long().reshape(-1)
    importance = np.asarray(lead_importance, dtype=float)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (N, C, T), got {tuple(x.shape)}")
    n, channels, _ = x.shape
    if y.shape[0] != n or importance.shape != (n, channels):
        raise ValueError(f"y must have shape ({n},) and lead_importance ({n}, {channels}); got "
                         f"{tuple(y.shape)} and {importance.shape}")
    if not 1 <= max_k <= channels or random_draws < 1:
        raise ValueError(f"max_k must be in 1..{channels} and random_draws >= 1, got {max_k} "
                         f"and {random_draws}")
    top_order = np.argsort(-importance, axis=1, kind="stable")                   # (N, C)
    rng = np.random.default_rng(seed)
    random_order = rng.permuted(np.broadcast_to(np.arange(channels), (n, random_draws, channels)),
                                axis=2)                                           # (N, R, C)
    orders = np.concatenate([top_order[:, None], random_order], axis=1)          # (N, 1+R, C)
    baseline = torch.as_tensor(baseline).detach().cpu().float()
    per_beat_baseline = baseline.ndim == 3
    if per_beat_baseline and tuple(baseline.shape) != tuple(x.shape):
        raise ValueError(f"a per-beat baseline must have the shape of x {tuple(x.shape)}, got "
                         f"{tuple(baseline.shape)}")

    # Variant v of beat i removes orders[i, j, :k]; built chunk by chunk to bound memory.
    sample, draw, k_removed = np.meshgrid(np.arange(n), np.arange(1 + random_draws),
                                          np.arange(1, max_k + 1), indexing="ij")
    sample, draw, k_removed = sample.ravel(), draw.ravel(), k_removed.ravel()
    ranks = np.empty_like(orders)
    np.put_along_axis(ranks, orders, np.arange(channels)[None, None], axis=2)   # lead -> rank
    probs = np.empty(len(sample))
    for start in progress_bar(range(0, len(sample), batch_size), desc="deletion test",
                              unit="batch", show=bool(progress)):
        part = slice(start, start + batch_size)
        removed = torch.as_tensor(ranks[sample[part], draw[part]] < k_removed[part, None])
        fill = baseline[sample[part]] if per_beat_baseline else baseline
        xb = torch.where(removed[:, :, None], fill, x[sample[part]])
        probs[part] = true_class_probability(model, xb, y[sample[part]], batch_size)
    intact = true_class_probability(model, x, y, batch_size)
    curves = np.empty((n, 1 + random_draws, max_k + 1))
    curves[:, :, 0] = intact[:, None]
    curves[sample, draw, k_removed] = probs
    top_curve, random_curve = curves[:, 0], curves[:, 1:].mean(axis=1)
    auc_top = np.trapezoid(top_curve, axis=1) / max_k
    auc_random = np.trapezoid(random_curve, axis=1) / max_k
    difference = auc_random - auc_top
    wins = np.where(np.abs(difference) <= tie_tolerance, 0.5, (difference > 0).astype(float))

    def sd(values):
        return values.std(axis=0, ddof=1) if n > 1 else np.zeros(values.shape[1])
    return {
        "deletion_curve": {"k": list(range(max_k + 1)),
                           "top_mean": top_curve.mean(0).tolist(),
                           "random_mean": random_curve.mean(0).tolist(),
                           "top_sd": sd(top_curve).tolist(),
                           "random_sd": sd(random_curve).tolist()},
        "deletion_auc_top": float(auc_top.mean()), "deletion_auc_random": float(auc_random.mean()),
        "deletion_win_rate": float(wins.mean()),
        "auc_top_per_sample": auc_top.tolist(), "auc_random_per_sample": auc_random.tolist(),
        "max_k": int(max_k), "random_draws": int(random_draws), "sample_count": int(n)}


# ----------------------------------------------------------------------------- localisation

def truth_mask(lead_names, true_leads, window_ms, fs, length):
    """(leads, T) boolean mask of the true leads x the true time window (ms from window start)."""
    mask = np.zeros((len(lead_names), length), dtype=bool)
    start = max(0, int(round(window_ms[0] * fs / 1000)))
    end = min(length, int(round(window_ms[1] * fs / 1000)))
    mask[[list(lead_names).index(lead) for lead in true_leads], start:end] = True
    return mask


def relevance_mass_accuracy(maps, mask):
    """Per beat: the share of the map's total inside the mask (Arras et al. 2022)."""
    maps = np.asarray(maps, dtype=float)
    total = maps.sum(axis=(1, 2))
    inside = (maps * mask).sum(axis=(1, 2))
    return np.divide(inside, total, out=np.full(len(maps), np.nan), where=total > 0)


def relevance_rank_accuracy(maps, mask):
    """Per beat: the share of the map's |mask| highest points that lie inside the mask
    (Arras et al. 2022). Ties at the cut-off are broken by position (first come first)."""
    flat = np.asarray(maps, dtype=float).reshape(len(maps), -1)
    k = int(mask.sum())
    top = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    return mask.ravel()[top].mean(axis=1)


def localisation(maps, mask, patient_ids):
    """Mass and rank accuracy of the maps, as the mean over patients of each patient's mean,
    with their chance level: the share of the beat the mask covers (a uniform map's mass
    accuracy and a random map's expected rank accuracy)."""
    chunks = range(0, len(maps), LOCALISATION_CHUNK)   # float64 copies of a chunk at a time
    mass = np.concatenate([relevance_mass_accuracy(maps[s:s + LOCALISATION_CHUNK], mask)
                           for s in chunks] or [np.zeros(0)])
    rank = np.concatenate([relevance_rank_accuracy(maps[s:s + LOCALISATION_CHUNK], mask)
                           for s in chunks] or [np.zeros(0)])
    patients, mass = patient_means(np.nan_to_num(mass), patient_ids)
    _, rank = patient_means(rank, patient_ids)
    chance, mass, rank = float(mask.mean()), float(mass.mean()), float(rank.mean())
    return {"mass_accuracy": mass, "rank_accuracy": rank, "chance": chance,
            "mass_vs_chance": mass / chance, "rank_vs_chance": rank / chance,
            "beats": int(len(maps)), "patients": int(len(patients))}
