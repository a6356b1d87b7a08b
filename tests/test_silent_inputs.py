"""What a new user still trips over: a full disk while a checkpoint is written, an interrupted
run scored, a foreign state dict, an output folder of the user's own files, a finished run
resumed, patient IDs that differ by spaces, beat files cohort.json leaves out, a split that
leaves one training patient, the training progress bar and a resumed run's history."""
import errno
import io
import json
import os
import re
import shutil

import matplotlib.figure
import numpy as np
import pytest
import torch

import lvr.run_folder as run_folder
import lvr.train.checkpoints as checkpoints
import lvr.train.loop as training
import lvr.train.run as engine
from helpers import evaluation_config, quiet, script_result, tiny_config, write_small_cohort
from lvr.data.cohort import load_cohort
from lvr.data.cohort_json import CohortError
from lvr.data.split import patient_split_indices, too_few_training_patients
from lvr.errors import UserError
from lvr.evaluate.external import run_evaluation
from lvr.train.checkpoints import CheckpointError, load_checkpoint
from model import build_model

QUICK = ("--experiment=baseline", "--batch_size=16", "--bootstrap=10", "--device=cpu",
         "--report=False")


def train_script(data_dir, output_dir, *options, script="train_MCL_ResNet_1D_class2.py"):
    return script_result(script, f"--data_dir={data_dir}", f"--output_dir={output_dir}",
                         *QUICK, *options)


def one_error_line(result):
    """The stderr of a refused script: exit 2, one `error:` line, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def interrupt_run(data_dir, output_dir):
    """A 3-epoch run in `output_dir` stopped (Ctrl-C) during epoch 2: best_model.pth and
    split.json, no test results."""
    real_epoch, epochs = training.train_one_epoch, []

    def interrupted(*args, **kwargs):
        epochs.append(1)
        if len(epochs) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    training.train_one_epoch = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            engine.run_training(tiny_config(data_dir, output_dir, EPOCHS=3, BOOTSTRAP=10,
                                            REPORT=False), log=quiet)
    finally:
        training.train_one_epoch = real_epoch
    return output_dir


@pytest.fixture(scope="module")
def interrupted_run(small_cohort_dir, tmp_path_factory):
    """interrupt_run's folder; do not change it."""
    return interrupt_run(small_cohort_dir, tmp_path_factory.mktemp("interrupted") / "run")


@pytest.fixture(scope="module")
def finished_run(small_cohort_dir, tmp_path_factory):
    """A finished 1-epoch run; do not change it."""
    output_dir = tmp_path_factory.mktemp("finished") / "run"
    engine.run_training(tiny_config(small_cohort_dir, output_dir, EPOCHS=1, BOOTSTRAP=10,
                                    REPORT=False), log=quiet)
    return output_dir


# ---------------------------------------------------------------- 1. a full disk

def failing_torch_save(real_save):
    """torch.save that fails as torch does on a full disk when epoch 2's last checkpoint is
    written, after writing part of the file."""
    def save(payload, handle, *args, **kwargs):
        if "last_checkpoint" in getattr(handle, "name", "") and payload.get("epoch") == 2:
            handle.write(b"PK\x03\x04 part of a zip")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos "
                               "4224 vs 4114")
        return real_save(payload, handle, *args, **kwargs)
    return save


def failing_npy_save(real_save):
    def save(path, array, *args, **kwargs):
        if "val_auc_list" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(path, array, *args, **kwargs)
    return save


def failing_savefig(real_savefig):
    def savefig(figure, path, *args, **kwargs):
        if "ACC_Loss_Curve" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_savefig(figure, path, *args, **kwargs)
    return savefig


@pytest.mark.parametrize("written", ["checkpoint", "array", "figure"])
def test_a_full_disk_is_one_line_whatever_is_written(written, small_cohort_dir, tmp_path,
                                                     monkeypatch):
    if written == "checkpoint":
        monkeypatch.setattr(checkpoints.torch, "save", failing_torch_save(torch.save))
    elif written == "array":
        monkeypatch.setattr(run_folder.np, "save", failing_npy_save(np.save))
    else:
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                            failing_savefig(matplotlib.figure.Figure.savefig))
    output_dir = tmp_path / "run"
    line = one_error_line(train_script(small_cohort_dir, output_dir, "--epochs=2"))
    assert f"no space left on the device while writing to {output_dir}" in line
    assert "--resume=True" in line and "unexpected pos" not in line
    last = torch.load(output_dir / "last_checkpoint.pth", weights_only=True)
    assert last["epoch"] == (1 if written == "checkpoint" else 2)
    assert not [name for name in os.listdir(output_dir) if run_folder.TEMPORARY_MARK in name]


def test_only_a_failed_write_of_torch_becomes_a_full_disk(tmp_path, monkeypatch):
    model = build_model(2, "baseline")

    def refuse(message):
        def save(*_args, **_kwargs):
            raise RuntimeError(message)
        return save

    monkeypatch.setattr(checkpoints.torch, "save",
                        refuse("PytorchStreamWriter failed writing file data/3: file write "
                               "failed"))
    with pytest.raises(OSError) as error:
        checkpoints.save_checkpoint(tmp_path / "m.pth", model)
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(tmp_path / "m.pth")
    monkeypatch.setattr(checkpoints.torch, "save", refuse("CUDA error: an illegal address"))
    with pytest.raises(RuntimeError, match="illegal address"):
        checkpoints.save_checkpoint(tmp_path / "m.pth", model)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- 2. an interrupted run scored

def test_scoring_an_interrupted_run_says_it_never_finished(interrupted_run, small_cohort_dir,
                                                           tmp_path):
    lines = []
    report = run_evaluation(evaluation_config(interrupted_run, small_cohort_dir, BOOTSTRAP=10,
                                              REPORT=False, OUTPUT_DIR=str(tmp_path / "ev")),
                            log=lines.append)
    warning = [line for line in lines if "never finished" in line and line.startswith("warning:")]
    assert len(warning) == 1
    assert "(no test_eval_results.json)" in warning[0]
    assert "best_model.pth" in warning[0] and "(epoch 1)" in warning[0]
    note = [line for line in lines if "no threshold was chosen" in line]
    assert len(note) == 1 and "because the run never finished" in note[0]
    assert not any("predates" in line for line in lines)
    assert report["operating_point"]["chosen_on"].startswith("none: the run never finished")


# ---------------------------------------------------------------- 3. a state dict alone

def test_a_foreign_state_dict_cannot_be_rebuilt_and_says_so(small_cohort_dir, tmp_path):
    foreign = tmp_path / "resnet18.pth"
    network = torch.nn.Sequential(torch.nn.Conv1d(12, 4, 3), torch.nn.Flatten(),
                                  torch.nn.LazyLinear(2))
    network(torch.zeros(1, 12, 300))
    torch.save(network.state_dict(), foreign)
    lines = [one_error_line(train_script(small_cohort_dir, tmp_path / "run",
                                         f"--init_from={foreign}", *extra))
             for extra in ((), ("--experiment=ca_ms",))]
    for line in lines:
        assert f"checkpoint {foreign} holds only a state dict" in line
        assert "cannot rebuild a network from weights alone" in line
        assert "experiment=" not in line and "old-style" not in line
    assert not (tmp_path / "run").exists()


def test_an_old_style_state_dict_of_this_project_is_told_how_to_convert(tmp_path,
                                                                        monkeypatch):
    model = build_model(4, "ca_ms").eval()
    torch.save(model.state_dict(), tmp_path / "old.pt")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "old.pt")
    message = str(error.value)
    assert "old-style file holding only a state dict" in message
    assert "fit the ca_ms network" in message
    command = re.search(r'python -c "(.+?)"', message).group(1)
    monkeypatch.chdir(tmp_path)
    exec(command, {})   # the conversion the message gives works as written
    converted, _ = load_checkpoint(tmp_path / "converted.pth")
    assert converted.config["experiment"] == "ca_ms" and converted.config["num_classes"] == 4


# ---------------------------------------------------------------- 4. a folder of the user's

def test_an_output_folder_of_the_users_files_is_refused_not_moved(small_cohort_dir, tmp_path):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "notes.txt").write_text("chapter 3")
    line = one_error_line(train_script(small_cohort_dir, mine, "--epochs=1"))
    assert f"--output_dir={mine} is not empty and holds no run of this project (notes.txt)" \
        in line
    assert os.listdir(tmp_path) == ["thesis"] and os.listdir(mine) == ["notes.txt"]


def test_a_folder_holding_a_run_is_kept_aside(tmp_path):
    for name, marker in (("run", "split.json"), ("cv", "fold_1")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / marker).mkdir() if marker.startswith("fold") else (folder / marker).write_text(
            "{}")
        lines = []
        run_folder.prepare_output_dir(str(folder), log=lines.append)
        assert os.listdir(folder) == [] and "was kept as" in lines[0]


# ---------------------------------------------------------------- 5. a finished run resumed

def test_resuming_a_finished_run_is_refused_and_changes_nothing(finished_run, small_cohort_dir):
    before = {name: (finished_run / name).read_bytes()
              for name in ("test_eval_results.json", "run.json", "best_model.pth")}
    line = one_error_line(train_script(small_cohort_dir, finished_run, "--epochs=1",
                                       "--resume=True"))
    assert f"the run in {finished_run} finished (test_eval_results.json) after 1 epochs; " \
           f"there is nothing to resume" in line
    assert "pass a larger --epochs with --resume=True" in line and "leave --resume out" in line
    assert all((finished_run / name).read_bytes() == data for name, data in before.items())


def test_resuming_a_finished_cross_validation_is_refused(tmp_path):
    (tmp_path / "cv_summary.json").write_text("{}")
    with pytest.raises(UserError, match=r"cross-validation in .* finished \(cv_summary.json\); "
                                        r"there is nothing to resume"):
        engine.prepare_run_folder(str(tmp_path), resume=True, cross_validation=True, log=quiet)


# ---------------------------------------------------------------- 6-8. the cohort

def test_patient_ids_that_differ_only_by_spaces_are_refused(cohort_copy):
    first = np.load(cohort_copy / "cut_NS_0_patient_ids.npy")
    second = np.load(cohort_copy / "cut_NS_1_patient_ids.npy")
    np.save(cohort_copy / "cut_NS_0_patient_ids.npy", first.astype(str))
    spaced = second.astype(str).astype("<U8")
    spaced[spaced == spaced[0]] = f"{first[0]} "
    np.save(cohort_copy / "cut_NS_1_patient_ids.npy", spaced)
    with pytest.raises(CohortError) as error:
        load_cohort(str(cohort_copy))
    message = str(error.value)
    assert f"patient IDs differ only by surrounding spaces, e.g. '{first[0]}' and " \
           f"'{first[0]} '" in message
    assert f"in {cohort_copy / 'cut_NS_0_patient_ids.npy'} and " \
           f"{cohort_copy / 'cut_NS_1_patient_ids.npy'}" in message
    assert "strip the spaces" in message


def test_beat_files_cohort_json_does_not_list_are_named(cohort_copy):
    shutil.copy(cohort_copy / "cut_NS_1.npy", cohort_copy / "cut_XX_1.npy")
    shutil.copy(cohort_copy / "cut_NS_1_patient_ids.npy", cohort_copy / "cut_XX_1_patient_ids.npy")
    warnings = [text for text in load_cohort(str(cohort_copy)).warnings if "cut_XX_1" in text]
    assert warnings == [f"{cohort_copy} holds cut_XX_1.npy, cut_XX_1_patient_ids.npy, which "
                        f"cohort.json does not list: not read. To use them, add their group to "
                        f"'groups' (and its labels) in cohort.json"]


def test_a_split_leaving_one_training_patient_of_a_class_is_refused():
    labels = np.array([0] * 10 + [1] * 3)
    ids = np.array([f"a{i}" for i in range(10)] + ["b0", "b1", "b2"])
    parts = patient_split_indices(labels, ids, 0.1, 0.2)   # the split itself is the library's
    problem = too_few_training_patients(labels, ids, parts)   # refused by a training run
    assert problem.startswith(
        "the patient-level split leaves fewer than 2 training patients of class 1 (patients of "
        "class 0 / 1: train 7 / 1, validation 2 / 1, test 1 / 1)")
    assert "Add patients of that class" in problem and "smaller TEST_SIZE or VAL_SIZE" in problem
    parts = patient_split_indices(np.append(labels, 1), np.append(ids, "b3"), 0.1, 0.2)
    assert too_few_training_patients(np.append(labels, 1), np.append(ids, "b3"), parts) is None
    assert len(set(ids[parts["train"][parts["train"] < len(ids)]]) & {"b0", "b1", "b2"}) == 2


def test_a_cohort_too_small_to_train_is_refused_before_the_output_folder(tmp_path):
    data_dir = write_small_cohort(tmp_path / "tiny", n_patients=3)
    line = one_error_line(train_script(data_dir, tmp_path / "run", "--epochs=1",
                                       "--threshold=argmax",
                                       script="train_MCL_ResNet_1D_class4.py"))
    assert "leaves fewer than 2 training patients of class 0, 1, 2, 3" in line
    assert "train 1 / 1 / 1 / 1, validation 1 / 1 / 1 / 1, test 1 / 1 / 1 / 1" in line
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 9-10. progress, history

class Terminal(io.StringIO):
    """stderr as a terminal: tqdm draws its bars there (it leaves a pipe or file alone)."""

    def isatty(self):
        return True


def test_training_shows_an_epoch_bar_with_its_eta_and_keeps_the_epoch_lines(
        small_cohort_dir, tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    lines = []
    engine.run_training(tiny_config(small_cohort_dir, tmp_path / "run", EPOCHS=2, BOOTSTRAP=10,
                                    REPORT=False), log=lines.append)
    drawn = terminal.getvalue()
    assert re.search(r"training: +50%.*\| 1/2 \[\d\d:\d\d<\d\d:\d\d", drawn)
    assert re.search(r"epoch 1/2: +\d+%", drawn)                 # the batches within an epoch
    assert [line.split()[1] for line in lines if line.startswith("epoch")] == ["1/2", "2/2"]


def test_a_resumed_run_keeps_the_history_of_its_invocations(small_cohort_dir, tmp_path):
    output_dir = interrupt_run(small_cohort_dir, tmp_path / "run")
    kept = torch.load(output_dir / "last_checkpoint.pth", weights_only=True)["run_history"]
    assert len(kept) == 1 and kept[0]["epochs"] == [1, 1] and kept[0]["command"]
    engine.run_training(tiny_config(small_cohort_dir, output_dir, EPOCHS=3, BOOTSTRAP=10,
                                    REPORT=False, RESUME=True), log=quiet)
    record = json.loads((output_dir / "run.json").read_text())
    history = record["history"]
    assert [part["epochs"] for part in history] == [[1, 1], [2, 3]]
    assert history[0] == kept[0]
    assert all(set(part) == {"command", "started", "ended", "epochs", "wall_time_s"}
               for part in history)
    assert history[0]["ended"] <= history[1]["started"] <= history[1]["ended"]
    assert record["wall_time_s"] == pytest.approx(sum(p["wall_time_s"] for p in history),
                                                  abs=0.02)
