"""report.html: one self-contained page per output folder, for a co-author or a reviewer.

`write_report(folder)` reads what a training, evaluation, cross-validation or saliency run left
in `folder` (its JSON files and figures) and writes `folder/report.html`: headline numbers first,
then cohort and flow, training, discrimination, operating point, calibration, decision curve,
subgroups, explanations and provenance, and a TRIPOD+AI table (lvr.report.tripod). Images are
embedded as data URIs and the page has no script and no link outside itself, so it opens offline
and can be mailed as one file. It is rebuilt from the files alone: `plot_training_curves.py
--train_dir=RUN` redraws it for a finished run.
"""
import base64
import datetime
import json
import os

import jinja2

from lvr.stats.operating_point import is_fixed_rule
from lvr.run_folder import atomic_write
from lvr.report.tripod import tripod_rows

REPORT_FILE = "report.html"
TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
# Figures by file name -> (section, caption); other PNGs of the folder go to "Other figures".
FIGURES = {
    "ACC_Loss_Curve.png": ("training", "Accuracy and loss per epoch; the dotted line marks the "
                                       "selected checkpoint."),
    "test_roc_curve.png": ("discrimination", "ROC curve of the tested beats."),
    "test_confusion_matrix.png": ("discrimination", "Beats at the argmax (the original's rule)."),
    "test_confusion_operating_point.png": ("operating_point", "Patients at the operating point "
                                                              "(THRESHOLD)."),
    "test_probabilities.png": ("operating_point", "Patient probabilities by true class, with "
                                                  "the threshold."),
    "test_calibration.png": ("calibration", "Reliability diagram with the calibration "
                                            "intercept and slope."),
    "test_decision_curve.png": ("decision_curve", "Net benefit against treating every patient "
                                                  "and treating none."),
    "participant_flow.png": ("cohort", "Participant flow: records, exclusions, patients, beats."),
    "lead_importance_heatmap.png": ("explanations", "Lead importance per sample and subgroup."),
    "lead_importance_comparison.png": ("explanations", "Mean lead importance per subgroup."),
    "wave_effects_heatmap.png": ("explanations", "Counterfactual wave effects: drop in P(LVR) "
                                                 "when one lead's wave is swapped."),
    "wave_importance_heatmap.png": ("explanations", "Saliency share of each lead per wave."),
    "deletion_curve.png": ("explanations", "Deleting the top-k leads against k random leads."),
    "sanity_check.png": ("explanations", "Saliency after randomising the weights."),
}
SECTIONS = (("cohort", "Cohort"), ("training", "Training"), ("discrimination", "Discrimination"),
            ("operating_point", "Operating point"), ("calibration", "Calibration"),
            ("decision_curve", "Decision curve"), ("subgroups", "Subgroups"),
            ("explanations", "Explanations"))
HEADLINE_METRICS = ("roc_auc", "accuracy", "sensitivity", "specificity", "f1")
OPERATING_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1")
DECISION_ROWS = (0.1, 0.2, 0.3, 0.4, 0.5)      # thresholds tabulated from the decision curve
MAX_WIDTH = 1000                                # CSS pixels of a figure, the page's text width


def folder_json(folder, name):
    """The JSON file `name` of `folder`, or None when the folder has none."""
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def embedded_png(path):
    """(data URI, display width in CSS pixels) of a PNG: half its pixel width (the figures are
    drawn at 150-200 dpi, twice a screen's), at most the page's width."""
    with open(path, "rb") as handle:
        data = handle.read()
    width = int.from_bytes(data[16:20], "big") if data[12:16] == b"IHDR" else MAX_WIDTH
    return ("data:image/png;base64," + base64.b64encode(data).decode("ascii"),
            min(MAX_WIDTH, max(1, width // 2)))


def formatted_number(value, digits=3):
    """`value` with `digits` decimals, or "n/a" for None."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def with_ci(value, ci, digits=3):
    """'0.912 [0.850, 0.960]', with an open bound shown as '-inf' / 'inf' (None in the JSON)."""
    if value is None:
        return "n/a"
    if not ci:
        return formatted_number(value, digits)
    low = "-inf" if ci[0] is None else f"{ci[0]:.{digits}f}"
    high = "inf" if ci[1] is None else f"{ci[1]:.{digits}f}"
    return f"{value:.{digits}f} [{low}, {high}]"


def p_value(p):
    if p is None:
        return "not computable"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def auc_of(metrics):
    auc = metrics.get("roc_auc")
    return auc.get("macro") if isinstance(auc, dict) else auc


def metric_rows(metrics):
    """(metric, value with CI) of the headline metrics of one level of a test report."""
    rows = []
    for name in HEADLINE_METRICS:
        value = auc_of(metrics) if name == "roc_auc" else metrics.get(name)
        rows.append((name.replace("roc_auc", "AUC"), with_ci(value, metrics.get(f"{name}_ci95"))))
    return rows


def run_kind(folder, results, split):
    if os.path.exists(os.path.join(folder, "saliency_run.json")):
        return "saliency"
    if os.path.exists(os.path.join(folder, "cv_summary.json")):
        return "cross-validation"
    if split and "evaluated_run" in split:
        return "external evaluation"
    return "training" if results else "unknown"


def figures_by_section(folder):
    found = {}
    order = list(FIGURES)
    for name in sorted(os.listdir(folder), key=lambda n: (order.index(n) if n in order
                                                          else len(order), n)):
        if name.lower().endswith(".png") and not name.startswith("."):
            section, caption = FIGURES.get(name, ("other", name))
            src, width = embedded_png(os.path.join(folder, name))
            found.setdefault(section, []).append({"name": name, "caption": caption, "src": src,
                                                  "width": width})
    return found


def headline(kind, results, cv, saliency):
    """(label, value) pairs of the page's opening box."""
    items = []
    if results:
        level = results.get("patient_level", results)
        items.append(("Patients tested", str(results.get("n_patients"))))
        items.append(("Patient-level AUC [95% CI]",
                      with_ci(auc_of(level), level.get("roc_auc_ci95"))))
        point = results.get("operating_point") or {}
        if point.get("threshold") is not None and "patient_level" in point:
            at = point["patient_level"]
            how = "fixed" if is_fixed_rule(point["rule"]) else "chosen on validation"
            items.append((f"Sensitivity / specificity at {point['threshold']:.3f} "
                          f"({point['rule']}, {how})",
                          f"{with_ci(at['sensitivity'], at.get('sensitivity_ci95'))} / "
                          f"{with_ci(at['specificity'], at.get('specificity_ci95'))}"))
        calibration = next(iter((level.get("calibration") or {}).values()), None)
        if calibration:
            items.append(("Calibration slope (patients)",
                          with_ci(calibration.get("calibration_slope"),
                                  calibration.get("calibration_slope_ci95"))))
    if cv:
        auc = cv["metrics"].get("roc_auc", {})
        if auc.get("mean") is not None:
            items.append((f"AUC over {cv['folds']} folds (mean ± sd)",
                          f"{auc['mean']:.3f} ± {auc['sd']:.3f}"))
    if saliency:
        for group, stats in saliency.items():
            if isinstance(stats, dict) and stats.get("top3_leads"):
                items.append((f"Key leads, {group}", ", ".join(stats["top3_leads"])))
    return items


def operating_point_section(results):
    point = (results or {}).get("operating_point")
    if not point:
        return None
    if point.get("threshold") is None or "patient_level" not in point:
        return {"note": point.get("note", "no threshold"), "rows": [], "levels": []}
    levels = []
    for level in ("patient_level", "beat_level"):
        at = point[level]
        (tn, fp), (fn, tp) = at["confusion_matrix"]
        levels.append({"name": level.replace("_", " "),
                       "rows": [(name.upper() if len(name) == 3 else name,
                                 with_ci(at[name], at.get(f"{name}_ci95")))
                                for name in OPERATING_METRICS],
                       "counts": f"TP {tp}, FP {fp}, FN {fn}, TN {tn}"})
    validation = point.get("validation") or {}
    return {"threshold": f"{point['threshold']:.4f}", "rule": point["rule"],
            "fixed": is_fixed_rule(point["rule"]),
            "chosen_on": point.get("chosen_on", ""), "levels": levels,
            "validation": (f"{validation['n_patients']} validation patients: sensitivity "
                           f"{validation['sensitivity']:.3f}, specificity "
                           f"{validation['specificity']:.3f}") if validation else ""}


def calibration_rows(results):
    rows = []
    for level_name, level in (("patients", (results or {}).get("patient_level")),
                              ("beats", results)):
        for name, values in ((level or {}).get("calibration") or {}).items():
            rows.append({"level": level_name, "class": name,
                         "intercept": with_ci(values.get("calibration_intercept"),
                                              values.get("calibration_intercept_ci95")),
                         "slope": with_ci(values.get("calibration_slope"),
                                          values.get("calibration_slope_ci95")),
                         "brier": with_ci(values.get("brier"), values.get("brier_ci95")),
                         "failed": values.get("bootstrap_failed")})
    return rows


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
            "prevalence": formatted_number(curve.get("prevalence")), "n": curve.get("n_patients")}


def subgroup_row(kind, name, values):
    if values.get("too_small"):
        return {"covariate": kind, "level": name, "n": values.get("n_patients", ""),
                "positive": values.get("n_positive", ""), "auc": "too small",
                "sensitivity": values.get("reason", ""), "specificity": ""}
    return {"covariate": kind, "level": name, "n": values.get("n_patients", ""),
            "positive": values.get("n_positive", ""),
            "auc": with_ci(values.get("roc_auc"), values.get("roc_auc_ci95")),
            "sensitivity": with_ci(values.get("sensitivity"), values.get("sensitivity_ci95"))
            if "sensitivity" in values else "",
            "specificity": with_ci(values.get("specificity"), values.get("specificity_ci95"))
            if "specificity" in values else ""}


def subgroup_rows(results):
    """Rows of the subgroup table (lvr.stats.subgroups.subgroup_report): analysis subgroups, groups,
    then each covariate level."""
    report = (results or {}).get("subgroups") or {}
    rows = [subgroup_row("subgroup", name, values)
            for name, values in (report.get("subgroups") or {}).items()]
    rows += [subgroup_row("group", name, values)
             for name, values in (report.get("groups") or {}).items()]
    for column, covariate in (report.get("covariates") or {}).items():
        rows += [subgroup_row(column, level, values)
                 for level, values in (covariate.get("levels") or {}).items()]
    return rows


def split_rows(split):
    """Patients per split, from split.json."""
    if not split:
        return []
    return [(name, len(split[name])) for name in ("train", "val", "test") if name in split]


def saliency_rows(saliency):
    rows = []
    for group, stats in (saliency or {}).items():
        if not isinstance(stats, dict) or "top3_leads" not in stats:
            continue
        patient = stats.get("patient_level") or {}
        rows.append({"group": group, "beats": stats.get("sample_count"),
                     "top3": ", ".join(stats.get("top3_leads") or []),
                     "patient_top3": ", ".join(patient.get("top3_leads") or []),
                     "icc": with_ci(stats.get("icc"), [stats.get("icc_ci_lower"),
                                                       stats.get("icc_ci_upper")]),
                     "friedman_p": p_value(stats.get("friedman_p")),
                     "caveat": stats.get("top3_vs_rest_caveat", "")})
    return rows


def provenance(run):
    """(label, value) rows: command, data, code, versions, checkpoint."""
    run = run or {}
    config = run.get("config") or {}
    rows = [("Command", " ".join(run.get("command") or [])),
            ("Finished", run.get("finished", "")),
            ("Data", f"{run.get('data_dir', '')} (fingerprint {run.get('data_fingerprint', '')})"),
            ("Device", f"{run.get('device', '')} {run.get('cuda_device') or ''}".strip())]
    code = run.get("code")
    rows.append(("Code", f"git {code['commit']}" + (" with uncommitted changes"
                                                     if code["modified"] else "")
                 if code else "not a git checkout"))
    start = run.get("init_from")
    rows.append(("Initial weights", "random" if not start else
                 f"{start.get('path')} ({start.get('kind')}, head {start.get('head')}, sha256 "
                 f"{start.get('sha256')})"))
    versions = run.get("versions") or {}
    rows.append(("Libraries", ", ".join(f"{k} {v}" for k, v in versions.items()
                                        if k != "platform")))
    rows.append(("Platform", versions.get("platform", "")))
    return rows, sorted((k, json.dumps(v)) for k, v in config.items())


def overlap_warning(evaluation):
    """The headline warning of an evaluation that scored patients of the training split."""
    if not evaluation or not evaluation.get("external") or not evaluation.get("patient_overlap"):
        return None
    return (f"{evaluation['patient_overlap']} evaluated patients are in the training run's "
            f"split (--allow_patient_overlap=True): not an independent external validation")


def report_context(folder):
    """Everything the template shows, read from the files in `folder`."""
    results = folder_json(folder, "test_eval_results.json")
    split = folder_json(folder, "split.json")
    cv = folder_json(folder, "cv_summary.json")
    saliency = folder_json(folder, "quantitative_consistency_analysis.json")
    checks = folder_json(folder, "explanation_checks.json")
    run = folder_json(folder, "run.json") or folder_json(folder, "saliency_run.json")
    if run is None and cv:
        run = {"config": cv.get("config"), "data_fingerprint": cv.get("data_fingerprint")}
    kind = run_kind(folder, results, split)
    evaluation = (results or {}).get("evaluation")
    provenance_rows, config_rows = provenance(run)
    if evaluation:
        provenance_rows.append(("Checkpoint", f"{evaluation.get('checkpoint')} (sha256 "
                                              f"{evaluation.get('checkpoint_sha256')})"))
    context = {
        "title": f"{kind.capitalize()} report: {os.path.basename(os.path.abspath(folder))}",
        "kind": kind, "folder": os.path.abspath(folder),
        "written": datetime.datetime.now().isoformat(timespec="seconds"),
        "headline": headline(kind, results, cv, saliency),
        "warnings": [w for w in [(results or {}).get("small_sample_warning"),
                                 "demo data: simulated beats, not patients"
                                 if (run or {}).get("demo_data") else None,
                                 overlap_warning(evaluation)] if w],
        "splits": split_rows(split), "split": split or {},
        "flow": folder_json(folder, "participant_flow.json"),
        "characteristics": folder_json(folder, "characteristics.json"),
        "subgroup_notes": ((results or {}).get("subgroups") or {}).get("notes") or [],
        "results": results, "evaluation": evaluation,
        "levels": ([("patients", metric_rows(results["patient_level"]))]
                   if results and "patient_level" in results else [])
                  + ([("beats (argmax)", metric_rows(results))] if results else []),
        "operating_point": operating_point_section(results),
        "calibration": calibration_rows(results),
        "decision": decision_section(results),
        "subgroups": subgroup_rows(results),
        "cv": cv, "saliency": saliency_rows(saliency), "checks": checks,
        "figures": figures_by_section(folder),
        "provenance": provenance_rows, "config": config_rows,
        "files": sorted(name for name in os.listdir(folder)
                        if os.path.isfile(os.path.join(folder, name)) and name != REPORT_FILE
                        and not name.startswith(".")),
    }
    context["explained"] = explained_run(folder_json(folder, "saliency_run.json"))
    context["sections"] = sections_present(context)
    context["nav"] = [(key, name) for key, name in SECTIONS if key in context["sections"]] + [
        ("provenance", "Provenance"), ("tripod", "TRIPOD+AI")]
    context["tripod"] = tripod_rows(context)
    return context


def explained_run(saliency_run):
    """What a saliency folder explains, from saliency_run.json; None for other folders."""
    if not saliency_run:
        return None
    config = saliency_run.get("config") or {}
    return {"model": os.path.join(str(saliency_run.get("train_dir")),
                                  str(config.get("CHECKPOINT", "best_model.pth"))),
            "beats": saliency_run.get("test_beats"),
            "patients": len(saliency_run.get("test_patients") or []),
            "data_dir": saliency_run.get("data_dir"),
            "which": "every beat of an external cohort" if config.get("EXTERNAL")
            else "the training run's test patients",
            "normalisation": saliency_run.get("normalisation", "per_lead")}


def sections_present(c):
    """The report sections this folder has content for."""
    figures = c["figures"]
    present = {
        "cohort": c["splits"] or c["characteristics"] or c["flow"] or c["evaluation"]
        or figures.get("cohort") or c["explained"],
        "training": ((c["results"] or {}).get("best_epoch") is not None) or c["cv"]
        or figures.get("training"),
        "discrimination": c["levels"], "operating_point": c["operating_point"],
        "calibration": c["calibration"], "decision_curve": c["decision"],
        "subgroups": c["subgroups"],
        "explanations": c["saliency"] or c["checks"] or figures.get("explanations"),
        "other": figures.get("other")}
    return {key for key, value in present.items() if value}


def render_report(context):
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
                                     autoescape=True, undefined=jinja2.StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True)
    return environment.get_template("report.html").render(**context)


def write_report(folder, log=print):
    """Write `folder`/report.html from the folder's files; returns its path."""
    page = render_report(report_context(folder))
    path = os.path.join(folder, REPORT_FILE)
    with atomic_write(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(page)
    log(f"Report: {path} (self-contained; open it in any browser)")
    return path
