"""lead_stats against independent implementations (pingouin, scipy) and a published table."""
import json
import warnings

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import stats

from lvr.explain.lead_stats import (ICC_FORMS, compute_icc, ground_truth_check, icc_all_forms,
                                    kendall_w, subgroup_lead_statistics)
from lvr.explain.patient_stats import patient_level_lead_statistics

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
# pingouin >= 0.6 labels the forms after McGraw & Wong; older versions use Shrout & Fleiss names.
PINGOUIN_LABELS = {"ICC1": ("ICC1", "ICC(1,1)"), "ICC2": ("ICC2", "ICC(A,1)"),
                   "ICC3": ("ICC3", "ICC(C,1)"), "ICC1k": ("ICC1k", "ICC(1,k)"),
                   "ICC2k": ("ICC2k", "ICC(A,k)"), "ICC3k": ("ICC3k", "ICC(C,k)")}
# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; Table 3 gives the ICCs.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8],
                          [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], dtype=float)
SHROUT_FLEISS_PUBLISHED = {"ICC1": .17, "ICC2": .29, "ICC3": .71,
                           "ICC1k": .44, "ICC2k": .62, "ICC3k": .91}


def pingouin_icc(data):
    """pingouin's table for our layout (rows = raters, columns = targets), CIs unrounded."""
    data = np.asarray(data)
    long = pd.DataFrame([{"target": t, "rater": r, "score": data[r, t]}
                         for r in range(data.shape[0]) for t in range(data.shape[1])])
    saved = dict(pg.options)
    pg.options.update({"round": None, "round.column.CI95": None, "round.column.CI95%": None})
    try:
        table = pg.intraclass_corr(data=long, targets="target", raters="rater", ratings="score")
    finally:
        pg.options.clear()
        pg.options.update(saved)
    ci_column = "CI95" if "CI95" in table.columns else "CI95%"
    rows = {}
    for form, labels in PINGOUIN_LABELS.items():
        row = table[table["Type"].isin(labels)].iloc[0]
        rows[form] = {"icc": row["ICC"], "ci95": list(row[ci_column]), "F": row["F"],
                      "df1": row["df1"], "df2": row["df2"], "p": row["pval"]}
    return rows


def assert_matches_pingouin(data):
    ours, theirs = icc_all_forms(data), pingouin_icc(data)
    for form in ICC_FORMS:
        assert ours[form]["icc"] == pytest.approx(theirs[form]["icc"], rel=1e-9, abs=1e-12), form
        assert ours[form]["ci95"] == pytest.approx(theirs[form]["ci95"], rel=1e-7, abs=1e-10), form
        assert ours[form]["F"] == pytest.approx(theirs[form]["F"], rel=1e-9), form
        assert ours[form]["p"] == pytest.approx(theirs[form]["p"], rel=1e-7, abs=1e-15), form
        assert (ours[form]["df1"], ours[form]["df2"]) == (theirs[form]["df1"], theirs[form]["df2"])
        assert compute_icc(data, form) == (ours[form]["icc"], *ours[form]["ci95"])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(2, 12), (3, 4), (7, 12), (40, 12), (12, 3)])
def test_all_forms_match_pingouin_on_random_data(seed, shape):
    rng = np.random.default_rng(seed)
    # A target effect plus rater bias plus noise, so every form is away from zero.
    data = (rng.normal(size=(1, shape[1])) + 0.5 * rng.normal(size=(shape[0], 1))
            + rng.normal(size=shape))
    assert_matches_pingouin(data)


def test_all_forms_match_pingouin_on_normalised_importance():
    importance = np.random.default_rng(3).gamma(2.0, size=(25, 12)) * np.linspace(1, 3, 12)
    assert_matches_pingouin(importance / importance.sum(axis=1, keepdims=True))


def test_shrout_fleiss_published_values():
    data = SHROUT_FLEISS.T  # our layout: rows are the 4 judges, columns the 6 targets
    assert_matches_pingouin(data)
    for form, published in SHROUT_FLEISS_PUBLISHED.items():
        assert round(compute_icc(data, form)[0], 2) == published, form


def test_default_is_one_way_single_measure():
    data = SHROUT_FLEISS.T
    assert compute_icc(data) == compute_icc(data, "ICC1")
    assert icc_all_forms(data)["ICC1"]["description"].startswith("ICC(1,1) one-way random")


def test_unknown_form_lists_valid_forms():
    with pytest.raises(ValueError, match="ICC1, ICC2, ICC3, ICC1k, ICC2k, ICC3k"):
        compute_icc(SHROUT_FLEISS.T, "ICC(2,1)")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_raises(bad):
    data = SHROUT_FLEISS.T.copy()
    data[1, 2] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        compute_icc(data)


def all_numbers(forms):
    for row in forms.values():
        yield row["icc"]
        yield from row["ci95"]
        yield from (row[key] for key in ("F", "p") if row[key] is not None)


@pytest.mark.parametrize("data, expected", [
    (np.full((6, 12), 1 / 12), 0.0),                        # all equal: no target variance
    (np.tile(np.arange(1.0, 13.0), (6, 1)), 1.0),           # constant columns: exact agreement
    (np.tile(np.arange(6.0), (12, 1)).T, 0.0),              # equal column means, rater bias only
])
def test_degenerate_inputs_follow_convention_without_nan_or_warnings(data, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forms = icc_all_forms(data)
    assert all(np.isfinite(value) for value in all_numbers(forms))
    for form in ("ICC1", "ICC3", "ICC1k", "ICC3k"):
        assert forms[form]["icc"] == expected
        assert forms[form]["ci95"] == [expected, expected]
    json.dumps(forms, allow_nan=False)


def test_zero_residual_with_rater_bias_is_limit_of_pingouin():
    exact = np.tile(np.arange(12.0), (5, 1)) + np.arange(5.0)[:, None]
    forms = icc_all_forms(exact)
    assert forms["ICC3"]["icc"] == 1.0 and forms["ICC2"]["F"] is None
    nearly = exact + 1e-7 * np.random.default_rng(0).normal(size=exact.shape)
    theirs = pingouin_icc(nearly)
    for form in ("ICC2", "ICC2k"):
        assert forms[form]["icc"] == pytest.approx(theirs[form]["icc"], abs=1e-6)
        assert forms[form]["ci95"] == pytest.approx(theirs[form]["ci95"], abs=1e-6)


def test_two_samples_is_finite():
    data = np.random.default_rng(4).random((2, 12))
    assert all(np.isfinite(compute_icc(data, form)).all() for form in ICC_FORMS)


def importance_with_key_leads(n_samples=30, seed=0):
    rng = np.random.default_rng(seed)
    importance = rng.gamma(2.0, size=(n_samples, 12))
    importance[:, [6, 7, 9]] *= 3.0  # V1, V2, V4 dominate
    return importance


def test_subgroup_tests_match_scipy():
    importance = importance_with_key_leads()
    normalised = importance / importance.sum(axis=1, keepdims=True)
    result = subgroup_lead_statistics(importance, LEADS)
    columns = [normalised[:, j] for j in range(12)]
    anova, friedman = stats.f_oneway(*columns), stats.friedmanchisquare(*columns)
    assert result["anova_f"] == pytest.approx(anova.statistic, rel=1e-12)
    assert result["anova_p"] == pytest.approx(anova.pvalue, rel=1e-9, abs=1e-300)
    assert result["friedman_chi2"] == pytest.approx(friedman.statistic, rel=1e-12)
    assert result["friedman_p"] == pytest.approx(friedman.pvalue, rel=1e-9, abs=1e-300)

    assert set(result["top3_leads"]) == {"V1", "V2", "V4"}
    key = [LEADS.index(name) for name in result["top3_leads"]]
    rest = [0, 1, 2, 3, 4, 5, 8, 10, 11]
    wilcoxon = stats.wilcoxon(normalised[:, key].mean(axis=1), normalised[:, rest].mean(axis=1))
    assert result["top3_vs_rest_wilcoxon_stat"] == pytest.approx(wilcoxon.statistic)
    assert result["top3_vs_rest_wilcoxon_p"] == pytest.approx(wilcoxon.pvalue)
    assert result["top3_vs_rest_mean_ratio"] == pytest.approx(
        normalised[:, key].mean() / normalised[:, rest].mean())
    assert result["top3_scores"] == pytest.approx(normalised.mean(axis=0)[key])
    assert sum(result["mean_lead_importance"].values()) == pytest.approx(1.0)

    icc = compute_icc(normalised)
    assert (result["icc"], result["icc_ci_lower"], result["icc_ci_upper"]) == pytest.approx(icc)
    assert result["icc_form"] == "ICC1"
    assert result["icc_form_name"] == "ICC(1,1) one-way random, single measure"
    assert set(result["icc_all_forms"]) == set(ICC_FORMS)
    assert result["status"] == "ok" and result["sample_count"] == 30
    json.dumps(result, allow_nan=False)


def test_consistency_percentages_on_hand_made_example():
    base = np.ones(12)
    rows = []
    for top in ([0, 1, 2], [0, 1, 2], [0, 1, 5], [0, 4, 5], [3, 4, 5]):
        row = base.copy()
        row[top] = [8.0, 7.0, 6.0]
        rows.append(row)
    # Mean importance (in units of 1/30): lead 0 33/5, lead 1 23/5, lead 5 20/5, the rest less.
    result = subgroup_lead_statistics(np.array(rows), LEADS)
    assert result["top3_leads"] == ["I", "II", "aVF"]
    # Key leads {0, 1, 5} in each sample's top 3: 2, 2, 3, 2, 1.
    assert result["strict_consistency_percentage"] == pytest.approx(20.0)
    assert result["loose_consistency_percentage"] == pytest.approx(80.0)
    assert result["avg_key_in_top3"] == pytest.approx(2.0)


def test_too_few_samples_reports_status_instead_of_crashing():
    importance = importance_with_key_leads(n_samples=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = subgroup_lead_statistics(importance, LEADS)
    assert result["status"] == "too few samples (need at least 3)"
    assert result["sample_count"] == 2
    assert len(result["top3_leads"]) == 3 and result["icc"] is None
    json.dumps(result, allow_nan=False)
    empty = subgroup_lead_statistics(np.empty((0, 12)), LEADS)
    assert empty["sample_count"] == 0 and empty["top3_leads"] is None


def test_subgroup_rejects_bad_input():
    with pytest.raises(ValueError, match="lead_names"):
        subgroup_lead_statistics(np.ones((5, 12)), LEADS[:11])
    with pytest.raises(ValueError, match="sum to zero"):
        subgroup_lead_statistics(np.zeros((5, 12)), LEADS)


def test_ground_truth_check_on_hand_made_example():
    rows = []
    for top in ([6, 7, 9], [6, 7, 0], [6, 1, 2], [7, 9, 3]):
        row = np.ones(12)
        row[top] = [9.0, 8.0, 7.0]
        rows.append(row)
    result = ground_truth_check(np.array(rows), LEADS, ["V1", "V2", "V3"])
    assert result["top3_leads"] == ["V1", "V2", "V4"]
    assert result["true_leads_in_top3"] == 2
    assert result["true_leads_found"] == ["V1", "V2"]
    assert result["share_samples_top3_has_2_true"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="not in lead_names"):
        ground_truth_check(np.array(rows), LEADS, ["V7"])


# ----------------------------------------------------------------------------- patient level

def clustered_importance(n_patients=12, beats=(2, 9), seed=3):
    """Beats of patients who each have their own lead profile (beats of one patient alike)."""
    rng = np.random.default_rng(seed)
    rows, ids = [], []
    for p in range(n_patients):
        profile = rng.gamma(2.0, 1.0, len(LEADS)) + np.eye(len(LEADS))[p % 3] * 3
        n = int(rng.integers(beats[0], beats[1] + 1))
        rows.append(profile * rng.uniform(0.9, 1.1, (n, len(LEADS))))
        ids += [f"p{p}"] * n
    return np.concatenate(rows), np.array(ids)


def test_patient_level_statistics_are_the_statistics_of_patient_means():
    importance, ids = clustered_importance()
    result = patient_level_lead_statistics(importance, ids, LEADS, n_boot=200, seed=0)
    normalised = importance / importance.sum(1, keepdims=True)
    means = pd.DataFrame(normalised).groupby(ids).mean().to_numpy()   # independent path
    expected = subgroup_lead_statistics(means, LEADS)
    for key in ("top3_leads", "top3_scores", "friedman_chi2", "friedman_p", "icc",
                "strict_consistency_percentage"):
        assert result[key] == pytest.approx(expected[key]), key
    assert result["sample_count"] == result["patient_count"] == 12
    assert result["beat_count"] == len(ids)
    friedman = stats.friedmanchisquare(*means.T)
    assert result["friedman_p"] == pytest.approx(friedman.pvalue)


def test_patient_bootstrap_resamples_patients_not_beats():
    importance, ids = clustered_importance()
    once = patient_level_lead_statistics(importance, ids, LEADS, n_boot=2000, seed=0)
    # every beat five times: the patients, their means and so the patient bootstrap are unchanged
    # (a beat bootstrap would narrow by sqrt(5))
    repeated = patient_level_lead_statistics(np.repeat(importance, 5, axis=0),
                                             np.repeat(ids, 5), LEADS, n_boot=2000, seed=0)
    for lead in LEADS:
        assert repeated["mean_lead_importance_ci95"][lead] == pytest.approx(
            once["mean_lead_importance_ci95"][lead], rel=1e-12)
    assert repeated["key_lead_stability"] == once["key_lead_stability"]
    # the intervals agree with scipy's percentile bootstrap over patient means
    normalised = importance / importance.sum(1, keepdims=True)
    means = pd.DataFrame(normalised).groupby(ids).mean().to_numpy()
    for j, lead in enumerate(LEADS):
        scipy_ci = stats.bootstrap((means[:, j],), np.mean, n_resamples=4000, method="percentile",
                                   random_state=1).confidence_interval
        low, high = once["mean_lead_importance_ci95"][lead]
        width = scipy_ci.high - scipy_ci.low
        assert abs(low - scipy_ci.low) < 0.15 * width and abs(high - scipy_ci.high) < 0.15 * width
    # another seed draws other patients
    other = patient_level_lead_statistics(importance, ids, LEADS, n_boot=2000, seed=1)
    assert other["mean_lead_importance_ci95"] != once["mean_lead_importance_ci95"]


def test_key_lead_stability_is_certain_for_a_dominant_lead_and_split_for_a_tie():
    rng = np.random.default_rng(0)
    importance = rng.uniform(0.9, 1.1, (40, len(LEADS)))
    importance[:, 9] += 5                                    # V4 dominates in every patient
    ids = np.repeat(np.arange(20), 2)
    result = patient_level_lead_statistics(importance, ids, LEADS, n_boot=500, seed=0)
    stability = result["key_lead_stability"]
    assert stability["V4"] == 1.0
    assert sum(stability.values()) == pytest.approx(3.0)     # three key leads per replicate
    assert max(v for lead, v in stability.items() if lead != "V4") < 0.9   # no sure second
    low, high = result["mean_lead_importance_ci95"]["V4"]
    assert low < result["mean_lead_importance"]["V4"] < high


def test_patient_level_with_too_few_patients_reports_it():
    importance, ids = clustered_importance(n_patients=2)
    result = patient_level_lead_statistics(importance, ids, LEADS, n_boot=100)
    assert result["status"] == "too few samples (need at least 3)"
    assert result["key_lead_stability"] is None and result["patient_count"] == 2


def test_kendall_w_equals_pingouin_with_ties_and_is_one_for_identical_raters():
    rng = np.random.default_rng(0)
    scores = rng.random((5, 12))
    scores[:, 3] += 1
    scores[2, 4] = scores[2, 5]                              # a tie
    long = pd.DataFrame(scores).stack().rename("v").reset_index()
    long.columns = ["rater", "item", "v"]
    expected = pg.friedman(long, dv="v", within="item", subject="rater")["W"].iloc[0]
    assert kendall_w(scores) == pytest.approx(expected)
    assert kendall_w(np.tile(scores[0], (4, 1))) == pytest.approx(1.0)
    opposite = np.vstack([np.arange(12), np.arange(12)[::-1]])
    assert kendall_w(opposite) == pytest.approx(0.0)


def test_tests_that_cannot_be_computed_answer_none_with_a_reason():
    # every sample weighs every lead alike: no test of the leads has a statistic
    result = subgroup_lead_statistics(np.ones((6, 12)), [f"L{i}" for i in range(12)])
    for test in ("anova", "friedman", "top3_vs_rest_wilcoxon"):
        assert result[f"{test}_p"] is None
        assert result[f"{test}_reason"].startswith("not computable: "), test
    # exact agreement: F is infinite, so there is no p either (it was 0)
    forms = icc_all_forms(np.tile(np.arange(1.0, 13.0), (6, 1)))
    assert forms["ICC1"]["F"] is None and forms["ICC1"]["p"] is None
    assert forms["ICC1"]["reason"].startswith("not computable: ")
    assert icc_all_forms(SHROUT_FLEISS.T)["ICC1"]["reason"] is None


def test_the_key_lead_wilcoxon_test_carries_its_selection_caveat():
    importance = np.random.default_rng(4).gamma(2.0, size=(20, 12)) * np.linspace(1, 3, 12)
    result = subgroup_lead_statistics(importance, [f"L{i}" for i in range(12)])
    assert result["top3_vs_rest_wilcoxon_p"] is not None
    assert "chosen on the same" in result["top3_vs_rest_wilcoxon_caveat"]
    json.dumps(result, allow_nan=False)


def test_the_console_lines_print_tests_without_a_p():
    from lvr.explain.console import log_subgroup
    result = subgroup_lead_statistics(np.ones((6, 12)), [f"L{i}" for i in range(12)])
    lines = []
    log_subgroup("flat", result, lines.append)
    text = "\n".join(lines)
    assert "not computable" in text
