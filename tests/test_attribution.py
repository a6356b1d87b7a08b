"""lvr.explain.attribution: the maps of every method, checked against SmoothGrad, captum's own
guarantees, and toy models whose answer is known."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients
from torch import nn

from lvr.explain.attribution import attribution_maps, has_lead_resolution
from lvr.choices import METHODS
from lvr.explain.maps import MapSettings, saliency_maps
from lvr.explain.smoothgrad import smoothgrad
from model.resnet1d import ResNet1D

LEADS, T = 12, 250


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ResNet1D(num_classes=2, in_channels=LEADS, experiment="ca_ms_v2").eval()


def random_beats(n, length=T, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, LEADS, length, generator=generator).numpy()
    y = torch.randint(0, 2, (n,), generator=generator).numpy()
    return x, y


class MaskedSum(nn.Module):
    """Two classes with logits (s, -s), s = scale * sum of x * mask: only the samples where
    mask is 1 carry evidence. No `blocks`, so Grad-CAM cannot explain it."""

    def __init__(self, mask, scale=0.01):
        super().__init__()
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.float32))
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, x):
        s = self.scale * (x * self.mask).sum(dim=(1, 2))
        return torch.stack([s, -s], dim=1)


def true_log_prob(model, x, y):
    with torch.no_grad():
        log_prob = F.log_softmax(model(torch.as_tensor(x)), dim=1)
    return log_prob[torch.arange(len(y)), torch.as_tensor(y)].numpy()


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_a_nonnegative_float32_map_per_beat(model, method):
    x, y = random_beats(5)
    maps = attribution_maps(model, x, y, method, num_samples=2, ig_steps=8, batch_size=4)
    assert maps.shape == x.shape and maps.dtype == np.float32
    assert np.isfinite(maps).all() and (maps >= 0).all() and (maps > 0).any()
    assert not model.training


def test_gradient_is_smoothgrad_with_one_copy_and_no_noise(model):
    x, y = random_beats(6)
    maps = attribution_maps(model, x, y, "gradient", batch_size=4)
    expected = smoothgrad(model, torch.from_numpy(x), torch.from_numpy(y), 1, 0.0).numpy()
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(attribution_maps(model, x, y, "input_x_gradient"),
                               np.abs(x) * expected, rtol=1e-4, atol=1e-8)


def test_smoothgrad_consumes_one_generator_batch_by_batch_as_the_analysis_does(model):
    x, y = random_beats(10)
    maps = attribution_maps(model, x, y, "smoothgrad", num_samples=3, noise_level=0.1,
                            generator=torch.Generator().manual_seed(1), batch_size=4)
    generator = torch.Generator().manual_seed(1)
    expected = np.concatenate([
        smoothgrad(model, torch.from_numpy(x[s:s + 4]), torch.from_numpy(y[s:s + 4]), 3, 0.1,
                   generator=generator).numpy() for s in range(0, 10, 4)])
    np.testing.assert_array_equal(maps, expected)
    settings = MapSettings(method="smoothgrad", num_samples=3, noise_level=0.1, ig_steps=32,
                           occlusion_window_ms=50, batch_size=4, seed=1)
    analysis, _ = saliency_maps(model, x, y, settings, torch.device("cpu"), fs=500)
    np.testing.assert_array_equal(analysis, expected)   # the script's maps: the same loop


def test_integrated_gradients_are_complete_for_the_true_log_probability(model):
    x, y = random_beats(6)
    steps = 16
    signed = IntegratedGradients(lambda z: F.log_softmax(model(z), dim=1)).attribute(
        torch.from_numpy(x), baselines=torch.zeros(x.shape), target=torch.from_numpy(y),
        n_steps=steps).numpy()
    gain = true_log_prob(model, x, y) - true_log_prob(model, np.zeros_like(x), y)
    assert np.abs(gain).min() > 1e-5   # the check below means something
    np.testing.assert_allclose(signed.sum(axis=(1, 2)), gain, rtol=1e-2, atol=1e-7)
    maps = attribution_maps(model, x, y, "integrated_gradients", ig_steps=steps, batch_size=4)
    np.testing.assert_allclose(maps, np.abs(signed), rtol=1e-4, atol=1e-9)
    assert (maps.sum(axis=(1, 2)) >= np.abs(gain) * 0.99).all()   # |sum a| <= sum |a|


def occluded_by_hand(model, x, y, window):
    """|log P(x) - log P(x with lead l, samples [s, s + window) set to 0)| over that window."""
    expected = np.zeros_like(x)
    for lead in range(x.shape[1]):
        for start in range(0, x.shape[2], window):
            occluded = x.copy()
            occluded[:, lead, start:start + window] = 0
            change = true_log_prob(model, x, y) - true_log_prob(model, occluded, y)
            expected[:, lead, start:start + window] = np.abs(change)[:, None]
    return expected


def test_occlusion_finds_the_only_window_that_matters(model):
    x, y = random_beats(3)
    mask = np.zeros((LEADS, T))
    mask[3, 50:75] = 1
    maps = attribution_maps(MaskedSum(mask).eval(), x, y, "occlusion", occlusion_window=25)
    assert (maps[:, 3, 50:75] > 0).all()
    maps[:, 3, 50:75] = 0
    assert not maps.any()


def test_occlusion_covers_every_sample_when_the_window_does_not_divide_the_beat():
    x, y = random_beats(3, length=260)
    toy = MaskedSum(np.ones((LEADS, 260))).eval()
    maps = attribution_maps(toy, x, y, "occlusion", occlusion_window=25, batch_size=2)
    assert (maps > 0).all()
    np.testing.assert_allclose(maps, occluded_by_hand(toy, x, y, 25), rtol=1e-4, atol=1e-7)


def test_grad_cam_gives_every_lead_the_same_time_curve(model):
    x, y = random_beats(4)
    maps = attribution_maps(model, x, y, "grad_cam", progress=True)
    np.testing.assert_array_equal(maps, np.repeat(maps[:, :1], LEADS, axis=1))
    assert (np.ptp(maps[:, 0], axis=1) > 0).all()
    assert [has_lead_resolution(m) for m in METHODS] == [m != "grad_cam" for m in METHODS]


def test_grad_cam_needs_residual_blocks():
    x, y = random_beats(2)
    with pytest.raises(ValueError, match=r"grad_cam.*blocks"):
        attribution_maps(MaskedSum(np.ones((LEADS, T))).eval(), x, y, "grad_cam")


@pytest.mark.parametrize("method", METHODS)
def test_a_model_in_training_mode_is_refused_and_left_so(method):
    x, y = random_beats(2)
    torch.manual_seed(0)
    training = ResNet1D(num_classes=2, in_channels=LEADS, experiment="ca_ms_v2")
    with pytest.raises(ValueError, match="eval mode"):
        attribution_maps(training, x, y, method)
    assert all(module.training for module in training.modules())


def test_an_unknown_method_is_refused_with_the_valid_ones(model):
    x, y = random_beats(2)
    for call in (lambda: attribution_maps(model, x, y, "lrp"), lambda: has_lead_resolution("lrp")):
        with pytest.raises(ValueError, match="lrp") as error:
            call()
        assert all(method in str(error.value) for method in METHODS)
