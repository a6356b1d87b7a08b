"""Script configuration: the UPPER_CASE constants at the top of a script are its interface.

Any of them can be overridden on the command line as ``--lower_case_name=value``; the value is
converted to the constant's type. An unknown name is an error that lists the valid ones, and
``--help`` prints every name with its default and the comment written next to it.

Every option's valid values are in OPTIONS below (SCRIPT_OPTIONS where one script gives a name
its own meaning, RELATIONS for rules between options). ``configure`` checks every constant,
default or overridden, before the script does any work; tests/test_options.py makes sure every
constant of every script has an entry.

Scripts raise ``UserError`` for mistakes the user can fix (bad data, bad option); ``run_script``
prints such an error as one clear message, without a traceback, and exits with status 2.
"""
import ast
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable
from typing import NamedTuple

from lvr.errors import UserError, run_script  # noqa: F401  (the scripts' entry)
from lvr.choices import (LEAD_IMPORTANCE_SOURCES, LEVELS, LVR_SIGNS, METHODS, NORMALISATIONS,
                         PAIR_KINDS,
                         PTBXL_TASKS, SELECTION_RULES, TASKS, THRESHOLD_WORDS, UNITS,
                         WAVE_ALIGNMENTS, WAVE_REFERENCES, threshold_rule)
from lvr.leads import DELINEATION_WINDOW_MS, LEAD_BY_KEY, LEAD_NAMES, lead_key

CONFIG_TYPES = (bool, int, float, str, tuple, list, type(None))
TRUE_WORDS = {"true", "1", "yes", "y", "on"}
FALSE_WORDS = {"false", "0", "no", "n", "off"}


def config_names(namespace):
    """The UPPER_CASE constants of a script namespace that form its configuration.

    Only names the script assigns itself: an imported constant (plot_training_curves.py imports
    HISTORY_KEYS) is not an option.
    """
    assigned = assigned_names(namespace.get("__file__"))
    return [name for name, value in namespace.items()
            if name.isupper() and not name.startswith("_") and isinstance(value, CONFIG_TYPES)
            and (assigned is None or name in assigned)]


def assigned_names(path):
    """Names assigned at the top level of the Python file at `path`; None if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (OSError, TypeError, ValueError, SyntaxError):
        return None
    return {target.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for target in getattr(node, "targets", [getattr(node, "target", None)])
            if isinstance(target, ast.Name)}


def converted_value(name, text, default):
    """`text` from the command line, converted to the type of `default`."""
    option = f"--{name.lower()}"
    if isinstance(default, bool):
        word = text.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise UserError(f"{option} expects true or false, got {text!r}")
    if default is None:
        if text.strip().lower() == "none":
            return None
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    if isinstance(default, (int, float)):
        kind = type(default)
        try:
            return kind(text)
        except ValueError:
            raise UserError(f"{option} expects {'an integer' if kind is int else 'a number'}, "
                            f"got {text!r}") from None
    if isinstance(default, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = [part.strip() for part in text.split(",") if part.strip()]
        if not isinstance(value, (tuple, list)):
            value = [value]
        if default:
            value = [converted_value(name, str(v), default[0]) for v in value]
        return type(default)(value)
    return text


# ---------------------------------------------------------------- valid values of the options

class Rule(NamedTuple):
    """What an option accepts: `accepts(value)` is true for a valid value, `allowed` says it in
    words that follow "must be", and `detail(value)`, if given, names what is wrong."""
    accepts: Callable
    allowed: str
    detail: Callable | None = None


def is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_sequence(value):
    return isinstance(value, (tuple, list))


def integer(low, high=None):
    """An integer in low..high (no upper bound when high is None)."""
    if high is not None:
        words = f"an integer in {low}..{high}"
    else:
        words = "a positive integer" if low == 1 else f"an integer >= {low}"
    return Rule(lambda v: is_integer(v) and low <= v and (high is None or v <= high), words)


def number(interval):
    """A finite number in `interval`, written as in maths: "[0, 1)", "(0, inf)"."""
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    closed_low, closed_high = interval[0] == "[", interval[-1] == "]"

    def inside(v):
        return (is_number(v) and math.isfinite(v) and (low <= v if closed_low else low < v)
                and (v <= high if closed_high else v < high))
    if low == -math.inf and high == math.inf:
        words = "a number"
    elif high == math.inf:
        words = f"a number {'>=' if closed_low else '>'} {low:g}"
    else:
        words = f"a number in {interval}"
    return Rule(inside, words)


def one_of(*choices):
    return Rule(lambda v: v in choices, "one of " + ", ".join(choices))


def matching(pattern, words):
    """Text that matches the regular expression `pattern` as a whole."""
    return Rule(lambda v: isinstance(v, str) and re.fullmatch(pattern, v) is not None, words)


def ascending(item, strict):
    """(low, high), both accepted by `item`, low < high (strict) or low <= high."""
    def accepts(v):
        return (is_sequence(v) and len(v) == 2 and all(accepted(item, x) for x in v)
                and (v[0] < v[1] if strict else v[0] <= v[1]))
    return Rule(accepts, f"(low, high), each {item.allowed}, with low {'<' if strict else '<='} "
                         f"high")


def folder(optional=False):
    """A folder path (it may not exist yet) that is not an existing file; "" too if optional."""
    def accepts(v):
        if v == "":
            return optional
        return isinstance(v, str) and (os.path.isdir(v) or not os.path.exists(v))
    words = "a folder path, not an existing file"
    return Rule(accepts, f"empty or {words}" if optional else words)


def file_path(optional=False):
    """A file path that is not an existing folder; "" too if optional."""
    def accepts(v):
        if v == "":
            return optional
        return isinstance(v, str) and not os.path.isdir(v)
    words = "a file path, not a folder"
    return Rule(accepts, f"empty or {words}" if optional else words)


def split_names(text):
    return [part.strip() for part in text.split(",") if part.strip()]


def not_leads(names):
    """What is wrong with a list of lead names, or None: 'V7 is not a lead'."""
    unknown = [str(name) for name in names if name not in LEAD_NAMES]
    if not unknown:
        return None
    return ", ".join(unknown) + (" is not a lead" if len(unknown) == 1 else " are not leads")


def lead_name_ok(text):
    return isinstance(text, str) and lead_key(text) in LEAD_BY_KEY


def leads_ok(names):
    return is_sequence(names) and len(names) > 0 and not_leads(names) is None


def delineation_leads_ok(text):
    return text.strip().lower() == "all" or leads_ok(split_names(text))


def class_names_ok(names):
    return is_sequence(names) and all(isinstance(n, (str, int)) and not isinstance(n, bool)
                                      and str(n).strip() for n in names)


def frequencies_ok(values):
    return is_sequence(values) and all(accepted(POSITIVE, f) for f in values)


def share_and_range_ok(values):
    """(share, low, high) of NON_LVR_CHANGE."""
    return (is_sequence(values) and len(values) == 3 and accepted(SHARE, values[0])
            and accepted(ascending(number("(-inf, inf)"), strict=False), values[1:]))


def prepare_task_ok(text):
    """The forms lvr.prepare.record_tables.task_labels reads; it checks the group names themselves."""
    kind, _, rest = text.partition(":")
    groups = split_names(rest)
    return (text in PTBXL_TASKS or (kind == "binary" and len(groups) == 2)
            or (kind == "multiclass" and len(groups) >= 2))


def experiment_rule():
    """EXPERIMENT's rule. It imports model, hence torch (seconds), so configure builds and checks
    it after every other option: any other mistake is reported before torch loads."""
    from model import EXPERIMENT_NAMES  # lazy: torch takes 1.5 s; --help must not wait for it
    return one_of(*EXPERIMENT_NAMES)


LEAD_LIST = ", ".join(LEAD_NAMES)
FLAG = Rule(lambda v: isinstance(v, bool), "true or false")
TEXT = Rule(lambda v: isinstance(v, str), "text")
POSITIVE = number("(0, inf)")
NON_NEGATIVE = number("[0, inf)")
FRACTION = number("[0, 1)")   # a chance or share that must leave something over
SHARE = number("[0, 1]")
ANY_RANGE = ascending(number("(-inf, inf)"), strict=False)

# Every script constant's valid values, by name: a name means the same in every script that has
# it (SCRIPT_OPTIONS below holds the exceptions). A value given as a function is a Rule that needs
# a slow import: built and checked last. tests/test_options.py refuses a constant without entry.
OPTIONS = {
    # folders and files; one that does not exist is left to the scripts, which say what is missing
    "DATA_DIR": folder(),
    "TRAIN_DIR": folder(),
    "OUTPUT_DIR": folder(),
    "CHECKPOINT": matching(r".*\S.*", "a file name in TRAIN_DIR"),
    "ALLOW_PICKLE": FLAG,
    "SEED": integer(0, 2**32 - 1),                  # numpy's seed range
    "BATCH_SIZE": integer(1),
    "DEVICE": matching(r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N"),
    # training scripts
    "TASK": one_of(*TASKS),
    "NUM_CLASSES": integer(2),
    "CLASS_NAMES": Rule(class_names_ok, "empty (the cohort's names) or names, one per class"),
    "EXPERIMENT": experiment_rule,
    "DROPOUT": FRACTION,
    "LEAD_DROPOUT": FRACTION,                       # lvr.data.cohort.LeadDropout
    "EPOCHS": integer(1),
    "NORMALISATION": one_of(*NORMALISATIONS),
    "SELECT_BY": one_of(*SELECTION_RULES),
    "THRESHOLD": Rule(lambda v: threshold_rule(v) is not None, THRESHOLD_WORDS),
    "LR": POSITIVE,
    "WEIGHT_DECAY": NON_NEGATIVE,
    "LABEL_SMOOTHING": FRACTION,
    "GRAD_CLIP": POSITIVE,                          # a max norm of 0 zeroes every gradient
    "LR_FACTOR": number("(0, 1)"),                  # torch's ReduceLROnPlateau needs < 1
    "LR_PATIENCE": integer(0),
    "TEST_SIZE": FRACTION,                          # lvr.data.cohort.patient_split_indices
    "VAL_SIZE": number("(0, 1)"),
    "CV_FOLDS": Rule(lambda v: is_integer(v) and (v == 0 or v >= 2), "0 or an integer >= 2"),
    "BOOTSTRAP": integer(0),                        # 0: no confidence intervals
    "NUM_WORKERS": integer(0),                      # DataLoader: 0 loads in the main process
    "RESUME": FLAG,
    "EVALUATE": folder(optional=True),              # lvr.evaluate.external
    "REPORT": FLAG,                                 # lvr.report.html: report.html
    "ALLOW_PATIENT_OVERLAP": FLAG,                  # lvr.evaluate.external.patient_overlap
    "INIT_FROM": file_path(optional=True),          # lvr.train.finetune reads and checks the file
    "FREEZE_EPOCHS": integer(0),                    # and at most EPOCHS: RELATIONS
    "ENCODER_LR_FACTOR": POSITIVE,
    "ALLOW_PRETRAINING_OVERLAP": FLAG,              # lvr.train.finetune.checked_test_overlap
    # pretrain.py (lvr.train.pretraining)
    "EXCLUDE_PATIENTS": file_path(optional=True),   # lvr.train.pretraining.excluded_patients reads it
    "PAIRS": one_of(*PAIR_KINDS),
    "TEMPERATURE": POSITIVE,
    "PROJECTION_DIM": integer(1),
    "AMPLITUDE_RANGE": ascending(POSITIVE, strict=False),
    "WANDER": NON_NEGATIVE,
    "NOISE": NON_NEGATIVE,
    "SHIFT_MS": NON_NEGATIVE,
    "LEAD_MASK": FRACTION,
    # Saliency_ana2_sys.py
    "NUM_SAMPLES": integer(1),
    "NOISE_LEVEL": NON_NEGATIVE,
    "MAX_FIGURES": Rule(lambda v: v is None or accepted(integer(0), v), "None or an integer >= 0"),
    "FIG_DPI": integer(1),
    "FIGURE_WORKERS": integer(1),
    "WAVE_IMPORTANCE": FLAG,
    "DELINEATION_LEADS": Rule(delineation_leads_ok,
                              f"all, or some of {LEAD_LIST} (comma-separated)",
                              lambda v: not_leads(split_names(v))),
    "SANITY_CHECK": FLAG,
    "SANITY_SAMPLES": integer(1),
    "DELETION_TEST": FLAG,
    "DELETION_MAX_K": integer(1, len(LEAD_NAMES)),
    "DELETION_DRAWS": integer(1),
    "METHOD": one_of(*METHODS),
    "IG_STEPS": integer(1),
    "OCCLUSION_WINDOW_MS": POSITIVE,
    "PATIENT_BOOTSTRAP": integer(0),                # 0: no patient-bootstrap intervals
    "WAVE_EFFECTS": FLAG,
    "WAVE_REFERENCE": one_of(*WAVE_REFERENCES),
    "WAVE_ALIGNMENT": one_of(*WAVE_ALIGNMENTS),
    "WAVE_BLEND_MS": NON_NEGATIVE,
    "LEAD_IMPORTANCE": one_of(*LEAD_IMPORTANCE_SOURCES),
    "SAVE_MAPS": FLAG,
    "EXTERNAL": FLAG,
    # compare_runs.py
    "RUN_A": TEXT,
    "RUN_B": TEXT,
    "POSITIVE_CLASS": TEXT,
    "LEVEL": one_of(*LEVELS),
    "ALPHA": number("(0, 1)"),
    "OUTPUT": TEXT,
    "ALLOW_OTHER_COHORT": FLAG,
    # prepare_data.py; lvr.prepare.record_beats.checked_options and detector_problem check more, still early
    "TABLE": file_path(optional=True),
    "PTBXL_DIR": folder(optional=True),
    "NAME": TEXT,
    "OVERWRITE": FLAG,
    "FS": integer(1),
    "PRE": NON_NEGATIVE,
    "POST": POSITIVE,
    "BEATS": matching(r"(?i)\s*(all|median|(first|random):0*[1-9]\d*)\s*",   # beat_selection
                      "all, median, first:K or random:K with K >= 1"),
    "BANDPASS": ascending(POSITIVE, strict=True),   # and below FS/2: RELATIONS
    "BANDPASS_ORDER": integer(1),
    "NOTCH_HZ": Rule(frequencies_ok, "frequencies > 0 in Hz (empty: no notch)"),
    "DETECTOR": matching(r"\w+", "the name of a neurokit2 ecg_findpeaks method"),
    "DETECTOR_LEAD": Rule(lead_name_ok, f"a lead name, any case: {LEAD_LIST}"),
    "R_REFINE_S": NON_NEGATIVE,
    "MIN_PEAK_RATIO": SHARE,
    "HEART_RATE_BPM": ascending(POSITIVE, strict=True),
    "REJECT_FLAT_MV": NON_NEGATIVE,
    "REJECT_SATURATION": POSITIVE,                  # 0 s would reject every record
    "REJECT_NOISE": POSITIVE,
    "WORKERS": integer(1),
    "MIN_LIKELIHOOD": number("[0, 100]"),           # PTB-XL scp_codes likelihoods are 0-100
    "PTBXL_DEVICE": TEXT,                           # lvr.prepare.record_tables.ptbxl_device_mask checks it
    "UNIT": Rule(lambda v: isinstance(v, str) and v.strip().lower() in
                 {"", *(u.lower() for u in UNITS)},
                 f"empty (each file's stated unit) or one of {', '.join(UNITS)}"),
    "PLAUSIBLE_MV": ascending(POSITIVE, strict=True),
    # demo_cohort.py (lvr.data.demo)
    "N_PATIENTS": integer(1),
    "BEATS_PER_PATIENT": ascending(integer(1), strict=False),
    "LVR_LEADS": Rule(leads_ok, f"one or more of {LEAD_LIST}", not_leads),
    "LVR_WAVE": one_of(*LVR_SIGNS),
    "LVR_STRENGTH": ANY_RANGE,
    "NON_LVR_CHANGE": Rule(share_and_range_ok, "(share, low, high): share in [0, 1], low <= high"),
    "DISCORDANT_SHARE": SHARE,
    "WINDOW_S": POSITIVE,
    "R_PEAK_S": NON_NEGATIVE,                       # and inside the window: RELATIONS
    "NOISE_MV": NON_NEGATIVE,
    "WANDER_MV": NON_NEGATIVE,
    "AMPLITUDE_SCALE": POSITIVE,
    # ecg_features_baseline.py (lvr.evaluate.baseline)
    "PENALTY_FOLDS": integer(2),                    # StratifiedGroupKFold needs 2 or more
    "PENALTIES": integer(1),
    "MEASUREMENTS": Rule(lambda v: isinstance(v, str),   # lvr.evaluate.baseline checks the file
                         "empty, or an earlier baseline run's measurements.npz or its folder"),
}

# Names that one script reads differently from the others.
SCRIPT_OPTIONS = {
    "prepare_data.py": {
        "TASK": Rule(lambda v: isinstance(v, str) and prepare_task_ok(v),
                     f"{', '.join(PTBXL_TASKS)}, binary:NEG,POS or multiclass:A,B,C"),
        "OUTPUT_DIR": folder(optional=True),        # "": data/<cohort name>
    },
    "pretrain.py": {
        "BATCH_SIZE": integer(2),                   # patients: the others are the negatives
    },
    "ecg_features_baseline.py": {
        "DATA_DIR": folder(optional=True),          # "": the run's cohort (split.json)
        "OUTPUT_DIR": folder(optional=True),        # "": <TRAIN_DIR>_ecg_features
    },
}

WINDOW_NEEDED = (f"the window must reach {DELINEATION_WINDOW_MS[0]} ms before the R peak and "
                 f"{DELINEATION_WINDOW_MS[1]} ms after it, for the wave delineation")


def window_fits(before_s, after_s):
    """True if a window from `before_s` before to `after_s` after the R peak is long enough."""
    return (1000 * before_s >= DELINEATION_WINDOW_MS[0] - 1e-9
            and 1000 * after_s >= DELINEATION_WINDOW_MS[1] - 1e-9)


# Rules between options, for a script that has all the names: (names, test of their values, what
# is needed). Checked once each option is valid on its own.
RELATIONS = (
    (("TEST_SIZE", "VAL_SIZE"), lambda test, val: test + val < 1,
     "their sum must be below 1, to leave patients for training"),
    (("VAL_SIZE", "CV_FOLDS"), lambda val, folds: folds == 0 or val < 1 - 1 / folds,
     "with k folds VAL_SIZE must be below 1 - 1/k (validation comes from the other k-1 folds)"),
    (("CLASS_NAMES", "NUM_CLASSES"), lambda names, n: not names or len(names) == n,
     "CLASS_NAMES must be empty or name NUM_CLASSES classes"),
    (("BANDPASS", "FS"), lambda band, fs: band[1] < fs / 2,
     "the band must end below FS/2 (Nyquist)"),
    (("R_PEAK_S", "WINDOW_S"), lambda r_peak, window: window_fits(r_peak, window - r_peak),
     WINDOW_NEEDED),
    (("PRE", "POST"), window_fits, WINDOW_NEEDED),
    (("EVALUATE", "RESUME", "CV_FOLDS"),
     lambda run, resume, folds: not run or not (resume or folds),
     "EVALUATE only tests a finished model: leave RESUME False and CV_FOLDS 0"),
    (("THRESHOLD", "NUM_CLASSES"), lambda rule, n: n == 2 or threshold_rule(rule)[0] == "argmax",
     "a model of more than 2 classes classifies by argmax: THRESHOLD must be argmax"),
    (("LEAD_IMPORTANCE", "WAVE_EFFECTS"), lambda source, effects: source != "wave_effects"
     or effects, "LEAD_IMPORTANCE=wave_effects needs WAVE_EFFECTS=True"),
    (("FREEZE_EPOCHS", "INIT_FROM"), lambda freeze, init: freeze == 0 or init,
     "FREEZE_EPOCHS keeps a pretrained encoder fixed while the head trains: it needs INIT_FROM"),
    (("ENCODER_LR_FACTOR", "INIT_FROM"), lambda factor, init: factor == 1 or init,
     "ENCODER_LR_FACTOR scales a pretrained encoder's learning rate: it needs INIT_FROM"),
    (("FREEZE_EPOCHS", "EPOCHS"), lambda freeze, epochs: freeze <= epochs,
     "FREEZE_EPOCHS cannot exceed EPOCHS (FREEZE_EPOCHS=EPOCHS trains the head alone)"),
    (("TEST_SIZE", "CV_FOLDS", "EVALUATE"), lambda test, folds, run: test > 0 or folds or run,
     "a run tests its model on TEST_SIZE of the patients, so TEST_SIZE must be above 0 (for "
     "cross-validation set CV_FOLDS instead)"),
)

TRAINED_ALREADY = "with --evaluate (the model is trained already)"
# Options that act only in some modes: (when the option is used, in which case). Given on the
# command line in another mode it would be silently dropped, so it is refused instead.
USED_ONLY = {
    **{name: (lambda c: not c["EVALUATE"], TRAINED_ALREADY)
       for name in ("EXPERIMENT", "DROPOUT", "LEAD_DROPOUT", "EPOCHS", "LR", "WEIGHT_DECAY",
                    "LABEL_SMOOTHING", "GRAD_CLIP", "LR_FACTOR", "LR_PATIENCE", "VAL_SIZE",
                    "NUM_WORKERS", "NORMALISATION", "SELECT_BY", "THRESHOLD", "INIT_FROM",
                    "FREEZE_EPOCHS", "ENCODER_LR_FACTOR")},
    "ALLOW_PATIENT_OVERLAP": (lambda c: bool(c["EVALUATE"]),
                              "without --evaluate (only an evaluation scores another cohort)"),
    "ALLOW_PRETRAINING_OVERLAP": (lambda c: bool(c["INIT_FROM"]) and not c["EVALUATE"],
                                  "without --init_from (only a run started from a checkpoint "
                                  "can test patients that checkpoint saw)"),
    "TEST_SIZE": (lambda c: not c["EVALUATE"] and not c["CV_FOLDS"],
                  "with --evaluate or --cv_folds (every beat, or each fold, is tested)"),
    "NUM_SAMPLES": (lambda c: c["METHOD"] == "smoothgrad", "unless --method=smoothgrad"),
    "NOISE_LEVEL": (lambda c: c["METHOD"] == "smoothgrad", "unless --method=smoothgrad"),
    "IG_STEPS": (lambda c: c["METHOD"] == "integrated_gradients",
                 "unless --method=integrated_gradients"),
    "OCCLUSION_WINDOW_MS": (lambda c: c["METHOD"] == "occlusion", "unless --method=occlusion"),
    "SANITY_SAMPLES": (lambda c: c["SANITY_CHECK"], "with --sanity_check=False"),
    "DELETION_MAX_K": (lambda c: c["DELETION_TEST"], "with --deletion_test=False"),
    "DELETION_DRAWS": (lambda c: c["DELETION_TEST"], "with --deletion_test=False"),
    **{name: (lambda c: c["WAVE_EFFECTS"], "with --wave_effects=False")
       for name in ("WAVE_REFERENCE", "WAVE_ALIGNMENT", "WAVE_BLEND_MS")},
}


# Folder options a script writes into; checked for writing before the script starts.
WRITTEN_FOLDERS = ("OUTPUT_DIR",)
SCRIPT_WRITTEN_FOLDERS = {"plot_training_curves.py": ("TRAIN_DIR",)}


def unwritable_folder_problem(path):
    """Why folder `path` cannot be written, or None. A folder that does not exist yet is judged
    by its nearest existing parent, where it will be made; nothing is left behind."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return f"{probe} is a file, so no folder can be made there"
    try:
        with tempfile.TemporaryDirectory(dir=probe, prefix=".write-check-"):
            pass
    except OSError as error:
        where = "it" if probe == os.path.abspath(path) else f"{probe}, where it would be made,"
        return f"{where} cannot be written ({error.strerror or error})"
    return None


def written_folders(config, script, typed):
    """The folder options of `config` this run will write into."""
    names = SCRIPT_WRITTEN_FOLDERS.get(script, WRITTEN_FOLDERS)
    if config.get("EVALUATE"):   # the evaluation writes into the run, or an --output_dir typed
        names = ("EVALUATE", "OUTPUT_DIR") if "OUTPUT_DIR" in typed else ("EVALUATE",)
    return [name for name in names if config.get(name)]


def output_problem(config, script, typed):
    """The message for the first output folder that cannot be written, or None."""
    for name in written_folders(config, script, typed):
        problem = unwritable_folder_problem(config[name])
        if problem:
            return (f"--{name.lower()}={config[name]}: {problem}; choose a folder you can "
                    f"write, or fix its permissions")
    return None


def typed_options(argv=None):
    """The UPPER_CASE names of the options given on the command line (--name=value)."""
    argv = sys.argv[1:] if argv is None else argv
    return {arg[2:].split("=", 1)[0].upper() for arg in argv
            if arg.startswith("--") and "=" in arg}


def unused_option_problem(config, typed):
    """The message for the first typed option that the configured mode would not use, or None."""
    for name in sorted(typed & set(USED_ONLY)):
        used, case = USED_ONLY[name]
        try:
            ignored = not used(config)
        except KeyError:   # a script without the names the rule reads
            continue
        if ignored:
            return (f"--{name.lower()}={config[name]!r} has no effect {case}; leave it out, or "
                    f"change the option that makes it unused")
    return None


def option_rules(script):
    """name -> rule (a Rule, or a function that builds one) for the script of that file name."""
    return {**OPTIONS, **SCRIPT_OPTIONS.get(script, {})}


def accepted(rule, value):
    """True if `rule` accepts `value`; a value of the wrong shape is simply not accepted."""
    try:
        return bool(rule.accepts(value))
    except (TypeError, ValueError, AttributeError, IndexError):
        return False


def option_problem(name, value, rule):
    """None if `value` is valid for option `name`, else the one-line message that says why."""
    if accepted(rule, value):
        return None
    try:
        detail = rule.detail(value) if rule.detail else None
    except (TypeError, ValueError, AttributeError):
        detail = None
    return f"--{name.lower()}={value!r}: {f'{detail}; ' if detail else ''}must be {rule.allowed}"


def relation_problem(config):
    """The message for the first broken rule between options of `config`, or None."""
    for names, test, needed in RELATIONS:
        if all(name in config for name in names) and not test(*(config[n] for n in names)):
            given = ", ".join(f"--{name.lower()}={config[name]!r}" for name in names)
            return f"{given}: {needed}"
    return None


def check_options(config, script):
    """Raise UserError for the first value of `config` (name -> value) that its rule refuses.

    A name without a rule passes: tests/test_options.py, not the user, finds those.
    """
    rules = option_rules(script)
    named = [name for name in config if name in rules]
    for name in [n for n in named if isinstance(rules[n], Rule)]:
        problem = option_problem(name, config[name], rules[name])
        if problem:
            raise UserError(problem)
    problem = relation_problem(config)
    if problem:
        raise UserError(problem)
    for name in [n for n in named if not isinstance(rules[n], Rule)]:
        problem = option_problem(name, config[name], rules[name]())
        if problem:
            raise UserError(problem)


def constant_comments(path):
    """Comments written on the same line as each constant in the script's source."""
    comments = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                match = re.match(r"^([A-Z][A-Z0-9_]*)\s*=.*#\s*(.+)$", line)
                if match:
                    comments[match.group(1)] = match.group(2).strip()
    except OSError:
        pass
    return comments


def help_text(namespace):
    script = namespace.get("__file__", "script.py")
    comments = constant_comments(script)
    doc = (namespace.get("__doc__") or "").strip()
    lines = [f"usage: python {script.rsplit('/', 1)[-1]} [--name=value ...]", ""]
    if doc:
        lines += [doc, ""]
    lines.append("options (constants at the top of the script) [allowed values]:")
    rules = option_rules(os.path.basename(script))
    for name in config_names(namespace):
        comment = comments.get(name, "")
        rule = rules.get(name)
        allowed = f"  [{rule.allowed}]" if isinstance(rule, Rule) else ""
        lines.append(f"  --{name.lower()}={namespace[name]!r}"
                     + (f"    {comment}" if comment else "") + allowed)
    return "\n".join(lines)


def configure(namespace, argv=None):
    """Apply ``--name=value`` overrides to the script's constants, in place, and check every
    constant against its rule (OPTIONS): a bad value raises UserError before any work starts.

    Returns the resolved configuration as a dict of UPPER_CASE name -> value.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    names = config_names(namespace)
    if any(arg in ("-h", "--help") for arg in argv):
        print(help_text(namespace))
        raise SystemExit(0)
    valid = ", ".join(f"--{n.lower()}" for n in names)
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise UserError(f"unexpected argument {arg!r}: options are written --name=value. "
                            f"Valid names: {valid}")
        key, text = arg[2:].split("=", 1)
        name = key.upper()
        if name not in names or key != key.lower():
            raise UserError(f"unknown option --{key}. Valid names: {valid}")
        namespace[name] = converted_value(name, text, namespace[name])
    config = {name: namespace[name] for name in names}
    check_options(config, os.path.basename(namespace.get("__file__", "")))
    typed = typed_options(argv)
    problem = (unused_option_problem(config, typed)
               or output_problem(config, os.path.basename(namespace.get("__file__", "")), typed))
    if problem:
        raise UserError(problem)
    return config
