"""A cohort's geometry (leads, sampling rate, beat window) against a trained model's.

A model's input depends on these. Scoring (lvr.evaluate.external) and explaining
(lvr.explain.analysis) another cohort, or the run's own cohort after it changed, first checks
that they match; nothing is reordered or resampled for the user.
"""
import json
import os

from lvr.data.cohort_json import SEED_COHORT, cohort_spec
from lvr.errors import UserError
from lvr.leads import lead_key


def cohort_geometry(cohort):
    """What a model's input depends on: leads, sampling rate and beat window of the cohort.
    Another cohort must match it to be scored."""
    spec = cohort.spec
    return {"name": spec.get("name"), "leads": list(spec["leads"]),
            "sampling_rate": spec["sampling_rate"], "r_peak_sample": spec.get("r_peak_sample"),
            "beat_samples": int(cohort.beats.shape[2])}


def check_geometry(split, model, cohort, train_dir):
    """A clear error when the cohort's leads, sampling rate or window are not the model's."""
    problems = geometry_problems(training_geometry(split, model), cohort_geometry(cohort))
    if problems:
        raise UserError(f"{cohort.data_dir} cannot be scored by the model in {train_dir}: "
                        + "; ".join(problems) + ". Prepare the cohort as the training data was "
                        "prepared (prepare_data.py --fs, --pre, --post) or train a new model")


def training_geometry(split, model):
    """Leads, sampling rate and window of the run's training cohort (split.json; a run from
    before split.json recorded them: its cohort.json, if still there, and the model's input)."""
    if "cohort" in split:
        return split["cohort"]
    geometry = {"beat_samples": model.config.get("input_length")}
    data_dir = split.get("data_dir", "")
    if os.path.isdir(data_dir):
        spec = cohort_spec(data_dir)
        geometry.update(leads=list(spec["leads"]), sampling_rate=spec["sampling_rate"],
                        r_peak_sample=spec.get("r_peak_sample"))
    return geometry


def geometry_problems(trained, cohort):
    """What differs between the training cohort's geometry and this cohort's, in words."""
    problems = []
    if "leads" in trained and [lead_key(x) for x in trained["leads"]] != \
            [lead_key(x) for x in cohort["leads"]]:
        same_set = sorted(map(lead_key, trained["leads"])) == sorted(map(lead_key, cohort["leads"]))
        problems.append(f"its leads are {', '.join(cohort['leads'])} but the model reads "
                        f"{', '.join(trained['leads'])}"
                        + (" (same leads, another order: reorder the beat files)" if same_set
                           else ""))
    if trained.get("sampling_rate") not in (None, cohort["sampling_rate"]):
        problems.append(f"its sampling rate is {cohort['sampling_rate']} Hz but the model was "
                        f"trained at {trained['sampling_rate']} Hz (resample: prepare_data.py "
                        f"--fs={trained['sampling_rate']})")
    if trained.get("beat_samples") not in (None, cohort["beat_samples"]):
        problems.append(f"its beats are {cohort['beat_samples']} samples long but the model's "
                        f"window is {trained['beat_samples']} samples")
    if None not in (trained.get("r_peak_sample"), cohort["r_peak_sample"]) and \
            trained["r_peak_sample"] != cohort["r_peak_sample"]:
        problems.append(f"its R peak sits at sample {cohort['r_peak_sample']} but at sample "
                        f"{trained['r_peak_sample']} in the training beats (window "
                        f"--pre/--post differ)")
    return problems


def geometry_assumptions(split, model, cohort):
    """What check_geometry could not check because the cohort or the training run does not
    declare it, in words (empty: nothing assumed)."""
    path = os.path.join(cohort.data_dir, "cohort.json")
    assumptions = []
    if not os.path.exists(path):
        assumptions.append(f"{cohort.data_dir} has no cohort.json: its sampling rate is assumed "
                           f"to be {SEED_COHORT['sampling_rate']} Hz and its groups and leads "
                           f"those of the original cohort; declare them in cohort.json")
    else:
        with open(path, encoding="utf-8") as handle:
            if "sampling_rate" not in json.load(handle):
                assumptions.append(f"{path} declares no 'sampling_rate': "
                                   f"{SEED_COHORT['sampling_rate']} Hz is assumed")
    trained = training_geometry(split, model)
    lacking = [name for name, value in (("this cohort", cohort.spec.get("r_peak_sample")),
                                        ("the training cohort", trained.get("r_peak_sample")))
               if value is None]
    if lacking:
        assumptions.append(f"{' and '.join(lacking)} declare(s) no 'r_peak_sample': the R "
                           f"peak's position in the window is not checked against the training "
                           f"beats'")
    return assumptions
