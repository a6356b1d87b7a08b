"""The rows and cards report.html shows of a folder's results (lvr.report.html): the headline
cards, the discrimination, operating-point, calibration, decision-curve and subgroup tables of a
test report, and the lead statistics and checks of a saliency analysis.

Each number names its level (patients, the headline's, or beats) and its threshold (all
thresholds, the operating point's value and rule, or the argmax); a value the page cannot show
(None, inf, nan, an open CI bound) is a dash, and a note or a cell's title says why.
"""
import math

from lvr.report.results import counted
from lvr.stats.operating_point import is_fixed_rule

ARGMAX_METRICS = ("accuracy", "sensitivity", "specificity", "f1")
OPERATING_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1")
DECISION_ROWS = (0.1, 0.2, 0.3, 0.4, 0.5)      # thresholds tabulated from the decision curve
DASH = "\u2013"                                 # a value the page cannot show; a note says why


def finite(value):
    return value is not None and math.isfinite(value)


def formatted_number(value, digits=3):
    """`value` with `digits` decimals, or a dash where there is none (None, inf, nan)."""
    return f"{value:.{digits}f}" if finite(value) else DASH


def with_ci(value, ci, digits=3):
    """'0.912 [0.850, 0.960]'; a bound that is open or not finite (None in the JSON) is a dash,
    which open_bound_note explains."""
    if not finite(value):
        return DASH
    if not ci:
        return formatted_number(value, digits)
    return f"{value:.{digits}f} [{formatted_number(ci[0], digits)}, " \
           f"{formatted_number(ci[1], digits)}]"


def open_bound_note(values, name):
    """Why the CI of `name` in `values` (one calibration class's dict) shows a dash, or ""."""
    ci = values.get(f"{name}_ci95")
    if not finite(values.get(name)):
        return f"{name.replace('_', ' ')}: not computable (the classes are separated)"
    if ci and all(finite(bound) for bound in ci):
        return ""
    failed = (values.get("bootstrap_failed") or {}).get(name)
    why = (f"the logistic fit failed in {failed} of {values.get('bootstrap_resamples')} "
           f"bootstrap resamples (classes separated)" if failed else
           "too few bootstrap resamples gave a value")
    if not ci:
        return f"{name.replace('_', ' ')}: no 95% CI, {why}"
    sides = [side for side, bound in zip(("lower", "upper"), ci, strict=True)
             if not finite(bound)]
    return f"{name.replace('_', ' ')}: {' and '.join(sides)} 95% bound open (shown as " \
           f"{DASH}): {why}"


def p_value(p):
    if p is None:
        return "not computable"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def auc_of(metrics):
    auc = metrics.get("roc_auc")
    return auc.get("macro") if isinstance(auc, dict) else auc


def is_multiclass(results):
    return len((results or {}).get("class_names") or []) > 2 or \
        isinstance((results or {}).get("roc_auc"), dict)


def threshold_text(point):
    """'0.554 (youden, chosen on validation)' or '0.300 (0.3, fixed)' of an operating point."""
    how = "fixed" if is_fixed_rule(point["rule"]) else "chosen on validation"
    return f"{point['threshold']:.3f} ({point['rule']}, {how})"


def has_threshold(results):
    point = (results or {}).get("operating_point") or {}
    return point.get("threshold") is not None and "patient_level" in point


def metric_label(name, multi):
    if name == "roc_auc":
        return "AUC (macro one-vs-rest)" if multi else "AUC"
    if name == "f1":
        return "F1 (macro)"
    return f"{name} (macro)" if multi and name in ("sensitivity", "specificity") else name


def discrimination_rows(results):
    """Rows {level, threshold, metric, value} of the Discrimination table: per level (patients
    first, the headline's, then beats) the AUC over all thresholds, the patients' sensitivity
    and specificity at the operating point, and the argmax metrics, each row naming its level and
    its threshold so that two specificities of one page are never confused."""
    if not results:
        return []
    multi = is_multiclass(results)
    argmax = "argmax" if multi else "argmax (0.5)"
    point = results.get("operating_point") or {}
    levels = ([("patients", results["patient_level"], point.get("patient_level"))]
              if "patient_level" in results else []) + [("beats", results, None)]
    rows = []
    for level, metrics, at_point in levels:
        rows.append({"level": level, "threshold": "all thresholds",
                     "metric": metric_label("roc_auc", multi),
                     "value": with_ci(auc_of(metrics), metrics.get("roc_auc_ci95"))})
        if at_point and has_threshold(results):
            rows += [{"level": level, "threshold": threshold_text(point), "metric": name,
                      "value": with_ci(at_point[name], at_point.get(f"{name}_ci95"))}
                     for name in ("sensitivity", "specificity")]
        rows += [{"level": level, "threshold": argmax, "metric": metric_label(name, multi),
                  "value": with_ci(metrics.get(name), metrics.get(f"{name}_ci95"))}
                 for name in ARGMAX_METRICS]
    return rows


def result_cards(results):
    """(label, value, note) cards of a test report: patients, the patients' AUC, their
    sensitivity and specificity (at the operating point, or macro at the argmax) and, for 2
    classes, their calibration slope."""
    level = results.get("patient_level", results)
    multi = is_multiclass(results)
    cards = [("Patients tested", str(results.get("n_patients")), ""),
             ("Patient-level macro AUC [95% CI]" if multi else "Patient-level AUC [95% CI]",
              with_ci(auc_of(level), level.get("roc_auc_ci95")), "")]
    point = results.get("operating_point") or {}
    if has_threshold(results):
        at = point["patient_level"]
        cards.append((f"Sensitivity / specificity at {threshold_text(point)}, patients",
                      f"{with_ci(at['sensitivity'], at.get('sensitivity_ci95'))} / "
                      f"{with_ci(at['specificity'], at.get('specificity_ci95'))}", ""))
    elif multi:
        cards.append(("Macro sensitivity / specificity at the argmax, patients",
                      f"{with_ci(level.get('sensitivity'), level.get('sensitivity_ci95'))} / "
                      f"{with_ci(level.get('specificity'), level.get('specificity_ci95'))}", ""))
    calibration = level.get("calibration") or {}
    if calibration and not multi:
        name, values = list(calibration.items())[-1]
        cards.append((f"Calibration slope of {name} (patients)",
                      with_ci(values.get("calibration_slope"),
                              values.get("calibration_slope_ci95")),
                      open_bound_note(values, "calibration_slope")))
    return cards


def saliency_cards(saliency):
    """Key-lead cards of a saliency analysis: the patients' key leads, the beats' beside."""
    cards = []
    for group, stats in (saliency or {}).items():
        if not isinstance(stats, dict) or not stats.get("top3_leads"):
            continue
        beats = ", ".join(stats["top3_leads"])
        patients = (stats.get("patient_level") or {}).get("top3_leads")
        if patients:
            cards.append((f"Key leads, {group} (patients)",
                          f"{', '.join(patients)} (beats: {beats})", ""))
        else:
            cards.append((f"Key leads, {group} (beats)", beats, ""))
    return cards


def headline_cards(results, cv, saliency):
    """(label, value, note) cards of the page's opening box; a note says why a value is a
    dash."""
    cards = result_cards(results) if results else []
    if cv:
        auc = cv["metrics"].get("roc_auc", {})
        if auc.get("mean") is not None:
            cards.append((f"AUC over {counted(cv['folds'], 'fold')} (mean ± sd)",
                          f"{formatted_number(auc['mean'])} ± {formatted_number(auc['sd'])}",
                          ""))
    return cards + saliency_cards(saliency)


def operating_point_section(results):
    point = (results or {}).get("operating_point")
    if not point or is_multiclass(results):
        return None   # a multi-class model calls the argmax: the Discrimination section says so
    if not has_threshold(results):
        return {"note": point.get("note", "no threshold"), "rows": [], "levels": []}
    levels = []
    for level in ("patient_level", "beat_level"):
        at = point[level]
        (tn, fp), (fn, tp) = at["confusion_matrix"]
        levels.append({"name": "patients" if level == "patient_level" else "beats",
                       "rows": [(name.upper() if len(name) == 3 else metric_label(name, False),
                                 with_ci(at[name], at.get(f"{name}_ci95")))
                                for name in OPERATING_METRICS],
                       "counts": f"TP {tp}, FP {fp}, FN {fn}, TN {tn}"})
    validation = point.get("validation") or {}
    return {"threshold": f"{point['threshold']:.4f}", "rule": point["rule"],
            "at": threshold_text(point), "fixed": is_fixed_rule(point["rule"]),
            "chosen_on": point.get("chosen_on", ""), "levels": levels,
            "validation": (f"{counted(validation['n_patients'], 'validation patient')}: "
                           f"sensitivity {validation['sensitivity']:.3f}, specificity "
                           f"{validation['specificity']:.3f}") if validation else ""}


def calibration_section(results):
    """The calibration table's rows (patients first) and the notes on its dashes, one per
    reason with the levels and classes it applies to."""
    rows, notes = [], {}
    for level_name, level in (("patients", (results or {}).get("patient_level")),
                              ("beats", results)):
        for name, values in ((level or {}).get("calibration") or {}).items():
            rows.append({"level": level_name, "class": name,
                         "intercept": with_ci(values.get("calibration_intercept"),
                                              values.get("calibration_intercept_ci95")),
                         "slope": with_ci(values.get("calibration_slope"),
                                          values.get("calibration_slope_ci95")),
                         "brier": with_ci(values.get("brier"), values.get("brier_ci95"))})
            for key in ("calibration_intercept", "calibration_slope", "brier"):
                note = open_bound_note(values, key)
                if note:
                    notes.setdefault(note, []).append(f"{level_name} {name}")
    return {"rows": rows, "notes": [f"{note} ({', '.join(where)})"
                                    for note, where in notes.items()]}


def decision_section(results):
    curve = (results or {}).get("decision_curve")
    if not curve:
        return None
    rows = []
    for target in DECISION_ROWS:
        matches = [i for i, t in enumerate(curve["thresholds"]) if abs(t - target) < 1e-9]
        if not matches:
            continue
        i = matches[0]
        low = curve.get("net_benefit_model_ci95_low")
        high = curve.get("net_benefit_model_ci95_high")
        rows.append({"threshold": f"{target:.2f}",
                     "model": with_ci(curve["net_benefit_model"][i],
                                      [low[i], high[i]] if low else None),
                     "all": formatted_number(curve["net_benefit_treat_all"][i]),
                     "avoided": formatted_number(curve["net_interventions_avoided_per_100"][i], 1)})
    ranges = ", ".join(f"{a:.2f}-{b:.2f}" for a, b in curve.get("useful_threshold_ranges") or [])
    return {"rows": rows, "ranges": ranges or "none",
            "prevalence": formatted_number(curve.get("prevalence")),
            "patients": counted(curve.get("n_patients"), "patient")}


def subgroup_cell(values, name, reasons):
    """{"text", "title", "mark"} of one metric of a subgroup row: the value with its CI, or a
    dash whose reason is the cell's title and a numbered footnote (`reasons`, appended to)."""
    if name in values:
        return {"text": with_ci(values[name], values.get(f"{name}_ci95")), "title": "",
                "mark": ""}
    reason = values.get("reason") or values.get("note") or "not computed"
    if reason not in reasons:
        reasons.append(reason)
    return {"text": DASH, "title": reason, "mark": str(reasons.index(reason) + 1)}


def subgroup_section(results):
    """The subgroup table (lvr.stats.subgroups.subgroup_report): analysis subgroups, groups,
    then each covariate level; its metric columns, and the footnotes of its dashes."""
    report = (results or {}).get("subgroups") or {}
    metrics = report.get("metrics") or ["roc_auc", "sensitivity", "specificity"]
    threshold = report.get("threshold")
    multi = is_multiclass(results) or (threshold is None and metrics == ["roc_auc"])
    entries = [("subgroup", name, values) for name, values in
               (report.get("subgroups") or {}).items()]
    entries += [("group", name, values) for name, values in (report.get("groups") or {}).items()]
    for column, covariate in (report.get("covariates") or {}).items():
        entries += [(column, level, values)
                    for level, values in (covariate.get("levels") or {}).items()]
    reasons, rows = [], []
    for kind, name, values in entries:
        counts = values.get("n_positive", "")
        if "n_per_class" in values:
            counts = ", ".join(map(str, values["n_per_class"]))
        rows.append({"covariate": kind, "level": name, "n": values.get("n_patients", ""),
                     "counts": counts,
                     "cells": [subgroup_cell(values, m, reasons) for m in metrics]})
    at = f" at {threshold:.3f}" if threshold is not None else ""
    columns = [f"{metric_label(m, multi)}{at if m != 'roc_auc' else ''} [95% CI]"
               for m in metrics]
    return {"rows": rows, "columns": columns, "reasons": reasons,
            "counts_column": "patients per class" if multi else "positive",
            "rule": (f"at the operating point (threshold {threshold:.3f})" if threshold is not
                     None else "AUC only: a multi-class model has no operating point; its "
                               "classes are called by the argmax")}


def saliency_rows(saliency):
    """One row per subgroup of the lead statistics: the patient level (the one to report)
    first, the beat level (the original's) beside it, each labelled."""
    rows = []
    for group, stats in (saliency or {}).items():
        if not isinstance(stats, dict) or "top3_leads" not in stats:
            continue
        patient = stats.get("patient_level") or {}
        rows.append({"group": group, "beats": stats.get("sample_count"),
                     "patients": patient.get("patient_count", patient.get("sample_count", "")),
                     "top3": ", ".join(stats.get("top3_leads") or []),
                     "patient_top3": ", ".join(patient.get("top3_leads") or []) or DASH,
                     "icc": with_ci(stats.get("icc"), [stats.get("icc_ci_lower"),
                                                       stats.get("icc_ci_upper")]),
                     "patient_icc": with_ci(patient.get("icc"), [patient.get("icc_ci_lower"),
                                                                 patient.get("icc_ci_upper")]),
                     "friedman_p": p_value(stats.get("friedman_p")),
                     "patient_friedman_p": p_value(patient.get("friedman_p"))
                     if patient else DASH,
                     "caveat": stats.get("top3_vs_rest_caveat", "")})
    return rows


def saliency_warnings(saliency):
    """The console's small-sample warnings of the lead statistics, one per subgroup."""
    return [f"{group}: {stats['small_sample_warning']}" for group, stats in
            (saliency or {}).items()
            if isinstance(stats, dict) and stats.get("small_sample_warning")]


def check_rows(checks):
    """(check, result) rows of explanation_checks.json's randomisation and deletion tests;
    empty when neither ran."""
    checks = checks or {}
    rows = []
    if checks.get("sanity_spearman") is not None:
        flag = ": the map barely depends on the weights" if checks.get("sanity_flag") else ""
        rows.append(("weight randomisation (Adebayo et al. 2018)",
                     f"Spearman {checks['sanity_spearman']:.3f} between maps of the trained and "
                     f"randomised model{flag}"))
    if checks.get("deletion_auc_top") is not None:
        rows.append(("lead deletion",
                     f"area under P(LVR) with the top-k leads deleted "
                     f"{checks['deletion_auc_top']:.3f} against "
                     f"{checks['deletion_auc_random']:.3f} for random leads; top leads lower in "
                     f"{100 * checks['deletion_win_rate']:.0f}% of LVR beats"))
    return rows
