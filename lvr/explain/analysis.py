"""The saliency analysis of Saliency_ana2_sys.py: load run -> explain -> figures -> statistics ->
checks -> provenance.

`run_saliency_analysis(config)` explains a 2-class training run on its test patients: SmoothGrad
maps, wave delineation, per-sample figures, lead statistics per analysis subgroup, the
explanation checks (wave importance, randomisation sanity check, deletion test) and
saliency_run.json. The cohort's ground truth is read only to report how well the analysis found
it (ground_truth_check, the marks on the wave heatmap), never to compute a statistic.
"""
import json
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from numpy.lib.format import open_memmap
from tqdm import tqdm

from lvr.explain.attribution import attribution_maps, has_lead_resolution
from lvr.train.checkpoints import checkpoint_normalisation, load_checkpoint
from lvr.choices import METHODS
from lvr.data.beats import normalised_beats, set_seed
from lvr.data.cohort import load_cohort
from lvr.config import UserError
from lvr.measure.delineation import beat_segments_batch, r_peak_index, segments_in_chunks
from lvr.data.demo import resolve_data_dir
from lvr.train.distributed import resolve_device
from lvr.explain.console import (REPORT_NOTE, log_explanation_checks, log_subgroup,
                                log_wave_effects, results_source, subgroup_label,
                                write_wave_effects_csv, write_wave_importance_csv)
from lvr.explain.checks import (deletion_test, localisation, sanity_check,
                                    smoothgrad_saliency_fn,
                                    truth_mask, wave_importance_density, wave_importance_shares,
                                    wave_importance_table)
from lvr.report.check_figures import (plot_deletion_curves, plot_sanity_check,
                                plot_wave_effects_heatmap, plot_wave_importance_heatmap)
from lvr.report.saliency_figures import (draw_sample_figures, plot_lead_importance_comparison,
                                  plot_lead_importance_heatmap)
from lvr.explain.fold_agreement import fold_agreement, log_fold_agreement
from lvr.data.geometry import check_geometry
from lvr.explain.lead_stats import (ground_truth_check, patient_level_lead_statistics, patient_means,
                            subgroup_lead_statistics)
from lvr.leads import WAVES
from lvr.report.html import write_report
from lvr.run_folder import (atomic_write, code_version, library_versions, prepare_output_dir,
                            write_json_atomic)
from lvr.explain.wave_effects import (reference_beats, true_cell_ranks, wave_effect_rows,
                              wave_effects)

CHUNK_BEATS = 2048   # test beats normalised, explained and written to disk at a time
SMALL_SUBGROUP_PATIENTS = 10   # below: a subgroup's statistics carry a small-sample warning


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


def run_saliency_analysis(config, log=print):
    """The whole analysis as configured; writes everything into OUTPUT_DIR. A cross-validation
    run (TRAIN_DIR holds fold_1/, fold_2/, ...) is explained fold by fold, each fold's model on
    its own test patients, and fold_agreement.json says how far the folds agree."""
    folds = cross_validation_folds(config["TRAIN_DIR"])
    if not folds:
        return explain_run(config, log)
    output_dir = config["OUTPUT_DIR"]
    prepare_output_dir(output_dir, finished_file=None)
    config = dict(config, DATA_DIR=resolve_data_dir(config["DATA_DIR"], log=log))  # banner once
    outcomes = []
    for k, fold_dir in enumerate(folds, 1):
        log(f"\n===== fold {k}/{len(folds)}: {fold_dir} =====")
        outcomes.append(explain_run(dict(config, TRAIN_DIR=fold_dir,
                                         OUTPUT_DIR=os.path.join(output_dir, f"fold_{k}")), log))
    agreement = fold_agreement(outcomes)
    write_json_atomic(os.path.join(output_dir, "fold_agreement.json"), agreement)
    log_fold_agreement(agreement, log)
    return outcomes


def cross_validation_folds(train_dir):
    """fold_1, fold_2, ... of a cross-validation run in train_dir (empty for a single run)."""
    if os.path.exists(os.path.join(train_dir, "split.json")):
        return []
    folds = []
    while os.path.exists(os.path.join(train_dir, f"fold_{len(folds) + 1}", "split.json")):
        folds.append(os.path.join(train_dir, f"fold_{len(folds) + 1}"))
    return folds if len(folds) >= 2 else []


def explain_run(config, log=print):
    """The analysis of one trained model (a run or one fold); returns its statistics."""
    start = time.time()
    output_dir = config["OUTPUT_DIR"]
    split, model_path = checked_training_run(config["TRAIN_DIR"], config["CHECKPOINT"])
    data_dir = resolve_data_dir(config["DATA_DIR"], log=log)
    cohort = load_cohort(data_dir, allow_pickle=config["ALLOW_PICKLE"])
    for text in cohort.warnings:
        log(f"warning: {text}")
    check_ground_truth(cohort)
    needs_waves = config["WAVE_IMPORTANCE"] or config["WAVE_EFFECTS"]
    wave_leads = (delineation_leads(config["DELINEATION_LEADS"], cohort.spec)
                  if needs_waves else None)
    device = resolve_device(config["DEVICE"])
    model, checkpoint = load_checkpoint(model_path, map_location=device)
    if model.config["num_classes"] != 2:
        raise UserError(f"{model_path} is a {model.config['num_classes']}-class model; this "
                        f"analysis explains the 2-class (LVR) model")
    normalisation = checkpoint_normalisation(checkpoint, model_path)
    index = explained_index(cohort, split, model, config)
    set_seed(config["SEED"])
    prepare_output_dir(output_dir, finished_file=None)
    class_names = list(checkpoint.get("class_names") or cohort.class_names("binary"))
    log(f"Explaining {model_path} ({model.config['experiment']}) on {len(index)} "
        f"{'beats (external cohort: all)' if config['EXTERNAL'] else 'test beats'} of "
        f"{len(np.unique(cohort.patient_ids[index]))} patients from {data_dir}; "
        f"{method_description(config)}, on {device}; inputs normalised {normalisation}")
    timings = {}
    # the test beats and their maps live in work files beside the outputs, never whole in memory
    with tempfile.TemporaryDirectory(prefix=".work-", dir=output_dir) as work_dir:
        beats = explained_beats(model, cohort, index, config, device, wave_leads, log, timings,
                                work_dir, normalisation)
        if config["WAVE_EFFECTS"]:
            with timed(timings, "wave_effects"):
                beats.effects = segment_swap_effects(model, beats, cohort, split, config, device,
                                                     log, normalisation)
                beats.effect_tables = wave_effect_tables(beats, cohort, config)
        with timed(timings, "figures"):
            draw_figures(beats, cohort, class_names, config, log)
        with timed(timings, "lead_statistics"):
            statistics = write_lead_statistics(beats, cohort, config, log)
        if beats.effects is not None:
            write_wave_effects(beats, cohort, config, log)
        if config["WAVE_IMPORTANCE"] or config["SANITY_CHECK"] or config["DELETION_TEST"] \
                or beats.effects is not None:
            with timed(timings, "checks"):
                write_explanation_checks(model, beats, cohort, class_names, config, log)
        if config["SAVE_MAPS"]:
            write_maps(os.path.join(output_dir, "saliency_maps.npz"), beats)
        write_json_atomic(os.path.join(output_dir, "saliency_run.json"), {
            "config": config, "train_dir": config["TRAIN_DIR"], "data_dir": data_dir,
            "data_fingerprint": cohort.fingerprint(), "normalisation": normalisation,
            "test_beats": int(len(index)),
            "test_patients": sorted(set(cohort.patient_ids[index].tolist())),
            "device": str(device), "versions": library_versions(), "code": code_version(),
            "step_times_s": timings, "wall_time_s": round(time.time() - start, 2)})
        if config["REPORT"]:
            write_report(output_dir, log=lambda *_: None)
        written = sorted(name for name in os.listdir(output_dir)
                         if os.path.isfile(os.path.join(output_dir, name)))
        log(f"\nDone in {time.time() - start:.0f} s: {output_dir}/ holds {', '.join(written)}")
        return {"lead_statistics": statistics, "wave_effects": beats.effect_tables}


@contextmanager
def timed(timings, name):
    """Adds the seconds spent in the block to timings[name]."""
    start = time.perf_counter()
    yield
    timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - start, 2)


def method_description(config):
    method = config["METHOD"]
    if method == "smoothgrad":
        return f"SmoothGrad {config['NUM_SAMPLES']} copies, noise {config['NOISE_LEVEL']}"
    if method == "integrated_gradients":
        return f"integrated gradients, {config['IG_STEPS']} steps"
    if method == "occlusion":
        return f"occlusion of {config['OCCLUSION_WINDOW_MS']} ms windows per lead"
    return METHODS[method]


def explained_beats(model, cohort, index, config, device, wave_leads, log, timings, work_dir,
                    normalisation="per_lead"):
    """Attribution maps and probabilities of the test beats, and their wave segments.

    The beats are read, normalised as the model was trained, and explained CHUNK_BEATS at a time
    (a whole number of batches, so the SmoothGrad noise is drawn exactly as in one pass); beats
    and maps are written to memory-mapped files in `work_dir` as they are computed.
    """
    shape = (len(index),) + tuple(cohort.beats.shape[1:])
    x = open_memmap(os.path.join(work_dir, "beats.npy"), "w+", np.float32, shape)
    maps = open_memmap(os.path.join(work_dir, "maps.npy"), "w+", np.float32, shape)
    y = cohort.labels("binary")[index]
    prob = np.empty((len(index), 2))
    batch = config["BATCH_SIZE"]
    step = max(1, CHUNK_BEATS // batch) * batch
    generator = torch.Generator().manual_seed(config["SEED"])
    with timed(timings, "maps"), tqdm(total=len(index), desc=config["METHOD"], disable=None,
                                      dynamic_ncols=True) as progress:
        for start in range(0, len(index), step):
            part = slice(start, start + step)
            x[part] = normalised_beats(cohort.beats[index[part]], normalisation)
            maps[part], prob[part] = saliency_maps(model, x[part], y[part], config, device,
                                                   cohort.spec["sampling_rate"], generator)
            progress.update(len(x[part]))
    beats = ExplainedBeats(index=index, x=x, y=y, groups=cohort.group_index[index],
                           patient_ids=cohort.patient_ids[index], maps=maps, prob=prob)
    if wave_leads is not None:
        with timed(timings, "delineation"):
            found = segments_in_chunks(cohort.beats, index, cohort.spec["sampling_rate"],
                                       config["FIGURE_WORKERS"],
                                       lead_names=list(cohort.spec["leads"]), leads=wave_leads)
        beats.segments = [{w: seg[w] for w in WAVES} for seg in found]
        beats.shares = np.concatenate([
            wave_importance_shares(maps[start:start + step], beats.segments[start:start + step])
            for start in range(0, len(index), step)])
        beats.density = wave_importance_density(beats.shares, beats.segments, maps.shape[2])
        fallback = sum(seg["method"] == "fallback" for seg in found)
        log(f"Wave delineation (neurokit2, median over "
            f"{'all leads' if wave_leads == 'all' else ', '.join(wave_leads)}): "
            f"{len(found) - fallback} of {len(found)} beats"
            + (f"; {fallback} fell back to standard intervals around R" if fallback else ""))
    return beats


def segment_swap_effects(model, beats, cohort, split, config, device, log,
                         normalisation="per_lead"):
    """Counterfactual effect of each lead's P, PR, QRS, ST and T segment on the LVR beats: the
    drop in P(LVR) when it is swapped for a reference from the other class's training patients
    (EXTERNAL: from the other class's beats of the explained cohort, whose training data may be
    elsewhere)."""
    positive = np.flatnonzero(beats.y == 1)
    labels = cohort.labels("binary")
    external = config["EXTERNAL"]
    reference_patients = (True if external else
                          np.isin(cohort.patient_ids, np.asarray(split["train"], str)))
    pool_index = np.flatnonzero(reference_patients & (labels == 0))
    effects = np.full(beats.x.shape[:2] + (len(WAVES),), np.nan)
    if positive.size == 0:
        return effects
    if pool_index.size == 0:
        where = (f"{cohort.data_dir} has no beats" if external else
                 f"{config['TRAIN_DIR']}/split.json lists no training patients")
        raise UserError(f"{where} of the negative class in {cohort.data_dir}: the wave effects "
                        f"need their beats as references (or pass --wave_effects=False)")
    fs = cohort.spec["sampling_rate"]
    # swapped in mV, then normalised like every input (lvr.explain.wave_effects says why)
    x = cohort.beats[beats.index[positive]]
    if config["WAVE_REFERENCE"] == "mean":   # the mean beat, read chunk by chunk
        references = np.broadcast_to(mean_beat(cohort.beats, pool_index), x.shape)
    else:
        references = reference_beats(x, cohort.beats[pool_index], config["WAVE_REFERENCE"])
    segments = [beats.segments[i] for i in positive]
    if config["WAVE_ALIGNMENT"] == "segment":
        shared = config["WAVE_REFERENCE"] != "nearest"   # one reference beat for all
        found = beat_segments_batch(references[:1] if shared else references, fs,
                                    lead_names=list(cohort.spec["leads"]),
                                    leads=delineation_leads(config["DELINEATION_LEADS"],
                                                            cohort.spec))
        reference_segments = [{w: seg[w] for w in WAVES} for seg in found]
        if shared:
            reference_segments *= len(x)
    else:
        reference_segments = segments
    log(f"Wave effects: {len(positive)} LVR beats x {x.shape[1]} leads x {len(WAVES)} waves, "
        f"reference {config['WAVE_REFERENCE']} of {len(pool_index)} non-LVR "
        f"{'beats of this cohort' if external else 'training beats'}, "
        f"{config['WAVE_ALIGNMENT']} alignment, {config['WAVE_BLEND_MS']} ms blend")
    r_peaks = reference_r_peaks = None
    if config["WAVE_ALIGNMENT"] == "r_peak":
        r_peaks = np.array([r_peak(beat, cohort.spec, fs) for beat in x])
        reference_r_peaks = np.array([r_peak(beat, cohort.spec, fs) for beat in references])
    effects[positive] = wave_effects(model, x, beats.y[positive], segments, references,
                                     reference_segments, config["WAVE_ALIGNMENT"],
                                     config["WAVE_BLEND_MS"] * fs / 1000, r_peaks,
                                     reference_r_peaks, progress=True,
                                     prepare=partial(normalised_beats,
                                                     normalisation=normalisation))
    return effects


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


def draw_figures(beats, cohort, class_names, config, log):
    """The per-sample figures, drawn in FIGURE_WORKERS processes."""
    jobs = figure_jobs(beats.x, beats.maps, beats.prob, beats.y, beats.groups, cohort,
                       class_names, config, config["OUTPUT_DIR"], beats.segments)
    with tqdm(total=len(jobs), desc="figures", disable=None, dynamic_ncols=True) as progress:
        for _ in draw_sample_figures(jobs, config["FIGURE_WORKERS"], progress):
            pass
    log(f"Per-sample figures: {len(jobs)} in {config['OUTPUT_DIR']}/<subtype>/")


def write_lead_statistics(beats, cohort, config, log):
    """quantitative_consistency_analysis.json and the two lead-importance figures."""
    output_dir = config["OUTPUT_DIR"]
    results, arrays = quantitative_analysis(beats, cohort, config)
    log(f"\nLead statistics on {results_source(config)}. {REPORT_NOTE}")
    for name, stats in results.items():
        log_subgroup(subgroup_label(name, cohort.spec), stats, log)
    write_json_atomic(os.path.join(output_dir, "quantitative_consistency_analysis.json"), results)
    lead_names = list(cohort.spec["leads"])
    labelled = {subgroup_label(name, cohort.spec): values for name, values in arrays.items()}
    plot_lead_importance_comparison(os.path.join(output_dir, "lead_importance_comparison.png"),
                                    labelled, lead_names)
    plot_lead_importance_heatmap(os.path.join(output_dir, "lead_importance_heatmap.png"),
                                 labelled, lead_names)
    return results


def write_wave_effects(beats, cohort, config, log):
    """wave_effects.csv and wave_effects_heatmap.png (ground truth only marks the figure)."""
    spec = cohort.spec
    tables, figure_tables = beats.effect_tables, {}
    write_wave_effects_csv(os.path.join(config["OUTPUT_DIR"], "wave_effects.csv"), tables)
    for name, table in tables.items():
        log_wave_effects(subgroup_label(name, spec), table, log)
        figure_tables[subgroup_label(name, spec)] = {
            "effect": lead_by_wave(table["rows"], "effect"), "patients": table["patients"],
            "share": lead_by_wave(table["rows"], "map_share") if beats.shares is not None
            else None}
    truth = spec.get("ground_truth") or {}   # only marks the truth on the figure
    plot_wave_effects_heatmap(os.path.join(config["OUTPUT_DIR"], "wave_effects_heatmap.png"),
                              figure_tables, list(spec["leads"]), truth.get("lvr_leads", ()),
                              truth.get("lvr_wave"), METHODS[config["METHOD"]])


def lead_by_wave(rows, key):
    """(leads, waves) array of `key` from wave-effect rows, which run lead by lead, wave by wave."""
    return np.array([[row[key] for row in rows[i:i + len(WAVES)]]
                     for i in range(0, len(rows), len(WAVES))])


def wave_effect_tables(beats, cohort, config):
    """Per analysis subgroup: the patient-level rows of wave_effect_rows, and counts."""
    tables = {}
    for name, group in (cohort.spec.get("analysis_subgroups") or {}).items():
        members = beats.members(cohort, group)
        if not members.any():
            continue
        shares = None if beats.shares is None else beats.shares[members]
        rows = wave_effect_rows(beats.effects[members], beats.patient_ids[members],
                                list(cohort.spec["leads"]), config["PATIENT_BOOTSTRAP"],
                                config["SEED"], shares)
        tables[name] = {"rows": rows, "beats": int(members.sum()),
                        "patients": int(len(np.unique(beats.patient_ids[members])))}
    return tables


def write_maps(path, beats):
    """saliency_maps.npz: maps, probabilities, cohort row index, patient ID and group."""
    with atomic_write(path) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, maps=np.asarray(beats.maps, dtype=np.float32),
                            probabilities=beats.prob.astype(np.float32), index=beats.index,
                            patient_id=beats.patient_ids.astype(str), group=beats.groups)


def write_explanation_checks(model, beats, cohort, class_names, config, log):
    """explanation_checks.json, wave_importance.csv and the checks' figures."""
    output_dir, spec = config["OUTPUT_DIR"], cohort.spec
    checks = explanation_checks_report(model, beats, cohort, config)
    log_explanation_checks(checks, log, class_names[1])
    write_json_atomic(os.path.join(output_dir, "explanation_checks.json"), checks)
    if checks.get("wave_importance"):
        write_wave_importance_csv(os.path.join(output_dir, "wave_importance.csv"),
                                  checks["wave_importance"])
    if beats.shares is not None and config["WAVE_IMPORTANCE"]:
        truth = spec.get("ground_truth") or {}   # only marks the truth on the figure
        members = {name: beats.shares[beats.members(cohort, group)]
                   for name, group in (spec.get("analysis_subgroups") or {}).items()}
        plot_wave_importance_heatmap(os.path.join(output_dir, "wave_importance_heatmap.png"),
                                     members, list(spec["leads"]), truth.get("lvr_leads", ()),
                                     truth.get("lvr_wave"))
    if "sanity_spearman" in checks:
        plot_sanity_check(os.path.join(output_dir, "sanity_check.png"), checks)
    if "deletion_win_rate" in checks:
        plot_deletion_curves(os.path.join(output_dir, "deletion_curve.png"), checks)


def check_ground_truth(cohort):
    """A ground truth in cohort.json must name leads of the cohort (it is only reported against)."""
    truth = cohort.spec.get("ground_truth") or {}
    unknown = [lead for lead in truth.get("lvr_leads") or () if lead not in cohort.spec["leads"]]
    if unknown:
        raise UserError(f"{cohort.data_dir}/cohort.json: ground_truth lvr_leads {unknown} are not "
                        f"leads of this cohort ({', '.join(cohort.spec['leads'])}); correct them "
                        f"or remove the ground truth")


def checked_training_run(train_dir, checkpoint="best_model.pth"):
    """The run's split record and the path of its checkpoint file, or a clear error."""
    split_path = os.path.join(train_dir, "split.json")
    model_path = os.path.join(train_dir, checkpoint)
    for path in (model_path, split_path):
        if not os.path.exists(path):
            raise UserError(f"{path} not found: TRAIN_DIR must be a finished run of "
                            f"train_MCL_ResNet_1D_class2.py (run it first, or pass "
                            f"--train_dir=...)")
    with open(split_path, encoding="utf-8") as handle:
        split = json.load(handle)
    return split, model_path


def explained_index(cohort, split, model, config):
    """The beats to explain: the run's test beats, or (EXTERNAL) every beat of another cohort
    whose leads, sampling rate and window are the model's."""
    if not config["EXTERNAL"]:
        return test_set(cohort, split, cohort.data_dir, config["TRAIN_DIR"])
    check_geometry(split, model, cohort, config["TRAIN_DIR"])
    return np.arange(len(cohort.group_index))


def test_set(cohort, split, data_dir, train_dir):
    """Indices of the run's test beats in the cohort, after checking it is the run's data."""
    if cohort.fingerprint() != split["data_fingerprint"]:
        raise UserError(f"the data in {data_dir} is not the data the run in {train_dir} was "
                        f"trained on (fingerprint differs; the run used {split['data_dir']}). "
                        f"Pass --data_dir={split['data_dir']}, or --external=True to explain "
                        f"all beats of this other cohort")
    index = np.flatnonzero(np.isin(cohort.patient_ids, np.asarray(split["test"], dtype=str)))
    if index.size == 0:
        raise UserError(f"none of the test patients of {train_dir}/split.json are in {data_dir}")
    return index


def saliency_maps(model, x, y, config, device, fs, generator=None):
    """Maps of METHOD (N, leads, T) and class probabilities (N, classes) of the test beats."""
    maps = method_maps(model, x, y, config, fs, generator=generator)
    probs = []
    with torch.inference_mode():
        for start in range(0, len(x), config["BATCH_SIZE"]):
            xb = torch.from_numpy(np.asarray(x[start:start + config["BATCH_SIZE"]])).to(device)
            probs.append(torch.softmax(model(xb).float(), 1).cpu().numpy())
    return maps, np.concatenate(probs)


def method_maps(model, x, y, config, fs, progress=False, generator=None):
    """attribution_maps of METHOD with the script's settings; SmoothGrad noise from `generator`
    (default: a new one seeded by SEED)."""
    window = max(1, int(round(config["OCCLUSION_WINDOW_MS"] * fs / 1000)))
    if generator is None:
        generator = torch.Generator().manual_seed(config["SEED"])
    return attribution_maps(model, np.asarray(x), np.asarray(y), config["METHOD"],
                            num_samples=config["NUM_SAMPLES"], noise_level=config["NOISE_LEVEL"],
                            generator=generator, ig_steps=config["IG_STEPS"],
                            occlusion_window=min(window, x.shape[2]),
                            batch_size=config["BATCH_SIZE"], progress=progress)


def figure_jobs(x, maps, prob, y, groups, cohort, class_names, config, output_dir,
                segments=None):
    """One job per figure: plain arrays and labels that a worker process can draw from."""
    spec = cohort.spec
    limit = len(x) if config["MAX_FIGURES"] is None else min(len(x), int(config["MAX_FIGURES"]))
    if limit == 0:
        return []
    vmax = float(stored_percentile(maps, 99.5))
    jobs = []
    for i in range(limit):
        subtype = spec["group_names"][spec["groups"][groups[i]]]
        pred = int(prob[i].argmax())
        jobs.append({
            "beat": x[i], "saliency": maps[i], "lead_names": list(spec["leads"]),
            "fs": spec["sampling_rate"], "r_peak_sample": spec.get("r_peak_sample"),
            "index": i, "subtype": subtype, "true_name": class_names[int(y[i])],
            "pred_name": class_names[pred], "prob": float(prob[i, pred]), "vmin": 0.0,
            "vmax": vmax, "dpi": config["FIG_DPI"],
            "segments": segments[i] if segments else None,
            "path": os.path.join(output_dir, subtype,
                                 f"saliency_analysis_{subtype}_sample_{i}.png")})
    return jobs


def stored_percentile(maps, q, chunk=CHUNK_BEATS):
    """np.percentile(maps, q) of a memory-mapped array without a copy in memory: numpy
    partitions a copy in a work file beside it (overwrite_input), so the number is numpy's."""
    if not isinstance(maps, np.memmap) or maps.filename is None:
        return np.percentile(maps, q)
    path = f"{maps.filename}.percentile"
    copy = open_memmap(path, "w+", maps.dtype, maps.shape)
    try:
        for start in range(0, len(maps), chunk):
            copy[start:start + chunk] = maps[start:start + chunk]
        return np.percentile(copy, q, overwrite_input=True)
    finally:
        del copy
        os.remove(path)


def lead_importance(beats, config):
    """(N, leads) importance the lead statistics run on, and a note on beats without evidence.

    "map": the map averaged over time. "wave_effects": each lead's positive segment-swap effects
    summed over its waves (evidence for the true class); a beat whose swaps never lower
    P(true class) has no evidence in any lead and gets equal importance everywhere. So does a
    beat whose map is zero everywhere (a model so sure of a beat that its gradient underflows);
    the note counts those beats.
    """
    if config["LEAD_IMPORTANCE"] != "wave_effects":
        importance = beats.maps.mean(axis=2)
        empty = (importance <= 0).all(axis=1)
        return importance + 1e-12 * empty[:, None], int(empty.sum())
    evidence = np.clip(np.nan_to_num(beats.effects), 0, None).sum(axis=2)
    empty = (evidence <= 0).all(axis=1) & (beats.y == 1)
    return evidence + 1e-12, int(empty.sum())


def quantitative_analysis(beats, cohort, config):
    """Per analysis subgroup (LVR-positive beats of a group): lead statistics over beats (the
    original's keys), over patients (`patient_level`) and the ground-truth check."""
    spec = cohort.spec
    lead_names = list(spec["leads"])
    truth = (spec.get("ground_truth") or {}).get("lvr_leads")
    importance, without_evidence = lead_importance(beats, config)
    results, arrays = {}, {}
    for name, group in (spec.get("analysis_subgroups") or {}).items():
        members = beats.members(cohort, group)
        values = importance[members]
        arrays[name] = values / np.maximum(values.sum(1, keepdims=True), 1e-12)
        if len(values) == 0:
            results[name] = {"sample_count": 0, "status": "no samples in the test set"}
            continue
        if not has_lead_resolution(config["METHOD"]) and config["LEAD_IMPORTANCE"] == "map":
            results[name] = {"sample_count": int(len(values)),
                             "status": f"{config['METHOD']} gives every lead the same map: no "
                                       f"lead statistics (use another METHOD or "
                                       f"LEAD_IMPORTANCE=wave_effects)"}
            continue
        stats = subgroup_lead_statistics(values, lead_names)
        stats["lead_importance_source"] = config["LEAD_IMPORTANCE"]
        stats["patient_level"] = patient_level_lead_statistics(
            values, beats.patient_ids[members], lead_names, n_boot=config["PATIENT_BOOTSTRAP"],
            seed=config["SEED"])
        patients = stats["patient_level"].get("patient_count", 0)
        if patients < SMALL_SUBGROUP_PATIENTS:
            stats["small_sample_warning"] = (
                f"{patients} patients: below {SMALL_SUBGROUP_PATIENTS} the lead statistics are "
                f"not stable; the beat-level p-values count a patient's beats as independent "
                f"and are far too small")
        if without_evidence is not None:
            stats["beats_without_evidence"] = without_evidence
        if truth:
            stats["ground_truth_check"] = ground_truth_check(values, lead_names, truth)
            _, rows = patient_means(arrays[name], beats.patient_ids[members])
            stats["patient_level"]["ground_truth_check"] = ground_truth_check(rows, lead_names,
                                                                              truth)
        results[name] = stats
    return results, arrays


def explanation_checks_report(model, beats, cohort, config):
    """Wave-level importance, randomisation sanity check, deletion test and, for a cohort with
    a ground truth, how well the map and the wave effects localise it, as one dict."""
    x, y, maps = beats.x, beats.y, beats.maps
    shares, density = beats.shares, beats.density
    spec = cohort.spec
    lead_names = list(spec["leads"])
    report, positive = {}, y == 1
    if shares is not None and config["WAVE_IMPORTANCE"]:
        report["wave_importance"] = {}
        for name, group in (spec.get("analysis_subgroups") or {}).items():
            members = beats.members(cohort, group)
            if members.any():
                report["wave_importance"][name] = wave_importance_table(
                    shares[members], lead_names, None if density is None else density[members])
    if config["SANITY_CHECK"]:
        rng = np.random.default_rng(config["SEED"])
        chosen = np.sort(rng.choice(len(x), min(len(x), config["SANITY_SAMPLES"]), replace=False))
        sanity = sanity_check(model, torch.from_numpy(np.asarray(x[chosen])),
                              torch.from_numpy(y[chosen]),
                              sanity_saliency_fn(config, spec["sampling_rate"]),
                              seed=config["SEED"])
        sanity["sanity_sample_count"] = sanity.pop("sample_count")
        report.update(sanity)
    if config["DELETION_TEST"] and positive.any():
        deletion = deletion_test(model, torch.from_numpy(np.asarray(x[positive])),
                                 torch.from_numpy(y[positive]), maps.mean(axis=2)[positive],
                                 max_k=config["DELETION_MAX_K"],
                                 random_draws=config["DELETION_DRAWS"], seed=config["SEED"])
        deletion["deletion_count"] = deletion.pop("sample_count")
        for per_sample in ("auc_top_per_sample", "auc_random_per_sample"):
            deletion.pop(per_sample)
        report.update(deletion)
    if beats.effects is not None:
        report["wave_effects"] = {name: {"top_cells": sorted(table["rows"],
                                                             key=lambda r: r["rank"])[:5],
                                         "beats": table["beats"], "patients": table["patients"]}
                                  for name, table in beats.effect_tables.items()}
        report["wave_effects_settings"] = {k.lower(): config[k] for k in (
            "WAVE_REFERENCE", "WAVE_ALIGNMENT", "WAVE_BLEND_MS", "PATIENT_BOOTSTRAP")}
    truth = spec.get("ground_truth") or {}
    if truth.get("lvr_leads") and truth.get("lvr_window_ms"):
        report["localisation"] = localisation_report(beats, cohort, config, truth)
    return report


def localisation_report(beats, cohort, config, truth):
    """Only for a cohort whose ground truth is known: map mass and rank accuracy against chance,
    and the ranks of the true lead x wave cells among all cells of the wave effects."""
    spec = cohort.spec
    mask = truth_mask(spec["leads"], truth["lvr_leads"], truth["lvr_window_ms"],
                      spec["sampling_rate"], beats.maps.shape[2])
    report = {"method": config["METHOD"], "true_leads": list(truth["lvr_leads"]),
              "true_wave": truth.get("lvr_wave"), "true_window_ms": truth["lvr_window_ms"]}
    tables = beats.effect_tables or {}
    for name, group in (spec.get("analysis_subgroups") or {}).items():
        members = beats.members(cohort, group)
        if not members.any():
            continue
        entry = {"map": localisation(beats.maps[members], mask, beats.patient_ids[members])}
        if name in tables and truth.get("lvr_wave"):
            entry["wave_effects"] = true_cell_ranks(tables[name]["rows"], truth["lvr_leads"],
                                                    truth["lvr_wave"])
        report[name] = entry
    return report


def sanity_saliency_fn(config, fs):
    """The map of METHOD as the randomisation check calls it, with the same noise every call."""
    if config["METHOD"] == "smoothgrad":
        return smoothgrad_saliency_fn(config["NUM_SAMPLES"], config["NOISE_LEVEL"],
                                      config["SEED"])
    return lambda model, x, y: method_maps(model, x.numpy(), y.numpy(), config, fs)


def delineation_leads(option, spec):
    """"all", or the named leads of DELINEATION_LEADS after checking they are the cohort's."""
    if option.strip().lower() == "all":
        return "all"
    names = [name.strip() for name in option.split(",") if name.strip()]
    unknown = [name for name in names if name not in spec["leads"]]
    if unknown or not names:
        raise UserError(f"DELINEATION_LEADS={option!r}: {', '.join(unknown) or 'no lead'} is not "
                        f"a lead of this cohort; use all or some of {', '.join(spec['leads'])}")
    return tuple(names)
