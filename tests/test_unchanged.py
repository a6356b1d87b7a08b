"""Behaviour unchanged: the demo scripts (CPU, fixed seeds, a short configuration) give the same
test_eval_results.json, quantitative_consistency_analysis.json and explanation_checks.json (one
thread) as the code before the lvr/ package was made (commit check_unchanged.REFERENCE, run on this
machine).
`python bench/check_unchanged.py --readme` runs the same comparison on the README's commands."""
import os
import subprocess
import sys

import pytest

from helpers import HANG_LIMIT_S, ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import check_unchanged  # noqa: E402


def reference_commit_problem(revision):
    """None if git can give commit `revision`; else why not, after trying to fetch it (a shallow
    clone lacks the history)."""
    def has_commit():
        return subprocess.run(["git", "-C", ROOT, "cat-file", "-e", f"{revision}^{{commit}}"],
                              capture_output=True).returncode == 0
    if has_commit():
        return None
    fetch = subprocess.run(["git", "-C", ROOT, "fetch", "--quiet", "--depth=1", "origin",
                            revision], capture_output=True, text=True, timeout=HANG_LIMIT_S)
    if has_commit():
        return None
    return (f"needs commit {revision} from git history, which this clone lacks, and "
            f"`git fetch origin {revision}` failed: {(fetch.stderr or 'no git').strip()[-200:]}")


@pytest.mark.slow
def test_quick_demo_outputs_equal_those_of_the_code_before_the_move():
    """The pre-move commit and the current code, both run here: golden files recorded on
    another CPU can differ in the last digits (other float kernels), the two runs here cannot."""
    problem = reference_commit_problem(check_unchanged.REFERENCE)
    if problem:
        pytest.skip(problem)
    problems = check_unchanged.check("quick", log=lambda *_: None,
                                     reference=check_unchanged.REFERENCE)
    assert not problems, "\n".join(problems[:20])


def test_the_comparison_sees_a_changed_number():
    golden = {"roc_auc": 0.95, "confusion_matrix": [[3, 1], [0, 4]], "name": "a"}
    assert check_unchanged.differences(golden, golden) == []
    assert check_unchanged.differences(golden, {**golden, "roc_auc": 0.95 + 1e-9}) == []
    assert check_unchanged.differences(golden, {**golden, "roc_auc": 0.951}) == [
        "/roc_auc: 0.95 -> 0.951"]
    assert check_unchanged.differences(golden, {**golden, "confusion_matrix": [[3, 1], [1, 3]]})
    assert check_unchanged.differences(golden, {"roc_auc": 0.95, "name": "a"}) == [
        "/confusion_matrix: missing"]
