"""The wave effects of the explained beats (WAVE_EFFECTS): the counterfactual segment swaps of
lvr.explain.wave_effects run on the run's beats of class 1 (LVR in the original), with
references from the other class."""
import numpy as np

from lvr.errors import UserError
from lvr.explain.maps import CHUNK_BEATS
from lvr.explain.wave_effects import reference_beats, wave_effects
from lvr.leads import WAVES
from lvr.measure.delineation import beat_segments_batch, r_peak_index
from lvr.report.results import counted


def segment_swap_effects(model, beats, cohort, *, class_names, train_patients, train_dir,
                         external, reference, alignment, blend_ms, wave_leads,
                         normalisation="per_lead", log=print):
    """Counterfactual effect of each lead's P, PR, QRS, ST and T segment on the beats of class 1
    (`class_names`: the two classes' names, for the console): the drop in P(class 1) when it is
    swapped for a `reference` (WAVE_REFERENCE) from the other class's training patients
    (`train_patients`, from the split of the run in `train_dir`; EXTERNAL: from the other
    class's beats of the explained cohort, whose training data may be elsewhere), aligned by
    `alignment`, blended over `blend_ms`; the reference's segments delineated over
    `wave_leads`."""
    positive = np.flatnonzero(beats.y == 1)
    labels = cohort.labels("binary")
    reference_patients = (True if external else
                          np.isin(cohort.patient_ids, np.asarray(train_patients, str)))
    pool_index = np.flatnonzero(reference_patients & (labels == 0))
    effects = np.full(beats.x.shape[:2] + (len(WAVES),), np.nan)
    if positive.size == 0:
        return effects
    if pool_index.size == 0:
        where = (f"{cohort.data_dir} has no beats" if external else
                 f"{train_dir}/split.json lists no training patients")
        raise UserError(f"{where} of the negative class in {cohort.data_dir}: the wave effects "
                        f"need their beats as references (or pass --wave_effects=False)")
    fs = cohort.spec["sampling_rate"]
    # swapped in mV, then normalised like every input (lvr.explain.wave_effects says why)
    x = cohort.beats[beats.index[positive]]
    log(f"Wave effects: {counted(len(positive), f'{class_names[1]} beat')} x "
        f"{x.shape[1]} leads x {len(WAVES)} waves, reference {reference} of "
        f"{counted(len(pool_index), class_names[0] + (' beat' if external else ' training beat'))}"
        f"{' of this cohort' if external else ''}, "
        f"{alignment} alignment, {blend_ms} ms blend")
    if reference == "mean":   # the mean beat, read chunk by chunk
        references = np.broadcast_to(mean_beat(cohort.beats, pool_index), x.shape)
    else:
        references = reference_beats(x, cohort.beats[pool_index], reference)
    segments = [beats.segments[i] for i in positive]
    if alignment == "segment":
        reference_segments = swap_reference_segments(references, fs, list(cohort.spec["leads"]),
                                                     wave_leads, shared=reference != "nearest")
    else:
        reference_segments = segments
    r_peaks = reference_r_peaks = None
    if alignment == "r_peak":
        r_peaks = np.array([r_peak(beat, cohort.spec, fs) for beat in x])
        reference_r_peaks = np.array([r_peak(beat, cohort.spec, fs) for beat in references])
    effects[positive] = wave_effects(model, x, beats.y[positive], segments, references,
                                     reference_segments, alignment, blend_ms * fs / 1000,
                                     r_peaks, reference_r_peaks, progress=True,
                                     normalisation=normalisation)
    return effects


def swap_reference_segments(references, fs, lead_names, wave_leads, shared):
    """The wave segments of each reference beat; `shared`: one reference beat for all, so it
    is delineated once."""
    found = beat_segments_batch(references[:1] if shared else references, fs,
                                lead_names=lead_names, leads=wave_leads, progress=not shared)
    segments = [{w: seg[w] for w in WAVES} for seg in found]
    return segments * len(references) if shared else segments


def mean_beat(beats, index, chunk=CHUNK_BEATS):
    """The mean of beats[index] as float32, summed in float64 chunk by chunk in the order
    numpy's mean over axis 0 adds them (the same number as reference_beats' "mean")."""
    total = np.zeros(beats.shape[1:])
    for start in range(0, len(index), chunk):
        part = beats[index[start:start + chunk]].astype(np.float64)
        total = np.concatenate([total[None], part]).sum(axis=0)
    return (total / len(index)).astype(np.float32)


def r_peak(beat, spec, fs):
    """R index of a beat, searched near the cohort's r_peak_sample when it has one."""
    return r_peak_index(beat, fs, expected=spec.get("r_peak_sample"))
