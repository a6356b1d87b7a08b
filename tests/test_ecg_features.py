"""The conventional ECG-measurement baseline: measurements of beats of known shape, a fit that
sees only training patients, the script end to end on a tiny run, its bad input, and the
faster nearest-peak search measuring exactly what neurokit2's own does."""
import contextlib
import csv
import importlib
import json
import os
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

import lvr.measure.delineation as delineation
import lvr.train.run as engine
from helpers import quiet, script_result, tiny_config
from lvr.data.cohort import load_cohort
from lvr.measure.delineation import bases_in_numpy, closest_in_numpy
from lvr.measure.ecg_features import cohort_features, feature_names, measure_beats
from lvr.evaluate.baseline import fit_baseline
from lvr.leads import LEAD_NAMES

FS, LENGTH, R = 500, 500, 150          # 1 s at 500 Hz, R peak at 0.3 s
MS = (np.arange(LENGTH) - R) / FS * 1000


def gauss(centre_ms, sd_ms, amplitude):
    return amplitude * np.exp(-0.5 * ((MS - centre_ms) / sd_ms) ** 2)


def beat(qrs_scale=1.0, st_v2=0.0, r_mv=1.2, t_mv=0.3, seed=0):
    """12 leads of P (0.12 mV), Q-R-S (about 120 ms x qrs_scale) and T waves, small noise; V2
    optionally with an ST elevation of `st_v2` mV from J to J + 180 ms."""
    s = qrs_scale
    lead = (gauss(-160, 20, 0.12) + gauss(-35 * s, 8 * s, -0.12) + gauss(0, 10 * s, r_mv)
            + gauss(35 * s, 8 * s, -0.35) + gauss(300, 40, t_mv))
    x = np.tile(lead, (12, 1))
    if st_v2:
        j = 60 * s
        x[LEAD_NAMES.index("V2")] += st_v2 / (1 + np.exp(-(MS - j) / 3)) / \
            (1 + np.exp((MS - j - 180) / 15))
    return x + np.random.default_rng(seed).normal(0, 0.005, x.shape)


@pytest.fixture(scope="module")
def measured():
    beats = np.stack([beat(), beat(st_v2=0.2), beat(qrs_scale=1.5), beat(r_mv=2.0, t_mv=-0.4)])
    features, names, methods = cohort_features(beats.astype(np.float32), np.arange(4), FS,
                                               r_peak_sample=R, progress=None)
    return {name: features[:, j] for j, name in enumerate(names)}, methods


def test_feature_names():
    names = feature_names()
    assert len(names) == 12 * 6 + 2 and names[-2:] == ["QRS_ms", "QT_ms"]
    assert {"ST_V2", "R_aVL", "Qdur_III", "T_V6"} <= set(names)


def test_st_elevation_in_v2_is_measured_in_v2_only(measured):
    values, methods = measured
    assert all(m == "neurokit2-dwt" for m in methods)
    assert values["ST_V2"][1] == pytest.approx(0.2, abs=0.02)
    assert abs(values["ST_V2"][0]) < 0.02 and abs(values["ST_V1"][1]) < 0.02


def test_qrs_duration_r_and_t_amplitude(measured):
    values, _ = measured
    assert values["QRS_ms"][0] == pytest.approx(120, abs=10)
    assert values["QRS_ms"][2] > values["QRS_ms"][0] + 30          # the wider QRS is wider
    assert values["R_II"][0] == pytest.approx(1.2, abs=0.05)
    assert values["R_II"][3] == pytest.approx(2.0, abs=0.05)
    assert values["T_II"][0] == pytest.approx(0.3, abs=0.03)
    assert values["T_II"][3] == pytest.approx(-0.4, abs=0.03)     # inverted T: signed
    assert values["S_II"][0] == pytest.approx(-0.35, abs=0.05)
    assert values["Q_II"][0] < -0.05 and values["Qdur_II"][0] > 10
    assert 350 < values["QT_ms"][0] < 500


def test_known_boundaries_give_exact_measurements_and_missing_intervals_are_nan():
    x = np.zeros((1, 12, LENGTH))
    x[0, :, R - 30:R + 30] = 1.0                  # a 1 mV box QRS on a 0.1 mV offset
    x += 0.1
    bounds = np.array([[R - 100, R - 60, R - 30, R + 30, R + 100, R + 250]])
    found = np.ones((1, 6), bool)
    found[0, 5] = False                           # T offset filled in: QT is not measured
    features, names = measure_beats(x, FS, bounds, found)
    values = dict(zip(names, features[0], strict=True))
    assert values["R_V5"] == pytest.approx(1.0) and values["ST_V5"] == pytest.approx(0.0)
    assert values["QRS_ms"] == pytest.approx(120) and np.isnan(values["QT_ms"])


def training_set(seed=0, n_patients=40, beats_per_patient=3, n_features=6):
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n_patients).astype(str), beats_per_patient)
    label_of = rng.permutation(np.arange(n_patients) % 2)
    labels = label_of[np.repeat(np.arange(n_patients), beats_per_patient)]
    x = rng.normal(size=(len(labels), n_features)) + 0.8 * labels[:, None] * np.arange(n_features)
    x[3, 2] = np.nan                              # a missing measurement
    return x, labels, patients


def test_the_fit_sees_only_the_beats_it_is_given():
    """The baseline fits on the training rows alone: changing the other (test) patients' beats
    changes nothing; changing a training patient's beats changes the coefficients."""
    x, labels, patients = training_set()
    train = np.isin(patients, np.arange(30).astype(str))
    fit = fit_baseline(x[train], labels[train], patients[train], folds=3, n_penalties=4)
    moved = x.copy()
    moved[~train] += 5.0                          # every test patient's beats changed
    refit = fit_baseline(moved[train], labels[train], patients[train], folds=3, n_penalties=4)
    assert np.array_equal(fit[1].coef_, refit[1].coef_)
    changed = x.copy()
    changed[np.flatnonzero(train)[:3]] += 2.0     # one training patient's beats changed
    other = fit_baseline(changed[train], labels[train], patients[train], folds=3, n_penalties=4)
    assert not np.allclose(fit[1].coef_, other[1].coef_)
    assert np.isfinite(fit[1].coef_).all() and fit[2][2] == np.nanmedian(x[train][:, 2])


FAST = ["--bootstrap=20", "--delineation_leads=II,V2,V5", "--penalties=4", "--penalty_folds=3"]


@pytest.fixture(scope="module")
def baseline_run(small_cohort_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    engine.run_training(tiny_config(small_cohort_dir, root / "run", EPOCHS=1), log=quiet)
    result = script_result("ecg_features_baseline.py", f"--train_dir={root / 'run'}", *FAST)
    return root, result


def test_baseline_writes_a_run_folder_that_compare_runs_accepts(baseline_run):
    root, result = baseline_run
    assert result.returncode == 0, result.stderr
    out = root / "run_ecg_features"
    for name in ("predictions.csv", "test_eval_results.json", "coefficients.csv", "run.json",
                 "split.json", "baseline_model.json", "test_roc_curve.png",
                 "test_confusion_matrix.png", "test_calibration.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "test_eval_results.json").read_text())
    assert {"roc_auc_ci95", "patient_level", "calibration", "decision_curve"} <= set(report)
    # the network run's THRESHOLD rule, chosen on the same validation patients
    point = report["operating_point"]
    assert point["rule"] == "youden" and 0 < point["threshold"] < 1
    assert point["validation"]["n_patients"] == len(
        json.loads((root / "run" / "split.json").read_text())["val"])
    assert (out / "report.html").is_file()
    with open(out / "coefficients.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["feature", "coef_LVR"] and len(rows) == 1 + 74
    magnitudes = [abs(float(row[1])) for row in rows[1:]]
    assert magnitudes == sorted(magnitudes, reverse=True)
    run = json.loads((out / "run.json").read_text())
    assert run["data_fingerprint"] == json.loads((root / "run" / "split.json").read_text())[
        "data_fingerprint"] and "versions" in run
    assert "Largest standardised coefficients" in result.stdout
    compared = script_result("compare_runs.py", f"--run_a={root / 'run'}", f"--run_b={out}")
    assert compared.returncode == 0, compared.stderr
    assert "DeLong" in compared.stdout and "warning" not in compared.stdout


def test_a_folder_without_split_json_is_named(tmp_path):
    result = script_result("ecg_features_baseline.py", f"--train_dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert str(tmp_path / "split.json") in result.stderr and "not found" in result.stderr


def test_another_cohort_is_refused(baseline_run, cohort_copy, tmp_path):
    root, _ = baseline_run
    beats = np.load(cohort_copy / "cut_NS_1.npy")
    np.save(cohort_copy / "cut_NS_1.npy", beats * 1.01)
    result = script_result("ecg_features_baseline.py", f"--train_dir={root / 'run'}",
                           f"--data_dir={cohort_copy}", f"--output_dir={tmp_path / 'out'}")
    assert result.returncode == 2 and "not the data the run" in result.stderr
    assert not (tmp_path / "out").exists()


def test_patients_missing_from_the_cohort_are_refused(baseline_run, tmp_path):
    root, _ = baseline_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    split = json.loads((run / "split.json").read_text())
    split["test"].append("no-such-patient")
    (run / "split.json").write_text(json.dumps(split))
    result = script_result("ecg_features_baseline.py", f"--train_dir={run}")
    assert result.returncode == 2 and "no-such-patient" in result.stderr
    assert "Traceback" not in result.stderr and not os.path.exists(f"{run}_ecg_features")


def test_measurements_of_an_earlier_run_are_reused_and_give_the_same_fit(baseline_run, tmp_path,
                                                                         monkeypatch):
    root, _ = baseline_run
    first = root / "run_ecg_features"
    assert (first / "measurements.npz").is_file()

    def no_delineation(*args, **kwargs):
        raise AssertionError("the stored measurements should have been used")
    monkeypatch.setattr("lvr.evaluate.baseline.cohort_features", no_delineation)
    again = script_result("ecg_features_baseline.py", f"--train_dir={root / 'run'}", *FAST,
                          f"--output_dir={tmp_path / 'again'}", f"--measurements={first}")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "coefficients.csv").read_text() == \
        (first / "coefficients.csv").read_text()
    other = script_result("ecg_features_baseline.py", f"--train_dir={root / 'run'}",
                          f"--output_dir={tmp_path / 'other'}", f"--measurements={first}",
                          "--delineation_leads=all")
    assert other.returncode == 2 and "delineated on" in other.stderr


def test_changing_the_test_patients_measurements_changes_their_predictions_not_the_fit(
        baseline_run, tmp_path):
    """The whole script fits on the run's training patients only: the validation and test
    patients' stored measurements, changed, move their predictions and leave the coefficients
    as they were."""
    root, _ = baseline_run
    first = root / "run_ecg_features"
    split = json.loads((root / "run" / "split.json").read_text())
    patient_ids = np.asarray(load_cohort(split["data_dir"]).patient_ids)
    with np.load(first / "measurements.npz", allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    test_rows = np.isin(patient_ids[arrays["index"]],
                        np.asarray(split["test"] + split["val"], dtype=str))
    assert 0 < test_rows.sum() < len(test_rows) and split["val"]
    arrays["features"] = arrays["features"].copy()
    arrays["features"][test_rows] *= 3.0
    np.savez(tmp_path / "moved.npz", **arrays)
    moved = script_result("ecg_features_baseline.py", f"--train_dir={root / 'run'}", *FAST,
                          f"--output_dir={tmp_path / 'moved'}",
                          f"--measurements={tmp_path / 'moved.npz'}")
    assert moved.returncode == 0, moved.stderr
    assert (tmp_path / "moved" / "coefficients.csv").read_text() == \
        (first / "coefficients.csv").read_text()
    assert (tmp_path / "moved" / "predictions.csv").read_text() != \
        (first / "predictions.csv").read_text()


def test_the_numpy_nearest_peak_search_equals_neurokit2s():
    """closest_in_numpy returns neurokit2's index and value, and raises where it raises, on
    random peak lists with NaN, empty lists and NaN targets."""
    neurokit_search = importlib.import_module("neurokit2.misc.find_closest")
    rng = np.random.default_rng(0)

    def outcome(search, x, values, direction, strictly):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                index, value = search(x, values, direction, strictly)
            return index, None if np.isnan(value) else value
        except (KeyError, ValueError) as error:
            return type(error).__name__
    for _ in range(3000):
        values = pd.Series(rng.integers(0, 100, rng.integers(0, 8)).astype(float))
        if len(values) and rng.random() < 0.2:
            values.iloc[int(rng.integers(len(values)))] = np.nan
        x = float(rng.integers(0, 100)) if rng.random() > 0.1 else np.nan
        case = (x, values, str(rng.choice(["both", "smaller", "greater"])),
                bool(rng.random() < 0.5))
        assert outcome(closest_in_numpy, *case) == \
            outcome(neurokit_search._find_closest_single_pandas, *case), case


def test_the_numpy_search_measures_exactly_what_neurokit2s_does(small_cohort_dir, monkeypatch):
    cohort = load_cohort(small_cohort_dir)
    index = np.arange(12)

    def measured():
        return cohort_features(cohort.beats, index, cohort.spec["sampling_rate"],
                               lead_names=list(cohort.spec["leads"]),
                               r_peak_sample=cohort.spec.get("r_peak_sample"),
                               leads=["II", "V2", "V5"])
    fast, names, fast_methods = measured()
    monkeypatch.setattr(delineation, "numpy_find_closest", contextlib.nullcontext)
    slow, _, slow_methods = measured()
    assert "neurokit2-dwt" in fast_methods   # delineated, not the fallback intervals
    assert fast_methods == slow_methods and np.array_equal(fast, slow, equal_nan=True)


def test_the_binary_search_for_bases_equals_neurokit2s_find_closest():
    find_closest = importlib.import_module("neurokit2.misc.find_closest").find_closest
    rng = np.random.default_rng(1)
    for _ in range(2000):
        troughs = np.unique(rng.integers(0, 200, rng.integers(0, 10)))
        peaks = rng.integers(0, 200, rng.integers(1, 6))
        direction = str(rng.choice(["smaller", "greater"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = find_closest(peaks, troughs, direction=direction, strictly=True)
            found = bases_in_numpy(peaks, troughs, direction=direction, strictly=True,
                                   fallback=find_closest)
        assert np.array_equal(np.atleast_1d(np.asarray(expected, float)),
                              np.atleast_1d(np.asarray(found, float)), equal_nan=True)
    assert bases_in_numpy([3.0], [1, 2], "both", fallback=lambda *args: "neurokit2's") == \
        "neurokit2's"   # any other call is neurokit2's own
