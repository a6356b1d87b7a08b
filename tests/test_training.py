import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import (accuracy_score, f1_score, precision_score, recall_score,
                             roc_auc_score)

import para_define as pd_
from conftest import ROOT


def tiny_config(data_dir, output_dir, **overrides):
    import train_MCL_ResNet_1D_class2 as script
    config = {name: getattr(script, name) for name in dir(script) if name.isupper()}
    config.update(DATA_DIR=str(data_dir), OUTPUT_DIR=str(output_dir), EXPERIMENT="baseline",
                  EPOCHS=3, BATCH_SIZE=16, BOOTSTRAP=50, DEVICE="cpu", LR=1e-3)
    config.update(overrides)
    return config


def quiet(*_):
    pass


# ----------------------------------------------------------------------------- loss and metrics

def test_label_smoothing_loss_equals_its_formula_and_cross_entropy_at_zero():
    torch.manual_seed(0)
    logits, target = torch.randn(7, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    log_p = F.log_softmax(logits, 1)
    e = 0.1
    expected = ((1 - e) * -log_p[torch.arange(7), target] + e * -log_p.mean(1)).mean()
    assert torch.allclose(pd_.LabelSmoothingLoss(4, e)(logits, target), expected)
    assert torch.allclose(pd_.LabelSmoothingLoss(4, 0.0)(logits, target),
                          F.cross_entropy(logits, target))


def test_binary_metrics_agree_with_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(y * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
    prob = np.stack([1 - p1, p1], 1)
    m = pd_.classification_metrics(y, prob, ["a", "b"])
    pred = prob.argmax(1)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(precision_score(y, pred, average="macro"))
    assert m["recall"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p1))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert len(m["fpr"]) == len(m["tpr"]) > 10 and m["fpr"][0] == 0 and m["tpr"][-1] == 1


def test_multiclass_metrics_agree_with_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + 1.5 * np.eye(4)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = pd_.classification_metrics(y, prob, list("abcd"))
    assert m["roc_auc"]["macro"] == pytest.approx(roc_auc_score(y, prob, multi_class="ovr"))
    for k in range(4):
        assert m["roc_auc"][f"class_{k}"] == pytest.approx(roc_auc_score(y == k, prob[:, k]))
        assert m["class_metrics"][f"class_{k}"]["total_samples"] == int((y == k).sum())
    assert m["f1"] == pytest.approx(f1_score(y, prob.argmax(1), average="macro"))
    assert np.array(m["confusion_matrix"]).sum() == 300 and len(m["fpr"]) == 4


def test_bootstrap_ci_brackets_the_estimate():
    rng = np.random.default_rng(2)
    ids = np.repeat(np.arange(60), 3)
    y = np.repeat(rng.integers(0, 2, 60), 3)
    p1 = np.clip(0.35 * y + rng.uniform(0, 0.65, 180), 0, 1)
    prob = np.stack([1 - p1, p1], 1)
    point = pd_.classification_metrics(y, prob, ["a", "b"])
    ci = pd_.patient_bootstrap_ci(y, prob, ids, ["a", "b"], n_boot=300, seed=0)
    for name in ("roc_auc", "accuracy", "f1"):
        lo, hi = ci[f"{name}_ci95"]
        assert lo <= point[name] <= hi and hi - lo > 0.01


def test_bootstrap_resamples_patients_not_beats():
    # three patients of 50 beats each; one of them is always misclassified. Resampling patients
    # gives accuracies like 0, 1/3 or 1; resampling beats would stay close to 2/3.
    y = np.repeat([0, 1, 1], 50)
    p1 = np.repeat([0.2, 0.3, 0.9], 50)
    prob = np.stack([1 - p1, p1], 1)
    ids = np.repeat(["A", "B", "C"], 50)
    lo, hi = pd_.patient_bootstrap_ci(y, prob, ids, ["a", "b"], n_boot=400, seed=1)["accuracy_ci95"]
    assert lo <= 0.34 and hi >= 0.99


def test_patient_level_arrays_average_beat_probabilities():
    prob = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    patients, y, mean_prob = pd_.patient_level_arrays(np.array([0, 0, 1]), prob,
                                                      np.array(["p", "p", "q"]))
    assert list(patients) == ["p", "q"] and list(y) == [0, 1]
    assert np.allclose(mean_prob, [[0.7, 0.3], [0.2, 0.8]])


def test_roc_figure_draws_the_whole_curve(tmp_path, monkeypatch):
    import plot_training_curves as plots
    drawn = {}

    def capture(fig, path, dpi=None):
        drawn["line"] = fig.axes[0].lines[0]
        fig.savefig(path)

    monkeypatch.setattr(plots, "save_figure", capture)
    fpr, tpr = [0, 0, 0.25, 0.5, 1], [0, 0.5, 0.75, 1, 1]
    plots.plot_roc_curve(str(tmp_path / "roc.png"), fpr, tpr, 0.9, ["a", "b"])
    assert list(drawn["line"].get_xdata()) == fpr and list(drawn["line"].get_ydata()) == tpr


# ----------------------------------------------------------------------------- whole runs

@pytest.fixture(scope="module")
def finished_run(small_cohort_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("runs") / "full"
    report = pd_.run_training(tiny_config(small_cohort_dir, output_dir), log=quiet)
    return output_dir, report


def test_run_writes_the_seeds_outputs_and_provenance(finished_run, small_cohort_dir):
    output_dir, report = finished_run
    for name in ("best_model.pth", "test_eval_results.json", "test_roc_curve.png",
                 "test_confusion_matrix.png", "ACC_Loss_Curve.png", "train_acc_list.npy",
                 "val_loss_list.npy", "run.json", "split.json"):
        assert (output_dir / name).exists(), name
    saved = json.loads((output_dir / "test_eval_results.json").read_text())
    for key in ("accuracy", "precision", "recall", "f1", "confusion_matrix", "fpr", "tpr",
                "roc_auc", "sensitivity", "specificity", "roc_auc_ci95", "accuracy_ci95",
                "f1_ci95", "patient_level"):
        assert key in saved, key
    assert len(np.load(output_dir / "train_acc_list.npy")) == 3
    split = json.loads((output_dir / "split.json").read_text())
    assert not set(split["test"]) & set(split["train"]) and split["data_fingerprint"]
    run = json.loads((output_dir / "run.json").read_text())
    assert run["config"]["EPOCHS"] == 3 and "torch" in run["versions"] and run["device"] == "cpu"
    assert run["data_fingerprint"] == split["data_fingerprint"]


def test_resume_after_interruption_gives_the_same_result(finished_run, small_cohort_dir, tmp_path,
                                                         monkeypatch):
    _, full_report = finished_run
    output_dir = tmp_path / "interrupted"
    config = tiny_config(small_cohort_dir, output_dir)
    real_epoch = pd_.train_one_epoch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(pd_, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pd_.run_training(config, log=quiet)
    assert not (output_dir / "test_eval_results.json").exists()
    monkeypatch.setattr(pd_, "train_one_epoch", real_epoch)
    resumed = pd_.run_training(dict(config, RESUME=True), log=quiet)
    assert resumed["roc_auc"] == full_report["roc_auc"]
    assert resumed["accuracy"] == full_report["accuracy"]
    assert resumed["best_epoch"] == full_report["best_epoch"]


def test_resume_refuses_changed_options(finished_run, small_cohort_dir, tmp_path):
    output_dir = tmp_path / "run"
    pd_.run_training(tiny_config(small_cohort_dir, output_dir, EPOCHS=1), log=quiet)
    with pytest.raises(pd_.UserError, match="LR"):
        pd_.run_training(tiny_config(small_cohort_dir, output_dir, LR=0.5, RESUME=True), log=quiet)


def test_second_run_keeps_the_first(small_cohort_dir, tmp_path):
    output_dir = tmp_path / "results"
    config = tiny_config(small_cohort_dir, output_dir, EPOCHS=1)
    pd_.run_training(config, log=quiet)
    first = (output_dir / "test_eval_results.json").read_text()
    messages = []
    pd_.run_training(config, log=messages.append)
    kept = [p for p in os.listdir(tmp_path) if p.startswith("results.")]
    assert len(kept) == 1 and (tmp_path / kept[0] / "test_eval_results.json").read_text() == first
    assert any("kept as" in m for m in messages)


def test_four_class_script_end_to_end(small_cohort_dir, tmp_path):
    run = subprocess.run([sys.executable, "train_MCL_ResNet_1D_class4.py",
                          f"--data_dir={small_cohort_dir}", f"--output_dir={tmp_path / 'r4'}",
                          "--epochs=1", "--experiment=baseline", "--bootstrap=20", "--device=cpu"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "r4" / "test_eval_results.json").read_text())
    assert set(report["roc_auc"]) == {"macro", "class_0", "class_1", "class_2", "class_3"}
    assert report["class_metrics"]["class_3"]["name"] == "STEMI LVR"
    assert "AUC (macro one-vs-rest)" in run.stdout


def test_two_class_model_cannot_train_on_four_classes(small_cohort_dir, tmp_path):
    with pytest.raises(pd_.UserError, match="NUM_CLASSES=2"):
        pd_.run_training(tiny_config(small_cohort_dir, tmp_path / "x", TASK="multiclass"),
                         log=quiet)


def test_cross_validation_reports_mean_and_spread(small_cohort_dir, tmp_path):
    output_dir = tmp_path / "cv"
    summary = pd_.run_training(tiny_config(small_cohort_dir, output_dir, EPOCHS=1, CV_FOLDS=3),
                               log=quiet)
    saved = json.loads((output_dir / "cv_summary.json").read_text())
    assert saved["folds"] == 3 and summary["metrics"]["roc_auc"]["mean"] is not None
    aucs = saved["metrics"]["roc_auc"]["per_fold"]
    assert len(aucs) == 3 and saved["metrics"]["roc_auc"]["mean"] == pytest.approx(np.mean(aucs))
    assert saved["metrics"]["roc_auc"]["sd"] == pytest.approx(np.std(aucs, ddof=1))
    tests = [set(json.loads((output_dir / f"fold_{k}" / "split.json").read_text())["test"])
             for k in (1, 2, 3)]
    assert not (tests[0] & tests[1]) and not (tests[1] & tests[2]) and not (tests[0] & tests[2])
    for k in (1, 2, 3):
        split = json.loads((output_dir / f"fold_{k}" / "split.json").read_text())
        assert not set(split["train"]) & set(split["test"]) and split["val"]
