"""The original's loss/utility module: LabelSmoothingLoss and the helpers of the training scripts.

Everything here lives in the lvr package (the README's "Code map" says where) and is imported
from there, so code written against the original's `from para_define import ...` keeps working.
"""
from lvr.train.checkpoints import load_checkpoint, save_checkpoint  # noqa: F401
from lvr.data.beats import set_seed  # noqa: F401
from lvr.train.distributed import resolve_device  # noqa: F401
from lvr.train.run import run_training  # noqa: F401
from lvr.stats.metrics import (classification_metrics, patient_bootstrap_ci,  # noqa: F401
                         patient_level_arrays, test_report)
from lvr.train.loop import (LabelSmoothingLoss, build_optimizer, predict_logits,  # noqa: F401
                          train_one_epoch)
