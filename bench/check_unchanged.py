"""Check that a code change left the results unchanged: run the scripts on the demo cohort (CPU,
fixed seeds) and compare their JSON outputs with those recorded in tests/data/golden/.

    python bench/check_unchanged.py              # quick configuration (about 1 min; also a test)
    python bench/check_unchanged.py --readme     # the README's demo commands, 1 thread (15 min)
    python bench/check_unchanged.py --record     # record the golden files from the current code
    python bench/check_unchanged.py --reference=REV   # compare with commit REV run here (git)

The quick configuration also scores the trained 2-class run with evaluate.py (on the demo cohort
it was trained on); code from before evaluate.py ran the same job as the training script's
--evaluate (OLDER_COMMANDS), and a reference commit that had neither is compared without it.

Only the scripts' command lines are used, so the same check runs against any version of the code.
Golden files hold one machine's numbers: another CPU can pick other float kernels and give other
last digits, which training amplifies. --reference=REV avoids that: it runs commit REV's code
(from git) and the current code on this machine and compares the two.
Numbers must agree to RTOL/ATOL. The compared files hold results only (no times, paths or
versions); keys added since the recording are allowed, keys removed are reported.
"""
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, script_env

GOLDEN = ROOT / "tests" / "data" / "golden"
RTOL = 1e-5                 # CPU results are deterministic; this allows last-digit float noise
ATOL = 1e-7
# torch threads per mode. With 2 or more threads, two runs of the same code can differ (float sums
# in another order: one beat more or less right, another best epoch; seen on a busy machine and on
# CI for the quick 4-class run); one thread reproduces even a 50-epoch run exactly.
THREADS = {"quick": "1", "readme": "1"}
# The model and learning rate the scripts had by default until docs/benchmark.md changed them:
# given explicitly, so the reference commit and the current code train the same network.
EARLIER_DEFAULTS = ["--experiment=ca_ms_v2", "--lr=1e-4"]
QUICK_TRAIN = ["--epochs=2", "--bootstrap=200", "--device=cpu", *EARLIER_DEFAULTS]
QUICK_SALIENCY = ["--max_figures=1", "--num_samples=3", "--sanity_samples=8",
                  "--deletion_draws=3", "--delineation_leads=II,V2,V5", "--device=cpu",
                  "--figure_workers=1"]
# (script, options, output folder, JSON files compared); folders are relative to the work dir
RUNS = {
    "quick": [
        ("train_MCL_ResNet_1D_class2.py", QUICK_TRAIN, "results_class2",
         ["test_eval_results.json"]),
        ("Saliency_ana2_sys.py", QUICK_SALIENCY + ["--train_dir=results_class2"],
         "output_saliencyana2",
         ["quantitative_consistency_analysis.json", "explanation_checks.json"]),
        ("train_MCL_ResNet_1D_class4.py", ["--epochs=1", "--bootstrap=200", "--device=cpu",
                                           *EARLIER_DEFAULTS],
         "results_class4", ["test_eval_results.json"]),
        ("evaluate.py", ["--train_dir=results_class2", "--output_dir=evaluation",
                         "--bootstrap=200", "--device=cpu"],
         "evaluation", ["test_eval_results.json"]),
    ],
    "readme": [
        ("train_MCL_ResNet_1D_class2.py", EARLIER_DEFAULTS, "results_class2",
         ["test_eval_results.json"]),
        ("Saliency_ana2_sys.py", [], "output_saliencyana2",
         ["quantitative_consistency_analysis.json", "explanation_checks.json"]),
        ("train_MCL_ResNet_1D_class4.py", EARLIER_DEFAULTS, "results_class4",
         ["test_eval_results.json"]),
    ],
}


# A command of the current code, as code from before it wrote it (its output is the same)
OLDER_COMMANDS = {
    "evaluate.py": ("train_MCL_ResNet_1D_class2.py",
                    ["--evaluate=results_class2", "--output_dir=evaluation", "--bootstrap=200",
                     "--device=cpu"]),
}
# the last commit before the lvr/ package: the behaviour to keep (in full, so git can fetch it)
REFERENCE = "f8bc68c6b55eaefac3a48997e2a34c145e7f5efe"
# Names that changed without any number changing: the demo's cohort.json names its binary
# classes for what they are instead of the original's "Normal"/"Abnormal".
RENAMED = {"Normal": "non-LVR", "Abnormal": "LVR"}


def run_scripts(mode, work_dir, log=print, code=ROOT):
    """Run the mode's scripts of the code in `code` with `work_dir` as working directory."""
    env = script_env(THREADS[mode], code)
    for script, options, _, _ in runs_of(mode, code):
        log(f"  python {script} {' '.join(options)}")
        done = subprocess.run([sys.executable, str(Path(code) / script), *options], cwd=work_dir,
                              env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def runs_of(mode, code=ROOT):
    """The mode's (script, options, folder, files) as the code in `code` runs them: a script it
    lacks is run by its OLDER_COMMANDS form, or left out where the code had no such job."""
    runs = []
    for script, options, folder, names in RUNS[mode]:
        if not (Path(code) / script).exists():
            older, options = OLDER_COMMANDS.get(script, (None, None))
            if older is None or "--evaluate" not in (Path(code) / older).read_text():
                continue
            script = older
        runs.append((script, options, folder, names))
    return runs


def renamed(value):
    """A JSON value with every key and text of RENAMED replaced by its new name."""
    if isinstance(value, dict):
        return {RENAMED.get(k, k): renamed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [renamed(v) for v in value]
    return RENAMED.get(value, value) if isinstance(value, str) else value


def differences(expected, actual, where=""):
    """Paths at which two JSON values differ beyond RTOL/ATOL."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        # keys added since the recording are new results, not changed ones
        found = [f"{where}/{k}: missing" for k in expected if k not in actual]
        for key in expected.keys() & actual.keys():
            found += differences(expected[key], actual[key], f"{where}/{key}")
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: length {len(expected)} -> {len(actual)}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual, strict=True))
                for d in differences(e, a, f"{where}[{i}]")]
    numbers = (int, float)
    if (isinstance(expected, numbers) and isinstance(actual, numbers)
            and not isinstance(expected, bool) and not isinstance(actual, bool)):
        if math.isnan(expected) and math.isnan(actual):
            return []
        if math.isclose(expected, actual, rel_tol=RTOL, abs_tol=ATOL):
            return []
        return [f"{where}: {expected!r} -> {actual!r}"]
    return [] if expected == actual else [f"{where}: {expected!r} -> {actual!r}"]


def outputs(mode, work_dir, code=ROOT):
    """{golden file name: JSON} of the outputs the mode compares."""
    found = {}
    for script, _, folder, names in runs_of(mode, code):
        for name in names:
            with open(Path(work_dir) / folder / name, encoding="utf-8") as handle:
                found[golden_name(script, folder, name)] = json.load(handle)
    return found


def golden_name(script, folder, name):
    """The golden file of `name` in `folder`: named for the script that writes the folder."""
    writer = next((s for s, _, f, _ in RUNS["quick"] + RUNS["readme"] if f == folder), script)
    return f"{Path(writer).stem}__{name}"


def reference_outputs(mode, revision, log=print):
    """The mode's outputs of commit `revision`'s code, run on this machine."""
    with tempfile.TemporaryDirectory(prefix="lvr-reference-") as code, \
            tempfile.TemporaryDirectory(prefix="lvr-unchanged-") as work_dir:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision],
                                 capture_output=True)
        if archive.returncode:
            raise RuntimeError(f"git cannot give commit {revision} of {ROOT} (a shallow clone? "
                               f"fetch the history): {archive.stderr.decode()[-500:]}")
        subprocess.run(["tar", "-x", "-C", code], input=archive.stdout, check=True)
        log(f"Running the {mode} configuration of {revision} in {work_dir}:")
        run_scripts(mode, work_dir, log, code=code)
        return outputs(mode, work_dir, code)


def check(mode="quick", record=False, log=print, reference=None):
    """Run and compare with the golden files, or with commit `reference` run here (or record);
    returns the list of differences (empty: unchanged)."""
    golden_dir = GOLDEN / mode
    with tempfile.TemporaryDirectory(prefix="lvr-unchanged-") as work_dir:
        log(f"Running the {mode} configuration in {work_dir}:")
        run_scripts(mode, work_dir, log)
        found = outputs(mode, work_dir)
    if reference:
        expected = reference_outputs(mode, reference, log)
        return [f"{name}{d}" for name, payload in found.items() if name in expected
                for d in differences(renamed(expected[name]), payload)]
    if record:
        if golden_dir.exists():
            shutil.rmtree(golden_dir)
        golden_dir.mkdir(parents=True)
        for name, payload in found.items():
            with open(golden_dir / name, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, indent=1, sort_keys=True)
        log(f"Recorded {len(found)} files in {golden_dir}")
        return []
    problems = []
    for name, payload in found.items():
        if not (golden_dir / name).exists():   # a job newer than the recording
            log(f"  {name}: not compared, no golden file in {golden_dir} (--reference=REV "
                f"compares it with a commit run here)")
            continue
        with open(golden_dir / name, encoding="utf-8") as handle:
            problems += [f"{name}{d}" for d in differences(renamed(json.load(handle)), payload)]
    return problems


def main():
    args = sys.argv[1:]
    references = [a.split("=", 1)[1] for a in args if a.startswith("--reference=")]
    unknown = [a for a in args if a not in ("--readme", "--record")
               and not a.startswith("--reference=")]
    if unknown:
        print(f"error: unknown option(s) {' '.join(unknown)}; valid: --readme, --record, "
              f"--reference=REV", file=sys.stderr)
        raise SystemExit(2)
    mode = "readme" if "--readme" in args else "quick"
    reference = references[-1] if references else None
    problems = check(mode, record="--record" in args, reference=reference)
    against = f"commit {reference} run here" if reference else GOLDEN / mode
    if problems:
        print(f"CHANGED: {len(problems)} value(s) differ from {against}:")
        for line in problems[:40]:
            print(f"  {line}")
        raise SystemExit(1)
    if "--record" not in args:
        print(f"Unchanged: every compared value equals {against} (rtol {RTOL}).")


if __name__ == "__main__":
    main()
