"""The benchmark harness runs end to end on tiny sizes and reports every key (no timing checks)."""
import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import HANG_LIMIT_S
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")


def bench_module(name):
    """bench/<name>.py as a module, its folder on sys.path as when it runs as a script (for
    bench/common.py)."""
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_harness_reports_every_key(tmp_path):
    bench = bench_module("run_bench")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops on a busy 2-core machine stall in multi-thread barriers
    try:
        result = bench.run_bench(quick=True, train_beats=40, train_reps=1, saliency_beats=4,
                                 saliency_reps=1, n_figures=2, figure_reps=1, bootstrap_reps=1,
                                 bootstrap_resamples=20,
                                 experiment="baseline", length=300, captum_chunks=(None, 2),
                                 matmul_n=256, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    ratios = ("train_speedup_vs_seed_loop", "train_overhead_vs_bare_step",
              "train_seed_loop_vs_bare_step", "smoothgrad_speedup_vs_seed_loop",
              "smoothgrad_speedup_vs_captum", "bootstrap_speedup_vs_sklearn_loop",
              "figures_speedup_vs_sequential",
              "train_flops_fraction_of_peak")
    for key in ratios:
        assert math.isfinite(result[key]) and result[key] > 0, (key, result[key])
    assert result["demo_end_to_end_s"] is None  # quick skips the end-to-end demo
    assert result["captum_best_nt_samples_batch_size"] in ("None", "2")
    for key in ("cpu", "cores", "torch_threads", "torch", "date"):
        assert key in result["machine"]
    table = bench.markdown(result)
    assert all(key in table for key in ratios)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(result))
    assert set(ratios) <= set(json.loads(path.read_text()))


def test_train_speedup_is_reported_without_a_target():
    """Its ceiling on this CPU (train_seed_loop_vs_bare_step) measured 0.99-1.07."""
    bench = bench_module("run_bench")
    assert "train_speedup_vs_seed_loop" not in bench.TARGETS
    assert "train_overhead_vs_bare_step" in bench.TARGETS


@pytest.mark.slow
def test_scale_bench_quick_measures_every_step(tmp_path):
    """bench/scale_bench.py --quick: two tiny demo cohorts (train, SmoothGrad) and prepare_data.py
    on a few PTB-XL records, each with its time and peak private memory; no target is checked."""
    if not os.path.isdir("/work/shared/datasets/ptbxl500"):
        pytest.skip("the shared PTB-XL records are not on this machine")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "scale_bench.py"),
                           "--quick", f"--out={tmp_path}"], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=HANG_LIMIT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "scale_bench.json").read_text())
    assert [s["beats"] for s in result["sizes"]] == sorted(s["beats"] for s in result["sizes"])
    for size in result["sizes"]:
        train, grad = size["train"], size["smoothgrad"]
        assert 100 < train["peak_private_mb"] < 3000 and train["epoch_s_per_1000_beats"] > 0
        assert 0 < train["train_beats"] < size["beats"] and grad["beats"] == 16
        assert grad["s_per_1000_beats"] > 0 and grad["peak_private_mb"] > 100
        assert 0 <= train["other_cpu_fraction"] <= 1 and 0 <= grad["other_cpu_fraction"] <= 1
    (prepare,) = result["prepare"]
    assert prepare["records"] == 12 and prepare["beats"] > 0 and prepare["peak_private_mb"] > 100
    assert set(result["targets"]) == {"train_peak_growth_mb", "train_peak_max_mb",
                                      "train_s_per_beat_spread"}
    table = (tmp_path / "scale_bench.md").read_text()
    assert "train_peak_growth_mb" in table and "| 12 |" in table
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
def test_peak_private_memory_counts_children_and_not_mapped_files(tmp_path):
    """RssAnon of a child that allocates 200 MB counts; reading a 200 MB mapped file does not."""
    scale = bench_module("scale_bench")
    path = tmp_path / "big.npy"
    np.save(path, np.ones((50, 1_000_000), dtype=np.float32))
    child = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
             "'import numpy as np, time; a = np.ones(50_000_000, np.float32); time.sleep(0.5)'])")
    mapped = (f"import numpy as np, time; m = np.load({str(path)!r}, mmap_mode='r'); "
              f"s = float(m.sum()); time.sleep(0.5)")
    _, allocated, _ = scale.measured_run([sys.executable, "-c", child])
    _, reading, _ = scale.measured_run([sys.executable, "-c", mapped])
    assert allocated > 190 and reading < 150, (allocated, reading)
    tables = bench_module("run_bench").profile_tables(steps=1, rows=5)
    assert set(tables) == {"training steps", "SmoothGrad batch"}
    assert all("convolution" in table for table in tables.values())


@pytest.mark.slow
def test_explanation_bench_quick_writes_both_tables(tmp_path):
    """bench/explanation_bench.py --quick: one small cohort, a map method of each kind, wave
    effects and every wave variant."""
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "explanation_bench.py"),
                           "--quick", f"--out={tmp_path}"], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=HANG_LIMIT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "explanation_bench.csv", encoding="utf-8")))
    methods = [row["method"] for row in rows]
    assert methods == ["smoothgrad n10 sd0.1", "occlusion", "grad_cam",
                       "wave effects (segment swap)"]
    for row in rows[:-1]:
        assert 0 <= float(row["mass_accuracy"]) <= 1 and 0 <= float(row["rank_accuracy"]) <= 1
        assert float(row["mass_vs_chance"]) == pytest.approx(
            float(row["mass_accuracy"]) / 0.075, rel=0.02)   # chance: 3 of 12 leads x 150 of 500
    assert 3 <= int(rows[-1]["true_cell_rank"]) <= 60
    variants = (tmp_path / "wave_variants.md").read_text().splitlines()[2:]
    assert len(variants) == 2 * 3 * 2 * 2             # units x reference x alignment x blend


@pytest.mark.slow
def test_seed_spread_quick_reports_every_seed_and_claim(tmp_path):
    """bench/seed_spread.py --quick: two training seeds on a small demo cohort, each trained and
    explained; the summary counts, per subgroup, the seeds for which each claim holds."""
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "seed_spread.py"),
                           "--quick", f"--out={tmp_path}"], capture_output=True, text=True,
                          timeout=HANG_LIMIT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "seed_spread.json").read_text())
    assert [row["seed"] for row in result["rows"]] == [42, 1]
    for row in result["rows"]:
        assert 0 <= row["roc_auc"] <= 1 and row["best_epoch"] in (1, 2)
        for cells in row["subgroups"].values():
            assert sorted(cells["true_cells"]) == ["V2-T", "V3-T", "V4-T"]
            assert cells["ranks"] == sorted(cells["ranks"]) and 1 <= cells["ranks"][0] <= 60
    for claim in result["summary"]["claims"].values():
        assert 0 <= claim["true_cells_first"] <= claim["seeds"] <= 2
    table = (tmp_path / "seed_spread.md").read_text()
    assert "| 42 |" in table and "| 1 |" in table and "true cells ranked first in" in table


def test_model_bench_recipe_rules_pick_their_epoch_on_one_half_and_score_on_the_other():
    bench = bench_module("model_bench")
    rng = np.random.default_rng(0)
    patients = np.repeat([f"p{i}" for i in range(20)], 3)
    y = np.repeat(np.arange(20) % 2, 3)
    good = np.where(y[:, None] == np.arange(2), 2.0, -2.0) + rng.normal(0, 0.5, (60, 2))
    noise = rng.normal(0, 1, (60, 2))
    # epoch 1 is noise, epoch 2 separates the classes: every rule picks epoch 2 on either half,
    # so each scores the held-out half's AUC at epoch 2
    job = {"val_labels": y.tolist(), "val_patients": patients.tolist(), "label_smoothing": 0.0,
           "val_logits": [noise.tolist(), good.tolist()]}
    scores = bench.rule_scores(job)
    halves = bench.patient_halves(y, patients, bench.SEED)
    assert set(np.unique(halves)) == {0, 1}
    for cls in (0, 1):   # both halves hold patients of both classes
        assert len(set(patients[(y == cls) & (halves == 0)])) == 5
    assert scores == {rule: 1.0 for rule in bench.RULES}
    chosen, means = bench.chosen_recipe([{"lr": lr, "scores": {r: 0.8 for r in bench.RULES}}
                                         for lr in bench.LRS])
    assert chosen == bench.SEED_RECIPE     # a tie goes to the original's recipe


def test_model_bench_decision_needs_most_tasks_higher_and_none_significantly_worse():
    bench = bench_module("model_bench")
    reference = f"{bench.DEFAULT} (original recipe)"

    def task(ref, row, p):
        return {reference: {"pooled_auc": ref}, "x": {"pooled_auc": row, "p_vs_default": p}}
    tasks = {"a": task(0.8, 0.85, 0.2), "b": task(0.8, 0.9, 0.01), "c": task(0.8, 0.79, 0.5)}
    assert bench.decision(tasks)["x"]["better"]
    tasks["c"] = task(0.8, 0.7, 0.01)     # significantly worse on one task
    assert not bench.decision(tasks)["x"]["better"]


def test_model_bench_a_delong_test_it_cannot_compute_is_no_p_and_no_crash():
    bench = bench_module("model_bench")
    y = np.array([1, 0, 0, 0, 0])                                  # one positive patient
    prob = np.column_stack([1 - np.linspace(0.1, 0.9, 5), np.linspace(0.1, 0.9, 5)])
    p, reason = bench.paired_p(y, prob, prob[::-1], 10)
    assert p is None and reason.startswith("not computable: ")
    reference = f"{bench.DEFAULT} (original recipe)"
    row = {"pooled_auc": 0.7, "pooled_auc_ci95": [0.6, 0.8], "fold_auc_mean": 0.7,
           "fold_auc_sd": 0.01, "parameters": None, "seconds_per_fold": None}
    tasks = {"a": {reference: dict(row, pooled_auc=0.8),
                   "x": dict(row, p_vs_default=None, p_vs_default_reason=reason)}}
    assert bench.decision(tasks)["x"]["significantly_worse"] == 0
    result = {"machine": {"date": "2026-12-03", "cpu": "cpu", "cores": 2}, "folds": 3,
              "epochs": 1, "quick": True, "tasks": tasks, "decision": bench.decision(tasks)}
    assert "| not computable |" in bench.markdown(result)


@pytest.mark.slow
def test_model_bench_quick_trains_every_model_on_the_same_folds_and_resumes(tmp_path):
    """bench/model_bench.py --quick: the recipe phase and every model on a small demo, 3 folds;
    a second run finds everything done and writes the same table."""
    command = [sys.executable, os.path.join(ROOT, "bench", "model_bench.py"), "--quick",
               f"--out={tmp_path}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_LIMIT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    bench = bench_module("model_bench")
    result = json.loads((tmp_path / "model_bench.json").read_text())
    assert set(result["recipe"]["scores"]) == {f"{lr:g} {rule}" for lr in bench.LRS
                                               for rule in bench.RULES}
    assert len(result["recipe"]["runs"]) == len(bench.RECIPE_MODELS) * len(bench.LRS) * 3
    rows = result["tasks"]["demo"]
    expected = {bench.FEATURES, f"{bench.DEFAULT} (original recipe)", *bench.OURS,
                *bench.REFERENCES, *(f"{bench.DEFAULT} {n}" for n in bench.OTHER_NORMALISATIONS)}
    chosen = result["recipe"]["chosen"]
    if chosen == bench.SEED_RECIPE:       # the default at the winning recipe is the same row
        expected.discard(bench.DEFAULT)
    assert set(rows) == expected
    patients = {row["patients"] for row in rows.values()}
    assert len(patients) == 1             # every model predicted every patient once
    tested = {}                           # ... and each fold tested the same patients in all
    for predictions in (tmp_path / "runs" / "demo").glob("*/fold_*/predictions.csv"):
        ids = frozenset(pd.read_csv(predictions, dtype={"patient": str})["patient"])
        tested.setdefault(predictions.parent.name, {})[predictions.parent.parent.name] = ids
    assert sorted(tested) == ["fold_1", "fold_2", "fold_3"]
    assert all(len(set(models.values())) == 1 and len(models) >= len(rows)
               for models in tested.values())
    from model import build_model, parameter_count
    for name in (*bench.OURS, *bench.REFERENCES):
        if name in rows:
            assert rows[name]["parameters"] == parameter_count(build_model(2, name))
            assert len(rows[name]["fold_aucs"]) == 3
    for name, row in rows.items():
        low, high = row["pooled_auc_ci95"]
        assert low <= row["pooled_auc"] <= high
        assert ("p_vs_default" in row) == (name != f"{bench.DEFAULT} (original recipe)")
    table = (tmp_path / "model_bench.md").read_text()
    again = subprocess.run(command, capture_output=True, text=True, timeout=HANG_LIMIT_S)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "12 of 12 trainings done earlier" in again.stdout
    assert (tmp_path / "model_bench.md").read_text().split("\n", 1)[1] == table.split("\n", 1)[1]


# ---------------------------------------------------------------- bench/label_efficiency.py

def test_label_efficiency_subsets_are_per_class_nested_and_keep_two_of_each():
    bench = bench_module("label_efficiency")
    patients = np.repeat([f"p{i}" for i in range(40)], 3)            # 3 beats each
    labels = np.repeat(np.r_[np.zeros(30, int), np.ones(10, int)], 3)
    train = np.arange(len(labels))
    chosen = {f: set(patients[bench.patient_subset(train, labels, patients, f, seed=1)])
              for f in (0.1, 0.25, 0.5, 1.0)}
    assert len(chosen[1.0]) == 40
    assert chosen[0.1] <= chosen[0.25] <= chosen[0.5] <= chosen[1.0]
    positives = {f"p{i}" for i in range(30, 40)}
    assert len(chosen[0.1] & positives) == 2 and len(chosen[0.1] - positives) == 3
    assert len(chosen[0.5] & positives) == 5 and len(chosen[0.5] - positives) == 15
    beats = bench.patient_subset(train, labels, patients, 0.25, seed=1)
    assert len(beats) == 3 * len(chosen[0.25])                        # whole patients
    assert chosen[0.25] != set(patients[bench.patient_subset(train, labels, patients, 0.25, 2)])


def test_label_efficiency_gives_every_fraction_the_steps_of_the_full_run():
    bench = bench_module("label_efficiency")
    epochs = [bench.epochs_for(f, bench.EPOCHS, bench.MAX_EPOCHS) for f in bench.FRACTIONS]
    assert epochs == [100, 40, 20, 10]                 # epochs x fraction: the 100% run's 10
    assert bench.epochs_for(0.3, 10, 100) == 34
    assert bench.epochs_for(0.1, 10, 50) == 50         # a cap, where one is set lower


def test_label_efficiency_redoes_a_job_of_another_method(tmp_path):
    bench = bench_module("label_efficiency")
    job = {"epochs": 100}
    path = tmp_path / "job.json"
    assert not bench.finished_job(path, job)
    path.write_text(json.dumps({"epochs": 50, "train_patients": 19}))       # before val subsets
    assert not bench.finished_job(path, job)
    path.write_text(json.dumps({"epochs": 50, "train_patients": 19, "val_patients": 8}))
    assert not bench.finished_job(path, job)                                # other epochs
    path.write_text(json.dumps({"epochs": 100, "train_patients": 19, "val_patients": 8}))
    assert bench.finished_job(path, job)


def test_label_efficiency_copies_a_cohort_without_the_test_patients(small_cohort_dir, tmp_path):
    bench = bench_module("label_efficiency")
    from lvr.data.cohort import load_cohort
    source = load_cohort(small_cohort_dir)
    dropped = sorted(set(source.patient_ids.astype(str)))[:7]
    target = tmp_path / "without"
    bench.cohort_without(Path(small_cohort_dir), target, dropped)
    copy = load_cohort(str(target))
    kept = ~np.isin(source.patient_ids.astype(str), dropped)
    assert not set(copy.patient_ids.astype(str)) & set(dropped)
    assert len(copy.beats) == int(kept.sum())
    assert np.array_equal(np.asarray(copy.beats), np.asarray(source.beats)[kept])
    assert copy.labels("multiclass").tolist() == source.labels("multiclass")[kept].tolist()


def test_label_efficiency_pools_the_folds_per_seed_and_finds_the_matching_fraction(tmp_path):
    from sklearn.metrics import roc_auc_score
    bench = bench_module("label_efficiency")
    rng = np.random.default_rng(0)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    truth = {}
    for arm in ("scratch", "self_supervised"):
        for fraction in (0.5, 1.0):
            for seed in (0, 1):
                ids, y, p = [], [], []
                for fold in range(2):
                    patients = [f"{fold}-{i}" for i in range(10)]
                    fold_ids = np.repeat(patients, 2)
                    fold_y = np.repeat(np.arange(10) % 2, 2)
                    fold_p = rng.random(20) * 0.6 + 0.4 * fold_y
                    (jobs / bench.job_name("demo", arm, fraction, seed, fold)).write_text(
                        json.dumps({"test_patient_ids": fold_ids.tolist(),
                                    "test_labels": fold_y.tolist(),
                                    "test_prob": fold_p.tolist(), "seconds": 1.0}))
                    ids += fold_ids.tolist()
                    y += fold_y.tolist()
                    p += fold_p.tolist()
                ids, y, p = np.array(ids), np.array(y), np.array(p)
                order = sorted(set(ids))
                mean = [p[ids == i].mean() for i in order]
                label = [y[ids == i][0] for i in order]
                truth[arm, fraction, seed] = roc_auc_score(label, mean)
    found = bench.summary(jobs, {"demo": ("scratch", "self_supervised")}, (0.5, 1.0), (0, 1), 2)
    for (arm, fraction, seed), auc in truth.items():
        assert found["demo"][arm][str(fraction)]["per_seed"][str(seed)] == pytest.approx(auc)
    row = found["demo"]["scratch"]["1.0"]
    assert row["mean"] == pytest.approx(np.mean([truth["scratch", 1.0, s] for s in (0, 1)]))
    assert row["sd"] == pytest.approx(np.std([truth["scratch", 1.0, s] for s in (0, 1)], ddof=1))
    rows = {"0.5": {"mean": 0.80}, "1.0": {"mean": 0.90}}
    assert bench.matching_fraction(rows, 0.85, (0.5, 1.0)) == 1.0
    assert bench.matching_fraction(rows, 0.80, (0.5, 1.0)) == 0.5
    assert bench.matching_fraction(rows, 0.95, (0.5, 1.0)) is None


@pytest.mark.slow
def test_label_efficiency_quick_fine_tunes_every_arm_and_resumes(tmp_path):
    """bench/label_efficiency.py --quick: the demo's pool pretrained, every fraction, arm and
    fold fine-tuned; a second run finds every job done and writes the same table."""
    command = [sys.executable, os.path.join(ROOT, "bench", "label_efficiency.py"), "--quick",
               f"--out={tmp_path}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_LIMIT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    bench = bench_module("label_efficiency")
    result = json.loads((tmp_path / "label_efficiency.json").read_text())
    quick = bench.QUICK
    total = len(quick["fractions"]) * quick["folds"] * len(quick["seeds"]) * 2
    assert result["jobs_done"] == result["jobs_total"] == total
    for arm in ("scratch", "self_supervised"):
        for fraction in quick["fractions"]:
            row = result["auc"]["demo"][arm][str(fraction)]
            assert 0.0 <= row["mean"] <= 1.0 and row["seeds"] == len(quick["seeds"])
    jobs = [json.loads(p.read_text()) for p in (tmp_path / "jobs").glob("*.json")]
    small = {j["train_patients"] for j in jobs if j["fraction"] < 1}
    full = {j["train_patients"] for j in jobs if j["fraction"] == 1}
    assert max(small) < min(full)
    assert max(j["val_patients"] for j in jobs if j["fraction"] < 1) < \
        min(j["val_patients"] for j in jobs if j["fraction"] == 1)   # validation shrinks too
    tested = {}
    for job in jobs:                          # every arm and fraction tests the same patients
        tested.setdefault(job["fold"], set()).add(tuple(sorted(set(job["test_patient_ids"]))))
    assert all(len(v) == 1 for v in tested.values())
    pool = json.loads((tmp_path / "pretrained" / "demo_self_supervised" / "run.json").read_text())
    labelled = 4 * quick["demo_patients"]
    assert pool["patients"] == quick["pool_factor"] * labelled
    assert (tmp_path / "label_efficiency.png").stat().st_size > 10_000
    table = (tmp_path / "label_efficiency.md").read_text()
    again = subprocess.run(command, capture_output=True, text=True, timeout=HANG_LIMIT_S)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{total} of {total} runs done earlier" in again.stdout
    assert (tmp_path / "label_efficiency.md").read_text().split("\n", 1)[1].split(
        "wall time")[0] == table.split("\n", 1)[1].split("wall time")[0]
