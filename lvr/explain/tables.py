"""The per-subgroup tables of the explained beats: lead statistics over beats and over patients
(quantitative_consistency_analysis.json) and the patient-level rows of the wave effects."""
import numpy as np

from lvr.explain.attribution import has_lead_resolution
from lvr.explain.lead_stats import ground_truth_check, subgroup_lead_statistics
from lvr.explain.patient_stats import patient_level_lead_statistics, patient_means
from lvr.explain.wave_effects import wave_effect_rows
from lvr.leads import WAVES

SMALL_SUBGROUP_PATIENTS = 10   # below: a subgroup's statistics carry a small-sample warning


def importance_for_statistics(beats, source="map"):
    """(N, leads) importance the lead statistics run on, and a count of beats without evidence.

    `source` (LEAD_IMPORTANCE) "map": the map averaged over time. "wave_effects": each lead's
    positive segment-swap effects summed over its waves (evidence for the true class); a beat
    whose swaps never lower P(true class) has no evidence in any lead and gets equal importance
    everywhere. So does a beat whose map is zero everywhere (a model so sure of a beat that its
    gradient underflows); the count is of those beats.
    """
    if source != "wave_effects":
        importance = beats.maps.mean(axis=2)
        empty = (importance <= 0).all(axis=1)
        return importance + 1e-12 * empty[:, None], int(empty.sum())
    evidence = np.clip(np.nan_to_num(beats.effects), 0, None).sum(axis=2)
    empty = (evidence <= 0).all(axis=1) & (beats.y == 1)
    return evidence + 1e-12, int(empty.sum())


def quantitative_analysis(beats, cohort, *, method, source, n_boot, seed):
    """Per analysis subgroup (LVR-positive beats of a group): lead statistics over beats (the
    original's keys), over patients (`patient_level`, `n_boot` bootstrap replicates from `seed`)
    and the ground-truth check; and each subgroup's importance rows normalised to sum 1.
    `method`: METHOD of the maps; `source`: LEAD_IMPORTANCE."""
    spec = cohort.spec
    lead_names = list(spec["leads"])
    truth = (spec.get("ground_truth") or {}).get("lvr_leads")
    importance, without_evidence = importance_for_statistics(beats, source)
    results, arrays = {}, {}
    for name, group in (spec.get("analysis_subgroups") or {}).items():
        members = beats.members(cohort, group)
        values = importance[members]
        arrays[name] = values / np.maximum(values.sum(1, keepdims=True), 1e-12)
        if len(values) == 0:
            results[name] = {"sample_count": 0, "status": "no samples in the test set"}
            continue
        if not has_lead_resolution(method) and source == "map":
            results[name] = {"sample_count": int(len(values)),
                             "status": f"{method} gives every lead the same map: no "
                                       f"lead statistics (use another METHOD or "
                                       f"LEAD_IMPORTANCE=wave_effects)"}
            continue
        stats = subgroup_lead_statistics(values, lead_names)
        stats["lead_importance_source"] = source
        stats["patient_level"] = patient_level_lead_statistics(
            values, beats.patient_ids[members], lead_names, n_boot=n_boot, seed=seed)
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


def wave_effect_tables(beats, cohort, n_boot, seed):
    """Per analysis subgroup: the patient-level rows of wave_effect_rows (`n_boot` bootstrap
    replicates from `seed`), and counts."""
    tables = {}
    for name, group in (cohort.spec.get("analysis_subgroups") or {}).items():
        members = beats.members(cohort, group)
        if not members.any():
            continue
        shares = None if beats.shares is None else beats.shares[members]
        rows = wave_effect_rows(beats.effects[members], beats.patient_ids[members],
                                list(cohort.spec["leads"]), n_boot, seed, shares)
        tables[name] = {"rows": rows, "beats": int(members.sum()),
                        "patients": int(len(np.unique(beats.patient_ids[members])))}
    return tables


def lead_by_wave(rows, key):
    """(leads, waves) array of `key` from wave-effect rows, which run lead by lead, wave by wave."""
    return np.array([[row[key] for row in rows[i:i + len(WAVES)]]
                     for i in range(0, len(rows), len(WAVES))])
