"""Script configuration: the UPPER_CASE constants at the top of a script are its interface.

Any of them can be overridden on the command line as ``--lower_case_name=value``; the value is
converted to the constant's type. An unknown name is an error that lists the valid ones, and
``--help`` prints every name with its default and the comment written next to it.

Scripts raise ``UserError`` for mistakes the user can fix (bad data, bad option); ``run_script``
prints such an error as one clear message, without a traceback, and exits with status 2.
"""
import ast
import re
import sys

CONFIG_TYPES = (bool, int, float, str, tuple, list, type(None))
TRUE_WORDS = {"true", "1", "yes", "y", "on"}
FALSE_WORDS = {"false", "0", "no", "n", "off"}


class UserError(Exception):
    """A problem with the user's input or options: reported as a message, never a traceback."""


def config_names(namespace):
    """The UPPER_CASE constants of a script namespace that form its configuration."""
    return [name for name, value in namespace.items()
            if name.isupper() and not name.startswith("_") and isinstance(value, CONFIG_TYPES)]


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
    lines.append("options (constants at the top of the script):")
    for name in config_names(namespace):
        comment = comments.get(name, "")
        lines.append(f"  --{name.lower()}={namespace[name]!r}" + (f"    {comment}" if comment else ""))
    return "\n".join(lines)


def configure(namespace, argv=None):
    """Apply ``--name=value`` overrides to the script's constants, in place.

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
    return {name: namespace[name] for name in names}


def run_script(main):
    """Run a script's main(); a UserError becomes a one-line message and exit status 2."""
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("\ninterrupted.", file=sys.stderr)
        raise SystemExit(130) from None
