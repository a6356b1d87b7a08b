import json
import subprocess
import sys

import numpy as np
import pytest

import lvr.engine as engine
from conftest import ROOT, write_small_cohort
from lvr.delineation import r_peak_index
from test_training import quiet, tiny_config

SEED_KEYS = ("top3_leads", "top3_scores", "anova_f", "anova_p", "strict_consistency_percentage",
             "loose_consistency_percentage", "avg_key_in_top3", "icc", "icc_ci_lower",
             "icc_ci_upper", "sample_count")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    data_dir = write_small_cohort(root / "data", N_PATIENTS=14)
    engine.run_training(tiny_config(data_dir, root / "run", EPOCHS=2), log=quiet)
    return root, data_dir


def run_saliency(*args):
    return subprocess.run([sys.executable, "Saliency_ana2_sys.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_saliency_script_writes_figures_and_statistics(trained):
    root, data_dir = trained
    out = root / "saliency"
    run = run_saliency(f"--data_dir={data_dir}", f"--train_dir={root / 'run'}",
                       f"--output_dir={out}", "--max_figures=3", "--num_samples=4")
    assert run.returncode == 0, run.stderr
    figures = sorted(p for p in out.rglob("saliency_analysis_*_sample_*.png"))
    assert len(figures) == 3
    assert all(p.parent.name in {"NSTEMI_0", "NSTEMI_1", "STEMI_0", "STEMI_1"} for p in figures)
    assert all(p.name.startswith(f"saliency_analysis_{p.parent.name}_sample_") for p in figures)
    results = json.loads((out / "quantitative_consistency_analysis.json").read_text())
    assert set(results) == {"STEMI", "NSTEMI"}
    for name, stats in results.items():
        if stats["status"] == "ok":
            assert all(key in stats for key in SEED_KEYS)
            assert set(stats["icc_all_forms"]) == {"ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k"}
            assert len(stats["mean_lead_importance"]) == 12
            assert "ground_truth_check" in stats
        assert stats["sample_count"] >= 0
    for name in ("lead_importance_comparison.png", "lead_importance_heatmap.png"):
        assert (out / name).stat().st_size > 10_000
    checks = json.loads((out / "explanation_checks.json").read_text())
    for key in ("sanity_spearman", "sanity_cascading", "deletion_curve", "deletion_win_rate",
                "wave_importance"):
        assert key in checks
    rows = (out / "wave_importance.csv").read_text().splitlines()
    assert rows[0] == "subgroup,lead,wave,mean_share,sd_share,mean_density,sd_density,beats"
    assert len(rows) == 1 + len(checks["wave_importance"]) * 12 * 6
    run_record = json.loads((out / "saliency_run.json").read_text())
    split = json.loads((root / "run" / "split.json").read_text())
    assert run_record["test_patients"] == split["test"] and "torch" in run_record["versions"]


def test_saliency_explains_the_final_epoch_on_request(trained, tmp_path):
    root, data_dir = trained
    run = run_saliency(f"--data_dir={data_dir}", f"--train_dir={root / 'run'}",
                       f"--output_dir={tmp_path / 'out'}", "--checkpoint=last_checkpoint.pth",
                       "--max_figures=1", "--num_samples=2", "--wave_importance=False",
                       "--sanity_check=False", "--deletion_test=False")
    assert run.returncode == 0, run.stderr
    assert f"Explaining {root / 'run' / 'last_checkpoint.pth'}" in run.stdout
    record = json.loads((tmp_path / "out" / "saliency_run.json").read_text())
    assert record["config"]["CHECKPOINT"] == "last_checkpoint.pth"


def test_saliency_refuses_data_that_is_not_the_runs(trained, tmp_path):
    root, _ = trained
    other = write_small_cohort(tmp_path / "other", SEED=99)
    run = run_saliency(f"--data_dir={other}", f"--train_dir={root / 'run'}",
                       f"--output_dir={tmp_path / 'out'}")
    assert run.returncode == 2 and "not the data" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_delineation_lead_is_refused_before_any_work(trained, tmp_path):
    root, data_dir = trained
    run = run_saliency(f"--data_dir={data_dir}", f"--train_dir={root / 'run'}",
                       f"--output_dir={tmp_path / 'out'}", "--delineation_leads=II,V7")
    assert run.returncode == 2 and "V7 is not a lead" in run.stderr
    assert "Traceback" not in run.stderr and "SmoothGrad" not in run.stdout


def test_saliency_needs_a_finished_training_run(tmp_path):
    run = run_saliency(f"--train_dir={tmp_path / 'none'}", f"--output_dir={tmp_path / 'out'}")
    assert run.returncode == 2 and "best_model.pth not found" in run.stderr


@pytest.mark.parametrize("r_sample", [60, 150, 240])
def test_r_peak_is_found_wherever_it_is(r_sample):
    t = np.arange(500)
    rng = np.random.default_rng(0)
    beat = 0.02 * rng.normal(size=(12, 500))
    beat += np.exp(-0.5 * ((t - r_sample) / 5) ** 2) * rng.uniform(0.5, 1.5, (12, 1))
    beat += 0.4 * np.exp(-0.5 * ((t - r_sample - 140) / 40) ** 2)  # a broad T wave
    assert abs(r_peak_index(beat, 500) - r_sample) <= 2
    assert abs(r_peak_index(beat, 500, expected=150) - r_sample) <= 2 or abs(r_sample - 150) > 60
