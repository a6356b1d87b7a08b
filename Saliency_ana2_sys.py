"""Explain the 2-class model: SmoothGrad saliency (or another METHOD) per lead and time on the
run's test patients, per-sample figures, lead-importance statistics over beats and over patients
(key leads, ANOVA, Friedman, consistency, ICC, bootstrap stability), and which lead and wave hold
the evidence (counterfactual segment swaps).

Reads the model and the test split of a training run (TRAIN_DIR) and the cohort it was trained on
(its split.json names it; DATA_DIR only where it has moved), or, with EXTERNAL=True, another
cohort in DATA_DIR with the same leads, sampling rate and window (all its beats are explained).
lvr/explain/analysis.py does the work. Every constant below can be overridden as
--lower_case_name=value; --help lists them.
"""
from lvr import options as valid
from lvr.config import configure, run_script
from lvr.explain.lead_stats import compute_icc  # noqa: F401  (the original defined it here)

# "": the cohort the run was trained on (split.json data_dir)
DATA_DIR: valid.folder(optional=True) = ""
# 2-class training run: best_model.pth and split.json
TRAIN_DIR: valid.folder() = "results_class2"
# True: DATA_DIR is another cohort; explain all its beats
EXTERNAL: valid.FLAG = False
# model file in TRAIN_DIR (last_checkpoint.pth: final epoch)
CHECKPOINT: valid.CHECKPOINT = "best_model.pth"
# an earlier analysis here is kept as OUTPUT_DIR.<timestamp>
OUTPUT_DIR: valid.folder(written=True) = "output_saliencyana2"
# attribution map (grad_cam has no lead resolution)
METHOD: valid.METHOD = "smoothgrad"
# SmoothGrad noisy copies per beat (1, NOISE_LEVEL=0: gradient)
NUM_SAMPLES: valid.integer(1).only_if("METHOD", "smoothgrad") = 10
# SmoothGrad noise sd, in standardised units
NOISE_LEVEL: valid.NON_NEGATIVE.only_if("METHOD", "smoothgrad") = 0.1
# integrated gradients: steps from the zero baseline
IG_STEPS: valid.integer(1).only_if("METHOD", "integrated_gradients") = 32
# occlusion: window zeroed per lead
OCCLUSION_WINDOW_MS: valid.POSITIVE.only_if("METHOD", "occlusion") = 50
# beats per SmoothGrad batch
BATCH_SIZE: valid.integer(1) = 32
# seeds the SmoothGrad noise
SEED: valid.SEED = 42
# auto (CUDA if present), cpu, cuda
DEVICE: valid.DEVICE = "auto"
# per-sample figures to draw (None: all test beats)
MAX_FIGURES: valid.MAX_FIGURES = None
# resolution of the per-sample figures
FIG_DPI: valid.integer(1) = 150
# processes drawing figures and delineating waves (1: this one)
FIGURE_WORKERS: valid.integer(1) = 2
# share of each lead's saliency in its P, PR, QRS, ST, T waves
WAVE_IMPORTANCE: valid.FLAG = True
# leads combined for wave boundaries: all, or II,V2,V5 (faster)
DELINEATION_LEADS: valid.DELINEATION_LEADS = "all"
# Adebayo et al. 2018: saliency after randomising the weights
SANITY_CHECK: valid.FLAG = True
# test beats the randomisation check reruns the map on
SANITY_SAMPLES: valid.integer(1).only_if("SANITY_CHECK") = 32
# remove each class-1 beat's top-k leads vs k random leads
DELETION_TEST: valid.FLAG = True
# largest number of leads removed
DELETION_MAX_K: valid.integer(1, 12).only_if("DELETION_TEST") = 6
# random lead orders averaged per beat
DELETION_DRAWS: valid.integer(1).only_if("DELETION_TEST") = 10
# patient resamples for the patient-level CIs and stability
PATIENT_BOOTSTRAP: valid.integer(0) = 1000
# counterfactual lead x wave effects (wave_effects.csv)
WAVE_EFFECTS: valid.FLAG = True
# swapped-in segments: mean, median or nearest other-class beats
WAVE_REFERENCE: valid.WAVE_REFERENCE.only_if("WAVE_EFFECTS") = "mean"
# reference aligned on the R peak, or warped per segment
WAVE_ALIGNMENT: valid.WAVE_ALIGNMENT.only_if("WAVE_EFFECTS") = "r_peak"
# cross-fade across each segment edge
WAVE_BLEND_MS: valid.NON_NEGATIVE.only_if("WAVE_EFFECTS") = 10
# lead statistics on the map, or on wave_effects
LEAD_IMPORTANCE: valid.LEAD_IMPORTANCE = "map"
# saliency_maps.npz: maps, probabilities, index, patient, group
SAVE_MAPS: valid.FLAG = True
# write report.html, the analysis in one self-contained page
REPORT: valid.FLAG = True
# load pickled (object) arrays: only for files you trust
ALLOW_PICKLE: valid.FLAG = False


def main():
    config = configure(globals())
    # Imported once the options are checked (--help answers before torch loads), and not at the
    # top: the figure workers are spawned processes that re-import this file, and would each
    # spend seconds importing torch, scipy and neurokit2 that they never use.
    from lvr.explain.analysis import run_saliency_analysis
    run_saliency_analysis(config)


if __name__ == "__main__":
    run_script(main)
