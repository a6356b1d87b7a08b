"""Cut raw 12-lead ECG recordings into R-peak-aligned beats: the project's cohort folder.

Input: a CSV table (columns record, patient_id, group; record = path relative to the CSV's
folder: a WFDB record without extension, or an EDF, DICOM, Philips XML or GE MUSE XML file,
told apart by content, see lvr/formats.py), or PTB-XL itself (--ptbxl_dir=DIR builds the table
from ptbxl_database.csv and scp_statements.csv). Each record is read, its leads put in the order
I, II, III, aVR, aVL, aVF, V1-V6 (III, aVR, aVL, aVF derived from I and II in 8-lead files),
converted to millivolts (the file's stated unit, or UNIT), resampled to FS, band-passed, checked
(amplitudes of another unit, flat, saturated, noisy, implausible heart rate, NaN, too short) and
cut into windows [r - PRE, r + POST) around the R peaks found on DETECTOR_LEAD.

Output (OUTPUT_DIR): cut_<GROUP>.npy float32 (N, 12, T) in mV, filtered, not standardised;
cut_<GROUP>_patient_ids.npy (N,), int64 or fixed-width text; cohort.json; beats_manifest.csv
(group, patient_id, record, beat_index among the record's complete beats, r_peak_sample at FS
in the whole record, row in cut_<GROUP>.npy; -1 for BEATS=median); prepare_summary.json (what
was read, kept, rejected and why). Patients with records in groups of different class are left
out whole: the training code needs one class per patient.

    python prepare_data.py --ptbxl_dir=DIR --task=mi_norm --output_dir=OUT
    python prepare_data.py --table=records.csv --task=binary:CONTROL,LVR --output_dir=OUT
"""
import ast
import csv
import re
import time
import warnings
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import signal

import neurokit2 as nk
from tqdm import tqdm

from lvr.choices import PTBXL_TASKS, UNITS
from lvr.config import UserError
from lvr.formats import (FORMAT_NAMES, RecordRejected, millivolts_per_unit, read_waveform,
                         record_present)
from lvr.leads import LEAD_BY_KEY, LEAD_NAMES, lead_key
from lvr.run_folder import atomic_write, library_versions, write_json_atomic

OUTPUT_FILES = ("cohort.json", "beats_manifest.csv", "prepare_summary.json")
DERIVED_NOTE = "derived leads"  # start of the note lvr.formats adds to an 8-lead record


@dataclass(frozen=True)
class Options:
    """What a worker needs to turn one record into beats: the per-record constants of
    prepare_data.py, lower-cased (checked_options builds it from them)."""
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


# ---------------------------------------------------------------- options and task

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


def checked_options(config):
    """The per-record Options from a resolved configuration, each value checked once."""
    names = {f.name for f in fields(Options)}
    options = Options(**{name.lower(): value for name, value in config.items()
                         if name.lower() in names})
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


def task_labels(task):
    """The group and label part of cohort.json for a TASK value."""
    kind, _, rest = task.partition(":")
    if task in ("mi_norm", "lvh_norm"):
        positive = task.split("_")[0].upper()
        return {"groups": ["NORM", positive], "binary_labels": {"NORM": 0, positive: 1},
                "binary_class_names": ["NORM", positive], "multiclass_labels": None,
                "multiclass_class_names": None, "analysis_subgroups": {positive: positive}}
    if task == "superclass4":
        groups = ["NORM", "MI", "STTC", "CD"]
        return {"groups": groups, "binary_labels": None, "binary_class_names": None,
                "multiclass_labels": {g: i for i, g in enumerate(groups)},
                "multiclass_class_names": groups, "analysis_subgroups": None}
    groups = [g.strip() for g in rest.split(",") if g.strip()]
    unusable = [g for g in groups if not re.fullmatch(r"[A-Za-z0-9_.\-]+", g)]
    if unusable:
        raise UserError(f"--task={task!r}: group name(s) {unusable} cannot be part of a file name "
                        f"cut_<GROUP>.npy; use letters, digits, '_', '-', '.'")
    if kind == "binary" and len(groups) == 2 and len(set(groups)) == 2:
        negative, positive = groups
        return {"groups": groups, "binary_labels": {negative: 0, positive: 1},
                "binary_class_names": groups, "multiclass_labels": None,
                "multiclass_class_names": None, "analysis_subgroups": {positive: positive}}
    if kind == "multiclass" and len(groups) >= 2 and len(set(groups)) == len(groups):
        return {"groups": groups, "binary_labels": None, "binary_class_names": None,
                "multiclass_labels": {g: i for i, g in enumerate(groups)},
                "multiclass_class_names": groups, "analysis_subgroups": None}
    raise UserError(f"--task={task!r} is not understood: use {', '.join(PTBXL_TASKS)}, "
                    f"binary:NEGATIVE,POSITIVE or multiclass:A,B,C (group names of your table)")


def cohort_name(name, task, ptbxl_dir, table):
    if name:
        return name
    if ptbxl_dir:
        return f"ptbxl_{task}"
    stem = Path(table).stem
    return stem if ":" in task else f"{stem}_{task}"


# ---------------------------------------------------------------- tables

def ptbxl_statements(codes, min_likelihood):
    """The scp_codes of one PTB-XL record (its text "{'NORM': 100.0, ...}") whose likelihood is
    at least `min_likelihood` (0-100; 0 keeps all, as the PTB-XL benchmark code does)."""
    return {code for code, likelihood in ast.literal_eval(codes).items()
            if likelihood >= min_likelihood}


def ptbxl_superclasses(ptbxl_dir, min_likelihood=0.0):
    """ecg_id -> sorted diagnostic superclasses (of the statements with likelihood >=
    min_likelihood), plus the database table, from a PTB-XL folder."""
    folder = Path(ptbxl_dir)
    database, statements = folder / "ptbxl_database.csv", folder / "scp_statements.csv"
    for path in (database, statements):
        if not path.is_file():
            raise UserError(f"--ptbxl_dir={ptbxl_dir}: {path.name} not found there; point it at "
                            f"the PTB-XL folder that holds ptbxl_database.csv and "
                            f"scp_statements.csv")
    db = pd.read_csv(database, index_col="ecg_id")
    scp = pd.read_csv(statements, index_col=0)
    missing = {"patient_id", "scp_codes", "filename_hr"} - set(db.columns)
    if missing or "diagnostic_class" not in scp.columns:
        raise UserError(f"{database} / {statements}: not the PTB-XL layout (missing columns "
                        f"{sorted(missing) or ['diagnostic_class']})")
    diagnostic = scp[scp["diagnostic"] == 1]["diagnostic_class"].to_dict()
    superclasses = db["scp_codes"].map(lambda codes: sorted(
        {diagnostic[code] for code in ptbxl_statements(codes, min_likelihood)
         if code in diagnostic}))
    return superclasses, db


def device_family(device):
    """The first word of a PTB-XL device ("AT-6 C 5.5" -> "AT-6")."""
    return (str(device).split() or [""])[0]


def ptbxl_device_mask(db, device):
    """Which records' device starts with `device` as whole words, any case ("AT-6" keeps
    "AT-6 C 5.5" and "AT-6", not "AT-60"); an unknown device is a UserError listing them."""
    if "device" not in db.columns:
        raise UserError(f"--ptbxl_device={device!r}: ptbxl_database.csv has no device column")
    wanted = " ".join(device.split()).upper()
    written = db["device"].fillna("").map(lambda d: " ".join(str(d).split()).upper())
    mask = (written == wanted) | written.str.startswith(wanted + " ")
    if not mask.any():
        families = db["device"].map(device_family).value_counts()
        raise UserError(f"--ptbxl_device={device!r}: no PTB-XL record's device starts with it; "
                        f"device families present: "
                        + ", ".join(f"{name} ({n} records)" for name, n in families.items())
                        + " (or leave it empty for all)")
    return mask.to_numpy()


def ptbxl_table(ptbxl_dir, task, min_likelihood=0.0, device=""):
    """PTB-XL's records as a table (record, patient_id, group, ecg_id) for a PTBXL_TASKS task.

    mi_norm: NORM = the only diagnostic superclass is NORM; MI = MI among the superclasses.
    lvh_norm: NORM as above; LVH = the LVH statement among the record's scp_codes, whatever else
    the record has.
    superclass4: records with exactly one diagnostic superclass, one of NORM, MI, STTC, CD.
    A statement counts only if its likelihood is >= min_likelihood (0: every statement); with
    `device` only records of that device (ptbxl_device_mask). Records are the 500 Hz files
    (filename_hr); patient_id is PTB-XL's, as an integer.
    """
    if task not in PTBXL_TASKS:
        raise UserError(f"--ptbxl_dir works with --task={', '.join(PTBXL_TASKS)}, not {task!r}; "
                        f"for other groupings write a table and pass --table")
    superclasses, db = ptbxl_superclasses(ptbxl_dir, min_likelihood)
    if task == "mi_norm":
        group = superclasses.map(lambda s: "MI" if "MI" in s else "NORM" if s == ["NORM"] else None)
    elif task == "lvh_norm":
        lvh = db["scp_codes"].map(lambda codes: "LVH" in ptbxl_statements(codes, min_likelihood))
        group = pd.Series(np.where(lvh, "LVH", np.where(superclasses.map(lambda s: s == ["NORM"]),
                                                          "NORM", None)), index=db.index)
    else:
        group = superclasses.map(lambda s: s[0] if len(s) == 1 and s[0] != "HYP" else None)
    keep = group.notna().to_numpy() & (ptbxl_device_mask(db, device) if device else True)
    return pd.DataFrame({"record": db.loc[keep, "filename_hr"].to_numpy(),
                         "patient_id": db.loc[keep, "patient_id"].astype(np.int64).to_numpy(),
                         "group": group[keep].to_numpy(),
                         "ecg_id": db.index[keep].to_numpy()})


def patient_id_values(column):
    """Patient ids (text) as int64 when every one is a plain integer, else as fixed-width strings.

    "15709" and "15709.0" become 15709; "007" stays text, so it cannot merge with "7".
    """
    text = column.astype(str).str.strip()
    if text.str.fullmatch(r"-?(0|[1-9]\d*)(\.0*)?").all():
        return text.str.replace(r"\.0*$", "", regex=True).astype(np.int64).to_numpy()
    return np.asarray(text.to_numpy(), dtype=str)


def records_table(table_path, groups):
    """The user's table (record, patient_id, group), checked; record without extension."""
    path = Path(table_path)
    if not path.is_file():
        raise UserError(f"--table={table_path}: file not found; give a CSV with columns record, "
                        f"patient_id, group (or --ptbxl_dir=DIR for PTB-XL)")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserError(f"--table={table_path}: cannot be read as CSV ({error})") from None
    missing = [c for c in ("record", "patient_id", "group") if c not in table.columns]
    if missing:
        raise UserError(f"--table={table_path}: missing column(s) {', '.join(missing)} "
                        f"(has: {', '.join(map(str, table.columns))}); it needs record, "
                        f"patient_id, group")
    for column in ("record", "patient_id", "group"):
        table[column] = table[column].str.strip()
        empty = table.index[table[column] == ""]
        if len(empty):
            raise UserError(f"--table={table_path}: empty {column} in data row(s) "
                            f"{', '.join(str(i + 1) for i in empty[:10])}; fill or remove them")
    table["record"] = table["record"].str.replace(r"\.(hea|dat)$", "", regex=True)
    unknown = sorted(set(table["group"]) - set(groups))
    if unknown:
        raise UserError(f"--table={table_path}: group(s) {', '.join(unknown)} are not groups of "
                        f"this task ({', '.join(groups)}); remove those rows or choose "
                        f"--task=binary:NEG,POS / multiclass:A,B,C with your group names")
    duplicated = table["record"][table["record"].duplicated()].unique()
    if len(duplicated):
        raise UserError(f"--table={table_path}: record(s) listed twice: "
                        f"{', '.join(duplicated[:5])}; each record may appear once")
    table["patient_id"] = patient_id_values(table["patient_id"])
    return table


def patients_in_several_classes(table, labels):
    """Patient ids whose records fall in groups of different class (binary or multiclass).

    The training code needs one class per patient, so such patients are left out whole.
    """
    conflicted = set()
    for mapping in (labels["binary_labels"], labels["multiclass_labels"]):
        if mapping:
            classes = table["group"].map(mapping).groupby(table["patient_id"]).nunique()
            conflicted |= set(classes.index[classes > 1])
    return conflicted


def class_conflict_rejections(table, patients):
    """A rejection entry for every record of `patients` (see patients_in_several_classes)."""
    rows = table[table["patient_id"].isin(patients)]
    groups = rows.groupby("patient_id")["group"].agg(lambda g: ", ".join(sorted(set(g))))
    return [{"record": row.record, "group": row.group, "patient_id": to_json(row.patient_id),
             "reason": f"patient in several classes: patient {row.patient_id} has records in "
                       f"{groups[row.patient_id]}; all are left out (one class per patient)"}
            for row in rows.itertuples(index=False)]


def with_paths(table, root):
    """The table with a `path` column: each record resolved against `root`."""
    table = table.copy()
    table["path"] = [str(Path(root) / record) for record in table["record"]]
    return table


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
    format: str  # a key of lvr.formats.FORMAT_NAMES
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
    unknown = sorted({str(u) for u, f in zip(units, factors) if f is None})
    notes = [f"unit(s) {', '.join(repr(u) for u in unknown)} not known: values read as mV "
             f"(checked by the amplitude check)"] if unknown else []
    stated = sorted({str(u) for u in units})
    return (np.array([1.0 if f is None else f for f in factors]),
            f"the file's stated {', '.join(stated) if any(stated) else 'unit (none)'}", notes)


def checked_amplitude(filtered, record, plausible_mv):
    """The record's amplitude in mV: median over leads of the band-passed peak-to-peak.

    Outside `plausible_mv` the record is rejected, naming the unit its values look like: the
    default range is wide enough for any real ECG and far enough from x1000 and x0.001 of it
    that no real ECG read in the wrong one of uV, mV, V falls inside it. A record that fits no
    unit (artefacts of tens of mV in every lead) is rejected for its amplitude.
    """
    amplitude = float(np.median(np.ptp(filtered, axis=0)))
    low, high = plausible_mv
    if low <= amplitude <= high:
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
    """Beats of one record (a WFDB path without extension, or a file of lvr.formats); raises
    RecordRejected with a reason."""
    record = record_millivolts(path, options.unit)
    raw, fs_in = record.signal, record.fs
    check_raw_signal(raw, fs_in, options)
    x = resampled(raw, fs_in, options.fs)
    filtered = bandpassed(x, options.fs, options.bandpass, options.bandpass_order, options.notch_hz)
    amplitude = checked_amplitude(filtered, record, options.plausible_mv)
    noise = checked_filtered_signal(x, filtered, options)
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
    """The record's 12 leads in mV (Millivolts), read by lvr.formats in any of its formats."""
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


def checked_filtered_signal(x, filtered, options):
    """Reject a flat or noisy lead; returns each lead's out-of-band noise ratio."""
    span = np.ptp(filtered, axis=0)
    if span.min() < options.reject_flat_mv:
        j = int(span.argmin())
        raise RecordRejected("flat lead", f"lead {LEAD_NAMES[j]} peak-to-peak {span[j]:.3f} mV "
                             f"(limit {options.reject_flat_mv} mV)")
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


def prepared_record(job):
    """record_beats for one (path, options) job; any failure becomes the record's reason."""
    path, options = job
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = record_beats(path, options)
            reason = None
        except RecordRejected as rejected:
            result, reason = None, str(rejected)
        except Exception as error:  # one bad record must not cost the others
            result, reason = None, f"error: {type(error).__name__}: {error}"
    if result is not None:
        seen = sorted({str(w.message).splitlines()[0][:200] for w in caught})
        result.info["notes"] += [f"warning: {message}" for message in seen]
    return result, reason


def prepared_records(jobs, workers):
    """(RecordBeats or None, reason) for each job, in job order, in `workers` processes."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield prepared_record(job)
        return
    done = 0
    try:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for outcome in pool.map(prepared_record, jobs, chunksize=4):
                done += 1
                yield outcome
    except BrokenProcessPool as error:
        for _ in jobs[done:]:
            yield None, f"worker died: {error}"


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


# ---------------------------------------------------------------- output

class NpyAppender:
    """Writes an (N, *shape) float32 .npy file whose N is known only at the end.

    Rows go to a temporary raw file as they come, so a large cohort never has to fit in memory.
    """

    def __init__(self, path, row_shape):
        self.path, self.row_shape, self.rows = Path(path), tuple(row_shape), 0
        self.part = self.path.with_name(f".{self.path.name}.part")
        self.handle = open(self.part, "wb")

    def append(self, array):
        array = np.ascontiguousarray(array, dtype="<f4")
        assert array.shape[1:] == self.row_shape, (array.shape, self.row_shape)
        self.handle.write(array.tobytes())
        self.rows += len(array)

    def finish(self):
        self.handle.close()
        header = {"descr": "<f4", "fortran_order": False, "shape": (self.rows, *self.row_shape)}
        with atomic_write(self.path) as temporary, open(temporary, "wb") as out, \
                open(self.part, "rb") as part:
            np.lib.format.write_array_header_1_0(out, header)
            while chunk := part.read(1 << 24):
                out.write(chunk)
        self.part.unlink()

    def discard(self):
        self.handle.close()
        self.part.unlink(missing_ok=True)


def output_folder_problem(folder, overwrite):
    """None if `folder` may be written, else what is wrong and what to do."""
    if folder.exists() and not folder.is_dir():
        return f"--output_dir={folder} exists and is not a folder; choose another path"
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        return (f"--output_dir={folder} is not empty; choose a new folder or pass --overwrite=True "
                f"to replace the files this script writes there")
    return None


def previous_outputs(folder):
    """Files in `folder` that an earlier run of this script wrote."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.name in OUTPUT_FILES or re.fullmatch(r"cut_.+\.npy", p.name))


def to_json(value):
    """A numpy scalar as the plain Python value json writes."""
    return value.item() if isinstance(value, np.generic) else value


def summary_lines(summary, folder, groups):
    lines = [f"records: {summary['records_read']} read, {summary['records_kept']} kept, "
             f"{summary['records_rejected']} rejected"]
    for group in groups:
        lines.append(f"  {group}: {summary['beats_per_group'][group]} beats from "
                     f"{summary['records_per_group'][group]} records, "
                     f"{summary['patients_per_group'][group]} patients")
    if summary["records_per_format"]:
        lines.append("formats read: " + ", ".join(f"{name} {n}" for name, n
                                                  in summary["records_per_format"].items()))
    if summary["records_with_derived_leads"]:
        lines.append(f"{summary['records_with_derived_leads']} record(s) had 8 leads: III, aVR, "
                     f"aVL, aVF derived from I and II")
    if summary["rejection_counts"]:
        top = ", ".join(f"{kind} {n}" for kind, n in list(summary["rejection_counts"].items())[:5])
        lines.append(f"rejected by reason: {top} (all reasons in prepare_summary.json)")
    empty = [g for g in groups if summary["beats_per_group"][g] == 0]
    if empty:
        lines.append(f"warning: no beats for group(s) {', '.join(empty)}")
    lines.append(f"wrote {folder}: " + ", ".join(f"cut_{g}.npy" for g in groups)
                 + ", cohort.json, beats_manifest.csv, prepare_summary.json")
    return lines


# ---------------------------------------------------------------- script

def input_table(config, groups):
    """The records to prepare (with resolved paths) and where they came from, checked."""
    table_csv, ptbxl_dir, task = config["TABLE"], config["PTBXL_DIR"], config["TASK"]
    min_likelihood, device = config["MIN_LIKELIHOOD"], config["PTBXL_DEVICE"]
    if bool(table_csv) == bool(ptbxl_dir):
        raise UserError("give exactly one input: --table=CSV (columns record, patient_id, group) "
                        "or --ptbxl_dir=DIR (PTB-XL folder)")
    if ptbxl_dir:
        if not Path(ptbxl_dir).is_dir():
            raise UserError(f"--ptbxl_dir={ptbxl_dir}: folder not found; download PTB-XL and point "
                            f"--ptbxl_dir at the folder with ptbxl_database.csv")
        table = with_paths(ptbxl_table(ptbxl_dir, task, min_likelihood, device), ptbxl_dir)
        source = {"ptbxl_dir": str(Path(ptbxl_dir).resolve()), "ptbxl_files": "filename_hr",
                  "table": "built from ptbxl_database.csv + scp_statements.csv",
                  "min_likelihood": min_likelihood, "ptbxl_device": device or "all"}
    else:
        given = [f"--{name.lower()}={config[name]!r}" for name, default in
                 (("MIN_LIKELIHOOD", 0), ("PTBXL_DEVICE", "")) if config[name] != default]
        if given:
            raise UserError(f"{', '.join(given)} select PTB-XL records: use with --ptbxl_dir, or "
                            f"filter your --table yourself")
        table = with_paths(records_table(table_csv, groups), Path(table_csv).parent)
        source = {"table": str(Path(table_csv).resolve())}
    if not any(record_present(path) for path in table["path"]):
        raise UserError(f"{table_csv or ptbxl_dir}: none of the {len(table)} records exists "
                        f"(first: {table['path'].iloc[0]}); record paths are relative to the "
                        f"table's folder (or to --ptbxl_dir): a WFDB record without extension, "
                        f"or an EDF, DICOM or XML file by its name")
    absent = [g for g in groups if not (table["group"] == g).any()]
    if absent:
        raise UserError(f"{table_csv or ptbxl_dir}: no records for group(s) {', '.join(absent)} "
                        f"of --task={task}; every group needs records")
    return table, source


def cohort_description(name, labels, options, task, source):
    """cohort.json: groups, labels, sampling, R position and how the beats were made."""
    groups = labels["groups"]
    return {"name": name, "groups": groups, "group_names": {g: g for g in groups},
            **{k: v for k, v in labels.items() if k != "groups"},
            "leads": list(LEAD_NAMES), "sampling_rate": options.fs,
            "r_peak_sample": options.pre_samples,
            "source": {"tool": "prepare_data.py", "task": task, **source, "units": "mV",
                       "input_unit": options.unit or "each file's stated unit",
                       "plausible_amplitude_mv": list(options.plausible_mv),
                       "filter": f"notches at {list(options.notch_hz)} Hz (Q 30), Butterworth "
                                 f"band-pass {options.bandpass[0]:g}-{options.bandpass[1]:g} Hz, "
                                 f"order {options.bandpass_order}, zero-phase; not standardised",
                       "window_s": [-options.pre, options.post], "beats": options.beats,
                       "r_peaks": f"neurokit2 ecg_findpeaks method={options.detector} on lead "
                                  f"{options.detector_lead}, snapped to the dominant QRS "
                                  f"deflection within {options.r_refine_s} s",
                       "manifest": "beats_manifest.csv", "versions": library_versions()}}


def prepare_cohort(config, log=print):
    """The whole job of prepare_data.py: records -> checked beats -> a cohort folder."""
    started = time.time()
    options = checked_options(config)
    labels = task_labels(config["TASK"])
    groups = labels["groups"]
    table, source = input_table(config, groups)
    records_read = len(table)
    rejections = class_conflict_rejections(table, patients_in_several_classes(table, labels))
    table = table[~table["record"].isin({r["record"] for r in rejections})].reset_index(drop=True)
    name = cohort_name(config["NAME"], config["TASK"], config["PTBXL_DIR"], config["TABLE"])
    folder = Path(config["OUTPUT_DIR"] or Path("data") / name)
    problem = output_folder_problem(folder, config["OVERWRITE"])
    if problem:
        raise UserError(problem)
    problem = detector_problem(options)
    if problem:
        raise UserError(f"--detector={options.detector} does not run in "
                        f"neurokit2.ecg_findpeaks: {problem}")
    for old in previous_outputs(folder):
        old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    written = written_beats(table, options, folder, groups, config["WORKERS"], rejections)
    write_patient_ids(folder, groups, written.patients,
                      np.issubdtype(table["patient_id"].dtype, np.integer))
    write_manifest(folder / "beats_manifest.csv", written.manifest)
    write_json_atomic(folder / "cohort.json",
                      cohort_description(name, labels, options, config["TASK"], source))
    summary = {
        "records_read": records_read,
        "records_kept": sum(written.kept_records.values()),
        "records_rejected": len(rejections),
        "beats_per_group": written.beats_per_group,
        "records_per_group": {g: written.kept_records[g] for g in groups},
        "records_per_format": dict(written.formats.most_common()),
        "records_with_derived_leads": written.derived,
        "patients_per_group": {g: len(set(written.patients[g])) for g in groups},
        "rejection_counts": dict(Counter(r["reason"].split(":")[0]
                                         for r in rejections).most_common()),
        "rejections": rejections,
        "notes": written.notes,
        "options": config,
        "elapsed_s": round(time.time() - started, 1),
    }
    write_json_atomic(folder / "prepare_summary.json", summary)
    log("\n".join(summary_lines(summary, folder, groups)))
    return summary


class WrittenBeats(NamedTuple):
    patients: dict          # group -> patient ID of each beat written
    manifest: list          # rows of beats_manifest.csv
    notes: list             # per-record notes (warnings, dropped beats)
    kept_records: Counter   # group -> records that gave beats
    beats_per_group: dict   # group -> beats written
    formats: Counter        # format name -> records that gave beats
    derived: int            # kept records whose III, aVR, aVL, aVF were derived (8-lead files)


def written_beats(table, options, folder, groups, workers, rejections):
    """Prepare every record (in `workers` processes) and append its beats to cut_<GROUP>.npy;
    a rejected record is added to `rejections`."""
    arrays = {g: NpyAppender(folder / f"cut_{g}.npy", (len(LEAD_NAMES), options.window_samples))
              for g in groups}
    patients = {g: [] for g in groups}
    manifest, notes, kept_records, formats = [], [], Counter(), Counter()
    jobs = [(path, options) for path in table["path"]]
    outcomes = prepared_records(jobs, min(workers, len(jobs)))
    try:
        progress = tqdm(outcomes, total=len(jobs), desc="records", unit="rec")
        for (result, reason), row in zip(progress, table.itertuples(index=False)):
            pid = to_json(row.patient_id)
            if result is None:
                rejections.append({"record": row.record, "group": row.group, "patient_id": pid,
                                   "reason": reason})
                continue
            start = arrays[row.group].rows
            arrays[row.group].append(result.beats)
            patients[row.group] += [pid] * len(result.beats)
            kept_records[row.group] += 1
            formats[FORMAT_NAMES[result.info["format"]]] += 1
            manifest += [(row.group, pid, row.record, int(b), int(r), start + i)
                         for i, (b, r) in enumerate(zip(result.beat_index, result.r_peaks))]
            if result.info["notes"]:
                notes.append({"record": row.record, "notes": result.info["notes"]})
        for appender in arrays.values():
            appender.finish()
    finally:
        for appender in arrays.values():
            appender.discard()
    derived = sum(any(n.startswith(DERIVED_NOTE) for n in entry["notes"]) for entry in notes)
    return WrittenBeats(patients, manifest, notes, kept_records,
                        {g: arrays[g].rows for g in groups}, formats, derived)


def write_patient_ids(folder, groups, patients, integer_ids):
    for group in groups:
        ids = np.asarray(patients[group], dtype=np.int64 if integer_ids else str)
        with atomic_write(folder / f"cut_{group}_patient_ids.npy") as temporary:
            np.save(temporary, ids, allow_pickle=False)


def write_manifest(path, rows):
    with atomic_write(path) as temporary, open(temporary, "w", newline="",
                                                encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "patient_id", "record", "beat_index", "r_peak_sample", "row"])
        writer.writerows(rows)
