"""What report.html and its figures say about levels and thresholds: every number names its
level (patients or beats) and its threshold, the patient level comes first, a value the page
cannot show is a dash with its reason, the page's title says what the folder is, an external
evaluation compares its cohort with the development cohort, the PTB-XL flow starts at the
database, and compare_runs.py refuses a run compared with itself."""
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

import lvr.report.training_figures as figures
import lvr.stats.delong
from helpers import (PTBXL_SLICE, evaluation_config, quiet, run_prepare_data, script_result,
                     tiny_config, write_small_cohort)
from lvr.data.cohort import load_cohort
from lvr.evaluate.external import run_evaluation
from lvr.report.characteristics import cohort_comparison
from lvr.report.flow import participant_flow
from lvr.report.flow_figures import plot_flow
from lvr.report.html import FIGURES, REPORT_FILE, render_report, report_context, write_report
from lvr.report.page_tables import DASH, with_ci
from lvr.stats.delong import p_text
from lvr.train import run as engine

DEVELOPMENT_AGE, EVALUATED_AGE = 37, 62


def write_patients(cohort_dir, age, seed):
    """patients.csv for every patient of a small cohort: ages around `age`, two sexes."""
    ids = sorted({int(i) for path in cohort_dir.glob("cut_*_patient_ids.npy")
                  for i in np.load(path)})
    rng = np.random.default_rng(seed)
    pd.DataFrame({"patient_id": ids, "age": np.round(rng.normal(age, 4, len(ids))),
                  "sex": ["female" if i % 2 else "male" for i in ids]}).to_csv(
        cohort_dir / "patients.csv", index=False)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    """A development cohort of patients around 37 years and an evaluated one around 62."""
    root = tmp_path_factory.mktemp("levels")
    development = root / "development"
    evaluated = root / "evaluated"
    write_small_cohort(development)
    write_small_cohort(evaluated, seed=3)
    write_patients(development, DEVELOPMENT_AGE, 0)
    write_patients(evaluated, EVALUATED_AGE, 1)
    return development, evaluated


@pytest.fixture(scope="module")
def binary_run(cohorts, tmp_path_factory):
    """A 1-epoch 2-class run on the development cohort, with its report."""
    out = tmp_path_factory.mktemp("binary") / "run"
    engine.run_training(tiny_config(cohorts[0], out, EPOCHS=1, BOOTSTRAP=30), log=quiet)
    return out


@pytest.fixture(scope="module")
def four_class_run(small_cohort_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("four") / "run"
    engine.run_training(tiny_config(small_cohort_dir, out, EPOCHS=2, BOOTSTRAP=30,
                                    TASK="multiclass", NUM_CLASSES=4), log=quiet)
    return out


def page_of(folder):
    return (folder / REPORT_FILE).read_text(encoding="utf-8")


def table_after(page, heading_id):
    """The first table of the section `heading_id`."""
    section = page.split(f'id="{heading_id}"', 1)[1]
    return section[section.index("<table"):section.index("</table>")]


class Captured:
    """save_figure stand-in that keeps the figure for the test."""

    def __init__(self):
        self.figures = []

    def __call__(self, fig, path, dpi=200):
        self.figures.append(fig)
        return path


@pytest.fixture
def captured(monkeypatch):
    capture = Captured()
    monkeypatch.setattr(figures, "save_figure", capture)
    return capture


# ------------------------------------------------------------------ 1, 2: levels and thresholds

def test_every_discrimination_row_names_its_level_and_threshold(binary_run):
    context = report_context(str(binary_run))
    results = json.loads((binary_run / "test_eval_results.json").read_text())
    point = results["operating_point"]
    at_point = f"{point['threshold']:.3f} ({point['rule']}, chosen on validation)"
    rows = context["discrimination"]
    assert {row["level"] for row in rows} == {"patients", "beats"}
    assert {row["threshold"] for row in rows} == {"all thresholds", "argmax (0.5)", at_point}
    assert [row["level"] for row in rows].index("beats") > max(
        i for i, row in enumerate(rows) if row["level"] == "patients")
    specificities = {(row["level"], row["threshold"]): row["value"] for row in rows
                     if row["metric"] == "specificity"}
    assert set(specificities) == {("patients", at_point), ("patients", "argmax (0.5)"),
                                  ("beats", "argmax (0.5)")}
    low, high = point["patient_level"]["specificity_ci95"]
    assert specificities[("patients", at_point)] == \
        f"{point['patient_level']['specificity']:.3f} [{low:.3f}, {high:.3f}]"
    table = table_after(page_of(binary_run), "discrimination")
    assert "<th>threshold</th>" in table and f"<td>{at_point}</td>" in table
    assert "<td>argmax (0.5)</td>" in table


def test_the_figures_draw_the_patient_level_first_and_name_each_level(binary_run, captured):
    results = json.loads((binary_run / "test_eval_results.json").read_text())
    level = results["patient_level"]
    figures.plot_roc_curve("roc.png", results["fpr"], results["tpr"], results["roc_auc"],
                           results["class_names"], patients=level)
    figures.plot_reliability_diagram("cal.png", results["calibration"],
                                     patients=level["calibration"])
    figures.plot_confusion_matrix("cm.png", results["confusion_matrix"],
                                  results["class_names"], patients=level["confusion_matrix"])
    for fig in captured.figures:
        titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert titled == [figures.PATIENT_PANEL, figures.BEAT_PANEL]
    roc_legends = [[t.get_text() for t in ax.get_legend().get_texts()]
                   for ax in captured.figures[0].axes]
    assert f"LVR (AUC = {level['roc_auc']:.3f})" in roc_legends[0]
    assert f"LVR (AUC = {results['roc_auc']:.3f})" in roc_legends[1]
    for name in ("test_roc_curve.png", "test_calibration.png"):
        caption = FIGURES[name][1]
        assert caption.index("patients") < caption.index("beats")


# ------------------------------------------------------------------ 3: the 4-class report

def test_a_four_class_report_says_macro_and_argmax(four_class_run, captured):
    page = page_of(four_class_run)
    assert "at the operating point" not in page and 'id="operating_point"' not in page
    rows = report_context(str(four_class_run))["discrimination"]
    assert {row["threshold"] for row in rows} == {"all thresholds", "argmax"}
    assert {row["metric"] for row in rows} == {"AUC (macro one-vs-rest)", "accuracy",
                                               "sensitivity (macro)", "specificity (macro)",
                                               "F1 (macro)"}
    headline = dict(report_context(str(four_class_run))["headline"])
    assert "Macro sensitivity / specificity at the argmax, patients" in headline

    results = json.loads((four_class_run / "test_eval_results.json").read_text())
    figures.plot_reliability_diagram("cal.png", results["calibration"],
                                     patients=results["patient_level"]["calibration"])
    fig = captured.figures[0]
    fig.canvas.draw()
    for ax in fig.axes:   # each legend below its axes, clear of the curves
        assert ax.get_legend().get_window_extent().y1 < ax.get_window_extent().y0


def test_subgroup_cells_hold_values_or_a_dash_with_its_reason(four_class_run):
    page = page_of(four_class_run)
    table = table_after(page, "subgroups")
    reasons = re.findall(r'<td class="num" title="([^"]+)">' + DASH + r"<sup>(\d+)</sup>", table)
    assert reasons and all("fewer than 10" in reason for reason, _ in reasons)
    assert "fewer than 10</td>" not in table
    for reason, mark in set(reasons):
        assert f"<sup>{mark}</sup> {reason}" in page


# ------------------------------------------------------------------ 4: dashes, titles, p, plurals

def test_an_open_bound_is_a_dash_with_its_reason_never_inf(binary_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(binary_run, folder)
    path = folder / "test_eval_results.json"
    results = json.loads(path.read_text())
    slope = results["patient_level"]["calibration"]["LVR"]
    slope.update(calibration_slope=1.6, calibration_slope_ci95=[0.4, None],
                 bootstrap_resamples=100, bootstrap_failed={"calibration_slope": 34})
    path.write_text(json.dumps(results))
    context = report_context(str(folder))
    card = dict(context["headline"])["Calibration slope of LVR (patients)"]
    assert card == f"1.600 [0.400, {DASH}]"
    assert "failed in 34 of 100 bootstrap resamples" in \
        context["card_notes"]["Calibration slope of LVR (patients)"]
    page = render_report(context)
    assert not re.search(r"\binf\b|\bnan\b", page.split('id="provenance"')[0])
    assert with_ci(float("nan"), None) == DASH
    assert with_ci(0.5, [float("-inf"), 0.9]) == f"0.500 [{DASH}, 0.900]"


def test_the_page_title_says_what_the_folder_is(binary_run, tmp_path):
    assert report_context(str(binary_run))["title"].startswith("Training report: ")
    baseline = tmp_path / "run_ecg_features"
    shutil.copytree(binary_run, baseline)
    results = json.loads((baseline / "test_eval_results.json").read_text())
    (baseline / "test_eval_results.json").write_text(json.dumps({**results,
                                                                 "baseline_of": "run"}))
    assert report_context(str(baseline))["title"] == \
        "ECG-measurement baseline: run_ecg_features"
    saliency = tmp_path / "saliency"
    saliency.mkdir()
    (saliency / "saliency_run.json").write_text(json.dumps({"config": {}, "test_beats": 1}))
    write_report(str(saliency), log=quiet)
    assert "<title>Saliency analysis: saliency</title>" in page_of(saliency)
    assert "1 beat of" in page_of(saliency)


def test_epochs_and_patients_are_pluralised(binary_run):
    rows = {row["item"]: row["filled"] for row in report_context(str(binary_run))["tripod"]}
    assert ", 1 epoch," in rows["12c"]
    assert "1 epochs" not in page_of(binary_run)


@pytest.mark.parametrize("epochs", [1, 2, 7])
def test_the_training_curves_have_whole_epoch_ticks(captured, epochs):
    figures.plot_training_curves(".", [0.5] * epochs, [1.0] * epochs, [0.6] * epochs,
                                 [0.9] * epochs, best_epoch=1)
    for ax in captured.figures[0].axes:
        low, high = ax.get_xlim()
        shown = [t for t in ax.get_xticks() if low <= t <= high]
        assert shown == list(range(1, epochs + 1))


def test_a_p_value_that_underflows_prints_a_bound(binary_run, monkeypatch):
    assert p_text(0.0) == "p < 1e-300" and p_text(1e-320) == "p < 1e-300"
    assert p_text(0.0123) == "p = 0.0123"
    tested = lvr.stats.delong.delong_paired_test

    def underflowing(*args, **kwargs):
        return {**tested(*args, **kwargs), "p": 0.0}

    monkeypatch.setattr(lvr.stats.delong, "delong_paired_test", underflowing)
    other = binary_run.parent / "other_predictions.csv"
    table = pd.read_csv(binary_run / "predictions.csv")
    noise = np.random.default_rng(0).normal(0, 0.2, len(table))
    table["prob_LVR"] = np.clip(table["prob_LVR"] + noise, 0, 1)
    table["prob_non-LVR"] = 1 - table["prob_LVR"]
    table.to_csv(other, index=False)
    done = script_result("compare_runs.py", f"--run_a={binary_run}", f"--run_b={other}")
    assert done.returncode == 0, done.stderr
    assert "p < 1e-300 (DeLong, paired)" in done.stdout and "e+00" not in done.stdout


# ------------------------------------------------------------------ 5: the saliency report

def saliency_folder(folder, checks):
    """A saliency output folder whose patient-level key leads differ from the beats'."""
    folder.mkdir()
    (folder / "saliency_run.json").write_text(json.dumps(
        {"config": {"SANITY_CHECK": False, "DELETION_TEST": False}, "test_beats": 28,
         "test_patients": [str(i) for i in range(6)], "train_dir": "run"}))
    stats = {"top3_leads": ["V2", "V4", "V3"], "sample_count": 28, "icc": 0.843,
             "icc_ci_lower": 0.724, "icc_ci_upper": 0.94, "friedman_p": 1e-44,
             "small_sample_warning": "6 patients: below 10 the lead statistics are not stable",
             "patient_level": {"top3_leads": ["V4", "V3", "V2"], "patient_count": 6,
                               "sample_count": 6, "icc": 0.911, "icc_ci_lower": 0.819,
                               "icc_ci_upper": 0.969, "friedman_p": 2e-8}}
    (folder / "quantitative_consistency_analysis.json").write_text(json.dumps({"STEMI": stats}))
    (folder / "explanation_checks.json").write_text(json.dumps(checks))
    write_report(str(folder), log=quiet)
    return page_of(folder)


def test_the_saliency_report_leads_with_the_patient_level_and_keeps_the_warning(tmp_path):
    page = saliency_folder(tmp_path / "saliency", {"wave_importance": {}})
    context = report_context(str(tmp_path / "saliency"))
    assert "STEMI: 6 patients: below 10 the lead statistics are not stable" in \
        context["warnings"]
    assert dict(context["headline"])["Key leads, STEMI (patients)"] == \
        "V4, V3, V2 (beats: V2, V4, V3)"
    table = table_after(page, "explanations")
    assert "ICC (patients) [95% CI]" in table and "ICC (beats) [95% CI]" in table
    assert table.index("0.911 [0.819, 0.969]") < table.index("0.843 [0.724, 0.940]")
    assert "Checks not run" in page and "<th>check</th>" not in page


# ------------------------------------------------------------ 6: development against evaluated

def test_an_external_report_flags_a_cohort_unlike_the_development_cohort(binary_run, cohorts):
    run_evaluation(evaluation_config(binary_run, cohorts[1], BOOTSTRAP=20,
                                     ALLOW_PATIENT_OVERLAP=True), log=quiet)
    out = binary_run / "external_evaluated"
    context = report_context(str(out))
    flags = [w for w in context["warnings"] if "age differs" in w]
    assert len(flags) == 1 and "beyond 0.5" in flags[0]
    rows = {(row["characteristic"], row["level"]): row for row in context["comparison"]["rows"]}
    age = rows[("Age, years", "median [IQR]")]
    assert age["flagged"] and float(age["difference"].split()[1]) > 3
    assert not rows[("Patients per class", "LVR")]["flagged"]
    assert context["title"] == "External evaluation: external_evaluated"
    assert 'id="development_vs_evaluated"' in page_of(out)


def test_a_class_prevalence_twice_the_developments_is_flagged():
    def table(positive, negative):
        total = positive + negative
        return {"columns": ["all"], "rows": [
            {"characteristic": "Patients", "level": "", "values": {"all": total},
             "text": {"all": str(total)}},
            *({"characteristic": "Patients per class", "level": name, "values": {"all": n},
               "text": {"all": str(n)}} for name, n in (("non-LVR", negative), ("LVR", positive)))]}
    compared = cohort_comparison(table(20, 80), table(50, 50))
    assert [row["flagged"] for row in compared["rows"][1:]] == [False, True]
    assert any(flag.startswith("patients per class LVR: the evaluated cohort has 50% against "
                               "20%") for flag in compared["flags"])
    assert "age not compared" in " ".join(compared["notes"])


# ------------------------------------------------------------------ 7: the PTB-XL flow

def test_the_ptbxl_flow_starts_at_the_database(monkeypatch, tmp_path, captured):
    out = tmp_path / "cohort"
    run_prepare_data(monkeypatch, f"--ptbxl_dir={PTBXL_SLICE}", f"--output_dir={out}",
                     "--workers=1", "--beats=first:1", "--ptbxl_device=CS-12", trainable=False)
    summary = json.loads((out / "prepare_summary.json").read_text())
    assert summary["database"] == {
        "name": "PTB-XL", "records": 8, "patients": 8, "per_device": {"CS-12": 5, "AT-6": 3},
        "per_superclass": {"NORM": 3, "MI": 3, "STTC": 2, "CD": 2},
        "selection": "task mi_norm, device CS-12, statements of likelihood >= 0",
        "task_records": 3, "not_in_task": {"no class of the task": 2, "another device": 3}}
    assert summary["records_read"] == 3
    assert "database" not in json.loads((out / "cohort.json").read_text())["source"]
    flow = participant_flow(load_cohort(str(out)), "binary")
    assert flow["records"]["database"] == summary["database"]
    monkeypatch.setattr("lvr.report.flow_figures.save_figure", captured)
    plot_flow("flow.png", flow)
    texts = [t.get_text() for t in captured.figures[0].axes[0].texts]
    assert texts.index("PTB-XL database (n = 8 records, 8 patients)") < \
        texts.index("Not in the task (n = 5)") < texts.index("Records of the task (n = 3)")
    assert "by device: CS-12 5, AT-6 3" in texts


# ------------------------------------------------------------------ 8: compare_runs.py

def test_compare_runs_refuses_a_run_compared_with_itself(binary_run):
    for other in (binary_run, binary_run / "predictions.csv"):
        done = script_result("compare_runs.py", f"--run_a={binary_run}", f"--run_b={other}")
        assert done.returncode == 2 and done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --run_a=") and \
            "are the same predictions.csv" in lines[0] and "give --run_b a second run" in lines[0]
