"""NORMALISATION: how beats become the network's input, the same in training, evaluation,
saliency and wave effects, stored in the checkpoint (an old checkpoint reads as per lead)."""
import collections

import numpy as np
import pandas as pd
import pytest
import torch

import lvr.data.beats
import lvr.explain.maps
from helpers import evaluation_config, quiet, script_result, tiny_config, write_small_cohort
from lvr.train import run as engine
from lvr.train.checkpoints import checkpoint_normalisation, load_checkpoint
from lvr.data.beats import normalised_beats, standardize_beats
from lvr.data.cohort import load_cohort
from lvr.evaluate.external import run_evaluation

SALIENCY_OPTIONS = ("--num_samples=2", "--max_figures=0", "--sanity_check=False",
                    "--deletion_test=False", "--patient_bootstrap=0", "--figure_workers=1",
                    "--delineation_leads=II,V2,V5")


def test_each_normalisation_is_what_it_says():
    rng = np.random.default_rng(0)
    beats = rng.normal(size=(3, 12, 50)).astype(np.float32) * 0.5 + 0.2
    beats[:, 1] = 2 * beats[:, 0]          # lead 1 is twice lead 0
    np.testing.assert_array_equal(normalised_beats(beats, "per_lead"), standardize_beats(beats))
    np.testing.assert_array_equal(normalised_beats(beats, "none"), beats)
    per_beat = normalised_beats(beats, "per_beat")
    assert per_beat.dtype == np.float32
    np.testing.assert_allclose(per_beat.reshape(3, -1).mean(1), 0, atol=1e-6)
    np.testing.assert_allclose(per_beat.reshape(3, -1).std(1), 1, atol=1e-5)
    # one shift and one scale per beat: the leads keep their relative amplitudes
    centred = beats - beats.mean(axis=(1, 2), keepdims=True)
    ratio = per_beat / centred
    np.testing.assert_allclose(ratio, ratio[:, :1, :1] * np.ones_like(ratio), rtol=1e-4)
    with pytest.raises(ValueError, match="per_lead, per_beat, none"):
        normalised_beats(beats, "zscore")


def spied(monkeypatch):
    """Every normalisation applied from now on, in order of calls."""
    seen = []
    original = lvr.data.beats.normalised_beats

    def spy(beats, normalisation="per_lead"):
        seen.append(normalisation)
        return original(beats, normalisation)
    monkeypatch.setattr(lvr.data.beats, "normalised_beats", spy)
    monkeypatch.setattr(lvr.explain.maps, "normalised_beats", spy)
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("normalisation", ["per_beat", "none"])
def test_one_normalisation_from_training_to_wave_effects(normalisation, tmp_path, monkeypatch):
    data_dir = write_small_cohort(tmp_path / "data")
    seen = spied(monkeypatch)
    engine.run_training(tiny_config(data_dir, tmp_path / "run", EPOCHS=1, TEST_SIZE=0.4,
                                    NORMALISATION=normalisation), log=quiet)
    model, checkpoint = load_checkpoint(tmp_path / "run" / "best_model.pth")
    assert checkpoint["normalisation"] == normalisation
    assert set(seen) == {normalisation}

    seen.clear()
    run_evaluation(evaluation_config(tmp_path / "run", data_dir), log=quiet)
    assert set(seen) == {normalisation}
    cohort = load_cohort(str(data_dir))
    table = pd.read_csv(tmp_path / "run" / "external_data" / "predictions.csv")
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(
            normalised_beats(cohort.beats, normalisation))), 1).numpy()
    np.testing.assert_allclose(table[["prob_non-LVR", "prob_LVR"]], expected, atol=2e-6)

    seen.clear()
    result = script_result("Saliency_ana2_sys.py", f"--data_dir={data_dir}",
                           f"--train_dir={tmp_path / 'run'}", f"--output_dir={tmp_path / 'sal'}",
                           *SALIENCY_OPTIONS)
    assert result.returncode == 0, result.stderr
    calls = collections.Counter(seen)
    assert set(calls) == {normalisation}
    assert calls[normalisation] >= 2      # the explained beats, then the swapped beats
    assert (tmp_path / "sal" / "wave_effects.csv").exists()


def test_an_old_checkpoint_reads_as_per_lead(tmp_path):
    data_dir = write_small_cohort(tmp_path / "data")
    engine.run_training(tiny_config(data_dir, tmp_path / "run", EPOCHS=1), log=quiet)
    path = tmp_path / "run" / "best_model.pth"
    stored = torch.load(path, weights_only=True)
    assert stored["normalisation"] == "per_lead"
    old_style = dict(stored)
    del old_style["normalisation"]
    torch.save(old_style, tmp_path / "old_style.pth")
    _, checkpoint = load_checkpoint(tmp_path / "old_style.pth")
    assert checkpoint_normalisation(checkpoint, path) == "per_lead"
    other = write_small_cohort(tmp_path / "other", seed=3)
    intact = run_evaluation(evaluation_config(tmp_path / "run", other,
                                              OUTPUT_DIR=str(tmp_path / "intact")), log=quiet)
    torch.save(old_style, path)
    old = run_evaluation(evaluation_config(tmp_path / "run", other,
                                           OUTPUT_DIR=str(tmp_path / "old")), log=quiet)
    assert old["n_beats"] == intact["n_beats"] > 0
    assert (tmp_path / "old" / "predictions.csv").read_text() == \
        (tmp_path / "intact" / "predictions.csv").read_text()
