"""The saliency analysis of Saliency_ana2_sys.py: load run -> explain -> figures -> statistics ->
checks -> provenance.

`run_saliency_analysis(config)` explains a 2-class training run on its test patients: SmoothGrad
maps, wave delineation, per-sample figures, lead statistics per analysis subgroup, the
explanation checks (wave importance, randomisation sanity check, deletion test) and
saliency_run.json. The cohort's ground truth is read only to report how well the analysis found
it (ground_truth_check, the marks on the wave heatmap), never to compute a statistic.
The steps live in lvr.explain.maps (the maps), swap_effects (the wave effects), tables (the
statistics) and check_report (the checks); this module runs them and writes what they find.
"""
import os
import tempfile
import time

import numpy as np

from lvr.progress import progress_bar
from lvr.choices import METHODS
from lvr.data.beats import set_seed
from lvr.data.cohort import load_cohort
from lvr.data.demo import resolve_data_dir
from lvr.data.geometry import check_geometry
from lvr.errors import UserError
from lvr.explain.check_report import explanation_checks_report
from lvr.explain.console import (REPORT_NOTE, log_explanation_checks, log_subgroup,
                                 log_wave_effects, results_source, subgroup_label,
                                 write_wave_effects_csv, write_wave_importance_csv)
from lvr.explain.fold_agreement import fold_agreement, log_fold_agreement
from lvr.explain.maps import MapSettings, explained_beats, method_description, timed
from lvr.explain.swap_effects import segment_swap_effects
from lvr.explain.tables import lead_by_wave, quantitative_analysis, wave_effect_tables
from lvr.measure.delineation import delineation_lead_names
from lvr.report.check_figures import (plot_deletion_curves, plot_sanity_check,
                                      plot_wave_effects_heatmap, plot_wave_importance_heatmap)
from lvr.report.html import write_report
from lvr.report.results import counted
from lvr.report.saliency_figures import (draw_sample_figures, plot_lead_importance_comparison,
                                         plot_lead_importance_heatmap)
from lvr.run_folder import (atomic_write, output_lock, prepare_output_dir, run_record,
                            write_json_atomic)
from lvr.train.checkpoints import checkpoint_normalisation, load_checkpoint
from lvr.train.distributed import resolve_device
from lvr.train.finished_run import read_finished_run, recorded_cohort


def run_saliency_analysis(config, log=print):
    """The whole analysis as configured; writes everything into OUTPUT_DIR. A cross-validation
    run (TRAIN_DIR holds fold_1/, fold_2/, ...) is explained fold by fold, each fold's model on
    its own test patients, and fold_agreement.json says how far the folds agree."""
    settings = MapSettings(method=config["METHOD"], num_samples=config["NUM_SAMPLES"],
                           noise_level=config["NOISE_LEVEL"], ig_steps=config["IG_STEPS"],
                           occlusion_window_ms=config["OCCLUSION_WINDOW_MS"],
                           batch_size=config["BATCH_SIZE"], seed=config["SEED"])
    options = dict(
        checkpoint=config["CHECKPOINT"], allow_pickle=config["ALLOW_PICKLE"],
        device=config["DEVICE"], external=config["EXTERNAL"], settings=settings,
        delineation_leads=config["DELINEATION_LEADS"], figure_workers=config["FIGURE_WORKERS"],
        max_figures=config["MAX_FIGURES"], fig_dpi=config["FIG_DPI"],
        lead_importance=config["LEAD_IMPORTANCE"], patient_bootstrap=config["PATIENT_BOOTSTRAP"],
        wave_importance=config["WAVE_IMPORTANCE"], wave_effects=config["WAVE_EFFECTS"],
        wave_reference=config["WAVE_REFERENCE"], wave_alignment=config["WAVE_ALIGNMENT"],
        wave_blend_ms=config["WAVE_BLEND_MS"], run_sanity_check=config["SANITY_CHECK"],
        sanity_samples=config["SANITY_SAMPLES"], run_deletion_test=config["DELETION_TEST"],
        deletion_max_k=config["DELETION_MAX_K"], deletion_draws=config["DELETION_DRAWS"],
        save_maps=config["SAVE_MAPS"], html_report=config["REPORT"], log=log)
    train_dir, output_dir = config["TRAIN_DIR"], config["OUTPUT_DIR"]
    folds = cross_validation_folds(train_dir)
    data_dir = cohort_folder(config["DATA_DIR"], folds[0] if folds else train_dir,
                             external=config["EXTERNAL"], checkpoint=config["CHECKPOINT"],
                             log=log)
    if not folds:
        return explain_run(train_dir, output_dir, data_dir, recorded_config=config, **options)
    prepare_output_dir(output_dir, log=log, finished_file=None)
    with output_lock(output_dir):   # a second analysis into this folder is refused
        return explain_folds(folds, output_dir, data_dir, recorded_config=config, **options)


def explain_folds(folds, output_dir, data_dir, *, recorded_config, log, **options):
    """explain_run of each fold of a cross-validation run into output_dir/fold_<k>, and
    fold_agreement.json: how far the folds' explanations agree."""
    outcomes = []
    for k, fold_dir in enumerate(folds, 1):
        log(f"\n===== fold {k}/{len(folds)}: {fold_dir} =====")
        fold_output = os.path.join(output_dir, f"fold_{k}")
        recorded = dict(recorded_config, DATA_DIR=data_dir, TRAIN_DIR=fold_dir,
                        OUTPUT_DIR=fold_output)
        outcomes.append(explain_run(fold_dir, fold_output, data_dir, recorded_config=recorded,
                                    log=log, **options))
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


def cohort_folder(data_dir, train_dir, *, external, checkpoint, log):
    """The cohort to explain: DATA_DIR when given (the demo when it is the default folder
    holding no cohort), else the cohort the run in `train_dir` was trained on, from its
    split.json (the demo made again when that was the demo and it is gone). EXTERNAL needs
    DATA_DIR: the run's own cohort is not another cohort."""
    if data_dir:
        return resolve_data_dir(data_dir, log=log)
    if external:
        raise UserError("--external=True explains another cohort than the run's: give it with "
                        "--data_dir=FOLDER")
    return recorded_cohort(read_finished_run(train_dir, option="--train_dir",
                                             checkpoint=checkpoint), log=log)


def explain_run(train_dir, output_dir, data_dir, *, recorded_config, checkpoint, allow_pickle,
                device, external, settings, delineation_leads, figure_workers, max_figures,
                fig_dpi, lead_importance, patient_bootstrap, wave_importance, wave_effects,
                wave_reference, wave_alignment, wave_blend_ms, run_sanity_check, sanity_samples,
                run_deletion_test, deletion_max_k, deletion_draws, save_maps, html_report,
                log=print):
    """The analysis of the model in `train_dir` (a run or one fold), written to `output_dir`;
    returns its statistics. The options are the script's constants of the same names
    (`settings`: the maps' MapSettings; `recorded_config`: the configuration saliency_run.json
    records)."""
    start = time.time()
    run = read_finished_run(train_dir, option="--train_dir", checkpoint=checkpoint)
    cohort = load_cohort(data_dir, allow_pickle=allow_pickle)
    for text in cohort.warnings:
        log(f"warning: {text}")
    check_ground_truth(cohort)
    wave_leads = (delineation_lead_names(delineation_leads, cohort.spec["leads"])
                  if wave_importance or wave_effects else None)
    device = resolve_device(device)
    model, class_names, normalisation = two_class_model(run.checkpoint_path, device, cohort)
    index = explained_index(cohort, run.split, model, train_dir, external)
    set_seed(settings.seed)
    prepare_output_dir(output_dir, log=log, finished_file=None)
    timings = {}
    # the lock refuses a second analysis into this folder; the test beats and their maps live
    # in work files beside the outputs, never whole in memory
    with output_lock(output_dir), \
            tempfile.TemporaryDirectory(prefix=".work-", dir=output_dir) as work_dir:
        log(f"Explaining {run.checkpoint_path} ({model.config['experiment']}) on "
            f"{counted(len(index), 'beat' if external else 'test beat')}"
            f"{' (external cohort: all)' if external else ''} of "
            f"{counted(len(np.unique(cohort.patient_ids[index])), 'patient')} from {data_dir}; "
            f"{method_description(settings)}, on {device}; inputs normalised {normalisation}")
        beats = explained_beats(model, cohort, index, settings, device, work_dir,
                                timings=timings, normalisation=normalisation,
                                wave_leads=wave_leads, workers=figure_workers, log=log)
        if wave_effects:
            with timed(timings, "wave_effects"):
                beats.effects = segment_swap_effects(
                    model, beats, cohort, class_names=class_names,
                    train_patients=run.split["train"],
                    train_dir=train_dir, external=external, reference=wave_reference,
                    alignment=wave_alignment, blend_ms=wave_blend_ms, wave_leads=wave_leads,
                    normalisation=normalisation, log=log)
                beats.effect_tables = wave_effect_tables(beats, cohort, patient_bootstrap,
                                                         settings.seed)
        with timed(timings, "figures"):
            draw_figures(beats, cohort, class_names, output_dir, max_figures=max_figures,
                         dpi=fig_dpi, workers=figure_workers, map_name=METHODS[settings.method],
                         log=log)
        with timed(timings, "lead_statistics"):
            statistics = write_lead_statistics(beats, cohort, output_dir, class_names[1],
                                               method=settings.method,
                                               source=lead_importance, n_boot=patient_bootstrap,
                                               seed=settings.seed, log=log)
        if beats.effects is not None:
            write_wave_effects(beats, cohort, output_dir, settings.method, class_names[1], log)
        if wave_importance or run_sanity_check or run_deletion_test or beats.effects is not None:
            with timed(timings, "checks"):
                checks = explanation_checks_report(
                    model, beats, cohort, settings, wave_importance=wave_importance,
                    run_sanity_check=run_sanity_check, sanity_samples=sanity_samples,
                    run_deletion_test=run_deletion_test, deletion_max_k=deletion_max_k,
                    deletion_draws=deletion_draws, effect_settings={
                        "wave_reference": wave_reference, "wave_alignment": wave_alignment,
                        "wave_blend_ms": wave_blend_ms, "patient_bootstrap": patient_bootstrap})
                write_explanation_checks(checks, beats, cohort, class_names[1], output_dir,
                                         wave_importance, log)
        if save_maps:
            write_maps(os.path.join(output_dir, "saliency_maps.npz"), beats)
        write_json_atomic(os.path.join(output_dir, "saliency_run.json"), run_record(
            recorded_config, time.time() - start, cohort=cohort, data_dir=data_dir,
            device=device, train_dir=train_dir, normalisation=normalisation,
            test_beats=int(len(index)),
            test_patients=sorted(set(cohort.patient_ids[index].tolist())),
            step_times_s=timings))
        if html_report:
            write_report(output_dir, log=lambda *_: None)
        written = sorted(name for name in os.listdir(output_dir) if not name.startswith(".")
                         and os.path.isfile(os.path.join(output_dir, name)))
        log(f"\nDone in {time.time() - start:.0f} s: {output_dir}/ holds {', '.join(written)}")
        return {"lead_statistics": statistics, "wave_effects": beats.effect_tables}


def two_class_model(model_path, device, cohort):
    """The checkpoint's model on `device`, its class names (the cohort's when it has none) and
    its input normalisation; a UserError unless it is the 2-class model."""
    model, checkpoint = load_checkpoint(model_path, map_location=device)
    if model.config["num_classes"] != 2:
        raise UserError(f"{model_path} is a {model.config['num_classes']}-class model; this "
                        f"analysis explains a 2-class model")
    normalisation = checkpoint_normalisation(checkpoint, model_path)
    class_names = list(checkpoint.get("class_names") or cohort.class_names("binary"))
    return model, class_names, normalisation


def check_ground_truth(cohort):
    """A ground truth in cohort.json must name leads of the cohort (it is only reported against)."""
    truth = cohort.spec.get("ground_truth") or {}
    unknown = [lead for lead in truth.get("lvr_leads") or () if lead not in cohort.spec["leads"]]
    if unknown:
        raise UserError(f"{cohort.data_dir}/cohort.json: ground_truth lvr_leads {unknown} are not "
                        f"leads of this cohort ({', '.join(cohort.spec['leads'])}); correct them "
                        f"or remove the ground truth")


def explained_index(cohort, split, model, train_dir, external):
    """The beats to explain: the test beats of the run in `train_dir`, or (`external`) every
    beat of another cohort whose leads, sampling rate and window are the model's."""
    if not external:
        return test_set(cohort, split, cohort.data_dir, train_dir)
    check_geometry(split, model, cohort, train_dir)
    return np.arange(len(cohort.group_index))


def test_set(cohort, split, data_dir, train_dir):
    """Indices of the run's test beats in the cohort, after checking it is the run's data."""
    if cohort.fingerprint() != split["data_fingerprint"]:
        if os.path.normpath(str(data_dir)) == os.path.normpath(str(split["data_dir"])):
            raise UserError(f"the data in {data_dir} has changed since the run in {train_dir} "
                            f"was trained on it (fingerprint differs). Pass --data_dir with the "
                            f"run's data, or --data_dir={data_dir} --external=True to explain "
                            f"all its beats")
        raise UserError(f"the data in {data_dir} is not the data the run in {train_dir} was "
                        f"trained on (fingerprint differs; the run used {split['data_dir']}). "
                        f"Pass --data_dir={split['data_dir']}, or --external=True to explain "
                        f"all beats of this other cohort")
    index = np.flatnonzero(np.isin(cohort.patient_ids, np.asarray(split["test"], dtype=str)))
    if index.size == 0:
        raise UserError(f"none of the test patients of {train_dir}/split.json are in {data_dir}")
    return index


def figure_jobs(x, maps, prob, y, groups, spec, class_names, output_dir, *, max_figures, dpi,
                segments=None, map_name="SmoothGrad"):
    """One job per figure (`max_figures` beats taken from every class in turn, see
    figure_beats; None: all): plain arrays and labels that a worker process can draw from.
    `map_name`: the map's name on the colour bar."""
    jobs = []
    for i in figure_beats(y, groups, max_figures):
        subtype = spec["group_names"][spec["groups"][groups[i]]]
        pred = int(prob[i].argmax())
        jobs.append({
            "beat": x[i], "saliency": maps[i], "lead_names": list(spec["leads"]),
            "fs": spec["sampling_rate"], "r_peak_sample": spec.get("r_peak_sample"),
            "index": i, "subtype": subtype, "true_name": class_names[int(y[i])],
            "pred_name": class_names[pred], "prob": float(prob[i, pred]), "dpi": dpi,
            "map_name": map_name, "segments": segments[i] if segments else None,
            "path": os.path.join(output_dir, subtype,
                                 f"saliency_analysis_{subtype}_sample_{i}.png")})
    return jobs


def figure_beats(y, groups, max_figures):
    """The explained beats to draw: all (None), or `max_figures` of them taken from each class
    (true label) in turn, and within a class from each of its groups in turn, each group's
    beats in order; the same beats every time."""
    if max_figures is None:
        return list(range(len(y)))
    per_class = [interleaved([np.flatnonzero((y == label) & (groups == group)).tolist()
                              for group in np.unique(groups[y == label])])
                 for label in np.unique(y)]
    return interleaved(per_class)[:int(max_figures)]


def interleaved(lists):
    """[a0, b0, c0, a1, b1, ...]: the lists' items taken from each list in turn."""
    longest = max((len(items) for items in lists), default=0)
    return [items[i] for i in range(longest) for items in lists if i < len(items)]


def draw_figures(beats, cohort, class_names, output_dir, *, max_figures, dpi, workers,
                 map_name, log):
    """The per-sample figures, drawn in `workers` processes; `map_name`: METHOD's name."""
    jobs = figure_jobs(beats.x, beats.maps, beats.prob, beats.y, beats.groups, cohort.spec,
                       class_names, output_dir, max_figures=max_figures, dpi=dpi,
                       segments=beats.segments, map_name=map_name)
    with progress_bar(total=len(jobs), desc="figures", unit="figure",
                      show=bool(jobs)) as progress:
        for _ in draw_sample_figures(jobs, workers, progress):
            pass
    log(f"Per-sample figures: {len(jobs)} in {output_dir}/<subtype>/"
        + (f" ({per_class_text(jobs, class_names)})" if jobs else ""))


def per_class_text(jobs, class_names):
    """'2 LVR, 1 non-LVR': how many figures show beats of each true class."""
    return ", ".join(f"{sum(job['true_name'] == name for job in jobs)} {name}"
                     for name in class_names)


def write_lead_statistics(beats, cohort, output_dir, positive_name, *, method, source, n_boot,
                          seed, log):
    """quantitative_consistency_analysis.json and the two lead-importance figures;
    `positive_name`: the name of class 1 in the console and the figures."""
    results, arrays = quantitative_analysis(beats, cohort, method=method, source=source,
                                            n_boot=n_boot, seed=seed)
    log(f"\nLead statistics on {results_source(source, method)}. {REPORT_NOTE}")
    for name, stats in results.items():
        log_subgroup(subgroup_label(name, cohort.spec, positive_name), stats, log,
                     positive_name)
    write_json_atomic(os.path.join(output_dir, "quantitative_consistency_analysis.json"), results)
    lead_names = list(cohort.spec["leads"])
    labelled = {subgroup_label(name, cohort.spec, positive_name): values
                for name, values in arrays.items()}
    plot_lead_importance_comparison(os.path.join(output_dir, "lead_importance_comparison.png"),
                                    labelled, lead_names)
    plot_lead_importance_heatmap(os.path.join(output_dir, "lead_importance_heatmap.png"),
                                 labelled, lead_names)
    return results


def write_wave_effects(beats, cohort, output_dir, method, positive_name, log):
    """wave_effects.csv and wave_effects_heatmap.png (ground truth only marks the figure);
    `positive_name`: the name of class 1."""
    spec = cohort.spec
    tables, figure_tables = beats.effect_tables, {}
    write_wave_effects_csv(os.path.join(output_dir, "wave_effects.csv"), tables)
    for name, table in tables.items():
        label = subgroup_label(name, spec, positive_name)
        log_wave_effects(label, table, log)
        figure_tables[label] = {
            "effect": lead_by_wave(table["rows"], "effect"), "patients": table["patients"],
            "share": lead_by_wave(table["rows"], "map_share") if beats.shares is not None
            else None}
    truth = spec.get("ground_truth") or {}   # only marks the truth on the figure
    plot_wave_effects_heatmap(os.path.join(output_dir, "wave_effects_heatmap.png"),
                              figure_tables, list(spec["leads"]), truth.get("lvr_leads", ()),
                              truth.get("lvr_wave"), METHODS[method])


def write_maps(path, beats):
    """saliency_maps.npz: maps, probabilities, cohort row index, patient ID and group."""
    with atomic_write(path) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, maps=np.asarray(beats.maps, dtype=np.float32),
                            probabilities=beats.prob.astype(np.float32), index=beats.index,
                            patient_id=beats.patient_ids.astype(str), group=beats.groups)


def write_explanation_checks(checks, beats, cohort, positive_name, output_dir, wave_importance,
                             log):
    """explanation_checks.json, wave_importance.csv and the checks' figures of the `checks`
    report; `positive_name`: the name of class 1 in the console."""
    spec = cohort.spec
    log_explanation_checks(checks, log, positive_name)
    write_json_atomic(os.path.join(output_dir, "explanation_checks.json"), checks)
    if checks.get("wave_importance"):
        write_wave_importance_csv(os.path.join(output_dir, "wave_importance.csv"),
                                  checks["wave_importance"])
    if beats.shares is not None and wave_importance:
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
