"""Wave delineation of single beats: R peak, then P, PR, QRS, ST and T segments per beat.

neurokit2's wavelet delineator runs on each delineation lead (all 12 by default) and each
boundary is the median over the leads that found it; a clearly reported fixed-interval fallback
covers beats it cannot delineate. Used by the explanation checks and drawn on the figures.
"""
import contextlib
import functools
import importlib
import math
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from lvr.progress import progress_bar
from lvr.errors import UserError
from lvr.leads import BOUNDARIES, LEAD_NAMES, WAVES

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
DELINEATION_LEADS = "all"  # or a subset, e.g. ("II", "V2", "V5"): 4x faster, a little less exact
CHUNK_BEATS = 2000         # beats delineated per worker job
CONTEXT_BEATS = 8          # neighbours delineated with a chunk and dropped (segments_in_chunks)


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
    import neurokit2 as nk  # lazy: figure workers import this module (r_peak_index); 1.8 s each
    n, length = signals.shape
    pad = max(1, math.ceil((NEUROKIT_MIN_S * fs / length - n) / 2) + 1)
    order = np.r_[np.zeros(pad, int), np.arange(n), np.full(pad, n - 1)]
    signal = np.concatenate([signals[i] for i in order])
    rpeaks = np.arange(len(order)) * length + np.asarray(r_peaks)[order]
    with warnings.catch_warnings(), numpy_find_closest():
        warnings.simplefilter("ignore")
        _, info = nk.ecg_delineate(signal, rpeaks=rpeaks, sampling_rate=fs, method="dwt")
    found = np.full((n, len(BOUNDARIES)), np.nan)
    offsets = np.arange(pad, pad + n) * length
    for j, name in enumerate(BOUNDARIES):
        values = np.asarray(info[NEUROKIT_KEYS[name]], dtype=float)[pad:pad + n]
        found[:, j] = values - offsets
    return found


@contextlib.contextmanager
def numpy_find_closest():
    """neurokit2's delineation with its nearest-peak search done in numpy.

    neurokit2 (0.2.13) finds each wave's peaks by searching, for every candidate, the closest of
    all the signal's peaks with a pandas Series (misc.find_closest): on beats laid end to end
    that is one pandas operation per peak over every peak, quadratic in the number of beats,
    and it takes nearly all of the delineation's time. `closest_in_numpy` gives the same index
    and value (tests/test_ecg_features.py checks the boundaries are identical), so this swaps
    it in for the duration of one call and puts neurokit2's back afterwards.
    """
    # lazy: neurokit2 loads in 1.8 s; the module, not the function neurokit2.misc exports
    module = importlib.import_module("neurokit2.misc.find_closest")
    peaks = importlib.import_module("neurokit2.signal.signal_findpeaks")
    original, original_bases = module._find_closest_single_pandas, peaks.find_closest
    module._find_closest_single_pandas = closest_in_numpy
    peaks.find_closest = functools.partial(bases_in_numpy, fallback=original_bases)
    try:
        yield
    finally:
        module._find_closest_single_pandas, peaks.find_closest = original, original_bases


def bases_in_numpy(closest_to, list_to_search_in, direction="both", strictly=False,
                   return_index=False, fallback=None):
    """neurokit2's find_closest as its peak finder calls it (each peak's nearest trough
    strictly before or after it, in an increasing list of troughs), by a binary search for all
    peaks at once; any other call goes to `fallback`, neurokit2's own."""
    troughs = np.asarray(list_to_search_in, dtype=float).ravel()
    targets = np.atleast_1d(np.asarray(closest_to, dtype=float))
    if (direction not in ("smaller", "greater") or not strictly or return_index
            or np.isnan(troughs).any() or np.isnan(targets).any()
            or np.any(np.diff(troughs) <= 0) or targets.ndim != 1):
        return fallback(closest_to, list_to_search_in, direction, strictly, return_index)
    if direction == "smaller":
        position = np.searchsorted(troughs, targets, side="left") - 1
        found = position >= 0
    else:
        position = np.searchsorted(troughs, targets, side="right")
        found = position < len(troughs)
    closest = np.where(found, troughs[np.clip(position, 0, max(len(troughs) - 1, 0))]
                       if len(troughs) else np.nan, np.nan)
    return closest[0] if len(closest) == 1 else closest


def closest_in_numpy(x, vals, direction="both", strictly=False):
    """(index label, value) of the element of the Series `vals` closest to `x` in `direction`
    ("both"/"all", "smaller"/"below", "greater"/"above"; `strictly` excludes x itself), the
    first one on a tie, NaN skipped: what neurokit2's pandas version returns, and the same
    errors where none qualifies (ValueError for no value or none in `direction`, KeyError when
    values exist but no distance is a number), without a pandas operation per call."""
    values = vals.to_numpy(dtype=float)
    distance = np.abs(values - x)
    if direction in ("both", "all"):
        allowed = ~np.isnan(distance)
        if len(values) and not allowed.any():
            raise KeyError("no distance is a number")
    elif direction in ("smaller", "below"):
        allowed = values < x if strictly else values <= x
    elif direction in ("greater", "above"):
        allowed = values > x if strictly else values >= x
    else:
        raise ValueError(f"unknown direction {direction!r}")
    candidates = np.flatnonzero(allowed)
    if candidates.size == 0:
        raise ValueError("no value in that direction")
    position = candidates[np.argmin(distance[candidates])]
    return vals.index[position], vals.iloc[position]


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
    filled = [name for name, value in zip(BOUNDARIES, found, strict=True) if not np.isfinite(value)]
    boundaries = [int(round(value)) if np.isfinite(value)
                  else r + int(round(FALLBACK_MS[name] * fs / 1000))
                  for name, value in zip(BOUNDARIES, found, strict=True)]
    boundaries = np.clip(np.maximum.accumulate(boundaries), 0, length)
    if not delineated or len(filled) == len(BOUNDARIES):
        method, filled = "fallback", list(BOUNDARIES)
    else:
        method = "neurokit2-dwt+fallback" if filled else "neurokit2-dwt"
    segments = {wave: (int(boundaries[i]), int(boundaries[i + 1])) for i, wave in enumerate(WAVES)}
    segments.update(method=method, fallback_boundaries=filled, r_peak=int(r))
    return segments


def delineation_lead_names(option_text, cohort_leads=None):
    """The DELINEATION_LEADS option as `leads` of beat_segments_batch: "all", or the list of
    the comma-separated lead names. With `cohort_leads`, a UserError unless every named lead
    is one of them (lvr.config checks only that they are lead names)."""
    if option_text.strip().lower() == "all":
        return "all"
    names = [name.strip() for name in option_text.split(",") if name.strip()]
    if cohort_leads is not None:
        unknown = [name for name in names if name not in cohort_leads]
        if unknown or not names:
            raise UserError(f"DELINEATION_LEADS={option_text!r}: "
                            f"{', '.join(unknown) or 'no lead'} is not a lead of this cohort; "
                            f"use all or some of {', '.join(cohort_leads)}")
    return names


def beat_segments_batch(beats, fs, r_peak_samples=None, leads=DELINEATION_LEADS,
                        lead_names=LEAD_NAMES, progress=False):
    """Wave segments of many beats at once; see :func:`beat_segments` (one dict per beat).

    beats: (N, C, T), preferably raw in mV (neurokit2's heuristics mix amplitude and time, so
    standardised beats give slightly different boundaries). r_peak_samples: (N,) R-peak
    indices, or None to find them with r_peak_index. One neurokit2 call per
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
    bar = progress_bar(leads, desc="wave delineation", unit="lead", show=bool(progress))
    for row, lead in enumerate(bar):
        signals = np.stack([_detrended(b, fs) for b in beats[:, lead_names.index(lead)]])
        usable = np.array([_qrs_to_noise(s, r, fs) >= MIN_QRS_TO_NOISE
                           for s, r in zip(signals, r_peaks, strict=True)], dtype=bool)
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


def segments_in_chunks(beats, index, fs, workers=1, chunk=CHUNK_BEATS, r_peak_samples=None,
                       progress=None, **options):
    """beat_segments_batch of beats[index] (a mapped BeatFiles or an array), CHUNK_BEATS at a
    time in `workers` processes, each reading only its own chunk.

    A beat's P-wave search reaches into the beat laid before it, so each chunk is delineated
    with up to CONTEXT_BEATS neighbours on either side, whose segments are dropped; a set of
    beats no larger than `chunk` is one call, exactly as beat_segments_batch. At most
    `workers` + 1 chunks are in flight. r_peak_samples: None (found by r_peak_index) or one R
    index per beat of `index`, passed on chunk by chunk. progress: None, or the description of
    a progress bar over the beats, advanced as chunks finish.
    """
    index = np.asarray(index)
    peaks = None if r_peak_samples is None else np.asarray(r_peak_samples, dtype=int).reshape(-1)
    if peaks is not None and len(peaks) != len(index):
        raise ValueError(f"r_peak_samples must hold {len(index)} indices, got {len(peaks)}")

    def job_at(s):
        lo, hi = max(0, s - CONTEXT_BEATS), s + chunk + CONTEXT_BEATS
        chosen = options if peaks is None else dict(options, r_peak_samples=peaks[lo:hi])
        return chunk_job(beats, index[lo:hi], s - lo, min(chunk, len(index) - s), fs, chosen)

    jobs = (job_at(s) for s in range(0, len(index), chunk))
    bar = progress_bar(total=len(index), desc=progress or "", unit="beat",
                       show=bool(progress))
    found = []
    with bar:
        if workers <= 1 or len(index) <= chunk:
            for job in jobs:
                found += chunk_segments(job)
                bar.update(job[3])
            return found
        context = multiprocessing.get_context("spawn")   # no forked copy of the parent's memory
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            pending = []
            for job in jobs:
                pending.append(pool.submit(chunk_segments, job))
                if len(pending) > workers:
                    found += pending.pop(0).result()
                    bar.update(len(found) - bar.n)
            for future in pending:
                found += future.result()
                bar.update(len(found) - bar.n)
    return found


def chunk_job(beats, rows, first, count, fs, options):
    """A job of segments_in_chunks: mapped beats travel as their file paths, an array in memory
    as the chunk's rows only."""
    if isinstance(beats, np.ndarray):
        beats, rows = beats[rows], slice(None)
    return beats, rows, first, count, fs, options


def chunk_segments(job):
    """The segments of one chunk of segments_in_chunks, without its context beats."""
    beats, rows, first, count, fs, options = job
    return beat_segments_batch(beats[rows], fs, **options)[first:first + count]


def beat_segments(beat, fs, r_peak_sample=None, lead_names=LEAD_NAMES, leads=DELINEATION_LEADS):
    """P, PR, QRS, ST and T segments of one beat (C, T) as (start, end) samples, end exclusive.

    Each of `leads` (default all 12; II, V2, V5, three near-orthogonal directions, is 4x
    faster) is detrended and delineated with
    neurokit2's wavelet method (``ecg_delineate(method="dwt")``; it needs 4 s of signal, so the
    beat is laid end to end with copies of itself). A boundary outside PLAUSIBLE_MS around R
    counts as not found; each boundary is the median over the leads that found it (on the demo
    cohort lead II alone put the T segment on the T peak in 69% of beats, the median of
    II, V2, V5 in 96%, of all 12 leads in 99%). Segments are
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
    (r_peak_sample, or r_peak_index when None). Only the five wave keys are
    (start, end) pairs: pass ``{w: seg[w] for w in WAVES}`` to code that expects only spans.
    """
    beat = np.asarray(beat)
    if beat.ndim != 2:
        raise ValueError(f"beat must have shape (C, T), got {beat.shape}")
    peaks = None if r_peak_sample is None else [int(r_peak_sample)]
    return beat_segments_batch(beat[None], fs, peaks, leads=leads, lead_names=lead_names)[0]


def r_peak_index(beat, fs, expected=None, search_ms=120):
    """Index of the R peak: the QRS is where the summed squared slope of all leads peaks.

    Looked for within `search_ms` of `expected` when the cohort says where R should be,
    otherwise anywhere; then refined to the largest absolute value of the lead with the biggest
    QRS within 30 ms. Works for any R position, unlike a fixed sample window.
    """
    slope = (np.diff(beat, axis=1) ** 2).sum(axis=0)
    width = max(1, int(0.02 * fs))
    energy = np.convolve(slope, np.ones(width) / width, mode="same")
    lo, hi = 0, len(energy)
    if expected is not None:
        half = int(search_ms / 1000 * fs)
        lo, hi = max(0, expected - half), min(len(energy), expected + half)
    centre = lo + int(np.argmax(energy[lo:hi]))
    half = int(0.03 * fs)
    a, b = max(0, centre - half), min(beat.shape[1], centre + half + 1)
    lead = int(np.argmax(np.ptp(beat[:, a:b], axis=1)))
    return a + int(np.argmax(np.abs(beat[lead, a:b])))
