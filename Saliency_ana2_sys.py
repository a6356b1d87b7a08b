"""Explain the 2-class model: SmoothGrad saliency (or another METHOD) per lead and time on the
run's test patients, per-sample figures, lead-importance statistics over beats and over patients
(key leads, ANOVA, Friedman, consistency, ICC, bootstrap stability), and which lead and wave hold
the evidence (counterfactual segment swaps).

Reads the model and the test split of a training run (TRAIN_DIR); the data must be the data that
run was trained on, or, with EXTERNAL=True, another cohort with the same leads, sampling rate and
window (all its beats are explained). lvr/explain/analysis.py does the work. Every constant below can be
overridden as --lower_case_name=value; --help lists them.
"""
from lvr.config import configure, run_script
from lvr.explain.lead_stats import compute_icc  # noqa: F401  (the original defined it here)

DATA_DIR = "data"                    # cohort folder the model was trained on (default: demo)
TRAIN_DIR = "results_class2"         # 2-class training run: best_model.pth and split.json
EXTERNAL = False                     # True: DATA_DIR is another cohort; explain all its beats
CHECKPOINT = "best_model.pth"        # model file in TRAIN_DIR (last_checkpoint.pth: final epoch)
OUTPUT_DIR = "output_saliencyana2"   # an earlier analysis here is kept as OUTPUT_DIR.<timestamp>
METHOD = "smoothgrad"                # attribution map (grad_cam has no lead resolution)
NUM_SAMPLES = 10                     # SmoothGrad noisy copies per beat (1, NOISE_LEVEL=0: gradient)
NOISE_LEVEL = 0.1                    # SmoothGrad noise sd, in standardised units
IG_STEPS = 32                        # integrated gradients: steps from the zero baseline
OCCLUSION_WINDOW_MS = 50             # occlusion: window zeroed per lead
BATCH_SIZE = 32                      # beats per SmoothGrad batch
SEED = 42                            # seeds the SmoothGrad noise
DEVICE = "auto"                      # auto (CUDA if present), cpu, cuda
MAX_FIGURES = None                   # per-sample figures to draw (None: all test beats)
FIG_DPI = 150                        # resolution of the per-sample figures
FIGURE_WORKERS = 2                   # processes drawing figures and delineating waves (1: this one)
WAVE_IMPORTANCE = True               # share of each lead's saliency in its P, PR, QRS, ST, T waves
DELINEATION_LEADS = "all"            # leads combined for wave boundaries: all, or II,V2,V5 (faster)
SANITY_CHECK = True                  # Adebayo et al. 2018: saliency after randomising the weights
SANITY_SAMPLES = 32                  # test beats the randomisation check reruns the map on
DELETION_TEST = True                 # remove each LVR beat's top-k leads vs k random leads
DELETION_MAX_K = 6                   # largest number of leads removed
DELETION_DRAWS = 10                  # random lead orders averaged per beat
PATIENT_BOOTSTRAP = 1000             # patient resamples for the patient-level CIs and stability
WAVE_EFFECTS = True                  # counterfactual lead x wave effects (wave_effects.csv)
WAVE_REFERENCE = "mean"              # swapped-in segments: mean, median or nearest non-LVR beats
WAVE_ALIGNMENT = "r_peak"            # reference aligned on the R peak, or warped per segment
WAVE_BLEND_MS = 10                   # cross-fade across each segment edge
LEAD_IMPORTANCE = "map"              # lead statistics on the map, or on wave_effects
SAVE_MAPS = True                     # saliency_maps.npz: maps, probabilities, index, patient, group
REPORT = True                        # write report.html, the analysis in one self-contained page
ALLOW_PICKLE = False                 # load pickled (object) arrays: only for files you trust


def main():
    config = configure(globals())
    # Imported once the options are checked (--help answers before torch loads), and not at the
    # top: the figure workers are spawned processes that re-import this file, and would each
    # spend seconds importing torch, scipy and neurokit2 that they never use.
    from lvr.explain.analysis import run_saliency_analysis
    run_saliency_analysis(config)


if __name__ == "__main__":
    run_script(main)
