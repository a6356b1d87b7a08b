"""External validation: a finished training run's best checkpoint scored on another cohort.

`python evaluate.py --train_dir=RUN --data_dir=OTHER` (before: a training script's
`--evaluate=RUN`). The checkpoint is loaded, OTHER is checked against the cohort the run was
trained on (leads in the same order, sampling rate, beat window, task and classes; a clear error
otherwise) and every beat of OTHER is a test beat. The model's task, classes, normalisation and
operating point come from its checkpoint. It writes what a test evaluation writes:
test_eval_results.json (with patient-bootstrap CIs, patient-level metrics and calibration),
predictions.csv, the ROC, confusion and reliability figures, plus run.json and split.json (the
patients evaluated).
"""
import contextlib
import os
import re
import time

import numpy as np
import torch

from lvr.choices import ARGMAX_THRESHOLD
from lvr.data.beat_files import file_sha256
from lvr.data.geometry import check_geometry, cohort_geometry, geometry_assumptions
from lvr.errors import UserError
from lvr.report.html import write_report
from lvr.report.predictions import write_predictions
from lvr.report.results import (TEST_RESULTS, log_test_summary, write_probability_figure,
                                write_test_outputs)
from lvr.run_folder import output_lock, prepare_output_dir, run_record, write_json_atomic
from lvr.stats.operating_point import is_fixed_rule
from lvr.train.checkpoints import checkpoint_normalisation, load_checkpoint
from lvr.train.distributed import barrier, distributed_setup, quiet_log
from lvr.train.finished_run import read_finished_run
from lvr.train.run import evaluate, run_context, write_cohort_tables


def run_evaluation(config, log=print):
    """Score TRAIN_DIR's best checkpoint on every beat of DATA_DIR, as evaluate.py's
    configuration says; returns the test report. Results go to OUTPUT_DIR, by default
    TRAIN_DIR/external_<cohort folder>."""
    start_time = time.time()
    train_dir = config["TRAIN_DIR"]
    finished = read_finished_run(train_dir)
    split, model_path = finished.split, finished.checkpoint_path
    rank, world_size, device = distributed_setup(config["DEVICE"])
    if rank != 0:
        log = quiet_log
    model, checkpoint = load_checkpoint(model_path, map_location="cpu")
    n_classes = model.config["num_classes"]
    run = run_context(config["DATA_DIR"], model_task(checkpoint, n_classes), class_names=(),
                      num_classes=n_classes, batch_size=config["BATCH_SIZE"],
                      normalisation=checkpoint_normalisation(checkpoint, model_path),
                      allow_pickle=config["ALLOW_PICKLE"], device=device, rank=rank,
                      world_size=world_size, log=log, model_file=model_path)
    cohort = run.cohort
    check_geometry(split, model, cohort, train_dir)
    if list(checkpoint.get("class_names") or run.class_names) != run.class_names:
        log(f"note: the cohort calls the classes {run.class_names}; the model was trained with "
            f"{checkpoint['class_names']} (matched by position; the report uses the model's)")
        run.class_names = list(checkpoint["class_names"])
    own_data = cohort.fingerprint() == split.get("data_fingerprint")
    if own_data:
        log(f"warning: {run.data_dir} is the cohort {train_dir} was trained on; its training and "
            f"validation patients are scored too, so this is not an external validation")
    assumptions = unfinished_note(finished, checkpoint) + geometry_assumptions(split, model,
                                                                                cohort)
    overlap, note = shared_patients(split, cohort)
    if note:
        assumptions.append(note)
    for text in assumptions:
        log(f"warning: {text}")
    if overlap and not own_data:
        check_overlap(overlap, split, train_dir, run.data_dir, log,
                      allowed=config["ALLOW_PATIENT_OVERLAP"])
    output_dir = evaluation_output_dir(train_dir, cohort, config["OUTPUT_DIR"])
    if run.writer:
        prepare_output_dir(output_dir, log=log, finished_file=TEST_RESULTS)
    barrier(world_size)
    everything = np.arange(len(run.labels))
    log(f"Evaluating {model_path} (epoch {checkpoint.get('epoch')}) on all "
        f"{len(everything)} beats of {len(np.unique(cohort.patient_ids))} patients; "
        f"results in {output_dir}/")
    with output_lock(output_dir) if run.writer else contextlib.nullcontext():
        report, prob = evaluate(run, (run.x_all, torch.from_numpy(run.labels)), everything,
                                model_path, batch_size=config["BATCH_SIZE"],
                                bootstrap=config["BOOTSTRAP"], seed=config["SEED"],
                                operating_point=trained_operating_point(
                                    checkpoint, model, log, finished=finished.finished),
                                progress="scoring")
        report.update({"best_epoch": checkpoint.get("epoch"), "class_names": run.class_names,
                       "processes": world_size,
                       "evaluation": {
                           **evaluation_record(train_dir, model_path, split, cohort,
                                               run.data_dir, own_data),
                           "patient_overlap": None if overlap is None else len(overlap),
                           "patient_overlap_allowed": config["ALLOW_PATIENT_OVERLAP"],
                           "assumptions": assumptions}})
        if run.writer:
            write_evaluation_outputs(run, report, prob, output_dir, train_dir=train_dir,
                                     own_data=own_data, wall=time.time() - start_time,
                                     run_config=config, html_report=config["REPORT"], log=log)
    barrier(world_size)
    return report


def write_evaluation_outputs(run, report, prob, output_dir, *, train_dir, own_data, wall,
                             run_config, html_report, log):
    """predictions.csv, the test files and figures, split.json (the patients evaluated),
    run.json (recording `run_config`), the cohort tables and report.html (`html_report`) of an
    evaluation (rank 0)."""
    cohort, test_set = run.cohort, "external" if not own_data else "all beats"
    write_predictions(os.path.join(output_dir, "predictions.csv"), cohort,
                      np.arange(len(run.labels)), run.labels, prob, run.class_names)
    write_test_outputs(output_dir, report, run.class_names, test_set=test_set)
    write_json_atomic(os.path.join(output_dir, "split.json"), {
        "evaluated_run": train_dir, "data_dir": run.data_dir,
        "data_fingerprint": cohort.fingerprint(), "cohort": cohort_geometry(cohort),
        "test": sorted(set(cohort.patient_ids.tolist()))})
    write_json_atomic(os.path.join(output_dir, "run.json"),
                      run_record(run_config, wall, cohort=cohort, data_dir=run.data_dir,
                                 device=run.device, world_size=run.world_size,
                                 evaluated_run=train_dir))
    write_probability_figure(output_dir, report, run.labels, prob, cohort.patient_ids,
                             run.class_names, test_set=test_set)
    write_cohort_tables(output_dir, run, {"test": cohort.patient_ids})
    log_test_summary(report, run.class_names, output_dir, wall, log,
                     title="External test set" if not own_data else "All beats")
    if html_report:
        write_report(output_dir, log=log)


def model_task(checkpoint, n_classes):
    """The label mapping the checkpoint was trained for; a checkpoint from before the task was
    recorded was trained by the script of its number of classes."""
    return checkpoint.get("task") or ("binary" if n_classes == 2 else "multiclass")


def unfinished_note(finished, checkpoint):
    """[what an interrupted run's best checkpoint is] for a run that never finished (no test
    results: lvr.train.finished_run), else []."""
    if finished.finished:
        return []
    name = os.path.basename(finished.checkpoint_path)
    return [f"the run in {finished.folder} never finished (no {TEST_RESULTS}): {name} scored "
            f"here is its best checkpoint so far (epoch {checkpoint.get('epoch')}), not the "
            f"model a finished run selects; to score that, finish the run with the training "
            f"script's --resume=True first"]


def trained_operating_point(checkpoint, model, log, finished=True):
    """The operating point the training run chose on its validation patients (2 classes; None
    for more). A run that never `finished` chose none, nor did a checkpoint saved before
    THRESHOLD existed: both get the original's 0.5, said so."""
    if model.config["num_classes"] != 2:
        return None
    point = checkpoint.get("operating_point")
    if point is None and not finished:
        log(f"note: no threshold was chosen on the validation patients because the run never "
            f"finished (THRESHOLD acts after the last epoch); the operating point is the "
            f"original's argmax ({ARGMAX_THRESHOLD})")
        return {"rule": "argmax", "threshold": ARGMAX_THRESHOLD,
                "chosen_on": "none: the run never finished (the original's argmax)"}
    if point is None:
        log(f"note: the checkpoint predates THRESHOLD, so no threshold was chosen on its "
            f"validation patients; the operating point is the original's argmax "
            f"({ARGMAX_THRESHOLD})")
        return {"rule": "argmax", "threshold": ARGMAX_THRESHOLD,
                "chosen_on": "none: the checkpoint predates THRESHOLD (the original's argmax)"}
    log(f"Operating point: threshold {point['threshold']:.4f} ({point['rule']}), "
        + ("fixed by the training run's THRESHOLD" if is_fixed_rule(point["rule"])
           else "chosen on the training run's validation patients"))
    return point


def shared_patients(split, cohort):
    """(sorted patient IDs of the cohort that are in the training run's train, val or test
    split, or None when they cannot be compared; why not, or None).

    IDs are compared as text. The demo generator's IDs are counters, not people, and a cohort
    (or training run) without patient-ID files numbers its beats, so those are not compared."""
    if cohort.is_demo:
        return None, (f"{cohort.data_dir} is a synthetic cohort (demo_cohort.py): its patient "
                      f"IDs are counters, not people; overlap with the training split is not "
                      f"checked")
    if not cohort.patient_ids_given or split.get("patient_ids_given") is False:
        return None, ("patient IDs are not given (no cut_<GROUP>_patient_ids.npy) in this "
                      "cohort or the training cohort: overlap with the training split is not "
                      "checked")
    trained = {str(p) for part in ("train", "val", "test") for p in split.get(part, [])}
    return sorted(trained & set(np.unique(cohort.patient_ids.astype(str)).tolist())), None


def check_overlap(overlap, split, train_dir, data_dir, log, allowed=False):
    """Refuse a cohort sharing patients with the training split, unless ALLOW_PATIENT_OVERLAP
    (e.g. a temporal validation on later records of the same patients); the own-data case
    (the same cohort, the run's fingerprint) is not refused: it is reported as not external.
    `allowed`: ALLOW_PATIENT_OVERLAP."""
    shared = set(overlap)
    parts = ", ".join(f"{part} {len(shared & {str(p) for p in split.get(part, [])})}"
                      for part in ("train", "val", "test"))
    shown = ", ".join(overlap[:5]) + (", ..." if len(overlap) > 5 else "")
    if not allowed:
        raise UserError(f"{data_dir} shares {len(overlap)} patient IDs with the split of "
                        f"{train_dir} ({parts}; e.g. {shown}), so it is not an external "
                        f"cohort; if that is deliberate (a temporal validation, or IDs of "
                        f"another numbering), pass --allow_patient_overlap=True")
    log(f"warning: {len(overlap)} patients of {data_dir} are in the split of {train_dir} "
        f"({parts}; e.g. {shown}); scored because --allow_patient_overlap=True, and recorded "
        f"in the report (patient_overlap)")


def evaluation_output_dir(train_dir, cohort, chosen=""):
    """`chosen` (OUTPUT_DIR), or TRAIN_DIR/external_<cohort folder name>: by default the results
    sit beside the model they come from, and the run's own results do not change. A chosen
    folder that holds the run would move the model aside (an earlier run is kept under another
    name), so it is refused."""
    if chosen:
        run, target = os.path.realpath(train_dir), os.path.realpath(chosen)
        if run == target or run.startswith(target.rstrip(os.sep) + os.sep):
            raise UserError(f"--output_dir={chosen} holds the run being evaluated "
                            f"({train_dir}); choose another folder, or leave --output_dir out "
                            f"to write into {train_dir}/external_*")
        return chosen
    name = os.path.basename(os.path.abspath(cohort.data_dir))
    return os.path.join(train_dir, "external_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", name))


def evaluation_record(train_dir, model_path, split, cohort, data_dir, own_data):
    """test_eval_results.json["evaluation"]: which model scored which cohort."""
    return {"evaluated_run": train_dir, "checkpoint": model_path,
            "checkpoint_sha256": file_sha256(model_path),
            "training_data_dir": split.get("data_dir"),
            "training_data_fingerprint": split.get("data_fingerprint"),
            "data_dir": data_dir, "data_fingerprint": cohort.fingerprint(),
            "external": not own_data,
            "aggregation": "patient probability = mean of the patient's beat probabilities"}
