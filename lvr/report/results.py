"""A scored test set -> its report: test_eval_results.json, its figures and its console lines.

Whatever gave the class probabilities (a trained network, an external evaluation, the
measurement baseline), `probability_report` turns them into the same report, and
`write_test_outputs` and `log_test_summary` show it the same way.
"""
import os

from lvr.report.training_figures import (plot_confusion_matrix, plot_decision_curve,
                                         plot_patient_probabilities, plot_reliability_diagram,
                                         plot_roc_curve)
from lvr.run_folder import write_json_atomic
from lvr.stats.calibration import calibration_by_class
from lvr.stats.decision_curve import decision_curve, write_decision_curve_csv
from lvr.stats.metrics import headline_metrics, patient_level_arrays, test_report

TEST_RESULTS = "test_eval_results.json"
DECISION_CURVE_CSV = "decision_curve.csv"


def probability_report(y_true, prob, patient_ids, class_names, bootstrap, seed):
    """test_eval_results.json of class probabilities: lvr.stats.metrics.test_report
    (patient-bootstrap CIs, patient_level) plus calibration, at beat and at patient level."""
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


def write_test_outputs(output_dir, report, class_names, test_set="test set"):
    """test_eval_results.json and the figures of a test report."""
    write_json_atomic(os.path.join(output_dir, TEST_RESULTS), report)
    write_test_figures(output_dir, report, class_names, test_set)


def write_test_figures(output_dir, report, class_names, test_set="test set"):
    """The ROC, confusion, reliability and decision-curve figures (and decision_curve.csv) of a
    test report; the first three draw the patient level (the headline's) left of the beats'."""
    patients = report.get("patient_level")
    plot_roc_curve(os.path.join(output_dir, "test_roc_curve.png"), report["fpr"], report["tpr"],
                   report["roc_auc"], class_names, title=f"ROC curve ({test_set})",
                   patients=patients)
    plot_confusion_matrix(os.path.join(output_dir, "test_confusion_matrix.png"),
                          report["confusion_matrix"], class_names,
                          title=f"Confusion matrix at the argmax ({test_set})",
                          patients=patients["confusion_matrix"] if patients else None)
    plot_reliability_diagram(os.path.join(output_dir, "test_calibration.png"),
                             report["calibration"], title=f"Calibration ({test_set})",
                             patients=(patients or {}).get("calibration"))
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


def format_ci(ci):
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "[n/a]"


def counted(count, noun, plural=None):
    """'1 patient', '3 patients' (`plural`: the plural where it is not noun + 's')."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


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


def log_test_summary(report, class_names, output_dir, wall, log, title="Test set",
                     model_file=None):
    """The console summary of a test report; `model_file` (a file name in `output_dir`, the
    trained model) is listed among the results where it exists."""
    head = headline_metrics(report)
    source = (f", best checkpoint from epoch {report['best_epoch']}"
              if report.get("best_epoch") is not None else "")
    log(f"\n{title} ({counted(report['n_patients'], 'patient')}, "
        f"{counted(report['n_beats'], 'beat')}){source}; "
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
    model = (f", {model_file}" if model_file
             and os.path.exists(os.path.join(output_dir, model_file)) else "")
    log(f"Results in {output_dir}/ (test_eval_results.json, predictions.csv, figures{model}) "
        f"after {wall / 60:.1f} min.")
