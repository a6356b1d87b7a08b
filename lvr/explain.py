"""The saliency analysis of Saliency_ana2_sys.py: load run -> explain -> figures -> statistics ->
checks -> provenance.

`run_saliency_analysis(config)` explains a 2-class training run on its test patients: SmoothGrad
maps, wave delineation, per-sample figures, lead statistics per analysis subgroup, the
explanation checks (wave importance, randomisation sanity check, deletion test) and
saliency_run.json. The cohort's ground truth is read only to report how well the analysis found
it (ground_truth_check, the marks on the wave heatmap), never to compute a statistic.
"""
import csv
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from lvr.checkpoints import load_checkpoint
from lvr.cohort import load_cohort, set_seed, standardize_beats
from lvr.config import UserError
from lvr.delineation import beat_segments_batch
from lvr.demo import resolve_data_dir
from lvr.distributed import resolve_device
from lvr.explanation_checks import (deletion_test, sanity_check, smoothgrad_saliency_fn,
                                    wave_importance_density, wave_importance_shares,
                                    wave_importance_table)
from lvr.figures.checks import (plot_deletion_curves, plot_sanity_check,
                                plot_wave_importance_heatmap)
from lvr.figures.saliency import (draw_sample_figures, plot_lead_importance_comparison,
                                  plot_lead_importance_heatmap)
from lvr.lead_stats import ground_truth_check, subgroup_lead_statistics
from lvr.leads import WAVES
from lvr.run_folder import (atomic_write, library_versions, prepare_output_dir,
                            write_json_atomic)
from lvr.smoothgrad import smoothgrad


@dataclass
class ExplainedBeats:
    """The test beats of the run and what the analysis found in them."""
    index: np.ndarray        # rows of the cohort
    x: np.ndarray            # standardised beats (N, leads, T)
    y: np.ndarray            # binary labels
    groups: np.ndarray       # group index of each beat
    maps: np.ndarray         # SmoothGrad (N, leads, T)
    prob: np.ndarray         # class probabilities (N, 2)
    segments: list = None    # wave spans per beat (WAVE_IMPORTANCE)
    shares: np.ndarray = None   # share of each lead's saliency per wave (N, leads, 5)
    density: np.ndarray = None  # shares per unit of wave duration (N, leads, 5)


def run_saliency_analysis(config, log=print):
    """The whole analysis as configured; writes everything into OUTPUT_DIR."""
    start = time.time()
    output_dir = config["OUTPUT_DIR"]
    split, model_path = checked_training_run(config["TRAIN_DIR"], config["CHECKPOINT"])
    data_dir = resolve_data_dir(config["DATA_DIR"], log=log)
    cohort = load_cohort(data_dir, allow_pickle=config["ALLOW_PICKLE"])
    index = test_set(cohort, split, data_dir, config["TRAIN_DIR"])
    wave_leads = (delineation_leads(config["DELINEATION_LEADS"], cohort.spec)
                  if config["WAVE_IMPORTANCE"] else None)
    device = resolve_device(config["DEVICE"])
    model, checkpoint = load_checkpoint(model_path, map_location=device)
    if model.config["num_classes"] != 2:
        raise UserError(f"{model_path} is a {model.config['num_classes']}-class model; this "
                        f"analysis explains the 2-class (LVR) model")
    set_seed(config["SEED"])
    prepare_output_dir(output_dir, finished_file=None)
    class_names = list(checkpoint.get("class_names") or cohort.class_names("binary"))
    log(f"Explaining {model_path} ({model.config['experiment']}) on {len(index)} test beats of "
        f"{len(np.unique(cohort.patient_ids[index]))} patients from {data_dir}; SmoothGrad "
        f"{config['NUM_SAMPLES']} copies, noise {config['NOISE_LEVEL']}, on {device}")
    beats = explained_beats(model, cohort, index, config, device, wave_leads, log)
    draw_figures(beats, cohort, class_names, config, log)
    write_lead_statistics(beats, cohort, output_dir, log)
    if config["WAVE_IMPORTANCE"] or config["SANITY_CHECK"] or config["DELETION_TEST"]:
        write_explanation_checks(model, beats, cohort, class_names, config, log)
    write_json_atomic(os.path.join(output_dir, "saliency_run.json"), {
        "config": config, "train_dir": config["TRAIN_DIR"], "data_dir": data_dir,
        "data_fingerprint": cohort.fingerprint(), "test_beats": int(len(index)),
        "test_patients": split["test"], "device": str(device), "versions": library_versions(),
        "wall_time_s": round(time.time() - start, 2)})
    written = sorted(name for name in os.listdir(output_dir)
                     if os.path.isfile(os.path.join(output_dir, name)))
    log(f"\nDone in {time.time() - start:.0f} s: {output_dir}/ holds {', '.join(written)}")


def explained_beats(model, cohort, index, config, device, wave_leads, log):
    """SmoothGrad maps and probabilities of the test beats, and their wave segments."""
    x = standardize_beats(cohort.beats[index])
    y = cohort.labels("binary")[index]
    maps, prob = saliency_maps(model, x, y, config, device)
    beats = ExplainedBeats(index=index, x=x, y=y, groups=cohort.group_index[index], maps=maps,
                           prob=prob)
    if wave_leads is not None:
        found = beat_segments_batch(cohort.beats[index], cohort.spec["sampling_rate"],
                                    lead_names=list(cohort.spec["leads"]),
                                    leads=wave_leads, progress=True)
        beats.segments = [{w: seg[w] for w in WAVES} for seg in found]
        beats.shares = wave_importance_shares(maps, beats.segments)
        beats.density = wave_importance_density(beats.shares, beats.segments, maps.shape[2])
        fallback = sum(seg["method"] == "fallback" for seg in found)
        log(f"Wave delineation (neurokit2, median over "
            f"{'all leads' if wave_leads == 'all' else ', '.join(wave_leads)}): "
            f"{len(found) - fallback} of {len(found)} beats"
            + (f"; {fallback} fell back to standard intervals around R" if fallback else ""))
    return beats


def draw_figures(beats, cohort, class_names, config, log):
    """The per-sample figures, drawn in FIGURE_WORKERS processes."""
    jobs = figure_jobs(beats.x, beats.maps, beats.prob, beats.y, beats.groups, cohort,
                       class_names, config, config["OUTPUT_DIR"], beats.segments)
    with tqdm(total=len(jobs), desc="figures", disable=None, dynamic_ncols=True) as progress:
        for _ in draw_sample_figures(jobs, config["FIGURE_WORKERS"], progress):
            pass
    log(f"Per-sample figures: {len(jobs)} in {config['OUTPUT_DIR']}/<subtype>/")


def write_lead_statistics(beats, cohort, output_dir, log):
    """quantitative_consistency_analysis.json and the two lead-importance figures."""
    results, arrays = quantitative_analysis(beats, cohort)
    for name, stats in results.items():
        log_subgroup(subgroup_label(name, cohort.spec), stats, log)
    write_json_atomic(os.path.join(output_dir, "quantitative_consistency_analysis.json"), results)
    lead_names = list(cohort.spec["leads"])
    labelled = {subgroup_label(name, cohort.spec): values for name, values in arrays.items()}
    plot_lead_importance_comparison(os.path.join(output_dir, "lead_importance_comparison.png"),
                                    labelled, lead_names)
    plot_lead_importance_heatmap(os.path.join(output_dir, "lead_importance_heatmap.png"),
                                 labelled, lead_names)


def write_explanation_checks(model, beats, cohort, class_names, config, log):
    """explanation_checks.json, wave_importance.csv and the checks' figures."""
    output_dir, spec = config["OUTPUT_DIR"], cohort.spec
    checks = explanation_checks_report(model, beats, cohort, config)
    log_explanation_checks(checks, log, class_names[1])
    write_json_atomic(os.path.join(output_dir, "explanation_checks.json"), checks)
    if checks.get("wave_importance"):
        write_wave_importance_csv(os.path.join(output_dir, "wave_importance.csv"),
                                  checks["wave_importance"])
    if beats.shares is not None:
        truth = spec.get("ground_truth") or {}   # only marks the truth on the figure
        members = {name: beats.shares[(beats.groups == spec["groups"].index(group))
                                      & (beats.y == 1)]
                   for name, group in (spec.get("analysis_subgroups") or {}).items()}
        plot_wave_importance_heatmap(os.path.join(output_dir, "wave_importance_heatmap.png"),
                                     members, list(spec["leads"]), truth.get("lvr_leads", ()),
                                     truth.get("lvr_wave"))
    if "sanity_spearman" in checks:
        plot_sanity_check(os.path.join(output_dir, "sanity_check.png"), checks)
    if "deletion_win_rate" in checks:
        plot_deletion_curves(os.path.join(output_dir, "deletion_curve.png"), checks)


def checked_training_run(train_dir, checkpoint="best_model.pth"):
    """The run's split record and the path of its checkpoint file, or a clear error."""
    split_path = os.path.join(train_dir, "split.json")
    model_path = os.path.join(train_dir, checkpoint)
    for path in (model_path, split_path):
        if not os.path.exists(path):
            raise UserError(f"{path} not found: TRAIN_DIR must be a finished run of "
                            f"train_MCL_ResNet_1D_class2.py (run it first, or pass --train_dir=...)")
    with open(split_path, encoding="utf-8") as handle:
        split = json.load(handle)
    return split, model_path


def test_set(cohort, split, data_dir, train_dir):
    """Indices of the run's test beats in the cohort, after checking it is the run's data."""
    if cohort.fingerprint() != split["data_fingerprint"]:
        raise UserError(f"the data in {data_dir} is not the data the run in {train_dir} was "
                        f"trained on (fingerprint differs; the run used {split['data_dir']}). "
                        f"Pass --data_dir={split['data_dir']} or retrain on this data")
    index = np.flatnonzero(np.isin(cohort.patient_ids, np.asarray(split["test"], dtype=str)))
    if index.size == 0:
        raise UserError(f"none of the test patients of {train_dir}/split.json are in {data_dir}")
    return index


def saliency_maps(model, x, y, config, device):
    """SmoothGrad maps (N, leads, T) and class probabilities (N, classes) of the test beats."""
    generator = torch.Generator().manual_seed(config["SEED"])
    maps, probs = [], []
    batches = range(0, len(x), config["BATCH_SIZE"])
    for start in tqdm(batches, desc="SmoothGrad", disable=None, dynamic_ncols=True):
        xb = torch.from_numpy(x[start:start + config["BATCH_SIZE"]])
        yb = torch.from_numpy(y[start:start + config["BATCH_SIZE"]])
        maps.append(smoothgrad(model, xb, yb, config["NUM_SAMPLES"], config["NOISE_LEVEL"],
                               generator=generator).numpy())
        with torch.inference_mode():
            probs.append(torch.softmax(model(xb.to(device)).float(), 1).cpu().numpy())
    return np.concatenate(maps), np.concatenate(probs)


def figure_jobs(x, maps, prob, y, groups, cohort, class_names, config, output_dir,
                segments=None):
    """One job per figure: plain arrays and labels that a worker process can draw from."""
    spec = cohort.spec
    vmax = float(np.percentile(maps, 99.5))
    limit = len(x) if config["MAX_FIGURES"] is None else min(len(x), int(config["MAX_FIGURES"]))
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
            "path": os.path.join(output_dir, subtype, f"saliency_analysis_{subtype}_sample_{i}.png")})
    return jobs


def quantitative_analysis(beats, cohort):
    """Per analysis subgroup (LVR-positive beats of a group): lead statistics and truth check."""
    maps, groups, y, spec = beats.maps, beats.groups, beats.y, cohort.spec
    lead_names = list(spec["leads"])
    truth = (spec.get("ground_truth") or {}).get("lvr_leads")
    importance = maps.mean(axis=2)
    results, arrays = {}, {}
    for name, group in (spec.get("analysis_subgroups") or {}).items():
        members = (groups == spec["groups"].index(group)) & (y == 1)
        values = importance[members]
        arrays[name] = values / np.maximum(values.sum(1, keepdims=True), 1e-12)
        if len(values) == 0:
            results[name] = {"sample_count": 0, "status": "no samples in the test set"}
            continue
        results[name] = subgroup_lead_statistics(values, lead_names)
        if truth:
            results[name]["ground_truth_check"] = ground_truth_check(values, lead_names, truth)
    return results, arrays


def explanation_checks_report(model, beats, cohort, config):
    """Wave-level importance, randomisation sanity check and deletion test, as one dict."""
    x, y, maps, groups = beats.x, beats.y, beats.maps, beats.groups
    shares, density = beats.shares, beats.density
    spec = cohort.spec
    lead_names = list(spec["leads"])
    report, positive = {}, y == 1
    if shares is not None:
        report["wave_importance"] = {}
        for name, group in (spec.get("analysis_subgroups") or {}).items():
            members = (groups == spec["groups"].index(group)) & positive
            if members.any():
                report["wave_importance"][name] = wave_importance_table(
                    shares[members], lead_names, None if density is None else density[members])
    if config["SANITY_CHECK"]:
        rng = np.random.default_rng(config["SEED"])
        chosen = np.sort(rng.choice(len(x), min(len(x), config["SANITY_SAMPLES"]), replace=False))
        saliency_fn = smoothgrad_saliency_fn(config["NUM_SAMPLES"], config["NOISE_LEVEL"],
                                             config["SEED"])
        sanity = sanity_check(model, torch.from_numpy(x[chosen]), torch.from_numpy(y[chosen]),
                              saliency_fn, seed=config["SEED"])
        sanity["sanity_sample_count"] = sanity.pop("sample_count")
        report.update(sanity)
    if config["DELETION_TEST"] and positive.any():
        deletion = deletion_test(model, torch.from_numpy(x[positive]),
                                 torch.from_numpy(y[positive]), maps[positive].mean(axis=2),
                                 max_k=config["DELETION_MAX_K"],
                                 random_draws=config["DELETION_DRAWS"], seed=config["SEED"])
        deletion["deletion_count"] = deletion.pop("sample_count")
        for per_sample in ("auc_top_per_sample", "auc_random_per_sample"):
            deletion.pop(per_sample)
        report.update(deletion)
    return report


def log_explanation_checks(report, log, positive_name="LVR"):
    if "sanity_spearman" in report:
        log(f"\nRandomisation sanity check ({report['sanity_sample_count']} beats): Spearman "
            f"between the trained and a fully randomised model's maps "
            f"{report['sanity_spearman']:.3f}")
        if report["sanity_flag"]:
            log(f"  WARNING: the saliency barely changes when the model's weights are randomised "
                f"(>= {report['sanity_threshold']}); it does not explain this model")
        stages = report.get("sanity_cascading", [])
        if stages:
            log("  cascading from the head: " + ", ".join(
                f"{s['layers_randomised']} {s['spearman']:.2f}" for s in stages))
    if "deletion_win_rate" in report:
        curve = report["deletion_curve"]
        log(f"Deletion test ({report['deletion_count']} {positive_name} beats): removing the top "
            f"leads beats removing random leads in {100 * report['deletion_win_rate']:.0f}% of "
            f"beats; P(true class) after {curve['k'][-1]} leads: top "
            f"{curve['top_mean'][-1]:.2f}, random {curve['random_mean'][-1]:.2f}")
    for name, table in report.get("wave_importance", {}).items():
        tops = ", ".join(f"{lead} {row['top_wave']}" for lead, row in table.items()
                         if isinstance(row, dict) and "top_wave" in row)
        log(f"Wave with the largest share of saliency, {name}: {tops}")


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


def write_wave_importance_csv(path, tables):
    """wave_importance as rows: subgroup, lead, wave, share and density (mean, sd), beats."""
    with atomic_write(path) as temporary, open(temporary, "w", newline="",
                                                encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subgroup", "lead", "wave", "mean_share", "sd_share", "mean_density",
                         "sd_density", "beats"])
        for name, table in tables.items():
            for lead, row in table.items():
                if not isinstance(row, dict):
                    continue
                for wave in (*WAVES, "other"):
                    dens = row.get("density", {}).get(wave, {})
                    writer.writerow([name, lead, wave,
                                     *(plain(row[wave][k]) for k in ("mean", "sd")),
                                     *(plain(dens.get(k)) for k in ("mean", "sd")),
                                     table["sample_count"]])


def plain(value):
    """A CSV cell: 4 decimals, empty for a missing value."""
    return "" if value is None else f"{value:.4f}"


def subgroup_label(name, spec):
    """'STEMI LVR' for the original's groups; the plain subgroup name for other cohorts."""
    seed_groups = spec["groups"] == ["NS_0", "NS_1", "ST_0", "ST_1"]
    return f"{name} LVR" if seed_groups else name


def log_subgroup(label, stats, log):
    count = stats.get("sample_count", 0)
    if stats.get("status", "ok") != "ok":
        log(f"\n[{label}] {count} samples: {stats['status']}")
        return
    log(f"\n[{label}] {count} samples; key leads {', '.join(stats['top3_leads'])} "
        f"({', '.join(f'{s:.3f}' for s in stats['top3_scores'])})")
    log(f"  one-way ANOVA over 12 leads (original): F={stats['anova_f']:.2f}, "
        f"p={stats['anova_p']:.2e}; Friedman (repeated measures): chi2={stats['friedman_chi2']:.1f},"
        f" p={stats['friedman_p']:.2e}")
    log(f"  consistency: strict {stats['strict_consistency_percentage']:.1f}%, loose "
        f"{stats['loose_consistency_percentage']:.1f}%, key leads in a sample's top 3: "
        f"{stats['avg_key_in_top3']:.2f}/3")
    log(f"  {stats['icc_form_name']}: {stats['icc']:.3f} "
        f"(95% CI {stats['icc_ci_lower']:.3f} to {stats['icc_ci_upper']:.3f})")
    check = stats.get("ground_truth_check")
    if check:
        log(f"  ground truth: {check['true_leads_in_top3']} of the true LVR leads in the top 3 "
            f"({', '.join(check['true_leads_found']) or 'none'}); "
            f"{100 * check['share_samples_top3_has_2_true']:.0f}% of samples have 2 of them in "
            f"their own top 3")
