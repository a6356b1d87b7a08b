"""Pretrain a network's encoder on unlabelled ECG beats (self-supervised, patient-contrastive).

Two views of one patient (two of its beats, or two halves of its leads, each augmented) must find
each other among the other patients' views: CLOCS's objective (lvr/train/contrastive.py).
Labels are ignored; a cohort folder of beats with patient IDs is enough (prepare_data.py
--task=unlabelled).
The checkpoint it writes, OUTPUT_DIR/pretrained_model.pth, is what the training scripts'
--init_from takes. Without data of your own it pretrains on the synthetic demo cohort.
Every constant below can be overridden as --lower_case_name=value; --help lists them.
"""
from lvr import options as valid
from lvr.config import configure, run_script

# cohort folder (docs/data.md); default: the demo cohort
DATA_DIR: valid.folder() = "data"
# an earlier run found here is kept as OUTPUT_DIR.<timestamp>
OUTPUT_DIR: valid.folder(written=True) = "pretrained"
# leave these out: a run's split.json (its test), or an ID list
EXCLUDE_PATIENTS: valid.file_path(optional=True) = ""
# the network whose encoder is pretrained (model.EXPERIMENT_NAMES)
EXPERIMENT: valid.EXPERIMENT = "ms"
# input: per_lead, per_beat or none; fine-tuning must match it
NORMALISATION: valid.NORMALISATION = "per_lead"
# positive pair: two beats, two lead halves of a beat, or both
PAIRS: valid.PAIRS = "beats_and_leads"
# InfoNCE temperature (CLOCS: 0.1)
TEMPERATURE: valid.POSITIVE = 0.1
# projection head output; dropped after pretraining
PROJECTION_DIM: valid.integer(1) = 128
# passes over the patients
EPOCHS: valid.integer(1) = 40
# patients per batch: each gives 2 views, the rest negatives
BATCH_SIZE: valid.integer(2) = 64
# AdamW learning rate, cosine-decayed to 0 over EPOCHS
LR: valid.POSITIVE = 1e-3
# AdamW weight decay
WEIGHT_DECAY: valid.NON_NEGATIVE = 1e-4
# gradient clipping (max norm)
GRAD_CLIP: valid.POSITIVE = 1.0
# augmentation: each lead scaled by a factor in this range
AMPLITUDE_RANGE: valid.ascending(valid.POSITIVE, strict=False) = (0.8, 1.2)
# augmentation: baseline wander amplitude (normalised units)
WANDER: valid.NON_NEGATIVE = 0.1
# augmentation: Gaussian noise sd (normalised units)
NOISE: valid.NON_NEGATIVE = 0.05
# augmentation: time shift up to this either way
SHIFT_MS: valid.NON_NEGATIVE = 20.0
# augmentation: chance each lead is zeroed
LEAD_MASK: valid.FRACTION = 0.1
# fixes the initialisation, batches, pairs and augmentations
SEED: valid.SEED = 42
# auto (CUDA if present), cpu, cuda, cuda:1
DEVICE: valid.DEVICE = "auto"
# continue an interrupted run in OUTPUT_DIR from its last epoch
RESUME: valid.FLAG = False
# load pickled (object) arrays: only for files you trust
ALLOW_PICKLE: valid.FLAG = False


def main():
    config = configure(globals())
    from lvr.train.pretraining import pretrain   # imported once the options are checked (torch)
    pretrain(config)


if __name__ == "__main__":
    run_script(main)
