"""DeLong's paired AUC test against a direct O(m n) implementation and scikit-learn."""
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from lvr.stats.delong import delong_paired_test


def delong_by_definition(y, a, b):
    """The 1988 paper's estimator written out pair by pair (no ranks)."""
    def psi(x, z):
        return (x > z) + 0.5 * (x == z)
    pos, neg = y == 1, y == 0
    v10, v01 = [], []
    for s in (a, b):
        kernel = psi(s[pos][:, None], s[neg][None, :])          # (m, n)
        v10.append(kernel.mean(axis=1))
        v01.append(kernel.mean(axis=0))
    v10, v01 = np.array(v10), np.array(v01)
    m, n = v10.shape[1], v01.shape[1]
    s10 = (v10 - v10.mean(1, keepdims=True)) @ (v10 - v10.mean(1, keepdims=True)).T / (m - 1)
    s01 = (v01 - v01.mean(1, keepdims=True)) @ (v01 - v01.mean(1, keepdims=True)).T / (n - 1)
    cov = s10 / m + s01 / n
    diff = v10[0].mean() - v10[1].mean()
    z = diff / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    return v10.mean(1), z, 2 * stats.norm.sf(abs(z))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_equals_the_pairwise_definition_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    a = y * 1.0 + rng.normal(0, 1, 60)
    b = np.round(0.5 * a + rng.normal(0, 1, 60), 1)           # correlated, with ties
    found = delong_paired_test(y, a, b)
    aucs, z, p = delong_by_definition(y, a, b)
    assert found["auc_a"] == pytest.approx(roc_auc_score(y, a))
    assert found["auc_b"] == pytest.approx(roc_auc_score(y, b))
    assert [found["auc_a"], found["auc_b"]] == pytest.approx(aucs)
    assert found["z"] == pytest.approx(z) and found["p"] == pytest.approx(p)
    low, high = found["ci"]
    assert low < found["difference"] < high
    assert (found["p"] < 0.05) == (low > 0 or high < 0)       # the test and the interval agree


def test_swapping_the_scores_flips_the_sign_and_identical_scores_do_not_differ():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 25)
    a, b = y + rng.normal(0, 1, 50), y + rng.normal(0, 2, 50)
    ab, ba = delong_paired_test(y, a, b), delong_paired_test(y, b, a)
    assert ab["difference"] == pytest.approx(-ba["difference"])
    assert ab["p"] == pytest.approx(ba["p"])
    same = delong_paired_test(y, a, a)
    assert same["difference"] == 0 and same["se"] == 0 and same["p"] == 1.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="both classes"):
        delong_paired_test([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="labels but scores"):
        delong_paired_test([0, 1], [0.1, 0.2, 0.3], [0.3, 0.2])


def predictions_table(rng, n_patients=30, shift=0.0):
    import pandas as pd
    rows = []
    for patient in range(n_patients):
        label = patient % 2
        for beat in range(rng.integers(1, 4)):
            p = float(np.clip(0.5 + (label - 0.5) * 0.4 + shift + rng.normal(0, 0.25), 0, 1))
            rows.append(("NS_1" if label else "NS_0", str(patient), "", beat, label, 1 - p, p))
    return pd.DataFrame(rows, columns=["group", "patient", "record", "beat", "true_label",
                                       "prob_Normal", "prob_Abnormal"])


def test_compare_runs_tests_patient_means_of_two_predictions_files(tmp_path):
    import subprocess
    import sys
    rng = np.random.default_rng(4)
    a = predictions_table(rng)
    b = a.copy()
    b["prob_Abnormal"] = np.clip(a["prob_Abnormal"] + rng.normal(0, 0.3, len(a)), 0, 1)
    b["prob_Normal"] = 1 - b["prob_Abnormal"]
    for name, table in (("a", a), ("b", b.sample(frac=1, random_state=0))):   # any row order
        (tmp_path / name).mkdir()
        table.to_csv(tmp_path / name / "predictions.csv", index=False)
    result = subprocess.run([sys.executable, "compare_runs.py", f"--run_a={tmp_path / 'a'}",
                             f"--run_b={tmp_path / 'b'}", f"--output={tmp_path / 'out.json'}"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    import json
    found = json.loads((tmp_path / "out.json").read_text())
    mean_a = a.groupby("patient")[["true_label", "prob_Abnormal"]].mean()
    mean_b = b.groupby("patient")["prob_Abnormal"].mean().loc[mean_a.index]
    expected = delong_paired_test(mean_a["true_label"], mean_a["prob_Abnormal"], mean_b)
    assert found["cases"] == 30 and found["level"] == "patient"
    assert found["auc_a"] == pytest.approx(roc_auc_score(mean_a["true_label"],
                                                         mean_a["prob_Abnormal"]))
    assert found["p"] == pytest.approx(expected["p"]) and found["z"] == pytest.approx(expected["z"])
    assert "AUC A" in result.stdout and "DeLong" in result.stdout


def test_compare_runs_refuses_runs_that_scored_different_beats(tmp_path):
    import subprocess
    import sys
    rng = np.random.default_rng(5)
    a = predictions_table(rng)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a.to_csv(tmp_path / "a" / "predictions.csv", index=False)
    a.iloc[:-2].to_csv(tmp_path / "b" / "predictions.csv", index=False)
    result = subprocess.run([sys.executable, "compare_runs.py", f"--run_a={tmp_path / 'a'}",
                             f"--run_b={tmp_path / 'b'}"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "different beats (2 only in A, 0 only in B)" in result.stderr + result.stdout


@pytest.mark.parametrize("y, a, b, words", [
    # one positive patient: the positives' covariance (np.cov of one case) is undefined
    ([1, 0, 0, 0, 0], [0.9, 0.1, 0.2, 0.3, 0.95], [0.5, 0.4, 0.3, 0.2, 0.1], "one positive"),
    # a separates perfectly, b ties every case: the placements differ by a constant, se 0
    ([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0.5] * 6, "standard error is 0"),
])
def test_a_difference_without_a_standard_error_is_not_computable(y, a, b, words):
    found = delong_paired_test(y, a, b)
    assert found["p"] is None and found["ci"] is None and found["z"] is None
    assert found["reason"].startswith("not computable: ") and words in found["reason"]
    assert found["difference"] != 0


def test_compare_runs_reports_a_test_it_cannot_compute(tmp_path):
    import json
    import subprocess
    import sys
    rng = np.random.default_rng(6)
    a = predictions_table(rng, n_patients=6)
    a = a[(a["true_label"] == 0) | (a["patient"] == "1")]        # one positive patient
    b = a.copy()
    b["prob_Abnormal"] = 0.5
    for name, table in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        table.to_csv(tmp_path / name / "predictions.csv", index=False)
    result = subprocess.run([sys.executable, "compare_runs.py", f"--run_a={tmp_path / 'a'}",
                             f"--run_b={tmp_path / 'b'}", f"--output={tmp_path / 'out.json'}"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "not computable: " in result.stdout and "one positive" in result.stdout
    found = json.loads((tmp_path / "out.json").read_text())
    assert found["p"] is None and found["ci"] is None and found["reason"].startswith("not comp")
