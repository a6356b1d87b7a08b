"""Score a finished training run's model on another cohort (external validation).

Every beat of DATA_DIR is a test beat. The cohort is checked against the one the run was trained
on (leads in the same order, sampling rate, beat window, classes) and against the run's patients
(a shared patient is refused unless ALLOW_PATIENT_OVERLAP). The model's task, classes, input
normalisation and operating point come from its checkpoint. Results, with report.html, go to
TRAIN_DIR/external_<cohort folder> unless OUTPUT_DIR is given; lvr/evaluate/external.py does the
work. Every constant below can be overridden as --lower_case_name=value; --help lists them.

    python evaluate.py --train_dir=results_class2 --data_dir=data/other_hospital
"""
from lvr import options as valid
from lvr.config import configure, run_script

# a finished training run (its OUTPUT_DIR): best_model.pth and split.json
TRAIN_DIR: valid.folder(written=True) = "results_class2"
# the cohort to score (docs/data.md)
DATA_DIR: valid.folder() = "data"
# "": TRAIN_DIR/external_<cohort folder>, beside the model it scores
OUTPUT_DIR: valid.folder(optional=True, written=True) = ""
# beats per batch
BATCH_SIZE: valid.integer(1) = 32
# patient-bootstrap resamples for the 95% CIs
BOOTSTRAP: valid.integer(0) = 1000
# fixes the bootstrap
SEED: valid.SEED = 42
# auto (CUDA if present, with mixed precision), cpu, cuda, cuda:1
DEVICE: valid.DEVICE = "auto"
# write report.html, the evaluation in one self-contained page
REPORT: valid.FLAG = True
# score a cohort that shares patients with the run's split (e.g. a temporal validation)
ALLOW_PATIENT_OVERLAP: valid.FLAG = False
# load pickled (object) arrays: only for files you trust
ALLOW_PICKLE: valid.FLAG = False


def main():
    config = configure(globals())
    # imported once the options are checked: --help and a bad option answer before torch loads
    from lvr.evaluate.external import run_evaluation
    run_evaluation(config)


if __name__ == "__main__":
    run_script(main)
