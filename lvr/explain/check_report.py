"""The explanation checks of the explained beats as one dict (explanation_checks.json): wave
importance per subgroup, the randomisation sanity check, the deletion test, the wave effects'
top cells and, for a cohort whose ground truth is known, how well the explanations find it."""
import numpy as np
import torch

from lvr.explain.checks import (deletion_test, localisation, sanity_check,
                                smoothgrad_saliency_fn, truth_mask, wave_importance_table)
from lvr.explain.maps import method_maps
from lvr.explain.wave_effects import true_cell_ranks

TOP_CELLS = 5   # wave-effect cells per subgroup in the report


def explanation_checks_report(model, beats, cohort, settings, *, wave_importance,
                              run_sanity_check, sanity_samples, run_deletion_test,
                              deletion_max_k, deletion_draws, effect_settings):
    """Wave-level importance (`wave_importance`), randomisation sanity check on
    `sanity_samples` beats, deletion test and, for a cohort with a ground truth, how well the
    map and the wave effects localise it, as one dict. `settings`: the maps' MapSettings (its
    seed seeds every draw); `effect_settings`: the wave effects' settings, as reported."""
    x, y, maps = beats.x, beats.y, beats.maps
    shares, density = beats.shares, beats.density
    spec = cohort.spec
    lead_names = list(spec["leads"])
    report, positive = {}, y == 1
    if shares is not None and wave_importance:
        report["wave_importance"] = {}
        for name, group in (spec.get("analysis_subgroups") or {}).items():
            members = beats.members(cohort, group)
            if members.any():
                report["wave_importance"][name] = wave_importance_table(
                    shares[members], lead_names, None if density is None else density[members])
    if run_sanity_check:
        rng = np.random.default_rng(settings.seed)
        chosen = np.sort(rng.choice(len(x), min(len(x), sanity_samples), replace=False))
        sanity = sanity_check(model, torch.from_numpy(np.asarray(x[chosen])),
                              torch.from_numpy(y[chosen]),
                              sanity_saliency_fn(settings, spec["sampling_rate"]),
                              seed=settings.seed, progress=True)
        sanity["sanity_sample_count"] = sanity.pop("sample_count")
        report.update(sanity)
    if run_deletion_test and positive.any():
        deletion = deletion_test(model, torch.from_numpy(np.asarray(x[positive])),
                                 torch.from_numpy(y[positive]), maps.mean(axis=2)[positive],
                                 max_k=deletion_max_k, random_draws=deletion_draws,
                                 seed=settings.seed, progress=True)
        deletion["deletion_count"] = deletion.pop("sample_count")
        for per_sample in ("auc_top_per_sample", "auc_random_per_sample"):
            deletion.pop(per_sample)
        report.update(deletion)
    if beats.effects is not None:
        report["wave_effects"] = {name: {"top_cells": sorted(table["rows"],
                                                             key=lambda r: r["rank"])[:TOP_CELLS],
                                         "beats": table["beats"], "patients": table["patients"]}
                                  for name, table in beats.effect_tables.items()}
        report["wave_effects_settings"] = dict(effect_settings)
    truth = spec.get("ground_truth") or {}
    if truth.get("lvr_leads") and truth.get("lvr_window_ms"):
        report["localisation"] = localisation_report(beats, cohort, settings.method, truth)
    return report


def localisation_report(beats, cohort, method, truth):
    """Only for a cohort whose ground truth is known: map mass and rank accuracy against chance,
    and the ranks of the true lead x wave cells among all cells of the wave effects. `method`:
    METHOD of the maps."""
    spec = cohort.spec
    mask = truth_mask(spec["leads"], truth["lvr_leads"], truth["lvr_window_ms"],
                      spec["sampling_rate"], beats.maps.shape[2])
    report = {"method": method, "true_leads": list(truth["lvr_leads"]),
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


def sanity_saliency_fn(settings, fs):
    """The map of METHOD (`settings`: MapSettings) as the randomisation check calls it, with the
    same noise every call."""
    if settings.method == "smoothgrad":
        return smoothgrad_saliency_fn(settings.num_samples, settings.noise_level, settings.seed)
    return lambda model, x, y: method_maps(model, x.numpy(), y.numpy(), settings, fs)
