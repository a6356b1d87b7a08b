"""Redraw the figures of a finished training run from the files it wrote: the accuracy/loss
curves (from the four *_list.npy files), the ROC curve and the confusion matrix (from
test_eval_results.json). The drawing functions are lvr/figures/training.py; the original's
`from plot_training_curves import plot_training_curves` keeps working.

    python plot_training_curves.py --train_dir=results_class2
"""
import json
import os

import numpy as np

from lvr.config import UserError, configure, run_script
from lvr.figures.training import (plot_confusion_matrix, plot_roc_curve,  # noqa: F401
                                  plot_training_curves)
from lvr.training import HISTORY_KEYS

TRAIN_DIR = "results_class2"      # a finished run of train_MCL_ResNet_1D_class2.py or _class4.py


def main():
    configure(globals())
    paths = {key: os.path.join(TRAIN_DIR, f"{key}.npy") for key in HISTORY_KEYS}
    results_path = os.path.join(TRAIN_DIR, "test_eval_results.json")
    missing = [p for p in (*paths.values(), results_path) if not os.path.exists(p)]
    if missing:
        raise UserError(f"{', '.join(missing)} not found: --train_dir must be a finished run of a "
                        f"training script")
    with open(results_path, encoding="utf-8") as handle:
        report = json.load(handle)
    history = {key: np.load(path) for key, path in paths.items()}
    plot_training_curves(TRAIN_DIR, *(history[key] for key in HISTORY_KEYS),
                         best_epoch=report.get("best_epoch"))
    plot_roc_curve(os.path.join(TRAIN_DIR, "test_roc_curve.png"), report["fpr"], report["tpr"],
                   report["roc_auc"], report["class_names"])
    plot_confusion_matrix(os.path.join(TRAIN_DIR, "test_confusion_matrix.png"),
                          report["confusion_matrix"], report["class_names"])
    print(f"Redrew ACC_Loss_Curve.png, test_roc_curve.png and test_confusion_matrix.png in "
          f"{TRAIN_DIR}/")


if __name__ == "__main__":
    run_script(main)
