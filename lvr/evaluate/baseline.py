"""The conventional ECG-measurement baseline of a finished training run, on the run's own split.

`run_feature_baseline(config)` reads TRAIN_DIR/split.json, loads the cohort the run was trained
on (its fingerprint must match), measures every beat of the training and test patients
(lvr.measure.ecg_features), fits an L2-penalised logistic regression on the training patients' beats
only (NaN imputed with the training medians, features standardised on the training beats, the
penalty chosen by cross-validation grouped by patient), and scores the test beats. It writes
what a training run writes for its test set, so compare_runs.py pairs it with the network:
predictions.csv, test_eval_results.json (patient-bootstrap CIs, patient_level, calibration),
the ROC, confusion and reliability figures, plus coefficients.csv, baseline_model.json,
measurements.npz (every measured beat's features: MEASUREMENTS of a later run on another split
of the same cohort reuses them instead of delineating again), run.json and a copy of split.json.
"""
import csv
import json
import os
import shutil
import time
import warnings

import numpy as np

from lvr.data.cohort import load_cohort
from lvr.config import UserError
from lvr.measure.delineation import delineation_lead_names
from lvr.measure.ecg_features import cohort_features
from lvr.prepare.formats import RecordRejected
from lvr.prepare.record_beats import Millivolts, checked_amplitude
from lvr.report.results import (TEST_RESULTS, counted, log_test_summary, probability_report,
                                write_test_outputs)
from lvr.stats.operating_point import (argmax_note, operating_point_report,
                                       validation_operating_point)
from lvr.report.predictions import write_predictions
from lvr.report.html import write_report
from lvr.run_folder import (atomic_write, output_lock, prepare_output_dir, run_record,
                            write_json_atomic)
from lvr.train.finished_run import read_finished_run, recorded_cohort

PENALTY_RANGE = (1e-4, 1e4)   # inverse penalty strengths C tried, log-spaced
OUTPUT_SUFFIX = "_ecg_features"
PLAUSIBLE_MV = (0.1, 20.0)   # prepare_data.py's PLAUSIBLE_MV: median lead peak-to-peak in mV
UNIT_CHECK_BEATS = 64        # beats whose amplitude check_millivolts looks at
MEASUREMENTS_FILE = "measurements.npz"


def stored_measurements(path, cohort, index, delineation):
    """(features, names, methods) of the cohort rows `index` from an earlier run's
    measurements.npz, refused unless it measured this cohort with the same delineation leads."""
    if os.path.isdir(path):
        path = os.path.join(path, MEASUREMENTS_FILE)
    if not os.path.isfile(path):
        raise UserError(f"--measurements={path}: file not found; give the {MEASUREMENTS_FILE} "
                        f"of an earlier baseline run (or its folder), or leave it out")
    with np.load(path, allow_pickle=False) as stored:
        if str(stored["data_fingerprint"]) != cohort.fingerprint():
            raise UserError(f"--measurements={path} measured another cohort (fingerprint "
                            f"{str(stored['data_fingerprint'])[:12]}, this one "
                            f"{cohort.fingerprint()[:12]}); leave --measurements out")
        if str(stored["delineation_leads"]) != str(delineation):
            raise UserError(f"--measurements={path} was delineated on "
                            f"{stored['delineation_leads']}, this run asks for {delineation}; "
                            f"pass the same --delineation_leads or leave --measurements out")
        position = {int(row): i for i, row in enumerate(stored["index"])}
        missing = [int(row) for row in index if int(row) not in position]
        if missing:
            raise UserError(f"--measurements={path} lacks {len(missing)} of the beats this split "
                            f"needs; leave --measurements out to measure them")
        rows = [position[int(row)] for row in index]
        return (stored["features"][rows], [str(n) for n in stored["names"]],
                [str(m) for m in stored["methods"][rows]])


def write_measurements(path, cohort, index, features, names, methods, delineation):
    with atomic_write(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, features=features, names=np.asarray(names), index=np.asarray(index),
                 methods=np.asarray(methods), data_fingerprint=cohort.fingerprint(),
                 delineation_leads=str(delineation))


def split_indices(cohort, split, split_path, data_dir):
    """Beat indices of the train, val and test patients; every listed patient must be there."""
    ids = cohort.patient_ids
    present = set(ids.tolist())
    parts = {}
    for name in ("train", "val", "test"):
        listed = [str(p) for p in split.get(name, [])]
        absent = [p for p in listed if p not in present]
        if absent:
            raise UserError(f"{len(absent)} {name} patient(s) of {split_path} are not in "
                            f"{data_dir} (e.g. {', '.join(absent[:3])}); give the cohort the run "
                            f"was trained on")
        parts[name] = np.flatnonzero(np.isin(ids, np.asarray(listed, dtype=str)))
    return parts


def imputed(features, medians):
    """NaN measurements replaced by the training medians (a feature NaN in every training beat
    becomes 0)."""
    return np.where(np.isnan(features), medians[None, :], features)


def fit_baseline(features, labels, patient_ids, folds=5, n_penalties=10, seed=42):
    """(scaler, model, medians) fitted on these beats alone: NaN -> median, standardised,
    LogisticRegressionCV (L2; lbfgs, multinomial for more than two classes) with C chosen by
    ROC AUC over folds grouped by patient and stratified by class."""
    from sklearn.linear_model import LogisticRegressionCV  # lazy: sklearn loads in 1 s
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.preprocessing import StandardScaler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # an all-NaN column: median NaN
        medians = np.nanmedian(features, axis=0)
    medians = np.where(np.isnan(medians), 0.0, medians)
    x = imputed(features, medians)
    scaler = StandardScaler().fit(x)
    patients, first = np.unique(patient_ids, return_index=True)
    per_class = np.bincount(labels[first])
    k = int(min(folds, per_class[per_class > 0].min()))
    if k < 2 or (per_class > 0).sum() < 2:
        raise UserError(f"the training patients ({per_class.tolist()} per class) cannot be split "
                        f"into 2 patient folds with every class in each; the penalty cannot be "
                        f"chosen")
    splits = list(StratifiedGroupKFold(k, shuffle=True, random_state=seed)
                  .split(x, labels, groups=patient_ids))
    scoring = "roc_auc" if labels.max() == 1 else "roc_auc_ovr"
    model = LogisticRegressionCV(Cs=np.logspace(np.log10(PENALTY_RANGE[0]),
                                                np.log10(PENALTY_RANGE[1]), n_penalties),
                                 cv=splits, scoring=scoring, max_iter=5000,
                                 random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # convergence warnings at the weakest penalties
        model.fit(scaler.transform(x), labels)
    return scaler, model, medians


def predicted(scaler, model, medians, features):
    return model.predict_proba(scaler.transform(imputed(features, medians)))


def coefficient_rows(model, names, class_names):
    """(header, rows) of coefficients.csv, sorted by the largest |coefficient| of the row."""
    coef = np.atleast_2d(model.coef_)
    columns = ([f"coef_{class_names[-1]}"] if coef.shape[0] == 1 else
               [f"coef_{name}" for name in class_names])
    order = np.argsort(-np.abs(coef).max(axis=0), kind="stable")
    return ["feature", *columns], [[names[j], *coef[:, j]] for j in order]


def write_csv(path, header, rows):
    with atomic_write(path) as temporary, open(temporary, "w", newline="",
                                                encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([[r if isinstance(r, str) else f"{r:.6g}" for r in row] for row in rows])


def run_feature_baseline(config, log=print):
    """The baseline of TRAIN_DIR's split, as the script's configuration says; returns the test
    report."""
    start_time = time.time()
    train_dir = config["TRAIN_DIR"]
    run = read_finished_run(train_dir, checkpoint=None)
    data_dir = config["DATA_DIR"] or recorded_cohort(run, log=log)
    cohort = run_cohort(run, data_dir, config["ALLOW_PICKLE"])
    task = run.split["task"]
    labels = cohort.labels(task)
    class_names = run_class_names(train_dir, cohort, task)
    parts = split_indices(cohort, run.split, run.split_path, data_dir)
    check_millivolts(cohort.beats, np.concatenate(list(parts.values())), data_dir)
    output_dir = config["OUTPUT_DIR"] or os.path.normpath(train_dir) + OUTPUT_SUFFIX
    if os.path.realpath(output_dir) == os.path.realpath(train_dir):
        raise UserError(f"--output_dir={output_dir} is the training run itself; choose another "
                        f"folder or leave --output_dir out ({train_dir}{OUTPUT_SUFFIX})")
    log(f"Data: {data_dir} ({cohort.spec['name']}), task {task}: {', '.join(class_names)}; "
        f"split of {train_dir}: " + ", ".join(
            f"{name} {counted(len(np.unique(cohort.patient_ids[idx])), 'patient')} / "
            f"{counted(len(idx), 'beat')}" for name, idx in parts.items()))
    prepare_output_dir(output_dir, log=log, finished_file=TEST_RESULTS)
    with output_lock(output_dir):
        features, names, fallback = measured_features(
            cohort, parts, output_dir, delineation_leads=config["DELINEATION_LEADS"],
            measurements=config["MEASUREMENTS"], workers=config["WORKERS"], log=log)
        report = scored_baseline(
            features, names, labels, cohort.patient_ids, parts, class_names, output_dir,
            threshold_rule=network_threshold_rule(train_dir), folds=config["PENALTY_FOLDS"],
            n_penalties=config["PENALTIES"], bootstrap=config["BOOTSTRAP"],
            seed=config["SEED"], log=log)
        prob, coefficients = report.pop("probabilities"), report.pop("coefficient_rows")
        report["baseline_of"] = train_dir
        write_predictions(os.path.join(output_dir, "predictions.csv"), cohort, parts["test"],
                          labels[parts["test"]], prob, class_names)
        shutil.copyfile(run.split_path, os.path.join(output_dir, "split.json"))
        write_test_outputs(output_dir, report, class_names, test_set="test set, ECG features")
        wall = time.time() - start_time
        write_json_atomic(os.path.join(output_dir, "run.json"), run_record(
            config, wall, cohort=cohort, data_dir=data_dir, baseline_of=train_dir,
            beats={name: int(len(idx)) for name, idx in parts.items()},
            delineation_fallback_beats=int(fallback)))
        log_test_summary(report, class_names, output_dir, wall, log,
                         title="Test set, ECG-measurement baseline")
        if config["REPORT"]:
            write_report(output_dir, log=log)
        log("Largest standardised coefficients (per SD of the feature; coefficients.csv):")
        for row in coefficients[:10]:
            log(f"  {row[0]:<10} " + "  ".join(f"{v:+.3f}" for v in row[1:]))
    return report


def check_millivolts(beats, index, data_dir):
    """A UserError unless beats[index] look like mV, the unit of every measurement: the
    amplitude check prepare_data.py applies to each record (checked_amplitude, PLAUSIBLE_MV) on
    the beat of median amplitude among UNIT_CHECK_BEATS spread over `index`. A cohort stored in
    uV trains as well as in mV (every beat is standardised), but its R waves would measure
    1000 "mV"."""
    index = np.asarray(index)
    if index.size == 0:
        return
    spread = np.linspace(0, len(index) - 1, min(len(index), UNIT_CHECK_BEATS)).astype(int)
    sample = np.asarray(beats[np.unique(index[spread])], dtype=np.float64)
    typical = sample[np.argsort(np.median(np.ptp(sample, axis=2), axis=1))[len(sample) // 2]]
    stored = Millivolts(typical.T, 0.0, "the stored values", 1.0, "npy", [])
    try:
        checked_amplitude(typical.T, stored, PLAUSIBLE_MV, flat_mv=0.0)
    except RecordRejected as rejected:
        raise UserError(f"{data_dir}: the beats are not in mV, which the ECG measurements "
                        f"need ({rejected}). Prepare the cohort again in mV with "
                        f"prepare_data.py and train the run on it") from None


def run_cohort(run, data_dir, allow_pickle):
    """The cohort `run` (a FinishedRun) was trained on, read from `data_dir`, or a clear error."""
    cohort = load_cohort(data_dir, allow_pickle=allow_pickle)
    if cohort.fingerprint() != run.split["data_fingerprint"]:
        raise UserError(f"the data in {data_dir} is not the data the run in {run.folder} was "
                        f"trained on (fingerprint {cohort.fingerprint()[:12]}, the run's "
                        f"{run.split['data_fingerprint'][:12]}, from "
                        f"{run.split.get('data_dir')}); pass --data_dir with the run's cohort")
    return cohort


def measured_features(cohort, parts, output_dir, delineation_leads, measurements, workers, log):
    """(features of the train, val and test beats in that order, their names, beats measured
    with standard intervals): measured, or reused from `measurements`; written to output_dir."""
    measured = np.concatenate([parts["train"], parts["val"], parts["test"]])
    delineation = delineation_lead_names(delineation_leads)
    if measurements:
        features, names, methods = stored_measurements(measurements, cohort, measured,
                                                       delineation)
        log(f"Measurements of {measurements} reused (same cohort, same delineation leads)")
    else:
        features, names, methods = cohort_features(
            cohort.beats, measured, cohort.spec["sampling_rate"],
            lead_names=list(cohort.spec["leads"]),
            r_peak_sample=cohort.spec.get("r_peak_sample"), workers=workers, leads=delineation)
    write_measurements(os.path.join(output_dir, MEASUREMENTS_FILE), cohort, measured,
                       features, names, methods, delineation)
    fallback = sum(m == "fallback" for m in methods)
    log(f"Measured {len(names)} features of {counted(len(measured), 'beat')} (delineation: "
        f"{len(measured) - fallback} delineated, {fallback} standard intervals around R); "
        f"{np.isnan(features).mean():.1%} of the values missing, imputed with the "
        f"training medians")
    return features, names, fallback


def scored_baseline(features, names, labels, patient_ids, parts, class_names, output_dir,
                    threshold_rule, folds, n_penalties, bootstrap, seed, log):
    """The test report of the regression fitted on the training rows of `features` (train, val,
    test in that order), with its operating point chosen on the validation rows by
    `threshold_rule`; its "probabilities" and "coefficient_rows" are for the caller to pop.
    Writes coefficients.csv and baseline_model.json."""
    n_train, n_val = len(parts["train"]), len(parts["val"])
    x = {"train": features[:n_train], "val": features[n_train:n_train + n_val],
         "test": features[n_train + n_val:]}
    scaler, model, medians = fit_baseline(x["train"], labels[parts["train"]],
                                          patient_ids[parts["train"]], folds, n_penalties, seed)
    penalty = float(np.atleast_1d(model.C_)[0])
    log(f"Logistic regression (L2) on {counted(n_train, 'training beat')}; C = {penalty:.3g} "
        f"chosen by {next(iter(model.scores_.values())).shape[0]}-fold patient-grouped "
        f"cross-validation (ROC AUC)")
    val_report, prob_val = None, None
    if n_val:
        prob_val = predicted(scaler, model, medians, x["val"])
        val_report = probability_report(labels[parts["val"]], prob_val,
                                        patient_ids[parts["val"]], class_names, 0, seed)
        log(f"  validation patients (not used for fitting): beat AUC "
            f"{auc_of(val_report):.4f}")
    prob = predicted(scaler, model, medians, x["test"])
    test = parts["test"]
    report = probability_report(labels[test], prob, patient_ids[test], class_names, bootstrap,
                                seed)
    report["operating_point"] = baseline_operating_point(
        labels, patient_ids, parts, prob_val, prob, class_names, threshold_rule, bootstrap,
        seed, log)
    report.update({"class_names": class_names, "model": "ecg_features_logistic_l2",
                   "penalty_C": penalty,
                   "validation_roc_auc": auc_of(val_report) if val_report else None})
    header, rows = coefficient_rows(model, names, class_names)
    write_csv(os.path.join(output_dir, "coefficients.csv"), header, rows)
    write_json_atomic(os.path.join(output_dir, "baseline_model.json"), {
        "features": names, "training_medians": medians.tolist(),
        "scaler_mean": scaler.mean_.tolist(), "scaler_scale": scaler.scale_.tolist(),
        "classes": class_names, "coef": np.atleast_2d(model.coef_).tolist(),
        "intercept": np.atleast_1d(model.intercept_).tolist(), "C": penalty})
    return {**report, "probabilities": prob, "coefficient_rows": rows}


def auc_of(report):
    auc = report["roc_auc"]
    return auc["macro"] if isinstance(auc, dict) else auc


def run_class_names(train_dir, cohort, task):
    """The class names of the run (its test_eval_results.json), so predictions.csv has the same
    prob_<class> columns; the cohort's names when the run did not record them."""
    path = os.path.join(train_dir, TEST_RESULTS)
    names = cohort.class_names(task)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            recorded = json.load(handle).get("class_names")
        if recorded and len(recorded) == len(names):
            names = [str(name) for name in recorded]
    return names


def network_threshold_rule(train_dir):
    """The THRESHOLD rule the network's run used (its run.json); youden when not recorded."""
    run_path = os.path.join(train_dir, "run.json")
    if not os.path.exists(run_path):
        return "youden"
    with open(run_path, encoding="utf-8") as handle:
        return json.load(handle).get("config", {}).get("THRESHOLD", "youden")


def baseline_operating_point(labels, patient_ids, parts, prob_val, prob, class_names,
                             threshold_rule, bootstrap, seed, log):
    """The test report's operating_point block: the network run's `threshold_rule`, chosen on
    the same validation patients with the baseline's probabilities; argmax for more than 2
    classes, or without validation patients of both classes (said so)."""
    if len(class_names) != 2:
        return argmax_note(len(class_names))
    val = parts["val"]
    if prob_val is None or len(np.unique(labels[val])) < 2:
        note = ("the validation patients do not hold both classes, so no operating point is "
                "chosen; sensitivity and specificity are those of the argmax")
        log(f"note: {note}")
        return {"rule": "argmax", "threshold": None, "note": note}
    point = validation_operating_point(labels[val], prob_val, patient_ids[val], threshold_rule)
    test = parts["test"]
    return operating_point_report(labels[test], prob, patient_ids[test], point, bootstrap, seed)
