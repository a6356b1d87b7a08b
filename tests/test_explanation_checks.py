"""explanation_checks: each check can fail, and passes only when the explanation deserves it."""
import json
import os

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

import lvr.explain.checks as ec
import lvr.measure.delineation as dl
from helpers import beats_of
from model import build_model
from lvr.measure.delineation import r_peak_index

C, T = 12, 64


class ConstantModel(nn.Module):
    """Logits that ignore the input."""

    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([0.3, -0.2]))

    def forward(self, x):
        return self.logits.expand(x.shape[0], 2)


class OneLeadModel(nn.Module):
    """A linear model reading one lead only: logit of class 1 = <x[lead], w>, class 0 = -that."""

    def __init__(self, lead=3, length=T):
        super().__init__()
        self.lead = lead
        self.weight = nn.Parameter(torch.linspace(-1, 1, length) * 0.5)

    def forward(self, x):
        score = x[:, self.lead] @ self.weight
        return torch.stack([-score, score], dim=1)


def tiny_conv_model(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv1d(C, 8, 7, padding=3), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 2))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def random_beats(n, seed=0, length=T):
    return torch.randn(n, C, length, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- deletion

def test_deletion_of_a_model_that_ignores_its_input_is_exactly_chance():
    x = random_beats(20)
    y = torch.randint(0, 2, (20,), generator=torch.Generator().manual_seed(1))
    importance = np.random.default_rng(0).random((20, C))
    result = ec.deletion_test(ConstantModel().eval(), x, y, importance, max_k=6, random_draws=5)
    assert result["deletion_win_rate"] == 0.5        # every comparison is a tie
    assert result["deletion_auc_top"] == pytest.approx(result["deletion_auc_random"])
    json.dumps(result)


def test_deletion_rewards_importance_that_points_at_the_lead_the_model_reads():
    model = OneLeadModel(lead=3).eval()
    x = random_beats(40, seed=2)
    with torch.no_grad():
        y = model(x).argmax(1)                        # the model is right about every beat
    noise = np.random.default_rng(0).random((40, C)) * 0.1
    pointing = noise.copy()
    pointing[:, 3] += 1.0
    result = ec.deletion_test(model, x, y, pointing, max_k=6, random_draws=10, seed=0)
    assert result["deletion_win_rate"] >= 0.8
    assert result["deletion_curve"]["top_mean"][1] == pytest.approx(0.5, abs=1e-6)  # lead gone
    assert result["deletion_auc_top"] < result["deletion_auc_random"]

    misleading = noise.copy()
    misleading[:, 3] -= 1.0                           # lead 3 ranked last: never removed
    wrong = ec.deletion_test(model, x, y, misleading, max_k=6, random_draws=10, seed=0)
    assert wrong["deletion_win_rate"] <= 0.2
    assert wrong["deletion_curve"]["top_mean"] == pytest.approx([wrong["deletion_curve"][
        "top_mean"][0]] * 7)


def test_deletion_curve_shapes_baselines_and_batching_agree():
    model = tiny_conv_model()
    x = random_beats(7, seed=3)
    y = torch.tensor([0, 1, 0, 1, 1, 0, 1])
    importance = np.random.default_rng(1).random((7, C))
    small = ec.deletion_test(model, x, y, importance, max_k=4, random_draws=3, batch_size=5)
    large = ec.deletion_test(model, x, y, importance, max_k=4, random_draws=3, batch_size=500)
    curve = small["deletion_curve"]
    assert curve["k"] == [0, 1, 2, 3, 4]
    assert all(len(curve[key]) == 5 for key in ("top_mean", "random_mean", "top_sd",
                                                  "random_sd"))
    assert 0 <= small["deletion_auc_top"] <= 1 and 0 <= small["deletion_auc_random"] <= 1
    assert small["deletion_auc_top"] == pytest.approx(large["deletion_auc_top"], abs=1e-5)
    per_beat = ec.deletion_test(model, x, y, importance, max_k=4, random_draws=3,
                                baseline=torch.zeros(7, C, T))
    assert per_beat["deletion_auc_top"] == pytest.approx(small["deletion_auc_top"], abs=1e-5)
    with pytest.raises(ValueError, match="lead_importance"):
        ec.deletion_test(model, x, y, importance[:, :5])


# ----------------------------------------------------------------------------- sanity check

def test_spearman_per_sample_matches_scipy_including_ties_and_constant_maps():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, (4, 3, 10)).astype(float)   # many ties
    b = a + rng.normal(0, 2, a.shape)
    ours = ec.spearman_per_sample(a, b)
    for i in range(4):
        assert ours[i] == pytest.approx(spearmanr(a[i].ravel(), b[i].ravel()).statistic)
    assert np.isnan(ec.spearman_per_sample(np.ones((1, 3, 10)), b[:1]))[0]


def test_a_saliency_that_ignores_the_model_is_flagged():
    model = tiny_conv_model()
    x, y = random_beats(6), torch.tensor([0, 1, 0, 1, 0, 1])
    result = ec.sanity_check(model, x, y, lambda m, xb, yb: xb.abs(), seed=0)
    assert result["sanity_spearman"] == pytest.approx(1.0)
    assert result["sanity_flag"] is True
    assert [s["spearman"] for s in result["sanity_cascading"]] == pytest.approx([1.0] * 3)
    json.dumps(result)


def test_randomising_a_model_whose_weights_matter_changes_its_smoothgrad_map():
    model = build_model(2, "baseline", dropout_rate=0.0).eval()
    x = random_beats(4, seed=5, length=96)
    y = torch.tensor([0, 1, 0, 1])
    saliency_fn = ec.smoothgrad_saliency_fn(num_samples=2, noise_level=0.1, seed=0)
    result = ec.sanity_check(model, x, y, saliency_fn, seed=0, threshold=0.5)
    assert result["sanity_spearman"] < 0.5
    assert result["sanity_flag"] is False
    stages = [s["layers_randomised"] for s in result["sanity_cascading"]]
    assert stages[0] == "head" and stages[-1] == "stem"
    assert result["sanity_cascading"][-1]["spearman"] == pytest.approx(result["sanity_spearman"])


def test_randomized_copy_touches_only_the_named_layers_and_is_reproducible():
    model = tiny_conv_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head_only = ec.randomized_copy(model, ["5"], seed=3)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])             # the original is untouched
    changed = {k for k, v in head_only.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"5.weight", "5.bias"}
    again = ec.randomized_copy(model, ["5"], seed=3)
    full = ec.randomized_copy(model, "all", seed=3)
    assert torch.equal(again[5].weight, head_only[5].weight)
    assert torch.equal(full[5].weight, head_only[5].weight)    # per-module seeding
    assert torch.equal(full[1].running_mean, torch.zeros(8))   # BatchNorm fully reset
    assert not torch.equal(full[0].weight, model[0].weight)
    assert not full.training
    assert ec.cascading_layer_names(model) == ["5", "1", "0"]
    with pytest.raises(ValueError, match="unknown layer"):
        ec.randomized_copy(model, ["nope"])


def test_cascading_layer_names_of_the_resnet_run_from_head_to_input():
    names = ec.cascading_layer_names(build_model(2, "ca_ms_v2"))
    assert names == ["head", "pool", "blocks.5", "blocks.4", "blocks.3", "blocks.2", "blocks.1",
                     "blocks.0", "stem", "lead_gate"]


# ----------------------------------------------------------------------------- segments

@pytest.fixture(scope="module")
def demo_beats(tmp_path_factory):
    """Demo beats in the default 1 s window (the shared small cohort's 0.6 s clips the T wave)."""
    from helpers import write_small_cohort
    folder = write_small_cohort(tmp_path_factory.mktemp("full_window"), n_patients=3,
                                window_s=1.0, r_peak_s=0.3)
    with open(os.path.join(folder, "cohort.json"), encoding="utf-8") as handle:
        spec = json.load(handle)
    beats = np.concatenate([beats_of(folder, "NS_1")[:4], beats_of(folder, "ST_0")[:4]])
    return beats, spec


def test_segments_of_demo_beats_are_ordered_and_on_their_waves(demo_beats):
    beats, spec = demo_beats
    fs = spec["sampling_rate"]
    lo, hi = (round(ms * fs / 1000) for ms in spec["ground_truth"]["lvr_window_ms"])
    segments = dl.beat_segments_batch(beats, fs)
    assert sum(s["method"] != "fallback" for s in segments) == len(beats)
    for beat, segment in zip(beats, segments, strict=True):
        spans = [segment[w] for w in ec.WAVES]
        edges = [edge for span in spans for edge in span]
        assert edges == sorted(edges)                    # ordered, never overlapping
        assert all(0 <= edge <= beats.shape[2] for edge in edges)
        r = r_peak_index(beat, fs)
        assert segment["r_peak"] == r
        assert segment["QRS"][0] <= r < segment["QRS"][1]
        assert segment["T"][0] < hi and segment["T"][1] > lo    # T overlaps the LVR window
        assert segment["T"][1] - segment["T"][0] > 0.05 * fs
    one = dl.beat_segments(beats[0], fs)
    assert one["method"] != "fallback"
    assert one["QRS"][0] <= one["r_peak"] < one["QRS"][1]


@pytest.mark.parametrize("kind", ["flat", "noise"])
def test_segments_fall_back_to_standard_intervals_and_say_so(kind):
    fs, length, r = 500, 500, 150
    beat = np.zeros((C, length)) if kind == "flat" else \
        np.random.default_rng(0).normal(size=(C, length))
    segment = dl.beat_segments(beat, fs, r_peak_sample=r)
    assert segment["method"] == "fallback"
    assert segment["fallback_boundaries"] == list(dl.BOUNDARIES)
    ms = {w: tuple((edge - r) * 1000 / fs for edge in segment[w]) for w in ec.WAVES}
    assert ms == {"P": (-200.0, -120.0), "PR": (-120.0, -40.0), "QRS": (-40.0, 60.0),
                  "ST": (60.0, 160.0), "T": (160.0, 420.0)}
    clipped = dl.beat_segments(beat, fs, r_peak_sample=20)      # R near the start: clipped
    assert clipped["P"] == (0, 0) and clipped["QRS"] == (0, 50)


# ----------------------------------------------------------------------------- wave shares

SEGMENT = {"P": (10, 20), "PR": (20, 30), "QRS": (30, 40), "ST": (40, 50), "T": (50, 64)}


def test_wave_shares_of_uniform_saliency_are_segment_fractions():
    shares = ec.wave_importance_shares(np.ones((3, C, T)), SEGMENT)
    assert shares.shape == (3, C, 5)
    assert shares[0, 0] == pytest.approx([10 / T, 10 / T, 10 / T, 10 / T, 14 / T])
    assert np.all(shares.sum(axis=2) <= 1 + 1e-12)
    density = ec.wave_importance_density(shares, SEGMENT, T)
    assert density == pytest.approx(np.ones_like(density))
    assert np.all(ec.wave_importance_shares(np.zeros((1, C, T)), SEGMENT) == 0)


def test_saliency_in_the_t_window_puts_t_on_top():
    rng = np.random.default_rng(0)
    saliency = rng.random((5, C, T)) * 0.1
    saliency[:, 7:10, 52:62] += 1.0                      # V2-V4, inside T
    segments = [dict(SEGMENT)] * 5
    shares = ec.wave_importance_shares(saliency, segments)
    assert np.all(shares.sum(axis=2) <= 1 + 1e-12)
    density = ec.wave_importance_density(shares, segments, T)
    table = ec.wave_importance_table(shares, list(dl.LEAD_NAMES), density)
    json.dumps(table)
    for lead in ("V2", "V3", "V4"):
        assert table[lead]["top_wave"] == "T"
        assert table[lead]["top_wave_density"] == "T"
        assert table[lead]["T"]["mean"] > 0.7
    assert table["sample_count"] == 5
    assert set(table["I"]) >= set(ec.WAVES) | {"other", "top_wave"}
    assert table["I"]["other"]["mean"] == pytest.approx(1 - sum(table["I"][w]["mean"]
                                                              for w in ec.WAVES))


# ----------------------------------------------------------------------------- figures

def test_figures_are_written(tmp_path):
    import lvr.report.check_figures as ef
    shares = ec.wave_importance_shares(np.random.default_rng(0).random((4, C, T)), SEGMENT)
    paths = [
        ef.plot_wave_importance_heatmap(tmp_path / "waves.png", {"A": shares, "B": shares[:0]},
                                        list(dl.LEAD_NAMES), ("V2",), "T", dpi=40),
        ef.plot_sanity_check(tmp_path / "sanity.png", {
            "sanity_spearman": 0.1, "sanity_flag": False, "sanity_threshold": 0.5,
            "sample_count": 4, "sanity_cascading": [{"layers_randomised": "head",
                                                     "spearman": 0.6}]}, dpi=40),
        ef.plot_deletion_curves(tmp_path / "deletion.png", ec.deletion_test(
            ConstantModel().eval(), random_beats(3), torch.tensor([0, 1, 0]),
            np.random.default_rng(0).random((3, C)), max_k=3, random_draws=2), dpi=40)]
    for path in paths:
        assert os.path.getsize(path) > 0
    assert sorted(os.listdir(tmp_path)) == ["deletion.png", "sanity.png", "waves.png"]
