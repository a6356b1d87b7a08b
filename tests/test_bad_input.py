"""The bad-input matrix (docs/faults.md): every case ends with a non-zero exit and an `error:`
message that names the file or option, without a traceback, and leaves every file the user had
as it was. Scripts run in this process (helpers.script_result), as `python <script>` would."""
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import lvr.train.loop as training
from helpers import HANG_LIMIT_S, PTBXL_SLICE, ROOT, quiet, record_path, script_result, tiny_config
from lvr.train import run as engine
from lvr.data.cohort import load_cohort

TRAIN = "train_MCL_ResNet_1D_class2.py"
SALIENCY = "Saliency_ana2_sys.py"
QUICK = ["--epochs=1", "--bootstrap=20", "--experiment=baseline", "--device=cpu"]
UNWRITABLE = "/proc/lvr-bad-input-test/out"   # /proc takes no new folders, even from root


@pytest.fixture(scope="module")
def one_epoch_run(small_cohort_dir, tmp_path_factory):
    """A finished 1-epoch run of the small cohort (read only)."""
    output_dir = tmp_path_factory.mktemp("bad_input") / "run"
    engine.run_training(tiny_config(small_cohort_dir, output_dir, EPOCHS=1), log=quiet)
    return output_dir


def snapshot(*folders):
    """sha256 of every file below `folders`: what the user had."""
    found = {}
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(root, name)
                with open(path, "rb") as handle:
                    found[path] = hashlib.sha256(handle.read()).hexdigest()
    return found


def edited_cohort(cohort_copy, **changes):
    """The small cohort copy with cohort.json keys changed (None removes a key)."""
    path = cohort_copy / "cohort.json"
    spec = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    path.write_text(json.dumps(spec))
    return cohort_copy


def assert_refused(run, *words):
    """Exit 2, an `error:` message naming `words`, no traceback (a progress bar may come
    before it on stderr)."""
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert "Traceback" not in run.stderr, run.stderr
    assert [line for line in run.stderr.splitlines() if line.startswith("error: ")], run.stderr
    for word in words:
        assert word in run.stderr, (word, run.stderr)


# ------------------------------------------------------------------ cohort.json, one field each

COHORT_JSON_CASES = {
    "label as text": ({"binary_labels": {"NS_0": "0", "NS_1": 1, "ST_0": 0, "ST_1": 1}},
                      ["'binary_labels'['NS_0'] is \"0\" (text)"]),
    "label as true": ({"binary_labels": {"NS_0": 0, "NS_1": True, "ST_0": 0, "ST_1": 1}},
                      ["'binary_labels'['NS_1'] is true (true/false)"]),
    "label missing a group": ({"binary_labels": {"NS_0": 0, "NS_1": 1, "ST_0": 0}},
                              ["'binary_labels' lacks group 'ST_1'"]),
    "binary with one class": ({"binary_labels": {"NS_0": 0, "NS_1": 0, "ST_0": 0, "ST_1": 0}},
                              ["binary task needs both 0 and 1"]),
    "classes with a gap": ({"multiclass_labels": {"NS_0": 0, "NS_1": 1, "ST_0": 3, "ST_1": 3}},
                           ["classes [0, 1, 3]", "without gaps"]),
    "11 lead names": ({"leads": ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4",
                                 "V5"]}, ["'leads' lists 11 names", "missing: V6"]),
    "a lead twice": ({"leads": ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4",
                                "V5", "V5"]}, ["'leads' names V5 more than once"]),
    "an unknown lead": ({"leads": ["I", "II", "III", "AVR", "aVL", "aVF", "V1", "V2", "V3",
                                   "V4", "V5", "V6"]}, ["'AVR'", "write 'aVR'"]),
    "negative sampling rate": ({"sampling_rate": -500}, ["'sampling_rate' is -500"]),
    "sampling rate as text": ({"sampling_rate": "500"}, ["'sampling_rate' is \"500\" (text)"]),
    "R peak outside the window": ({"r_peak_sample": 400},
                                  ["'r_peak_sample' is 400 but the beats have 300 samples"]),
    "R peak too early": ({"r_peak_sample": 30}, ["'r_peak_sample' is 30", "200 ms"]),
    "window too short after R": ({"r_peak_sample": 150}, ["ends 300 ms after the R peak",
                                                          "400 ms"]),
    "subgroup of another group": ({"analysis_subgroups": {"STEMI": "ST_9"}},
                                  ["'analysis_subgroups'['STEMI'] is \"ST_9\""]),
    "subgroup of class 0": ({"analysis_subgroups": {"STEMI": "ST_0"}}, ["of binary class 0"]),
    "class names of the wrong length": ({"binary_class_names": ["a", "b", "c"]},
                                        ["'binary_class_names' has 3 names for the 2 classes"]),
    "truth lead not a lead": ({"ground_truth": {"lvr_leads": ["V9"], "lvr_wave": "T"}},
                              ["'ground_truth'['lvr_leads'] names 'V9'"]),
    "truth wave unknown": ({"ground_truth": {"lvr_leads": ["V2"], "lvr_wave": "U"}},
                           ["'ground_truth'['lvr_wave'] is \"U\""]),
    "group name with a slash": ({"group_names": {"NS_0": "a/b"}}, ["'group_names'['NS_0']"]),
}


@pytest.mark.parametrize("case", list(COHORT_JSON_CASES))
def test_a_bad_cohort_json_field_is_refused_by_training_and_saliency_alike(
        case, cohort_copy, one_epoch_run, tmp_path):
    changes, words = COHORT_JSON_CASES[case]
    data = edited_cohort(cohort_copy, **changes)
    before = snapshot(data, one_epoch_run)
    trained = script_result(TRAIN, f"--data_dir={data}", f"--output_dir={tmp_path / 'out'}",
                            *QUICK)
    assert_refused(trained, "cohort.json", *words)
    explained = script_result(SALIENCY, f"--data_dir={data}", f"--train_dir={one_epoch_run}",
                              f"--output_dir={tmp_path / 'saliency'}")
    assert_refused(explained, "cohort.json", *words)
    assert snapshot(data, one_epoch_run) == before
    assert not (tmp_path / "out").exists() and not (tmp_path / "saliency").exists()


def test_every_problem_of_a_cohort_json_is_listed_at_once(cohort_copy):
    data = edited_cohort(cohort_copy, sampling_rate=0, r_peak_sample=-1, colour="red")
    with pytest.raises(Exception, match="has 3 problems") as caught:
        load_cohort(str(data))
    message = str(caught.value)
    assert "unknown key 'colour'" in message and "'sampling_rate' is 0" in message
    assert "'r_peak_sample' is -1" in message


# ------------------------------------------------------------------ options

OPTION_CASES = {
    "test_size 0": ([TRAIN, "--test_size=0"], ["--test_size=0.0", "TEST_SIZE must be above 0"]),
    "evaluate on a training script": ([TRAIN, "--evaluate=RUN", "--epochs=30"],
                                      ["--evaluate: scoring a finished run on another cohort is "
                                       "its own command now: python evaluate.py"]),
    "epochs with evaluate.py": (["evaluate.py", "--train_dir=RUN", "--epochs=30"],
                                ["unknown option --epochs. Valid names: --train_dir"]),
    "test_size with folds": ([TRAIN, "--cv_folds=3", "--test_size=0.2"],
                             ["--test_size=0.2 has no effect unless --cv_folds=0"]),
    "ig steps with smoothgrad": ([SALIENCY, "--ig_steps=64"],
                                 ["--ig_steps=64 has no effect unless "
                                  "--method=integrated_gradients"]),
    "noise with occlusion": ([SALIENCY, "--method=occlusion", "--noise_level=0.5"],
                             ["--noise_level=0.5 has no effect unless --method=smoothgrad"]),
    "blend without wave effects": ([SALIENCY, "--wave_effects=False", "--wave_blend_ms=5"],
                                   ["--wave_blend_ms=5 has no effect with --wave_effects=False"]),
    "demo window too short": (["demo_cohort.py", "--window_s=0.5", "--r_peak_s=0.2"],
                              ["--r_peak_s=0.2, --window_s=0.5", "400 ms after it"]),
    "prepare window too short": (["prepare_data.py", "--pre=0.1"],
                                 ["--pre=0.1", "200 ms before the R peak"]),
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_an_impossible_or_ignored_option_is_refused_before_any_work(case, one_epoch_run,
                                                                   tmp_path):
    (script, *args), words = OPTION_CASES[case]
    args = [a.replace("RUN", str(one_epoch_run)) for a in args]
    before = snapshot(one_epoch_run)
    run = script_result(script, *args, f"--output_dir={tmp_path / 'out'}")
    assert_refused(run, *words)
    assert snapshot(one_epoch_run) == before and not (tmp_path / "out").exists()


# ------------------------------------------------------------------ output folders

@pytest.mark.parametrize("script, extra", [
    (TRAIN, QUICK), (SALIENCY, ["--train_dir=RUN"]), ("demo_cohort.py", []),
    ("prepare_data.py", [f"--table={PTBXL_SLICE / 'records.csv'}"]),
])
@pytest.mark.parametrize("folder", [UNWRITABLE, "/sys/lvr-bad-input-test"])
def test_an_output_folder_that_cannot_be_written_is_refused_first(script, extra, folder,
                                                                 one_epoch_run, small_cohort_dir):
    extra = [a.replace("RUN", str(one_epoch_run)) for a in extra]
    data = [] if script in ("demo_cohort.py", "prepare_data.py") else [
        f"--data_dir={small_cohort_dir}"]
    run = script_result(script, *data, *extra, f"--output_dir={folder}")
    assert_refused(run, f"--output_dir={folder}", "cannot be written")
    assert not os.path.exists(folder)


def test_a_write_refused_later_is_one_line(small_cohort_dir, tmp_path, monkeypatch):
    """A read-only remount or lost permission during a run: one message, earlier files kept."""
    real_save, calls = training.save_checkpoint, []

    def save(path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 2:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(training, "save_checkpoint", save)
    out = tmp_path / "run"
    run = script_result(TRAIN, f"--data_dir={small_cohort_dir}", f"--output_dir={out}",
                        "--epochs=3", "--bootstrap=20", "--experiment=baseline")
    assert_refused(run, "cannot write", "Read-only file system", str(out))
    assert (out / "last_checkpoint.pth").exists()


def test_evaluate_honours_a_typed_output_dir_and_refuses_the_run_itself(one_epoch_run,
                                                                       small_cohort_dir,
                                                                       tmp_path):
    chosen = tmp_path / "evaluation"
    done = script_result("evaluate.py", f"--train_dir={one_epoch_run}",
                         f"--data_dir={small_cohort_dir}", f"--output_dir={chosen}",
                         "--bootstrap=20", "--device=cpu")
    assert done.returncode == 0, done.stderr
    assert (chosen / "test_eval_results.json").exists()
    assert not any(p.startswith("external_") for p in os.listdir(one_epoch_run))
    before = snapshot(one_epoch_run)
    refused = script_result("evaluate.py", f"--train_dir={one_epoch_run}",
                            f"--data_dir={small_cohort_dir}", f"--output_dir={one_epoch_run}",
                            "--bootstrap=20", "--device=cpu")
    assert_refused(refused, f"--output_dir={one_epoch_run} holds the run being evaluated")
    assert snapshot(one_epoch_run) == before


# ------------------------------------------------------------------ data that loads

def test_groups_without_signal_are_named_in_a_warning(cohort_copy):
    np.save(cohort_copy / "cut_NS_1.npy", np.zeros_like(np.load(cohort_copy / "cut_NS_1.npy")))
    beats = np.load(cohort_copy / "cut_ST_0.npy")
    np.save(cohort_copy / "cut_ST_0.npy", np.round(beats / np.abs(beats).max()))  # 3 levels
    warnings = load_cohort(str(cohort_copy)).warnings
    assert any("cut_NS_1.npy: every beat is all zeros" in w for w in warnings), warnings
    assert any("cut_ST_0.npy: a beat holds 3 distinct values" in w for w in warnings), warnings
    assert not any("cut_NS_0" in w or "cut_ST_1" in w for w in warnings)


def test_a_clean_cohort_gets_no_signal_warning(small_cohort_dir):
    assert load_cohort(small_cohort_dir).warnings == []


def test_a_small_test_set_is_labelled_as_such(small_cohort_dir, tmp_path):
    lines = []
    report = engine.run_training(tiny_config(small_cohort_dir, tmp_path / "run", EPOCHS=1,
                                             TEST_SIZE=0.1), log=lines.append)
    assert report["n_patients"] < 20 and "small test set" in report["small_sample_warning"]
    saved = json.loads((tmp_path / "run" / "test_eval_results.json").read_text())
    assert saved["small_sample_warning"] == report["small_sample_warning"]
    text = "\n".join(lines)
    assert "warning: small test set" in text
    assert text.index("patient level (report this)") < text.index("beat level")


# ------------------------------------------------------------------ other scripts

def test_prepare_data_refuses_a_table_without_rows(tmp_path):
    table = tmp_path / "records.csv"
    table.write_text("record,patient_id,group\n")
    run = script_result("prepare_data.py", f"--table={table}", "--task=binary:A,B",
                        f"--output_dir={tmp_path / 'out'}")
    assert_refused(run, f"--table={table}", "no records")
    assert not (tmp_path / "out").exists()


def test_prepare_data_exits_non_zero_when_a_class_has_no_beats(tmp_path):
    table = tmp_path / "records.csv"
    shutil.copytree(PTBXL_SLICE / "records500", tmp_path / "records500")   # paths relative
    rows = [f"{record_path(i).relative_to(PTBXL_SLICE)},{i},NORM" for i in (1, 108, 289)]
    table.write_text("record,patient_id,group\n" + "\n".join(rows) + "\nmissing,9,MI\n")
    out = tmp_path / "out"
    run = script_result("prepare_data.py", f"--table={table}", "--task=binary:NORM,MI",
                        f"--output_dir={out}", "--workers=1")
    assert_refused(run, "cannot train", "class MI (group MI): 0 patients",
                   "prepare_summary.json")
    summary = json.loads((out / "prepare_summary.json").read_text())
    assert summary["records_rejected"] == 1 and summary["rejections"][0]["record"] == "missing"


def test_compare_runs_refuses_runs_of_different_cohorts_with_the_same_patient_ids(tmp_path):
    table = pd.DataFrame({"group": ["A"] * 6, "patient": [str(i // 2) for i in range(6)],
                          "record": [""] * 6, "beat": range(6), "true_label": [0, 0, 1, 1, 0, 0],
                          "prob_a": [0.9, 0.8, 0.3, 0.2, 0.7, 0.6]})
    table["prob_b"] = 1 - table["prob_a"]
    for name, fingerprint in (("one", "f" * 64), ("two", "e" * 64)):
        (tmp_path / name).mkdir()
        table.to_csv(tmp_path / name / "predictions.csv", index=False)
        (tmp_path / name / "split.json").write_text(json.dumps(
            {"data_dir": f"/cohorts/{name}", "data_fingerprint": fingerprint}))
    run = script_result("compare_runs.py", f"--run_a={tmp_path / 'one'}",
                        f"--run_b={tmp_path / 'two'}")
    assert_refused(run, "scored different cohorts", "/cohorts/one", "/cohorts/two")
    allowed = script_result("compare_runs.py", f"--run_a={tmp_path / 'one'}",
                            f"--run_b={tmp_path / 'two'}", "--allow_other_cohort=True")
    assert allowed.returncode == 0, allowed.stderr
    assert "warning: the runs scored different cohorts" in allowed.stdout
    assert "AUC A" in allowed.stdout


def test_ctrl_c_says_how_to_continue(small_cohort_dir, tmp_path, monkeypatch):
    real_save, calls = training.save_checkpoint, []

    def save(path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 2:   # epoch 1 is saved, then Ctrl-C
            raise KeyboardInterrupt
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(training, "save_checkpoint", save)
    out = tmp_path / "run"
    run = script_result(TRAIN, f"--data_dir={small_cohort_dir}", f"--output_dir={out}",
                        "--epochs=3", "--bootstrap=20", "--experiment=baseline")
    assert run.returncode == 130 and "Traceback" not in run.stderr
    assert "interrupted: the last completed epoch is kept in" in run.stderr
    assert "--resume=True" in run.stderr and (out / "last_checkpoint.pth").exists()


def test_help_piped_into_a_command_that_stops_reading_is_no_error():
    """`python script --help | head -1`: the closed pipe ends the script quietly."""
    done = subprocess.run(f"{sys.executable} {TRAIN} --help | head -1", shell=True, cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG_LIMIT_S)
    assert done.stdout.startswith("usage: python") and done.stderr == "", done.stderr
