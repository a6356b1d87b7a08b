"""Cross-validation (CV_FOLDS): patient-level folds, each the test set once, and their summary.

`cross_validate` runs the folds in fold_<k> folders (a fold finished earlier is kept, an
interrupted one resumed) and writes cv_summary.json: mean, sd, min and max over folds of each
headline metric. lvr.train.run says how one fold is trained and tested.
"""
import json
import os
import time

import numpy as np

from lvr.data.split import patient_kfold_indices, patient_split_indices
from lvr.report.html import write_report
from lvr.report.results import TEST_RESULTS
from lvr.run_folder import write_json_atomic
from lvr.stats.metrics import headline_metrics
from lvr.train.loop import LAST_CHECKPOINT

CV_SUMMARY = "cv_summary.json"


def cross_validate(train_fold, run, folds, output_dir, *, val_size, seed, run_config, start_time,
                   html_report):
    """`folds` patient-level folds of the cohort of `run` (lvr.train.run.RunContext), drawn by
    `seed` with `val_size` of the patients for validation; `train_fold(k, parts, fold_dir,
    resume)` trains and tests fold k and returns its test report. Returns the summary, which
    records `run_config` (the run's options); `html_report`: report.html of the whole run."""
    cohort, log = run.cohort, run.log
    reports = []
    for k, parts in enumerate(cv_fold_parts(run.labels, cohort.patient_ids, folds, val_size,
                                            seed)):
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
        reports.append(train_fold(k, parts, fold_dir, resume))
    summary = cross_validation_summary(reports)
    summary.update({"folds": folds, "fold_dirs": [f"fold_{k + 1}" for k in range(folds)],
                    "config": run_config, "data_fingerprint": cohort.fingerprint(),
                    "wall_time_s": round(time.time() - start_time, 2)})
    if run.writer:
        write_json_atomic(os.path.join(output_dir, CV_SUMMARY), summary)
    log_cross_validation(summary, folds, output_dir, log)
    if run.writer and html_report:
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


def log_cross_validation(summary, folds, output_dir, log):
    """The console lines of a cross-validation summary."""
    log(f"\n{folds}-fold cross-validation (patient-level, stratified), mean +/- sd over folds:")
    for name, stats in summary["metrics"].items():
        if stats["mean"] is not None:
            log(f"  {name:<12} {stats['mean']:.4f} +/- {stats['sd']:.4f}  "
                f"(min {stats['min']:.4f}, max {stats['max']:.4f})")
    log(f"Per-fold results in {output_dir}/fold_*/, summary in {output_dir}/{CV_SUMMARY}")
