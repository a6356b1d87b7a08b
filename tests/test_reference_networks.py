"""The PTB-XL benchmark's reference networks (model/reference.py): sizes, shapes, checkpoints,
the interface the explanation code uses, and whole training and saliency runs."""
import json

import numpy as np
import pytest
import torch

from helpers import script_result, write_small_cohort
from lvr.explain.attribution import attribution_maps
from lvr.train.checkpoints import load_checkpoint, save_checkpoint
from lvr.explain.checks import cascading_layer_names, randomized_copy
from model import REFERENCE_NETWORKS, build_model, parameter_count, rebuild_model
from model.reference import ConcatPoolHead

# Published sizes (body + 129 x classes for the concat-pooling head's last layer).
PARAMETER_COUNTS = {
    "resnet1d_wang": {2: 472_962, 5: 473_349},
    "xresnet1d101": {2: 1_871_874, 5: 1_872_261},
    "inception1d": {2: 507_266, 5: 507_653},
}
NETWORKS = list(REFERENCE_NETWORKS)
FAST_NETWORK = "resnet1d_wang"   # the cheapest to train, run end to end in the fast tier
CONFIG_KEYS = {"experiment", "num_classes", "in_channels", "input_length", "dropout_rate",
               "architecture"}


def beats(batch=2, leads=12, length=250, seed=0):
    return torch.randn(batch, leads, length, generator=torch.Generator().manual_seed(seed))


def seeded_model(experiment, num_classes=2, seed=0, **kwargs):
    torch.manual_seed(seed)
    return build_model(num_classes, experiment=experiment, **kwargs)


def trained_a_little(model, leads=12):
    """One SGD step: weights and BatchNorm statistics away from their initial values."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    torch.nn.functional.cross_entropy(model(beats(batch=4, leads=leads, seed=1)),
                                      torch.tensor([0, 1, 1, 0])).backward()
    optimizer.step()
    return model.eval()


def test_the_reference_networks_are_named_as_in_the_benchmark():
    assert NETWORKS == ["resnet1d_wang", "xresnet1d101", "inception1d"]


@pytest.mark.parametrize("experiment", NETWORKS)
@pytest.mark.parametrize("num_classes", [2, 5])
def test_parameter_count_is_the_published_one(experiment, num_classes):
    assert parameter_count(build_model(num_classes, experiment)) == \
        PARAMETER_COUNTS[experiment][num_classes]


@pytest.mark.parametrize("experiment", NETWORKS)
def test_output_shape_any_length_any_leads_and_input_checks(experiment):
    model = seeded_model(experiment).eval()
    assert set(model.config) == CONFIG_KEYS and model.config["experiment"] == experiment
    with torch.no_grad():
        for length in (250, 500):
            assert model(beats(length=length)).shape == (2, 2)
        eight = seeded_model(experiment, num_classes=5, in_channels=8).eval()
        assert eight(beats(batch=3, leads=8)).shape == (3, 5)
    with pytest.raises(ValueError, match=r"shape \(batch, 12, time\), got \(2, 8, 250\)"):
        model(beats(leads=8))
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(12, 250))
    if model.min_length > 1:
        with pytest.raises(ValueError, match=f"at least {model.min_length} samples"):
            model(beats(length=model.min_length - 1))
    fixed = seeded_model(experiment, input_length=250).eval()
    with pytest.raises(ValueError, match="250 samples"):
        fixed(beats(length=500))
    assert torch.equal(model.lead_weights(beats(batch=3)), torch.ones(3, 12))


def test_the_head_concatenates_max_and_mean_and_takes_the_dropout_rate():
    head = build_model(2, "resnet1d_wang", dropout_rate=0.5).head
    assert isinstance(head, ConcatPoolHead)
    assert [m.p for m in head.layers if isinstance(m, torch.nn.Dropout)] == [0.25, 0.5]
    assert head.layers[0].num_features == 2 * 128
    head.eval()
    x = torch.randn(2, 128, 10, generator=torch.Generator().manual_seed(0))
    reference = torch.cat([x.amax(dim=2), x.mean(dim=2)], dim=1)
    assert torch.allclose(head(x), head.layers(reference))


@pytest.mark.parametrize("experiment", NETWORKS)
def test_checkpoint_round_trip_rebuilds_the_same_network(tmp_path, experiment):
    model = trained_a_little(seeded_model(experiment, num_classes=5, dropout_rate=0.3))
    save_checkpoint(tmp_path / "m.pt", model, epoch=2)
    loaded, checkpoint = load_checkpoint(tmp_path / "m.pt")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert checkpoint["epoch"] == 2 and not loaded.training
    x = beats(length=300)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert type(rebuild_model(**{k: v for k, v in model.config.items()
                                 if k != "architecture"})) is type(model)


@pytest.mark.parametrize("experiment", NETWORKS)
def test_inference_copy_gives_the_same_outputs_and_input_gradients(experiment):
    model = trained_a_little(seeded_model(experiment))
    copy = model.inference_copy()
    assert not copy.training and not any(p.requires_grad for p in copy.parameters())
    gradients = []
    for network in (model, copy):
        x = beats(batch=3).requires_grad_(True)
        out = network(x)
        torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 0])).backward()
        gradients.append((out.detach(), x.grad))
    assert torch.allclose(gradients[0][0], gradients[1][0], atol=1e-5)
    assert torch.allclose(gradients[0][1], gradients[1][1], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("experiment", NETWORKS)
def test_the_explanation_code_reads_the_reference_networks(experiment):
    model = trained_a_little(seeded_model(experiment))
    names = cascading_layer_names(model)
    blocks = len(model.blocks)
    assert names[0] == "head" and names[1:blocks + 1] == [f"blocks.{i}"
                                                          for i in reversed(range(blocks))]
    randomized = randomized_copy(model, layers=[names[1]])
    x, y = beats(batch=2).numpy(), np.array([0, 1])
    assert not np.allclose(attribution_maps(model, x, y, num_samples=2),
                           attribution_maps(randomized.eval(), x, y, num_samples=2))
    cam = attribution_maps(model, x, y, method="grad_cam")
    assert cam.shape == x.shape and np.all(cam >= 0)


# ----------------------------------------------------------------------------- whole runs

def train(data_dir, output_dir, experiment, *options):
    return script_result("train_MCL_ResNet_1D_class2.py", f"--data_dir={data_dir}",
                         f"--output_dir={output_dir}", f"--experiment={experiment}",
                         "--bootstrap=20", "--device=cpu", "--batch_size=4", "--lr=0.001",
                         "--test_size=0.4", *options)


def train_resume_and_explain(root, experiment, checks=True):
    data_dir = write_small_cohort(root / "data", n_patients=12)
    run = root / "run"
    first = train(data_dir, run, experiment, "--epochs=1")
    assert first.returncode == 0, first.stderr
    resumed = train(data_dir, run, experiment, "--epochs=2", "--resume=True")
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming" in resumed.stdout
    assert len(np.load(run / "train_acc_list.npy")) == 2
    model, _ = load_checkpoint(run / "best_model.pth")
    assert type(model) is REFERENCE_NETWORKS[experiment]
    out = root / "saliency"
    check_options = (["--sanity_samples=4", "--deletion_draws=2"] if checks
                     else ["--sanity_check=False", "--deletion_test=False"])
    explained = script_result("Saliency_ana2_sys.py", f"--data_dir={data_dir}",
                              f"--train_dir={run}", f"--output_dir={out}", "--max_figures=0",
                              "--num_samples=2", "--patient_bootstrap=20",
                              "--figure_workers=1", "--wave_importance=False",
                              "--wave_effects=False", "--delineation_leads=II,V2,V5",
                              *check_options)
    assert explained.returncode == 0, explained.stderr
    assert (out / "saliency_maps.npz").exists()
    if checks:
        results = json.loads((out / "explanation_checks.json").read_text())
        assert {"sanity_spearman", "deletion_win_rate"} <= set(results)


@pytest.mark.slow
def test_a_reference_network_trains_resumes_and_is_explained(tmp_path):
    train_resume_and_explain(tmp_path, FAST_NETWORK, checks=False)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", NETWORKS)
def test_every_reference_network_trains_resumes_and_is_explained(tmp_path, experiment):
    train_resume_and_explain(tmp_path, experiment)
