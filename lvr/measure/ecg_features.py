"""Conventional ECG measurements of beats in mV: what a cardiologist reads off the tracing.

Per lead: R, S and Q amplitude, Q duration, ST deviation at J+60 ms and T amplitude; for the
beat: QRS duration and QT interval. The wave boundaries (QRS onset and offset, T onset and
offset) are the project's delineation (lvr.measure.delineation: neurokit2's wavelet method per
lead, the median over leads, standard intervals around R where it finds nothing), the same for
all 12 leads of a beat. `measure_beats` turns beats and their segments into a (N, F) array,
vectorised over beats; `cohort_features` delineates and measures beats of a cohort chunk by
chunk.

Isoelectric baseline, per lead: the median of the PR segment's last part, the samples from
BASELINE_MS[0] to BASELINE_MS[1] ms before QRS onset (it starts at the P offset instead when the
delineation put the P offset inside that window). Every amplitude is in mV relative to it.

- R_<lead>: the largest positive deflection within QRS (0 if none).
- Q_<lead>: the deepest negative deflection within QRS before the R peak, as a negative number
  (0 if none); S_<lead>: the same after the R peak. When the R wave is smaller than R_MIN_MV
  (a QS complex) the whole negative deflection counts as Q and S is 0.
- Qdur_<lead>: the width in ms of the negative lobe that holds the Q nadir (between the
  baseline crossings around it, within QRS onset..R peak); 0 without a Q.
- ST_<lead>: the mean over ST_WINDOW_MS around J + ST_AFTER_J_MS, J = QRS offset; positive is
  elevation. NaN when that point lies outside the window.
- T_<lead>: the signed extreme within T onset..T offset (negative: inverted T).
- QRS_ms: QRS offset - QRS onset; QT_ms: T offset - QRS onset. NaN where the delineation did not
  find one of the two boundaries (a standard interval is not a measurement).
"""
import numpy as np

from lvr.measure.delineation import DELINEATION_LEADS, segments_in_chunks
from lvr.leads import BOUNDARIES, LEAD_NAMES

LEAD_FEATURES = ("R", "S", "Q", "Qdur", "ST", "T")   # per lead, in this order
GLOBAL_FEATURES = ("QRS_ms", "QT_ms")
BASELINE_MS = (30, 10)        # isoelectric window: 30 to 10 ms before QRS onset (PR segment)
ST_AFTER_J_MS = 60            # ST deviation measured at J + 60 ms
ST_WINDOW_MS = 10             # ... as the mean over 10 ms around that point
R_MIN_MV = 0.05               # an R wave below this is no R wave: a QS complex
MEASURE_CHUNK = 2000          # beats measured at once: (chunk, 12, T) float64 in memory


def feature_names(lead_names=LEAD_NAMES):
    """'R_I', 'S_I', ..., 'T_V6', then 'QRS_ms', 'QT_ms'."""
    return [f"{kind}_{lead}" for lead in lead_names for kind in LEAD_FEATURES] + \
        list(GLOBAL_FEATURES)


def boundary_arrays(segments):
    """(boundaries (N, 6) int samples, found (N, 6) bool: delineated rather than filled in from
    the standard intervals) in the order of lvr.leads.BOUNDARIES, from segment dicts."""
    bounds = np.array([[seg["P"][0], seg["P"][1], seg["QRS"][0], seg["QRS"][1], seg["T"][0],
                        seg["T"][1]] for seg in segments], dtype=np.int64).reshape(-1, 6)
    found = np.array([[name not in seg["fallback_boundaries"] for name in BOUNDARIES]
                      for seg in segments], dtype=bool).reshape(-1, 6)
    return bounds, found


def _masked(values, mask, fill):
    return np.where(mask, values, fill)


def _window(values, starts, width):
    """values (N, C, T) at samples starts[:, None] + 0..width-1 (clipped): (N, C, width)."""
    rows = np.clip(starts[:, None] + np.arange(width)[None, :], 0, values.shape[2] - 1)
    return np.take_along_axis(values, np.broadcast_to(rows[:, None, :],
                                                      (values.shape[0], values.shape[1], width)),
                              axis=2)


def measure_beats(beats, fs, boundaries, found=None, lead_names=LEAD_NAMES):
    """Features (N, F) float64 and their names, for beats (N, C, T) in mV whose wave boundaries
    (N, 6) samples are P_on, P_off, QRS_on, QRS_off, T_on, T_off; found (N, 6) bool marks the
    delineated ones (None: all). See the module docstring for each measurement."""
    x = np.asarray(beats, dtype=np.float64)
    n, _, length = x.shape
    b = np.asarray(boundaries, dtype=np.int64).reshape(n, 6)
    found = np.ones((n, 6), bool) if found is None else np.asarray(found, bool).reshape(n, 6)
    on, off, t_on, t_off = (b[:, i][:, None, None] for i in (2, 3, 4, 5))
    t = np.arange(length)[None, None, :]
    ms = fs / 1000.0

    # isoelectric baseline: median of the window before QRS onset (at least two samples)
    stop = np.maximum(b[:, 2] - int(round(BASELINE_MS[1] * ms)), 2)
    start = np.maximum(b[:, 2] - int(round(BASELINE_MS[0] * ms)), b[:, 1])
    start = np.clip(np.minimum(start, stop - 2), 0, None)
    width = int(max(2, (stop - start).max())) if n else 2
    inside = (start[:, None] + np.arange(width)[None, :]) < stop[:, None]
    base = np.nanmedian(np.where(inside[:, None, :], _window(x, start, width), np.nan), axis=2,
                        keepdims=True)
    y = x - base

    qrs = (t >= on) & (t < np.maximum(off, on + 1))
    r_amp = np.max(_masked(y, qrs, -np.inf), axis=2)
    r_idx = np.argmax(_masked(y, qrs, -np.inf), axis=2)[..., None]
    qs = r_amp < R_MIN_MV                                     # QS complex: no R wave
    before_r = qrs & ((t <= r_idx) | qs[..., None])
    after_r = qrs & (t >= r_idx) & ~qs[..., None]
    q_amp = np.minimum(np.min(_masked(y, before_r, np.inf), axis=2), 0.0)
    s_amp = np.minimum(np.min(_masked(y, after_r, np.inf), axis=2), 0.0)
    r_amp = np.maximum(r_amp, 0.0)

    # Q duration: the negative lobe around the Q nadir, bounded by QRS onset and the R peak
    q_idx = np.argmin(_masked(y, before_r, np.inf), axis=2)[..., None]
    lobe_end = np.where(qs[..., None], np.maximum(off, on + 1), r_idx + 1)
    nonneg = (y >= 0) | (t < on) | (t >= lobe_end)
    left = np.max(np.where(nonneg & (t < q_idx), t, -1), axis=2)
    right = np.min(np.where(nonneg & (t > q_idx), t, length), axis=2)
    q_ms = np.where(q_amp < 0, (right - left - 1) / ms, 0.0)

    # ST deviation at J + 60 ms, mean over ST_WINDOW_MS around it
    centre = b[:, 3] + int(round(ST_AFTER_J_MS * ms))
    half = max(1, int(round(ST_WINDOW_MS * ms / 2)))
    st = _window(y, centre - half, 2 * half + 1).mean(axis=2)
    st = np.where(((centre - half >= 0) & (centre + half < length))[:, None], st, np.nan)

    # T amplitude: signed extreme within the T segment
    t_seg = (t >= t_on) & (t < np.maximum(t_off, t_on + 1))
    t_idx = np.argmax(_masked(np.abs(y), t_seg, -np.inf), axis=2)[..., None]
    t_amp = np.take_along_axis(y, t_idx, axis=2)[..., 0]

    per_lead = np.stack([r_amp, s_amp, q_amp, q_ms, st, t_amp], axis=2)   # (N, C, 6)
    qrs_ms = np.where(found[:, 2] & found[:, 3], (b[:, 3] - b[:, 2]) / ms, np.nan)
    qt_ms = np.where(found[:, 2] & found[:, 5], (b[:, 5] - b[:, 2]) / ms, np.nan)
    features = np.concatenate([per_lead.reshape(n, -1), qrs_ms[:, None], qt_ms[:, None]], axis=1)
    return features, feature_names(lead_names)


def cohort_features(beats, index, fs, lead_names=LEAD_NAMES, r_peak_sample=None, workers=1,
                    leads=DELINEATION_LEADS, progress="ECG measurements"):
    """Features (len(index), F), names and the per-beat delineation method of beats[index]
    (a cohort's mapped BeatFiles or an array, in mV).

    Delineated with lvr.measure.delineation.segments_in_chunks (R at `r_peak_sample` when the cohort
    says where it is, else found per beat), then measured MEASURE_CHUNK beats at a time.
    """
    index = np.asarray(index)
    peaks = None if r_peak_sample is None else np.full(len(index), int(r_peak_sample))
    segments = segments_in_chunks(beats, index, fs, workers, r_peak_samples=peaks,
                                  progress=progress, lead_names=list(lead_names), leads=leads)
    bounds, found = boundary_arrays(segments)
    parts = []
    for start in range(0, len(index), MEASURE_CHUNK):
        part = slice(start, start + MEASURE_CHUNK)
        chunk = np.asarray(beats[index[part]], dtype=np.float64)
        parts.append(measure_beats(chunk, fs, bounds[part], found[part], lead_names)[0])
    features = (np.concatenate(parts) if parts else
                np.empty((0, len(feature_names(lead_names)))))
    return features, feature_names(lead_names), [seg["method"] for seg in segments]
