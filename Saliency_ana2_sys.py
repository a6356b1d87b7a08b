"""Explain the 2-class model: SmoothGrad saliency per lead and time on the run's test patients,
per-sample figures, and lead-importance statistics (key leads, ANOVA, Friedman, consistency, ICC).

Reads the model and the test split of a training run (TRAIN_DIR); the data must be the data that
run was trained on. Every constant below can be overridden as --lower_case_name=value.
"""
import json
import os
import time

import numpy as np

from cli import UserError, configure, run_script
from lead_stats import compute_icc, ground_truth_check, subgroup_lead_statistics  # noqa: F401

DATA_DIR = "data"                    # cohort folder the model was trained on (default: demo)
TRAIN_DIR = "results_class2"         # 2-class training run: best_model.pth and split.json
CHECKPOINT = "best_model.pth"        # model file in TRAIN_DIR (last_checkpoint.pth: final epoch)
OUTPUT_DIR = "output_saliencyana2"   # an earlier analysis found here is kept as OUTPUT_DIR.<timestamp>
NUM_SAMPLES = 10                     # SmoothGrad noisy copies per beat (1 with NOISE_LEVEL=0: gradient)
NOISE_LEVEL = 0.1                    # SmoothGrad noise sd, in standardised units
BATCH_SIZE = 32                      # beats per SmoothGrad batch
SEED = 42                            # seeds the SmoothGrad noise
DEVICE = "auto"                      # auto (CUDA if present), cpu, cuda
MAX_FIGURES = None                   # per-sample figures to draw (None: all test beats)
FIG_DPI = 150                        # resolution of the per-sample figures
FIGURE_WORKERS = 2                   # processes drawing figures (1: draw in this process)
WAVE_IMPORTANCE = True               # share of each lead's saliency in its P, PR, QRS, ST, T waves
DELINEATION_LEADS = "all"            # leads combined for wave boundaries: all, or II,V2,V5 (faster)
SANITY_CHECK = True                  # Adebayo et al. 2018: saliency after randomising the weights
SANITY_SAMPLES = 32                  # test beats the randomisation check uses (it reruns SmoothGrad)
DELETION_TEST = True                 # remove each LVR beat's top-k leads vs k random leads
DELETION_MAX_K = 6                   # largest number of leads removed
DELETION_DRAWS = 10                  # random lead orders averaged per beat
ALLOW_PICKLE = False                 # load pickled (object) arrays: only for files you trust


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
    import torch
    from tqdm import tqdm
    from saliency import smoothgrad
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


def quantitative_analysis(maps, groups, y, cohort):
    """Per analysis subgroup (LVR-positive beats of a group): lead statistics and truth check."""
    spec = cohort.spec
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


def explanation_checks_report(model, x, y, maps, groups, shares, cohort, config, log,
                              density=None):
    """Wave-level importance, randomisation sanity check and deletion test, as one dict."""
    import torch
    from explanation_checks import (deletion_test, sanity_check, smoothgrad_saliency_fn,
                                    wave_importance_table)
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
    import csv
    from explanation_checks import WAVES
    with open(path, "w", newline="", encoding="utf-8") as handle:
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


def main():
    config = configure(globals())
    start = time.time()
    from tqdm import tqdm
    from ECG_dataset import load_cohort, resolve_data_dir, set_seed, standardize_beats
    from model import load_checkpoint
    from para_define import (library_versions, prepare_output_dir, resolve_device,
                             write_json_atomic)
    from saliency_figures import (draw_sample_figures, plot_lead_importance_comparison,
                                  plot_lead_importance_heatmap)

    split, model_path = checked_training_run(TRAIN_DIR, CHECKPOINT)
    data_dir = resolve_data_dir(DATA_DIR)
    cohort = load_cohort(data_dir, allow_pickle=ALLOW_PICKLE)
    index = test_set(cohort, split, data_dir, TRAIN_DIR)
    wave_leads = delineation_leads(DELINEATION_LEADS, cohort.spec) if WAVE_IMPORTANCE else None
    device = resolve_device(DEVICE)
    model, checkpoint = load_checkpoint(model_path, map_location=device)
    if model.config["num_classes"] != 2:
        raise UserError(f"{model_path} is a {model.config['num_classes']}-class model; this "
                        f"analysis explains the 2-class (LVR) model")
    model.eval()
    set_seed(SEED)
    prepare_output_dir(OUTPUT_DIR, finished_file=None)

    x = standardize_beats(cohort.beats[index])
    y = cohort.labels("binary")[index]
    groups = cohort.group_index[index]
    class_names = list(checkpoint.get("class_names") or cohort.class_names("binary"))
    print(f"Explaining {model_path} ({model.config['experiment']}) on {len(index)} test beats of "
          f"{len(np.unique(cohort.patient_ids[index]))} patients from {data_dir}; SmoothGrad "
          f"{NUM_SAMPLES} copies, noise {NOISE_LEVEL}, on {device}")
    maps, prob = saliency_maps(model, x, y, config, device)
    segments = shares = density = None
    if WAVE_IMPORTANCE:
        from explanation_checks import (WAVES, beat_segments_batch, wave_importance_density,
                                        wave_importance_shares)
        found = beat_segments_batch(cohort.beats[index], cohort.spec["sampling_rate"],
                                    lead_names=list(cohort.spec["leads"]),
                                    leads=wave_leads, progress=True)
        segments = [{w: seg[w] for w in WAVES} for seg in found]
        shares = wave_importance_shares(maps, segments)
        density = wave_importance_density(shares, segments, maps.shape[2])
        fallback = sum(seg["method"] == "fallback" for seg in found)
        print(f"Wave delineation (neurokit2, median over "
              f"{'all leads' if wave_leads == 'all' else ', '.join(wave_leads)}): "
              f"{len(found) - fallback} of {len(found)} beats"
              + (f"; {fallback} fell back to standard intervals around R" if fallback else ""))

    jobs = figure_jobs(x, maps, prob, y, groups, cohort, class_names, config, OUTPUT_DIR,
                       segments)
    with tqdm(total=len(jobs), desc="figures", disable=None, dynamic_ncols=True) as progress:
        for _ in draw_sample_figures(jobs, FIGURE_WORKERS, progress):
            pass
    print(f"Per-sample figures: {len(jobs)} in {OUTPUT_DIR}/<subtype>/")

    results, arrays = quantitative_analysis(maps, groups, y, cohort)
    for name, stats in results.items():
        log_subgroup(subgroup_label(name, cohort.spec), stats, print)
    write_json_atomic(os.path.join(OUTPUT_DIR, "quantitative_consistency_analysis.json"), results)
    lead_names = list(cohort.spec["leads"])
    labelled = {subgroup_label(name, cohort.spec): values for name, values in arrays.items()}
    plot_lead_importance_comparison(os.path.join(OUTPUT_DIR, "lead_importance_comparison.png"),
                                    labelled, lead_names)
    plot_lead_importance_heatmap(os.path.join(OUTPUT_DIR, "lead_importance_heatmap.png"),
                                 labelled, lead_names)
    if WAVE_IMPORTANCE or SANITY_CHECK or DELETION_TEST:
        from explanation_figures import (plot_deletion_curves, plot_sanity_check,
                                         plot_wave_importance_heatmap)
        checks = explanation_checks_report(model, x, y, maps, groups, shares, cohort, config, print,
                                           density)
        log_explanation_checks(checks, print, class_names[1])
        write_json_atomic(os.path.join(OUTPUT_DIR, "explanation_checks.json"), checks)
        if checks.get("wave_importance"):
            write_wave_importance_csv(os.path.join(OUTPUT_DIR, "wave_importance.csv"),
                                      checks["wave_importance"])
        truth = cohort.spec.get("ground_truth") or {}
        if shares is not None:
            members = {name: shares[(groups == cohort.spec["groups"].index(group)) & (y == 1)]
                       for name, group in (cohort.spec.get("analysis_subgroups") or {}).items()}
            plot_wave_importance_heatmap(os.path.join(OUTPUT_DIR, "wave_importance_heatmap.png"),
                                         members, lead_names, truth.get("lvr_leads", ()),
                                         truth.get("lvr_wave"))
        if "sanity_spearman" in checks:
            plot_sanity_check(os.path.join(OUTPUT_DIR, "sanity_check.png"), checks)
        if "deletion_win_rate" in checks:
            plot_deletion_curves(os.path.join(OUTPUT_DIR, "deletion_curve.png"), checks)
    write_json_atomic(os.path.join(OUTPUT_DIR, "saliency_run.json"), {
        "config": config, "train_dir": TRAIN_DIR, "data_dir": data_dir,
        "data_fingerprint": cohort.fingerprint(), "test_beats": int(len(index)),
        "test_patients": split["test"], "device": str(device), "versions": library_versions(),
        "wall_time_s": round(time.time() - start, 2)})
    written = sorted(name for name in os.listdir(OUTPUT_DIR)
                     if os.path.isfile(os.path.join(OUTPUT_DIR, name)))
    print(f"\nDone in {time.time() - start:.0f} s: {OUTPUT_DIR}/ holds {', '.join(written)}")


if __name__ == "__main__":
    run_script(main)
