"""External evaluation (--evaluate=TRAIN_DIR --data_dir=OTHER): a finished run's model scored on
every beat of another cohort, refused when leads, sampling rate or window differ."""
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from markupsafe import escape
from sklearn.metrics import brier_score_loss, roc_auc_score

from lvr.train import run as engine
from lvr.evaluate.external import run_evaluation
from lvr.train.checkpoints import load_checkpoint
from lvr.data.beats import standardize_beats
from lvr.data.cohort import load_cohort
from lvr.config import UserError
from lvr.report.html import render_report, report_context
from helpers import evaluation_config, quiet, script_result, tiny_config, write_small_cohort


@pytest.fixture(scope="module")
def trained(small_cohort_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("evaluation") / "run"
    engine.run_training(tiny_config(small_cohort_dir, output_dir, EPOCHS=2), log=quiet)
    return output_dir


@pytest.fixture(scope="module")
def other_cohort(tmp_path_factory):
    """Another seed of the small cohort, recorded 20% louder."""
    from lvr.data import demo
    from helpers import small_cohort_options
    folder = tmp_path_factory.mktemp("other") / "cohort"
    demo.write_demo_cohort(str(folder), small_cohort_options(seed=11), amplitude_scale=1.2)
    return folder


def evaluate_on(trained, data_dir, log=quiet, **overrides):
    """The evaluation report and the folder it was written to."""
    report = run_evaluation(evaluation_config(trained, data_dir, **overrides), log=log)
    return report, trained / f"external_{os.path.basename(str(data_dir))}"


def test_evaluation_scores_every_beat_and_writes_a_test_report(trained, other_cohort):
    report, out = evaluate_on(trained, other_cohort)
    cohort = load_cohort(str(other_cohort))
    assert report["n_beats"] == len(cohort.group_index)
    assert report["n_patients"] == len(np.unique(cohort.patient_ids))
    for name in ("test_eval_results.json", "predictions.csv", "test_roc_curve.png",
                 "test_confusion_matrix.png", "test_calibration.png", "run.json", "split.json"):
        assert (out / name).exists(), name
    assert not (out / "best_model.pth").exists()          # nothing was trained
    saved = json.loads((out / "test_eval_results.json").read_text())
    assert saved["evaluation"]["external"] is True
    assert saved["evaluation"]["evaluated_run"] == str(trained)
    assert {"roc_auc_ci95", "patient_level", "calibration"} <= set(saved)

    # the probabilities are the model's on the standardised beats, in cohort order
    model, _ = load_checkpoint(str(trained / "best_model.pth"))
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(standardize_beats(cohort.beats))), 1)
    table = pd.read_csv(out / "predictions.csv", dtype={"patient": str})
    np.testing.assert_allclose(table[["prob_non-LVR", "prob_LVR"]], expected.numpy(),
                               atol=2e-6)

    # predictions.csv gives the reported metrics when they are recomputed from it
    y, p = table["true_label"], table["prob_LVR"]
    assert roc_auc_score(y, p) == pytest.approx(saved["roc_auc"], abs=1e-5)
    assert brier_score_loss(y, p) == pytest.approx(
        saved["calibration"]["LVR"]["brier"], abs=1e-5)
    patients = table.groupby("patient").agg(y=("true_label", "first"), p=("prob_LVR", "mean"))
    assert roc_auc_score(patients["y"], patients["p"]) == pytest.approx(
        saved["patient_level"]["roc_auc"], abs=1e-5)


def test_a_global_gain_does_not_change_the_probabilities(trained, other_cohort, tmp_path):
    """Beats are standardised per lead, so a device whose gain is 20% off gives the same scores
    (what the amplitude-shift experiment in docs/evaluation.md shows)."""
    from lvr.data import demo
    from helpers import small_cohort_options
    plain = tmp_path / "plain"
    demo.write_demo_cohort(str(plain), small_cohort_options(seed=11))
    a = pd.read_csv(evaluate_on(trained, plain)[1] / "predictions.csv")
    b = pd.read_csv(evaluate_on(trained, other_cohort)[1] / "predictions.csv")
    np.testing.assert_allclose(a["prob_LVR"], b["prob_LVR"], atol=2e-5)


def test_results_go_inside_the_run_and_replace_nothing(trained, other_cohort):
    before = (trained / "test_eval_results.json").read_bytes()
    _, out = evaluate_on(trained, other_cohort)
    _, again = evaluate_on(trained, other_cohort)             # an earlier evaluation is kept
    assert (trained / "test_eval_results.json").read_bytes() == before
    assert again == out and (out / "test_eval_results.json").exists()
    kept = [p for p in trained.iterdir() if p.name.startswith(f"{out.name}.")]
    assert kept and (kept[0] / "test_eval_results.json").exists()
    assert not (trained.parent / "next_training_run").exists()    # OUTPUT_DIR is not touched


def test_the_run_own_cohort_is_scored_with_a_warning(trained, small_cohort_dir):
    lines = []
    report, _ = evaluate_on(trained, small_cohort_dir, log=lines.append)
    assert any("not an external validation" in line for line in lines)
    assert report["evaluation"]["external"] is False


@pytest.mark.parametrize("change, words", [
    ({"fs": 250}, "sampling rate is 250 Hz but the model was trained at 500 Hz"),
    ({"window_s": 0.8}, "beats are 400 samples long but the model's window is 300 samples"),
    ({"r_peak_s": 0.25, "window_s": 0.65}, "R peak sits at sample 125 but at sample 100"),
])
def test_evaluation_refuses_another_rate_or_window(trained, tmp_path, change, words):
    other = write_small_cohort(tmp_path / "other", seed=3, **change)
    with pytest.raises(UserError, match="cannot be scored") as caught:
        evaluate_on(trained, other)
    assert words in str(caught.value)
    assert not (trained / "external_other").exists()


def test_evaluation_refuses_other_leads(trained, tmp_path):
    other = write_small_cohort(tmp_path / "other", seed=3)
    spec_path = os.path.join(other, "cohort.json")
    spec = json.loads(open(spec_path).read())
    spec["leads"] = spec["leads"][1:] + spec["leads"][:1]   # same leads, another order
    open(spec_path, "w").write(json.dumps(spec))
    with pytest.raises(UserError, match="same leads, another order: reorder"):
        evaluate_on(trained, other)
    spec["leads"][0] = "X1"   # the cohort itself is refused, before any model is read
    open(spec_path, "w").write(json.dumps(spec))
    with pytest.raises(UserError, match="'leads' names 'X1', which is not a standard lead"):
        evaluate_on(trained, other)


def test_evaluation_needs_a_finished_single_model_run(trained, other_cohort, tmp_path):
    with pytest.raises(UserError, match="folder not found"):
        evaluate_on(tmp_path / "nothing", other_cohort)
    (tmp_path / "cv" / "fold_1").mkdir(parents=True)
    with pytest.raises(UserError, match="cross-validation run .* --train_dir=.*fold_1"):
        evaluate_on(tmp_path / "cv", other_cohort)


def test_a_cohort_of_other_classes_is_refused_naming_the_model(trained, other_cohort, tmp_path):
    """The model's task decides the classes: a 2-class model of a 4-class task is refused."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    stored = torch.load(copy / "best_model.pth", weights_only=True)
    stored["task"] = "multiclass"
    torch.save(stored, copy / "best_model.pth")
    with pytest.raises(UserError, match="multiclass task has 4 classes .* is a 2-class model; "
                                        "score it on a cohort with its classes"):
        evaluate_on(copy, other_cohort)


def test_the_training_scripts_point_to_evaluate_py():
    done = script_result("train_MCL_ResNet_1D_class2.py", "--evaluate=somewhere", "--cv_folds=5")
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "error: --evaluate: scoring a finished run on another cohort is its own command now: "
        "python evaluate.py --train_dir=RUN --data_dir=OTHER (the training scripts only train)"]


def not_synthetic(folder):
    """The cohort as a user's: its patient IDs name people (the demo's are counters)."""
    path = os.path.join(folder, "cohort.json")
    spec = json.loads(open(path).read())
    spec.pop("source")
    open(path, "w").write(json.dumps(spec))
    return folder


def test_a_cohort_sharing_patients_with_the_training_split_is_refused(trained, tmp_path):
    other = not_synthetic(write_small_cohort(tmp_path / "other", seed=3))   # IDs 1..40 again
    with pytest.raises(UserError) as caught:
        evaluate_on(trained, other)
    message = str(caught.value)
    assert "40 patient IDs" in message and "--allow_patient_overlap=True" in message
    assert not (trained / "external_other").exists()
    lines = []
    report, out = evaluate_on(trained, other, log=lines.append, ALLOW_PATIENT_OVERLAP=True)
    block = report["evaluation"]
    assert block["patient_overlap"] == 40 and block["patient_overlap_allowed"] is True
    assert any("--allow_patient_overlap" in line and "40" in line for line in lines)
    context = report_context(str(out))              # and report.html says so, first screen on
    assert "40 evaluated patients are in the training run's split (--allow_patient_overlap=True)" \
        ": not an independent external validation" in context["warnings"]
    assert "<strong>40 of its patients are in the training run's split</strong>" in \
        render_report(context)


def test_undeclared_sampling_rate_and_r_peak_are_warned_and_reported(trained, tmp_path):
    other = write_small_cohort(tmp_path / "bare", seed=3)
    os.remove(os.path.join(other, "cohort.json"))            # the seed's groups, 500 Hz assumed
    lines = []
    report, out = evaluate_on(trained, other, log=lines.append, ALLOW_PATIENT_OVERLAP=True)
    assumptions = report["evaluation"]["assumptions"]
    assert any("500 Hz" in text and "cohort.json" in text for text in assumptions)
    assert any("r_peak_sample" in text and "not checked" in text for text in assumptions)
    assert all(any(text in line for line in lines) for text in assumptions)
    page = render_report(report_context(str(out)))
    assert "Assumed, not declared by the cohort:" in page
    assert all(str(escape(text)) in page for text in assumptions)


def test_a_cohort_json_without_a_sampling_rate_is_warned(trained, tmp_path):
    other = write_small_cohort(tmp_path / "norate", seed=3)
    path = os.path.join(other, "cohort.json")
    spec = json.loads(open(path).read())
    assert spec.pop("sampling_rate") == 500
    open(path, "w").write(json.dumps(spec))
    lines = []
    report, _ = evaluate_on(trained, other, log=lines.append)
    expected = f"{path} declares no 'sampling_rate': 500 Hz is assumed"
    assert expected in report["evaluation"]["assumptions"]
    assert f"warning: {expected}" in lines


def test_an_external_cohort_reports_no_overlap_and_no_assumptions(trained, other_cohort):
    report, _ = evaluate_on(trained, other_cohort)
    block = report["evaluation"]
    assert block["patient_overlap"] is None          # synthetic: counters, not compared
    assert block["assumptions"] and "synthetic" in block["assumptions"][0]
