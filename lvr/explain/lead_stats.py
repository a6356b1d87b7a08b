"""Statistics of per-sample lead importance: ICC, lead ranking consistency, group tests, the
ground-truth check and Kendall's W. The same statistics over patients: lvr.explain.patient_stats.

Layout used throughout: an importance matrix is ``(n_samples, n_leads)``. For the ICC the rows
(samples) act as raters (judges) and the columns (leads) as targets, as in the original
analysis: "do different beats rank the leads the same way?".

References
----------
Shrout, P. E., & Fleiss, J. L. (1979). Intraclass correlations: uses in assessing rater
reliability. Psychological Bulletin, 86(2), 420-428.
McGraw, K. O., & Wong, S. P. (1996). Forming inferences about some intraclass correlation
coefficients. Psychological Methods, 1(1), 30-46.
"""
import warnings

import numpy as np

ICC_FORMS = ("ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k")
ICC_DESCRIPTIONS = {
    "ICC1": "ICC(1,1) one-way random, single measure",
    "ICC2": "ICC(2,1) two-way random, absolute agreement, single measure",
    "ICC3": "ICC(3,1) two-way mixed, consistency, single measure",
    "ICC1k": "ICC(1,k) one-way random, average of k raters",
    "ICC2k": "ICC(2,k) two-way random, absolute agreement, average of k raters",
    "ICC3k": "ICC(3,k) two-way mixed, consistency, average of k raters",
}
MIN_SAMPLES = 3
TOO_FEW_SAMPLES = f"too few samples (need at least {MIN_SAMPLES})"
# A mean square below this fraction of the total mean square is rounding error, taken as zero.
RELATIVE_ZERO = 1e-12
ALPHA = 0.05
WILCOXON_CAVEAT = ("the key leads are chosen on the same samples this test compares them in, so "
                   "its p-value is optimistic (selection bias) and not a confirmatory test")
EXACT_AGREEMENT = ("not computable: the error mean square is 0 (exact agreement), so F is "
                   "infinite")
NO_VARIANCE = "not computable: the data have no variance at all"


def _checked_matrix(data, name, min_rows=0, min_cols=0):
    array = np.asarray(data, dtype=float)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_samples, n_leads), "
                         f"got shape {array.shape}")
    if array.shape[0] < min_rows or array.shape[1] < min_cols:
        raise ValueError(f"{name} needs at least {min_rows} rows and {min_cols} columns, "
                         f"got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or Inf values")
    return array


def _mean_squares(ratings):
    """Two-way ANOVA mean squares of a (targets, raters) matrix without replication."""
    n, k = ratings.shape
    grand = ratings.mean()
    target_means = ratings.mean(axis=1)
    rater_means = ratings.mean(axis=0)
    residual = ratings - target_means[:, None] - rater_means[None, :] + grand
    ms_total = np.sum((ratings - grand) ** 2) / (n * k - 1)
    msb = k * np.sum((target_means - grand) ** 2) / (n - 1)
    msj = n * np.sum((rater_means - grand) ** 2) / (k - 1)
    msw = np.sum((ratings - target_means[:, None]) ** 2) / (n * (k - 1))
    mse = np.sum(residual ** 2) / ((n - 1) * (k - 1))
    # Snap rounding noise to exact zeros so the degenerate cases below are detected reliably.
    zero = RELATIVE_ZERO * ms_total
    msb, msj, msw, mse = (0.0 if ms <= zero else float(ms) for ms in (msb, msj, msw, mse))
    return msb, msj, msw, mse


def _row(icc, lo, hi, f_value, df1, df2, p_value, form, reason=None):
    return {"icc": float(icc), "ci95": [float(lo), float(hi)],
            "F": None if f_value is None else float(f_value), "df1": int(df1), "df2": int(df2),
            "p": None if p_value is None else float(p_value), "description": ICC_DESCRIPTIONS[form],
            "reason": reason}


def icc_all_forms(data):
    """All six Shrout & Fleiss (1979) ICC forms with F tests and 95% confidence intervals.

    Parameters
    ----------
    data : array-like, shape (n_samples, n_leads)
        Rows are raters (judges, k = n_samples), columns are targets (n = n_leads). At least two
        of each; NaN or Inf raises ValueError.

    Returns
    -------
    dict
        form -> {"icc", "ci95": [lo, hi], "F", "df1", "df2", "p", "description"} for the forms
        ``ICC1, ICC2, ICC3, ICC1k, ICC2k, ICC3k`` (pingouin labels them ICC(1,1), ICC(A,1),
        ICC(C,1), ICC(1,k), ICC(A,k), ICC(C,k)).

    Notes
    -----
    Mean squares come from the two-way ANOVA without replication of the (targets x raters)
    table: between targets MSB, between raters MSJ, residual MSE, and within targets MSW (raters
    plus residual, the one-way error term).

    * ICC1 = (MSB - MSW) / (MSB + (k-1) MSW), F = MSB/MSW on (n-1, n(k-1)) df.
    * ICC2 = (MSB - MSE) / (MSB + (k-1) MSE + k (MSJ - MSE)/n), F = MSB/MSE on (n-1, (n-1)(k-1)).
    * ICC3 = (MSB - MSE) / (MSB + (k-1) MSE), same F as ICC2.
    * ICC1k = (MSB - MSW)/MSB, ICC2k = (MSB - MSE)/(MSB + (MSJ - MSE)/n), ICC3k = (MSB - MSE)/MSB.

    The 95% intervals are F-based (Shrout & Fleiss 1979, Table 4); ICC2 and ICC2k use the
    approximate denominator df of McGraw & Wong (1996), exactly as ``pingouin.intraclass_corr``
    0.7 computes them (written here without dividing by MSE, so a zero MSE stays finite). The
    reported ``df2`` is the F test's, not that approximate df.

    Degenerate input never gives NaN. Mean squares below 1e-12 of the total mean square count
    as zero. Conventions:

    * no between-target variance (MSB = 0: every lead has the same mean, including all-equal
      data): the targets cannot be told apart, so every form is ICC 0 with CI [0, 0]; F = 0 and
      p = 1 when there is error variance, F = p = None when there is none;
    * MSB > 0 and the form's error mean square is 0 (e.g. constant columns: every rater agrees
      exactly): ICC 1 with CI [1, 1], F = None (infinite) and p = None: there is no test. ICC2
      with MSE = 0 but rater bias (MSJ > 0) keeps its finite formula value and interval.

    A row's ``reason`` says why F and p are None ("not computable: ..."); None otherwise.
    """
    from scipy import stats  # lazy: figure workers import this module; scipy takes 0.7 s each
    ratings = _checked_matrix(data, "data", min_rows=2, min_cols=2).T
    n, k = ratings.shape
    msb, msj, msw, mse = _mean_squares(ratings)
    df1, df_one_way, df_two_way = n - 1, n * (k - 1), (n - 1) * (k - 1)
    dfs = {"ICC1": df_one_way, "ICC1k": df_one_way, "ICC2": df_two_way, "ICC2k": df_two_way,
           "ICC3": df_two_way, "ICC3k": df_two_way}

    if msb == 0.0:
        result = {}
        for form in ICC_FORMS:
            error = msw if form.startswith("ICC1") else mse
            f_value, p_value = (0.0, 1.0) if error > 0 else (None, None)
            result[form] = _row(0.0, 0.0, 0.0, f_value, df1, dfs[form], p_value, form,
                                None if error > 0 else NO_VARIANCE)
        return result

    result = {}
    for single, average, error in (("ICC1", "ICC1k", msw), ("ICC3", "ICC3k", mse)):
        df2 = dfs[single]
        if error == 0.0:
            result[single] = _row(1.0, 1.0, 1.0, None, df1, df2, None, single, EXACT_AGREEMENT)
            result[average] = _row(1.0, 1.0, 1.0, None, df1, df2, None, average,
                                   EXACT_AGREEMENT)
            continue
        f_value = msb / error
        p_value = stats.f.sf(f_value, df1, df2)
        f_lower = f_value / stats.f.ppf(1 - ALPHA / 2, df1, df2)
        f_upper = f_value * stats.f.ppf(1 - ALPHA / 2, df2, df1)
        icc = (msb - error) / (msb + (k - 1) * error)
        result[single] = _row(icc, (f_lower - 1) / (f_lower + k - 1),
                              (f_upper - 1) / (f_upper + k - 1), f_value, df1, df2, p_value, single)
        result[average] = _row((msb - error) / msb, 1 - 1 / f_lower, 1 - 1 / f_upper,
                               f_value, df1, df2, p_value, average)

    if mse == 0.0 and msj == 0.0:
        result["ICC2"] = _row(1.0, 1.0, 1.0, None, df1, df_two_way, None, "ICC2",
                              EXACT_AGREEMENT)
        result["ICC2k"] = _row(1.0, 1.0, 1.0, None, df1, df_two_way, None, "ICC2k",
                               EXACT_AGREEMENT)
    else:
        icc2 = (msb - mse) / (msb + (k - 1) * mse + k * (msj - mse) / n)
        icc2k = (msb - mse) / (msb + (msj - mse) / n)
        lo, hi = _icc2_interval(icc2, msb, msj, mse, n, k)
        f_value = None if mse == 0.0 else msb / mse
        p_value = None if mse == 0.0 else stats.f.sf(f_value, df1, df_two_way)
        reason = EXACT_AGREEMENT if mse == 0.0 else None
        result["ICC2"] = _row(icc2, lo, hi, f_value, df1, df_two_way, p_value, "ICC2", reason)
        result["ICC2k"] = _row(icc2k, lo * k / (1 + lo * (k - 1)), hi * k / (1 + hi * (k - 1)),
                               f_value, df1, df_two_way, p_value, "ICC2k", reason)
    return {form: result[form] for form in ICC_FORMS}


def _icc2_interval(icc2, msb, msj, mse, n, k):
    """McGraw & Wong (1996) interval for ICC(A,1), numerators and denominators times MSE^2."""
    from scipy import stats  # lazy: figure workers import this module; scipy takes 0.7 s each
    a = k * icc2 * msj
    b = (n * (1 + (k - 1) * icc2) - k * icc2) * mse
    denominator = (n - 1) * a ** 2 + b ** 2
    if denominator <= 0.0:
        return icc2, icc2
    v = (n - 1) * (k - 1) * (a + b) ** 2 / denominator
    f_upper = stats.f.ppf(1 - ALPHA / 2, n - 1, v)
    f_lower = stats.f.ppf(1 - ALPHA / 2, v, n - 1)
    scale = k * msj + (k * n - k - n) * mse
    lo = n * (msb - f_upper * mse) / (f_upper * scale + n * msb)
    hi = n * (f_lower * msb - mse) / (scale + n * f_lower * msb)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return icc2, icc2
    return lo, hi


def compute_icc(data, form="ICC1"):
    """Intraclass correlation of lead importance, with its F-based 95% CI.

    Parameters
    ----------
    data : array-like, shape (n_samples, n_leads)
        Rows (samples) are raters, columns (leads) are targets, as in the original analysis.
    form : {"ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k"}
        Shrout & Fleiss (1979) form. The default ICC1 is the original's statistic: one-way
        random, single measure, ICC(1,1) (its docstring called it ICC(2,1)).

    Returns
    -------
    (icc, ci_lower, ci_upper) : tuple of float
        Always finite; see :func:`icc_all_forms` for formulas and degenerate-data conventions.
    """
    if form not in ICC_FORMS:
        raise ValueError(f"unknown ICC form {form!r}; valid forms: {', '.join(ICC_FORMS)}")
    row = icc_all_forms(data)[form]
    return row["icc"], row["ci95"][0], row["ci95"][1]


def _finite_or_none(value):
    value = float(value)
    return value if np.isfinite(value) else None


def normalised_importance(importance, lead_names, n_key):
    """Each row of `importance` (n_samples, n_leads) divided by its sum, after checking it is
    a finite, non-negative matrix with a column per lead name and a non-zero sum per row."""
    array = _checked_matrix(importance, "importance")
    n_leads = array.shape[1]
    if len(lead_names) != n_leads:
        raise ValueError(f"lead_names has {len(lead_names)} names but importance has "
                         f"{n_leads} columns")
    if not 1 <= n_key < n_leads:
        raise ValueError(f"n_key must be between 1 and n_leads - 1 = {n_leads - 1}, got {n_key}")
    if np.any(array < 0):
        raise ValueError("importance must be non-negative (mean absolute saliency)")
    totals = array.sum(axis=1)
    if np.any(totals <= 0):
        raise ValueError(f"importance rows {np.flatnonzero(totals <= 0).tolist()} sum to zero "
                         "and cannot be normalised")
    return array / totals[:, None]


def top_leads(values, n_key):
    """Indices of the n_key largest values along the last axis; ties go to the earlier lead."""
    return np.argsort(-values, axis=-1, kind="stable")[..., :n_key]


def subgroup_lead_statistics(importance, lead_names, n_key=3):
    """Key leads of a subgroup and how consistently its samples agree on them.

    Each sample's lead importance is normalised to sum 1, as in the original analysis. The key
    leads are the ``n_key`` leads with the highest mean normalised importance; the ``top3_*``
    keys keep the original's names whatever ``n_key`` is.

    Parameters
    ----------
    importance : array-like, shape (n_samples, n_leads)
        Raw, non-negative per-sample lead importance (e.g. saliency averaged over time).
    lead_names : sequence of str, length n_leads
    n_key : int
        Number of key leads (3 in the original).

    Returns
    -------
    dict
        JSON-serialisable; floats are plain Python floats and undefined statistics are None.
        ``status`` is "ok", or "too few samples (need at least 3)" when n_samples < 3; then only
        the descriptive entries (``sample_count``, ``mean_lead_importance``, ``top3_leads``,
        ``top3_scores``, when there is at least one sample) are filled and the rest are None.

        Original keys:

        * ``top3_leads``, ``top3_scores``: key lead names and their mean normalised importance;
        * ``anova_f``, ``anova_p``: the original's one-way ANOVA (``scipy.stats.f_oneway``) whose
          groups are the lead columns. It ignores that every sample contributes to every group,
          so it is kept for comparison only;
        * ``strict_consistency_percentage``: percentage of samples whose own top ``n_key``
          contains all key leads (the original referenced this value but never computed it);
        * ``loose_consistency_percentage``: percentage whose own top ``n_key`` holds at least
          ``max(1, n_key - 1)`` key leads (2 of 3, as in the original);
        * ``avg_key_in_top3``: mean number of key leads in a sample's own top ``n_key``;
        * ``icc``, ``icc_ci_lower``, ``icc_ci_upper``: ICC(1,1) with leads as targets and samples
          as raters, F-based 95% CI (:func:`compute_icc`); ``icc_form`` ("ICC1") and
          ``icc_form_name``; ``icc_all_forms``: all six forms (:func:`icc_all_forms`). Because
          every row sums to 1 the raters' means are equal, so rater bias is zero by design;
        * ``mean_lead_importance``: lead name -> mean normalised importance; ``sample_count``.

        Tests that fit the repeated-measures design (samples as blocks):

        * ``friedman_chi2``, ``friedman_p``: ``scipy.stats.friedmanchisquare`` over the leads;
        * ``top3_vs_rest_wilcoxon_stat``, ``top3_vs_rest_wilcoxon_p``: two-sided paired
          Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) of each sample's mean importance
          of the key leads against its mean importance of the other leads;
          ``top3_vs_rest_mean_ratio``: mean over samples of the former divided by mean over
          samples of the latter. The key leads are chosen on the same data, so this comparison
          is optimistic (selection bias): its p-value is not a valid confirmatory test
          (``top3_vs_rest_wilcoxon_caveat`` says so in the JSON).

        ``anova_reason``, ``friedman_reason``, ``top3_vs_rest_wilcoxon_reason``: None, or why
        that test's statistic and p are None ("not computable: ...").

        Ties in any ranking go to the lead that comes first in ``lead_names``.
    """
    names = [str(name) for name in lead_names]
    normalised = normalised_importance(importance, names, n_key)
    n_samples, n_leads = normalised.shape
    result = {key: None for key in (
        "top3_leads", "top3_scores", "anova_f", "anova_p", "strict_consistency_percentage",
        "loose_consistency_percentage", "avg_key_in_top3", "icc", "icc_ci_lower", "icc_ci_upper",
        "icc_form", "icc_form_name", "icc_all_forms", "mean_lead_importance", "sample_count",
        "friedman_chi2", "friedman_p", "top3_vs_rest_wilcoxon_stat", "top3_vs_rest_wilcoxon_p",
        "top3_vs_rest_mean_ratio", "status", *TEST_REASONS)}
    result["sample_count"] = int(n_samples)
    result["status"] = "ok" if n_samples >= MIN_SAMPLES else TOO_FEW_SAMPLES
    result["top3_vs_rest_wilcoxon_caveat"] = WILCOXON_CAVEAT
    if n_samples < MIN_SAMPLES:
        result.update({key: f"not computable: {TOO_FEW_SAMPLES}" for key in TEST_REASONS})
    if n_samples == 0:
        return result

    mean_importance = normalised.mean(axis=0)
    key = top_leads(mean_importance, n_key)
    result["top3_leads"] = [names[i] for i in key]
    result["top3_scores"] = [float(mean_importance[i]) for i in key]
    result["mean_lead_importance"] = {name: float(v)
                                      for name, v in zip(names, mean_importance, strict=True)}
    if n_samples < MIN_SAMPLES:
        return result

    result.update(consistency_statistics(normalised, key, n_key))
    result.update(lead_test_statistics(normalised, key))
    result.update(icc_statistics(normalised))
    return result


def consistency_statistics(normalised, key, n_key):
    """How many samples have the key leads in their own top n_key (strict, loose, mean)."""
    own_top = top_leads(normalised, n_key)
    key_in_top = np.isin(own_top, key).sum(axis=1)
    return {"strict_consistency_percentage": float(100.0 * np.mean(key_in_top == n_key)),
            "loose_consistency_percentage": float(100.0 * np.mean(key_in_top
                                                                  >= max(1, n_key - 1))),
            "avg_key_in_top3": float(key_in_top.mean())}


TEST_REASONS = ("anova_reason", "friedman_reason", "top3_vs_rest_wilcoxon_reason")


def lead_test_statistics(normalised, key):
    """The original's ANOVA over lead columns, Friedman, and key leads vs the rest (Wilcoxon)."""
    from scipy import stats  # lazy: figure workers import this module; scipy takes 0.7 s each
    columns = [normalised[:, j] for j in range(normalised.shape[1])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        anova = stats.f_oneway(*columns)
        friedman = stats.friedmanchisquare(*columns)
    result = {"anova_f": _finite_or_none(anova.statistic),
              "anova_p": _finite_or_none(anova.pvalue),
              "friedman_chi2": _finite_or_none(friedman.statistic),
              "friedman_p": _finite_or_none(friedman.pvalue),
              "anova_reason": None, "friedman_reason": None,
              "top3_vs_rest_wilcoxon_reason": None}
    if result["anova_p"] is None:
        result["anova_reason"] = ("not computable: the importance does not vary within the "
                                  "leads (F is 0/0 or infinite)")
    if result["friedman_p"] is None:
        result["friedman_reason"] = ("not computable: every sample ties all leads (the ranks "
                                     "have no variance)")
    rest = np.setdiff1d(np.arange(normalised.shape[1]), key)
    key_mean = normalised[:, key].mean(axis=1)
    rest_mean = normalised[:, rest].mean(axis=1)
    if np.any(key_mean != rest_mean):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wilcoxon = stats.wilcoxon(key_mean, rest_mean)
        result["top3_vs_rest_wilcoxon_stat"] = _finite_or_none(wilcoxon.statistic)
        result["top3_vs_rest_wilcoxon_p"] = _finite_or_none(wilcoxon.pvalue)
    if result.get("top3_vs_rest_wilcoxon_p") is None:
        result["top3_vs_rest_wilcoxon_reason"] = (
            "not computable: every sample's key leads weigh the same as its other leads (all "
            "differences 0)" if not np.any(key_mean != rest_mean) else
            "not computable: the signed-rank statistic is not finite")
    if rest_mean.mean() > 0:
        result["top3_vs_rest_mean_ratio"] = float(key_mean.mean() / rest_mean.mean())
    return result


def icc_statistics(normalised):
    """ICC(1,1) with its CI under the original's keys, and all six forms."""
    forms = icc_all_forms(normalised)
    return {"icc": forms["ICC1"]["icc"], "icc_ci_lower": forms["ICC1"]["ci95"][0],
            "icc_ci_upper": forms["ICC1"]["ci95"][1], "icc_form": "ICC1",
            "icc_form_name": ICC_DESCRIPTIONS["ICC1"], "icc_all_forms": forms}


def ground_truth_check(importance, lead_names, true_leads, n_key=3):
    """Compare a subgroup's key leads with leads known (e.g. clinically) to matter.

    Parameters
    ----------
    importance : array-like, shape (n_samples, n_leads)
        Raw, non-negative per-sample lead importance; rows are normalised to sum 1.
    lead_names : sequence of str, length n_leads
    true_leads : sequence of str
        Names from ``lead_names``; an unknown name raises ValueError.
    n_key : int
        Size of the top set (3 in the original).

    Returns
    -------
    dict
        ``true_leads_in_top3`` (int): how many true leads are among the subgroup's key leads
        (highest mean normalised importance); ``true_leads_found``: those leads, in key order;
        ``share_samples_top3_has_2_true``: fraction (0-1) of samples whose own top ``n_key``
        holds at least ``min(2, len(true_leads))`` true leads, None without samples;
        ``top3_leads``, ``true_leads``, ``sample_count``.
    """
    names = [str(name) for name in lead_names]
    true = [str(name) for name in true_leads]
    if not true:
        raise ValueError("true_leads is empty")
    unknown = [name for name in true if name not in names]
    if unknown:
        raise ValueError(f"true_leads {unknown} are not in lead_names {names}")
    normalised = normalised_importance(importance, names, n_key)
    true_index = [names.index(name) for name in true]
    result = {"true_leads": true, "sample_count": int(normalised.shape[0]), "top3_leads": None,
              "true_leads_in_top3": 0, "true_leads_found": [],
              "share_samples_top3_has_2_true": None}
    if normalised.shape[0] == 0:
        return result
    key = top_leads(normalised.mean(axis=0), n_key)
    found = [names[i] for i in key if i in true_index]
    own_hits = np.isin(top_leads(normalised, n_key), true_index).sum(axis=1)
    result.update(top3_leads=[names[i] for i in key], true_leads_in_top3=len(found),
                  true_leads_found=found,
                  share_samples_top3_has_2_true=float(np.mean(own_hits >= min(2, len(true)))))
    return result


def kendall_w(scores):
    """Kendall's coefficient of concordance W of (raters, items) scores, corrected for ties.

    Each rater's scores are ranked (ties get mid-ranks); W = 12 S / (m^2 (n^3 - n) - m sum T),
    S the sum of squared deviations of the items' rank sums from their mean, T = sum (t^3 - t)
    over a rater's tie groups. 1: every rater ranks the items alike; 0: no agreement.
    """
    from scipy import stats  # lazy: figure workers import this module; scipy takes 0.7 s each
    scores = _checked_matrix(scores, "scores", min_rows=2, min_cols=2)
    m, n = scores.shape
    ranks = np.apply_along_axis(stats.rankdata, 1, scores)
    sums = ranks.sum(axis=0)
    s = float(((sums - sums.mean()) ** 2).sum())
    ties = sum(float((counts ** 3 - counts).sum())
               for counts in (np.unique(row, return_counts=True)[1] for row in scores))
    denominator = m ** 2 * (n ** 3 - n) - m * ties
    return 12 * s / denominator if denominator > 0 else float("nan")
