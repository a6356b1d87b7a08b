"""The allowed values of every option that takes one of a list, written once.

lvr.config builds the option rules (and ``--help``) from these, and the modules that act on a
value import the same names, so a choice added here is accepted and handled alike. This module
imports nothing but `re`: ``--help`` and option errors must answer before torch loads.
"""
import re


# TASK of the training scripts: which label of cohort.json a run learns (lvr.data.cohort)
TASKS = ("binary", "multiclass")

# METHOD of the saliency script -> its name in figures and the console (lvr.explain.attribution)
METHODS = {
    "smoothgrad": "SmoothGrad",
    "gradient": "Gradient",
    "input_x_gradient": "Input x gradient",
    "integrated_gradients": "Integrated gradients",
    "occlusion": "Occlusion",
    "grad_cam": "Grad-CAM",
}

# PAIRS of pretrain.py: the two views of one patient that form a positive pair
# (lvr.train.contrastive)
PAIR_KINDS = ("beats", "leads", "beats_and_leads")

# LEAD_IMPORTANCE: what the lead statistics are computed on
# (lvr.explain.tables.importance_for_statistics)
LEAD_IMPORTANCE_SOURCES = ("map", "wave_effects")

# WAVE_REFERENCE and WAVE_ALIGNMENT of the counterfactual segment swaps (lvr.explain.wave_effects)
WAVE_REFERENCES = ("mean", "median", "nearest")
WAVE_ALIGNMENTS = ("segment", "r_peak")

# LEVEL of compare_runs.py: the unit whose scores DeLong's test pairs
LEVELS = ("patient", "beat")

# prepare_data.py: PTB-XL's ready-made tasks (lvr.prepare.record_tables.ptbxl_table) and the units a
# record's values may be in (UNIT; also the units a rejected record is checked against)
PTBXL_TASKS = ("mi_norm", "lvh_norm", "superclass4", "unlabelled")
UNLABELLED = "unlabelled"   # one group ALL, no labels: beats for pretrain.py
UNLABELLED_GROUP = "ALL"
UNITS = ("uV", "mV", "V")

# LVR_WAVE of demo_cohort.py: the sign an LVR patient carries -> the delineated segment
# (lvr.leads.WAVES) that holds it, recorded as ground_truth lvr_wave (lvr.data.demo says what
# each is)
LVR_SIGNS = {
    "T": "T",
    "QRS": "QRS",
    "Q": "QRS",
    "ST_DEPRESSION": "ST",
    "ST_ELEVATION": "ST",
}

# NORMALISATION of the training scripts: how a beat becomes the network's input
# (lvr.data.beats.normalised_beats); stored in the checkpoint, so evaluation and saliency match it
NORMALISATIONS = {
    "per_lead": "each lead of each beat to zero mean and unit sd (the original's)",
    "per_beat": "each beat to zero mean and unit sd over all its leads (keeps lead amplitudes)",
    "none": "the beats in mV as stored",
}

# SELECT_BY of the training scripts: the validation measure that picks the best epoch
# (lvr.train.loop.FitState; the plateau schedule follows validation accuracy whatever it is)
SELECTION_RULES = ("val_acc", "val_auc", "val_loss")

# THRESHOLD of the training scripts: how a 2-class model's operating point is chosen on the
# validation patients (lvr.stats.operating_point)
ARGMAX_THRESHOLD = 0.5
THRESHOLD_TARGET = re.compile(r"(sensitivity|specificity):(0?\.\d+|1(\.0*)?)")
THRESHOLD_WORDS = ("youden, sensitivity:X or specificity:X (X in (0, 1]), a probability in (0, 1), "
              "or argmax")


def threshold_rule(value):
    """(kind, number) of a THRESHOLD value: ("youden", None), ("sensitivity", 0.9),
    ("specificity", 0.9), ("probability", 0.3) or ("argmax", 0.5); None if it is none of them."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return ("probability", float(value)) if 0 < value < 1 else None
    text = str(value).strip().lower()
    if text in ("youden", "argmax"):
        return (text, ARGMAX_THRESHOLD if text == "argmax" else None)
    match = THRESHOLD_TARGET.fullmatch(text)
    if match:
        target = float(match.group(2))
        return (match.group(1), target) if 0 < target <= 1 else None
    try:
        number = float(text)
    except ValueError:
        return None
    return ("probability", number) if 0 < number < 1 else None


def split_sizes_problem(test_size, val_size):
    """What is wrong with sending `test_size` and `val_size` of the patients to test and
    validation (TEST_SIZE, VAL_SIZE; lvr.data.split), or None: each a share below 1, validation
    above 0, and some patients left for training."""
    if 0 <= test_size < 1 and 0 < val_size < 1 and test_size + val_size < 1:
        return None
    return (f"test_size ({test_size}) and val_size ({val_size}) must be in (0, 1) and leave "
            f"room for training")


def dropout_problem(p):
    """What is wrong with LEAD_DROPOUT `p`, the chance a lead is zeroed
    (lvr.data.beats.LeadDropout), or None: a chance in [0, 1)."""
    if 0.0 <= float(p) < 1.0:
        return None
    return f"LEAD_DROPOUT must be in [0, 1), got {p}"
