"""Train and test the 2-class model (LVR vs no LVR) on the cohort in DATA_DIR.

Without data of your own it trains on the synthetic demo cohort. Every constant below can be
overridden as --lower_case_name=value; --help lists them.
"""
from lvr.config import configure, run_script, typed_options

DATA_DIR = "data"                 # cohort folder (docs/data.md); default: the demo cohort
OUTPUT_DIR = "results_class2"     # an earlier run found here is kept as OUTPUT_DIR.<timestamp>
TASK = "binary"                   # label mapping of the cohort: binary or multiclass
NUM_CLASSES = 2                   # classes of the model's head
CLASS_NAMES = ()                  # empty: the cohort's names (seed: Normal, Abnormal)
EXPERIMENT = "ms"                 # model.EXPERIMENT_NAMES; ms beat ca_ms_v2: docs/benchmark.md
DROPOUT = 0.5                     # dropout before the classifier
LEAD_DROPOUT = 0.3                # training: chance each lead of a beat is zeroed (docs/model.md)
NORMALISATION = "per_lead"        # input: per_lead (the original's), per_beat or none (mV)
EPOCHS = 50                       # training epochs
BATCH_SIZE = 32                   # beats per batch
LR = 1e-3                         # AdamW learning rate (the original: 1e-4)
INIT_FROM = ""                    # a checkpoint to start from: encoder, head if same classes
FREEZE_EPOCHS = 0                 # INIT_FROM: the first epochs train the head alone
ENCODER_LR_FACTOR = 1.0           # INIT_FROM: the encoder's learning rate is LR x this
ALLOW_PRETRAINING_OVERLAP = False  # INIT_FROM: train although it saw test patients (transductive)
WEIGHT_DECAY = 1e-3               # AdamW weight decay
LABEL_SMOOTHING = 0.1             # label-smoothing factor e of the loss
GRAD_CLIP = 1.0                   # gradient clipping (max norm)
LR_FACTOR = 0.5                   # plateau scheduler: lr factor when SELECT_BY stalls
LR_PATIENCE = 3                   # plateau scheduler: epochs without improvement
SELECT_BY = "val_acc"             # best epoch by val_acc (the original's), val_auc or val_loss
THRESHOLD = "youden"              # on validation: youden, sensitivity:0.9, specificity:0.9, 0.3
TEST_SIZE = 0.1                   # share of patients in the test set
VAL_SIZE = 0.2                    # share of patients in the validation set (7:2:1)
SEED = 42                         # fixes the split, the initialisation and the batches
CV_FOLDS = 0                      # 0: one train/val/test split; k: k-fold CV at patient level
BOOTSTRAP = 1000                  # patient-bootstrap resamples for the 95% CIs
DEVICE = "auto"                   # auto (CUDA if present, with mixed precision), cpu, cuda, cuda:1
NUM_WORKERS = 0                   # DataLoader worker processes
RESUME = False                    # continue an interrupted run in OUTPUT_DIR from its last epoch
EVALUATE = ""                     # a finished run: test its model on DATA_DIR (results inside it)
REPORT = True                     # write report.html, the run in one self-contained page
ALLOW_PATIENT_OVERLAP = False     # --evaluate: score a cohort sharing patients with the split
ALLOW_PICKLE = False              # load pickled (object) arrays: only for files you trust


def main():
    config = configure(globals())
    # imported once the options are checked: --help and a bad option answer before torch loads
    if config["EVALUATE"]:
        from lvr.evaluate.external import run_evaluation
        chosen = config["OUTPUT_DIR"] if "OUTPUT_DIR" in typed_options() else None
        run_evaluation(config, output_dir=chosen)
    else:  # imported once the options are checked, like lvr.evaluate.external
        from lvr.train.run import run_training
        run_training(config)


if __name__ == "__main__":
    run_script(main)
