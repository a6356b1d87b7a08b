"""Explanation benchmark: attribution methods measured on cohorts whose truth is known.

    python bench/explanation_bench.py [--out DIR] [--epochs N] [--quick]
                                      [--parts=maps,waves,variants]

For each ground-truth cohort (demo_cohort.py with a sign in known leads and a known wave) it
trains the 2-class model with the training script, then runs Saliency_ana2_sys.py once per map
method (and per SmoothGrad setting of the noise sweep) and once for the wave effects, and writes
one table, method x cohort, to DIR/explanation_bench.csv and .md:

- mass accuracy: share of the map inside the true leads x the true window, and its ratio to
  chance (a uniform map); rank accuracy: share of the map's |mask| highest points inside it;
- true-cell rank: the worst rank of the true lead x wave cells among all 60 cells of the wave
  effects (3 = all three true cells first), and whether all true cells come first;
- deletion win rate and randomisation-sanity Spearman (lvr.explain.checks);
- maps_s: seconds for the maps of the test beats (saliency_run.json step_times_s).
Each value is the mean over the cohort's two analysis subgroups (the true-cell rank: the worse).
Only the scripts' command lines are used for this table. CPU, one run of each; --quick makes a
small cohort and few steps to check the harness (about 2 min).

The wave-effect design (where the swap happens, the reference, the alignment, the blending) was
chosen with a second table, DIR/wave_variants.md (--parts=variants, in-process through
lvr.explain.wave_effects on the same trained models and test beats): per variant and cohort the
worst true-cell rank and the margin, the smallest true-cell effect over the largest other one
(above 1: every true cell first).
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time
from itertools import product
from pathlib import Path

import numpy as np

from common import ROOT, script_env  # puts ROOT on sys.path: before lvr

# name -> demo_cohort.py options: the sign, where it is, and a seed of its own
COHORTS = {
    "demo T V2-V4": [],
    "unseen T I,aVL,V6": ["--lvr_leads=I,aVL,V6", "--seed=7"],
    "Q II,III,aVF": ["--lvr_wave=Q", "--lvr_leads=II,III,aVF", "--seed=11"],
    "QRS V3-V5": ["--lvr_wave=QRS", "--lvr_leads=V3,V4,V5", "--seed=12"],
    "ST-dep V1-V3": ["--lvr_wave=ST_DEPRESSION", "--lvr_leads=V1,V2,V3", "--seed=13"],
}
# name -> Saliency_ana2_sys.py options of one map method
MAP_SETTINGS = {
    "smoothgrad n10 sd0.1": ["--method=smoothgrad", "--num_samples=10", "--noise_level=0.1"],
    "smoothgrad n10 sd0.5": ["--method=smoothgrad", "--num_samples=10", "--noise_level=0.5"],
    "smoothgrad n10 sd1.0": ["--method=smoothgrad", "--num_samples=10", "--noise_level=1.0"],
    "smoothgrad n30 sd1.0": ["--method=smoothgrad", "--num_samples=30", "--noise_level=1.0"],
    "gradient": ["--method=gradient"],
    "input_x_gradient": ["--method=input_x_gradient"],
    "integrated_gradients": ["--method=integrated_gradients"],
    "occlusion": ["--method=occlusion"],
    "grad_cam": ["--method=grad_cam"],
}
# one map method of each kind: gradient, perturbation, CAM
QUICK_MAP_SETTINGS = ("smoothgrad n10 sd0.1", "occlusion", "grad_cam")
QUICK_STEPS = {"--num_samples": "--num_samples=2", "--ig_steps": "--ig_steps=4"}   # --quick
COMMON = ["--max_figures=0", "--device=cpu", "--figure_workers=1", "--save_maps=False"]
MAP_RUN = ["--wave_importance=False", "--wave_effects=False"]
WAVE_RUN = ["--wave_effects=True", "--wave_importance=False", "--sanity_check=False",
            "--deletion_test=False"]
COLUMNS = ["cohort", "method", "mass_accuracy", "mass_vs_chance", "rank_accuracy",
           "rank_vs_chance", "true_cell_rank", "all_true_cells_first", "deletion_win_rate",
           "sanity_spearman", "maps_s", "test_auc"]


def run(script, options, log_path):
    """Run a script of the repository; its console output goes to log_path."""
    with open(log_path, "w", encoding="utf-8") as handle:
        done = subprocess.run([sys.executable, str(ROOT / script), *options], stdout=handle,
                              stderr=subprocess.STDOUT, cwd=log_path.parent,
                              env=script_env())
    if done.returncode:
        raise SystemExit(f"{script} {' '.join(options)} failed; see {log_path}")


def subgroup_entries(checks):
    return [entry for entry in checks.get("localisation", {}).values()
            if isinstance(entry, dict) and "map" in entry]


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def map_row(cohort, method, out_dir, auc):
    checks = json.loads((out_dir / "explanation_checks.json").read_text())
    timings = json.loads((out_dir / "saliency_run.json").read_text())["step_times_s"]
    maps = [entry["map"] for entry in subgroup_entries(checks)]
    return {"cohort": cohort, "method": method,
            **{key: mean(m[key] for m in maps) for key in ("mass_accuracy", "mass_vs_chance",
                                                           "rank_accuracy", "rank_vs_chance")},
            "deletion_win_rate": checks.get("deletion_win_rate"),
            "sanity_spearman": checks.get("sanity_spearman"), "maps_s": timings.get("maps"),
            "test_auc": auc}


def wave_row(cohort, out_dir, auc):
    checks = json.loads((out_dir / "explanation_checks.json").read_text())
    timings = json.loads((out_dir / "saliency_run.json").read_text())["step_times_s"]
    cells = [entry["wave_effects"] for entry in subgroup_entries(checks)
             if "wave_effects" in entry]
    return {"cohort": cohort, "method": "wave effects (segment swap)",
            "true_cell_rank": max((max(c["ranks"]) for c in cells), default=None),
            "all_true_cells_first": all(c["all_true_cells_first"] for c in cells),
            "maps_s": timings.get("wave_effects"), "test_auc": auc}


def wave_variant_rows(cohort, data_dir, train_dir):
    """True-cell rank and margin of each wave-effect variant on the run's LVR test beats."""
    import torch  # imported here: the table part of the benchmark runs only the scripts
    import lvr.explain.wave_effects as we
    from lvr.choices import WAVE_ALIGNMENTS, WAVE_REFERENCES
    from lvr.train.checkpoints import load_checkpoint
    from lvr.data.beats import standardize_beats
    from lvr.data.cohort import load_cohort
    from lvr.measure.delineation import beat_segments_batch, r_peak_index
    from lvr.leads import WAVES
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    split = json.loads((train_dir / "split.json").read_text())
    data = load_cohort(str(data_dir))
    model = load_checkpoint(str(train_dir / "best_model.pth"), map_location="cpu")[0].eval()
    labels, ids, spec = data.labels("binary"), data.patient_ids, data.spec
    fs, leads, truth = spec["sampling_rate"], list(spec["leads"]), spec["ground_truth"]
    test = np.flatnonzero(np.isin(ids, split["test"]) & (labels == 1))
    pool = np.flatnonzero(np.isin(ids, split["train"]) & (labels == 0))
    segments = [{w: s[w] for w in WAVES}
                for s in beat_segments_batch(data.beats[test], fs, lead_names=leads)]
    rows = []
    for units, reference, alignment, blend_ms in product(("mV", "standardised"), WAVE_REFERENCES,
                                                         WAVE_ALIGNMENTS, (0, 10)):
        convert = (lambda b: b) if units == "mV" else standardize_beats
        x = convert(data.beats[test])
        references = we.reference_beats(x, convert(data.beats[pool]), reference)
        reference_segments = segments
        if alignment == "segment":
            distinct = references if reference == "nearest" else references[:1]
            found = [{w: s[w] for w in WAVES}
                     for s in beat_segments_batch(distinct, fs, lead_names=leads)]
            reference_segments = found if reference == "nearest" else found * len(x)
        peaks = [r_peak_index(b, fs, spec.get("r_peak_sample")) for b in x]
        reference_peaks = [r_peak_index(b, fs, spec.get("r_peak_sample")) for b in references]
        effects = we.wave_effects(model, x, labels[test], segments, references,
                                  reference_segments, alignment, blend_ms * fs / 1000, peaks,
                                  reference_peaks,
                                  normalisation="per_lead" if units == "mV" else None)
        worst, margin = 0, np.inf
        for group in spec["analysis_subgroups"].values():
            members = data.group_index[test] == spec["groups"].index(group)
            if not members.any():
                continue
            table = we.wave_effect_rows(effects[members], ids[test][members], leads, n_boot=0)
            true = [r for r in table if r["lead"] in truth["lvr_leads"]
                    and r["wave"] == truth["lvr_wave"]]
            other = [r["effect"] for r in table if r not in true]
            worst = max(worst, max(r["rank"] for r in true))
            margin = min(margin, min(r["effect"] for r in true) / max(max(other), 1e-9))
        rows.append({"cohort": cohort, "swap_in": units, "reference": reference,
                     "alignment": alignment, "blend_ms": blend_ms,
                     "true_cell_rank": worst or None,
                     "margin": float(margin) if np.isfinite(margin) else None})
    return rows


def write_variant_table(rows, out):
    columns = ["cohort", "swap_in", "reference", "alignment", "blend_ms", "true_cell_rank",
               "margin"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[k]) for k in columns) + " |" for row in rows]
    (out / "wave_variants.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def cell(value):
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def write_tables(rows, out):
    with open(out / "explanation_bench.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows({k: cell(row.get(k)) for k in COLUMNS} for row in rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row.get(k)) for k in COLUMNS) + " |" for row in rows]
    (out / "explanation_bench.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench_explanation", help="output folder")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs per cohort")
    parser.add_argument("--quick", action="store_true", help="small cohort, few steps")
    parser.add_argument("--parts", default="maps,waves,variants",
                        help="maps (map methods) and waves (wave effects): the method x cohort "
                             "table; variants: the wave-effect design table")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= {"maps", "waves", "variants"}:
        parser.error(f"--parts={args.parts}: use some of maps, waves, variants")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cohorts = dict(list(COHORTS.items())[:1]) if args.quick else COHORTS
    methods = MAP_SETTINGS
    demo_extra, train_extra, saliency_extra = [], [f"--epochs={args.epochs}"], []
    map_extra, wave_extra = [], []
    if args.quick:
        demo_extra = ["--n_patients=16"]
        train_extra = ["--epochs=2", "--bootstrap=50"]
        saliency_extra = ["--patient_bootstrap=50", "--delineation_leads=II,V2,V5"]
        map_extra = ["--sanity_samples=4", "--deletion_draws=2"]
        wave_extra = ["--num_samples=2"]   # the SmoothGrad map beside the effects
        # one map method of each kind (every method runs end to end in
        # tests/test_saliency_script.py), each with fewer steps of its own kind
        methods = {name: [QUICK_STEPS.get(o.split("=")[0], o) for o in MAP_SETTINGS[name]]
                   for name in QUICK_MAP_SETTINGS}
    rows, variants, start = [], [], time.time()
    for number, (cohort, options) in enumerate(cohorts.items(), 1):
        slug = cohort.replace(" ", "_").replace(",", "")
        folder = out / slug
        folder.mkdir(exist_ok=True)
        data_dir = folder / "data"
        print(f"[{number}/{len(cohorts)}] {cohort}: cohort, training", flush=True)
        if not (data_dir / "cohort.json").exists():
            run("demo_cohort.py", [f"--output_dir={data_dir}", *options, *demo_extra],
                folder / "demo_cohort.log")
        train_dir = folder / "run"
        if not (train_dir / "test_eval_results.json").exists():
            run("train_MCL_ResNet_1D_class2.py", [f"--data_dir={data_dir}",
                                                  f"--output_dir={train_dir}", "--device=cpu",
                                                  *train_extra], folder / "train.log")
        auc = json.loads((train_dir / "test_eval_results.json").read_text())["roc_auc"]
        if "variants" in parts:
            print("    wave-effect variants", flush=True)
            variants += wave_variant_rows(cohort, data_dir, train_dir)
            write_variant_table(variants, out)
        base = [f"--data_dir={data_dir}", f"--train_dir={train_dir}", *COMMON, *saliency_extra]
        for method, method_options in (methods.items() if "maps" in parts else ()):
            print(f"    {method}", flush=True)
            target = folder / ("saliency_" + method.replace(" ", "_"))
            run("Saliency_ana2_sys.py", [*base, f"--output_dir={target}", *MAP_RUN, *map_extra,
                                         *method_options], folder / f"{target.name}.log")
            rows.append(map_row(cohort, method, target, auc))
        if "waves" in parts:
            print("    wave effects", flush=True)
            target = folder / "saliency_wave_effects"
            run("Saliency_ana2_sys.py", [*base, f"--output_dir={target}", *WAVE_RUN, *wave_extra],
                folder / "saliency_wave_effects.log")
            rows.append(wave_row(cohort, target, auc))
        if rows:
            write_tables(rows, out)
    if variants:
        print("\n".join(write_variant_table(variants, out)))
    if rows:
        print("\n".join(write_tables(rows, out)))
    print(f"\nTables in {out}/ ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
