"""What several test files share that is not a fixture: the repository root, small synthetic
cohorts written in the data contract, a short training configuration, scripts run in this
process, and the shipped PTB-XL records with prepare_data.py's options."""
import contextlib
import dataclasses
import importlib
import io
import os
import runpy
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A guard against a subprocess that hangs, not a speed check: a test fails for a wrong result,
# never because a busy machine ran it slowly (speed is measured in bench/, not in tests).
HANG_LIMIT_S = 4 * 3600
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import lvr.prepare.writer as prepare  # noqa: E402  (after the root is importable)
import prepare_data  # noqa: E402
from lvr.data import demo as demo_cohort  # noqa: E402
from lvr.config import UserError, config_names  # noqa: E402
from lvr.prepare.record_beats import checked_options  # noqa: E402

PTBXL_SLICE = Path(ROOT) / "tests" / "data" / "ptbxl"   # eight PTB-XL records (CC BY 4.0)
PREPARE_DEFAULTS = {name: getattr(prepare_data, name) for name in config_names(vars(prepare_data))}
GIVEN_OPTIONS = prepare_data.record_options(PREPARE_DEFAULTS)   # record Options, unchecked
OPTIONS = checked_options(GIVEN_OPTIONS)   # prepare_data.py's constants as record Options


SMALL_COHORT = {"n_patients": 10, "beats_per_patient": (1, 3), "window_s": 0.6, "r_peak_s": 0.2,
                "seed": 5}


def small_cohort_options(**overrides):
    """The demo generator's DemoOptions for a small, fast cohort, with `overrides` (its fields)."""
    return dataclasses.replace(demo_cohort.DEMO_DEFAULTS, **{**SMALL_COHORT, **overrides})


def write_small_cohort(folder, **overrides):
    demo_cohort.write_demo_cohort(str(folder), small_cohort_options(**overrides))
    return str(folder)


def beats_of(folder, group):
    return np.load(os.path.join(folder, f"cut_{group}.npy"))


def tiny_config(data_dir, output_dir, **overrides):
    """The 2-class script's constants, shortened to a 3-epoch run of the small baseline model."""
    import train_MCL_ResNet_1D_class2 as script  # imported once the root is on sys.path
    config = {name: getattr(script, name) for name in dir(script) if name.isupper()}
    config.update(DATA_DIR=str(data_dir), OUTPUT_DIR=str(output_dir), EXPERIMENT="baseline",
                  EPOCHS=3, BATCH_SIZE=16, BOOTSTRAP=50, DEVICE="cpu", LR=1e-3)
    config.update(overrides)
    return config


def evaluation_config(train_dir, data_dir, **overrides):
    """evaluate.py's constants for scoring `train_dir` on `data_dir`, on the CPU, with a short
    bootstrap."""
    import evaluate as script  # imported once the root is on sys.path
    config = {name: getattr(script, name) for name in script.__annotations__}
    config.update(TRAIN_DIR=str(train_dir), DATA_DIR=str(data_dir), BOOTSTRAP=50, DEVICE="cpu")
    config.update(overrides)
    return config


def quiet(*_):
    """A log function that prints nothing."""


class ScriptResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def script_result(script, *args):
    """What `python <script> <args>` in the repository root gives (exit status, stdout, stderr),
    run in this process, where torch is already loaded: a fraction of the 2-3 s a new
    interpreter takes. An exception the script does not turn into a message escapes, and fails
    the test as a traceback would."""
    stdout, stderr, argv, cwd = io.StringIO(), io.StringIO(), sys.argv, os.getcwd()
    returncode = 0
    try:
        sys.argv = [script, *map(str, args)]
        os.chdir(ROOT)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
    except SystemExit as done:
        returncode = done.code if isinstance(done.code, int) else int(done.code is not None)
    finally:
        sys.argv = argv
        os.chdir(cwd)
    return ScriptResult(returncode, stdout.getvalue(), stderr.getvalue())


def record_path(ecg_id):
    """The shipped PTB-XL record `ecg_id` (WFDB, without extension)."""
    return PTBXL_SLICE / "records500" / "00000" / f"{ecg_id:05d}_hr"


def options(**changes):
    """prepare_data.py's default Options with some fields changed."""
    return dataclasses.replace(OPTIONS, **changes)


def reason_of(path, options=OPTIONS):
    """Why prepare_data.py rejects the record at `path` (the test fails if it is kept)."""
    result, reason = prepare.prepared_record((str(path), options))
    assert result is None, f"{path} was expected to be rejected"
    return reason


def run_prepare_data(monkeypatch, *args, trainable=True):
    """prepare_data.main() in this process with fresh constants and the given options.
    trainable=False: the cohort it writes is too small to train (the shipped slice has 8
    records), so the script must end with the error that says so, after writing its files."""
    module = importlib.reload(prepare_data)
    monkeypatch.setattr(sys, "argv", ["prepare_data.py", *args])
    if trainable:
        module.main()
    else:
        with pytest.raises(UserError, match="cannot train: class"):
            module.main()
    return module
