import pytest

from lvr import options as valid
from lvr.config import UserError, configure, converted_value

RULES = {"DATA_DIR": valid.folder(), "EPOCHS": valid.integer(1), "LR": valid.POSITIVE,
         "RESUME": valid.FLAG, "CLASS_NAMES": valid.CLASS_NAMES, "LEADS": valid.LEADS,
         "MAX_FIGURES": valid.MAX_FIGURES}


def namespace():
    """A script's namespace: its options are the UPPER_CASE names annotated with a rule."""
    return {"__file__": "script.py", "__annotations__": dict(RULES), "DATA_DIR": "data",
            "EPOCHS": 50, "LR": 1e-4, "RESUME": False, "CLASS_NAMES": (),
            "LEADS": ("V1", "V2"), "MAX_FIGURES": None, "lowercase": 1, "_PRIVATE": 2,
            "UNANNOTATED": 3}


def test_overrides_are_converted_to_the_constants_type():
    ns = namespace()
    config = configure(ns, ["--epochs=3", "--lr=0.01", "--resume=True", "--data_dir=/x",
                            "--leads=I,aVL", "--max_figures=2", "--class_names=a,b"])
    assert ns["EPOCHS"] == 3 and isinstance(ns["EPOCHS"], int)
    assert ns["LR"] == 0.01 and ns["RESUME"] is True and ns["DATA_DIR"] == "/x"
    assert ns["LEADS"] == ("I", "aVL") and ns["MAX_FIGURES"] == 2
    assert ns["CLASS_NAMES"] == ("a", "b")
    assert set(config) == {"DATA_DIR", "EPOCHS", "LR", "RESUME", "CLASS_NAMES", "LEADS",
                           "MAX_FIGURES"}


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UserError) as error:
        configure(namespace(), ["--epoch=3"])
    assert "--epoch" in str(error.value) and "--epochs" in str(error.value)
    assert "--data_dir" in str(error.value)


@pytest.mark.parametrize("arg", ["--EPOCHS=3", "epochs=3", "--epochs"])
def test_malformed_arguments_are_refused(arg):
    with pytest.raises(UserError):
        configure(namespace(), [arg])


@pytest.mark.parametrize("name, text, default", [("EPOCHS", "three", 1), ("LR", "x", 0.1),
                                                  ("RESUME", "maybe", False)])
def test_bad_values_name_the_option(name, text, default):
    with pytest.raises(UserError, match=f"--{name.lower()}"):
        converted_value(name, text, default)


def test_help_lists_names_defaults_comments_and_rules(tmp_path, capsys):
    script = tmp_path / "script.py"
    script.write_text('EPOCHS: valid.integer(1) = 50   # training epochs\n'
                      '# the learning rate\nLR: valid.POSITIVE = 0.1\n')
    with pytest.raises(SystemExit) as stop:
        configure({"__file__": str(script), "EPOCHS": 50, "LR": 0.1,
                   "__annotations__": {"EPOCHS": valid.integer(1), "LR": valid.POSITIVE}},
                  ["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "--epochs=50    training epochs  [a positive integer]" in out
    assert "--lr=0.1    the learning rate  [a number > 0]" in out
