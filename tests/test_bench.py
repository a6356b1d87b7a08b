"""The benchmark harness runs end to end on tiny sizes and reports every key (no timing checks)."""
import csv
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_bench():
    spec = importlib.util.spec_from_file_location("run_bench",
                                                  os.path.join(ROOT, "bench", "run_bench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_harness_reports_every_key(tmp_path):
    bench = load_bench()
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


def test_profile_tables_name_the_convolutions():
    tables = load_bench().profile_tables(steps=1, rows=5)
    assert set(tables) == {"training steps", "SmoothGrad batch"}
    assert all("convolution" in table for table in tables.values())


def test_explanation_bench_quick_writes_both_tables(tmp_path):
    """bench/explanation_bench.py --quick: one small cohort, every method and wave variant."""
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "explanation_bench.py"),
                           "--quick", f"--out={tmp_path}"], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "explanation_bench.csv", encoding="utf-8")))
    methods = [row["method"] for row in rows]
    assert len(rows) == 10 and methods[-1] == "wave effects (segment swap)"
    for row in rows[:-1]:
        assert 0 <= float(row["mass_accuracy"]) <= 1 and 0 <= float(row["rank_accuracy"]) <= 1
        assert float(row["mass_vs_chance"]) == pytest.approx(
            float(row["mass_accuracy"]) / 0.075, rel=0.02)   # chance: 3 of 12 leads x 150 of 500
    assert 3 <= int(rows[-1]["true_cell_rank"]) <= 60
    variants = (tmp_path / "wave_variants.md").read_text().splitlines()[2:]
    assert len(variants) == 2 * 3 * 2 * 2                      # units x reference x alignment x blend
