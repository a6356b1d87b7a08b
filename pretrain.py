"""Pretrain a network's encoder on unlabelled ECG beats (self-supervised, patient-contrastive).

Two views of one patient (two of its beats, or two halves of its leads, each augmented) must find
each other among the other patients' views: CLOCS's objective (lvr/train/pretraining.py). Labels are
ignored; a cohort folder of beats with patient IDs is enough (prepare_data.py --task=unlabelled).
The checkpoint it writes, OUTPUT_DIR/pretrained_model.pth, is what the training scripts'
--init_from takes. Without data of your own it pretrains on the synthetic demo cohort.
Every constant below can be overridden as --lower_case_name=value; --help lists them.
"""
from lvr.config import configure, run_script

DATA_DIR = "data"                 # cohort folder (docs/data.md); default: the demo cohort
OUTPUT_DIR = "pretrained"         # an earlier run found here is kept as OUTPUT_DIR.<timestamp>
EXCLUDE_PATIENTS = ""             # leave these out: a run's split.json (its test), or an ID list
EXPERIMENT = "ms"                 # the network whose encoder is pretrained (model.EXPERIMENT_NAMES)
NORMALISATION = "per_lead"        # input: per_lead, per_beat or none; fine-tuning must match it
PAIRS = "beats_and_leads"         # positive pair: two beats, two lead halves of a beat, or both
TEMPERATURE = 0.1                 # InfoNCE temperature (CLOCS: 0.1)
PROJECTION_DIM = 128              # projection head output; dropped after pretraining
EPOCHS = 40                       # passes over the patients
BATCH_SIZE = 64                   # patients per batch: each gives 2 views, the rest negatives
LR = 1e-3                         # AdamW learning rate, cosine-decayed to 0 over EPOCHS
WEIGHT_DECAY = 1e-4               # AdamW weight decay
GRAD_CLIP = 1.0                   # gradient clipping (max norm)
AMPLITUDE_RANGE = (0.8, 1.2)      # augmentation: each lead scaled by a factor in this range
WANDER = 0.1                      # augmentation: baseline wander amplitude (normalised units)
NOISE = 0.05                      # augmentation: Gaussian noise sd (normalised units)
SHIFT_MS = 20.0                   # augmentation: time shift up to this either way
LEAD_MASK = 0.1                   # augmentation: chance each lead is zeroed
SEED = 42                         # fixes the initialisation, batches, pairs and augmentations
DEVICE = "auto"                   # auto (CUDA if present), cpu, cuda, cuda:1
RESUME = False                    # continue an interrupted run in OUTPUT_DIR from its last epoch
ALLOW_PICKLE = False              # load pickled (object) arrays: only for files you trust


def main():
    config = configure(globals())
    from lvr.train.pretraining import pretrain   # imported once the options are checked (torch)
    pretrain(config)


if __name__ == "__main__":
    run_script(main)
