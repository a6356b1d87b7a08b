"""A training script's whole job: cohort -> split -> fit -> evaluate -> write.

`run_training(config)` runs one patient-level split (or CV_FOLDS folds): it trains with
lvr.train.loop.fit, tests the best checkpoint with lvr.stats.metrics.test_report, and writes the
figures and provenance files. The scripts only choose constants.
"""
import contextlib
import dataclasses
import datetime
import json
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

from lvr.stats.calibration import calibration_by_class
from lvr.train.checkpoints import add_to_checkpoint, load_checkpoint
from lvr.data.beats import StandardisedBeats
from lvr.data.cohort import load_cohort
from lvr.data.split import patient_kfold_indices, patient_split_indices
from lvr.config import UserError
from lvr.stats.decision_curve import decision_curve, write_decision_curve_csv
from lvr.report.characteristics import characteristics_markdown, characteristics_table
from lvr.choices import ARGMAX_THRESHOLD, threshold_rule
from lvr.data.demo import resolve_data_dir
from lvr.train.distributed import barrier, distributed_setup
from lvr.train.finetune import check_source, checked_test_overlap, read_source
from lvr.report.flow_figures import plot_flow
from lvr.report.training_figures import (plot_confusion_matrix, plot_decision_curve,
                                  plot_patient_probabilities, plot_reliability_diagram,
                                  plot_roc_curve, plot_training_curves)
from lvr.report.flow import participant_flow
from lvr.data.geometry import cohort_geometry
from lvr.stats.metrics import headline_metrics, patient_level_arrays, test_report
from lvr.stats.operating_point import argmax_note, operating_point_report, validation_operating_point
from lvr.report.predictions import write_predictions
from lvr.report.html import write_report
from lvr.run_folder import (atomic_write, code_version, disk_space_guard, library_versions,
                            output_lock, prepare_output_dir, save_npy_atomic, write_json_atomic)
from lvr.stats.subgroups import performance_subgroups, subgroup_report
from lvr.train.loop import (BEST_CHECKPOINT, EXTRA_HISTORY_KEYS, HISTORY_KEYS, LAST_CHECKPOINT,
                          fit, predict_logits)

TEST_RESULTS = "test_eval_results.json"
FLOW_FILE = "participant_flow.json"
CHARACTERISTICS_FILE = "characteristics.json"
DECISION_CURVE_CSV = "decision_curve.csv"
CV_SUMMARY = "cv_summary.json"


@dataclasses.dataclass
class RunContext:
    """What every split of one run shares: the cohort, its labels, and where this process runs."""
    cohort: object                  # lvr.data.cohort.Cohort
    data_dir: str
    labels: np.ndarray              # class of every beat for the run's task
    class_names: list
    x_all: StandardisedBeats        # every beat, read and standardised batch by batch
    device: torch.device
    rank: int = 0
    world_size: int = 1
    log: object = print
    task: str = "binary"
    init_from: object = None        # lvr.train.finetune.Source of INIT_FROM, read once, checked

    @property
    def writer(self):
        """Only rank 0 writes files."""
        return self.rank == 0


def run_training(config, log=print):
    """Train, select and test as configured: one split, or CV_FOLDS patient-level folds.

    Under torchrun every process runs this; only rank 0 prints and writes. Returns the test
    report (with CV: the cross-validation summary).
    """
    start_time = time.time()
    rank, world_size, device = distributed_setup(config["DEVICE"])
    if rank != 0:
        log = quiet_log
    try:
        run = run_context(config, log, rank, world_size, device)
        if config.get("INIT_FROM") and not (config["RESUME"] and not config["CV_FOLDS"]):
            # before the output folder is touched: a checkpoint that does not fit moves nothing
            run.init_from = checked_source(config, run.cohort)
        output_dir, folds = config["OUTPUT_DIR"], config["CV_FOLDS"]
        if run.writer:
            prepare_run_folder(config, log)
        barrier(world_size)
        with (output_lock(output_dir) if run.writer else contextlib.nullcontext()), \
                disk_space_guard(output_dir, f"last complete checkpoint: "
                                             f"{os.path.join(output_dir, LAST_CHECKPOINT)}"):
            if folds:
                return cross_validate(config, run, folds, output_dir, start_time)
            parts = patient_split_indices(run.labels, run.cohort.patient_ids, config["TEST_SIZE"],
                                          config["VAL_SIZE"], config["SEED"])
            return train_and_test(config, run, parts, output_dir, config["RESUME"], start_time)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(resume_hint(config["OUTPUT_DIR"])) from None
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def quiet_log(*_):
    pass


def resume_hint(output_dir):
    """What to do after Ctrl-C: where the last completed epoch is, and how to continue."""
    kept = [os.path.join(root, LAST_CHECKPOINT) for root, _, files in os.walk(output_dir)
            if LAST_CHECKPOINT in files] if os.path.isdir(output_dir) else []
    if not kept:
        return "no epoch was completed, so nothing is kept; run the command again"
    return (f"the last completed epoch is kept in {kept[0]}"
            + (f" (and {len(kept) - 1} more folds)" if len(kept) > 1 else "")
            + "; run the same command with --resume=True to continue from it")


def run_context(config, log, rank, world_size, device, normalisation=None):
    """Load the cohort and describe the run; checks that need the cohort happen here. Beats are
    normalised as `normalisation` says (an evaluated checkpoint's), by default NORMALISATION."""
    task = config["TASK"]
    data_dir = resolve_data_dir(config["DATA_DIR"], log=log)
    cohort = load_cohort(data_dir, allow_pickle=config["ALLOW_PICKLE"])
    for text in cohort.warnings:
        log(f"warning: {text}")
    if not cohort.patient_ids_given:
        log("warning: no cut_<GROUP>_patient_ids.npy files, so every beat counts as its own "
            "patient and the split is per beat (beats of one patient may land in train and test)")
    labels = cohort.labels(task)
    class_names = class_names_for(config, cohort, task)
    if config["BATCH_SIZE"] % world_size:
        raise UserError(f"BATCH_SIZE={config['BATCH_SIZE']} must be divisible by the "
                        f"{world_size} processes (each takes an equal share of every batch)")
    log(f"Data: {data_dir} ({cohort.spec['name']}), {len(labels)} beats x "
        f"{cohort.beats.shape[1]} leads x {cohort.beats.shape[2]} samples; task {task}: "
        f"{', '.join(class_names)}")
    if world_size > 1:
        log(f"Distributed: {world_size} processes ({dist.get_backend()}), "
            f"{config['BATCH_SIZE'] // world_size} beats per process per batch")
    return RunContext(cohort=cohort, data_dir=data_dir, labels=labels, class_names=class_names,
                      x_all=StandardisedBeats(cohort.beats, normalisation=normalisation
                                              or config["NORMALISATION"]), device=device,
                      rank=rank, world_size=world_size, log=log, task=task)


def checked_source(config, cohort):
    """INIT_FROM read and checked against this run's options and cohort (lvr.train.finetune)."""
    source = read_source(config["INIT_FROM"])
    check_source(config, source, cohort)
    return source


def prepare_run_folder(config, log):
    """OUTPUT_DIR ready for this run (rank 0): an earlier run is kept, a resumed one checked."""
    output_dir = config["OUTPUT_DIR"]
    if config["CV_FOLDS"] and config["RESUME"]:
        if not os.path.isdir(output_dir):
            raise UserError(f"--resume=True but {output_dir} does not exist; start without "
                            f"--resume")
        return
    prepare_output_dir(output_dir, config["RESUME"], log, finished_file=CV_SUMMARY
                       if config["CV_FOLDS"] else TEST_RESULTS, resume_file=LAST_CHECKPOINT)


def class_names_for(config, cohort, task):
    names = list(config["CLASS_NAMES"] or cohort.class_names(task))
    n_classes = int(cohort.labels(task).max()) + 1
    if len(names) != n_classes or n_classes != config["NUM_CLASSES"]:
        raise UserError(f"the cohort's {task} task has {n_classes} classes ({names}) but this "
                        f"script trains NUM_CLASSES={config['NUM_CLASSES']}; use the other "
                        f"training script or fix cohort.json")
    return names


def cross_validate(config, run, folds, output_dir, start_time):
    """k patient-level folds: each is the test set once; train/val come from the other folds."""
    cohort, labels, log = run.cohort, run.labels, run.log
    reports = []
    for k, parts in enumerate(cv_fold_parts(labels, cohort.patient_ids, folds, config["VAL_SIZE"],
                                            config["SEED"])):
        fold_dir = os.path.join(output_dir, f"fold_{k + 1}")
        finished = os.path.join(fold_dir, TEST_RESULTS)
        if os.path.exists(finished):
            with open(finished, encoding="utf-8") as handle:
                reports.append(json.load(handle))
            log(f"fold {k + 1}/{folds}: finished earlier, kept")
            continue
        log(f"\n===== fold {k + 1}/{folds} =====")
        resume = os.path.exists(os.path.join(fold_dir, LAST_CHECKPOINT))
        if run.writer:
            os.makedirs(fold_dir, exist_ok=True)
        reports.append(train_and_test(dict(config, SEED=config["SEED"] + k), run, parts,
                                      fold_dir, resume, time.time()))
    summary = cross_validation_summary(reports)
    summary.update({"folds": folds, "fold_dirs": [f"fold_{k + 1}" for k in range(folds)],
                    "config": config, "data_fingerprint": cohort.fingerprint(),
                    "wall_time_s": round(time.time() - start_time, 2)})
    if run.writer:
        write_json_atomic(os.path.join(output_dir, CV_SUMMARY), summary)
    log(f"\n{folds}-fold cross-validation (patient-level, stratified), mean +/- sd over folds:")
    for name, stats in summary["metrics"].items():
        if stats["mean"] is not None:
            log(f"  {name:<12} {stats['mean']:.4f} +/- {stats['sd']:.4f}  "
                f"(min {stats['min']:.4f}, max {stats['max']:.4f})")
    log(f"Per-fold results in {output_dir}/fold_*/, summary in {output_dir}/{CV_SUMMARY}")
    if run.writer and config["REPORT"]:
        write_report(output_dir, log=log)
    return summary


def cv_fold_parts(labels, patient_ids, folds, val_size, seed):
    """The beat indices {"train", "val", "test"} of each of `folds` patient-level folds: each
    fold is the test set once, validation (VAL_SIZE of all patients) and training come from the
    other folds. Lazy: a fold finished earlier costs nothing."""
    for k, test_idx in enumerate(patient_kfold_indices(labels, patient_ids, folds, seed)):
        rest = np.setdiff1d(np.arange(len(labels)), test_idx)
        inner = patient_split_indices(labels[rest], patient_ids[rest], 0.0,
                                      val_size / (1 - 1 / folds), seed + k)
        yield {"train": rest[inner["train"]], "val": rest[inner["val"]], "test": test_idx}


def cross_validation_summary(reports):
    """Mean, sd (ddof=1), min and max over folds of each headline metric."""
    metrics = {}
    for name in headline_metrics(reports[0]):
        values = [headline_metrics(r)[name] for r in reports]
        values = [v for v in values if v is not None]
        metrics[name] = ({"mean": float(np.mean(values)),
                          "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                          "min": float(np.min(values)), "max": float(np.max(values)),
                          "per_fold": values} if values else
                         {"mean": None, "sd": None, "min": None, "max": None, "per_fold": []})
    return {"metrics": metrics}


def train_and_test(config, run, parts, output_dir, resume, start_time):
    """Train on parts['train'], select on parts['val'], test on parts['test'] in output_dir."""
    cohort, labels = run.cohort, run.labels
    for name, idx in parts.items():
        run.log(split_summary(name, labels[idx], cohort.patient_ids[idx], len(labels)))
    tensors = {name: (run.x_all.rows(idx), torch.from_numpy(labels[idx]))
               for name, idx in parts.items()}
    if run.writer and not resume:
        write_json_atomic(os.path.join(output_dir, "split.json"), split_record(config, run, parts))
    check_threshold_computable(config, labels[parts["val"]], cohort.patient_ids[parts["val"]])
    source = None
    if config.get("INIT_FROM") and not resume:
        source = checked_test_overlap(config, run.init_from or checked_source(config, cohort),
                                      cohort, cohort.patient_ids[parts["test"]], run.log)
    outcome = fit(config, tensors["train"], tensors["val"], run.class_names, output_dir, resume,
                  in_channels=cohort.beats.shape[1], input_length=cohort.beats.shape[2],
                  device=run.device, rank=run.rank, world_size=run.world_size, log=run.log,
                  init_from=source)
    point = chosen_operating_point(config, run, tensors["val"], cohort.patient_ids[parts["val"]],
                                   os.path.join(output_dir, BEST_CHECKPOINT))
    report, prob = evaluate(config, run, tensors["test"], parts["test"], output_dir,
                            operating_point=point)
    report.update({"best_epoch": outcome.best_epoch, "best_val_acc": outcome.best_val_acc,
                   "selected_by": config["SELECT_BY"], "normalisation": config["NORMALISATION"],
                   "class_names": run.class_names, "processes": run.world_size})
    if run.writer:
        write_predictions(os.path.join(output_dir, "predictions.csv"), cohort, parts["test"],
                          labels[parts["test"]], prob, run.class_names)
        write_probability_figure(output_dir, report, labels[parts["test"]], prob,
                                 cohort.patient_ids[parts["test"]], run.class_names)
        write_cohort_tables(output_dir, run, {name: cohort.patient_ids[idx]
                                              for name, idx in parts.items()})
        write_run_outputs(config, run, output_dir, outcome, report, start_time)
    barrier(run.world_size)
    return report


def split_summary(name, labels, patient_ids, total):
    counts = np.bincount(labels, minlength=int(labels.max()) + 1 if len(labels) else 0)
    return (f"  {name:<5} {len(np.unique(patient_ids)):>5} patients {len(labels):>6} beats "
            f"({100 * len(labels) / total:4.1f}%)  per class: {counts.tolist()}")


def split_record(config, run, parts):
    """split.json: the patients of each split and what they were drawn from."""
    cohort = run.cohort
    return {"seed": config["SEED"], "test_size": config["TEST_SIZE"],
            "val_size": config["VAL_SIZE"], "task": config["TASK"], "data_dir": run.data_dir,
            "data_fingerprint": cohort.fingerprint(),
            "patient_ids_given": cohort.patient_ids_given,
            "cohort": cohort_geometry(cohort),
            **{name: sorted(set(cohort.patient_ids[idx].tolist())) for name, idx in parts.items()}}


def check_threshold_computable(config, y_val, val_patient_ids):
    """A THRESHOLD rule that reads the validation patients needs both classes among them; said
    before training, not after it."""
    if config["NUM_CLASSES"] != 2 or threshold_rule(config["THRESHOLD"])[0] in ("probability",
                                                                               "argmax"):
        return
    present = np.unique(y_val)
    if len(present) < 2:
        raise UserError(f"the validation split has patients of class {int(present[0])} only "
                        f"({len(np.unique(val_patient_ids))} patients), so THRESHOLD="
                        f"{config['THRESHOLD']} cannot be chosen on it; use a cohort with more "
                        f"patients, a larger VAL_SIZE, or a fixed --threshold=0.5")


def chosen_operating_point(config, run, val, val_patient_ids, checkpoint):
    """The 2-class operating point chosen by THRESHOLD on the validation patients with the best
    checkpoint's probabilities (lvr.stats.operating_point), stored in that checkpoint; None for more
    classes, which classify by argmax."""
    if config["NUM_CLASSES"] != 2:
        return None
    prob_val = best_probabilities(config, run, val[0], checkpoint)
    point = validation_operating_point(val[1].numpy(), prob_val, val_patient_ids,
                                       config["THRESHOLD"])
    if run.writer:
        add_to_checkpoint(checkpoint, operating_point=point)
    barrier(run.world_size)
    return point


def best_probabilities(config, run, x, checkpoint):
    """Class probabilities of the checkpoint's model for the beats `x`."""
    model, _ = load_checkpoint(checkpoint, map_location=run.device)
    logits = predict_logits(model, x, config["BATCH_SIZE"], run.device, run.rank, run.world_size)
    return torch.softmax(logits, 1).numpy()


def evaluate(config, run, test, index, output_dir, checkpoint=None, operating_point=None):
    """Test metrics of the best checkpoint (in output_dir unless `checkpoint` names another) on
    the cohort's beats `index` (their tensors: `test`), with patient-bootstrap CIs,
    patient-level metrics, the metrics at `operating_point` (2 classes; chosen before the test
    set was seen) and per subgroup and covariate level."""
    x_test, y_test = test
    cohort, y = run.cohort, y_test.numpy()
    patient_ids = cohort.patient_ids[index]
    prob = best_probabilities(config, run, x_test,
                              checkpoint or os.path.join(output_dir, BEST_CHECKPOINT))
    report = probability_report(y, prob, patient_ids, run.class_names, config["BOOTSTRAP"],
                                config["SEED"])
    report["operating_point"] = (
        operating_point_report(y, prob, patient_ids, operating_point, config["BOOTSTRAP"],
                               config["SEED"])
        if operating_point else argmax_note(len(run.class_names)))
    report["subgroups"] = subgroup_report(
        y, prob, patient_ids, np.asarray(cohort.spec["groups"])[cohort.group_index[index]],
        cohort.patient_table, performance_subgroups(cohort.spec),
        threshold=ARGMAX_THRESHOLD if (operating_point or {}).get("threshold") is None
        else operating_point["threshold"],
        n_boot=config["BOOTSTRAP"], seed=config["SEED"])
    return report, prob


def write_probability_figure(output_dir, report, y_true, prob, patient_ids, class_names,
                             test_set="test set"):
    """test_probabilities.png: the patients' probabilities by class, with the operating point
    (2 classes)."""
    point = report.get("operating_point") or {}
    if point.get("threshold") is None:
        return
    _, y_patient, prob_patient = patient_level_arrays(y_true, prob, patient_ids)
    plot_patient_probabilities(os.path.join(output_dir, "test_probabilities.png"), y_patient,
                               prob_patient[:, 1], point["threshold"], class_names,
                               title=f"Patient probabilities ({test_set})")


def write_cohort_tables(output_dir, run, split):
    """participant_flow.json and .png, characteristics.json and .md of the run's `split`
    (split.json's patient lists)."""
    cohort, task = run.cohort, run.task
    flow = participant_flow(cohort, task, split, run.class_names)
    write_json_atomic(os.path.join(output_dir, FLOW_FILE), flow)
    plot_flow(os.path.join(output_dir, "participant_flow.png"), flow)
    table = characteristics_table(cohort, task, split, run.class_names)
    write_json_atomic(os.path.join(output_dir, CHARACTERISTICS_FILE), table)
    with atomic_write(os.path.join(output_dir, "characteristics.md")) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(characteristics_markdown(table))


def probability_report(y_true, prob, patient_ids, class_names, bootstrap, seed):
    """test_eval_results.json of class probabilities: lvr.stats.metrics.test_report (patient-bootstrap
    CIs, patient_level) plus calibration, at beat and at patient level."""
    report = test_report(y_true, prob, patient_ids, class_names, bootstrap, seed)
    report["calibration"] = calibration_by_class(y_true, prob, patient_ids, class_names,
                                                 bootstrap, seed)
    if prob.shape[1] == 2:
        report["decision_curve"] = decision_curve(y_true, prob[:, 1], patient_ids,
                                                  n_boot=bootstrap, seed=seed)
    if "patient_level" in report:
        patients, y_patient, prob_patient = patient_level_arrays(y_true, prob, patient_ids)
        report["patient_level"]["calibration"] = calibration_by_class(
            y_patient, prob_patient, patients, class_names, bootstrap, seed)
    return report


def write_run_outputs(config, run, output_dir, outcome, report, start_time):
    """Curves, test results, figures and run.json of a finished run (rank 0 only)."""
    history = outcome.history
    for key in HISTORY_KEYS + EXTRA_HISTORY_KEYS:
        save_npy_atomic(os.path.join(output_dir, f"{key}.npy"), np.asarray(history[key]))
    plot_training_curves(output_dir, *(history[key] for key in HISTORY_KEYS),
                         best_epoch=outcome.best_epoch)
    write_test_outputs(output_dir, report, run.class_names)
    wall = time.time() - start_time
    point = report.get("operating_point") or {}
    write_json_atomic(os.path.join(output_dir, "run.json"),
                      {**run_record(config, run, wall), "init_from": outcome.init_from,
                       "operating_point": {key: point.get(key) for key in
                                           ("rule", "threshold", "chosen_on")}
                       if point.get("threshold") is not None else None})
    log_test_summary(report, run.class_names, output_dir, wall, run.log)
    if config["REPORT"]:
        write_report(output_dir, log=run.log)


def write_test_outputs(output_dir, report, class_names, test_set="test set"):
    """test_eval_results.json and the figures of a test report."""
    write_json_atomic(os.path.join(output_dir, TEST_RESULTS), report)
    write_test_figures(output_dir, report, class_names, test_set)


def write_test_figures(output_dir, report, class_names, test_set="test set"):
    """The ROC, confusion, reliability and decision-curve figures (and decision_curve.csv) of a
    test report."""
    plot_roc_curve(os.path.join(output_dir, "test_roc_curve.png"), report["fpr"], report["tpr"],
                   report["roc_auc"], class_names, title=f"ROC curve ({test_set})")
    plot_confusion_matrix(os.path.join(output_dir, "test_confusion_matrix.png"),
                          report["confusion_matrix"], class_names,
                          title=f"Confusion matrix ({test_set})")
    plot_reliability_diagram(os.path.join(output_dir, "test_calibration.png"),
                             report["calibration"], title=f"Calibration ({test_set})")
    if "decision_curve" in report:
        write_decision_curve_csv(os.path.join(output_dir, DECISION_CURVE_CSV),
                                 report["decision_curve"])
        plot_decision_curve(os.path.join(output_dir, "test_decision_curve.png"),
                            report["decision_curve"],
                            title=f"Decision curve ({test_set}, patients)")
    point = report.get("operating_point", {})
    if point.get("threshold") is not None and "patient_level" in point:
        plot_confusion_matrix(os.path.join(output_dir, "test_confusion_operating_point.png"),
                              point["patient_level"]["confusion_matrix"], class_names,
                              title=f"Patients at threshold {point['threshold']:.3f} ({test_set})")


def run_record(config, run, wall):
    """run.json: the configuration, data, machine and versions a run used."""
    cohort, device = run.cohort, run.device
    return {
        "config": config, "command": sys.argv, "data_dir": run.data_dir,
        "data_fingerprint": cohort.fingerprint(), "data_files": cohort.files,
        "demo_data": cohort.is_demo, "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "processes": run.world_size, "torch_threads": torch.get_num_threads(),
        "versions": library_versions(), "code": code_version(), "wall_time_s": round(wall, 2),
        "finished": datetime.datetime.now().isoformat(timespec="seconds")}


def format_ci(ci):
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "[n/a]"


def log_operating_point(point, log):
    """The console lines of a test report's operating_point block (2 classes)."""
    if not point or point.get("threshold") is None or "patient_level" not in point:
        return
    level = point["patient_level"]
    log(f"  at the operating point (threshold {point['threshold']:.4f}, {point['rule']}, chosen "
        f"on {point['chosen_on'].split(' (')[0]}), patient level:")
    for names in (("sensitivity", "specificity"), ("ppv", "npv")):
        log("    " + ", ".join(
            f"{name if len(name) > 3 else name.upper()} " +
            ("n/a" if level[name] is None else
             f"{level[name]:.3f} {format_ci(level.get(name + '_ci95'))}") for name in names))


def calibration_failure_notes(calibration):
    """One line per calibration value whose bootstrap had fits that failed (separated classes)."""
    notes = []
    for class_name, report in calibration.items():
        for name, failed in (report.get("bootstrap_failed") or {}).items():
            if not failed:
                continue
            ci = report.get(f"{name}_ci95") or [None, None]
            opened = [side for side, bound in zip(("lower", "upper"), ci, strict=True)
                      if bound is None]
            notes.append(f"{name.replace('_', ' ')} of {class_name}: the fit failed in {failed} "
                         f"of {report['bootstrap_resamples']} resamples (classes separated)"
                         + (f"; its {' and '.join(opened)} 95% bound is open" if opened else ""))
    return notes


def log_test_summary(report, class_names, output_dir, wall, log, title="Test set"):
    head = headline_metrics(report)
    source = (f", best checkpoint from epoch {report['best_epoch']}"
              if report.get("best_epoch") is not None else "")
    log(f"\n{title} ({report['n_patients']} patients, {report['n_beats']} beats){source}; "
        f"95% CIs resample patients:")
    if "patient_level" in report:
        level = headline_metrics(report["patient_level"])
        auc = level["roc_auc"]
        if auc is None:
            log(f"  patient level (report this): accuracy {level['accuracy']:.4f}")
        else:
            auc_ci = format_ci(report["patient_level"].get("roc_auc_ci95"))
            log(f"  patient level (report this): AUC {auc:.4f} {auc_ci}, accuracy "
                f"{level['accuracy']:.4f}")
        log_operating_point(report.get("operating_point"), log)
        log("  beat level (the original's metrics, at the argmax):")
    indent = "    " if "patient_level" in report else "  "
    for name in ("roc_auc", "accuracy", "f1", "sensitivity", "specificity"):
        value = head[name]
        label = "AUC (macro one-vs-rest)" if name == "roc_auc" and len(class_names) > 2 else name
        log(f"{indent}{label:<24} {value:.4f}  {format_ci(report.get(f'{name}_ci95'))}"
            if value is not None else f"{indent}{label:<24} n/a")
    if "patient_level" not in report:
        log_operating_point(report.get("operating_point"), log)
    if report.get("small_sample_warning"):
        log(f"  warning: {report['small_sample_warning']}")
    for line in calibration_failure_notes(report.get("calibration") or {}):
        log(f"  note: {line}")
    model = ", best_model.pth" if os.path.exists(os.path.join(output_dir, BEST_CHECKPOINT)) else ""
    log(f"Results in {output_dir}/ (test_eval_results.json, predictions.csv, figures{model}) "
        f"after {wall / 60:.1f} min.")
