"""Subgroup metrics (lvr/stats/subgroups.py) against scikit-learn on the subset's patients, the
participant flow (lvr/report/flow.py, lvr/report/flow_figures.py) and the characteristics table
(lvr/report/characteristics.py)."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import recall_score, roc_auc_score

from helpers import PTBXL_SLICE, run_prepare_data
from lvr.report.characteristics import characteristics_markdown, characteristics_table
from lvr.data.cohort import load_cohort
from lvr.data.split import patient_split_indices
from lvr.data.cohort_json import SEED_COHORT
from lvr.report.flow_figures import plot_flow
from lvr.report.flow import participant_flow
from lvr.stats.subgroups import (AGE_BANDS, MIN_SUBGROUP_PATIENTS, performance_subgroups,
                           subgroup_report)

GROUPS = ["NS_0", "NS_1", "ST_0", "ST_1"]
N_BOOT = 100


def synthetic_test_set(n_patients=120, seed=3, n_classes=2):
    """Beat-level test arrays: 1-4 beats per patient, a patient's group fixed, probabilities
    that rank the classes imperfectly; and a patient table with age, sex, site, a note."""
    rng = np.random.default_rng(seed)
    group_of = rng.choice(GROUPS, n_patients)
    if n_classes == 2:
        class_of = np.array([int(g[-1]) for g in group_of])
    else:
        class_of = np.array([GROUPS.index(g) for g in group_of])
    beats = rng.integers(1, 5, n_patients)
    pid = np.repeat([f"P{i:03d}" for i in range(n_patients)], beats)
    y = np.repeat(class_of, beats)
    groups = np.repeat(group_of, beats)
    logits = rng.normal(size=(len(y), n_classes)) + 1.5 * np.eye(n_classes)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ages = rng.uniform(30, 90, n_patients).round()
    ages[5:9] = np.nan
    table = pd.DataFrame({"age": ages, "sex": rng.choice(["female", "male"], n_patients),
                          "site": rng.choice(["A", "B", "C"], n_patients),
                          "note": [f"free text {i}" for i in range(n_patients)]},
                         index=pd.Index([f"P{i:03d}" for i in range(n_patients)]))
    return y, prob, pid, groups, table.iloc[5:]   # 5 patients missing from the table


def patient_frame(y, prob, pid, groups, table):
    """Per-patient class, mean P(class k), group and covariates, computed with pandas."""
    frame = pd.DataFrame({"pid": pid, "y": y, "group": groups,
                          **{f"p{k}": prob[:, k] for k in range(prob.shape[1])}})
    per = frame.groupby("pid").agg({"y": "first", "group": "first",
                                    **{f"p{k}": "mean" for k in range(prob.shape[1])}})
    return per.join(table)


def sklearn_row(per, threshold, n_boot, seed=0):
    """AUC, sensitivity, specificity and percentile CIs from scikit-learn, one resample at a
    time (the same patient draws as the vectorised bootstrap)."""
    y, p = per["y"].to_numpy(), per["p1"].to_numpy()
    pred = (p >= threshold).astype(int)

    def metrics(idx):
        yy, called = y[idx], pred[idx]
        if len(set(yy)) < 2:
            return None
        return (roc_auc_score(yy, p[idx]), called[yy == 1].mean(), 1 - called[yy == 0].mean())

    point = (roc_auc_score(y, p), recall_score(y, pred), recall_score(y, pred, pos_label=0))
    rng = np.random.default_rng(seed)
    draws = [m for m in (metrics(rng.integers(0, len(y), len(y))) for _ in range(n_boot)) if m]
    draws = np.array(draws)
    cis = [np.percentile(draws[:, i], [2.5, 97.5]).tolist() for i in range(3)]
    return point, cis


def check_row(row, per, threshold):
    (auc, sens, spec), cis = sklearn_row(per, threshold, N_BOOT)
    assert row["n_patients"] == len(per) and row["n_positive"] == int(per["y"].sum())
    assert row["roc_auc"] == pytest.approx(auc, abs=1e-12)
    assert row["sensitivity"] == pytest.approx(sens, abs=1e-12)
    assert row["specificity"] == pytest.approx(spec, abs=1e-12)
    for name, ci in zip(("roc_auc", "sensitivity", "specificity"), cis, strict=True):
        assert row[f"{name}_ci95"] == pytest.approx(ci, abs=1e-12), name


def test_subgroup_metrics_equal_scikit_learn_on_the_subset_of_patients():
    y, prob, pid, groups, table = synthetic_test_set()
    subgroups = performance_subgroups(SEED_COHORT)
    assert subgroups == {"STEMI": ["ST_0", "ST_1"], "NSTEMI": ["NS_0", "NS_1"]}
    threshold = 0.4
    report = subgroup_report(y, prob, pid, groups, table, subgroups, threshold=threshold,
                             n_boot=N_BOOT, seed=0)
    json.dumps(report)
    per = patient_frame(y, prob, pid, groups, table)
    for name, members in subgroups.items():
        check_row(report["subgroups"][name], per[per["group"].isin(members)], threshold)
    sex = report["covariates"]["sex"]
    assert sex["kind"] == "categorical" and list(sex["levels"]) == ["female", "male", "unknown"]
    check_row(sex["levels"]["female"], per[per["sex"] == "female"], threshold)
    assert sex["levels"]["unknown"]["too_small"] and sex["levels"]["unknown"]["n_patients"] == 5
    site = report["covariates"]["site"]["levels"]
    check_row(site["B"], per[per["site"] == "B"], threshold)
    assert "note" in report["skipped_covariates"]
    assert "more than 10" in report["skipped_covariates"]["note"]


def test_age_bands_hold_the_patients_of_their_range():
    y, prob, pid, groups, table = synthetic_test_set(n_patients=300)
    report = subgroup_report(y, prob, pid, groups, table, n_boot=N_BOOT)
    per = patient_frame(y, prob, pid, groups, table)
    age = report["covariates"]["age"]
    assert age["kind"] == "age bands"
    assert list(age["levels"]) == [label for label, *_ in AGE_BANDS] + ["unknown"]
    for label, low, high in AGE_BANDS:
        inside = per[(per["age"] >= (low or -np.inf)) & (per["age"] < (high or np.inf))]
        assert age["levels"][label]["n_patients"] == len(inside), label
        if label == "60-69":
            check_row(age["levels"][label], inside, 0.5)
    assert age["levels"]["unknown"]["n_patients"] == 4 + 5     # empty cells and missing rows


def test_too_small_and_one_class_subgroups_are_not_numbers():
    y, prob, pid, groups, table = synthetic_test_set(n_patients=60)
    keep = np.isin(pid, sorted(set(pid))[:MIN_SUBGROUP_PATIENTS - 1]) | np.isin(groups, GROUPS[:2])
    report = subgroup_report(y[keep], prob[keep], pid[keep], groups[keep], table,
                             {"STEMI": ["ST_0", "ST_1"], "NSTEMI": ["NS_0", "NS_1"],
                              "positives": ["NS_1", "ST_1"]}, n_boot=50)
    stemi = report["subgroups"]["STEMI"]
    assert stemi["too_small"] and stemi["n_patients"] < MIN_SUBGROUP_PATIENTS
    assert "fewer than 10" in stemi["reason"] and "roc_auc" not in stemi
    positives = report["subgroups"]["positives"]
    assert positives["too_small"] and "one class" in positives["reason"]
    assert "roc_auc" in report["subgroups"]["NSTEMI"]
    # a group has one class: its row gives the one rate defined there
    per = patient_frame(y, prob, pid, groups, table)
    ns1 = per[per["group"] == "NS_1"]
    row = report["groups"]["NS_1"]
    assert "roc_auc" not in row and "specificity" not in row
    assert row["sensitivity"] == pytest.approx((ns1["p1"] >= 0.5).mean())
    assert report["groups"]["ST_0"]["too_small"]


def test_multiclass_reports_the_macro_auc_only():
    y, prob, pid, groups, table = synthetic_test_set(n_patients=200, n_classes=4)
    report = subgroup_report(y, prob, pid, groups, table, n_boot=20)
    per = patient_frame(y, prob, pid, groups, table)
    female = per[per["sex"] == "female"]
    row = report["covariates"]["sex"]["levels"]["female"]
    expected = roc_auc_score(female["y"], female[[f"p{k}" for k in range(4)]], multi_class="ovr",
                             average="macro")
    assert row["roc_auc"] == pytest.approx(expected, abs=1e-12)
    assert "sensitivity" not in row and report["threshold"] is None
    assert row["n_per_class"] == np.bincount(female["y"], minlength=4).tolist()


# ------------------------------------------------------------------ flow and characteristics

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A cohort written by prepare_data.py from the shipped PTB-XL records, one record
    unreadable, with patients.csv; and a patient-level split of it."""
    monkeypatch = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("flow")
    table = pd.read_csv(PTBXL_SLICE / "records.csv")
    table["record"] = [str(PTBXL_SLICE / r) for r in table["record"]]
    table.loc[len(table)] = [str(folder / "gone"), 4242, "MI"]
    table.to_csv(folder / "records.csv", index=False)
    try:
        run_prepare_data(monkeypatch, f"--table={folder / 'records.csv'}",
                         f"--output_dir={folder / 'cohort'}", "--workers=1", "--beats=first:2")
    finally:
        monkeypatch.undo()
    cohort_dir = folder / "cohort"
    ids = sorted(set(np.load(cohort_dir / "cut_NORM_patient_ids.npy").tolist())
                 | set(np.load(cohort_dir / "cut_MI_patient_ids.npy").tolist()))
    pd.DataFrame({"patient_id": ids[1:], "age": [40, 55, 61, 70, 82][:len(ids) - 1],
                  "sex": ["female", "male", "male", "female", "male"][:len(ids) - 1]}
                 ).to_csv(cohort_dir / "patients.csv", index=False)
    cohort = load_cohort(str(cohort_dir))
    parts = patient_split_indices(cohort.labels("binary"), cohort.patient_ids)
    split = {name: sorted(set(cohort.patient_ids[idx].tolist())) for name, idx in parts.items()}
    return cohort, split


def test_flow_counts_add_up(prepared, tmp_path):
    cohort, split = prepared
    flow = participant_flow(cohort, "binary", split)
    json.dumps(flow)
    records = flow["records"]
    assert records["read"] == 7 and records["rejected"] == 1 and records["kept"] == 6
    assert records["kept"] + records["rejected"] == records["read"]
    assert records["rejected_by_reason"] == {"unreadable": 1}
    assert sum(c["read"] for c in records["per_class"].values()) == records["read"]
    assert records["per_class"]["MI"] == {"read": 4, "kept": 3, "rejected": 1}
    whole = flow["cohort"]
    assert whole["beats"] == len(cohort.patient_ids) == 12
    assert sum(c["beats"] for c in whole["per_class"].values()) == whole["beats"]
    assert sum(c["patients"] for c in whole["per_class"].values()) == whole["patients"] == 6
    splits = flow["splits"]
    assert sum(s["patients"] for s in splits.values()) == whole["patients"]
    assert sum(s["beats"] for s in splits.values()) == whole["beats"]
    for name, s in splits.items():
        assert s["patients"] == len(split[name])
        assert sum(c["beats"] for c in s["per_class"].values()) == s["beats"]
    assert flow["outside_splits"]["patients"] == 0
    path = plot_flow(str(tmp_path / "flow.png"), flow)
    assert (tmp_path / "flow.png").stat().st_size > 10_000 and path.endswith("flow.png")


def test_flow_of_a_cohort_without_prepare_data_starts_at_its_beats(small_cohort_dir, tmp_path):
    cohort = load_cohort(small_cohort_dir)
    flow = participant_flow(cohort, "binary")
    assert flow["records"] is None and flow["splits"] is None
    assert "prepare_summary.json" in flow["notes"][0]
    assert flow["cohort"]["patients"] == len(set(cohort.patient_ids))
    plot_flow(str(tmp_path / "flow.png"), flow)


def test_a_summary_that_no_longer_matches_the_files_is_left_out(prepared, tmp_path):
    cohort, _ = prepared
    summary = json.loads((Path(cohort.data_dir) / "prepare_summary.json").read_text())
    summary["beats_per_group"]["MI"] += 1
    (tmp_path / "prepare_summary.json").write_text(json.dumps(summary))
    flow = participant_flow(dataclasses.replace(cohort, data_dir=str(tmp_path)), "binary")
    assert flow["records"] is None and "left out" in flow["notes"][0]


def test_characteristics_match_the_split(prepared):
    cohort, split = prepared
    table = characteristics_table(cohort, "binary", split)
    json.dumps(table)
    assert table["columns"] == ["train", "val", "test", "all"]
    rows = {(r["characteristic"], r["level"]): r for r in table["rows"]}
    labels = pd.Series(cohort.labels("binary"), index=cohort.patient_ids)
    ages = cohort.patient_table["age"]
    for name, ids in split.items():
        beats = np.isin(cohort.patient_ids, ids)
        assert rows[("Patients", "")]["values"][name] == len(ids)
        assert rows[("Beats", "")]["values"][name] == beats.sum()
        per_patient = labels.groupby(level=0).first().loc[ids]
        assert rows[("Patients per class", "MI")]["values"][name] == (per_patient == 1).sum()
        assert rows[("Beats per class", "NORM")]["values"][name] == (labels[beats] == 0).sum()
        known = ages.reindex(ids).dropna()
        cell = rows[("Age, years", "median [IQR]")]["values"][name]
        assert cell["n"] == len(known)
        assert cell["median"] == (np.median(known) if len(known) else None)
        sex = cohort.patient_table["sex"].reindex(ids)
        assert rows[("Sex", "male")]["values"][name] == (sex == "male").sum()
        assert rows[("Sex", "unknown")]["values"][name] == sex.isna().sum()
    assert rows[("Patients", "")]["values"]["all"] == 6
    assert rows[("Age, years", "unknown")]["values"]["all"] == 1
    markdown = characteristics_markdown(table)
    assert markdown.splitlines()[0] == "| Characteristic | train | val | test | all |"
    assert "| Sex, male |" in markdown and len(markdown.splitlines()) == len(table["rows"]) + 2


def test_a_runs_subgroup_rows_equal_metrics_recomputed_from_its_predictions(tmp_path):
    """End to end: the subgroups block of a training run is what its predictions.csv and
    patients.csv give on each subset of test patients, at the run's operating point."""
    from helpers import quiet, tiny_config, write_small_cohort
    from lvr.train import run as engine
    cohort_dir = write_small_cohort(tmp_path / "cohort", n_patients=40)
    ids = sorted(set(load_cohort(cohort_dir).patient_ids.astype(str)))
    rng = np.random.default_rng(0)
    covariates = pd.DataFrame({"patient_id": ids, "sex": rng.choice(["female", "male"],
                                                                     len(ids))})
    covariates.to_csv(Path(cohort_dir) / "patients.csv", index=False)
    report = engine.run_training(tiny_config(cohort_dir, tmp_path / "run", EPOCHS=2,
                                             TEST_SIZE=0.3, REPORT=False), log=quiet)
    rows = pd.read_csv(tmp_path / "run" / "predictions.csv", dtype={"patient": str})
    patients = rows.groupby("patient").agg(group=("group", "first"), y=("true_label", "first"),
                                           p=("prob_LVR", "mean"))
    patients["sex"] = covariates.set_index("patient_id").loc[patients.index, "sex"].to_numpy()
    patients["subgroup"] = np.where(patients["group"].str.startswith("ST"), "STEMI", "NSTEMI")
    threshold = report["operating_point"]["threshold"]
    blocks = report["subgroups"]
    checked = 0
    for column, found in (("subgroup", blocks["subgroups"]),
                          ("sex", blocks["covariates"]["sex"]["levels"])):
        for level, row in found.items():
            subset = patients[patients[column] == level]
            assert row["n_patients"] == len(subset), (column, level)
            if row.get("too_small"):
                continue
            assert row["roc_auc"] == pytest.approx(roc_auc_score(subset["y"], subset["p"]),
                                                   abs=1e-9)
            assert row["sensitivity"] == pytest.approx(recall_score(
                subset["y"], subset["p"] >= threshold), abs=1e-9)
            assert row["specificity"] == pytest.approx(recall_score(
                subset["y"], subset["p"] >= threshold, pos_label=0), abs=1e-9)
            checked += 1
    assert checked >= 3
