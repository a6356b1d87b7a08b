"""Redraw the figures and report.html of a finished run from the files it wrote: the
accuracy/loss curves (from the four *_list.npy files), the test figures (from
test_eval_results.json) and the report. TRAIN_DIR may also be an evaluation's or a saliency
analysis's folder, whose report is redrawn. The drawing functions are
lvr/report/training_figures.py; the original's `from plot_training_curves import
plot_training_curves` keeps working.

    python plot_training_curves.py --train_dir=results_class2
"""
import json
import os

import numpy as np

from lvr import options as valid
from lvr.config import UserError, configure, run_script
from lvr.report.training_figures import (plot_confusion_matrix, plot_roc_curve,  # noqa: F401
                                  plot_training_curves)
from lvr.train.loop import HISTORY_KEYS

# a finished training run (or an evaluation, a saliency analysis)
TRAIN_DIR: valid.folder(written=True) = "results_class2"
# also redraw report.html
REPORT: valid.FLAG = True


def main():
    configure(globals())
    from lvr.report.results import write_test_figures     # imported once the options are checked
    from lvr.report.html import write_report
    results_path = os.path.join(TRAIN_DIR, "test_eval_results.json")
    finished = [name for name in ("test_eval_results.json", "cv_summary.json", "saliency_run.json")
                if os.path.exists(os.path.join(TRAIN_DIR, name))]
    if not finished:
        raise UserError(f"{TRAIN_DIR} holds no test_eval_results.json, cv_summary.json or "
                        f"saliency_run.json: --train_dir must be the folder of a finished run")
    redrawn = []
    paths = {key: os.path.join(TRAIN_DIR, f"{key}.npy") for key in HISTORY_KEYS}
    report = None
    if os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as handle:
            report = json.load(handle)
    if report is not None and all(os.path.exists(p) for p in paths.values()):
        history = {key: np.load(path) for key, path in paths.items()}
        plot_training_curves(TRAIN_DIR, *(history[key] for key in HISTORY_KEYS),
                             best_epoch=report.get("best_epoch"))
        redrawn.append("ACC_Loss_Curve.png")
    if report is not None:
        external = "evaluation" in report
        write_test_figures(TRAIN_DIR, report, report["class_names"],
                           test_set="external" if external and report["evaluation"].get(
                               "external") else "all beats" if external else "test set")
        redrawn.append("the test figures")
    if REPORT:
        write_report(TRAIN_DIR, log=lambda *_: None)
        redrawn.append("report.html")
    print(f"Redrew {', '.join(redrawn)} in {TRAIN_DIR}/")


if __name__ == "__main__":
    run_script(main)
