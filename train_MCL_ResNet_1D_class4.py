"""Train and test the 4-class model (NSTEMI/STEMI without/with LVR) on the cohort in DATA_DIR.

Without data of your own it trains on the synthetic demo cohort. Every constant below can be
overridden as --lower_case_name=value; --help lists them.
"""
from lvr import options as valid
from lvr.config import configure, run_script

# cohort folder (docs/data.md); default: the demo cohort
DATA_DIR: valid.folder() = "data"
# an earlier run found here is kept as OUTPUT_DIR.<timestamp>
OUTPUT_DIR: valid.folder(written=True) = "results_class4"
# label mapping of the cohort: binary or multiclass
TASK: valid.TASK = "multiclass"
# classes of the model's head
NUM_CLASSES: valid.integer(2) = 4
# empty: the cohort's names (seed: NSTEMI/STEMI non-LVR/LVR)
CLASS_NAMES: valid.CLASS_NAMES = ()
# model.EXPERIMENT_NAMES; ms beat ca_ms_v2: docs/benchmark.md
EXPERIMENT: valid.EXPERIMENT = "ms"
# dropout before the classifier
DROPOUT: valid.FRACTION = 0.5
# training: chance each lead of a beat is zeroed (docs/model.md)
LEAD_DROPOUT: valid.LEAD_DROPOUT = 0.3
# input: per_lead (the original's), per_beat or none (mV)
NORMALISATION: valid.NORMALISATION = "per_lead"
# training epochs
EPOCHS: valid.integer(1) = 50
# beats per batch
BATCH_SIZE: valid.integer(1) = 32
# AdamW learning rate (the original: 1e-4)
LR: valid.POSITIVE = 1e-3
# a checkpoint to start from: encoder, head if same classes
INIT_FROM: valid.file_path(optional=True) = ""
# INIT_FROM: the first epochs train the head alone
FREEZE_EPOCHS: valid.integer(0) = 0
# INIT_FROM: the encoder's learning rate is LR x this
ENCODER_LR_FACTOR: valid.POSITIVE = 1.0
# INIT_FROM: train although it saw test patients (transductive)
ALLOW_PRETRAINING_OVERLAP: valid.FLAG.only_if("INIT_FROM") = False
# AdamW weight decay
WEIGHT_DECAY: valid.NON_NEGATIVE = 1e-3
# label-smoothing factor e of the loss
LABEL_SMOOTHING: valid.FRACTION = 0.05
# gradient clipping (max norm)
GRAD_CLIP: valid.POSITIVE = 1.0
# plateau scheduler: lr factor when SELECT_BY stalls
LR_FACTOR: valid.OPEN_FRACTION = 0.5
# plateau scheduler: epochs without improvement
LR_PATIENCE: valid.integer(0) = 3
# best epoch by val_acc (the original's), val_auc or val_loss
SELECT_BY: valid.SELECT_BY = "val_acc"
# operating point: more than 2 classes classify by argmax
THRESHOLD: valid.THRESHOLD = "argmax"
# share of patients in the test set
TEST_SIZE: valid.FRACTION.only_if("CV_FOLDS", 0) = 0.1
# share of patients in the validation set (8:1:1)
VAL_SIZE: valid.OPEN_FRACTION = 0.1
# fixes the split, the initialisation and the batches
SEED: valid.SEED = 42
# 0: one train/val/test split; k: k-fold CV at patient level
CV_FOLDS: valid.CV_FOLDS = 0
# patient-bootstrap resamples for the 95% CIs
BOOTSTRAP: valid.integer(0) = 1000
# auto (CUDA if present, with mixed precision), cpu, cuda, cuda:1
DEVICE: valid.DEVICE = "auto"
# DataLoader worker processes
NUM_WORKERS: valid.integer(0) = 0
# continue an interrupted run in OUTPUT_DIR from its last epoch
RESUME: valid.FLAG = False
# write report.html, the run in one self-contained page
REPORT: valid.FLAG = True
# load pickled (object) arrays: only for files you trust
ALLOW_PICKLE: valid.FLAG = False


def main():
    config = configure(globals())
    # imported once the options are checked: --help and a bad option answer before torch loads
    from lvr.train.run import run_training
    run_training(config)


if __name__ == "__main__":
    run_script(main)
