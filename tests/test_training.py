import functools
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import (accuracy_score, f1_score, precision_score, recall_score,
                             roc_auc_score)

import lvr.config as config
import lvr.train.run as engine
import lvr.stats.metrics as metrics
import lvr.train.loop as training
from helpers import HANG_LIMIT_S, ROOT, quiet, tiny_config
from lvr.train.checkpoints import load_checkpoint
from lvr.data.beats import standardize_beats
from lvr.data.cohort import load_cohort
from lvr.data.split import patient_split_indices
from lvr.report.predictions import beat_records, rows_in_group
from references import cohort_in_memory, patient_bootstrap_ci_loop


# ----------------------------------------------------------------------------- loss and metrics

def test_label_smoothing_loss_equals_its_formula_and_cross_entropy_at_zero():
    torch.manual_seed(0)
    logits, target = torch.randn(7, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    log_p = F.log_softmax(logits, 1)
    e = 0.1
    expected = ((1 - e) * -log_p[torch.arange(7), target] + e * -log_p.mean(1)).mean()
    assert torch.allclose(training.LabelSmoothingLoss(4, e)(logits, target), expected)
    assert torch.allclose(training.LabelSmoothingLoss(4, 0.0)(logits, target),
                          F.cross_entropy(logits, target))


def test_binary_metrics_agree_with_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(y * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
    prob = np.stack([1 - p1, p1], 1)
    m = metrics.classification_metrics(y, prob, ["a", "b"])
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
    m = metrics.classification_metrics(y, prob, list("abcd"))
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
    point = metrics.classification_metrics(y, prob, ["a", "b"])
    ci = metrics.patient_bootstrap_ci(y, prob, ids, ["a", "b"], n_boot=300, seed=0)
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
    cis = metrics.patient_bootstrap_ci(y, prob, ids, ["a", "b"], n_boot=400, seed=1)
    lo, hi = cis["accuracy_ci95"]
    assert lo <= 0.34 and hi >= 0.99


def assert_same_cis(new, reference):
    assert list(new) == list(reference)
    for name, ci in reference.items():
        assert (new[name] is None) == (ci is None), name
        if ci is not None:
            assert np.allclose(new[name], ci, rtol=1e-12, atol=1e-12), name


def beats_of_patients(rng, n_patients, n_beats):
    """Patient IDs of `n_beats` beats, every patient with at least one beat, unevenly."""
    extra = rng.integers(0, n_patients, n_beats - n_patients)
    return np.sort(np.concatenate([np.arange(n_patients), extra]))


def softmax(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def four_class_data(rng, n_patients, n_beats):
    ids = beats_of_patients(rng, n_patients, n_beats)
    y = rng.integers(0, 4, n_patients)[ids]
    # logits on a coarse grid: identical rows (tied scores) and tied maxima (argmax takes the first)
    logits = rng.integers(-2, 3, (n_beats, 4)) * 0.5 + np.eye(4)[y]
    return ids, y, softmax(logits)


def test_vectorised_bootstrap_ci_equals_the_sklearn_loop_binary(monkeypatch):
    rng = np.random.default_rng(3)
    ids = beats_of_patients(rng, 40, 183)
    y = rng.integers(0, 2, 40)[ids]
    p1 = np.round(np.clip(0.3 * y + rng.uniform(0, 0.7, 183), 0, 1), 1)  # many ties
    prob = np.stack([1 - p1, p1], 1)
    reference = patient_bootstrap_ci_loop(y, prob, ids, ["a", "b"], n_boot=300, seed=4)
    assert all(ci is not None for ci in reference.values())
    assert_same_cis(metrics.patient_bootstrap_ci(y, prob, ids, ["a", "b"], n_boot=300, seed=4),
                    reference)
    # resamples in chunks of 7 give the same draws
    monkeypatch.setattr(metrics, "BOOTSTRAP_CHUNK_BYTES", 8 * 183 * 7)
    assert_same_cis(metrics.patient_bootstrap_ci(y, prob, ids, ["a", "b"], n_boot=300, seed=4),
                    reference)


def test_vectorised_bootstrap_ci_equals_the_sklearn_loop_four_classes():
    rng = np.random.default_rng(5)
    ids, y, prob = four_class_data(rng, 40, 183)
    ids = np.array([f"P{i:03d}" for i in ids])
    reference = patient_bootstrap_ci_loop(y, prob, ids, list("abcd"), n_boot=200, seed=6)
    assert all(ci is not None for ci in reference.values())
    assert_same_cis(metrics.patient_bootstrap_ci(y, prob, ids, list("abcd"), n_boot=200, seed=6),
                    reference)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_vectorised_bootstrap_ci_equals_the_sklearn_loop_when_resamples_lack_a_class(n_classes):
    # six patients, one (binary) or two (four classes) of them alone in their class: many
    # resamples lack a class, their AUC (binary: and sensitivity) is undefined and left out
    y_patient = np.array([0, 0, 0, 0, 1, 0]) if n_classes == 2 else np.array([0, 0, 1, 1, 2, 3])
    rng = np.random.default_rng(7)
    ids = beats_of_patients(rng, 6, 15)
    y = y_patient[ids]
    prob = softmax(rng.integers(-2, 3, (15, n_classes)) * 0.5 + np.eye(n_classes)[y])
    names = list("abcd")[:n_classes]
    undefined_auc_only = 0
    for n_boot in (0, 5, 12, 15, 25, 60):
        new = metrics.patient_bootstrap_ci(y, prob, ids, names, n_boot=n_boot, seed=8)
        assert_same_cis(new, patient_bootstrap_ci_loop(y, prob, ids, names, n_boot=n_boot,
                                                       seed=8))
        _, inverse = np.unique(ids.astype(str), return_inverse=True)
        weights = metrics.resampled_patient_weights(np.random.default_rng(8), inverse, 6, n_boot)
        draws = metrics.bootstrap_headline_metrics(y, prob, weights, n_classes)
        for name, values in draws.items():
            assert (new[f"{name}_ci95"] is None) == (np.isfinite(values).sum() < 10)
        undefined_auc_only += new["roc_auc_ci95"] is None and new["accuracy_ci95"] is not None
        if n_boot == 60:
            assert 10 <= np.isfinite(draws["roc_auc"]).sum() < 60
    assert new["roc_auc_ci95"] is not None and undefined_auc_only >= 2


def test_bootstrap_weights_repeat_one_draw_per_resample():
    for n_patients in (1, 6, 7, 40):
        inverse = np.repeat(np.arange(n_patients), 2)
        loop_rng, rng = np.random.default_rng(9), np.random.default_rng(9)
        expected = [np.bincount(loop_rng.integers(0, n_patients, n_patients),
                                minlength=n_patients)[inverse] for _ in range(7)]
        chunks = [metrics.resampled_patient_weights(rng, inverse, n_patients, size)
                  for size in (3, 0, 4)]
        assert np.array_equal(np.concatenate(chunks), np.array(expected, dtype=float))


@pytest.mark.parametrize("n_classes", [2, 4])
def test_vectorised_metrics_equal_sklearn_for_explicit_weights(n_classes):
    rng = np.random.default_rng(10)
    n = 60
    y = rng.integers(0, n_classes, n)
    prob = softmax(rng.integers(-2, 3, (n, n_classes)) * 0.5 + np.eye(n_classes)[y])
    pred = prob.argmax(1)
    labels = list(range(n_classes))
    weights = np.array([
        np.ones(n),
        rng.integers(0, 4, n),  # zero weights: beats left out
        rng.uniform(0.1, 3, n),  # not counts
        np.where(y == 1, 0, rng.integers(1, 3, n)),  # class 1 absent: its AUC undefined
        np.where(pred == 0, 0, 1),  # class 0 never predicted: its precision counts 0
        np.where(y == pred, 0, 2),  # nothing right
    ], dtype=float)
    got = metrics.bootstrap_headline_metrics(y, prob, weights, n_classes)
    assert set(got) == {"roc_auc", "accuracy", "precision", "recall", "f1", "sensitivity",
                        "specificity"}
    for i, w in enumerate(weights):
        keep = w > 0
        yk, pk, predk, wk = y[keep], prob[keep], pred[keep], w[keep]
        expected = {
            "accuracy": accuracy_score(yk, predk, sample_weight=wk),
            "precision": precision_score(yk, predk, labels=labels, average="macro",
                                         zero_division=0, sample_weight=wk),
            "recall": recall_score(yk, predk, labels=labels, average="macro", zero_division=0,
                                   sample_weight=wk),
            "f1": f1_score(yk, predk, labels=labels, average="macro", zero_division=0,
                           sample_weight=wk)}
        aucs = [roc_auc_score(yk == k, pk[:, k], sample_weight=wk)
                if 0 < (yk == k).sum() < len(yk) else np.nan for k in labels]
        expected["roc_auc"] = aucs[1] if n_classes == 2 else np.mean(aucs)
        point = metrics.headline_metrics(metrics.classification_metrics(yk, pk, labels, wk))
        expected["sensitivity"] = point["sensitivity"]
        expected["specificity"] = point["specificity"]
        for name, value in expected.items():
            assert np.allclose(got[name][i], value, rtol=1e-12, atol=1e-12, equal_nan=True), \
                (i, name)
    assert np.isnan(got["roc_auc"][3]) and not np.isnan(got["roc_auc"][:3]).any()
    assert got["accuracy"][5] == 0 and got["f1"][5] == 0


def test_patient_level_arrays_average_beat_probabilities():
    prob = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    patients, y, mean_prob = metrics.patient_level_arrays(np.array([0, 0, 1]), prob,
                                                      np.array(["p", "p", "q"]))
    assert list(patients) == ["p", "q"] and list(y) == [0, 1]
    assert np.allclose(mean_prob, [[0.7, 0.3], [0.2, 0.8]])


def test_roc_figure_draws_the_whole_curve(tmp_path, monkeypatch):
    import lvr.report.training_figures as plots
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
    report = engine.run_training(tiny_config(small_cohort_dir, output_dir), log=quiet)
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
                "f1_ci95", "patient_level", "calibration"):
        assert key in saved, key
    assert (output_dir / "test_calibration.png").exists()
    table = pd.read_csv(output_dir / "predictions.csv")
    positive = saved["calibration"]["LVR"]
    assert positive["brier"] == pytest.approx(
        np.mean((table["prob_LVR"] - table["true_label"]) ** 2), abs=1e-6)
    assert sum(b["count"] for b in positive["reliability"]) == saved["n_beats"]
    assert list(saved["patient_level"]["calibration"]) == ["LVR"]
    assert len(np.load(output_dir / "train_acc_list.npy")) == 3
    split = json.loads((output_dir / "split.json").read_text())
    assert not set(split["test"]) & set(split["train"]) and split["data_fingerprint"]
    run = json.loads((output_dir / "run.json").read_text())
    assert run["config"]["EPOCHS"] == 3 and "torch" in run["versions"] and run["device"] == "cpu"
    assert run["data_fingerprint"] == split["data_fingerprint"]


def test_predictions_csv_names_every_test_beat_and_gives_the_reported_metrics(finished_run,
                                                                             small_cohort_dir):
    output_dir, report = finished_run
    table = pd.read_csv(output_dir / "predictions.csv", dtype={"patient": str})
    split = json.loads((output_dir / "split.json").read_text())
    cohort = load_cohort(small_cohort_dir)
    assert list(table.columns) == ["group", "patient", "record", "beat", "true_label",
                                   "prob_non-LVR", "prob_LVR"]
    assert len(table) == report["n_beats"] and set(table["patient"]) == set(split["test"])
    for row in table.itertuples():                      # each row names its beat in its file
        group = cohort.groups.index(row.group)
        cohort_row = np.flatnonzero(cohort.group_index == group)[row.beat]
        assert cohort.patient_ids[cohort_row] == row.patient
        assert cohort.labels("binary")[cohort_row] == row.true_label
    np.testing.assert_allclose(table[["prob_non-LVR", "prob_LVR"]].sum(axis=1), 1, atol=1e-5)
    assert roc_auc_score(table["true_label"], table["prob_LVR"]) == pytest.approx(
        report["roc_auc"], abs=1e-5)
    patients = table.groupby("patient").agg(y=("true_label", "first"), p=("prob_LVR", "mean"))
    assert roc_auc_score(patients["y"], patients["p"]) == pytest.approx(
        report["patient_level"]["roc_auc"], abs=1e-5)


def test_records_come_from_the_beats_manifest(tmp_path):
    (tmp_path / "beats_manifest.csv").write_text(
        "group,patient_id,record,beat_index,r_peak_sample,row\nA,1,r1,0,5,0\nA,1,r1,1,9,1\n"
        "B,2,r7,0,5,0\n")
    group_index = np.array([0, 0, 1])
    assert rows_in_group(group_index).tolist() == [0, 1, 0]
    assert beat_records(str(tmp_path), ["A", "B"], group_index).tolist() == ["r1", "r1", "r7"]
    assert beat_records(str(tmp_path / "none"), ["A", "B"], group_index).tolist() == [""] * 3


def test_resume_after_interruption_gives_the_same_result(finished_run, small_cohort_dir, tmp_path,
                                                         monkeypatch):
    _, full_report = finished_run
    output_dir = tmp_path / "interrupted"
    config = tiny_config(small_cohort_dir, output_dir)
    real_epoch = training.train_one_epoch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        engine.run_training(config, log=quiet)
    assert not (output_dir / "test_eval_results.json").exists()
    monkeypatch.setattr(training, "train_one_epoch", real_epoch)
    resumed = engine.run_training(dict(config, RESUME=True), log=quiet)
    assert resumed["roc_auc"] == full_report["roc_auc"]
    assert resumed["accuracy"] == full_report["accuracy"]
    assert resumed["best_epoch"] == full_report["best_epoch"]


def test_resume_refuses_changed_options(finished_run, small_cohort_dir, tmp_path):
    output_dir = tmp_path / "run"
    engine.run_training(tiny_config(small_cohort_dir, output_dir, EPOCHS=1), log=quiet)
    with pytest.raises(config.UserError, match="LR"):
        engine.run_training(tiny_config(small_cohort_dir, output_dir, LR=0.5, RESUME=True),
                            log=quiet)


def test_second_run_keeps_the_first(small_cohort_dir, tmp_path):
    output_dir = tmp_path / "results"
    config = tiny_config(small_cohort_dir, output_dir, EPOCHS=1)
    engine.run_training(config, log=quiet)
    first = (output_dir / "test_eval_results.json").read_text()
    messages = []
    engine.run_training(config, log=messages.append)
    kept = [p for p in os.listdir(tmp_path) if p.startswith("results.")]
    assert len(kept) == 1 and (tmp_path / kept[0] / "test_eval_results.json").read_text() == first
    assert any("kept as" in m for m in messages)


@pytest.mark.slow
def test_four_class_script_end_to_end(small_cohort_dir, tmp_path):
    run = subprocess.run([sys.executable, "train_MCL_ResNet_1D_class4.py",
                          f"--data_dir={small_cohort_dir}", f"--output_dir={tmp_path / 'r4'}",
                          "--epochs=1", "--experiment=baseline", "--bootstrap=20", "--device=cpu"],
                         cwd=ROOT, capture_output=True, text=True, timeout=HANG_LIMIT_S)
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "r4" / "test_eval_results.json").read_text())
    assert set(report["roc_auc"]) == {"macro", "class_0", "class_1", "class_2", "class_3"}
    assert report["class_metrics"]["class_3"]["name"] == "STEMI LVR"
    assert "AUC (macro one-vs-rest)" in run.stdout


def test_two_class_model_cannot_train_on_four_classes(small_cohort_dir, tmp_path):
    with pytest.raises(config.UserError, match="NUM_CLASSES=2"):
        engine.run_training(tiny_config(small_cohort_dir, tmp_path / "x", TASK="multiclass"),
                         log=quiet)


def test_cross_validation_reports_mean_and_spread(small_cohort_dir, tmp_path):
    output_dir = tmp_path / "cv"
    summary = engine.run_training(tiny_config(small_cohort_dir, output_dir, EPOCHS=1, CV_FOLDS=3),
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
        assert (output_dir / f"fold_{k}" / "report.html").exists()
    assert "3-fold cross-validation" in (output_dir / "report.html").read_text()


@pytest.mark.slow
def test_memory_mapped_run_equals_the_in_memory_run(small_cohort_dir, tmp_path, monkeypatch):
    """The beats read batch by batch from the mapped files give the same test results as the
    same run with every file read whole into one array (references.cohort_in_memory); one
    thread, so that float sums run in one order. Lead dropout and a worker process included."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    used = []

    def recording_load(*args, load, **kwargs):
        cohort = load(*args, **kwargs)
        used.append(type(cohort.beats).__name__)
        return cohort

    results = []
    try:
        for in_memory, load in ((False, engine.load_cohort), (True, cohort_in_memory)):
            monkeypatch.setattr(engine, "load_cohort", functools.partial(recording_load, load=load))
            output_dir = tmp_path / f"in_memory_{in_memory}"
            engine.run_training(tiny_config(small_cohort_dir, output_dir, EPOCHS=2,
                                            LEAD_DROPOUT=0.2, NUM_WORKERS=1), log=quiet)
            results.append(json.loads((output_dir / engine.TEST_RESULTS).read_text()))
    finally:
        torch.set_num_threads(threads)
    assert used == ["BeatFiles", "ndarray"]
    assert results[0] == results[1]


def test_lead_dropout_reaches_the_training_batches_only(small_cohort_dir, tmp_path, monkeypatch):
    """LEAD_DROPOUT zeroes leads of training beats; the validation accuracy that selects the
    checkpoint and the test predictions see the standardised beats with every lead."""
    real_predict, real_epoch = training.predict_logits, training.train_one_epoch
    predicted, trained_on = [], []

    def recording_predict(model, x, *args, **kwargs):
        predicted.append(x[:])  # a tensor, or the beats read from StandardisedBeats
        return real_predict(model, x, *args, **kwargs)

    def recording_epoch(model, loader, *args, **kwargs):
        trained_on.append(torch.cat([x for x, _ in loader]))
        return real_epoch(model, loader, *args, **kwargs)

    monkeypatch.setattr(training, "predict_logits", recording_predict)
    monkeypatch.setattr(engine, "predict_logits", recording_predict)
    monkeypatch.setattr(training, "train_one_epoch", recording_epoch)
    output_dir = tmp_path / "dropout"
    run_config = tiny_config(small_cohort_dir, output_dir, EPOCHS=1, LEAD_DROPOUT=0.5)
    report = engine.run_training(run_config, log=quiet)

    cohort = load_cohort(small_cohort_dir)
    x_all = torch.from_numpy(standardize_beats(cohort.beats))
    labels = torch.from_numpy(cohort.labels("binary"))
    parts = patient_split_indices(cohort.labels("binary"), cohort.patient_ids,
                                  run_config["TEST_SIZE"], run_config["VAL_SIZE"],
                                  run_config["SEED"])
    split = json.loads((output_dir / "split.json").read_text())
    for name in ("train", "val", "test"):
        assert sorted(set(cohort.patient_ids[parts[name]].tolist())) == split[name], name

    def zeroed_leads(x):
        return (x == 0).all(dim=-1)  # (beats, leads): True where a whole lead is zero

    assert not zeroed_leads(x_all).any()
    # training (one epoch): about half of the leads of the beats are zeroed
    (epoch_beats,) = trained_on
    assert epoch_beats.shape == (len(parts["train"]),) + tuple(x_all.shape[1:])
    assert 0.35 < zeroed_leads(epoch_beats).float().mean().item() < 0.65
    # validation after the epoch, validation for the operating point, then the test: the beats
    # as they are
    assert len(predicted) == 3
    assert torch.equal(predicted[0], x_all[parts["val"]])
    assert torch.equal(predicted[1], x_all[parts["val"]])
    assert torch.equal(predicted[2], x_all[parts["test"]])

    # the recorded accuracies are those of the undropped beats
    def accuracy(checkpoint, part):
        model, _ = load_checkpoint(output_dir / checkpoint)
        with torch.no_grad():
            logits = model.eval()(x_all[parts[part]])
        return (logits.argmax(1) == labels[parts[part]]).float().mean().item()

    assert np.load(output_dir / "val_acc_list.npy")[-1] == pytest.approx(
        accuracy(training.LAST_CHECKPOINT, "val"), abs=1e-6)
    assert report["accuracy"] == pytest.approx(accuracy(training.BEST_CHECKPOINT, "test"), abs=1e-6)


@pytest.mark.parametrize("rule, expected_epoch", [("val_acc", 2), ("val_auc", 3), ("val_loss", 1)])
def test_select_by_picks_the_epoch_of_its_measure(rule, expected_epoch):
    from lvr.train.loop import FitState
    state = FitState(select_by=rule)
    # (val_acc, val_loss, val_auc) per epoch: each rule prefers another epoch
    for epoch, values in enumerate([(0.80, 0.40, 0.85), (0.90, 0.50, 0.86), (0.85, 0.60, 0.95)],
                                   start=1):
        state.epoch = epoch
        state.improved_by(*values)
    assert state.best_epoch == expected_epoch


def test_select_by_auc_keeps_the_epoch_of_the_best_validation_auc(small_cohort_dir, tmp_path):
    out = tmp_path / "run"
    report = engine.run_training(tiny_config(small_cohort_dir, out, SELECT_BY="val_auc"),
                                 log=quiet)
    aucs = np.load(out / "val_auc_list.npy")
    assert len(aucs) == 3
    assert report["best_epoch"] == int(np.argmax(aucs)) + 1
    assert report["selected_by"] == "val_auc"
    _, checkpoint = load_checkpoint(out / "best_model.pth")
    assert checkpoint["selected_by"] == "val_auc"
    assert checkpoint["val_auc"] == pytest.approx(aucs.max())


@pytest.mark.slow
def test_a_run_interrupted_before_normalisation_and_select_by_existed_resumes(small_cohort_dir,
                                                                              tmp_path):
    out = tmp_path / "run"
    engine.run_training(tiny_config(small_cohort_dir, out, EPOCHS=2), log=quiet)
    (out / "test_eval_results.json").unlink()
    path = out / "last_checkpoint.pth"
    stored = torch.load(path, weights_only=True)
    for key in ("NORMALISATION", "SELECT_BY"):
        del stored["run_config"][key]
    del stored["history"]["val_auc_list"], stored["best_val_auc"], stored["normalisation"]
    torch.save(stored, path)
    report = engine.run_training(tiny_config(small_cohort_dir, out, EPOCHS=3, RESUME=True),
                                 log=quiet)
    aucs = np.load(out / "val_auc_list.npy")
    assert np.isnan(aucs[:2]).all() and np.isfinite(aucs[2])
    assert report["n_beats"] > 0
