"""A conventional ECG-measurement baseline on a finished training run's split: does the network
beat what a cardiologist reads off the ECG?

Measures R, S, Q amplitude, Q duration, ST deviation at J+60 ms and T amplitude in each lead,
QRS duration and QT interval (lvr/measure/ecg_features.py), fits an L2 logistic regression on
the run's TRAINING patients only and scores its test patients. The output folder has a training
run's test files, so compare_runs.py pairs it with the network:

    python ecg_features_baseline.py --train_dir=results_class2
    python compare_runs.py --run_a=results_class2 --run_b=results_class2_ecg_features

lvr/evaluate/baseline.py does the work. Every constant below can be overridden as
--lower_case_name=value; --help lists them.
"""
from lvr import options as valid
from lvr.config import configure, run_script

# a finished training run: its split.json gives the patients
TRAIN_DIR: valid.folder() = "results_class2"
# "": the cohort the run was trained on (split.json data_dir)
DATA_DIR: valid.folder(optional=True) = ""
# "": <TRAIN_DIR>_ecg_features, beside the run
OUTPUT_DIR: valid.folder(optional=True, written=True) = ""
# leads combined for wave boundaries: all, or II,V2,V5 (faster)
DELINEATION_LEADS: valid.DELINEATION_LEADS = "all"
# processes delineating beats (1 = run in this process)
WORKERS: valid.integer(1) = 1
# an earlier baseline run's measurements.npz: reuse them
MEASUREMENTS: valid.MEASUREMENTS_FILE = ""
# patient-grouped folds that choose the L2 penalty
PENALTY_FOLDS: valid.integer(2) = 5
# penalty strengths C tried, log-spaced over 1e-4..1e4
PENALTIES: valid.integer(1) = 10
# patient-bootstrap resamples for the 95% CIs
BOOTSTRAP: valid.integer(0) = 1000
# fixes the penalty folds and the bootstrap
SEED: valid.SEED = 42
# write report.html, the baseline in one self-contained page
REPORT: valid.FLAG = True
# load pickled (object) arrays: only for files you trust
ALLOW_PICKLE: valid.FLAG = False


def main():
    config = configure(globals())
    # imported once the options are checked: --help and a bad option answer before torch loads
    from lvr.evaluate.baseline import run_feature_baseline
    run_feature_baseline(config)


if __name__ == "__main__":
    run_script(main)
