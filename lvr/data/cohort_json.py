"""cohort.json: read once, every field checked, the defaults filled in.

A cohort folder may describe itself in ``cohort.json`` (docs/data.md, section "cohort.json");
without one the original project's four groups apply (SEED_COHORT). ``cohort_spec`` checks
every field's type, range and consistency with the other fields, and ``window_problems`` the
fields that depend on the beat files (the R peak inside the window, a window long enough for
the wave delineation). Each problem names the file, the key and what is expected; all of them
are reported at once. Training, evaluation and the saliency analysis all load a cohort through
these checks, so they accept and refuse the same cohorts.
"""
import json
import math
import os
import re

from lvr.choices import TASKS
from lvr.errors import UserError
from lvr.leads import DELINEATION_WINDOW_MS, LEAD_BY_KEY, LEAD_NAMES, WAVES, lead_key

FORMAT_HELP = "see docs/data.md, section 'Data format'"
JSON_HELP = "see docs/data.md, section 'cohort.json'"
GROUP_NAME = re.compile(r"[A-Za-z0-9_.\-]+")   # a <GROUP> of cut_<GROUP>.npy

SEED_COHORT = {
    "name": "seed (NSTEMI/STEMI without/with LVR)",
    "groups": ["NS_0", "NS_1", "ST_0", "ST_1"],
    "group_names": {"NS_0": "NSTEMI_0", "NS_1": "NSTEMI_1", "ST_0": "STEMI_0", "ST_1": "STEMI_1"},
    "binary_labels": {"NS_0": 0, "NS_1": 1, "ST_0": 0, "ST_1": 1},
    "binary_class_names": ["Normal", "Abnormal"],
    "multiclass_labels": {"NS_0": 0, "NS_1": 1, "ST_0": 2, "ST_1": 3},
    "multiclass_class_names": ["NSTEMI non-LVR", "NSTEMI LVR", "STEMI non-LVR", "STEMI LVR"],
    "analysis_subgroups": {"STEMI": "ST_1", "NSTEMI": "NS_1"},
    "leads": list(LEAD_NAMES),
    "sampling_rate": 500,
    "r_peak_sample": None,
    "ground_truth": None,
}
COHORT_KEYS = set(SEED_COHORT) | {"source", "description"}


class CohortError(UserError):
    """The cohort folder or one of its files is not usable as it is."""


def cohort_spec(data_dir):
    """The cohort description: DATA_DIR/cohort.json checked and completed, else the seed's."""
    path = os.path.join(data_dir, "cohort.json")
    if not os.path.exists(path):
        return dict(SEED_COHORT)
    try:
        with open(path, encoding="utf-8") as handle:
            given = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CohortError(f"{path} is not valid JSON ({error}); {FORMAT_HELP}") from None
    if not isinstance(given, dict):
        raise CohortError(f"{path} must hold a JSON object; {FORMAT_HELP}")
    problems = spec_problems(given)
    if problems:
        raise CohortError(problem_report(path, problems))
    return completed_spec(given, data_dir)


def problem_report(path, problems):
    """One line for one problem; a count and one indented line each for several."""
    if len(problems) == 1:
        return f"{path}: {problems[0]}; {JSON_HELP}"
    listed = "\n".join(f"  - {problem}" for problem in problems)
    return f"{path} has {len(problems)} problems ({JSON_HELP}):\n{listed}"


def completed_spec(given, data_dir):
    """A checked cohort.json with every key the pipeline reads, defaults filled in."""
    groups = given["groups"]
    spec = {key: None for key in SEED_COHORT}
    spec.update({"name": os.path.basename(os.path.normpath(data_dir)), "leads": list(LEAD_NAMES),
                 "sampling_rate": 500})
    spec.update(given)
    spec["group_names"] = {g: (given.get("group_names") or {}).get(g, g) for g in groups}
    subgroups = spec.get("analysis_subgroups")
    if subgroups is None and spec.get("binary_labels"):
        subgroups = {spec["group_names"][g]: g for g in groups if spec["binary_labels"][g] == 1}
    spec["analysis_subgroups"] = subgroups
    return spec


# ----------------------------------------------------------------------------- the checks

def shown(value):
    """A JSON value as the user wrote it, with what kind of value it is."""
    kinds = {bool: "true/false", str: "text", int: "an integer", float: "a number",
             list: "a list", dict: "an object", type(None): "null"}
    text = json.dumps(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{text} ({kinds.get(type(value), type(value).__name__)})"


def is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_text(value):
    return isinstance(value, str) and value.strip() != ""


def spec_problems(given):
    """Every problem of a cohort.json object, in words: '<key> is <found>; expected <what>'."""
    problems = [f"unknown key {key!r}; the keys are {', '.join(sorted(COHORT_KEYS))}"
                for key in sorted(set(given) - COHORT_KEYS)]
    groups = given.get("groups")
    if not (isinstance(groups, list) and groups and all(isinstance(g, str) for g in groups)
            and len(set(groups)) == len(groups)):
        return problems + [f"'groups' is {shown(groups)}; expected a non-empty list of distinct "
                           f"group names (the <GROUP> of each cut_<GROUP>.npy)"]
    problems += [f"'groups' names {g!r}, which cannot be part of a file name cut_<GROUP>.npy; "
                 f"use letters, digits, '_', '-' and '.'"
                 for g in groups if not GROUP_NAME.fullmatch(g)]
    for key in ("name", "description"):
        if key in given and not isinstance(given[key], str):
            problems.append(f"'{key}' is {shown(given[key])}; expected text")
    if "source" in given and not isinstance(given["source"], (dict, str, type(None))):
        problems.append(f"'source' is {shown(given['source'])}; expected an object or text")
    problems += group_name_problems(given.get("group_names"), groups)
    for task in TASKS:
        problems += label_problems(given, task, groups)
    problems += lead_problems(given.get("leads", list(LEAD_NAMES)))
    rate = given.get("sampling_rate", 500)
    if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate)
            and rate > 0):
        problems.append(f"'sampling_rate' is {shown(rate)}; expected a number of samples per "
                        f"second above 0")
    r_peak = given.get("r_peak_sample")
    if r_peak is not None and not (is_integer(r_peak) and r_peak >= 0):
        problems.append(f"'r_peak_sample' is {shown(r_peak)}; expected null or the sample index "
                        f"(an integer >= 0) of the R peak in every beat")
    problems += subgroup_problems(given, groups)
    problems += ground_truth_problems(given.get("ground_truth"),
                                      given.get("leads", list(LEAD_NAMES)))
    return problems


def group_name_problems(names, groups):
    """'group_names': display names, also the saliency script's folder names."""
    if names is None:
        return []
    if not isinstance(names, dict):
        return [f"'group_names' is {shown(names)}; expected an object group -> display name"]
    problems = [f"'group_names' names {g!r}, which is not in 'groups'"
                for g in names if g not in groups]
    problems += [f"'group_names'[{g!r}] is {shown(v)}; expected a display name that can be a "
                 f"folder name (text without '/')"
                 for g, v in names.items()
                 if not is_text(v) or "/" in v or "\\" in v or v.strip() in (".", "..")]
    display = [names.get(g, g) for g in groups]
    repeated = sorted({d for d in display if isinstance(d, str) and display.count(d) > 1})
    if repeated:
        problems.append(f"'group_names' gives several groups the name {', '.join(repeated)}; "
                        f"each group needs its own (it names the group's folder)")
    return problems


def label_problems(given, task, groups):
    """'<task>_labels' and '<task>_class_names'."""
    key, names_key = f"{task}_labels", f"{task}_class_names"
    mapping, names = given.get(key), given.get(names_key)
    if mapping is None:
        return ([f"'{names_key}' is given but '{key}' is null; name the classes of a task the "
                 f"cohort has"] if names is not None else [])
    if not isinstance(mapping, dict):
        return [f"'{key}' is {shown(mapping)}; expected an object group -> class number, or null "
                f"when the cohort has no {task} task"]
    problems = [f"'{key}' lacks group {g!r}; every group in 'groups' needs a class"
                for g in groups if g not in mapping]
    problems += [f"'{key}' names {g!r}, which is not in 'groups'" for g in mapping
                 if g not in groups]
    bad = {g: v for g, v in mapping.items() if not (is_integer(v) and v >= 0)}
    problems += [f"'{key}'[{g!r}] is {shown(v)}; expected a class number, an integer 0, 1, ..."
                 for g, v in bad.items()]
    if bad:
        return problems
    classes = sorted(set(mapping.values()))
    if classes != list(range(len(classes))):
        problems.append(f"'{key}' uses classes {classes}; expected 0, 1, ... without gaps")
    elif task == "binary" and classes != [0, 1]:
        problems.append(f"'{key}' uses classes {classes}; a binary task needs both 0 and 1")
    elif len(classes) < 2:
        problems.append(f"'{key}' puts every group in class 0; a task needs two classes or more")
    if names is not None:
        if not (isinstance(names, list) and all(is_text(n) for n in names)):
            problems.append(f"'{names_key}' is {shown(names)}; expected a list of class names "
                            f"(text), one per class")
        elif len(names) != len(classes):
            problems.append(f"'{names_key}' has {len(names)} names for the {len(classes)} "
                            f"classes of '{key}'")
        elif len(set(names)) != len(names):
            problems.append(f"'{names_key}' repeats a name ({', '.join(names)}); each class "
                            f"needs its own")
    return problems


def lead_problems(leads):
    """'leads': the 12 standard leads, each once, in the order of the files' axis 1."""
    if not (isinstance(leads, list) and all(isinstance(x, str) for x in leads)):
        return [f"'leads' is {shown(leads)}; expected the list of the 12 lead names in the "
                f"order of axis 1 of the beat files"]
    problems = []
    for name in leads:
        if name not in LEAD_NAMES:
            standard = LEAD_BY_KEY.get(lead_key(name))
            problems.append(f"'leads' names {name!r}, which is not a standard lead name"
                            + (f" (write {standard!r})" if standard else
                               f"; the names are {', '.join(LEAD_NAMES)}"))
    repeated = sorted({x for x in leads if leads.count(x) > 1})
    if repeated:
        problems.append(f"'leads' names {', '.join(repeated)} more than once")
    if len(leads) != len(LEAD_NAMES):
        missing = [x for x in LEAD_NAMES if x not in leads]
        problems.append(f"'leads' lists {len(leads)} names; expected the {len(LEAD_NAMES)} "
                        f"standard leads"
                        + (f" (missing: {', '.join(missing)})" if missing else ""))
    return problems


def subgroup_problems(given, groups):
    """'analysis_subgroups': name -> a group whose LVR-positive (binary class 1) beats the
    saliency analysis explains."""
    subgroups = given.get("analysis_subgroups")
    if subgroups is None:
        return []
    if not isinstance(subgroups, dict):
        return [f"'analysis_subgroups' is {shown(subgroups)}; expected an object subgroup name "
                f"-> group, or null"]
    labels = given.get("binary_labels") if isinstance(given.get("binary_labels"), dict) else {}
    problems = []
    for name, group in subgroups.items():
        if not is_text(name):
            problems.append("'analysis_subgroups' has an empty subgroup name")
        if group not in groups:
            problems.append(f"'analysis_subgroups'[{name!r}] is {shown(group)}; expected one of "
                            f"the groups {', '.join(groups)}")
        elif labels and labels.get(group) != 1:
            problems.append(f"'analysis_subgroups'[{name!r}] is group {group!r} of binary class "
                            f"{labels.get(group)}; the analysis explains LVR-positive beats, so "
                            f"name a group of class 1")
    return problems


def ground_truth_problems(truth, leads):
    """'ground_truth' of a synthetic cohort: only reported against, but it must make sense."""
    if truth is None:
        return []
    if not isinstance(truth, dict):
        return [f"'ground_truth' is {shown(truth)}; expected an object or null"]
    problems = []
    truth_leads = truth.get("lvr_leads")
    if truth_leads is not None:
        if not (isinstance(truth_leads, list) and truth_leads
                and all(isinstance(x, str) for x in truth_leads)):
            problems.append(f"'ground_truth'['lvr_leads'] is {shown(truth_leads)}; expected a "
                            f"list of lead names")
        else:
            problems += [f"'ground_truth'['lvr_leads'] names {x!r}, which is not one of 'leads'"
                         for x in truth_leads if isinstance(leads, list) and x not in leads]
    wave = truth.get("lvr_wave")
    if wave is not None and wave not in WAVES:
        problems.append(f"'ground_truth'['lvr_wave'] is {shown(wave)}; expected one of "
                        f"{', '.join(WAVES)}")
    window = truth.get("lvr_window_ms")
    if window is not None and not (
            isinstance(window, list) and len(window) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in window)
            and window[0] < window[1]):
        problems.append(f"'ground_truth'['lvr_window_ms'] is {shown(window)}; expected [start, "
                        f"end] in ms from the start of the beat, start < end")
    return problems


def window_problems(spec, n_samples):
    """What in cohort.json does not fit beats of `n_samples` samples (empty: nothing)."""
    fs, r_peak = spec["sampling_rate"], spec.get("r_peak_sample")
    before, after = (math.ceil(ms * fs / 1000) for ms in DELINEATION_WINDOW_MS)
    if r_peak is None:
        if n_samples < before + after:
            return [f"the beats are {n_samples} samples ({1000 * n_samples / fs:.0f} ms at "
                    f"{fs:g} Hz); the wave delineation needs at least {before + after} "
                    f"({sum(DELINEATION_WINDOW_MS)} ms)"]
        return []
    if r_peak >= n_samples:
        return [f"'r_peak_sample' is {r_peak} but the beats have {n_samples} samples; the R "
                f"peak must lie inside the window (0..{n_samples - 1})"]
    problems = []
    if r_peak < before:
        problems.append(f"'r_peak_sample' is {r_peak}: the window starts "
                        f"{1000 * r_peak / fs:.0f} ms before the R peak; the wave delineation "
                        f"needs {DELINEATION_WINDOW_MS[0]} ms ({before} samples at {fs:g} Hz)")
    if n_samples - r_peak < after:
        problems.append(f"the window ends {1000 * (n_samples - r_peak) / fs:.0f} ms after the R "
                        f"peak (sample {r_peak} of {n_samples}); the wave delineation needs "
                        f"{DELINEATION_WINDOW_MS[1]} ms ({after} samples at {fs:g} Hz)")
    return problems
