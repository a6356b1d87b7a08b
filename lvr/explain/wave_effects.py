"""Counterfactual wave-level attribution: how much each lead's P, PR, QRS, ST and T segment
holds the evidence for the model's answer.

For each beat, lead and wave, the segment is replaced by the same segment of a reference beat
drawn from the training patients of the other class, and the effect is the drop in the model's
probability of the beat's true class: effect = P(true | beat) - P(true | beat with that one
segment swapped). Positive: the segment carried evidence for the true class. This asks the
question a cardiologist asks ("would the model still say LVR if this T wave looked normal?")
at the level a cardiologist reads, instead of spreading gradients over samples.

Choices (measured on five ground-truth cohorts: bench/explanation_bench.py --parts=variants;
the script's defaults are mean, r_peak, 10 ms):
- reference: "mean" or "median" of the other class's training beats, or "nearest" (per beat:
  the mean of the NEAREST_K other-class training beats closest to it). "nearest" differs least
  from the beat outside the swapped segment and did best on the demo, but fails where the other
  class holds patients with a milder form of the sign: the beats nearest to an LVR beat are the
  ones that share its sign, and swapping that in removes nothing;
- alignment: "segment" maps the reference's own delineated segment onto the beat's (linear
  time warp: a segment of another duration still swaps wave for wave), "r_peak" shifts the
  reference so the R peaks coincide and takes the same samples;
- blend_ms: a raised-cosine cross-fade of this width centred on each segment edge, so the swap
  adds no step that the model could react to instead of to the wave (it changed the effects by
  about 1%).
The swap happens in the recorded units (mV) and the swapped beat is then standardised as every
input is: swapping standardised segments leaks a T-wave change into the QRS (the T wave changes
the lead's mean and sd, so the standardised QRS of an LVR beat differs from a non-LVR one's),
and on the demo it ranked the true T cells below QRS cells.
"""
import numpy as np
import torch

from lvr.progress import progress_bar
from lvr.choices import WAVE_ALIGNMENTS, WAVE_REFERENCES
from lvr.data.beats import StandardisedBeats
from lvr.explain.patient_stats import bootstrap_patient_means, patient_means
from lvr.explain.predict import true_class_probability
from lvr.leads import WAVES

NEAREST_K = 10


def reference_beats(x, pool, method, chunk=64):
    """Reference beat for every beat of `x` (N, leads, T) from `pool` (M, leads, T); "nearest"
    is by Euclidean distance over all leads and samples."""
    if len(pool) == 0:
        raise ValueError("the reference pool is empty: no training beats of the other class")
    if method == "mean":
        return np.broadcast_to(pool.mean(axis=0, dtype=np.float64).astype(np.float32), x.shape)
    if method == "median":
        return np.broadcast_to(np.median(pool, axis=0).astype(np.float32), x.shape)
    if method != "nearest":
        raise ValueError(f"unknown reference {method!r}; use one of {', '.join(WAVE_REFERENCES)}")
    k = min(NEAREST_K, len(pool))
    flat_pool = pool.reshape(len(pool), -1).astype(np.float32)
    pool_norms = (flat_pool ** 2).sum(axis=1)
    out = np.empty(x.shape, dtype=np.float32)
    for start in range(0, len(x), chunk):
        flat = x[start:start + chunk].reshape(-1, flat_pool.shape[1]).astype(np.float32)
        distance = pool_norms[None, :] - 2 * flat @ flat_pool.T
        nearest = np.argpartition(distance, k - 1, axis=1)[:, :k]
        out[start:start + chunk] = pool[nearest].mean(axis=1)
    return out


def source_positions(length, span, reference_span, alignment, shift=0):
    """Where each sample of the beat's time axis is read in the reference (float positions).

    "segment": the linear map taking `span` onto `reference_span`, extended beyond its edges
    (the blending margins read the reference's neighbouring samples); "r_peak": t + shift.
    """
    t = np.arange(length, dtype=float)
    if alignment == "r_peak":
        return t + shift
    (a, b), (ra, rb) = span, reference_span
    if b - a <= 0 or rb - ra <= 0:
        return t + (ra - a)
    return ra + (t - a) * (rb - ra) / (b - a)


def blend_weights(length, span, blend):
    """1 inside [start, end), 0 outside, raised-cosine ramps of `blend` samples across each edge."""
    t = np.arange(length, dtype=float) + 0.5
    a, b = span
    if b <= a:
        return np.zeros(length)
    if blend <= 0:
        return ((t > a) & (t < b)).astype(float)
    rise = np.clip((t - (a - blend / 2)) / blend, 0, 1)
    fall = np.clip(((b + blend / 2) - t) / blend, 0, 1)
    ramp = lambda u: 0.5 - 0.5 * np.cos(np.pi * u)  # noqa: E731
    return ramp(rise) * ramp(fall)


def swapped_beats(beat, reference, segments, reference_segments, alignment, blend, shift):
    """The beat with one (lead, wave) segment swapped for the reference's: (leads*5, leads, T),
    in the order lead 0 P, lead 0 PR, ..., lead 11 T."""
    leads, length = beat.shape
    out = np.repeat(beat[None], leads * len(WAVES), axis=0)
    for w, wave in enumerate(WAVES):
        weights = blend_weights(length, segments[wave], blend)
        if not weights.any():
            continue
        where = np.clip(source_positions(length, segments[wave], reference_segments[wave],
                                         alignment, shift), 0, length - 1)
        lower = np.floor(where).astype(int)
        upper = np.minimum(lower + 1, length - 1)
        frac = where - lower
        source = reference[:, lower] * (1 - frac) + reference[:, upper] * frac   # (leads, T)
        for lead in range(leads):
            row = lead * len(WAVES) + w
            out[row, lead] = beat[lead] + weights * (source[lead] - beat[lead])
    return out


def model_input(x, normalisation):
    """Beats x (numpy) as the model reads them, batch by batch: normalised as they are read
    (lvr.choices.NORMALISATIONS), or as they are (None: x is already the model's input)."""
    if normalisation is None:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return StandardisedBeats(x, normalisation=normalisation)


def wave_effects(model, x, y, segments, references, reference_segments, alignment="segment",
                 blend=0, r_peaks=None, reference_r_peaks=None, batch_size=256, progress=False,
                 normalisation=None):
    """Effect of swapping each (lead, wave) segment: (N, leads, 5), P(true) before minus after.

    x, references: beats (N, leads, T) in the units the swap happens in; normalisation: how
    they become the model's input (lvr.choices.NORMALISATIONS, e.g. "per_lead" for raw beats;
    None when x is already the input); y: true labels; segments,
    reference_segments: one dict of wave -> (start, end) per beat (lvr.measure.delineation);
    blend: cross-fade width in samples; r_peaks / reference_r_peaks: R indices, needed for
    alignment "r_peak".
    """
    if alignment not in WAVE_ALIGNMENTS:
        raise ValueError(f"unknown alignment {alignment!r}; use one of "
                         f"{', '.join(WAVE_ALIGNMENTS)}")
    y = np.asarray(y, dtype=int)
    n, leads, _ = x.shape
    base = true_class_probability(model, model_input(x, normalisation), y, batch_size)
    effects = np.zeros((n, leads, len(WAVES)))
    for i in progress_bar(range(n), desc="wave effects", unit="beat", show=bool(progress)):
        shift = 0 if r_peaks is None else int(reference_r_peaks[i]) - int(r_peaks[i])
        variants = swapped_beats(x[i], references[i], segments[i], reference_segments[i],
                                 alignment, blend, shift)
        after = true_class_probability(model, model_input(variants, normalisation),
                                       np.full(len(variants), y[i]), batch_size)
        effects[i] = (base[i] - after).reshape(leads, len(WAVES))
    return effects


def wave_effect_rows(effects, patient_ids, lead_names, n_boot=1000, seed=0, shares=None):
    """One row per lead and wave: patient-level mean effect, patient-bootstrap percentile 95% CI
    and rank (1 = largest); `shares` (N, leads, 5), the map's wave shares, adds `map_share`."""
    _, per_patient = patient_means(effects, patient_ids)         # (P, leads, 5)
    mean = per_patient.mean(axis=0)
    boot = bootstrap_patient_means(per_patient.reshape(len(per_patient), -1), n_boot, seed)
    low, high = (np.percentile(boot.reshape((n_boot,) + mean.shape), [2.5, 97.5], axis=0)
                 if n_boot else (np.full(mean.shape, np.nan),) * 2)
    order = np.argsort(-mean.ravel(), kind="stable")
    rank = np.empty(mean.size, dtype=int)
    rank[order] = np.arange(1, mean.size + 1)
    share = None if shares is None else patient_means(shares, patient_ids)[1].mean(axis=0)
    rows = []
    for li, lead in enumerate(lead_names):
        for wi, wave in enumerate(WAVES):
            row = {"lead": lead, "wave": wave, "effect": float(mean[li, wi]),
                   "ci_low": float(low[li, wi]), "ci_high": float(high[li, wi]),
                   "rank": int(rank[li * len(WAVES) + wi])}
            if share is not None:
                row["map_share"] = float(share[li, wi])
            rows.append(row)
    return rows


def true_cell_ranks(rows, true_leads, true_wave):
    """Where the true (lead, wave) cells rank among all cells of one subgroup's rows: the cells
    and their ranks in the same order, best first (ranks[i] is the rank of true_cells[i])."""
    found = sorted((row["rank"], f"{row['lead']}-{true_wave}") for row in rows
                   if row["lead"] in true_leads and row["wave"] == true_wave)
    ranks = [rank for rank, _ in found]
    return {"true_cells": [cell for _, cell in found], "ranks": ranks,
            "all_true_cells_first": bool(ranks) and ranks[-1] == len(ranks),
            "cells": len(rows)}
