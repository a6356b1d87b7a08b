"""How far the explanations of a cross-validation run's folds agree (each fold: its own model,
explained on its own test patients): Kendall's W of their lead rankings and wave-effect cells,
and the key leads and top cells every fold finds. Arends et al. report mean correlations of
0.41-0.65 between saliency maps of models trained from different seeds; this is that check for
the statistics a user publishes.
"""
import numpy as np

from lvr.explain.lead_stats import kendall_w


def fold_agreement(outcomes):
    """Per subgroup: Kendall's W of the folds' patient-level lead importance, the folds' key
    leads, and how far their top wave-effect cells agree."""
    agreement = {}
    for name in outcomes[0]["lead_statistics"]:
        stats = [o["lead_statistics"].get(name, {}).get("patient_level") for o in outcomes]
        if any(not s or not s.get("mean_lead_importance") for s in stats):
            agreement[name] = {"status": "a fold has no patient-level statistics for it"}
            continue
        leads = list(stats[0]["mean_lead_importance"])
        scores = np.array([[s["mean_lead_importance"][lead] for lead in leads] for s in stats])
        key_sets = [set(s["top3_leads"]) for s in stats]
        entry = {"folds": len(outcomes), "lead_kendall_w": kendall_w(scores),
                 "key_leads_per_fold": [s["top3_leads"] for s in stats],
                 "key_leads_in_every_fold": [lead for lead in leads
                                             if all(lead in k for k in key_sets)]}
        tables = [(o["wave_effects"] or {}).get(name) for o in outcomes]
        if all(tables):
            cells = [{f"{r['lead']}-{r['wave']}": r for r in t["rows"]} for t in tables]
            names = list(cells[0])
            effects = np.array([[c[cell]["effect"] for cell in names] for c in cells])
            tops = [set(sorted(c, key=lambda cell: c[cell]["rank"])[:3]) for c in cells]
            entry.update(cell_kendall_w=kendall_w(effects),
                         top_cells_per_fold=[sorted(t, key=lambda cell: c[cell]["rank"])
                                             for t, c in zip(tops, cells, strict=True)],
                         top_cells_in_every_fold=sorted(set.intersection(*tops)),
                         top_cells_mean_jaccard=float(np.mean(
                             [len(a & b) / len(a | b) for i, a in enumerate(tops)
                              for b in tops[i + 1:]])))
        agreement[name] = entry
    return agreement


def log_fold_agreement(agreement, log):
    log("\nAgreement between the folds' explanations (each fold: its own model and test "
        "patients):")
    for name, entry in agreement.items():
        if "lead_kendall_w" not in entry:
            log(f"  {name}: {entry['status']}")
            continue
        log(f"  {name}: lead ranking Kendall's W {entry['lead_kendall_w']:.2f} over "
            f"{entry['folds']} folds; key leads in every fold: "
            f"{', '.join(entry['key_leads_in_every_fold']) or 'none'}")
        if "cell_kendall_w" in entry:
            log(f"    wave effects: Kendall's W {entry['cell_kendall_w']:.2f}; top-3 cells in "
                f"every fold: {', '.join(entry['top_cells_in_every_fold']) or 'none'} (mean "
                f"Jaccard {entry['top_cells_mean_jaccard']:.2f})")
