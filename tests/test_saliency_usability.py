"""What a user of the saliency analysis and the ECG-measurement baseline sees: progress bars on
every long step, one analysis per output folder, figures of every class, the run's own cohort
without --data_dir, a readable per-sample heatmap, the console's units and class names, and a
cohort in the wrong unit refused before it is measured."""
import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest

import lvr.report.saliency_figures as saliency_figures
import lvr.train.run as engine
from helpers import quiet, script_result, tiny_config, write_small_cohort
from lvr.data.cohort import load_cohort
from lvr.errors import UserError
from lvr.evaluate.baseline import run_feature_baseline
from lvr.explain.analysis import figure_beats, figure_jobs, run_saliency_analysis
from lvr.explain.console import log_subgroup, log_wave_effects, subgroup_label
from lvr.measure.delineation import segments_in_chunks
from lvr.run_folder import lock_holder, output_lock

BAR = "%|"   # what a tqdm bar prints between its percentage and the bar
SEED_SPEC = {"groups": ["NS_0", "NS_1", "ST_0", "ST_1"]}


def script_config(name, **overrides):
    """The constants of the script `name` (a module at the repository root), with `overrides`."""
    script = __import__(name)
    config = {key: getattr(script, key) for key in script.__annotations__}
    config.update(overrides)
    return config


def saliency_config(train_dir, output_dir, **overrides):
    """Saliency_ana2_sys.py's constants for a short analysis of `train_dir` on the CPU."""
    return script_config("Saliency_ana2_sys", TRAIN_DIR=str(train_dir),
                         OUTPUT_DIR=str(output_dir), NUM_SAMPLES=2, MAX_FIGURES=2,
                         FIGURE_WORKERS=1, DELINEATION_LEADS="II,V2,V5", SANITY_SAMPLES=4,
                         DELETION_DRAWS=2, PATIENT_BOOTSTRAP=20, DEVICE="cpu", REPORT=False,
                         **overrides)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch run on a small cohort (TEST_SIZE 0.4: test beats of both classes)."""
    root = tmp_path_factory.mktemp("usability")
    data_dir = write_small_cohort(root / "data", n_patients=12)
    engine.run_training(tiny_config(data_dir, root / "run", EPOCHS=1, TEST_SIZE=0.4), log=quiet)
    return root, data_dir


@pytest.fixture(scope="module")
def analysed(trained):
    """The analysis of the run without --data_dir, its console lines and stderr (tqdm writes its
    bars there), and the refusal a second analysis into the same folder got while it ran."""
    root, _ = trained
    out = root / "saliency"
    config = saliency_config(root / "run", out)
    lines, refusals = [], []

    def log(line=""):
        lines.append(line)
        if line.startswith("Explaining"):          # the first analysis holds the folder now
            refusals.append((lock_holder(str(out)), second_analysis(config)))

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        run_saliency_analysis(config, log=log)
    return out, "\n".join(lines), stderr.getvalue(), refusals


def second_analysis(config):
    try:
        run_saliency_analysis(config, log=quiet)
    except UserError as refused:
        return str(refused)
    return None


def test_every_long_step_of_the_analysis_shows_a_progress_bar(analysed):
    _, _, stderr, _ = analysed
    for step in ("SmoothGrad maps", "wave delineation", "wave effects", "figures",
                 "sanity check", "deletion test"):
        bars = [line for line in stderr.replace("\r", "\n").splitlines()
                if line.startswith(f"{step}:")]
        assert bars and BAR in bars[-1] and "100%" in bars[-1], step


def test_a_second_analysis_into_a_folder_in_use_is_refused(analysed, trained):
    out, _, _, refusals = analysed
    root, _ = trained
    [(holder, refusal)] = refusals
    assert holder and holder["pid"] == os.getpid()
    assert refusal and "in use by another run" in refusal and "\n" not in refusal
    assert not [p for p in root.iterdir() if p.name.startswith("saliency.")]   # nothing moved
    assert (out / "saliency_run.json").is_file() and not (out / ".run.lock").exists()


def test_an_analysis_into_a_locked_folder_is_refused_and_moves_nothing(trained, tmp_path):
    root, _ = trained
    out = tmp_path / "busy"
    out.mkdir()
    (out / "saliency_run.json").write_text("{}")       # an earlier analysis, kept aside otherwise
    with output_lock(str(out)), pytest.raises(UserError, match="in use by another run") as error:
        run_saliency_analysis(saliency_config(root / "run", out), log=quiet)
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]
    assert (out / "saliency_run.json").read_text() == "{}"


def test_the_runs_cohort_is_read_from_its_split_without_data_dir(analysed, trained):
    _, text, _, _ = analysed
    _, data_dir = trained
    assert f"Data: the run's cohort, {data_dir} (split.json)" in text


def test_an_external_analysis_needs_data_dir(trained, tmp_path):
    root, _ = trained
    result = script_result("Saliency_ana2_sys.py", f"--train_dir={root / 'run'}",
                           f"--output_dir={tmp_path / 'out'}", "--external=True")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--external=True" in result.stderr and "--data_dir=FOLDER" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_cohort_that_is_gone_is_named(trained, tmp_path):
    root, _ = trained
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    split = json.loads((run / "split.json").read_text())
    split["data_dir"] = str(tmp_path / "moved_away")
    (run / "split.json").write_text(json.dumps(split))
    with pytest.raises(UserError, match="moved_away' of .*split.json is not there; pass "
                                        "--data_dir"):
        run_saliency_analysis(saliency_config(run, tmp_path / "out"), log=quiet)


def test_max_figures_takes_beats_of_every_class_in_turn():
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
    groups = np.array([0, 0, 0, 2, 2, 2, 1, 3, 1])
    assert figure_beats(y, groups, 4) == [0, 6, 3, 7]    # class 0, 1, 0, 1; their groups in turn
    assert figure_beats(y, groups, 4) == figure_beats(y, groups, 4)
    assert figure_beats(y, groups, None) == list(range(9))
    assert sorted(figure_beats(y, groups, 100)) == list(range(9))
    spec = {"groups": ["NS_0", "NS_1", "ST_0", "ST_1"], "leads": ["I"], "sampling_rate": 500,
            "group_names": {"NS_0": "NSTEMI_0", "NS_1": "NSTEMI_1", "ST_0": "STEMI_0",
                            "ST_1": "STEMI_1"}}
    x = np.zeros((9, 1, 10))
    prob = np.tile([0.3, 0.7], (9, 1))
    jobs = figure_jobs(x, x, prob, y, groups, spec, ["NORM", "MI"], "out", max_figures=2,
                       dpi=50)
    assert [job["true_name"] for job in jobs] == ["NORM", "MI"]


def test_the_analysis_draws_figures_of_both_classes(analysed):
    out, text, _, _ = analysed
    assert "Per-sample figures: 2 in" in text and "(1 non-LVR, 1 LVR)" in text
    assert len(list(out.rglob("saliency_analysis_*_sample_*.png"))) == 2


def sample_job(path):
    """A per-sample figure's job: a beat whose map has two spikes 100 times the rest."""
    rng = np.random.default_rng(0)
    saliency = rng.gamma(2.0, 0.01, (12, 300))
    saliency[3, 50] = saliency[7, 200] = 100 * saliency.max()
    return {"beat": rng.normal(size=(12, 300)), "saliency": saliency, "fs": 500,
            "lead_names": ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5",
                           "V6"], "r_peak_sample": 100, "index": 0, "subtype": "MI",
            "true_name": "MI", "pred_name": "MI", "prob": 0.9, "dpi": 40, "map_name": "Gradient",
            "segments": {"P": (10, 40), "PR": (40, 80), "QRS": (80, 130), "ST": (130, 170),
                         "T": (170, 260)}, "path": str(path)}


def test_the_heatmap_is_coloured_up_to_a_high_percentile_on_the_shared_time_axis(
        tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(saliency_figures, "save_figure", lambda fig, path, dpi: drawn.append(fig))
    job = sample_job(tmp_path / "sample.png")
    saliency_figures.draw_sample_figure(job)
    fig = drawn[0]
    fig.canvas.draw()
    rows = [ax for ax in fig.axes if ax.get_title()]
    assert len(rows) == 3
    heatmap = rows[1]
    low, high = heatmap.images[0].get_clim()
    assert low == 0 and high == pytest.approx(np.percentile(job["saliency"], 99))
    assert high < job["saliency"].max() / 50                 # the spikes do not set the scale
    label = next(ax.get_ylabel() for ax in fig.axes if "percentile" in ax.get_ylabel())
    assert label.startswith("Gradient") and "99th percentile" in label
    edges = {(round(ax.get_position().x0, 6), round(ax.get_position().x1, 6)) for ax in rows}
    assert len(edges) == 1                                  # the rows are equally wide
    assert {ax.get_xlim() for ax in rows} == {(0.0, 598.0)}  # ... on one time axis in ms


def test_wave_effects_print_in_the_figures_percentage_points_and_count_patients():
    lines = []
    rows = [{"lead": "V3", "wave": "T", "effect": 0.1234, "ci_low": 0.05, "ci_high": 0.2,
             "rank": 1}]
    log_wave_effects("STEMI MI", {"rows": rows, "patients": 1}, lines.append)
    assert "(1 patient)" in lines[0] and "percentage points" in lines[0]
    assert "V3-T +12.3 [+5.0, +20.0]" in lines[0]


def test_console_lines_use_the_cohorts_class_names():
    assert subgroup_label("STEMI", SEED_SPEC, "MI") == "STEMI MI"
    assert subgroup_label("anterior", {"groups": ["NORM", "MI"]}, "MI") == "anterior"
    lines = []
    log_subgroup("STEMI MI", {"sample_count": 1, "status": "too few"}, lines.append, "MI")
    assert lines == ["\n[STEMI MI] 1 sample: too few"]


@pytest.fixture
def baseline_options():
    return dict(BOOTSTRAP=20, DELINEATION_LEADS="II,V2,V5", PENALTIES=4, PENALTY_FOLDS=3,
                REPORT=False)


def test_the_baseline_shows_the_measurement_of_beats(trained, tmp_path, capsys,
                                                     baseline_options):
    root, _ = trained
    config = script_config("ecg_features_baseline", TRAIN_DIR=str(root / "run"),
                           OUTPUT_DIR=str(tmp_path / "baseline"), **baseline_options)
    run_feature_baseline(config, log=quiet)
    bars = capsys.readouterr().err.replace("\r", "\n").splitlines()
    measured = [line for line in bars if line.startswith("ECG measurements:")]
    assert measured and BAR in measured[-1] and "100%" in measured[-1]


def test_delineation_in_workers_counts_finished_beats(trained, capsys):
    _, data_dir = trained
    cohort = load_cohort(data_dir)
    index = np.arange(20)
    segments_in_chunks(cohort.beats, index, cohort.spec["sampling_rate"], workers=2, chunk=8,
                       progress="ECG measurements", leads=("II",),
                       lead_names=list(cohort.spec["leads"]))
    bars = capsys.readouterr().err.replace("\r", "\n").splitlines()
    last = [line for line in bars if line.startswith("ECG measurements:")][-1]
    assert BAR in last and "20/20" in last and "beat/s" in last


def test_the_baseline_refuses_beats_in_microvolts(trained, tmp_path, baseline_options):
    root, data_dir = trained
    microvolts = tmp_path / "microvolts"
    shutil.copytree(data_dir, microvolts)
    for name in os.listdir(microvolts):
        if name.startswith("cut_") and not name.endswith("_patient_ids.npy"):
            np.save(microvolts / name, np.load(microvolts / name) * 1000)
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    split = json.loads((run / "split.json").read_text())
    split.update(data_dir=str(microvolts),
                 data_fingerprint=load_cohort(microvolts).fingerprint())
    (run / "split.json").write_text(json.dumps(split))
    result = script_result("ecg_features_baseline.py", f"--train_dir={run}",
                           *(f"--{k.lower()}={v}" for k, v in baseline_options.items()))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"error: {microvolts}: the beats are not in mV" in result.stderr
    assert "look like \u00b5V" in result.stderr and "prepare_data.py" in result.stderr
    assert not os.path.exists(f"{run}_ecg_features")
