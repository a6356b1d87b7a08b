"""THRESHOLD: the 2-class operating point is chosen on the validation patients only, stored in the
checkpoint, and applied unchanged to the test set and in --evaluate; the metrics at it agree with
scikit-learn."""
import json
import shutil

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score, roc_curve

from helpers import evaluation_config, quiet, tiny_config
from lvr.train import run as engine
from lvr.train.checkpoints import load_checkpoint
from lvr.choices import threshold_rule
from lvr.data.beats import StandardisedBeats
from lvr.data.cohort import load_cohort
from lvr.config import UserError
from lvr.evaluate.external import run_evaluation
from lvr.stats.metrics import patient_level_arrays
from lvr.report.html import render_report, report_context
from lvr.train.loop import predict_logits
from lvr.stats.operating_point import (chosen_threshold, metrics_at_threshold,
                                       operating_point_report, sensitivity_specificity,
                                       validation_operating_point)


def scores(seed, n=60, separation=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + separation * (2 * y - 1))))
    return y, np.round(p, 2)                       # rounded: ties between patients


def roc_points(y, p):
    """(sensitivity, specificity) of every threshold of scikit-learn's ROC curve."""
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    return tpr, 1 - fpr


def test_threshold_rules_are_parsed():
    assert threshold_rule("youden") == ("youden", None)
    assert threshold_rule("Sensitivity:0.9") == ("sensitivity", 0.9)
    assert threshold_rule("specificity:.95") == ("specificity", 0.95)
    assert threshold_rule("0.3") == ("probability", 0.3)
    assert threshold_rule(0.3) == ("probability", 0.3)
    assert threshold_rule("argmax") == ("argmax", 0.5)
    for bad in ("sensitivity:0", "sensitivity:1.1", "1", "0", "nan", "youdens", True):
        assert threshold_rule(bad) is None, bad


@pytest.mark.parametrize("seed", range(5))
def test_youden_reaches_the_largest_j_of_the_roc_curve(seed):
    y, p = scores(seed)
    threshold = chosen_threshold(y, p, "youden")
    sensitivity, specificity = sensitivity_specificity(y, p, [threshold])
    tpr, tnr = roc_points(y, p)
    assert sensitivity[0] + specificity[0] - 1 == pytest.approx(np.max(tpr + tnr - 1), abs=1e-12)
    assert not np.isin(threshold, p)               # midway between patients, not on one


@pytest.mark.parametrize("seed", range(5))
def test_target_rules_keep_their_target_and_are_best_on_the_other_measure(seed):
    y, p = scores(seed)
    tpr, tnr = roc_points(y, p)
    sensitivity, specificity = sensitivity_specificity(
        y, p, [chosen_threshold(y, p, "sensitivity:0.9")])
    assert sensitivity[0] >= 0.9
    assert specificity[0] == pytest.approx(tnr[tpr >= 0.9].max(), abs=1e-12)
    sensitivity, specificity = sensitivity_specificity(
        y, p, [chosen_threshold(y, p, "specificity:0.8")])
    assert specificity[0] >= 0.8
    assert sensitivity[0] == pytest.approx(tpr[tnr >= 0.8].max(), abs=1e-12)


def test_a_fixed_probability_is_used_as_given():
    y, p = scores(0)
    assert chosen_threshold(y, p, "0.37") == 0.37
    assert chosen_threshold(y, p, "argmax") == 0.5


def test_the_validation_threshold_is_chosen_on_patient_means():
    rng = np.random.default_rng(3)
    patients = np.repeat(np.arange(30), 3).astype(str)
    y = np.repeat(rng.integers(0, 2, 30), 3)
    p1 = np.clip(0.3 * y + rng.uniform(0, 0.7, len(y)), 0, 1)
    prob = np.stack([1 - p1, p1], 1)
    point = validation_operating_point(y, prob, patients, "youden")
    _, y_patient, prob_patient = patient_level_arrays(y, prob, patients)
    assert point["threshold"] == chosen_threshold(y_patient, prob_patient[:, 1], "youden")
    assert point["validation"]["n_patients"] == 30


@pytest.mark.parametrize("threshold", [0.2, 0.45, 0.8])
def test_metrics_at_the_threshold_equal_scikit_learn(threshold):
    y, p = scores(1, n=80)
    patients = np.arange(len(y)).astype(str)
    out = metrics_at_threshold(y, p, patients, threshold, n_boot=200, seed=0)
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert out["confusion_matrix"] == [[tn, fp], [fn, tp]]
    assert out["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert out["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert out["ppv"] == pytest.approx(precision_score(y, pred))
    assert out["npv"] == pytest.approx(precision_score(1 - y, 1 - pred))
    assert out["f1"] == pytest.approx(f1_score(y, pred))
    for name in ("sensitivity", "specificity", "ppv", "npv", "f1"):
        low, high = out[f"{name}_ci95"]
        assert low <= out[name] <= high


def test_the_bootstrap_resamples_patients_with_all_their_beats():
    """Beats of one patient move together: a patient of 10 identical beats has the interval of
    one patient counted 10 times, which differs from 10 independent beats."""
    y, p = scores(2, n=30)
    beats_y, beats_p = np.repeat(y, 10), np.repeat(p, 10)
    by_patient = metrics_at_threshold(beats_y, beats_p, np.repeat(np.arange(30), 10), 0.5, 300, 0)
    alone = metrics_at_threshold(y, p, np.arange(30), 0.5, 300, 0)
    assert by_patient["sensitivity_ci95"] == pytest.approx(alone["sensitivity_ci95"])
    by_beat = metrics_at_threshold(beats_y, beats_p, np.arange(300), 0.5, 300, 0)
    assert by_beat["sensitivity_ci95"][1] - by_beat["sensitivity_ci95"][0] < \
        alone["sensitivity_ci95"][1] - alone["sensitivity_ci95"][0]


def test_the_report_block_holds_both_levels():
    y, p = scores(4, n=40)
    prob = np.stack([1 - p, p], 1)
    point = {"rule": "0.5", "threshold": 0.5, "chosen_on": "given"}
    block = operating_point_report(np.repeat(y, 2), np.repeat(prob, 2, 0),
                                   np.repeat(np.arange(40), 2), point, 100, 0)
    assert block["threshold"] == 0.5
    assert sum(map(sum, block["patient_level"]["confusion_matrix"])) == 40
    assert sum(map(sum, block["beat_level"]["confusion_matrix"])) == 80


# ------------------------------------------------------------------------- in a training run

def flip_test_labels(monkeypatch):
    """Make the engine see the opposite class for every test beat (after the split is drawn)."""
    original = engine.patient_split_indices

    def split_then_flip(labels, *args):
        parts = original(labels, *args)
        labels[parts["test"]] = 1 - labels[parts["test"]]
        return parts
    monkeypatch.setattr(engine, "patient_split_indices", split_then_flip)


@pytest.fixture(scope="module")
def plain_run(small_cohort_dir, tmp_path_factory):
    """A short 2-class run at THRESHOLD=sensitivity:0.9: its folder and test report."""
    run_dir = tmp_path_factory.mktemp("threshold") / "run"
    report = engine.run_training(tiny_config(small_cohort_dir, run_dir, **SHORT), log=quiet)
    return run_dir, report


SHORT = dict(EPOCHS=2, BOOTSTRAP=20, THRESHOLD="sensitivity:0.9", REPORT=False)


def test_the_threshold_depends_on_validation_patients_only(plain_run, small_cohort_dir,
                                                           tmp_path, monkeypatch):
    run_dir, plain = plain_run
    flip_test_labels(monkeypatch)
    flipped = engine.run_training(tiny_config(small_cohort_dir, tmp_path / "b", **SHORT),
                                  log=quiet)
    assert flipped["confusion_matrix"] != plain["confusion_matrix"]     # the test labels changed
    chosen = {key: plain["operating_point"][key] for key in ("rule", "threshold", "validation")}
    assert {key: flipped["operating_point"][key] for key in chosen} == chosen
    stored = torch.load(run_dir / "best_model.pth", weights_only=True)["operating_point"]
    assert stored["threshold"] == plain["operating_point"]["threshold"]
    assert stored["rule"] == "sensitivity:0.9"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["operating_point"] == {key: stored[key] for key in ("rule", "threshold",
                                                                   "chosen_on")}


def test_the_threshold_is_the_rule_applied_to_the_validation_patients_of_the_best_model(
        plain_run, small_cohort_dir):
    """Recomputed from outside: the best checkpoint's probabilities of the split's validation
    patients, averaged per patient, give the stored threshold (training or test patients
    would give another)."""
    run_dir, plain = plain_run
    model, _ = load_checkpoint(run_dir / "best_model.pth")
    cohort = load_cohort(small_cohort_dir)
    split = json.loads((run_dir / "split.json").read_text())
    labels = cohort.labels("binary")
    x = StandardisedBeats(cohort.beats)
    thresholds = {}
    for part in ("val", "train", "test"):
        rows = np.flatnonzero(np.isin(cohort.patient_ids.astype(str),
                                      [str(p) for p in split[part]]))
        prob = torch.softmax(predict_logits(model, x.rows(rows), 64, torch.device("cpu")), 1)
        _, y, patient_prob = patient_level_arrays(labels[rows], prob.numpy(),
                                                  cohort.patient_ids[rows])
        thresholds[part] = chosen_threshold(y, patient_prob[:, 1], "sensitivity:0.9")
    assert thresholds["val"] == pytest.approx(plain["operating_point"]["threshold"], abs=1e-6)
    assert thresholds["train"] != pytest.approx(thresholds["val"], abs=1e-6)
    assert thresholds["test"] != pytest.approx(thresholds["val"], abs=1e-6)


def test_a_fixed_threshold_says_it_was_not_chosen_on_data(small_cohort_dir, tmp_path):
    y, p = scores(0)
    point = validation_operating_point(y, np.c_[1 - p, p], np.arange(len(y)), "0.3")
    assert point["threshold"] == 0.3 and point["chosen_on"] == \
        "nothing: THRESHOLD=0.3 fixed it before any data was seen"
    run_dir = tmp_path / "fixed"
    engine.run_training(tiny_config(small_cohort_dir, run_dir, **dict(SHORT, THRESHOLD="0.3")),
                        log=quiet)
    page = render_report(report_context(str(run_dir)))
    assert "(0.3, fixed)" in page and "chosen on validation" not in page
    assert "a probability given by\nTHRESHOLD, not chosen on data" in page
    lines = []
    run_evaluation(evaluation_config(run_dir, small_cohort_dir, BOOTSTRAP=20, REPORT=False,
                                     OUTPUT_DIR=str(tmp_path / "evaluated")), log=lines.append)
    assert any("(0.3), fixed by the training run's THRESHOLD" in line for line in lines)
    chosen = validation_operating_point(y, np.c_[1 - p, p], np.arange(len(y)), "youden")
    assert chosen["chosen_on"].startswith("validation patients")


def test_evaluate_applies_the_training_runs_threshold(plain_run, small_cohort_dir, tmp_path):
    run_dir, trained = plain_run
    lines = []
    report = run_evaluation(evaluation_config(run_dir, small_cohort_dir, BOOTSTRAP=20,
                                              REPORT=False, OUTPUT_DIR=str(tmp_path / "new")),
                            log=lines.append)
    assert report["operating_point"]["threshold"] == trained["operating_point"]["threshold"]
    assert report["operating_point"]["rule"] == "sensitivity:0.9"
    assert any("chosen on the training run's validation patients" in line for line in lines)

    # a checkpoint from before THRESHOLD: the original's argmax, said so
    old_run = tmp_path / "old_run"
    shutil.copytree(run_dir, old_run)
    checkpoint = old_run / "best_model.pth"
    stored = torch.load(checkpoint, weights_only=True)
    del stored["operating_point"]
    torch.save(stored, checkpoint)
    lines = []
    report = run_evaluation(evaluation_config(old_run, small_cohort_dir, BOOTSTRAP=20,
                                              REPORT=False, OUTPUT_DIR=str(tmp_path / "old")),
                            log=lines.append)
    assert report["operating_point"]["threshold"] == 0.5
    assert any("predates THRESHOLD" in line for line in lines)
    saved = json.loads((tmp_path / "old" / "test_eval_results.json").read_text())
    assert saved["operating_point"]["rule"] == "argmax"


def test_four_classes_keep_the_argmax_and_say_so(small_cohort_dir, tmp_path):
    report = engine.run_training(tiny_config(
        small_cohort_dir, tmp_path / "four", TASK="multiclass", NUM_CLASSES=4, THRESHOLD="argmax",
        EPOCHS=1, BOOTSTRAP=10), log=quiet)
    assert report["operating_point"]["rule"] == "argmax"
    assert report["operating_point"]["threshold"] is None
    assert "2-class" in report["operating_point"]["note"]


def test_a_validation_split_of_one_class_is_refused_before_training(tmp_path):
    with pytest.raises(UserError, match="validation split has patients of class"):
        engine.check_threshold_computable(np.zeros(6, int), np.arange(6), num_classes=2,
                                          threshold="youden")
    engine.check_threshold_computable(np.zeros(6, int), np.arange(6), num_classes=2,
                                      threshold="0.4")
