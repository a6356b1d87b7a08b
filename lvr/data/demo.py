"""Synthetic demo cohort: realistic 12-lead beats with a known LVR signal, in the data contract.

Each beat comes from a heart vector (P, septal Q, R, S and T waves, each a Gaussian bump in time
with a direction in space) projected onto the 12 lead axes, so the limb leads obey Einthoven's and
Goldberger's relations and the precordial R wave progresses from V1 to V6. Patients differ in
axis, amplitudes, electrode gains, QT and heart rate; beats of one patient differ slightly; every
beat has noise and baseline wander. 1 s windows at 500 Hz with the R peak near sample 150.

- STEMI groups carry ST elevation along the inferior axis (II, III, aVF up; aVL, aVR down);
  NSTEMI groups a slight lateral ST depression (V5, V6, I).
- LVR groups differ from non-LVR ones only in LVR_LEADS (default V2-V4) and in the sign
  LVR_WAVE, of per-patient strength s (LVR_STRENGTH):
    T (default): the T wave scaled by 1 - s, flattened or, mostly, inverted (persistent
        anterior T-wave inversion after infarction is a known marker of remodeling);
    QRS: Q, R and S scaled by 1 - s (lost R amplitude);
    Q: a pathological Q wave (the septal wave fades, a Q 0.25 s mV deep and 1.6 times as wide
        grows: about 0.15-0.55 mV and 30-40 ms; QS complexes where the QRS is negative, V1-V3);
    ST_DEPRESSION / ST_ELEVATION: a flat ST shift of -/+ 0.1 s mV from 40 to 140 ms after R,
        between the S wave and the rise of the T wave.
  A share of non-LVR patients (NON_LVR_CHANGE) has a milder sign of the same kind in the same
  leads, as transient post-infarction changes do, and DISCORDANT_SHARE of patients have an ECG
  that contradicts their class (LVR without the sign, non-LVR with it), as an ECG predicts
  remodeling only in part: learnable, not trivial.

The ground truth is written into cohort.json: lvr_leads, lvr_wave (the delineated segment that
holds the sign, one of lvr.leads.WAVES: T -> T, QRS and Q -> QRS, ST_* -> ST), lvr_window_ms
(where the sign lies, ms from window start), lvr_sign (the LVR_WAVE value) and lvr_effect (words).
The default (T) cohort is byte-identical to generator version 4's before the other signs existed.
Run `python demo_cohort.py --output_dir=FOLDER --lvr_leads=I,aVL,V6` to make an unseen cohort,
`--lvr_wave=ST_DEPRESSION` to move the sign.
"""
import json
import os
import time
from dataclasses import dataclass, fields

import numpy as np

from lvr.choices import LVR_SIGNS
from lvr.data.cohort_json import SEED_COHORT
from lvr.errors import UserError
from lvr.leads import LEAD_NAMES
from lvr.run_folder import save_npy_atomic, write_json_atomic

DATA_DIR = "data"                        # the scripts' default cohort folder
DEMO_DIR = os.path.join("data", "demo")  # where the demo is generated when DATA_DIR holds none


@dataclass(frozen=True)
class DemoOptions:
    """The demo cohort's generator options; the defaults make the demo cohort the scripts use,
    and demo_cohort.py shows them as its constants (SEED is `seed`, and so on)."""
    seed: int = 2024                        # generator seed: same seed, same cohort
    n_patients: int = 100                   # patients per group
    beats_per_patient: tuple = (2, 7)       # beats per patient, drawn uniformly in [lo, hi]
    lvr_leads: tuple = ("V2", "V3", "V4")   # leads that carry the LVR effect
    lvr_wave: str = "T"                     # the sign: T, QRS, Q, ST_DEPRESSION or ST_ELEVATION
    lvr_strength: tuple = (0.8, 2.2)        # per-patient strength s (T: wave scaled by 1 - s)
    non_lvr_change: tuple = (0.3, 0.0, 0.6)  # share of non-LVR patients with milder s ~ U(lo, hi)
    discordant_share: float = 0.06          # patients whose ECG contradicts their class
    fs: int = 500                           # sampling rate (Hz)
    window_s: float = 1.0                   # beat window length (s)
    r_peak_s: float = 0.3                   # R peak position in the window (s)
    noise_mv: float = 0.02                  # white noise standard deviation (mV)
    wander_mv: float = 0.08                 # baseline wander amplitude (mV)

    def source_config(self):
        """The options as cohort.json's source.config records them: by demo_cohort.py's
        constant names, in this order, tuples as lists."""
        values = {f.name.upper(): getattr(self, f.name) for f in fields(self)}
        return {name: (list(v) if isinstance(v, tuple) else v) for name, v in values.items()}


DEMO_DEFAULTS = DemoOptions()   # the demo cohort the scripts use when DATA_DIR holds none

# The other signs widen LVR_WAVE (what carries the sign) instead of adding an option, so the
# options keep their names and defaults: the default cohort's source.config is version 4's and
# ensure_demo_cohort keeps existing default demo folders. T and QRS cohorts are byte-identical to
# version 4's (tests/test_demo.py), so the version stays 4; ground_truth only gained lvr_sign.
GENERATOR_VERSION = 4
LEADS = LEAD_NAMES
GROUPS = tuple(SEED_COHORT["groups"])
DEMO_BINARY_CLASS_NAMES = ("non-LVR", "LVR")
PRECORDIAL_ANGLES = np.deg2rad([115, 95, 75, 55, 30, 0])   # V1..V6 in the horizontal plane
# wave: (centre ms from R, width ms, amplitude mV, direction x=left, y=inferior, z=anterior)
WAVE_SHAPES = {
    "P": (-165.0, 22.0, 0.15, (0.6, 0.75, 0.15)),
    "Q": (-24.0, 7.0, 0.22, (-0.55, 0.1, 0.85)),
    "R": (0.0, 11.0, 1.5, (0.75, 0.55, -0.38)),
    "S": (26.0, 9.0, 0.45, (-0.45, -0.35, -0.75)),
    "T": (285.0, 42.0, 0.33, (0.55, 0.45, 0.75)),
}
QRS_WAVES = ("Q", "R", "S")
# LVR_WAVE (lvr.choices.LVR_SIGNS: sign -> the delineated segment recorded as ground_truth
# lvr_wave), for an LVR patient of strength s in LVR_LEADS:
#   T              T wave scaled by 1 - s: flattened (s < 1) or inverted (s > 1)
#   QRS            Q, R and S scaled by 1 - s: lost R amplitude
#   Q              pathological Q wave: the septal wave fades, a deep wide Q grows
#   ST_DEPRESSION  flat ST shift of -ST_SHIFT_MV * s
#   ST_ELEVATION   flat ST shift of +ST_SHIFT_MV * s
# Q sign: the lead's septal wave (q, or the initial r of V1-V3) is scaled by 1 - min(s, 1) and a
# negative Q of depth Q_DEPTH_MV * s (times the patient's Q size), Q_WIDENING times as wide as the
# septal wave and at its time, is added. With the default LVR_STRENGTH, in leads with an upright R
# (V4, I, aVL, V6), the Q is 0.16-0.54 mV deep (10th-90th percentile, median 0.3) and lasts 32-40
# ms (median) from onset to the R upstroke; where the QRS is mainly negative (V1-V3) it makes a QS.
Q_DEPTH_MV = 0.25
Q_WIDENING = 1.6
# ST signs: a flat shift of ST_SHIFT_MV * s from ST_SIGN_MS[0] to ST_SIGN_MS[1] ms after R (the
# half-height points of a plateau with ST_EDGE_MS edges): after the S wave and before the T wave
# rises, inside the delineated ST segment (QRS offset to T onset).
ST_SHIFT_MV = 0.1
ST_SIGN_MS = (40.0, 140.0)
ST_EDGE_MS = 8.0


def unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def rotation(rng, max_deg):
    """A random 3-D rotation by up to max_deg degrees about each axis."""
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def leads_from_vector(vector):
    """12 leads (12, T) from a heart vector (3, T): I and II by projection, the rest derived."""
    x, y, z = vector
    lead_i = x
    lead_ii = 0.5 * x + np.sqrt(3) / 2 * y
    limb = [lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2,
            lead_i - lead_ii / 2, lead_ii - lead_i / 2]
    chest = [1.3 * (np.cos(a) * x + np.sin(a) * z + 0.1 * y) for a in PRECORDIAL_ANGLES]
    return np.stack(limb + chest)


def gaussian(t, centre, width, skew=0.0):
    """A bump in time; skew > 0 makes the rising side slower (T waves rise slowly, fall fast)."""
    w = np.where(t < centre, width * (1 + skew), width * (1 - skew / 2))
    return np.exp(-0.5 * ((t - centre) / w) ** 2)


def sigmoid_plateau(t, start, end, edge):
    return 1 / (1 + np.exp(-(t - start) / edge)) * 1 / (1 + np.exp((t - end) / edge))


def add_lvr_sign(signal, rows, sign, strength, t, wave_leads, drawn):
    """Add the LVR sign `sign` (an LVR_WAVE value) of `strength` s to rows `rows` of `signal`.

    signal: (12, T) mV before the electrode gains; t: ms from this beat's R peak; wave_leads:
    wave name -> its (12, T) contribution; drawn: wave name -> (centre ms, width ms, size) of
    this beat. s = 0 changes nothing. T and QRS keep generator version 4's arithmetic exactly.
    """
    if sign in ("T", "QRS"):
        for name in (("T",) if sign == "T" else QRS_WAVES):
            signal[rows] -= strength * wave_leads[name][rows]
    elif sign == "Q":
        centre, width, size = drawn["Q"]
        deep_q = -Q_DEPTH_MV * size * gaussian(t, centre, width * Q_WIDENING)
        signal[rows] += strength * deep_q - min(strength, 1.0) * wave_leads["Q"][rows]
    elif sign in ("ST_DEPRESSION", "ST_ELEVATION"):
        direction = 1.0 if sign == "ST_ELEVATION" else -1.0
        signal[rows] += direction * ST_SHIFT_MV * strength * sigmoid_plateau(t, *ST_SIGN_MS,
                                                                             ST_EDGE_MS)
    else:
        raise ValueError(f"unknown LVR sign {sign!r}")


def patient_beats(rng, group, n_beats, options):
    """Beats (n_beats, 12, T) of one synthetic patient of `group`, drawn by DemoOptions
    `options`."""
    fs, n = options.fs, int(round(options.window_s * options.fs))
    r_sample = int(round(options.r_peak_s * fs))
    lead_index = {name: i for i, name in enumerate(LEADS)}
    heart = rotation(rng, 18)
    amp = {w: rng.uniform(0.75, 1.3) for w in WAVE_SHAPES}
    rr_ms = rng.uniform(650, 1100)
    qt_shift = 0.12 * (rr_ms - 850)                         # Bazett-like: longer RR, later T
    gains = rng.uniform(0.85, 1.15, len(LEADS))
    lvr = group.endswith("_1")
    share, lo, hi = options.non_lvr_change
    lvr_strength = rng.uniform(*options.lvr_strength)
    mild_strength = rng.uniform(lo, hi) if rng.random() < share else 0.0
    discordant = rng.random() < options.discordant_share
    if lvr:
        strength_of_patient = 0.0 if discordant else lvr_strength
    else:
        strength_of_patient = lvr_strength if discordant else mild_strength
    lvr_rows = [lead_index[name] for name in options.lvr_leads]
    stemi = group.startswith("ST")
    st_level = rng.uniform(0.12, 0.3) if stemi else -rng.uniform(0.0, 0.07)
    st_direction = unit((0.05, 1.0, 0.0)) if stemi else unit((0.8, 0.25, 0.3))
    beats = np.empty((n_beats, len(LEADS), n), dtype=np.float32)
    for b in range(n_beats):
        jitter = int(rng.integers(-3, 4))
        t = (np.arange(n) - r_sample - jitter) / fs * 1000.0  # ms from this beat's R peak
        waves, drawn = {}, {}
        for name, (centre, width, amplitude, direction) in WAVE_SHAPES.items():
            if name == "T":
                centre += qt_shift
            centre += rng.normal(0, 2.0 if name in QRS_WAVES else 5.0)
            scale = amplitude * amp[name] * rng.uniform(0.95, 1.05)
            width = width * rng.uniform(0.95, 1.05)
            shape = gaussian(t, centre, width, 0.35 if name == "T" else 0)
            waves[name] = np.outer(heart @ unit(direction), shape) * scale
            drawn[name] = (centre, width, scale / amplitude)   # this beat's centre, width, size
        st_shape = sigmoid_plateau(t, 40.0, 200.0 + qt_shift, 12.0)
        st = np.outer(heart @ st_direction, st_shape) * st_level
        wave_leads = {name: leads_from_vector(v) for name, v in waves.items()}
        signal = sum(wave_leads.values()) + leads_from_vector(st)
        strength = strength_of_patient * rng.uniform(0.9, 1.1)
        add_lvr_sign(signal, lvr_rows, options.lvr_wave, strength, t, wave_leads, drawn)
        signal *= gains[:, None]
        wander_freq = rng.uniform(0.15, 0.5, (len(LEADS), 1))
        phase = rng.uniform(0, 2 * np.pi, (len(LEADS), 1))
        seconds = np.arange(n) / fs
        signal += options.wander_mv * rng.uniform(0.3, 1.0, (len(LEADS), 1)) * \
            np.sin(2 * np.pi * wander_freq * seconds + phase)
        signal += rng.normal(0, options.noise_mv, signal.shape)
        beats[b] = signal
    return beats


def effect_window_ms(sign, r_peak_s):
    """Where the LVR sign `sign` (an LVR_WAVE value) lies in a window whose R peak is at
    `r_peak_s` (ms from window start), from the wave shapes.

    T: the T wave centre (over the range of QT shifts) +/- 2.5 widths of each side; QRS: Q centre
    - 3 Q widths to S centre + 3 S widths; Q: the widened Q's centre +/- 3 of its widths; ST:
    the plateau's half-height span +/- 2 edge widths.
    """
    r_ms = r_peak_s * 1000
    if sign == "T":
        centre, width = WAVE_SHAPES["T"][0], WAVE_SHAPES["T"][1]
        return [r_ms + centre - 0.12 * 200 - 2.5 * width * 1.35,
                r_ms + centre + 0.12 * 250 + 2.5 * width]
    if sign == "QRS":
        return [r_ms + WAVE_SHAPES["Q"][0] - 3 * WAVE_SHAPES["Q"][1],
                r_ms + WAVE_SHAPES["S"][0] + 3 * WAVE_SHAPES["S"][1]]
    if sign == "Q":
        centre, width = WAVE_SHAPES["Q"][0], WAVE_SHAPES["Q"][1] * Q_WIDENING
        return [r_ms + centre - 3 * width, r_ms + centre + 3 * width]
    return [r_ms + ST_SIGN_MS[0] - 2 * ST_EDGE_MS, r_ms + ST_SIGN_MS[1] + 2 * ST_EDGE_MS]


def effect_text(sign, lvr_strength, non_lvr_change, discordant_share):
    """ground_truth lvr_effect: the sign in words, with its strength and who carries it (the
    DemoOptions of the same names)."""
    if sign in ("T", "QRS"):   # generator version 4's text, unchanged
        what = f"{sign} wave scaled by (1 - s) in the LVR leads"
    elif sign == "Q":
        what = (f"pathological Q wave in the LVR leads: septal wave scaled by (1 - min(s, 1)) "
                f"plus a Q {Q_DEPTH_MV:g} * s mV deep, {Q_WIDENING:g}x the septal width")
    else:
        lo, hi = ST_SIGN_MS
        what = (f"flat ST {'elevation' if sign == 'ST_ELEVATION' else 'depression'} of "
                f"{ST_SHIFT_MV:g} * s mV, {lo:g}-{hi:g} ms after R, in the LVR leads")
    return (f"{what}, s ~ U{tuple(lvr_strength)} per LVR patient; "
            f"{non_lvr_change[0]:.0%} of non-LVR patients have "
            f"s ~ U{tuple(non_lvr_change[1:])}; "
            f"{discordant_share:.0%} of patients are discordant")


def demo_cohort_arrays(options):
    """group -> (beats float32 (N, 12, T), patient IDs int64 (N,)) of DemoOptions `options`,
    deterministic for its seed."""
    return {group: (beats, ids) for group, beats, ids in demo_group_arrays(options)}


def demo_group_arrays(options):
    """(group, beats, patient IDs) of each group in turn, so a writer holds one group at a time."""
    rng = np.random.default_rng(options.seed)
    next_id = 1
    for group in GROUPS:
        beats, ids = [], []
        for _ in range(options.n_patients):
            n_beats = int(rng.integers(options.beats_per_patient[0],
                                       options.beats_per_patient[1] + 1))
            beats.append(patient_beats(rng, group, n_beats, options))
            ids.append(np.full(n_beats, next_id, dtype=np.int64))
            next_id += 1
        yield group, np.concatenate(beats), np.concatenate(ids)


def demo_cohort_spec(options):
    """cohort.json of the demo made by DemoOptions `options`: the original's four groups and
    labels, its classes named for what they are (the original's "Normal"/"Abnormal" read as an
    ECG finding), and the ground truth."""
    lo, hi = effect_window_ms(options.lvr_wave, options.r_peak_s)
    return {
        **SEED_COHORT,
        "binary_class_names": list(DEMO_BINARY_CLASS_NAMES),
        "name": "demo (synthetic)",
        "description": "Synthetic beats from demo_cohort.py; not patient data.",
        "sampling_rate": options.fs,
        "r_peak_sample": int(round(options.r_peak_s * options.fs)),
        "ground_truth": {
            "synthetic": True,
            "lvr_leads": list(options.lvr_leads),
            "lvr_wave": LVR_SIGNS[options.lvr_wave],      # a delineated segment (WAVES)
            "lvr_window_ms": [round(lo), round(hi)],
            "lvr_effect": effect_text(options.lvr_wave, options.lvr_strength,
                                      options.non_lvr_change, options.discordant_share),
            "lvr_sign": options.lvr_wave,
            "stemi_leads": ["II", "III", "aVF"],
            "stemi_wave": "ST",
        },
        "source": {"generator": "demo_cohort.py", "generator_version": GENERATOR_VERSION,
                   "config": options.source_config()},
    }


def write_demo_cohort(output_dir, options, amplitude_scale=1.0):
    """Generate the cohort of DemoOptions `options` and write cut_<GROUP>.npy, patient-ID files
    and cohort.json.

    amplitude_scale multiplies every beat as recorded (noise included), like a device whose gain
    is off; it stays out of DemoOptions so the default cohort's files do not change.
    """
    unknown = sorted(set(options.lvr_leads) - set(LEADS))
    if unknown or not options.lvr_leads:
        raise UserError(f"LVR_LEADS must name leads among {', '.join(LEADS)}; got {unknown}")
    if options.lvr_wave not in LVR_SIGNS:
        raise UserError(f"LVR_WAVE must be one of {', '.join(LVR_SIGNS)}, got "
                        f"{options.lvr_wave!r}")
    os.makedirs(output_dir, exist_ok=True)
    counts = {}
    for group, beats, ids in demo_group_arrays(options):
        if amplitude_scale != 1:
            beats = (beats * np.float32(amplitude_scale)).astype(np.float32)
        save_npy_atomic(os.path.join(output_dir, f"cut_{group}.npy"), beats)
        save_npy_atomic(os.path.join(output_dir, f"cut_{group}_patient_ids.npy"), ids)
        counts[group] = len(beats)
    spec = demo_cohort_spec(options)
    if amplitude_scale != 1:
        spec["source"]["amplitude_scale"] = amplitude_scale
    write_json_atomic(os.path.join(output_dir, "cohort.json"), spec)
    return counts


def ensure_demo_cohort(output_dir=DEMO_DIR, log=print):
    """Generate the default demo cohort into `output_dir` unless it is already there."""
    spec_path = os.path.join(output_dir, "cohort.json")
    if os.path.exists(spec_path):
        with open(spec_path, encoding="utf-8") as handle:
            source = json.load(handle).get("source", {})
        if source.get("generator_version") == GENERATOR_VERSION \
                and source.get("config") == DemoOptions().source_config():
            return False
        log(f"The demo cohort in {output_dir} was made by another generator version; remaking it.")
    start = time.time()
    counts = write_demo_cohort(output_dir, DemoOptions())
    log(f"Generated the synthetic demo cohort in {output_dir} ({sum(counts.values())} beats, "
        f"{DemoOptions().n_patients} patients per group) in {time.time() - start:.1f} s.")
    return True


def demo_requested(data_dir):
    """True when `data_dir` is the default and holds no cohort: the scripts then use the demo."""
    if os.path.normpath(data_dir) != os.path.normpath(DATA_DIR):
        return False
    if not os.path.isdir(data_dir):
        return True
    names = os.listdir(data_dir)
    return not any(n.startswith("cut_") and n.endswith(".npy") for n in names) \
        and "cohort.json" not in names


def resolve_data_dir(data_dir, log=print):
    """The folder to read: `data_dir`, or the generated demo cohort when the user has no data."""
    if not demo_requested(data_dir):
        return data_dir
    ensure_demo_cohort(DEMO_DIR, log=log)
    log("=" * 78)
    log(f" DEMO DATA: no cohort in {data_dir}/, so this run uses the synthetic demo cohort")
    log(f" in {DEMO_DIR}/. Its beats are simulated, not patients. To use your own data, put")
    log(f" cut_NS_0.npy, cut_NS_1.npy, cut_ST_0.npy, cut_ST_1.npy (N, 12, T) in {data_dir}/")
    log(" or pass --data_dir=FOLDER (docs/data.md: 'Data format').")
    log("=" * 78)
    return DEMO_DIR
