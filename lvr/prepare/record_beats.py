"""One ECG record -> checked, filtered beats (RecordBeats), or RecordRejected with the reason.

The record is read by lvr/prepare/formats.py in any of its formats, its leads put in the order I,
II, III, aVR, aVL, aVF, V1-V6 (III, aVR, aVL, aVF derived from I and II in 8-lead files), converted
to millivolts (the file's stated unit, or UNIT), resampled to FS, band-passed, checked
(amplitudes of another unit, flat, saturated, noisy, implausible heart rate, NaN, too short) and
cut into windows [r - PRE, r + POST) around the R peaks found on DETECTOR_LEAD.
"""
import re
import warnings
import zlib
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import neurokit2 as nk
import numpy as np
from scipy import signal

from lvr.choices import UNITS
from lvr.errors import UserError
from lvr.prepare.formats import RecordRejected, millivolts_per_unit, read_waveform
from lvr.leads import LEAD_BY_KEY, LEAD_NAMES, lead_key


# A lead this many times larger or smaller than the record's median lead, and outside
# PLAUSIBLE_MV, is in another unit: units differ by x1000, leads of one ECG by far less than x100.
LEAD_UNIT_RATIO = 100.0


@dataclass(frozen=True)
class Options:
    """What a worker needs to turn one record into beats: the per-record constants of
    prepare_data.py, lower-cased (checked_options checks them once)."""
    fs: int
    pre: float
    post: float
    beats: str
    bandpass: tuple
    bandpass_order: int
    notch_hz: tuple
    detector: str
    detector_lead: str
    r_refine_s: float
    min_peak_ratio: float
    heart_rate_bpm: tuple
    reject_flat_mv: float
    reject_saturation: float
    reject_noise: float
    seed: int
    unit: str
    plausible_mv: tuple

    @property
    def pre_samples(self):
        return int(round(self.pre * self.fs))

    @property
    def window_samples(self):
        return int(round((self.pre + self.post) * self.fs))


class RecordBeats(NamedTuple):
    beats: np.ndarray  # float32 (n, 12, T), mV
    r_peaks: np.ndarray  # R peak of each beat, sample at FS in the whole record (-1: median beat)
    beat_index: np.ndarray  # position among the record's complete beats (-1: median beat)
    info: dict  # heart rate, counts, measures and notes


# ---------------------------------------------------------------- options

def beat_selection(text):
    """(mode, k) from a BEATS value: all, median, first:K, random:K."""
    word = text.strip().lower()
    if word in ("all", "median"):
        return word, None
    match = re.fullmatch(r"(first|random):(\d+)", word)
    if not match or int(match.group(2)) < 1:
        raise UserError(f"--beats={text!r} is not understood: use all, median, first:K or random:K "
                        f"with K >= 1 (e.g. first:8)")
    return match.group(1), int(match.group(2))


def checked_options(options):
    """`options` (Options as given) with each value checked once, the detector lead by its
    standard name and the band-pass and plausible range as floats."""
    low, high = (float(v) for v in options.bandpass)
    if options.fs <= 0:
        raise UserError(f"--fs must be positive, got {options.fs}")
    if not 0 < low < high < options.fs / 2:
        raise UserError(f"--bandpass={options.bandpass}: need 0 < low < high < FS/2 = "
                        f"{options.fs / 2}")
    if options.pre < 0 or options.post <= 0:
        raise UserError(f"--pre must be >= 0 and --post > 0 (seconds), got {options.pre}, "
                        f"{options.post}")
    rate_low, rate_high = options.heart_rate_bpm
    if not 0 < rate_low < rate_high:
        raise UserError(f"--heart_rate_bpm={options.heart_rate_bpm}: need 0 < low < high")
    lead = LEAD_BY_KEY.get(lead_key(options.detector_lead))
    if lead is None:
        raise UserError(f"--detector_lead={options.detector_lead!r} is not one of "
                        f"{', '.join(LEAD_NAMES)}")
    beat_selection(options.beats)
    if options.unit and millivolts_per_unit(options.unit) is None:
        raise UserError(f"--unit={options.unit!r}: use {', '.join(UNITS)}, or leave it empty to "
                        f"read each file's stated unit")
    plausible = tuple(float(v) for v in options.plausible_mv)
    if not (len(plausible) == 2 and 0 < plausible[0] < plausible[1]):
        raise UserError(f"--plausible_mv={options.plausible_mv}: need 0 < low < high (mV)")
    return Options(**{**asdict(options), "detector_lead": lead, "bandpass": (low, high),
                      "plausible_mv": plausible})


# ---------------------------------------------------------------- one record

def standard_lead_order(sig_names):
    """Column of each standard lead (I ... V6) in `sig_names`, and the names not used.

    Raises RecordRejected naming a missing or doubled lead.
    """
    columns = {}
    ignored = []
    for column, name in enumerate(sig_names):
        lead = LEAD_BY_KEY.get(lead_key(name))
        if lead is None:
            ignored.append(name)
        elif lead in columns:
            raise RecordRejected("duplicate lead", f"lead {lead} appears twice "
                                 f"({sig_names[columns[lead]]!r} and {name!r})")
        else:
            columns[lead] = column
    missing = [lead for lead in LEAD_NAMES if lead not in columns]
    if missing:
        raise RecordRejected("missing lead", f"missing lead {', '.join(missing)} "
                             f"(has: {', '.join(map(str, sig_names))})")
    return [columns[lead] for lead in LEAD_NAMES], ignored


class Millivolts(NamedTuple):
    """A record's 12 leads in mV, and the unit its values were read in."""
    signal: np.ndarray  # (samples, 12), standard lead order
    fs: float
    unit: str  # the unit the values were read in, for messages: "the file's stated mV"
    mv_per_unit: float  # mV per one of that unit
    format: str  # a key of lvr.prepare.formats.FORMAT_NAMES
    notes: list


def millivolt_factors(units, unit_option):
    """(mV per unit of each channel, how the unit was chosen, notes).

    With UNIT set every channel is read in it. Else each channel's stated unit; a stated unit
    that is not known (or none) is read as mV, which only the amplitude check then vouches for.
    """
    if unit_option:
        return (np.full(len(units), millivolts_per_unit(unit_option)), f"--unit={unit_option}",
                [f"values read as {unit_option} (--unit); the file states "
                 f"{', '.join(sorted(set(map(str, units))))}"])
    factors = [millivolts_per_unit(unit) for unit in units]
    unknown = sorted({str(u) for u, f in zip(units, factors, strict=True) if f is None})
    notes = [f"unit(s) {', '.join(repr(u) for u in unknown)} not known: values read as mV "
             f"(checked by the amplitude check)"] if unknown else []
    stated = sorted({str(u) for u in units})
    return (np.array([1.0 if f is None else f for f in factors]),
            f"the file's stated {', '.join(stated) if any(stated) else 'unit (none)'}", notes)


def checked_amplitude(filtered, record, plausible_mv, flat_mv):
    """The record's amplitude in mV: median over leads of the band-passed peak-to-peak.

    Outside `plausible_mv` the record is rejected, naming the unit its values look like: the
    default range is wide enough for any real ECG and far enough from x1000 and x0.001 of it
    that no real ECG read in the wrong one of uV, mV, V falls inside it. A record that fits no
    unit (artefacts of tens of mV in every lead) is rejected for its amplitude. Inside it, a
    lead below `flat_mv` is rejected as flat before the per-lead unit check: a disconnected lead
    is far more common than one lead exported in V, which reads as flat too (the reason says
    both).
    """
    spans = np.ptp(filtered, axis=0)
    amplitude = float(np.median(spans))
    low, high = plausible_mv
    if low <= amplitude <= high:
        if spans.min() < flat_mv:
            j = int(spans.argmin())
            larger = spans[j] * 1000
            raise RecordRejected("flat lead", f"lead {LEAD_NAMES[j]} peak-to-peak "
                                 f"{spans[j]:.3g} mV (limit {flat_mv} mV), the other leads' "
                                 f"median {float(np.median(np.delete(spans, j))):.3g} mV: "
                                 f"disconnected"
                                 + (f", or stored in a unit 1000x larger than the other "
                                    f"leads' ({larger:.3g} mV if so)"
                                    if low <= larger <= high else ""))
        check_each_lead(spans, amplitude, record, plausible_mv)
        return amplitude
    in_unit = amplitude / record.mv_per_unit
    looks = [u for u in UNITS if low <= in_unit * millivolts_per_unit(u) <= high]
    measured = (f"median lead peak-to-peak {in_unit:.4g} in {record.unit}; plausible "
                f"{low:g}-{high:g} mV")
    if looks:
        shown = looks[0].replace("u", "\u00b5")
        raise RecordRejected("unit", f"amplitudes look like {shown} ({measured}); if the file's "
                             f"unit is wrong, set --unit={looks[0]}")
    raise RecordRejected("amplitude", f"implausible in any of {', '.join(UNITS)} ({measured}); "
                         f"check the export's amplitude scale, or the record for artefacts")


def check_each_lead(spans, amplitude, record, plausible_mv):
    """Reject a record with some leads in another unit than the rest (the median lead, which
    checked_amplitude tests, hides up to 5 of 12): a lead outside `plausible_mv`, LEAD_UNIT_RATIO
    or more times off the median lead and plausible in another unit, naming the leads and
    their unit."""
    low, high = plausible_mv
    ratio = spans / max(amplitude, 1e-12)
    in_unit = spans / record.mv_per_unit
    fits_a_unit = np.array([any(low <= v * millivolts_per_unit(u) <= high for u in UNITS)
                            for v in in_unit])     # a flat lead fits none: the flat check's
    off = np.flatnonzero(((spans < low) | (spans > high)) & fits_a_unit
                         & ((ratio >= LEAD_UNIT_RATIO) | (ratio <= 1 / LEAD_UNIT_RATIO)))
    if not len(off):
        return
    in_unit = in_unit[off]
    looks = [u for u in UNITS
             if all(low <= v * millivolts_per_unit(u) <= high for v in in_unit)]
    rest = float(np.median(np.delete(spans, off)))
    leads = ", ".join(LEAD_NAMES[j] for j in off)
    shown = f" they look like {looks[0].replace('u', chr(0xb5))};" if looks else ""
    raise RecordRejected("unit", f"lead(s) {leads} peak-to-peak {in_unit.min():.4g}-"
                         f"{in_unit.max():.4g} in {record.unit}, the other leads' median "
                         f"{rest:.3g} mV (plausible {low:g}-{high:g} mV);{shown} the file's unit "
                         f"or gain of these leads is wrong (--unit applies to every lead): "
                         f"correct the export, or leave the record out")


def resampled(x, fs_in, fs_out):
    """x (samples, leads) resampled from fs_in to fs_out with a rational polyphase filter."""
    ratio = Fraction(fs_out) / Fraction(str(float(fs_in))).limit_denominator(1000)
    if ratio == 1:
        return x
    return signal.resample_poly(x, ratio.numerator, ratio.denominator, axis=0)


def bandpassed(x, fs, band, order, notch_hz=()):
    """x (samples, leads) band-passed with zero phase, after notches at `notch_hz` below fs/2.

    A 40 Hz low-pass alone leaves about a third of a 50 Hz mains hum, enough to hide the QRS
    from a gradient-based detector; the narrow notches (Q 30) remove it.
    """
    for mains in notch_hz:
        if 0 < mains < fs / 2:
            b, a = signal.iirnotch(mains, 30.0, fs=fs)
            x = signal.filtfilt(b, a, x, axis=0)
    sos = signal.butter(order, band, btype="bandpass", fs=fs, output="sos")
    return signal.sosfiltfilt(sos, x, axis=0)


def longest_extreme_runs(x):
    """Per lead, the longest run of samples equal to that lead's minimum or maximum.

    A constant lead counts 0 here: it is flat, not saturated, and the flat check names it.
    """
    runs = []
    for lead in x.T:
        best = 0
        for value in (lead.min(), lead.max()) if lead.min() < lead.max() else ():
            at = np.concatenate(([0], (lead == value).astype(np.int8), [0]))
            edges = np.flatnonzero(np.diff(at))
            best = max(best, int((edges[1::2] - edges[::2]).max()))
        runs.append(best)
    return np.array(runs)


def high_frequency_ratios(x, fs, cutoff):
    """Per lead: broadband power above `cutoff` / power in 0.5 Hz-`cutoff` (Welch spectrum).

    The power above the cutoff is the median spectral density times the bandwidth, so narrow
    mains lines (50/60 Hz and harmonics, removed by the band-pass anyway) do not count; broadband
    noise (muscle, electrode artefacts) does.
    """
    freqs, density = signal.welch(x, fs=fs, axis=0, nperseg=min(len(x), 2 * fs))
    band = (freqs >= 0.5) & (freqs < cutoff)
    high = freqs >= cutoff
    if not high.any():
        return np.zeros(x.shape[1])
    in_band = density[band].sum(axis=0)
    return np.median(density[high], axis=0) * high.sum() / np.maximum(in_band, 1e-20)


def r_peaks(lead, fs, detector, refine_s, min_peak_ratio):
    """R peaks of a filtered lead: the detector's beats, snapped to the dominant QRS deflection.

    The sign of the dominant deflection is chosen once per record (median sign of the largest
    |value| near each detection), so every beat is aligned on the same wave even where the QRS
    is negative or biphasic. Detections smaller than `min_peak_ratio` x the 75th percentile of
    the amplitudes (T waves, noise picked up in slow rhythms) and the smaller of two detections
    closer than 200 ms are dropped. (neurokit's own method waits 0.3 s after a beat, so it
    cannot follow rates above 200 bpm.)
    """
    found = nk.ecg_findpeaks(lead, sampling_rate=fs, method=detector)["ECG_R_Peaks"]
    found = np.asarray(found, dtype=float)
    found = found[np.isfinite(found)].astype(np.int64)
    if len(found) == 0:
        return found
    half = max(1, int(round(refine_s * fs)))
    window = np.clip(found[:, None] + np.arange(-half, half + 1), 0, len(lead) - 1)
    segments = lead[window]
    largest = segments[np.arange(len(found)), np.abs(segments).argmax(axis=1)]
    polarity = 1.0 if np.median(largest) >= 0 else -1.0
    peaks = window[np.arange(len(found)), (polarity * segments).argmax(axis=1)]
    peaks = np.unique(peaks)
    amplitude = polarity * lead[peaks]
    peaks = peaks[amplitude >= min_peak_ratio * np.percentile(amplitude, 75)]
    kept = []
    for peak in peaks:
        if kept and peak - kept[-1] < 0.2 * fs:
            if polarity * lead[peak] > polarity * lead[kept[-1]]:
                kept[-1] = peak
            continue
        kept.append(peak)
    return np.array(kept, dtype=np.int64)


def chosen_beats(n_beats, beats, rng_key):
    """Indices of the complete beats to keep for a BEATS value (sorted)."""
    mode, k = beat_selection(beats)
    if mode in ("all", "median"):
        return np.arange(n_beats)
    if mode == "first":
        return np.arange(min(k, n_beats))
    rng = np.random.default_rng(rng_key)
    return np.sort(rng.choice(n_beats, size=min(k, n_beats), replace=False))


def record_beats(path, options):
    """Beats of one record (a WFDB path without extension, or a file of lvr.prepare.formats); raises
    RecordRejected with a reason."""
    record = record_millivolts(path, options.unit)
    raw, fs_in = record.signal, record.fs
    check_raw_signal(raw, fs_in, options)
    x = resampled(raw, fs_in, options.fs)
    filtered = bandpassed(x, options.fs, options.bandpass, options.bandpass_order, options.notch_hz)
    amplitude = checked_amplitude(filtered, record, options.plausible_mv,
                                  options.reject_flat_mv)
    noise = checked_filtered_signal(x, options)
    duration = len(raw) / fs_in
    peaks, heart_rate = checked_r_peaks(filtered, options, duration)
    starts = peaks - options.pre_samples
    complete = (starts >= 0) & (starts + options.window_samples <= len(filtered))
    if not complete.any():
        raise RecordRejected("no beats", f"no window [-{options.pre}, +{options.post}) s around "
                             f"the {len(peaks)} R peaks fits inside the record")
    starts, peaks = starts[complete], peaks[complete]
    info = {"format": record.format, "fs_in": fs_in, "duration_s": round(duration, 3),
            "amplitude_mv": round(amplitude, 4),
            "heart_rate_bpm": round(heart_rate, 1),
            "r_peaks_found": int(complete.size), "complete_beats": int(len(peaks)),
            "max_noise_ratio": round(float(noise.max()), 4), "notes": record.notes}
    rng_key = [options.seed, zlib.crc32(Path(path).name.encode())]  # same draw wherever data lies
    chosen = chosen_beats(len(peaks), options.beats, rng_key)
    windows = starts[chosen, None] + np.arange(options.window_samples)
    beats = filtered.T[:, windows].transpose(1, 0, 2).astype(np.float32)
    if beat_selection(options.beats)[0] == "median":
        return RecordBeats(np.median(beats, axis=0, keepdims=True), np.array([-1]),
                           np.array([-1]), info)
    return RecordBeats(np.ascontiguousarray(beats), peaks[chosen], chosen, info)


def record_millivolts(path, unit_option=""):
    """The record's 12 leads in mV (Millivolts), read by lvr.prepare.formats in any of its
    formats."""
    waveform = read_waveform(path)
    notes = list(waveform.notes)
    order, ignored = standard_lead_order(list(waveform.channels))
    if ignored:
        notes.append(f"ignored extra lead(s): {', '.join(map(str, ignored))}")
    factors, unit, unit_notes = millivolt_factors([waveform.units[c] for c in order],
                                                  unit_option)
    return Millivolts(waveform.signal[:, order] * factors, float(waveform.fs), unit,
                      float(np.median(factors)), waveform.format, notes + unit_notes)


def check_raw_signal(raw, fs_in, options):
    """Reject a record with NaN samples, too short for one window, or with a saturated lead."""
    bad = np.isnan(raw).sum(axis=0)
    if bad.any():
        where = ", ".join(f"{LEAD_NAMES[j]} ({bad[j]})" for j in np.flatnonzero(bad))
        raise RecordRejected("NaN samples", f"missing (NaN) samples in lead(s) {where}")
    duration = len(raw) / fs_in
    if duration < options.pre + options.post:
        raise RecordRejected("too short", f"{duration:.2f} s; one window needs "
                             f"{options.pre + options.post:.2f} s")
    runs = longest_extreme_runs(raw) / fs_in
    if runs.max() >= options.reject_saturation:
        j = int(runs.argmax())
        raise RecordRejected("saturated lead", f"lead {LEAD_NAMES[j]} stays at its min/max value "
                             f"for {runs[j]:.2f} s (limit {options.reject_saturation} s)")


def checked_filtered_signal(x, options):
    """Reject a noisy lead (checked_amplitude rejects a flat one); returns each lead's
    out-of-band noise ratio."""
    noise = high_frequency_ratios(x, options.fs, options.bandpass[1])
    if noise.max() > options.reject_noise:
        j = int(noise.argmax())
        raise RecordRejected("noisy", f"lead {LEAD_NAMES[j]} power above {options.bandpass[1]:g} "
                             f"Hz is {noise[j]:.2f} x its in-band power (limit "
                             f"{options.reject_noise})")
    return noise


def checked_r_peaks(filtered, options, duration):
    """(R peaks on DETECTOR_LEAD, median heart rate), or a rejection for an implausible rate."""
    lead = filtered[:, LEAD_NAMES.index(options.detector_lead)]
    peaks = r_peaks(lead, options.fs, options.detector, options.r_refine_s, options.min_peak_ratio)
    if len(peaks) < 2:
        raise RecordRejected("heart rate", f"{len(peaks)} R peak(s) found on "
                             f"{options.detector_lead} in {duration:.1f} s")
    heart_rate = 60.0 * options.fs / float(np.median(np.diff(peaks)))
    low, high = options.heart_rate_bpm
    if not low <= heart_rate <= high:
        raise RecordRejected("heart rate", f"median heart rate {heart_rate:.0f} bpm from "
                             f"{len(peaks)} R peaks is outside {low:g}-{high:g} bpm")
    return peaks, heart_rate


def detector_problem(options):
    """None if the detector runs on a synthetic ECG, else its error message."""
    fs = options.fs
    t = np.arange(10 * fs) / fs
    beats = np.arange(0.5, 10, 0.8)
    ecg = (np.exp(-((t[:, None] - beats) / 0.01) ** 2).sum(axis=1)
           + 0.2 * np.exp(-((t[:, None] - beats - 0.25) / 0.05) ** 2).sum(axis=1))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r_peaks(ecg, fs, options.detector, options.r_refine_s, options.min_peak_ratio)
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None
