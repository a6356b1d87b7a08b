"""What the saliency analysis prints and the tables it writes, apart from its pipeline
(lvr.explain.analysis): console lines of the lead statistics, wave effects and explanation
checks, and the rows of wave_effects.csv and wave_importance.csv."""
import csv

from lvr.choices import METHODS
from lvr.leads import WAVES
from lvr.report.results import counted
from lvr.run_folder import atomic_write
from lvr.stats.delong import p_text

REPORT_NOTE = ("Report the patient-level numbers: a patient's beats are not independent "
               "samples, so beat-level p-values and intervals are too confident. The beat-level "
               "keys are the original analysis's, kept for comparison.")


def results_source(source, method):
    """What the lead statistics were computed on: `source` (LEAD_IMPORTANCE), the map of
    `method` (METHOD) or the wave effects."""
    if source == "wave_effects":
        return "the wave effects summed over each lead's waves (positive parts)"
    return f"the {METHODS[method]} map averaged over time"


def write_wave_effects_csv(path, tables):
    """wave_effects.csv: subgroup, lead, wave, effect with its CI, rank, and the map's share."""
    with atomic_write(path) as temporary, open(temporary, "w", newline="",
                                                encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subgroup", "lead", "wave", "effect", "ci_low", "ci_high", "rank",
                         "map_share"])
        for name, table in tables.items():
            for row in table["rows"]:
                writer.writerow([name, row["lead"], row["wave"],
                                 *(f"{row[k]:.5f}" for k in ("effect", "ci_low", "ci_high")),
                                 row["rank"], plain(row.get("map_share"))])


def log_wave_effects(label, table, log):
    """The subgroup's five largest effects with their CIs, in percentage points of P(true
    class) as wave_effects_heatmap.png shows them (wave_effects.csv holds the fractions)."""
    log(f"Wave effects, {label} ({counted(table['patients'], 'patient')}), drop in P(true "
        f"class) in percentage points: "
        + ", ".join(f"{r['lead']}-{r['wave']} {100 * r['effect']:+.1f} "
                    f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]"
                    for r in sorted(table["rows"], key=lambda r: r["rank"])[:5]))


def log_explanation_checks(report, log, positive_name):
    """The checks' console lines; `positive_name`: the name of class 1."""
    if "sanity_spearman" in report:
        log(f"\nRandomisation sanity check ({counted(report['sanity_sample_count'], 'beat')}): "
            f"Spearman between the trained and a fully randomised model's maps "
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
        log(f"Deletion test ({counted(report['deletion_count'], f'{positive_name} beat')}): "
            f"removing the top leads beats removing random leads in "
            f"{100 * report['deletion_win_rate']:.0f}% of beats; P(true class) after "
            f"{curve['k'][-1]} leads: top {curve['top_mean'][-1]:.2f}, random "
            f"{curve['random_mean'][-1]:.2f}")
    log_localisation(report.get("localisation"), log)
    for name, table in report.get("wave_importance", {}).items():
        tops = ", ".join(f"{lead} {row['top_wave']}" for lead, row in table.items()
                         if isinstance(row, dict) and "top_wave" in row)
        log(f"Wave with the largest share of saliency, {name}: {tops}")


def log_localisation(report, log):
    """Ground-truth cohorts only: how well the map and the wave effects found the truth."""
    if not report:
        return
    for name, entry in report.items():
        if not isinstance(entry, dict) or "map" not in entry:
            continue
        found = entry["map"]
        log(f"Localisation of the known truth, {name} ({METHODS[report['method']]} map): "
            f"mass accuracy {found['mass_accuracy']:.3f} ({found['mass_vs_chance']:.1f}x "
            f"chance {found['chance']:.3f}), rank accuracy {found['rank_accuracy']:.3f} "
            f"({found['rank_vs_chance']:.1f}x chance)")
        cells = entry.get("wave_effects")
        if cells:
            log(f"  wave effects rank the true cells {true_cell_text(cells)} of {cells['cells']}"
                + (" (all first)" if cells["all_true_cells_first"] else ""))


def true_cell_text(cells):
    """'V3-T 1, V2-T 3, V4-T 60': each true cell with its own rank, best first."""
    return ", ".join(f"{cell} {rank}"
                     for cell, rank in zip(cells["true_cells"], cells["ranks"], strict=True))


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


def subgroup_label(name, spec, positive_name):
    """'STEMI LVR' (the subgroup and `positive_name`, class 1's name) for the original's
    groups; the plain subgroup name for other cohorts."""
    seed_groups = spec["groups"] == ["NS_0", "NS_1", "ST_0", "ST_1"]
    return f"{name} {positive_name}" if seed_groups else name


def test_text(stats, test, name, spec):
    """'F=3.20, p = 0.0012' ('p < 1e-300' where p underflows), or the reason the test is not
    computable."""
    statistic = stats.get(f"{test}_{name.lower()}")
    p = stats.get(f"{test}_p")
    if p is None or statistic is None:
        return stats.get(f"{test}_reason") or "not computable"
    return f"{name}={statistic:{spec}}, {p_text(p, 3)}"


def log_subgroup(label, stats, log, positive_name="class 1"):
    """A subgroup's lead statistics; `positive_name`: the name of class 1."""
    count = counted(stats.get("sample_count", 0), "sample")
    if stats.get("status", "ok") != "ok":
        log(f"\n[{label}] {count}: {stats['status']}")
        return
    log(f"\n[{label}] {count}")
    log_patient_level(stats.get("patient_level"), log)
    if stats.get("small_sample_warning"):
        log(f"  warning: {stats['small_sample_warning']}")
    if stats.get("beats_without_evidence"):
        log(f"  note: {counted(stats['beats_without_evidence'], 'explained beat')} with no "
            f"evidence in any lead (a zero map, or no swap lowering P({positive_name})) count "
            f"every lead equally")
    log(f"  beat level (the original's statistics; beats of a patient are not independent): "
        f"key leads {', '.join(stats['top3_leads'])} "
        f"({', '.join(f'{s:.3f}' for s in stats['top3_scores'])})")
    log(f"  one-way ANOVA over 12 leads (original): {test_text(stats, 'anova', 'F', '.2f')}; "
        f"Friedman (repeated measures): {test_text(stats, 'friedman', 'chi2', '.1f')}")
    log(f"  consistency: strict {stats['strict_consistency_percentage']:.1f}%, loose "
        f"{stats['loose_consistency_percentage']:.1f}%, key leads in a sample's top 3: "
        f"{stats['avg_key_in_top3']:.2f}/3")
    log(f"  {stats['icc_form_name']}: {stats['icc']:.3f} "
        f"(95% CI {stats['icc_ci_lower']:.3f} to {stats['icc_ci_upper']:.3f})")
    check = stats.get("ground_truth_check")
    if check:
        log(f"  ground truth: {check['true_leads_in_top3']} of the true leads in the top 3 "
            f"({', '.join(check['true_leads_found']) or 'none'}); "
            f"{100 * check['share_samples_top3_has_2_true']:.0f}% of samples have 2 of them in "
            f"their own top 3")


def log_patient_level(stats, log):
    """The patient-level block: the numbers to report."""
    if not stats:
        return
    if stats.get("status", "ok") != "ok":
        log(f"  {counted(stats['patient_count'], 'patient')}: {stats['status']}")
        return
    stability = stats.get("key_lead_stability") or {}
    ci = stats.get("mean_lead_importance_ci95") or {}
    keys = ", ".join(f"{lead} {score:.3f}"
                     + (f" [{ci[lead][0]:.3f}, {ci[lead][1]:.3f}], stable "
                        f"{stability[lead]:.2f}" if lead in ci else "")
                     for lead, score in zip(stats["top3_leads"], stats["top3_scores"], strict=True))
    log(f"  PATIENT LEVEL (report these; {counted(stats['patient_count'], 'patient')}, "
        f"{counted(stats['beat_count'], 'beat')}, "
        f"{counted(stats['bootstrap'], 'bootstrap replicate')}): key leads "
        f"{keys}")
    log(f"    Friedman {test_text(stats, 'friedman', 'chi2', '.1f')}; "
        f"{stats['icc_form_name']}: {stats['icc']:.3f} ({stats['icc_ci_lower']:.3f} to "
        f"{stats['icc_ci_upper']:.3f}); consistency strict "
        f"{stats['strict_consistency_percentage']:.1f}%, loose "
        f"{stats['loose_consistency_percentage']:.1f}%")
