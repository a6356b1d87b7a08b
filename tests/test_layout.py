"""The code's layout rules (README: 'Code map'), checked on the import statements of every file.

scripts -> lvr -> model; lvr never imports a script; lvr's sub-packages import only the foundation
and the sub-packages before them (LAYERS); analysis never imports figure code; model/
imports only torch, numpy, the standard library and itself; no private name is used outside its
module; no import cycle; imports sit at the top of a file unless a comment says why not.
"""
import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"train_MCL_ResNet_1D_class2", "train_MCL_ResNet_1D_class4", "Saliency_ana2_sys",
           "prepare_data", "demo_cohort", "plot_training_curves", "compare_runs",
           "ecg_features_baseline", "pretrain", "evaluate"}
COMPATIBILITY = {"ECG_dataset", "para_define"}   # the original's module names, re-exporting lvr
TOP_LEVEL = SCRIPTS | COMPATIBILITY
# lvr modules that orchestrate a script's job and so may draw figures
ORCHESTRATORS = {"lvr.train.run", "lvr.explain.analysis", "lvr.train.pretraining"}   # they draw
MODEL_MAY_IMPORT = {"torch", "numpy", "model"} | set(sys.stdlib_module_names)
LAZY_REASON = re.compile(r"#.*\b(lazy|imported once)\b", re.IGNORECASE)


def is_figure_module(name):
    return name.startswith("lvr.report.") and name.endswith("figures")


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_files():
    files = [p for p in ROOT.glob("*.py")]
    files += sorted((ROOT / "lvr").rglob("*.py")) + sorted((ROOT / "model").glob("*.py"))
    return {module_name(p): p for p in files}


FILES = project_files()
PROJECT = set(FILES)


def imports_of(path):
    """(imported module, names taken from it, line, inside a function) for every import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside = {id(node) for func in ast.walk(tree)
              if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(func)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno, id(node) in inside) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [alias.name for alias in node.names]
            found.append((node.module, names, node.lineno, id(node) in inside))
            # `from lvr.data import demo` imports the module lvr.data.demo
            found += [(f"{node.module}.{n}", [], node.lineno, id(node) in inside)
                      for n in names if f"{node.module}.{n}" in PROJECT]
    return found


def project_imports(name):
    """Project modules that module `name` imports (its ancestors' packages excluded)."""
    result = set()
    for module, _, _, _ in imports_of(FILES[name]):
        while module and module not in PROJECT:
            module = module.rpartition(".")[0]
        if module and module != name:
            result.add(module)
    return result


GRAPH = {name: project_imports(name) for name in PROJECT}


def test_top_level_holds_the_scripts_and_the_originals_module_names():
    top = {p.stem for p in ROOT.glob("*.py")}
    assert top == TOP_LEVEL, f"unexpected top-level modules: {sorted(top ^ TOP_LEVEL)}"


def test_the_package_never_imports_a_script_or_a_top_level_module():
    offenders = {name: GRAPH[name] & TOP_LEVEL for name in PROJECT
                 if name.startswith(("lvr", "model")) and GRAPH[name] & TOP_LEVEL}
    assert not offenders


# lvr's sub-packages in import order: each may import the foundation (lvr's own modules), its own
# package and the packages of earlier layers; lvr/__init__.py says the same in words.
LAYERS = (("lvr.data", "lvr.measure", "lvr.stats"), ("lvr.prepare", "lvr.report"), ("lvr.train",),
          ("lvr.explain", "lvr.evaluate"))
PACKAGES = [package for layer in LAYERS for package in layer]
MAX_MODULE_LINES = 500
MAX_CONFIG_LINES = 300


def package_of(name):
    """The sub-package of module `name` ("lvr" for a foundation module), or None outside lvr."""
    return next((p for p in PACKAGES if name == p or name.startswith(p + ".")),
                "lvr" if name.split(".")[0] == "lvr" else None)


def allowed_packages(package):
    if package == "lvr":
        return {"lvr"}
    layer = next(i for i, names in enumerate(LAYERS) if package in names)
    return {"lvr", package} | {p for names in LAYERS[:layer] for p in names}


def test_every_sub_package_exists_and_says_what_it_holds_and_may_import():
    for package in PACKAGES:
        init = ROOT / package.replace(".", "/") / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "Imports " in doc and len(doc.split()) >= 15, f"{init}: say what it holds"


@pytest.mark.parametrize("package", ["lvr", *PACKAGES])
def test_a_sub_package_imports_only_the_foundation_and_earlier_packages(package):
    offenders = {name: sorted(m for m in GRAPH[name] if package_of(m)
                              and package_of(m) not in allowed_packages(package))
                 for name in PROJECT if package_of(name) == package}
    assert not {k: v for k, v in offenders.items() if v}


def test_the_rule_finds_an_import_against_the_order():
    assert "lvr.train" not in allowed_packages("lvr.report")
    assert "lvr.report" in allowed_packages("lvr.train")
    assert package_of("lvr.train.run") == "lvr.train" and package_of("lvr.config") == "lvr"
    assert package_of("model.resnet1d") is None


def test_no_module_is_over_500_lines_and_config_stays_small():
    lines = {name: len(path.read_text(encoding="utf-8").splitlines())
             for name, path in FILES.items() if name.startswith("lvr")}
    assert {n: c for n, c in lines.items() if c > MAX_MODULE_LINES} == {}
    assert lines["lvr.config"] <= MAX_CONFIG_LINES


# The run entry points: the only functions of lvr that read a script's configuration
ENTRY_POINTS = {"run_training", "pretrain", "run_evaluation", "run_saliency_analysis",
                "run_feature_baseline"}


def test_only_the_run_entry_points_take_the_configuration():
    """Library functions take the values they use: at most the five entry points have a
    parameter named config (docs/code.md)."""
    takers = {f"{name}.{node.name}" for name, path in FILES.items() if name.startswith("lvr")
              for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
              if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
              and "config" in [a.arg for a in node.args.args + node.args.kwonlyargs]}
    assert {taker.rsplit(".", 1)[1] for taker in takers} <= ENTRY_POINTS, sorted(takers)
    assert len(takers) <= 5


def test_no_test_sets_a_wall_clock_limit():
    """A test fails for a wrong result, never for a slow machine: subprocess limits are the
    hours-long hang guard of tests/helpers.py, not a number of seconds written in a test."""
    limited = [f"{path.name}:{number}" for path in sorted((ROOT / "tests").glob("test_*.py"))
               for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
               if re.search(r"timeout=\d", line)]
    assert limited == []


def test_analysis_never_imports_figure_code():
    offenders = {name: sorted(m for m in GRAPH[name] if is_figure_module(m))
                 for name in PROJECT if name.startswith("lvr") and not is_figure_module(name)
                 and package_of(name) != "lvr.report" and name not in ORCHESTRATORS}
    assert not {k: v for k, v in offenders.items() if v}


def test_model_imports_only_torch_numpy_the_standard_library_and_itself():
    for name in PROJECT:
        if name.split(".")[0] != "model":
            continue
        roots = {module.split(".")[0] for module, *_ in imports_of(FILES[name])}
        assert roots <= MODEL_MAY_IMPORT, f"{name} imports {sorted(roots - MODEL_MAY_IMPORT)}"


def test_no_private_name_is_used_outside_its_module():
    used = []
    for path in FILES.values():
        for module, names, line, _ in imports_of(path):
            used += [f"{path.name}:{line} {module}.{n}" for n in names if n.startswith("_")]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {alias.asname or alias.name: alias.name for node in ast.walk(tree)
                   if isinstance(node, ast.Import) for alias in node.names
                   if alias.name in PROJECT}
        aliases.update({alias.asname or alias.name: f"{node.module}.{alias.name}"
                        for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                        and node.module for alias in node.names
                        if f"{node.module}.{alias.name}" in PROJECT})
        used += [f"{path.name}:{node.lineno} {ast.unparse(node)}" for node in ast.walk(tree)
                 if isinstance(node, ast.Attribute) and node.attr.startswith("_")
                 and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                 and node.value.id in aliases]
    assert not used


def test_no_import_cycle():
    state = {}

    def visit(node, path):
        if state.get(node) == "done":
            return
        if state.get(node) == "open":
            cycle = path[path.index(node):] + [node]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        state[node] = "open"
        for nxt in sorted(GRAPH[node]):
            visit(nxt, path + [node])
        state[node] = "done"

    for name in sorted(PROJECT):
        visit(name, [])


def reachable(name):
    """Every project module that importing `name` imports, directly or through others."""
    seen, todo = set(), [name]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_explaining_a_model_does_not_depend_on_the_training_pipeline():
    assert "lvr.train.run" not in reachable("lvr.explain.analysis")
    assert "lvr.train.run" not in reachable("lvr.data.geometry")


def test_reachable_follows_imports_through_other_modules():
    assert {"lvr.train.run", "lvr.data.cohort", "lvr.errors"} <= reachable("lvr.evaluate.external")


def test_imports_inside_functions_say_why():
    unexplained = []
    for path in FILES.values():
        lines = path.read_text(encoding="utf-8").splitlines()
        for module, _, line, inside in imports_of(path):
            context = "\n".join(lines[max(0, line - 4):line])
            if inside and not LAZY_REASON.search(context):
                unexplained.append(f"{path.name}:{line} {module}")
    assert not unexplained


def code_map_entries():
    """File paths listed in the README's Code map (its first fenced block)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Code map", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    entries, folders = set(), []
    for raw in block.splitlines():
        match = re.match(r"^([\s│]*[├└]── )(\S+)", raw)
        if not match:   # the root ".", and a description's second line
            continue
        depth = len(match.group(1)) // 4 - 1
        item = match.group(2)
        folders = folders[:depth]
        if item.endswith("/"):
            folders.append(item.rstrip("/"))
            if match.end() < len(raw.rstrip()):   # a package's row with its description
                entries.add("/".join(folders + ["__init__.py"]))
        else:
            entries.add("/".join(folders + [item]))
    return entries


def test_readme_code_map_matches_the_tree():
    tree = {p.relative_to(ROOT).as_posix() for p in FILES.values()}
    tree |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "bench").glob("*.py")}
    listed = code_map_entries()
    assert listed == tree, (f"in the tree, not in the Code map: {sorted(tree - listed)}; "
                            f"in the Code map, not in the tree: {sorted(listed - tree)}")
