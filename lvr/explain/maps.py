"""The attribution maps of the explained beats: the beats normalised as the model was trained,
their maps by METHOD and class probabilities, written chunk by chunk to memory-mapped work
files, and (for the wave measures) their wave segments and the maps' share in each wave."""
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from numpy.lib.format import open_memmap

from lvr.progress import progress_bar
from lvr.choices import METHODS
from lvr.data.beats import normalised_beats
from lvr.explain.attribution import attribution_maps
from lvr.explain.checks import wave_importance_density, wave_importance_shares
from lvr.explain.predict import class_probabilities
from lvr.leads import WAVES
from lvr.measure.delineation import segments_in_chunks
from lvr.report.results import counted

CHUNK_BEATS = 2048   # test beats normalised, explained and written to disk at a time


@dataclass(frozen=True)
class MapSettings:
    """How the maps are computed: METHOD and its settings, the batch size and the SEED of the
    SmoothGrad noise."""
    method: str
    num_samples: int
    noise_level: float
    ig_steps: int
    occlusion_window_ms: float
    batch_size: int
    seed: int


@dataclass
class ExplainedBeats:
    """The test beats of the run and what the analysis found in them."""
    index: np.ndarray        # rows of the cohort
    x: np.ndarray            # normalised beats (N, leads, T), memory-mapped work file
    y: np.ndarray            # binary labels
    groups: np.ndarray       # group index of each beat
    patient_ids: np.ndarray  # patient of each beat
    maps: np.ndarray         # attribution maps of METHOD (N, leads, T), memory-mapped
    prob: np.ndarray         # class probabilities (N, 2)
    segments: list = None    # wave spans per beat (WAVE_IMPORTANCE or WAVE_EFFECTS)
    shares: np.ndarray = None   # share of each lead's map per wave (N, leads, 5)
    density: np.ndarray = None  # shares per unit of wave duration (N, leads, 5)
    effects: np.ndarray = None  # segment-swap effects (N, leads, 5); NaN for negative beats
    effect_tables: dict = None  # per subgroup: patient-level rows of the effects (wave_effects)

    def members(self, cohort, group):
        """Mask of the LVR-positive beats of `group` (an analysis subgroup)."""
        return (self.groups == cohort.spec["groups"].index(group)) & (self.y == 1)


@contextmanager
def timed(timings, name):
    """Adds the seconds spent in the block to timings[name]."""
    start = time.perf_counter()
    yield
    timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - start, 2)


def method_description(settings):
    """METHOD and its settings, as the console names them."""
    if settings.method == "smoothgrad":
        return f"SmoothGrad {settings.num_samples} copies, noise {settings.noise_level}"
    if settings.method == "integrated_gradients":
        return f"integrated gradients, {settings.ig_steps} steps"
    if settings.method == "occlusion":
        return f"occlusion of {settings.occlusion_window_ms} ms windows per lead"
    return METHODS[settings.method]


def explained_beats(model, cohort, index, settings, device, work_dir, *, timings,
                    normalisation="per_lead", wave_leads=None, workers=1, log=print):
    """Attribution maps and probabilities of the beats `index` of the cohort, and (with
    `wave_leads`, the delineation leads) their wave segments.

    The beats are read, normalised as the model was trained, and explained CHUNK_BEATS at a time
    (a whole number of batches, so the SmoothGrad noise is drawn exactly as in one pass); beats
    and maps are written to memory-mapped files in `work_dir` as they are computed. Seconds
    spent go to timings["maps"] and timings["delineation"]; `workers` processes delineate.
    """
    shape = (len(index),) + tuple(cohort.beats.shape[1:])
    x = open_memmap(os.path.join(work_dir, "beats.npy"), "w+", np.float32, shape)
    maps = open_memmap(os.path.join(work_dir, "maps.npy"), "w+", np.float32, shape)
    y = cohort.labels("binary")[index]
    prob = np.empty((len(index), 2))
    step = max(1, CHUNK_BEATS // settings.batch_size) * settings.batch_size
    generator = torch.Generator().manual_seed(settings.seed)
    with timed(timings, "maps"), progress_bar(
            total=len(index), desc=f"{METHODS[settings.method]} maps", unit="beat") as progress:
        for start in range(0, len(index), step):
            part = slice(start, start + step)
            x[part] = normalised_beats(cohort.beats[index[part]], normalisation)
            maps[part], prob[part] = saliency_maps(model, x[part], y[part], settings, device,
                                                   cohort.spec["sampling_rate"], generator,
                                                   progress=progress)
    beats = ExplainedBeats(index=index, x=x, y=y, groups=cohort.group_index[index],
                           patient_ids=cohort.patient_ids[index], maps=maps, prob=prob)
    if wave_leads is not None:
        with timed(timings, "delineation"):
            found = segments_in_chunks(cohort.beats, index, cohort.spec["sampling_rate"],
                                       workers, progress="wave delineation",
                                       lead_names=list(cohort.spec["leads"]), leads=wave_leads)
        add_wave_shares(beats, found, step)
        fallback = sum(seg["method"] == "fallback" for seg in found)
        log(f"Wave delineation (neurokit2, median over "
            f"{'all leads' if wave_leads == 'all' else ', '.join(wave_leads)}): "
            f"{len(found) - fallback} of {counted(len(found), 'beat')}"
            + (f"; {fallback} fell back to standard intervals around R" if fallback else ""))
    return beats


def add_wave_shares(beats, found, step):
    """Sets the beats' wave segments (from the delineation `found`), and the maps' share and
    density per wave, computed `step` beats at a time."""
    maps = beats.maps
    beats.segments = [{w: seg[w] for w in WAVES} for seg in found]
    beats.shares = np.concatenate([
        wave_importance_shares(maps[start:start + step], beats.segments[start:start + step])
        for start in range(0, len(maps), step)])
    beats.density = wave_importance_density(beats.shares, beats.segments, maps.shape[2])


def saliency_maps(model, x, y, settings, device, fs, generator=None, progress=False):
    """Maps of METHOD (N, leads, T) and class probabilities (N, classes) of the beats x;
    `progress`: a progress bar advanced by the beats of each batch mapped (or False)."""
    maps = method_maps(model, x, y, settings, fs, progress=progress, generator=generator)
    # batch by batch of BATCH_SIZE, as the maps: predict_logits batches at least 256 beats, and
    # other batches give other last digits, so the numbers would depend on the chunking
    size = settings.batch_size
    prob = [class_probabilities(model, np.asarray(x[start:start + size]), size, device)
            for start in range(0, len(x), size)]
    return maps, np.concatenate(prob)


def method_maps(model, x, y, settings, fs, progress=False, generator=None):
    """attribution_maps of METHOD with its settings; SmoothGrad noise from `generator`
    (default: a new one seeded by SEED); `progress` as attribution_maps takes it."""
    window = max(1, int(round(settings.occlusion_window_ms * fs / 1000)))
    if generator is None:
        generator = torch.Generator().manual_seed(settings.seed)
    return attribution_maps(model, np.asarray(x), np.asarray(y), settings.method,
                            num_samples=settings.num_samples, noise_level=settings.noise_level,
                            generator=generator, ig_steps=settings.ig_steps,
                            occlusion_window=min(window, x.shape[2]),
                            batch_size=settings.batch_size, progress=progress)
