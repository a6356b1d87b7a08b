"""The one reader of a finished training run: its split.json and the checkpoint to score.

`evaluate.py`, the saliency analysis and the measurement baseline all start from a run folder;
each gets the same checks and the same messages from `read_finished_run`.
"""
import json
import os
from typing import NamedTuple

from lvr.data.demo import DEMO_DIR, ensure_demo_cohort
from lvr.errors import UserError
from lvr.report.results import TEST_RESULTS
from lvr.train.loop import BEST_CHECKPOINT

SPLIT_FILE = "split.json"
SPLIT_KEYS = ("train", "test", "task", "data_fingerprint")


class FinishedRun(NamedTuple):
    folder: str
    split: dict            # split.json: the patients of each part, the cohort's fingerprint
    split_path: str
    checkpoint_path: str | None
    finished: bool = True  # False: an interrupted run, its test_eval_results.json not written


def is_cross_validation_run(folder):
    return (os.path.exists(os.path.join(folder, "cv_summary.json"))
            or os.path.isdir(os.path.join(folder, "fold_1")))


def read_finished_run(folder, option="--train_dir", checkpoint=BEST_CHECKPOINT):
    """The finished single-split run in `folder` (named `option` in messages), or a UserError
    that says what is wrong and what to give instead. `checkpoint` None: no model needed. A run
    interrupted after its first best checkpoint is read too, with `finished` False: the
    caller says so."""
    if not os.path.isdir(folder):
        raise UserError(f"{option}={folder}: folder not found; give the OUTPUT_DIR of a "
                        f"finished training run")
    if is_cross_validation_run(folder):
        raise UserError(f"{option}={folder} is a cross-validation run with one model per "
                        f"fold; give one fold's run, e.g. {option}="
                        f"{os.path.join(folder, 'fold_1')}")
    split_path = os.path.join(folder, SPLIT_FILE)
    model_path = os.path.join(folder, checkpoint) if checkpoint else None
    missing = [p for p in (model_path, split_path) if p and not os.path.exists(p)]
    if missing:
        raise UserError(f"{option}={folder}: {', '.join(missing)} not found; the folder must "
                        f"hold a finished training run (train first, or point at its "
                        f"OUTPUT_DIR)")
    try:
        with open(split_path, encoding="utf-8") as handle:
            split = json.load(handle)
    except (OSError, ValueError) as error:
        raise UserError(f"{split_path} cannot be read ({error}); it must be the split.json a "
                        f"training run wrote") from None
    if not isinstance(split, dict):
        raise UserError(f"{split_path} is not a training run's split.json (no JSON object)")
    if "evaluated_run" in split:
        raise UserError(f"{option}={folder} is itself an evaluation's output; point at the "
                        f"training run ({split.get('evaluated_run')})")
    absent = [key for key in SPLIT_KEYS if key not in split]
    if absent:
        raise UserError(f"{split_path} lacks {', '.join(absent)}: it is not a training run's "
                        f"split")
    return FinishedRun(folder, split, split_path, model_path,
                       finished=os.path.exists(os.path.join(folder, TEST_RESULTS)))


def recorded_cohort(run, log=print):
    """The cohort folder `run` (a FinishedRun) was trained on, from its split.json (the demo
    made again when that was the demo and it is gone), or a UserError naming it."""
    recorded = run.split.get("data_dir") or ""
    if recorded and os.path.normpath(recorded) == os.path.normpath(DEMO_DIR):
        ensure_demo_cohort(DEMO_DIR, log=log)
    if not os.path.isdir(recorded):
        raise UserError(f"the cohort {recorded!r} of {run.split_path} is not there; pass "
                        f"--data_dir=FOLDER with the cohort the run was trained on")
    log(f"Data: the run's cohort, {recorded} ({SPLIT_FILE})")
    return recorded
