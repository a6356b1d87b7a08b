"""lvr.explain.smoothgrad.smoothgrad against the original's loop, plain autograd and captum's
NoiseTunnel."""
import pytest
import torch
import torch.nn.functional as F
from captum.attr import NoiseTunnel, Saliency

from lvr.explain.smoothgrad import lead_importance, smoothgrad, time_importance
from references import smoothgrad_seed_loop

B, C, T = 4, 12, 64


def tiny_model(seed=0):
    """Conv1d + BatchNorm + ReLU + global average pool + Linear, in eval mode."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv1d(C, 8, kernel_size=7, padding=3), torch.nn.BatchNorm1d(8),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    with torch.no_grad():  # non-trivial running statistics, so eval-mode BatchNorm matters
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(B, C, T, generator=generator)
    return x, torch.tensor([0, 1, 1, 0])


def test_vectorised_equals_original_loop(batch):
    x, y = batch
    model = tiny_model()
    noise = 0.1 * torch.randn(10, B, C, T, generator=torch.Generator().manual_seed(2))
    # the original averaged the loss over the batch, which divides each beat's gradient by B
    expected = B * smoothgrad_seed_loop(model, x, y, noise)
    assert torch.allclose(smoothgrad(model, x, y, noise=noise), expected, atol=1e-6, rtol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_chunking_does_not_change_result(batch):
    x, y = batch
    model = tiny_model()
    noise = 0.1 * torch.randn(5, B, C, T, generator=torch.Generator().manual_seed(3))
    whole = smoothgrad(model, x, y, noise=noise)
    for chunk_size in (1, 3, 7):
        assert torch.allclose(smoothgrad(model, x, y, noise=noise, chunk_size=chunk_size), whole,
                              atol=1e-7, rtol=1e-6)


def test_seeded_noise_is_reproducible(batch):
    x, y = batch
    model = tiny_model()
    first = smoothgrad(model, x, y, generator=torch.Generator().manual_seed(7))
    again = smoothgrad(model, x, y, generator=torch.Generator().manual_seed(7))
    other = smoothgrad(model, x, y, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    assert first.shape == (B, C, T) and first.dtype == torch.float32 and first.device.type == "cpu"
    assert not first.requires_grad


def test_no_noise_single_sample_is_plain_loss_gradient(batch):
    x, y = batch
    model = tiny_model()
    inputs = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(F.cross_entropy(model(inputs), y, reduction="sum"), inputs)
    result = smoothgrad(model, x, y, num_samples=1, noise_level=0.0)
    assert torch.allclose(result, gradient.abs(), atol=1e-7, rtol=1e-6)


def test_training_mode_is_refused_and_left_unchanged(batch):
    x, y = batch
    model = tiny_model().train()
    with pytest.raises(ValueError, match="eval mode"):
        smoothgrad(model, x, y)
    with pytest.raises(ValueError, match="eval mode"):
        smoothgrad_seed_loop(model, x, y, torch.zeros(1, B, C, T))
    assert model.training
    model.eval()
    model[1].train()  # a single submodule in training mode is refused as well
    with pytest.raises(ValueError, match="eval mode"):
        smoothgrad(model, x, y)


def captum_log_softmax_smoothgrad(model, x, y, num_samples, noise_level):
    """captum's SmoothGrad of log p_y, whose absolute gradient equals that of CE = -log p_y."""
    tunnel = NoiseTunnel(Saliency(lambda inputs: F.log_softmax(model(inputs), dim=1)))
    return tunnel.attribute(x, nt_type="smoothgrad", nt_samples=num_samples,
                            stdevs=float(noise_level), target=y)


def test_matches_captum_without_noise(batch):
    x, y = batch
    model = tiny_model()
    ours = smoothgrad(model, x, y, num_samples=3, noise_level=0.0)
    theirs = captum_log_softmax_smoothgrad(model, x, y, num_samples=3, noise_level=0.0)
    assert torch.allclose(ours, theirs, atol=1e-7, rtol=1e-6)


def test_matches_captum_with_its_own_noise(batch):
    """Same noise, same result: captum differentiates an output, we the loss.

    captum 0.9 (``NoiseTunnel._add_noise_to_input``, one partition when
    ``nt_samples_batch_size`` is None) draws ``torch.normal(0, stdev)`` of shape
    (B * nt_samples, C, T) from torch's global generator and adds it to
    ``x.repeat_interleave(nt_samples, dim=0)``: rows are beat-major. Our noise is
    (num_samples, B, C, T), copy-major, drawn from an explicit generator. Replaying captum's draw
    under the same global seed and reordering it gives identical noise. The targets differ by
    the sign only: d CE / dx = -d log_softmax(f(x))_y / dx, so captum's default absolute
    Saliency of ``log_softmax(model(x))`` at the true label equals our SmoothGrad; without the
    log_softmax wrapper captum would differentiate the logit, which differs by the softmax terms.
    """
    x, y = batch
    model = tiny_model()
    num_samples, noise_level = 8, 0.1
    torch.manual_seed(123)
    captum_noise = torch.normal(0, torch.tensor(noise_level).repeat(B * num_samples, C, T))
    noise = captum_noise.reshape(B, num_samples, C, T).transpose(0, 1)
    torch.manual_seed(123)
    theirs = captum_log_softmax_smoothgrad(model, x, y, num_samples, noise_level)
    ours = smoothgrad(model, x, y, noise=noise)
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(ours, smoothgrad(model, x, y, num_samples=1, noise_level=0.0))


def test_lead_and_time_importance_are_means():
    saliency = torch.rand(2, C, T)
    assert torch.equal(lead_importance(saliency), saliency.mean(dim=2))
    assert torch.equal(time_importance(saliency), saliency.mean(dim=1))
    assert lead_importance(saliency).shape == (2, C) and time_importance(saliency).shape == (2, T)
