"""Faults and bad input: kills, locks, corrupt checkpoints, a full disk, fuzzed files, DDP."""
import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import wfdb
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lvr.data.cohort as ds
import lvr.config as config
import lvr.train.run as engine
import lvr.prepare.record_beats as record_beats
import lvr.run_folder as run_folder
import lvr.train.loop as training
from helpers import HANG_LIMIT_S, OPTIONS, ROOT, quiet, script_result, tiny_config
from lvr.data import demo as demo_cohort
from lvr.data.beats import standardize_beats
from lvr.prepare.formats import RecordRejected

GROUPS = ("NS_0", "NS_1", "ST_0", "ST_1")
CLI_OPTIONS = ["--experiment=baseline", "--epochs=3", "--batch_size=16", "--bootstrap=50",
               "--device=cpu", "--lr=0.001"]


def script_run(data_dir, output_dir, *extra, driver=None, timeout=HANG_LIMIT_S):
    """Run the 2-class script (optionally under a small driver that patches it first)."""
    args = [f"--data_dir={data_dir}", f"--output_dir={output_dir}", *CLI_OPTIONS, *extra]
    if driver is None:
        command = [sys.executable, "train_MCL_ResNet_1D_class2.py", *args]
    else:
        code = textwrap.dedent(driver) + textwrap.dedent("""
            import runpy, sys
            sys.argv = ["train_MCL_ResNet_1D_class2.py"] + sys.argv[1:]
            runpy.run_path("train_MCL_ResNet_1D_class2.py", run_name="__main__")
            """)
        command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def uninterrupted(small_cohort_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("kill") / "whole"
    run = script_run(small_cohort_dir, output_dir)
    assert run.returncode == 0, run.stderr
    return json.loads((output_dir / "test_eval_results.json").read_text())


KILL_MID_EPOCH = """
    import os, signal, torch.nn as nn
    real_clip, calls = nn.utils.clip_grad_norm_, [0]
    def clip(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 7:  # epoch 2 (an epoch here is 4 batches)
            os.kill(os.getpid(), signal.SIGKILL)
        return real_clip(*args, **kwargs)
    nn.utils.clip_grad_norm_ = clip
"""

KILL_DURING_CHECKPOINT_WRITE = """
    import os, signal, torch
    real_save, saves = torch.save, [0]
    def save(obj, f, *args, **kwargs):
        saves[0] += 1
        if isinstance(obj, dict) and "run_config" in obj and obj["epoch"] == 2:
            handle = f if hasattr(f, "write") else open(f, "wb")
            handle.write(b"PK\\x03\\x04" + b"\\0" * 1000)  # half a file, then the process dies
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)
    torch.save = save
"""


@pytest.mark.slow
@pytest.mark.parametrize("driver", [KILL_MID_EPOCH, KILL_DURING_CHECKPOINT_WRITE],
                         ids=["mid-epoch", "during-checkpoint-write"])
def test_sigkilled_run_resumes_to_the_uninterrupted_result(driver, uninterrupted, small_cohort_dir,
                                                           tmp_path):
    output_dir = tmp_path / "killed"
    killed = script_run(small_cohort_dir, output_dir, driver=driver)
    assert killed.returncode == -signal.SIGKILL
    assert not (output_dir / "test_eval_results.json").exists()
    state = torch.load(output_dir / "last_checkpoint.pth", weights_only=True)
    assert state["epoch"] == 1
    resumed = script_run(small_cohort_dir, output_dir, "--resume=True")
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming" in resumed.stdout and "after epoch 1" in resumed.stdout
    result = json.loads((output_dir / "test_eval_results.json").read_text())
    for key in ("roc_auc", "accuracy", "f1", "best_epoch", "confusion_matrix"):
        assert result[key] == uninterrupted[key], key
    assert not any(name.endswith(".tmp") or ".tmp." in name for name in os.listdir(output_dir))


def test_a_second_run_on_a_busy_output_folder_is_refused(small_cohort_dir, tmp_path):
    output_dir = tmp_path / "busy"
    output_dir.mkdir()
    (output_dir / run_folder.LOCK_FILE).write_text(json.dumps(
        {"pid": os.getpid(), "host": __import__("socket").gethostname(), "started": "now"}))
    with pytest.raises(config.UserError, match="in use by another run"):
        engine.run_training(tiny_config(small_cohort_dir, output_dir, EPOCHS=1), log=quiet)
    assert os.listdir(output_dir) == [run_folder.LOCK_FILE]


def test_a_stale_lock_does_not_block(small_cohort_dir, tmp_path):
    output_dir = tmp_path / "stale"
    output_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (output_dir / run_folder.LOCK_FILE).write_text(json.dumps(
        {"pid": dead.pid, "host": __import__("socket").gethostname(), "started": "then"}))
    engine.run_training(tiny_config(small_cohort_dir, output_dir, EPOCHS=1), log=quiet)
    assert (output_dir / "test_eval_results.json").exists()
    assert not (output_dir / run_folder.LOCK_FILE).exists()


@pytest.mark.parametrize("damage", ["truncated", "foreign", "not_torch"])
def test_corrupt_or_foreign_checkpoint_gets_a_clear_error(damage, small_cohort_dir, tmp_path):
    output_dir = tmp_path / "run"
    engine.run_training(tiny_config(small_cohort_dir, output_dir, EPOCHS=1), log=quiet)
    path = output_dir / "last_checkpoint.pth"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        path.write_text("not a checkpoint")
    run = script_result("train_MCL_ResNet_1D_class2.py", f"--data_dir={small_cohort_dir}",
                        f"--output_dir={output_dir}", *CLI_OPTIONS, "--resume=True", "--epochs=2")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "last_checkpoint.pth" in run.stderr


def test_full_disk_ends_with_a_message_and_keeps_the_last_checkpoint(small_cohort_dir, tmp_path,
                                                                     monkeypatch):
    output_dir = tmp_path / "full"
    real_save, calls = training.save_checkpoint, []

    def save(path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 2:  # epoch 1 wrote best and last; epoch 2 finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(training, "save_checkpoint", save)
    with pytest.raises(config.UserError, match="no space left") as error:
        engine.run_training(tiny_config(small_cohort_dir, output_dir, EPOCHS=3), log=quiet)
    assert "--resume=True" in str(error.value)
    state = torch.load(output_dir / "last_checkpoint.pth", weights_only=True)
    assert state["epoch"] == 1
    assert not (output_dir / run_folder.LOCK_FILE).exists()


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    """DDP with 2 CPU processes against 1 process, same seed and global batch.

    Each step sees the same 32 beats in both runs (the sampler's permutation is seeded by
    seed + epoch and split between ranks), so the runs differ only where a step is not a plain
    average over its batch: batch-norm statistics are computed per process (16 beats each
    instead of 32) and float sums are ordered differently. We accept 0.04 (about 15%) in the first
    epoch's training loss, 0.03 in test AUC and 0.06 in accuracy (about 8 of the ~140 test beats).
    The cohort has no discordant patients: with label noise the validation accuracy plateaus at
    once and the two runs may pick checkpoints of different epochs, which says nothing about DDP.
    """
    data_dir = tmp_path / "demo"
    options = dataclasses.replace(demo_cohort.DEMO_DEFAULTS, n_patients=50, seed=11,
                                  discordant_share=0.0)
    demo_cohort.write_demo_cohort(str(data_dir), options)
    common = [f"--data_dir={data_dir}", "--experiment=baseline", "--epochs=5", "--bootstrap=20",
              "--device=cpu", "--lr=0.001"]
    single = subprocess.run([sys.executable, "train_MCL_ResNet_1D_class2.py",
                             f"--output_dir={tmp_path / 'one'}", *common], cwd=ROOT,
                            capture_output=True, text=True, timeout=HANG_LIMIT_S)
    assert single.returncode == 0, single.stderr
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    double = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2",
                             "train_MCL_ResNet_1D_class2.py", f"--output_dir={tmp_path / 'two'}",
                             *common], cwd=ROOT, capture_output=True, text=True,
                            timeout=HANG_LIMIT_S)
    assert double.returncode == 0, double.stderr
    assert "Distributed: 2 processes (gloo)" in double.stdout
    assert double.stdout.count("Test set (") == 1
    one = json.loads((tmp_path / "one" / "test_eval_results.json").read_text())
    two = json.loads((tmp_path / "two" / "test_eval_results.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    first_loss = [np.load(tmp_path / run / "train_loss_list.npy")[0] for run in ("one", "two")]
    assert abs(first_loss[0] - first_loss[1]) <= 0.04
    assert abs(one["roc_auc"] - two["roc_auc"]) <= 0.03
    assert abs(one["accuracy"] - two["accuracy"]) <= 0.06
    # the test set is the same patients and every one of their beats, counted once
    split = json.loads((tmp_path / "one" / "split.json").read_text())
    assert json.loads((tmp_path / "two" / "split.json").read_text())["test"] == split["test"]
    cohort = ds.load_cohort(str(data_dir))
    test_beats = np.isin(cohort.patient_ids, np.asarray(split["test"], dtype=str))
    assert one["n_beats"] == two["n_beats"] == int(test_beats.sum())
    assert one["n_patients"] == two["n_patients"] == len(split["test"])
    assert np.sum(one["confusion_matrix"]) == np.sum(two["confusion_matrix"]) == one["n_beats"]
    assert one["n_beats"] > one["n_patients"]  # several beats per patient: a patient level block
    level_one, level_two = one["patient_level"], two["patient_level"]
    assert level_one["n_patients"] == level_two["n_patients"] == len(split["test"])
    assert np.sum(level_one["confusion_matrix"]) == np.sum(level_two["confusion_matrix"]) \
        == len(split["test"])
    assert sorted(os.listdir(tmp_path)) == ["demo", "one", "two"]


# ----------------------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

beat_arrays = st.one_of(
    hnp.arrays(st.sampled_from([np.float32, np.float64, np.int16, np.int64, np.uint8, np.bool_,
                                np.complex64, np.float16]),
               hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=14),
               elements=None),
    hnp.arrays(np.float32, st.tuples(st.integers(0, 4), st.sampled_from([11, 12, 13]),
                                     st.sampled_from([300, 12])),
               elements=st.floats(allow_nan=True, allow_infinity=True, width=32)),
    st.just(np.array(["a", "b"])),
)


def write_cohort(folder, beats_ns1, ids_ns1=None):
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    for g in GROUPS:
        beats = beats_ns1 if g == "NS_1" else rng.normal(size=(3, 12, 300)).astype(np.float32)
        np.save(os.path.join(folder, f"cut_{g}.npy"), beats, allow_pickle=True)
        n = len(beats) if getattr(beats, "ndim", 0) else 0
        own = np.arange(n) + 100 * GROUPS.index(g)
        ids = ids_ns1 if (g == "NS_1" and ids_ns1 is not None) else own
        np.save(os.path.join(folder, f"cut_{g}_patient_ids.npy"), ids, allow_pickle=True)


@FUZZ
@given(beats=beat_arrays)
def test_fuzzed_beat_files_load_or_fail_clearly(tmp_path, beats):
    folder = str(tmp_path / "fuzz")
    write_cohort(folder, beats)
    try:
        cohort = ds.load_cohort(folder)
    except ds.CohortError as error:
        assert "cut_NS_1" in str(error) or "patient" in str(error)
        return
    assert cohort.beats.dtype == np.float32 and cohort.beats.shape[1] == 12
    assert np.isfinite(cohort.beats).all()
    assert np.isfinite(standardize_beats(cohort.beats)).all()


id_arrays = st.one_of(
    hnp.arrays(st.sampled_from([np.int64, np.float64, np.int8, np.bool_, np.complex64]),
               hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5)),
    st.lists(st.text(max_size=4), min_size=0, max_size=5).map(np.array),
    st.lists(st.one_of(st.integers(), st.text(max_size=3), st.none()), min_size=1, max_size=4)
    .map(lambda values: np.array(values, dtype=object)),
)


@FUZZ
@given(ids=id_arrays)
def test_fuzzed_patient_id_files_load_or_fail_clearly(tmp_path, ids):
    folder = str(tmp_path / "fuzz_ids")
    write_cohort(folder, np.random.default_rng(1).normal(size=(3, 12, 300)).astype(np.float32),
                 ids_ns1=ids)
    try:
        cohort = ds.load_cohort(folder)
    except ds.CohortError as error:
        assert "cut_NS_1_patient_ids.npy" in str(error) or "patient" in str(error)
        return
    assert len(cohort.patient_ids) == len(cohort.beats)


RECORD_LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
SIMULATED_BPM = 72.0  # the fuzzed records beat at 1.2 Hz


def fuzzed_record(folder, seconds, fs, defect, seed):
    """A 12-lead WFDB record "r" in `folder`: QRS spikes at 72 bpm and noise, with one defect.

    Returns the record's duration as record_beats computes it (samples / fs).
    """
    rng = np.random.default_rng(seed)
    n = max(2, int(seconds * fs))
    t = np.arange(n) / fs
    beat_phase = (t * SIMULATED_BPM / 60.0) % 1.0
    qrs = np.exp(-0.5 * ((beat_phase - 0.3) / 0.012) ** 2)
    signal_mv = qrs[:, None] * rng.uniform(0.5, 1.5, 12) + 0.02 * rng.normal(size=(n, 12))
    if defect == "nan":
        signal_mv[rng.integers(0, n), rng.integers(0, 12)] = np.nan
    elif defect == "flat":
        signal_mv[:, rng.integers(0, 12)] = 0.0
    elif defect == "saturated":
        signal_mv[: n // 2, 3] = signal_mv[:, 3].max()
    elif defect == "noise":
        signal_mv += rng.normal(0, 2.0, signal_mv.shape)
    elif defect == "spikes":
        signal_mv[rng.integers(0, n, 5)] = 30.0
    os.makedirs(folder, exist_ok=True)
    wfdb.wrsamp("r", fs=fs, units=["mV"] * 12, sig_name=RECORD_LEADS, p_signal=signal_mv,
                fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder))
    return n / fs


def expected_outcomes(defect, duration):
    """What record_beats must do with a fuzzed record: "beats" or the allowed rejection kinds.

    One window needs PRE + POST = 1 s. A clean record of >= 2.5 s holds at least two
    complete 72-bpm beats and must give beats; between 1 and 2.5 s the edge beats may be
    too close to the record's ends to be detected or cut. NaN is checked before the length.
    Five isolated 30 mV spikes have no reason of their own: the noise measure (Welch segments
    of 2 s) misses spikes in the record's tail and at low sampling rates, where what is left
    are spikes the detector may take for R peaks; where they fill a short record the median lead
    peak-to-peak exceeds any plausible ECG ("amplitude"); any other kind (flat, saturated,
    NaN...) is wrong for them.
    """
    window = OPTIONS.pre + OPTIONS.post
    if defect == "nan":
        return {"NaN samples"}
    if duration < window:
        return {"too short"}
    return {"none": {"beats"} if duration >= 2.5 else {"beats", "heart rate", "no beats"},
            "flat": {"flat lead"},
            "saturated": {"saturated lead"},
            "noise": {"noisy"},
            "spikes": {"noisy", "heart rate", "no beats", "beats", "amplitude"}}[defect]


def outcome_of(path):
    """(kind, reason, RecordBeats): "beats", "" and the beats, or the rejection's kind, its
    stated reason ("kind: detail") and no beats."""
    try:
        return "beats", "", record_beats.record_beats(path, OPTIONS)
    except RecordRejected as rejected:
        no_beats = np.empty((0, 12, OPTIONS.window_samples), np.float32)
        return (str(rejected).partition(": ")[0], str(rejected),
                record_beats.RecordBeats(no_beats, np.empty(0, np.int64), np.empty(0, np.int64),
                                         {}))


# Broadband noise is "noisy" only where the record has content above the band-pass (40 Hz) over
# most of 40-250 Hz: high_frequency_ratios runs after resampling to 500 Hz and takes the median
# density above 40 Hz, which a 100 or 250 Hz record leaves empty. So the noise defect is drawn at
# 360 and 500 Hz only.
fuzzed_cases = st.one_of(
    st.tuples(st.sampled_from(["none", "nan", "flat", "saturated", "spikes"]),
              st.sampled_from([100, 250, 360, 500])),
    st.tuples(st.just("noise"), st.sampled_from([360, 500])))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seconds=st.floats(0.2, 4.0), case=fuzzed_cases, seed=st.integers(0, 10_000))
@example(seconds=3.0, case=("none", 250), seed=0)
@example(seconds=0.5, case=("nan", 100), seed=0)
@example(seconds=3.0, case=("nan", 500), seed=0)
@example(seconds=0.8, case=("flat", 500), seed=0)
@example(seconds=3.0, case=("flat", 360), seed=0)
@example(seconds=3.0, case=("saturated", 100), seed=0)
@example(seconds=3.0, case=("noise", 500), seed=0)
@example(seconds=3.0, case=("spikes", 500), seed=0)
@example(seconds=1.0, case=("spikes", 100), seed=0)  # spikes fill the record: "amplitude"
def test_fuzzed_wfdb_records_give_beats_or_the_matching_rejection(tmp_path, seconds, case, seed):
    defect, fs = case
    folder = tmp_path / f"rec_{defect}_{fs}_{seed}"
    duration = fuzzed_record(folder, seconds, fs, defect, seed)
    kind, reason, result = outcome_of(str(folder / "r"))
    assert kind in expected_outcomes(defect, duration), (defect, fs, duration, reason)
    assert (len(result.beats) > 0) == (kind == "beats")
    assert result.beats.ndim == 3 and result.beats.shape[1:] == (12, 500)
    assert np.isfinite(result.beats).all()
    assert (len(reason) > len(kind) + 2 and reason.startswith(f"{kind}: ")) == (kind != "beats")


@pytest.mark.parametrize("fs", [100, 250, 360, 500])
def test_a_clean_record_gives_its_beats_at_its_heart_rate(tmp_path, fs):
    """A 3.5 s record beats at 0.25 + k * 0.833 s; k = 1, 2, 3 have complete [-0.3, +0.7) s
    windows."""
    fuzzed_record(tmp_path, 3.5, fs, "none", seed=1)
    kind, reason, result = outcome_of(str(tmp_path / "r"))
    assert kind == "beats", reason
    assert result.beats.shape == (3, 12, 500) and np.isfinite(result.beats).all()
    assert result.info["heart_rate_bpm"] == pytest.approx(SIMULATED_BPM, abs=2.0)
    expected_r_s = 0.25 + np.arange(1, 4) * 60.0 / SIMULATED_BPM
    assert np.allclose(result.r_peaks / OPTIONS.fs, expected_r_s, atol=0.006)
