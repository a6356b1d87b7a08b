"""The decision curve against the formula written out, a hand-checked example and dcurves (an
independent implementation); patient aggregation, the patient bootstrap, the CSV and the figure."""
import csv

import dcurves
import numpy as np
import pandas as pd
import pytest

from lvr.stats.decision_curve import (CSV_COLUMNS, THRESHOLDS, decision_curve, net_benefit,
                                threshold_runs, treat_all_net_benefit, write_decision_curve_csv)
from lvr.report.training_figures import plot_decision_curve


def tied_cases(n, seed):
    """Labels and probabilities on a 0.01 grid: ties among cases and with the thresholds."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    p = np.round(1 / (1 + np.exp(-(rng.normal(-0.8, 1.2, n) + 1.5 * y))), 2)
    return y, p


def by_hand(y, p, thresholds):
    """Net benefit of the model and of treating all, counted case by case."""
    model, treat_all = [], []
    for pt in thresholds:
        tp = sum(1 for yi, pi in zip(y, p, strict=True) if pi >= pt and yi == 1)
        fp = sum(1 for yi, pi in zip(y, p, strict=True) if pi >= pt and yi == 0)
        n, positives = len(y), sum(y)
        model.append(tp / n - fp / n * pt / (1 - pt))
        treat_all.append(positives / n - (n - positives) / n * pt / (1 - pt))
    return np.array(model), np.array(treat_all)


def dcurves_curves(y, p, thresholds, nper=1):
    table = dcurves.dca(data=pd.DataFrame({"y": y, "p": p}), outcome="y", modelnames=["p"],
                        thresholds=list(thresholds), nper=nper)
    return {name: table[table.model == name] for name in ("p", "all", "none")}


def test_net_benefit_equals_the_formula_and_dcurves_on_tied_data():
    y, p = tied_cases(400, 0)
    assert np.isin(p, THRESHOLDS).sum() > 100 and len(np.unique(p)) < 100
    model, treat_all = by_hand(y, p, THRESHOLDS)
    reference = dcurves_curves(y, p, THRESHOLDS)
    np.testing.assert_allclose(net_benefit(y, p, THRESHOLDS), model, rtol=0, atol=1e-12)
    np.testing.assert_allclose(treat_all_net_benefit(y, THRESHOLDS), treat_all, rtol=0, atol=1e-12)
    np.testing.assert_allclose(net_benefit(y, p, THRESHOLDS), reference["p"].net_benefit,
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(treat_all_net_benefit(y, THRESHOLDS), reference["all"].net_benefit,
                               rtol=0, atol=1e-9)
    curve = decision_curve(y, p, np.arange(len(y)), n_boot=0)
    np.testing.assert_allclose(curve["net_benefit_treat_none"], reference["none"].net_benefit,
                               rtol=0, atol=1e-9)
    per_100 = dcurves_curves(y, p, THRESHOLDS, nper=100)["p"].net_intervention_avoided
    np.testing.assert_allclose(curve["net_interventions_avoided_per_100"], per_100, rtol=0,
                               atol=1e-9)


def test_hand_checked_example_counts_a_tie_with_the_threshold_as_treated():
    y = [1, 1, 0, 0, 1]
    p = [0.9, 0.4, 0.4, 0.1, 0.2]
    thresholds = [0.2, 0.4, 0.5]
    # 0.2: TP 3, FP 1 -> 3/5 - 1/5 * 1/4; 0.4: TP 2, FP 1 -> 2/5 - 1/5 * 2/3; 0.5: TP 1, FP 0
    expected = [0.55, 0.4 - 0.2 * 2 / 3, 0.2]
    np.testing.assert_allclose(net_benefit(y, p, thresholds), expected, rtol=0, atol=1e-12)
    # prevalence 0.6: 0.6 - 0.4 * odds
    np.testing.assert_allclose(treat_all_net_benefit(y, thresholds), [0.5, 0.6 - 0.4 * 2 / 3, 0.2],
                               rtol=0, atol=1e-12)
    reference = dcurves_curves(y, p, thresholds)
    np.testing.assert_allclose(reference["p"].net_benefit, expected, rtol=0, atol=1e-9)


def test_weights_count_as_repeated_cases_one_row_per_weighting():
    y, p = tied_cases(120, 1)
    weights = np.random.default_rng(2).integers(0, 4, (3, 120)).astype(float)
    model = net_benefit(y, p, THRESHOLDS, weights)
    treat_all = treat_all_net_benefit(y, THRESHOLDS, weights)
    assert model.shape == treat_all.shape == (3, len(THRESHOLDS))
    for k, w in enumerate(weights):
        repeated = np.repeat(np.arange(120), w.astype(int))
        expected = by_hand(y[repeated], p[repeated], THRESHOLDS)
        np.testing.assert_allclose(model[k], expected[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(treat_all[k], expected[1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(net_benefit(y, p, THRESHOLDS, w), expected[0], rtol=0,
                                   atol=1e-12)


def beats_of_patients(n_patients, seed):
    """Beat-level labels, probabilities and patient ids (1-9 beats per patient, shuffled)."""
    rng = np.random.default_rng(seed)
    y_patient, p_centre = tied_cases(n_patients, seed)
    beats = rng.integers(1, 10, n_patients)
    ids = np.repeat([f"P{k:03d}" for k in range(n_patients)], beats)
    p = np.clip(np.repeat(p_centre, beats) + rng.normal(0, 0.1, beats.sum()), 0, 1)
    order = rng.permutation(len(ids))
    return np.repeat(y_patient, beats)[order], p[order], ids[order]


def test_the_curve_is_that_of_the_patients_mean_probabilities():
    y, p, ids = beats_of_patients(150, 3)
    table = pd.DataFrame({"id": ids, "y": y, "p": p}).groupby("id").agg(y=("y", "first"),
                                                                        p=("p", "mean"))
    curve = decision_curve(y, p, ids, n_boot=200, seed=4)
    assert curve["n_patients"] == 150
    assert curve["prevalence"] == pytest.approx(table.y.mean())
    reference = dcurves_curves(table.y.to_numpy(), table.p.to_numpy(), THRESHOLDS)
    np.testing.assert_allclose(curve["net_benefit_model"], reference["p"].net_benefit, rtol=0,
                               atol=1e-9)
    np.testing.assert_allclose(curve["net_benefit_treat_all"], reference["all"].net_benefit,
                               rtol=0, atol=1e-9)
    assert not np.allclose(curve["net_benefit_model"], net_benefit(y, p, THRESHOLDS))
    # the bootstrap resamples patients: one beat per patient gives the same bands
    once = decision_curve(table.y.to_numpy(), table.p.to_numpy(), table.index.to_numpy(),
                          n_boot=200, seed=4)
    for key in ("net_benefit_model_ci95_low", "model_minus_treat_all_ci95_high"):
        np.testing.assert_allclose(curve[key], once[key], rtol=0, atol=1e-12)


def test_bootstrap_bands_equal_a_loop_contain_the_estimate_and_follow_the_seed():
    y, p, ids = beats_of_patients(80, 5)
    curve = decision_curve(y, p, ids, n_boot=300, seed=6)
    patients, inverse = np.unique(ids, return_inverse=True)
    y_patient = np.zeros(len(patients), int)
    y_patient[inverse] = y
    p_patient = np.bincount(inverse, weights=p) / np.bincount(inverse)
    rng = np.random.default_rng(6)
    model, difference = [], []
    for _ in range(300):
        drawn = rng.integers(0, len(patients), len(patients))
        nb, nb_all = by_hand(y_patient[drawn], p_patient[drawn], THRESHOLDS)
        model.append(nb)
        difference.append(nb - nb_all)
    for name, draws in (("net_benefit_model", model), ("model_minus_treat_all", difference)):
        low, high = np.percentile(draws, [2.5, 97.5], axis=0)
        np.testing.assert_allclose(curve[f"{name}_ci95_low"], low, rtol=0, atol=1e-12)
        np.testing.assert_allclose(curve[f"{name}_ci95_high"], high, rtol=0, atol=1e-12)
        point = np.array(curve[name])
        assert np.all(low <= point) and np.all(point <= high)
    assert np.all(np.subtract(curve["net_benefit_model_ci95_high"],
                              curve["net_benefit_model_ci95_low"]) > 0)
    assert decision_curve(y, p, ids, n_boot=300, seed=6) == curve
    other = decision_curve(y, p, ids, n_boot=300, seed=7)
    assert other["net_benefit_model"] == curve["net_benefit_model"]
    assert other["net_benefit_model_ci95_low"] != curve["net_benefit_model_ci95_low"]
    few = decision_curve(y, p, ids, n_boot=9)
    assert few["net_benefit_model_ci95_low"] is None
    assert few["useful_threshold_ranges_lower_band"] is None


def test_useful_ranges_are_where_the_model_beats_both_defaults():
    y, _ = tied_cases(200, 8)
    ids = np.arange(200)
    perfect = decision_curve(y, y.astype(float), ids, n_boot=100)
    assert perfect["useful_threshold_ranges"] == [[0.05, 0.6]]
    assert perfect["useful_threshold_ranges_lower_band"] == [[0.05, 0.6]]
    # a constant 0.3 treats everyone up to 0.3 (= treat all), no one above (= treat none)
    constant = decision_curve(y, np.full(200, 0.3), ids, n_boot=100)
    assert constant["useful_threshold_ranges"] == []
    np.testing.assert_allclose(constant["net_benefit_model"][:26],
                               constant["net_benefit_treat_all"][:26], rtol=0, atol=1e-12)
    assert constant["net_benefit_model"][26:] == [0.0] * 30
    grid = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    mask = np.array([1, 1, 0, 1, 0, 0, 1], bool)
    assert threshold_runs(grid, mask) == [[0.1, 0.2], [0.4, 0.4], [0.7, 0.7]]


@pytest.mark.parametrize("bad, argument", [
    (dict(y=[0, 2, 1]), "y"), (dict(p=[0.1, 1.2, 0.3]), "p"), (dict(p=[0.1, 0.2]), "p"),
    (dict(thresholds=[0.0, 0.5]), "thresholds"), (dict(thresholds=[0.5, 1.0]), "thresholds"),
    (dict(patient_ids=["a", "a", "b"], y=[0, 1, 1]), "patient_ids"),
    (dict(patient_ids=["a", "b"]), "patient_ids"), (dict(n_boot=-1), "n_boot"),
])
def test_bad_input_is_refused_naming_the_argument(bad, argument):
    kwargs = dict(y=[0, 1, 1], p=[0.1, 0.7, 0.3], patient_ids=["a", "b", "c"],
                  thresholds=THRESHOLDS, n_boot=0)
    kwargs.update(bad)
    with pytest.raises(ValueError, match=f"^{argument}:"):
        decision_curve(**kwargs)


def test_the_csv_holds_one_row_per_threshold_and_reads_back_exactly(tmp_path):
    y, p, ids = beats_of_patients(60, 9)
    curve = decision_curve(y, p, ids, n_boot=100)
    path = write_decision_curve_csv(tmp_path / "decision_curve.csv", curve)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == CSV_COLUMNS and len(rows) == len(THRESHOLDS)
    assert [float(r["threshold"]) for r in rows] == THRESHOLDS.tolist()
    for column in CSV_COLUMNS[1:]:
        assert [float(r[column]) for r in rows] == curve[column], column
    few = decision_curve(y, p, ids, n_boot=0)
    write_decision_curve_csv(tmp_path / "few.csv", few)
    table = pd.read_csv(tmp_path / "few.csv", float_precision="round_trip")
    assert table.net_benefit_model_ci95_low.isna().all()
    assert table.net_benefit_model.tolist() == few["net_benefit_model"]


def test_the_figure_is_written(tmp_path):
    y, p, ids = beats_of_patients(60, 10)
    for n_boot in (100, 0):
        path = tmp_path / f"decision_curve_{n_boot}.png"
        plot_decision_curve(path, decision_curve(y, p, ids, n_boot=n_boot))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20000
