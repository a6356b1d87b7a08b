"""The residual 1D CNN variants and their checkpoint files."""
import os

import pytest
import torch

from lvr.config import UserError
from lvr.train.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from model import EXPERIMENT_NAMES, EXPERIMENTS, ArchitectureError, build_model, parameter_count
from model import MCL_ResNet1D_2, MCL_ResNet1D_4



# Parameters of each variant with 12 leads in and 2 classes out (docs/model.md's table shows
# the same numbers). A 4-class head has 2 x (128 inputs + 1 bias) more.
PARAMETER_COUNTS = {
    "baseline": 580_994,
    "ca": 592_542,
    "ms": 626_050,
    "ca_ms": 637_598,
    "ca_ms_v2": 642_113,
}
HEAD_INPUTS = 128

VARIANTS = list(EXPERIMENTS)


def beats(batch=2, leads=12, length=500, seed=0):
    return torch.randn(batch, leads, length, generator=torch.Generator().manual_seed(seed))


def seeded_model(num_classes=2, experiment="ca_ms_v2", seed=0, **kwargs):
    torch.manual_seed(seed)
    return build_model(num_classes, experiment=experiment, **kwargs).eval()


def test_the_experiments_are_the_five_variants():
    assert list(EXPERIMENTS) == ["baseline", "ca", "ms", "ca_ms", "ca_ms_v2"]
    assert set(PARAMETER_COUNTS) == set(EXPERIMENTS)
    assert list(EXPERIMENT_NAMES) == [*EXPERIMENTS, "resnet1d_wang", "xresnet1d101", "inception1d"]


@pytest.mark.parametrize("experiment", VARIANTS)
def test_parameter_count_is_the_known_one(experiment):
    assert parameter_count(build_model(2, experiment)) == PARAMETER_COUNTS[experiment]
    assert parameter_count(build_model(4, experiment)) == \
        PARAMETER_COUNTS[experiment] + 2 * (HEAD_INPUTS + 1)
    trainable = sum(p.numel() for p in build_model(2, experiment).parameters() if p.requires_grad)
    assert trainable == PARAMETER_COUNTS[experiment]


@pytest.mark.parametrize("experiment", VARIANTS)
@pytest.mark.parametrize("module", [MCL_ResNet1D_2, MCL_ResNet1D_4], ids=["2class", "4class"])
def test_output_shape_for_any_beat_length(module, experiment):
    model = module.ResNet1D(in_channels=12, experiment=experiment).eval()
    classes = 2 if module is MCL_ResNet1D_2 else 4
    with torch.no_grad():
        for length in (250, 500, 1000, 5000):
            assert model(beats(length=length)).shape == (2, classes)


def test_published_interface():
    model = MCL_ResNet1D_4.ResNet1D(in_channels=12, experiment="ca_ms_v2")
    assert isinstance(model, torch.nn.Module)
    assert model.config["num_classes"] == 4
    assert MCL_ResNet1D_2.EXPERIMENTS is EXPERIMENTS
    assert MCL_ResNet1D_2.ResNet1D().config["num_classes"] == 2


@pytest.mark.parametrize("experiment", VARIANTS)
def test_input_gradient_reaches_every_lead(experiment):
    model = seeded_model(experiment=experiment)
    x = beats(batch=4).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    per_lead = x.grad.abs().sum(dim=(0, 2))
    assert torch.all(per_lead > 0), per_lead


@pytest.mark.parametrize("experiment", VARIANTS)
def test_eval_mode_is_deterministic(experiment):
    """In eval mode dropout is off and BatchNorm uses its running statistics, so a beat's output
    depends only on the weights and the beat: not on the model instance, the call, or the other
    beats of the batch. In train mode dropout makes two calls differ."""
    model = seeded_model(experiment=experiment, dropout_rate=0.5).train()
    with torch.no_grad():  # running statistics away from their initial 0 and 1
        model(beats(8, length=250, seed=1) * 2 + 0.5)
    model.eval()
    twin = build_model(2, experiment, dropout_rate=0.5)
    twin.load_state_dict(model.state_dict())
    twin.eval()
    x = beats(batch=2, length=250, seed=7)
    with torch.no_grad():
        output = model(x)
        assert torch.equal(twin(x), output)
        alone = torch.cat([model(x[:1]), model(x[1:])])
        assert torch.allclose(alone, output, rtol=1e-4, atol=1e-5)
        model.train()
        first, second = model(x), model(x)
    assert not torch.allclose(first, second, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(first, output, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("experiment", VARIANTS)
def test_inference_copy_folds_batchnorm_without_changing_outputs_or_input_gradients(experiment):
    model = seeded_model(experiment=experiment).train()
    with torch.no_grad():  # trained-looking BatchNorm statistics and affine parameters
        for _ in range(3):
            model(beats(16, seed=1) * 2 + 0.5)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    # float64: in float32 a ReLU input within rounding of 0 may switch sides after folding,
    # which moves single gradient values; in float64 the comparison is exact to 1e-10.
    model.eval().double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = model.inference_copy()
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters()) and not folded.training
    x = beats(4, seed=2).double().requires_grad_(True)
    reference = model(x)
    (grad_reference,) = torch.autograd.grad(reference[:, 1].sum(), x)
    output = folded(x)
    (grad_folded,) = torch.autograd.grad(output[:, 1].sum(), x)
    assert torch.allclose(output, reference, atol=1e-12, rtol=1e-10)
    assert torch.allclose(grad_folded, grad_reference, atol=1e-12, rtol=1e-10)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_other_lead_counts():
    model = seeded_model(4, in_channels=8)
    assert model(beats(leads=8)).shape == (2, 4)
    assert model.lead_weights(beats(leads=8)).shape == (2, 8)
    with pytest.raises(ValueError, match=r"\(batch, 8, time\)"):
        model(beats(leads=12))


def test_lead_gate_starts_neutral():
    assert torch.allclose(seeded_model().lead_weights(beats()), torch.ones(2, 12))


def test_input_length_is_enforced_when_given():
    model = seeded_model(input_length=500)
    assert model(beats(length=500)).shape == (2, 2)
    with pytest.raises(ValueError, match="500 samples"):
        model(beats(length=1000))


def test_unknown_experiment_lists_valid_names():
    with pytest.raises(ValueError, match="ca_ms_v2") as caught:
        build_model(2, experiment="resnet50")
    assert isinstance(caught.value, ArchitectureError)


def test_config_is_a_copy_of_the_experiment():
    model = build_model(2, "ms")
    model.config["architecture"]["widths"] = (1,)
    assert EXPERIMENTS["ms"]["widths"] != (1,)
    assert build_model(2, "ms").config["architecture"] == EXPERIMENTS["ms"]


def trained_a_little(model, steps=2):
    """Move weights and BatchNorm statistics away from their initial values."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for step in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(beats(batch=4, seed=step)),
                                          torch.tensor([0, 1, 1, 0])).backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("experiment", VARIANTS)
def test_checkpoint_round_trip_from_the_file_alone(tmp_path, experiment):
    model = trained_a_little(seeded_model(4, experiment, dropout_rate=0.3))
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, epoch=7, metrics={"auc": 0.91, "per_fold": [0.9, 0.92]})
    assert os.listdir(tmp_path) == ["model.pt"]

    loaded, checkpoint = load_checkpoint(path)
    assert checkpoint["epoch"] == 7 and checkpoint["metrics"]["auc"] == 0.91
    assert loaded.config == model.config
    assert not loaded.training
    reference, restored = model.state_dict(), loaded.state_dict()
    assert reference.keys() == restored.keys()
    assert all(torch.equal(reference[key], restored[key]) for key in reference)
    x = beats(length=750)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_checkpoint_survives_a_changed_experiment_table(tmp_path, monkeypatch):
    model = seeded_model(2, "ca")
    save_checkpoint(tmp_path / "m.pt", model)
    monkeypatch.setitem(EXPERIMENTS, "ca", dict(EXPERIMENTS["ca"], widths=(8, 8, 8, 8)))
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    assert parameter_count(loaded) == PARAMETER_COUNTS["ca"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in loaded.state_dict().items())


def adam_step(model, optimizer, seed):
    torch.manual_seed(seed)  # the same dropout masks for every model
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(beats(length=250, seed=seed)),
                                      torch.tensor([0, 1])).backward()
    optimizer.step()


def test_checkpoint_with_optimizer_state(tmp_path):
    """The saved Adam state (moments, step count) continues training exactly where it was."""
    model = seeded_model(experiment="baseline").train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    adam_step(model, optimizer, seed=0)
    save_checkpoint(tmp_path / "m.pt", model, optimizer=optimizer.state_dict())
    loaded, checkpoint = load_checkpoint(tmp_path / "m.pt")
    saved_state = checkpoint["optimizer"]["state"]
    assert len(saved_state) == len(list(model.parameters()))
    assert all(int(entry["step"]) == 1 for entry in saved_state.values())
    resumed = torch.optim.Adam(loaded.parameters(), lr=1e-3)
    resumed.load_state_dict(checkpoint["optimizer"])
    # a second step from the checkpoint equals the second step of the original run (an Adam
    # without the saved moments and step count would take another step)
    adam_step(model, optimizer, seed=1)
    adam_step(loaded.train(), resumed, seed=1)
    continued, restored = model.state_dict(), loaded.state_dict()
    assert continued.keys() == restored.keys()
    assert all(torch.equal(continued[k], restored[k]) for k in continued)


def test_save_refuses_non_plain_extras_and_keeps_the_old_file(tmp_path):
    np = pytest.importorskip("numpy")
    path = tmp_path / "m.pt"
    save_checkpoint(path, seeded_model(), epoch=1)
    with pytest.raises(TypeError, match=r"metrics\['auc'\]"):
        save_checkpoint(path, seeded_model(), epoch=2, metrics={"auc": np.float64(0.9)})
    with pytest.raises(ValueError, match="state_dict"):
        save_checkpoint(path, seeded_model(), state_dict={})
    assert load_checkpoint(path)[1]["epoch"] == 1
    assert os.listdir(tmp_path) == ["m.pt"]


def test_old_style_state_dict_needs_the_experiment(tmp_path):
    model = trained_a_little(MCL_ResNet1D_4.ResNet1D(experiment="ca_ms"))
    path = tmp_path / "old.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"old-style.*fit the ca_ms network"):
        load_checkpoint(path)
    loaded, checkpoint = load_checkpoint(path, experiment="ca_ms")
    assert loaded.config["num_classes"] == 4 and checkpoint["format"] == "mcl-resnet1d-v1"
    x = beats()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    with pytest.raises(CheckpointError, match=r"missing.*unexpected"):
        load_checkpoint(path, experiment="baseline")
    with pytest.raises(CheckpointError, match=r"shape mismatch: stem\.0\.weight"):
        load_checkpoint(path, experiment="ca_ms", in_channels=8)


def test_num_classes_must_agree_with_the_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "m.pt", seeded_model(2))
    with pytest.raises(CheckpointError, match="num_classes=2.*num_classes=4"):
        load_checkpoint(tmp_path / "m.pt", num_classes=4)
    assert load_checkpoint(tmp_path / "m.pt", num_classes=2)[0].config["num_classes"] == 2


def test_unreadable_files_give_clear_errors(tmp_path):
    path = tmp_path / "m.pt"
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(path)

    save_checkpoint(path, seeded_model())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"m\.pt.*truncated or corrupt") as caught:
        load_checkpoint(path)
    assert isinstance(caught.value, UserError)

    path.write_text("not a torch file")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_foreign_files_give_clear_errors(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"model_state": {"w": torch.zeros(2)}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="neither a mcl-resnet1d-v1 checkpoint nor a state"):
        load_checkpoint(path)

    torch.save({"format": "mcl-resnet1d-v9", "config": {}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="format 'mcl-resnet1d-v9'.*reads only"):
        load_checkpoint(path)

    torch.save({"when": torch.nn.Identity()}, path)
    with pytest.raises(CheckpointError, match="weights_only=False"):
        load_checkpoint(path)
