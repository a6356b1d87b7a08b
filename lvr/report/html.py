"""report.html: one self-contained page per output folder, for a co-author or a reviewer.

`write_report(folder)` reads what a training, evaluation, cross-validation or saliency run left
in `folder` (its JSON files and figures) and writes `folder/report.html`: headline numbers first,
then cohort and flow, training, discrimination, operating point, calibration, decision curve,
subgroups, explanations and provenance, and a TRIPOD+AI table (lvr.report.tripod); the cards
and table rows come from lvr.report.page_tables. Images are
embedded as data URIs and the page has no script and no link outside itself, so it opens offline
and can be mailed as one file. It is rebuilt from the files alone: `plot_training_curves.py
--train_dir=RUN` redraws it for a finished run.
"""
import base64
import datetime
import json
import os

import jinja2

from lvr.report.characteristics import cohort_comparison
from lvr.report.page_tables import (calibration_section, check_rows, decision_section,
                                    discrimination_rows, headline_cards, is_multiclass,
                                    operating_point_section, saliency_rows, saliency_warnings,
                                    subgroup_section)
from lvr.report.results import counted
from lvr.report.tripod import tripod_rows
from lvr.run_folder import atomic_write

REPORT_FILE = "report.html"
TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
# Figures by file name -> (section, caption); other PNGs of the folder go to "Other figures".
FIGURES = {
    "ACC_Loss_Curve.png": ("training", "Accuracy and loss per epoch; the dotted line marks the "
                                       "selected checkpoint."),
    "test_roc_curve.png": ("discrimination", "ROC curves of the tested patients (left: a "
                                             "patient's probability is the mean of its beats'; "
                                             "the headline AUC) and of the tested beats "
                                             "(right)."),
    "test_confusion_matrix.png": ("discrimination", "Patients (left) and beats (right) called "
                                                    "by the argmax, the original's rule (2 "
                                                    "classes: P >= 0.5)."),
    "test_confusion_operating_point.png": ("operating_point", "Patients at the operating point "
                                                              "(THRESHOLD)."),
    "test_probabilities.png": ("operating_point", "Patient probabilities by true class, with "
                                                  "the threshold."),
    "test_calibration.png": ("calibration", "Reliability diagrams of the patients (left, "
                                            "the headline's level) and of the beats (right), "
                                            "with the calibration intercept and slope."),
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
MAX_WIDTH = 1000                                # CSS pixels of a figure, the page's text width
TITLES = {"training": "Training report", "cross-validation": "Cross-validation report",
          "external evaluation": "External evaluation", "saliency": "Saliency analysis",
          "baseline": "ECG-measurement baseline", "unknown": "Report"}


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


def run_kind(folder, results, split):
    if os.path.exists(os.path.join(folder, "saliency_run.json")):
        return "saliency"
    if os.path.exists(os.path.join(folder, "cv_summary.json")):
        return "cross-validation"
    if split and "evaluated_run" in split:
        return "external evaluation"
    if (results or {}).get("baseline_of") is not None or \
            os.path.exists(os.path.join(folder, "baseline_model.json")):
        return "baseline"
    return "training" if results else "unknown"


def page_title(kind, evaluation, folder):
    """The page's title: what the folder is, then its name."""
    title = TITLES[kind]
    if kind == "external evaluation" and evaluation and not evaluation.get("external", True):
        title = "Evaluation on the training cohort"
    return f"{title}: {os.path.basename(os.path.abspath(folder))}"


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


def split_rows(split):
    """Patients per split, from split.json."""
    if not split:
        return []
    return [(name, len(split[name])) for name in ("train", "val", "test") if name in split]


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


def training_characteristics(folder, evaluation):
    """(characteristics.json of the run an evaluation scored, where it was looked for): the
    run's folder as recorded, or the evaluation folder's parent (evaluate.py's default output is
    inside the run); a folder whose run.json names other training data is not it."""
    recorded = str(evaluation.get("evaluated_run") or "")
    places = [recorded] if os.path.isabs(recorded) else \
        [os.path.join(os.path.dirname(os.path.abspath(folder)), os.path.basename(recorded)),
         os.path.dirname(os.path.abspath(folder)), recorded]
    wanted = evaluation.get("training_data_fingerprint")
    for place in dict.fromkeys(p for p in places if p):
        table = folder_json(place, "characteristics.json") if os.path.isdir(place) else None
        fingerprint = (folder_json(place, "run.json") or {}).get("data_fingerprint")
        if table and (not wanted or not fingerprint or fingerprint == wanted):
            return table, place
    return None, recorded


def cohort_section(folder, evaluation, characteristics):
    """The development-against-evaluated-cohort comparison of an external evaluation
    (lvr.report.characteristics.cohort_comparison), or None for other folders."""
    if not evaluation or not evaluation.get("external"):
        return None
    development, place = training_characteristics(folder, evaluation)
    if not development or not characteristics:
        return {"rows": [], "flags": [], "notes": [
            f"no characteristics.json of the training run found at {place}: the development "
            f"and evaluated cohorts are not compared"]}
    return cohort_comparison(development, characteristics)


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
    cards = headline_cards(results, cv, saliency)
    characteristics = folder_json(folder, "characteristics.json")
    comparison = cohort_section(folder, evaluation, characteristics)
    context = {
        "title": page_title(kind, evaluation, folder),
        "kind": kind, "folder": os.path.abspath(folder),
        "written": datetime.datetime.now().isoformat(timespec="seconds"),
        "headline": [(label, value) for label, value, _ in cards],
        "card_notes": {label: note for label, _, note in cards if note},
        "warnings": [w for w in [(results or {}).get("small_sample_warning"),
                                 *saliency_warnings(saliency),
                                 "demo data: simulated beats, not patients"
                                 if (run or {}).get("demo_data") else None,
                                 overlap_warning(evaluation),
                                 *(comparison or {}).get("flags", [])] if w],
        "splits": split_rows(split), "split": split or {},
        "flow": folder_json(folder, "participant_flow.json"),
        "characteristics": characteristics, "comparison": comparison,
        "results": results, "evaluation": evaluation,
        "multiclass": is_multiclass(results),
        "discrimination": discrimination_rows(results),
        "operating_point": operating_point_section(results),
        "calibration": calibration_section(results)["rows"],
        "calibration_notes": calibration_section(results)["notes"],
        "decision": decision_section(results),
        "subgroup_table": subgroup_section(results),
        "subgroup_notes": ((results or {}).get("subgroups") or {}).get("notes") or [],
        "cv": cv, "saliency": saliency_rows(saliency), "checks": checks,
        "check_rows": check_rows(checks),
        "figures": figures_by_section(folder),
        "provenance": provenance_rows, "config": config_rows,
        "files": sorted(name for name in os.listdir(folder)
                        if os.path.isfile(os.path.join(folder, name)) and name != REPORT_FILE
                        and not name.startswith(".")),
    }
    context["subgroups"] = context["subgroup_table"]["rows"]
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
        "discrimination": c["discrimination"], "operating_point": c["operating_point"],
        "calibration": c["calibration"], "decision_curve": c["decision"],
        "subgroups": c["subgroups"],
        "explanations": c["saliency"] or c["checks"] or figures.get("explanations"),
        "other": figures.get("other")}
    return {key for key, value in present.items() if value}


def render_report(context):
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
                                     autoescape=True, undefined=jinja2.StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True)
    environment.filters["counted"] = counted
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
