"""Checks of the SmoothGrad explanations: wave-level importance, randomisation sanity check and
lead-deletion test. Pure functions: they return numbers; the script prints and writes them.

1. Wave-level importance. Each beat is cut into P, PR, QRS, ST and T segments (neurokit2's
   wavelet delineator on one lead, with a clearly reported fixed-interval fallback), and each
   lead's saliency is split into the share that falls in each segment.
2. Model parameter randomisation test (Adebayo et al. 2018, "Sanity checks for saliency maps",
   NeurIPS; Quantus' ModelParameterRandomisation): Spearman rank correlation between the map of
   the trained model and the map of a copy whose parameters are re-initialised, cascading from
   the head down to the input. A map that barely changes does not explain the model.
3. Deletion test (pixel flipping / region perturbation, Bach et al. 2015; Samek et al. 2017),
   at lead level: replace a beat's k most important leads by a baseline and follow the model's
   probability of the true class, against k leads taken in a random order.
"""
import copy
import math
import warnings
import zlib

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from saliency import _check_eval_mode
from saliency_figures import r_peak_index

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
WAVES = ("P", "PR", "QRS", "ST", "T")
BOUNDARIES = ("P_on", "P_off", "QRS_on", "QRS_off", "T_on", "T_off")
# Standard intervals around the R peak (ms), used when delineation fails: P -200..-120,
# PR -120..-40, QRS -40..+60, ST +60..+160, T +160..+420 (a normal beat at 60-100 bpm).
FALLBACK_MS = {"P_on": -200, "P_off": -120, "QRS_on": -40, "QRS_off": 60, "T_on": 160,
               "T_off": 420}
# A delineated boundary outside these generous ranges (ms from R) is treated as not found.
PLAUSIBLE_MS = {"P_on": (-350, -60), "P_off": (-250, -20), "QRS_on": (-120, -8),
                "QRS_off": (20, 160), "T_on": (40, 450), "T_off": (150, 700)}
NEUROKIT_KEYS = {"P_on": "ECG_P_Onsets", "P_off": "ECG_P_Offsets", "QRS_on": "ECG_R_Onsets",
                 "QRS_off": "ECG_R_Offsets", "T_on": "ECG_T_Onsets", "T_off": "ECG_T_Offsets"}
MIN_QRS_TO_NOISE = 10.0   # QRS peak-to-peak over high-frequency noise sd; below: no QRS found
NEUROKIT_MIN_S = 4.0      # ecg_delineate (via ecg_segment) refuses signals shorter than 4 s
DELINEATION_LEADS = ("II", "V2", "V5")  # frontal-inferior, anterior, lateral


# ----------------------------------------------------------------------------- wave segments

def _detrended(signal, fs):
    """`signal` minus the straight line through its first and last 10 ms: both ends near 0,
    so beats can be laid end to end without a step (baseline wander is mostly this line)."""
    edge = max(1, int(0.01 * fs))
    a, b = signal[:edge].mean(), signal[-edge:].mean()
    return signal - (a + (b - a) * np.linspace(0.0, 1.0, len(signal)))


def _qrs_to_noise(signal, r, fs):
    """Peak-to-peak within 50 ms of R over a robust sd of the sample-to-sample noise."""
    half = max(1, int(0.05 * fs))
    qrs = np.ptp(signal[max(0, r - half):r + half + 1])
    noise = 1.4826 * np.median(np.abs(np.diff(signal) - np.median(np.diff(signal)))) / math.sqrt(2)
    if qrs == 0:
        return 0.0
    return float(qrs / noise) if noise > 0 else math.inf


def _neurokit_boundaries(signals, r_peaks, fs):
    """neurokit2 DWT boundaries (n, 6) in samples of each beat (NaN where not found).

    The beats are laid end to end (each detrended, so joints have no step) in one signal with
    one R peak per beat, and ecg_delineate runs once: per call it costs about as much as one
    beat tiled to the 4 s it needs, so one call for all beats is ~5x faster than one per beat.
    The first and last beats are repeated as padding so every beat has neighbours (the P-wave
    search starts 400 ms before R, outside a 1 s window with R at 300 ms) and the signal is at
    least 4 s long. A beat's boundaries depend only on its own samples except the P wave,
    whose search window reaches into the previous beat.
    """
    import neurokit2 as nk
    n, length = signals.shape
    pad = max(1, math.ceil((NEUROKIT_MIN_S * fs / length - n) / 2) + 1)
    order = np.r_[np.zeros(pad, int), np.arange(n), np.full(pad, n - 1)]
    signal = np.concatenate([signals[i] for i in order])
    rpeaks = np.arange(len(order)) * length + np.asarray(r_peaks)[order]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, info = nk.ecg_delineate(signal, rpeaks=rpeaks, sampling_rate=fs, method="dwt")
    found = np.full((n, len(BOUNDARIES)), np.nan)
    offsets = np.arange(pad, pad + n) * length
    for j, name in enumerate(BOUNDARIES):
        values = np.asarray(info[NEUROKIT_KEYS[name]], dtype=float)[pad:pad + n]
        found[:, j] = values - offsets
    return found


def _plausible(found, r_peaks, fs):
    """`found` (n, 6) with boundaries outside PLAUSIBLE_MS around each R peak set to NaN."""
    found = np.array(found, dtype=float)
    for j, name in enumerate(BOUNDARIES):
        lo, hi = PLAUSIBLE_MS[name]
        with np.errstate(invalid="ignore"):
            ms = (found[:, j] - r_peaks) / fs * 1000
            found[~((ms >= lo) & (ms <= hi)), j] = np.nan
    return found


def _segments_from_boundaries(found, r, fs, length, delineated):
    """Segment dict from boundaries (samples, NaN = missing): missing ones filled from
    FALLBACK_MS, then forced into the order P_on <= ... <= T_off and clipped to the window."""
    filled = [name for name, value in zip(BOUNDARIES, found) if not np.isfinite(value)]
    boundaries = [int(round(value)) if np.isfinite(value)
                  else r + int(round(FALLBACK_MS[name] * fs / 1000))
                  for name, value in zip(BOUNDARIES, found)]
    boundaries = np.clip(np.maximum.accumulate(boundaries), 0, length)
    if not delineated or len(filled) == len(BOUNDARIES):
        method, filled = "fallback", list(BOUNDARIES)
    else:
        method = "neurokit2-dwt+fallback" if filled else "neurokit2-dwt"
    segments = {wave: (int(boundaries[i]), int(boundaries[i + 1])) for i, wave in enumerate(WAVES)}
    segments.update(method=method, fallback_boundaries=filled, r_peak=int(r))
    return segments


def beat_segments_batch(beats, fs, r_peak_samples=None, leads=DELINEATION_LEADS,
                        lead_names=LEADS, progress=False):
    """Wave segments of many beats at once; see :func:`beat_segments` (one dict per beat).

    beats: (N, C, T), preferably raw in mV (neurokit2's heuristics mix amplitude and time, so
    standardised beats give slightly different boundaries). r_peak_samples: (N,) R-peak
    indices, or None to find them with saliency_figures.r_peak_index. One neurokit2 call per
    delineation lead for all beats that show a QRS in it; if a call fails, each beat is tried
    alone, and a beat that still fails in every lead falls back. `progress`: a progress bar
    over the leads.
    """
    beats = np.asarray(beats, dtype=float)
    if beats.ndim != 3:
        raise ValueError(f"beats must have shape (N, C, T), got {beats.shape}")
    lead_names = list(lead_names)
    if len(lead_names) != beats.shape[1]:
        raise ValueError(f"lead_names has {len(lead_names)} names for {beats.shape[1]} leads")
    leads = lead_names if leads == "all" else list(leads)
    missing = [lead for lead in leads if lead not in lead_names]
    if missing or not leads:
        raise ValueError(f"leads {missing or leads} must be among lead_names {lead_names}")
    n, _, length = beats.shape
    if r_peak_samples is None:
        r_peaks = np.array([r_peak_index(beat, fs) for beat in beats], dtype=int)
    else:
        r_peaks = np.asarray(r_peak_samples, dtype=int).reshape(-1)
        if r_peaks.shape[0] != n or (r_peaks < 0).any() or (r_peaks >= length).any():
            raise ValueError(f"r_peak_samples must hold {n} indices in [0, {length}), got "
                             f"{r_peak_samples}")
    per_lead = np.full((len(leads), n, len(BOUNDARIES)), np.nan)
    delineated = np.zeros(n, dtype=bool)
    bar = tqdm(leads, desc="wave delineation", unit="lead", dynamic_ncols=True,
               disable=None if progress else True)
    for row, lead in enumerate(bar):
        signals = np.stack([_detrended(b, fs) for b in beats[:, lead_names.index(lead)]])
        usable = np.array([_qrs_to_noise(s, r, fs) >= MIN_QRS_TO_NOISE
                           for s, r in zip(signals, r_peaks)], dtype=bool)
        index = np.flatnonzero(usable)
        if index.size == 0:
            continue
        try:
            per_lead[row, index] = _neurokit_boundaries(signals[index], r_peaks[index], fs)
        except Exception:  # noqa: BLE001 - neurokit2 raises many types; retry beat by beat
            for i in index:
                try:
                    per_lead[row, i] = _neurokit_boundaries(signals[i:i + 1], r_peaks[i:i + 1],
                                                            fs)[0]
                except Exception:  # noqa: BLE001
                    usable[i] = False
        per_lead[row] = _plausible(per_lead[row], r_peaks, fs)
        delineated |= usable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN columns: median stays NaN
        found = np.nanmedian(per_lead, axis=0)
    return [_segments_from_boundaries(found[i], r_peaks[i], fs, length, delineated[i])
            for i in range(n)]


def beat_segments(beat, fs, r_peak_sample=None, lead_names=LEADS, leads=DELINEATION_LEADS):
    """P, PR, QRS, ST and T segments of one beat (C, T) as (start, end) samples, end exclusive.

    Each of `leads` (default II, V2, V5: three near-orthogonal directions, frontal-inferior,
    anterior and lateral; "all" for every lead, 4x slower) is detrended and delineated with
    neurokit2's wavelet method (``ecg_delineate(method="dwt")``; it needs 4 s of signal, so the
    beat is laid end to end with copies of itself). A boundary outside PLAUSIBLE_MS around R
    counts as not found; each boundary is the median over the leads that found it (on the demo
    cohort lead II alone put the T segment on the T peak in 69% of beats, the median of
    II, V2, V5 in 96%, of all 12 leads in 99%; the saliency script uses all 12). Segments are
    cut at the boundaries
    P onset | P offset | QRS onset | QRS offset | T onset | T offset:
    P = [P_on, P_off), PR = [P_off, QRS_on), QRS = [QRS_on, QRS_off), ST = [QRS_off, T_on),
    T = [T_on, T_off); they are ordered, contiguous and never overlap (a boundary earlier than
    the one before it is moved up to it, which may leave a segment empty). Samples before P_on
    and after T_off belong to no wave.

    Fallback: a boundary no lead found is replaced by the standard interval of FALLBACK_MS
    (P -200..-120 ms, PR -120..-40, QRS -40..+60, ST +60..+160, T +160..+420 from R), clipped
    to the window. When no lead shows a QRS (peak-to-peak within 50 ms of R under
    MIN_QRS_TO_NOISE times the sample-to-sample noise sd: a flat or noise-only beat), neurokit2
    fails, or no boundary is found, every boundary comes from the standard intervals.

    Returns a dict: the five waves -> (start, end); "method": "neurokit2-dwt" (all six
    boundaries delineated), "neurokit2-dwt+fallback" (some filled in) or "fallback";
    "fallback_boundaries": the names of the filled-in boundaries; "r_peak": the R index used
    (r_peak_sample, or saliency_figures.r_peak_index when None). Only the five wave keys are
    (start, end) pairs: pass ``{w: seg[w] for w in WAVES}`` to code that expects only spans.
    """
    beat = np.asarray(beat)
    if beat.ndim != 2:
        raise ValueError(f"beat must have shape (C, T), got {beat.shape}")
    peaks = None if r_peak_sample is None else [int(r_peak_sample)]
    return beat_segments_batch(beat[None], fs, peaks, leads=leads, lead_names=lead_names)[0]


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
    from scipy.stats import rankdata
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
    """saliency_fn(model, x, y) running saliency.smoothgrad with the same noise on every call.

    Re-seeding per call makes the trained and randomised maps share their noise, so their
    difference comes from the model alone.
    """
    from saliency import smoothgrad

    def saliency_fn(model, x, y):
        generator = torch.Generator().manual_seed(seed)
        return smoothgrad(model, torch.as_tensor(x), torch.as_tensor(y), num_samples,
                          noise_level, generator=generator, chunk_size=chunk_size)
    return saliency_fn


def sanity_check(model, x, y, saliency_fn, seed=0, threshold=0.5, cascading=True, layers=None):
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
    "sample_count". `model` must be in eval mode; it is never modified.
    """
    _check_eval_mode(model)
    trained = np.asarray(saliency_fn(model, x, y))

    def mean_similarity(randomised):
        values = spearman_per_sample(trained, np.asarray(saliency_fn(randomised, x, y)))
        return values, (float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"))

    full, full_mean = mean_similarity(randomized_copy(model, "all", seed))
    finite = full[np.isfinite(full)]
    result = {"sanity_spearman": full_mean,
              "sanity_spearman_sd": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
              "sanity_flag": bool(full_mean >= threshold), "sanity_threshold": float(threshold),
              "sanity_undefined": int(np.isnan(full).sum()), "sample_count": int(len(trained))}
    if cascading:
        names = cascading_layer_names(model) if layers is None else list(layers)
        result["sanity_cascading"] = [
            {"layers_randomised": name,
             "spearman": mean_similarity(randomized_copy(model, names[:i + 1], seed))[1]}
            for i, name in enumerate(names)]
    return result


# ----------------------------------------------------------------------------- deletion

def _true_class_probability(model, x, y, batch_size):
    device = next(model.parameters(), torch.empty(0)).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size].to(device)).float()
            prob = torch.softmax(logits, dim=1)
            out.append(prob.gather(1, y[start:start + batch_size, None].to(device))[:, 0].cpu())
    return torch.cat(out).numpy().astype(float) if out else np.zeros(0)


def deletion_test(model, x, y, lead_importance, max_k=6, random_draws=10, seed=0, baseline=0.0,
                  batch_size=256, tie_tolerance=1e-6):
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
    """
    _check_eval_mode(model)
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
    for start in range(0, len(sample), batch_size):
        part = slice(start, start + batch_size)
        removed = torch.as_tensor(ranks[sample[part], draw[part]] < k_removed[part, None])
        fill = baseline[sample[part]] if per_beat_baseline else baseline
        xb = torch.where(removed[:, :, None], fill, x[sample[part]])
        probs[part] = _true_class_probability(model, xb, y[sample[part]], batch_size)
    intact = _true_class_probability(model, x, y, batch_size)
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
