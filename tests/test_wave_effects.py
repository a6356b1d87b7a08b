"""Counterfactual wave effects and the localisation measures: each can fail, and each finds a
known truth."""
import numpy as np
import pytest
import torch
from torch import nn

import lvr.explain.wave_effects as we
from lvr.choices import WAVE_ALIGNMENTS, WAVE_REFERENCES
from lvr.data.beats import standardize_beats
from lvr.explain.checks import (localisation, relevance_mass_accuracy,
                                    relevance_rank_accuracy, truth_mask)
from lvr.leads import LEAD_NAMES, WAVES

C, T, FS = 12, 200, 200
SEGMENTS = {"P": (20, 40), "PR": (40, 55), "QRS": (55, 75), "ST": (75, 100), "T": (100, 160)}


class WindowModel(nn.Module):
    """P(class 1) rises with the mean of one lead over one window, nothing else."""

    def __init__(self, lead, start, end):
        super().__init__()
        self.lead, self.start, self.end = lead, start, end
        self.scale = nn.Parameter(torch.tensor(3.0))

    def forward(self, x):
        evidence = x[:, self.lead, self.start:self.end].mean(dim=1) * self.scale
        return torch.stack([-evidence, evidence], dim=1)


def beats_with_sign(n, sign, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.05, (n, C, T)).astype(np.float32)
    x[:, 9, 110:150] += sign
    return x


def test_a_reference_equal_to_the_beat_gives_zero_effect():
    torch.manual_seed(0)
    model = WindowModel(9, 110, 150).eval()
    x = beats_with_sign(4, 1.0)
    for blend in (0, 4):
        for alignment in WAVE_ALIGNMENTS:
            effects = we.wave_effects(model, x, np.ones(4, int), [SEGMENTS] * 4, x,
                                      [SEGMENTS] * 4, alignment, blend, [60] * 4, [60] * 4)
            np.testing.assert_allclose(effects, 0.0, atol=1e-7)


def test_the_effect_lies_in_the_lead_and_wave_the_model_reads():
    model = WindowModel(9, 110, 150).eval()
    x = beats_with_sign(6, 1.0)
    pool = beats_with_sign(30, 0.0, seed=1)
    for reference in WAVE_REFERENCES:
        refs = we.reference_beats(x, pool, reference)
        effects = we.wave_effects(model, x, np.ones(6, int), [SEGMENTS] * 6, refs,
                                  [SEGMENTS] * 6, "r_peak", 4, [60] * 6, [60] * 6)
        assert effects[:, 9, WAVES.index("T")].min() > 0.3, reference
        others = np.delete(effects.reshape(6, -1), 9 * len(WAVES) + WAVES.index("T"), axis=1)
        assert np.abs(others).max() < 0.02, reference
        rows = we.wave_effect_rows(effects, np.arange(6) // 2, LEAD_NAMES, n_boot=200)
        found = we.true_cell_ranks(rows, ["V4"], "T")
        assert found == {"true_cells": ["V4-T"], "ranks": [1], "all_true_cells_first": True,
                         "cells": 60}
        assert we.true_cell_ranks(rows, ["V4", "V5"], "T")["all_true_cells_first"] is False


def test_true_cells_keep_their_own_ranks():
    """The cells and the ranks are listed in the same order (the console prints them as pairs),
    not each sorted on its own."""
    from lvr.explain.console import true_cell_text
    rank = {"V3": 1, "V2": 3, "V4": 60}
    rows = [{"lead": lead, "wave": wave, "rank": rank.get(lead, 10) if wave == "T" else 20}
            for lead in LEAD_NAMES for wave in WAVES]
    found = we.true_cell_ranks(rows, ["V2", "V3", "V4"], "T")
    assert found["true_cells"] == ["V3-T", "V2-T", "V4-T"] and found["ranks"] == [1, 3, 60]
    assert true_cell_text(found) == "V3-T 1, V2-T 3, V4-T 60"
    assert found["all_true_cells_first"] is False


def test_swapping_raw_beats_then_standardising_matches_swapping_by_hand():
    model = WindowModel(2, 100, 160).eval()
    x = beats_with_sign(2, 0.5) * 3 + 1
    refs = beats_with_sign(2, 0.0, seed=4)
    effects = we.wave_effects(model, x, np.ones(2, int), [SEGMENTS] * 2, refs, [SEGMENTS] * 2,
                              "r_peak", 0, [60, 60], [60, 60], normalisation="per_lead")
    swapped = x.copy()
    swapped[:, 2, 100:160] = refs[:, 2, 100:160]

    def p_true(beats):
        with torch.no_grad():
            logits = model(torch.from_numpy(standardize_beats(beats)))
        return torch.softmax(logits, 1)[:, 1].numpy()
    expected = p_true(x) - p_true(swapped)
    np.testing.assert_allclose(effects[:, 2, WAVES.index("T")], expected, rtol=1e-5, atol=1e-6)


def test_segment_alignment_warps_the_reference_segment_onto_the_beat():
    reference = np.zeros((1, 100), dtype=np.float32)
    reference[0, 40:60] = np.linspace(0, 1, 20)              # the reference's T at 40..60
    beat = np.zeros((1, 100), dtype=np.float32)
    segments = {w: (0, 0) for w in WAVES}
    reference_segments = dict(segments)
    segments["T"], reference_segments["T"] = (20, 60), (40, 60)
    out = we.swapped_beats(beat, reference, segments, reference_segments, "segment", 0, 0)
    t_row = out[WAVES.index("T"), 0]
    assert t_row[:20].max() == 0 and t_row[60:].max() == 0
    np.testing.assert_allclose(t_row[20:60], np.interp(40 + np.arange(40) / 2, np.arange(100),
                                                       reference[0]), atol=1e-6)


def test_blend_weights_ramp_across_the_edges():
    hard = we.blend_weights(100, (30, 60), 0)
    assert hard.sum() == 30 and hard[30] == 1 and hard[29] == 0
    soft = we.blend_weights(100, (30, 60), 10)
    assert soft[:25].max() == 0 and soft[35:55].min() == 1 and soft[66:].max() == 0
    assert 0 < soft[30] < 1 and np.all(np.diff(soft[20:45]) >= 0)
    assert we.blend_weights(100, (40, 40), 10).max() == 0     # an empty segment swaps nothing


def test_reference_beats_mean_median_and_nearest():
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(20, 2, 10)).astype(np.float32)
    x = pool[[3, 7]] + 0.001
    np.testing.assert_allclose(we.reference_beats(x, pool, "mean")[1], pool.mean(0), atol=1e-6)
    np.testing.assert_allclose(we.reference_beats(x, pool, "median")[0], np.median(pool, 0))
    nearest = we.reference_beats(x, pool, "nearest")
    distance = ((pool[None] - x[:, None]) ** 2).sum(axis=(2, 3))
    expected = pool[np.argsort(distance, axis=1)[:, :we.NEAREST_K]].mean(axis=1)
    np.testing.assert_allclose(nearest, expected, atol=1e-5)
    with pytest.raises(ValueError, match="empty"):
        we.reference_beats(x, pool[:0], "mean")


def test_effect_rows_are_patient_means_with_bootstrap_intervals():
    rng = np.random.default_rng(1)
    effects = rng.normal(0, 0.01, (12, C, len(WAVES)))
    effects[:, 9, 4] += 0.2
    ids = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3])     # one patient with 9 beats
    rows = we.wave_effect_rows(effects, ids, LEAD_NAMES, n_boot=500)
    cell = next(r for r in rows if r["lead"] == "V4" and r["wave"] == "T")
    per_patient = [effects[ids == p, 9, 4].mean() for p in range(4)]
    assert cell["effect"] == pytest.approx(np.mean(per_patient))      # not the beat mean
    assert cell["rank"] == 1 and cell["ci_low"] <= cell["effect"] <= cell["ci_high"]
    assert sorted(r["rank"] for r in rows) == list(range(1, 61))


# ----------------------------------------------------------------------------- localisation

def test_a_uniform_map_scores_chance_and_a_map_inside_the_truth_scores_one():
    mask = truth_mask(LEAD_NAMES, ["V2", "V3"], [500, 700], 500, 500)
    assert mask.sum() == 2 * 100 and mask[7, 250:350].all() and not mask[7, 350:].any()
    uniform = np.ones((3, C, 500))
    assert relevance_mass_accuracy(uniform, mask) == pytest.approx([mask.mean()] * 3)
    inside = mask[None].astype(float) * np.random.default_rng(0).uniform(0.5, 1, (3, C, 500))
    assert relevance_mass_accuracy(inside, mask) == pytest.approx([1.0] * 3)
    assert relevance_rank_accuracy(inside, mask) == pytest.approx([1.0] * 3)
    noise = np.random.default_rng(1).uniform(size=(200, C, 500))
    assert relevance_rank_accuracy(noise, mask).mean() == pytest.approx(mask.mean(), abs=0.01)
    outside = (~mask)[None].astype(float).repeat(3, 0)
    assert relevance_rank_accuracy(outside, mask).max() == 0


def test_localisation_averages_patients_and_reports_chance():
    mask = truth_mask(LEAD_NAMES, ["V4"], [0, 200], 500, 500)
    maps = np.ones((4, C, 500))
    maps[0] = mask                                           # one perfect beat
    found = localisation(maps, mask, ["a", "b", "b", "b"])  # patient a: 1.0; patient b: chance
    chance = mask.mean()
    assert found["mass_accuracy"] == pytest.approx((1.0 + chance) / 2)
    assert found["chance"] == pytest.approx(chance) and found["patients"] == 2
    assert found["mass_vs_chance"] == pytest.approx(found["mass_accuracy"] / chance)
