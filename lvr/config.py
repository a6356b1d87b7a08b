"""Script configuration: the UPPER_CASE constants at the top of a script are its interface.

Each constant is annotated with the values it accepts (a `lvr.options.Rule`), next to its name:

    EPOCHS: valid.integer(1) = 50         # training epochs

Any of them can be overridden on the command line as ``--lower_case_name=value``; the value is
converted to the constant's type. An unknown name is an error that lists the valid ones, and
``--help`` prints every name with its default, the comment written next to it and its rule.
``configure`` checks every constant, default or overridden, once, before the script does any
work: each value on its own, then the rules between options (RELATIONS), then that an option
typed on the command line acts in the chosen mode, then that the folders written can be.
"""
import ast
import re
import sys

from lvr.choices import split_sizes_problem, threshold_rule
from lvr.errors import UserError, run_script  # noqa: F401  (the scripts' entry)
from lvr.leads import DELINEATION_WINDOW_MS
from lvr.options import Rule, accepted
from lvr.run_folder import unwritable_folder_problem

TRUE_WORDS = {"true", "1", "yes", "y", "on"}
FALSE_WORDS = {"false", "0", "no", "n", "off"}
# Options a script no longer has, with the one line that says where their job went
RETIRED = {
    "EVALUATE": "scoring a finished run on another cohort is its own command now: python "
                "evaluate.py --train_dir=RUN --data_dir=OTHER (the training scripts only train)",
}


def option_rules(namespace):
    """name -> Rule of a script's namespace: its UPPER_CASE constants annotated with a Rule."""
    return {name: rule for name, rule in namespace.get("__annotations__", {}).items()
            if name.isupper() and isinstance(rule, Rule)}


def config_names(namespace):
    """The script's options, in the order the script declares them."""
    return list(option_rules(namespace))


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

WINDOW_NEEDED = (f"the window must reach {DELINEATION_WINDOW_MS[0]} ms before the R peak and "
                 f"{DELINEATION_WINDOW_MS[1]} ms after it, for the wave delineation")


def window_fits(before_s, after_s):
    """True if a window from `before_s` before to `after_s` after the R peak is long enough."""
    return (1000 * before_s >= DELINEATION_WINDOW_MS[0] - 1e-9
            and 1000 * after_s >= DELINEATION_WINDOW_MS[1] - 1e-9)


# Rules between options, for a script that has all the names: (names, test of their values, what
# is needed). Checked once each option is valid on its own.
RELATIONS = (
    (("TEST_SIZE", "VAL_SIZE"), lambda test, val: split_sizes_problem(test, val) is None,
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
    (("TEST_SIZE", "CV_FOLDS"), lambda test, folds: test > 0 or folds,
     "a run tests its model on TEST_SIZE of the patients, so TEST_SIZE must be above 0 (for "
     "cross-validation set CV_FOLDS instead)"),
)


def allowed_words(rule):
    return rule.allowed() if callable(rule.allowed) else rule.allowed


def option_problem(name, value, rule):
    """None if `value` is valid for option `name`, else the one-line message that says why."""
    if accepted(rule, value):
        return None
    try:
        detail = rule.detail(value) if rule.detail else None
    except (TypeError, ValueError, AttributeError):
        detail = None
    return (f"--{name.lower()}={value!r}: {f'{detail}; ' if detail else ''}must be "
            f"{allowed_words(rule)}")


def relation_problem(values):
    """The message for the first broken rule between the options' `values`, or None."""
    for names, test, needed in RELATIONS:
        if all(name in values for name in names) and not test(*(values[n] for n in names)):
            given = ", ".join(f"--{name.lower()}={values[name]!r}" for name in names)
            return f"{given}: {needed}"
    return None


def unused_option_problem(values, rules, typed):
    """The message for the first typed option that the mode `values` set would not use, or
    None."""
    for name in sorted(typed & set(rules)):
        if rules[name].used is None:
            continue
        option, value, case = rules[name].used
        acts = bool(values[option]) if value is True else values[option] == value
        if not acts:
            flag = f"--{option.lower()}"
            case = case or (f"unless {flag}={value}" if value is not True else
                            f"with {flag}=False" if values[option] is False else
                            f"without {flag}")
            return (f"--{name.lower()}={values[name]!r} has no effect {case}; leave it out, or "
                    f"change the option that makes it unused")
    return None


def output_problem(values, rules):
    """The message for the first folder the script writes into that cannot be written, or None."""
    for name, rule in rules.items():
        if rule.written and values[name]:
            problem = unwritable_folder_problem(values[name])
            if problem:
                return (f"--{name.lower()}={values[name]}: {problem}; choose a folder you can "
                        f"write, or fix its permissions")
    return None


def checked_values(values, rules, typed):
    """`values` (option name -> value), or UserError for its first problem: each fast value,
    the rules between options, each slow value (they import torch), options typed in a mode
    that does not use them, folders that cannot be written."""
    def raise_first(problems):
        problem = next((p for p in problems if p), None)
        if problem:
            raise UserError(problem)
    raise_first(option_problem(name, values[name], rules[name])
                for name in values if not rules[name].slow)
    raise_first([relation_problem(values)])
    raise_first(option_problem(name, values[name], rules[name])
                for name in values if rules[name].slow)
    raise_first([unused_option_problem(values, rules, typed), output_problem(values, rules)])
    return values


def typed_options(argv=None):
    """The UPPER_CASE names of the options given on the command line (--name=value)."""
    argv = sys.argv[1:] if argv is None else argv
    return {arg[2:].split("=", 1)[0].upper() for arg in argv
            if arg.startswith("--") and "=" in arg}


def constant_comments(path):
    """The comment of each constant in the script's source: on its line, or the line above."""
    comments, above = {}, ""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                match = re.match(r"^([A-Z][A-Z0-9_]*)\s*[:=][^#]*(#\s*(.+))?$", line.rstrip())
                if match:
                    comments[match.group(1)] = (match.group(3) or above).strip()
                above = line.strip()[1:] if line.startswith("#") else ""
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
    for name, rule in option_rules(namespace).items():
        comment = comments.get(name, "")
        allowed = f"  [{rule.allowed}]" if not rule.slow else ""
        lines.append(f"  --{name.lower()}={namespace[name]!r}"
                     + (f"    {comment}" if comment else "") + allowed)
    return "\n".join(lines)


def configure(namespace, argv=None):
    """Apply ``--name=value`` overrides to the script's constants, in place, and check every
    constant against its rule: a bad value raises UserError before any work starts.

    Returns the resolved configuration as a dict of UPPER_CASE name -> value.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    rules = option_rules(namespace)
    if any(arg in ("-h", "--help") for arg in argv):
        print(help_text(namespace))
        raise SystemExit(0)
    valid = ", ".join(f"--{n.lower()}" for n in rules)
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise UserError(f"unexpected argument {arg!r}: options are written --name=value. "
                            f"Valid names: {valid}")
        key, text = arg[2:].split("=", 1)
        name = key.upper()
        if name in RETIRED and name not in rules:
            raise UserError(f"--{key}: {RETIRED[name]}")
        if name not in rules or key != key.lower():
            raise UserError(f"unknown option --{key}. Valid names: {valid}")
        namespace[name] = converted_value(name, text, namespace[name])
    config = {name: namespace[name] for name in rules}
    return checked_values(config, rules, typed_options(argv))
