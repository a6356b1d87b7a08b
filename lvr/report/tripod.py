"""The TRIPOD+AI checklist (Collins et al., BMJ 2024;385:e078378) as a run can answer it.

`tripod_rows(context)` takes the report context of lvr.report.html and gives, for every item, what
this run filled and in which section of report.html, or "for the authors" where only the
authors can say (the clinical setting, ethics, funding, interpretation). Items 1-4 (title,
abstract, background, objectives) belong to the paper and are left out.
"""
import json

from lvr.report.results import counted

FOR_AUTHORS = "for the authors"

# (item, short title); the run fills those in FILLERS below
ITEMS = (
    ("5", "Data: sources and dates"), ("6", "Participants: setting, eligibility, treatments"),
    ("7", "Data preparation"), ("8", "Outcome"), ("9", "Predictors"), ("10", "Sample size"),
    ("11", "Missing data"), ("12a", "How the data were used (development, evaluation)"),
    ("12b", "Handling of predictors"),
    ("12c", "Model type, building, hyperparameters, internal validation"),
    ("12d", "Heterogeneity across clusters"), ("12e", "Performance measures"),
    ("12f", "Model updating, recalibration"), ("12g", "Comparison of models"),
    ("13", "Class imbalance"), ("14", "Fairness"), ("15", "Model output and thresholds"),
    ("16", "Training versus evaluation"), ("17", "Ethical approval"),
    ("18a", "Funding"), ("18b", "Conflicts of interest"), ("18c", "Protocol"),
    ("18d", "Registration"), ("18e", "Data sharing"), ("18f", "Code sharing"),
    ("19", "Patient and public involvement"), ("20a", "Participant flow"),
    ("20b", "Participant characteristics"), ("20c", "Development versus evaluation data"),
    ("21", "Number of participants and outcome events in each analysis"),
    ("22", "Model specification"), ("23a", "Model performance with CIs, subgroups"),
    ("23b", "Heterogeneity of performance"), ("24", "Model updating results"),
    ("25", "Interpretation"), ("26", "Limitations"), ("27a", "Usability: poor-quality input"),
    ("27b", "Usability: users' expertise"), ("27c", "Usability: further research"),
)


def config_of(context):
    """The run's configuration as values (the context holds them as JSON text)."""
    return {name: json.loads(value) for name, value in context["config"]}


def item_data(c):
    data = [value for label, value in c["provenance"] if label == "Data"]
    return (f"cohort {data[0]}; dates of collection: {FOR_AUTHORS}", "provenance") if data \
        else None


def item_preparation(c):
    config = config_of(c)
    cohort = c["split"].get("cohort") or {}
    if not cohort and "NORMALISATION" not in config:
        return None
    parts = [f"{cohort['sampling_rate']} Hz" if cohort.get("sampling_rate") else "",
             f"{cohort['n_samples']} samples per beat" if cohort.get("n_samples") else "",
             f"normalisation {config['NORMALISATION']}" if "NORMALISATION" in config else ""]
    return "beats: " + ", ".join(p for p in parts if p), "provenance"


def item_outcome(c):
    names = (c["results"] or {}).get("class_names")
    return (f"classes {', '.join(names)}; their clinical definition: {FOR_AUTHORS}",
            "discrimination") if names else None


def item_predictors(c):
    cohort = c["split"].get("cohort") or {}
    leads = cohort.get("lead_names")
    return (f"{len(leads)} ECG leads ({', '.join(leads)}), the whole beat window", "cohort") \
        if leads else None


def item_sample_size(c):
    if not c["splits"]:
        return None
    return ("patients per split: " + ", ".join(f"{n} {k}" for k, n in c["splits"])
            + f"; the justification: {FOR_AUTHORS}", "cohort")


def item_flow_missing(c):
    records = (c["flow"] or {}).get("records")
    return (f"{records['read']} records read, {records['rejected']} rejected, by reason",
            "cohort") if records else None


def item_flow(c):
    return ("patients and beats per class and per split" + (
        ", from the records read" if (c["flow"] or {}).get("records") else ""), "cohort") \
        if c["flow"] else None


def item_split(c):
    split = c["split"]
    if "train" in split:
        return (f"patient-level split (seed {split.get('seed')}, test {split.get('test_size')}, "
                f"validation {split.get('val_size')}); every beat of a patient in one split",
                "cohort")
    if c["evaluation"]:
        return "every beat of an external cohort, scored by a trained model", "evaluation"
    if c["cv"]:
        return f"{c['cv']['folds']}-fold patient-level cross-validation", "cross_validation"
    return None


def item_predictor_handling(c):
    config = config_of(c)
    return (f"NORMALISATION={config['NORMALISATION']}, LEAD_DROPOUT={config.get('LEAD_DROPOUT')}",
            "provenance") if "NORMALISATION" in config else None


def item_model(c):
    config = config_of(c)
    if "EXPERIMENT" not in config:
        return None
    return (f"network {config['EXPERIMENT']}, {counted(config.get('EPOCHS'), 'epoch')}, lr "
            f"{config.get('LR')}, checkpoint by {config.get('SELECT_BY')} on the validation "
            f"patients", "training")


def item_heterogeneity(c):
    return ("metrics per subgroup and covariate level", "subgroups") if c["subgroups"] else None


def item_measures(c):
    if not c["results"]:
        return None
    shown = ["AUC", "sensitivity, specificity, PPV, NPV at the operating point"
             if c["operating_point"] and c["operating_point"]["levels"] else "",
             "calibration intercept, slope, Brier" if c["calibration"] else "",
             "decision curve (net benefit)" if c["decision"] else ""]
    return ("; ".join(s for s in shown if s) + "; 95% CIs resample patients", "discrimination")


def item_imbalance(c):
    return ("class counts per split; no resampling or class weights (label smoothing only)",
            "cohort") if "train" in c["split"] else None


def item_fairness(c):
    covariates = {row["covariate"] for row in c["subgroups"]}
    return (f"performance by {', '.join(sorted(covariates))}", "subgroups") if covariates \
        else None


def item_output(c):
    point = c["operating_point"]
    if not point and c.get("multiclass"):
        return ("class probabilities; the most probable class is called (argmax), no threshold",
                "discrimination")
    if not point:
        return None
    if not point["levels"]:
        return f"class probabilities; {point['note']}", "operating_point"
    how = ("fixed by THRESHOLD, not chosen on data" if point.get("fixed") else
           f"chosen on {point['chosen_on']}")
    return (f"probability of {c['results']['class_names'][1]}; threshold {point['threshold']} by "
            f"rule {point['rule']}, {how}", "operating_point")


def item_train_vs_eval(c):
    evaluation = c["evaluation"]
    if evaluation:
        return (f"trained on {evaluation.get('training_data_dir')}, evaluated on "
                f"{evaluation.get('data_dir')}; differences in setting: {FOR_AUTHORS}",
                "evaluation")
    return None


def item_code(c):
    code = [value for label, value in c["provenance"] if label == "Code"]
    return (f"{code[0]}; the repository's address: {FOR_AUTHORS}", "provenance") if code else None


def item_characteristics(c):
    return ("per split", "cohort") if c["characteristics"] else None


def item_events(c):
    results = c["results"]
    if not results:
        return None
    level = results.get("patient_level", results)
    matrix = level.get("confusion_matrix")
    if not matrix:
        return None
    per_class = ", ".join(f"{name}: {int(sum(row))}"
                          for name, row in zip(results.get("class_names", []), matrix,
                                               strict=False))
    return (f"test set: {counted(results['n_patients'], 'patient')} ({per_class})",
            "discrimination")


def item_specification(c):
    config = config_of(c)
    checkpoint = [value for label, value in c["provenance"] if label == "Checkpoint"]
    if checkpoint:
        return f"checkpoint {checkpoint[0]}", "provenance"
    return (f"network {config['EXPERIMENT']}; weights in best_model.pth", "files") \
        if "EXPERIMENT" in config else None


def item_performance(c):
    if not c["results"]:
        return None
    return ("discrimination, operating point, calibration, decision curve"
            + (", subgroups" if c["subgroups"] else "") + ", each with patient-bootstrap CIs",
            "discrimination")


def item_spread(c):
    return ("mean, sd, min and max over folds", "cross_validation") if c["cv"] else None


FILLERS = {
    "5": item_data, "7": item_preparation, "8": item_outcome, "9": item_predictors,
    "10": item_sample_size, "11": item_flow_missing, "12a": item_split,
    "12b": item_predictor_handling, "12c": item_model, "12d": item_heterogeneity,
    "12e": item_measures, "13": item_imbalance, "14": item_fairness,
    "15": item_output, "16": item_train_vs_eval, "18f": item_code, "20a": item_flow,
    "20b": item_characteristics, "21": item_events, "22": item_specification,
    "23a": item_performance, "23b": item_spread,
}


def tripod_rows(context):
    """[{"item", "title", "filled", "where"}] for every item; `where` is a section id or ""."""
    rows = []
    for item, title in ITEMS:
        filled = FILLERS[item](context) if item in FILLERS else None
        text, where = filled if filled else (FOR_AUTHORS, "")
        rows.append({"item": item, "title": title, "filled": text, "where": where})
    return rows
