import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import lvr.train.run as engine
from helpers import HANG_LIMIT_S, ROOT, write_small_cohort
from lvr.train.checkpoints import load_checkpoint
from lvr.data.cohort import load_cohort
from lvr.measure.delineation import r_peak_index
from lvr.config import UserError
from lvr.explain.analysis import check_ground_truth
from lvr.explain.lead_stats import kendall_w
from helpers import quiet, tiny_config

SEED_KEYS = ("top3_leads", "top3_scores", "anova_f", "anova_p", "strict_consistency_percentage",
             "loose_consistency_percentage", "avg_key_in_top3", "icc", "icc_ci_lower",
             "icc_ci_upper", "sample_count")


# TEST_SIZE 0.4 of 12 patients per group: the test set holds 14 NSTEMI-LVR and 5 STEMI-LVR beats,
# so both analysis subgroups get their statistics (they need at least 3 beats; with this size
# each subgroup had at least 3 test beats for every one of 100 split seeds tried).
N_PATIENTS = 12
TRAINING = dict(EPOCHS=2, TEST_SIZE=0.4)
SALIENCY_OPTIONS = ["--num_samples=4", "--deletion_draws=5"]
SUBGROUPS = {"STEMI", "NSTEMI"}
CSV_WAVES = ["P", "PR", "QRS", "ST", "T", "other"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    data_dir = write_small_cohort(root / "data", n_patients=N_PATIENTS)
    engine.run_training(tiny_config(data_dir, root / "run", **TRAINING), log=quiet)
    return root, data_dir


def run_saliency(*args):
    return subprocess.run([sys.executable, "Saliency_ana2_sys.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG_LIMIT_S)


@pytest.fixture(scope="module")
def explained(trained):
    """The saliency analysis of the trained run, in root/saliency."""
    root, data_dir = trained
    out = root / "saliency"
    run = run_saliency(f"--data_dir={data_dir}", f"--train_dir={root / 'run'}",
                       f"--output_dir={out}", "--max_figures=3", *SALIENCY_OPTIONS)
    assert run.returncode == 0, run.stderr
    return out


def read_outputs(out):
    return (json.loads((out / "quantitative_consistency_analysis.json").read_text()),
            json.loads((out / "explanation_checks.json").read_text()))


def test_saliency_script_writes_figures_and_statistics(trained, explained):
    root, data_dir = trained
    out = explained
    figures = sorted(p for p in out.rglob("saliency_analysis_*_sample_*.png"))
    assert len(figures) == 3
    assert all(p.parent.name in {"NSTEMI_0", "NSTEMI_1", "STEMI_0", "STEMI_1"} for p in figures)
    assert all(p.name.startswith(f"saliency_analysis_{p.parent.name}_sample_") for p in figures)

    split = json.loads((root / "run" / "split.json").read_text())
    cohort = load_cohort(data_dir)
    in_test = np.isin(cohort.patient_ids, np.asarray(split["test"], dtype=str))
    lvr_beats = {name: int((in_test & (cohort.group_index == cohort.groups.index(group))).sum())
                 for name, group in cohort.spec["analysis_subgroups"].items()}
    assert lvr_beats == {"STEMI": 5, "NSTEMI": 14}  # the precondition of the statistics

    results, checks = read_outputs(out)
    assert set(results) == SUBGROUPS
    for name, stats in results.items():
        assert stats["status"] == "ok" and stats["sample_count"] == lvr_beats[name]
        assert all(key in stats for key in SEED_KEYS)
        assert set(stats["icc_all_forms"]) == {"ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k"}
        importance = stats["mean_lead_importance"]  # lead -> mean share of the beat's saliency
        assert list(importance) == cohort.spec["leads"]
        assert all(value > 0 for value in importance.values())
        assert sum(importance.values()) == pytest.approx(1.0, abs=1e-9)
        assert stats["top3_leads"] == sorted(importance, key=importance.get, reverse=True)[:3]
        assert stats["top3_scores"] == [importance[lead] for lead in stats["top3_leads"]]
        assert 0.0 <= stats["anova_p"] <= 1.0 and np.isfinite(stats["anova_f"])
        assert stats["icc_ci_lower"] <= stats["icc"] <= stats["icc_ci_upper"]
        assert 0.0 <= stats["strict_consistency_percentage"] <= 100.0
        check = stats["ground_truth_check"]
        assert check["true_leads"] == ["V2", "V3", "V4"]
        assert check["sample_count"] == lvr_beats[name]
        assert check["top3_leads"] == stats["top3_leads"]
        assert check["true_leads_found"] == [lead for lead in stats["top3_leads"]
                                             if lead in check["true_leads"]]
    for name in ("lead_importance_comparison.png", "lead_importance_heatmap.png"):
        assert (out / name).stat().st_size > 10_000

    for key in ("sanity_spearman", "sanity_cascading", "deletion_curve", "deletion_win_rate",
                "wave_importance"):
        assert key in checks
    assert set(checks["wave_importance"]) == SUBGROUPS
    rows = list(csv.reader((out / "wave_importance.csv").read_text().splitlines()))
    assert rows[0] == ["subgroup", "lead", "wave", "mean_share", "sd_share", "mean_density",
                       "sd_density", "beats"]
    body = rows[1:]
    assert len(body) == len(SUBGROUPS) * 12 * len(CSV_WAVES)
    assert {(r[0], r[1], r[2]) for r in body} == {
        (name, lead, wave) for name in SUBGROUPS for lead in cohort.spec["leads"]
        for wave in CSV_WAVES}
    for subgroup, _, _, mean_share, sd_share, _, _, count in body:
        assert int(count) == lvr_beats[subgroup]
        assert -1e-4 <= float(mean_share) <= 1.0001 and float(sd_share) >= 0
    # a density per wave; "other" (outside P onset to T offset) has a share only
    wave_rows = [row for row in body if row[2] != "other"]
    other_rows = [row for row in body if row[2] == "other"]
    assert len(wave_rows) == 2 * 12 * 5 and len(other_rows) == 2 * 12
    assert all(float(row[5]) >= 0 and float(row[6]) >= 0 for row in wave_rows)
    assert all(row[5] == row[6] == "" for row in other_rows)
    for name in SUBGROUPS:
        for lead in cohort.spec["leads"]:
            shares = [float(r[3]) for r in body if r[0] == name and r[1] == lead]
            assert sum(shares) == pytest.approx(1.0, abs=1e-3)  # the waves and "other" split it

    run_record = json.loads((out / "saliency_run.json").read_text())
    assert run_record["test_patients"] == split["test"] and "torch" in run_record["versions"]
    assert run_record["test_beats"] == int(in_test.sum())


@pytest.mark.slow
def test_saliency_outputs_do_not_depend_on_the_ground_truth(trained, explained, tmp_path):
    """The cohort's ground truth is only reported against (ground_truth_check): the same
    analysis of the same model on a cohort whose cohort.json has no ground truth gives the same
    statistics and checks."""
    root, data_dir = trained
    blind_dir = tmp_path / "data"
    shutil.copytree(data_dir, blind_dir)
    spec = json.loads((blind_dir / "cohort.json").read_text())
    assert spec["ground_truth"]["lvr_leads"] == ["V2", "V3", "V4"]
    spec["ground_truth"] = None
    (blind_dir / "cohort.json").write_text(json.dumps(spec, indent=2))
    # the fingerprint covers cohort.json, so the blind cohort needs its own run: the same seed
    # on the CPU trains the same model
    engine.run_training(tiny_config(blind_dir, tmp_path / "run", **TRAINING), log=quiet)
    weights = [load_checkpoint(path)[0].state_dict()
               for path in (root / "run" / "best_model.pth", tmp_path / "run" / "best_model.pth")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    assert json.loads((tmp_path / "run" / "split.json").read_text())["test"] == \
        json.loads((root / "run" / "split.json").read_text())["test"]
    run = run_saliency(f"--data_dir={blind_dir}", f"--train_dir={tmp_path / 'run'}",
                       f"--output_dir={tmp_path / 'saliency'}", "--max_figures=0",
                       *SALIENCY_OPTIONS)  # the per-sample figures hold no numbers
    assert run.returncode == 0, run.stderr

    results, _ = read_outputs(explained)
    blind_results, _ = read_outputs(tmp_path / "saliency")
    assert set(results) == set(blind_results) == SUBGROUPS
    for name in SUBGROUPS:
        assert "ground_truth_check" in results[name]
        assert "ground_truth_check" not in blind_results[name]
        assert "ground_truth_check" not in blind_results[name]["patient_level"]
        results[name].pop("ground_truth_check")
        results[name]["patient_level"].pop("ground_truth_check")
    # compared as JSON text: equal numbers, NaN included, in the same order
    assert json.dumps(blind_results) == json.dumps(results)
    checks = json.loads((explained / "explanation_checks.json").read_text())
    blind_checks = json.loads((tmp_path / "saliency" / "explanation_checks.json").read_text())
    assert "localisation" in checks and "localisation" not in blind_checks
    checks.pop("localisation")
    assert json.dumps(blind_checks) == json.dumps(checks)
    for name in ("wave_importance.csv", "wave_effects.csv"):
        assert (tmp_path / "saliency" / name).read_text() == (explained / name).read_text(), name


@pytest.mark.slow
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
    other = write_small_cohort(tmp_path / "other", seed=99)
    run = run_saliency(f"--data_dir={other}", f"--train_dir={root / 'run'}",
                       f"--output_dir={tmp_path / 'out'}")
    assert run.returncode == 2 and "not the data" in run.stderr and "Traceback" not in run.stderr
    assert "--external=True" in run.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_external_cohort_is_explained_on_all_its_beats(trained, tmp_path):
    root, _ = trained
    other = write_small_cohort(tmp_path / "other", seed=99, n_patients=6)
    out = tmp_path / "out"
    run = run_saliency(f"--data_dir={other}", f"--train_dir={root / 'run'}", f"--output_dir={out}",
                       "--external=True", "--max_figures=1", "--sanity_check=False",
                       "--deletion_test=False", "--num_samples=4")
    assert run.returncode == 0, run.stderr
    assert "external cohort: all" in run.stdout and "non-LVR beats of this cohort" in run.stdout
    cohort = load_cohort(other)
    maps = np.load(out / "saliency_maps.npz")
    assert sorted(maps["index"].tolist()) == list(range(len(cohort.group_index)))
    record = json.loads((out / "saliency_run.json").read_text())
    assert set(record["test_patients"]) == set(cohort.patient_ids.tolist())
    assert (out / "wave_effects.csv").exists()

    wrong = write_small_cohort(tmp_path / "wrong", seed=99, n_patients=6, window_s=0.8)
    run = run_saliency(f"--data_dir={wrong}", f"--train_dir={root / 'run'}",
                       f"--output_dir={tmp_path / 'out2'}", "--external=True")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "cannot be scored" in run.stderr and "400 samples long" in run.stderr


def test_unknown_delineation_lead_is_refused_before_any_work(trained, tmp_path):
    root, data_dir = trained
    run = run_saliency(f"--data_dir={data_dir}", f"--train_dir={root / 'run'}",
                       f"--output_dir={tmp_path / 'out'}", "--delineation_leads=II,V7")
    assert run.returncode == 2 and "V7 is not a lead" in run.stderr
    assert "Traceback" not in run.stderr and "SmoothGrad" not in run.stdout


def test_saliency_needs_a_finished_training_run(tmp_path):
    run = run_saliency(f"--train_dir={tmp_path / 'none'}", f"--output_dir={tmp_path / 'out'}")
    missing = tmp_path / "none"
    assert run.returncode == 2 and f"--train_dir={missing}: folder not found" in run.stderr


@pytest.mark.parametrize("r_sample", [60, 150, 240])
def test_r_peak_is_found_wherever_it_is(r_sample):
    t = np.arange(500)
    rng = np.random.default_rng(0)
    beat = 0.02 * rng.normal(size=(12, 500))
    beat += np.exp(-0.5 * ((t - r_sample) / 5) ** 2) * rng.uniform(0.5, 1.5, (12, 1))
    beat += 0.4 * np.exp(-0.5 * ((t - r_sample - 140) / 40) ** 2)  # a broad T wave
    assert abs(r_peak_index(beat, 500) - r_sample) <= 2
    assert abs(r_peak_index(beat, 500, expected=150) - r_sample) <= 2 or abs(r_sample - 150) > 60


@pytest.mark.slow
def test_a_cross_validation_run_is_explained_fold_by_fold_with_agreement(trained, tmp_path):
    _, data_dir = trained
    engine.run_training(tiny_config(data_dir, tmp_path / "cv", EPOCHS=1, CV_FOLDS=2,
                                    TEST_SIZE=0.0), log=quiet)
    out = tmp_path / "saliency_cv"
    run = run_saliency(f"--data_dir={data_dir}", f"--train_dir={tmp_path / 'cv'}",
                       f"--output_dir={out}", "--max_figures=0", "--sanity_check=False",
                       "--deletion_test=False", "--num_samples=2", "--patient_bootstrap=50")
    assert run.returncode == 0, run.stderr
    assert "Agreement between the folds' explanations" in run.stdout
    tested = [set(json.loads((tmp_path / "cv" / f"fold_{k}" / "split.json").read_text())["test"])
              for k in (1, 2)]
    assert not tested[0] & tested[1]
    for k in (1, 2):
        explained_patients = set(json.loads(
            (out / f"fold_{k}" / "saliency_run.json").read_text())["test_patients"])
        assert explained_patients == tested[k - 1]
    agreement = json.loads((out / "fold_agreement.json").read_text())
    assert set(agreement) == SUBGROUPS
    for name, entry in agreement.items():
        results = [json.loads((out / f"fold_{k}" / "quantitative_consistency_analysis.json")
                              .read_text())[name]["patient_level"] for k in (1, 2)]
        scores = np.array([[r["mean_lead_importance"][lead] for lead in results[0]
                            ["mean_lead_importance"]] for r in results])
        assert entry["lead_kendall_w"] == pytest.approx(kendall_w(scores))
        assert 0 <= entry["lead_kendall_w"] <= 1
        assert entry["key_leads_per_fold"] == [r["top3_leads"] for r in results]
        assert len(entry["top_cells_per_fold"]) == 2 and 0 <= entry["top_cells_mean_jaccard"] <= 1


def test_saved_maps_name_their_beats(trained, explained):
    _, data_dir = trained
    cohort = load_cohort(data_dir)
    with np.load(explained / "saliency_maps.npz") as saved:
        maps, index = saved["maps"], saved["index"]
        assert maps.shape == (len(index), 12, cohort.beats.shape[2]) and maps.dtype == np.float32
        assert (saved["patient_id"] == cohort.patient_ids[index]).all()
        assert (saved["group"] == cohort.group_index[index]).all()
        np.testing.assert_allclose(saved["probabilities"].sum(1), 1, atol=1e-5)
    effects = list(csv.DictReader(open(explained / "wave_effects.csv", encoding="utf-8")))
    assert [k for k in effects[0]] == ["subgroup", "lead", "wave", "effect", "ci_low", "ci_high",
                                       "rank", "map_share"]
    for name in SUBGROUPS:
        rows = [r for r in effects if r["subgroup"] == name]
        assert sorted(int(r["rank"]) for r in rows) == list(range(1, 61))
        assert all(float(r["ci_low"]) <= float(r["effect"]) <= float(r["ci_high"]) for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("options, has_statistics", [
    (["--method=integrated_gradients", "--ig_steps=4"], True),
    (["--method=occlusion", "--occlusion_window_ms=100"], True),
    (["--method=grad_cam"], False),
    (["--method=grad_cam", "--lead_importance=wave_effects"], True),
    (["--method=gradient", "--wave_alignment=segment", "--wave_reference=median"], True),
])
def test_other_methods_run_the_same_statistics_and_checks(trained, tmp_path, options,
                                                          has_statistics):
    root, data_dir = trained
    out = tmp_path / "method"
    run = run_saliency(f"--data_dir={data_dir}", f"--train_dir={root / 'run'}",
                       f"--output_dir={out}", "--max_figures=1", "--sanity_samples=4",
                       "--deletion_draws=2", "--patient_bootstrap=50",
                       "--delineation_leads=II,V2,V5", *options)
    assert run.returncode == 0, run.stderr
    results, checks = read_outputs(out)
    for name in SUBGROUPS:
        if has_statistics:
            assert results[name]["status"] == "ok"
            assert results[name]["patient_level"]["key_lead_stability"]
        else:
            assert "no lead statistics" in results[name]["status"]
    assert {"sanity_spearman", "deletion_win_rate", "localisation"} <= set(checks)
    method = options[0].split("=")[1]
    assert checks["localisation"]["method"] == method
    saved = json.loads((out / "saliency_run.json").read_text())
    assert saved["config"]["METHOD"] == method and saved["step_times_s"]["maps"] > 0
    effects = list(csv.DictReader(open(out / "wave_effects.csv", encoding="utf-8")))
    assert len(effects) == 60 * len(SUBGROUPS)


def test_a_ground_truth_naming_unknown_leads_is_a_clear_error(trained):
    _, data_dir = trained
    cohort = load_cohort(data_dir)
    check_ground_truth(cohort)                                   # the demo's truth is fine
    cohort.spec = dict(cohort.spec, ground_truth={"lvr_leads": ["V2", "V9"]})
    with pytest.raises(UserError, match=r"ground_truth lvr_leads \['V9'\]"):
        check_ground_truth(cohort)


def test_saliency_in_chunks_equals_one_pass(trained, tmp_path, monkeypatch):
    """Maps, probabilities and wave shares do not depend on how many test beats are explained
    at a time, nor on delineating in worker processes chunk by chunk."""
    import Saliency_ana2_sys as script
    import lvr.explain.analysis as explain
    import lvr.explain.maps as maps_module
    import lvr.measure.delineation as delineation
    from lvr.train.finished_run import read_finished_run
    root, data_dir = trained
    settings = maps_module.MapSettings(
        method=script.METHOD, num_samples=2, noise_level=script.NOISE_LEVEL,
        ig_steps=script.IG_STEPS, occlusion_window_ms=script.OCCLUSION_WINDOW_MS, batch_size=4,
        seed=script.SEED)
    run = read_finished_run(str(root / "run"))
    cohort = load_cohort(data_dir)
    index = explain.test_set(cohort, run.split, data_dir, str(root / "run"))
    model, _ = load_checkpoint(run.checkpoint_path)
    found = []
    for chunk in (len(index), 6):          # one pass; chunks of 4 beats (whole batches)
        monkeypatch.setattr(maps_module, "CHUNK_BEATS", chunk)
        monkeypatch.setattr(delineation, "CHUNK_BEATS", chunk)
        work = tmp_path / f"chunk_{chunk}"
        work.mkdir()
        beats = maps_module.explained_beats(model, cohort, index, settings, torch.device("cpu"),
                                            str(work), timings={}, wave_leads=("II", "V2", "V5"),
                                            workers=2, log=quiet)
        assert isinstance(beats.maps, np.memmap) and beats.maps.filename.startswith(str(work))
        found.append((np.array(beats.maps), beats.prob, beats.segments, beats.shares))
    (maps, prob, segments, shares), (maps2, prob2, segments2, shares2) = found
    assert len(index) > 12                 # several delineation chunks in two workers
    assert np.array_equal(maps, maps2) and np.array_equal(prob, prob2)
    assert segments == segments2 and np.array_equal(shares, shares2)


def test_a_beat_with_a_zero_map_counts_every_lead_equally_and_is_counted():
    from types import SimpleNamespace

    from lvr.explain.lead_stats import subgroup_lead_statistics
    from lvr.explain.tables import importance_for_statistics
    maps = np.ones((3, 12, 10))
    maps[1] = 0.0                       # a gradient that underflowed
    importance, empty = importance_for_statistics(SimpleNamespace(maps=maps), "map")
    assert empty == 1
    np.testing.assert_allclose(importance[1] / importance[1].sum(), np.full(12, 1 / 12))
    stats = subgroup_lead_statistics(importance, [f"L{i}" for i in range(12)])
    assert stats["sample_count"] == 3
