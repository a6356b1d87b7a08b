"""The kinds of value a script constant can take, written as its annotation in the script:

    EPOCHS: valid.integer(1) = 50         # training epochs
    IG_STEPS: valid.integer(1).only_if("METHOD", "integrated_gradients") = 32

A `Rule` says which values it accepts and, in words that follow "must be", what they are;
`lvr.config` reads the annotations, checks every value before any work starts and lists the
words in --help. Rules that need a slow import (the model names need torch) are checked last.
"""
import math
import os
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from lvr.choices import (LEAD_IMPORTANCE_SOURCES, LEVELS, LVR_SIGNS, METHODS, NORMALISATIONS,
                         PAIR_KINDS, PTBXL_TASKS, SELECTION_RULES, TASKS, THRESHOLD_WORDS, UNITS,
                         WAVE_ALIGNMENTS, WAVE_REFERENCES, dropout_problem,
                         threshold_rule)
from lvr.leads import LEAD_BY_KEY, LEAD_NAMES, lead_key


class Rule(NamedTuple):
    """What an option accepts. `accepts(value)` is true for a valid value; `allowed` says which
    in words (a function that returns them, for a slow rule); `detail(value)`, if given, names
    what is wrong. `slow`: checked after every other option. `used`: (option, value, case) for
    an option that acts only while that option has that value (True: any set value); typed
    otherwise it is refused, `case` (or words made from the two) saying when. `written`: a
    folder the script writes into, checked for writing before the work starts."""
    accepts: Callable
    allowed: str | Callable
    detail: Callable | None = None
    slow: bool = False
    used: tuple | None = None
    written: bool = False

    def only_if(self, option, value: Any = True, case=None):
        """This rule, for an option that acts only while `option` is `value` (True: set)."""
        return self._replace(used=(option, value, case))


def is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_sequence(value):
    return isinstance(value, (tuple, list))


def accepted(rule, value):
    """True if `rule` accepts `value`; a value of the wrong shape is simply not accepted."""
    try:
        return bool(rule.accepts(value))
    except (TypeError, ValueError, AttributeError, IndexError):
        return False


def integer(low, high=None):
    """An integer in low..high (no upper bound when high is None)."""
    if high is not None:
        words = f"an integer in {low}..{high}"
    else:
        words = "a positive integer" if low == 1 else f"an integer >= {low}"
    return Rule(lambda v: is_integer(v) and low <= v and (high is None or v <= high), words)


def number(low=-math.inf, high=math.inf, low_open=False, high_open=False):
    """A finite number from `low` to `high`; an open end excludes the bound itself."""
    def inside(v):
        return (is_number(v) and math.isfinite(v) and (low < v if low_open else low <= v)
                and (v < high if high_open else v <= high))
    if high == math.inf:
        words = "a number" if low == -math.inf else f"a number {'>' if low_open else '>='} {low:g}"
    else:
        words = (f"a number in {'(' if low_open else '['}{low:g}, {high:g}"
                 f"{')' if high_open else ']'}")
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


def folder(optional=False, written=False):
    """A folder path (it may not exist yet) that is not an existing file; "" too if optional."""
    def accepts(v):
        if v == "":
            return optional
        return isinstance(v, str) and (os.path.isdir(v) or not os.path.exists(v))
    words = "a folder path, not an existing file"
    return Rule(accepts, f"empty or {words}" if optional else words, written=written)


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


def leads_ok(names):
    return is_sequence(names) and len(names) > 0 and not_leads(names) is None


def prepare_task_ok(text):
    """The forms lvr.prepare.record_tables.task_labels reads; it checks the group names."""
    kind, _, rest = text.partition(":")
    groups = split_names(rest)
    return (text in PTBXL_TASKS or (kind == "binary" and len(groups) == 2)
            or (kind == "multiclass" and len(groups) >= 2))


def model_names():
    from model import EXPERIMENT_NAMES  # lazy: torch takes 1.5 s; --help must not wait for it
    return EXPERIMENT_NAMES


LEAD_LIST = ", ".join(LEAD_NAMES)
FLAG = Rule(lambda v: isinstance(v, bool), "true or false")
TEXT = Rule(lambda v: isinstance(v, str), "text")
POSITIVE = number(0, low_open=True)
NON_NEGATIVE = number(0)
FRACTION = number(0, 1, high_open=True)       # a chance or share that must leave something over
SHARE = number(0, 1)
OPEN_FRACTION = number(0, 1, low_open=True, high_open=True)
SEED = integer(0, 2**32 - 1)                  # numpy's seed range
DEVICE = matching(r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N")
TASK = one_of(*TASKS)
NORMALISATION = one_of(*NORMALISATIONS)
SELECT_BY = one_of(*SELECTION_RULES)
PAIRS = one_of(*PAIR_KINDS)
METHOD = one_of(*METHODS)
WAVE_REFERENCE = one_of(*WAVE_REFERENCES)
WAVE_ALIGNMENT = one_of(*WAVE_ALIGNMENTS)
LEAD_IMPORTANCE = one_of(*LEAD_IMPORTANCE_SOURCES)
LEVEL = one_of(*LEVELS)
LVR_WAVE = one_of(*LVR_SIGNS)
LEAD_DROPOUT = Rule(lambda v: is_number(v) and dropout_problem(v) is None, FRACTION.allowed)
THRESHOLD = Rule(lambda v: threshold_rule(v) is not None, THRESHOLD_WORDS)
EXPERIMENT = Rule(lambda v: v in model_names(), lambda: "one of " + ", ".join(model_names()),
                  slow=True)
CV_FOLDS = Rule(lambda v: is_integer(v) and (v == 0 or v >= 2), "0 or an integer >= 2")
CHECKPOINT = matching(r".*\S.*", "a file name in TRAIN_DIR")
MAX_FIGURES = Rule(lambda v: v is None or accepted(integer(0), v), "None or an integer >= 0")
CLASS_NAMES = Rule(lambda v: is_sequence(v) and all(
    isinstance(n, (str, int)) and not isinstance(n, bool) and str(n).strip() for n in v),
    "empty (the cohort's names) or names, one per class")
LEADS = Rule(leads_ok, f"one or more of {LEAD_LIST}", not_leads)
LEAD_NAME = Rule(lambda v: isinstance(v, str) and lead_key(v) in LEAD_BY_KEY,
                 f"a lead name, any case: {LEAD_LIST}")
DELINEATION_LEADS = Rule(lambda v: v.strip().lower() == "all" or leads_ok(split_names(v)),
                         f"all, or some of {LEAD_LIST} (comma-separated)",
                         lambda v: not_leads(split_names(v)))
FREQUENCIES = Rule(lambda v: is_sequence(v) and all(accepted(POSITIVE, f) for f in v),
                   "frequencies > 0 in Hz (empty: no notch)")
NON_LVR_CHANGE = Rule(lambda v: is_sequence(v) and len(v) == 3 and accepted(SHARE, v[0])
                      and accepted(ascending(number(), strict=False), v[1:]),
                      "(share, low, high): share in [0, 1], low <= high")
PREPARE_TASK = Rule(lambda v: isinstance(v, str) and prepare_task_ok(v),
                    f"{', '.join(PTBXL_TASKS)}, binary:NEG,POS or multiclass:A,B,C")
BEATS = matching(r"(?i)\s*(all|median|(first|random):0*[1-9]\d*)\s*",   # beat_selection's forms
                 "all, median, first:K or random:K with K >= 1")
MEASUREMENTS_FILE = Rule(lambda v: isinstance(v, str),   # lvr.evaluate.baseline checks the file
                         "empty, or an earlier baseline run's measurements.npz or its folder")
UNIT = Rule(lambda v: isinstance(v, str) and v.strip().lower() in {"", *(u.lower() for u in UNITS)},
            f"empty (each file's stated unit) or one of {', '.join(UNITS)}")
