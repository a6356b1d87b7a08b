"""The benchmark harness runs end to end on tiny sizes and reports every key (no timing checks)."""
import importlib.util
import json
import math
import os

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
