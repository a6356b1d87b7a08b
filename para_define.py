"""The original's loss/utility module: LabelSmoothingLoss and the helpers of the training scripts.

Everything here lives in the lvr package (the README's "Code map" says where) and is imported
from there, so code written against the original's `from para_define import ...` keeps working.
"""
from lvr.checkpoints import load_checkpoint, save_checkpoint  # noqa: F401
from lvr.cohort import set_seed  # noqa: F401
from lvr.distributed import resolve_device  # noqa: F401
from lvr.engine import run_training  # noqa: F401
from lvr.metrics import (classification_metrics, patient_bootstrap_ci,  # noqa: F401
                         patient_level_arrays, test_report)
from lvr.training import (LabelSmoothingLoss, build_optimizer, predict_logits,  # noqa: F401
                          train_one_epoch)
