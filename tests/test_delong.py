"""DeLong's paired AUC test against a direct O(m n) implementation and scikit-learn."""
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from lvr.delong import delong_paired_test


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
