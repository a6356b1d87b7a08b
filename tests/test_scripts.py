"""The small scripts run as the README writes them."""
import os
import subprocess
import sys

from conftest import ROOT


def test_plot_training_curves_redraws_a_finished_runs_figures(small_cohort_dir, tmp_path):
    run_dir = tmp_path / "run"
    common = [f"--data_dir={small_cohort_dir}", "--experiment=baseline", "--epochs=2",
              "--bootstrap=20", "--device=cpu"]
    trained = subprocess.run([sys.executable, "train_MCL_ResNet_1D_class2.py",
                              f"--output_dir={run_dir}", *common], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    figures = ["ACC_Loss_Curve.png", "test_roc_curve.png", "test_confusion_matrix.png"]
    for name in figures:
        os.remove(run_dir / name)
    redrawn = subprocess.run([sys.executable, "plot_training_curves.py", f"--train_dir={run_dir}"],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert redrawn.returncode == 0, redrawn.stderr
    assert all((run_dir / name).stat().st_size > 10_000 for name in figures)


def test_plot_training_curves_names_what_is_missing(tmp_path):
    done = subprocess.run([sys.executable, "plot_training_curves.py",
                           f"--train_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error:") and "train_acc_list.npy" in done.stderr
