"""The small scripts run as the README writes them."""
import os

from helpers import script_result


def test_plot_training_curves_redraws_a_finished_runs_figures(small_cohort_dir, tmp_path):
    run_dir = tmp_path / "run"
    trained = script_result("train_MCL_ResNet_1D_class2.py", f"--output_dir={run_dir}",
                            f"--data_dir={small_cohort_dir}", "--experiment=baseline",
                            "--epochs=2", "--bootstrap=20", "--device=cpu")
    assert trained.returncode == 0, trained.stderr
    figures = ["ACC_Loss_Curve.png", "test_roc_curve.png", "test_confusion_matrix.png"]
    for name in figures:
        os.remove(run_dir / name)
    redrawn = script_result("plot_training_curves.py", f"--train_dir={run_dir}")
    assert redrawn.returncode == 0, redrawn.stderr
    assert all((run_dir / name).stat().st_size > 10_000 for name in figures)


def test_plot_training_curves_names_what_is_missing(tmp_path):
    done = script_result("plot_training_curves.py", f"--train_dir={tmp_path}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error:") and "test_eval_results.json" in done.stderr
