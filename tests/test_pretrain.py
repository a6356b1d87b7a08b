"""Self-supervised pretraining (pretrain.py, lvr.train.pretraining): the pairs are two views of one
patient, the augmentations change a beat as a recording would (no wrap-around, a lead always
left), the loss is the CLOCS InfoNCE written out by hand, a run resumes to the same weights, the
patients it leaves out are left out, and its checkpoint fine-tunes through INIT_FROM with the
test-patient guard."""
import json
import math
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import HANG_LIMIT_S, ROOT, quiet, script_result, tiny_config, write_small_cohort
from lvr.train import pretraining
from lvr.train import run as engine
from lvr.train.checkpoints import load_checkpoint
from lvr.data.cohort import load_cohort
from lvr.config import UserError
from lvr.train.finetune import HEAD_PREFIX, read_source
from lvr.train.contrastive import (Augmentation, augmented, batch_views, contrastive_loss,
                                   lead_halves, one_beat_note, pair_batches, pair_rows,
                                   patient_beats)
from lvr.train.pretraining import (LAST_PRETRAINING, PRETRAINED_CHECKPOINT, excluded_patients,
                                   pretrain)
from test_finetune import not_synthetic


def pretrain_config(data_dir, output_dir, **overrides):
    """pretrain.py's constants, shortened to 2 epochs of the small baseline network."""
    import pretrain as script
    config = {name: getattr(script, name) for name in dir(script) if name.isupper()}
    config.update(DATA_DIR=str(data_dir), OUTPUT_DIR=str(output_dir), EXPERIMENT="baseline",
                  EPOCHS=2, BATCH_SIZE=8, DEVICE="cpu")
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def people_cohort(tmp_path_factory):
    """40 patients with 1-3 beats, whose IDs name people (so overlaps are checked)."""
    return not_synthetic(write_small_cohort(tmp_path_factory.mktemp("people")))


@pytest.fixture(scope="module")
def pretrained(people_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrained") / "run"
    history = pretrain(pretrain_config(people_cohort, out), log=quiet)
    return out, history


# ---------------------------------------------------------------- pairs

def test_patients_and_their_beats():
    patients, lists = patient_beats(np.array(["b", "a", "b", "c", "b"]))
    assert patients.tolist() == ["a", "b", "c"]
    assert [x.tolist() for x in lists] == [[1], [0, 2, 4], [3]]


def test_a_pair_is_two_beats_of_one_patient_or_one_beat_twice():
    _, lists = patient_beats(np.array([0, 0, 1, 2, 2, 2]))
    rng = np.random.default_rng(0)
    for _ in range(20):
        first, second = pair_rows(lists, np.array([0, 1, 2]), rng)
        assert first[0] != second[0] and {first[0], second[0]} <= {0, 1}
        assert first[1] == second[1] == 2                      # patient 1 has one beat
        assert first[2] != second[2] and {first[2], second[2]} <= {3, 4, 5}


def test_with_pairs_of_beats_a_patient_of_one_beat_is_paired_by_lead_halves():
    x = torch.randn(3, 12, 40)
    data = SimpleNamespace(x=x, beat_lists=[np.array([0]), np.array([1, 2])])
    off = Augmentation(scale=(1.0, 1.0), wander=0.0, noise=0.0, shift=0, lead_mask=0.0)
    a, b = batch_views(data, np.array([0, 1]), "beats", off, np.random.default_rng(0),
                       torch.Generator().manual_seed(0))
    assert torch.equal(a[0] + b[0], x[0])                       # two halves of its one beat
    assert (a[0] == 0).all(1).sum() == 6 and (b[0] == 0).all(1).sum() == 6
    assert {tuple(a[1].flatten().tolist()), tuple(b[1].flatten().tolist())} == {
        tuple(x[1].flatten().tolist()), tuple(x[2].flatten().tolist())}   # two whole beats
    assert "paired by two complementary lead halves" in one_beat_note(1, 2, "beats")
    assert one_beat_note(0, 1, "beats") is None


def test_a_cohort_of_single_beats_pretrains_on_lead_halves_and_says_so(people_cohort,
                                                                       tmp_path):
    single = tmp_path / "single"
    shutil.copytree(people_cohort, single)
    for ids in single.glob("cut_*_patient_ids.npy"):          # every beat its own patient
        count = len(np.load(ids, allow_pickle=False))
        np.save(ids, np.array([f"{ids.name[4:8]}-{i}" for i in range(count)]))
    lines = []
    history = pretrain(pretrain_config(single, tmp_path / "out", EPOCHS=1, PAIRS="beats"),
                       log=lines.append)
    assert any(line.startswith("note: ") and "have one beat; PAIRS=beats needs two" in line
               for line in lines)
    assert np.isfinite(history["loss"]).all()


def test_batches_cover_each_patient_once_per_epoch():
    batches = pair_batches(21, 8, seed=1, epoch=3)
    assert [len(b) for b in batches] == [8, 8, 5]
    assert sorted(np.concatenate(batches).tolist()) == list(range(21))
    assert [len(b) for b in pair_batches(17, 8, 1, 3)] == [8, 8]       # 1 left: no negatives
    assert [len(b) for b in pair_batches(21, 8, 1, 3, full_only=True)] == [8, 8]
    assert not np.array_equal(pair_batches(21, 8, 1, 3)[0], pair_batches(21, 8, 1, 4)[0])


def test_lead_halves_are_disjoint_and_cover_the_leads():
    a, b = lead_halves(5, 12, torch.Generator().manual_seed(0))
    assert a.shape == (5, 12, 1)
    assert torch.equal(a + b, torch.ones(5, 12, 1))
    assert (a.sum(1) == 6).all()
    assert not torch.equal(a[0], a[1]) or not torch.equal(a[1], a[2])


# ---------------------------------------------------------------- augmentations

def test_each_augmentation_does_what_it_says():
    x = torch.randn(6, 12, 100)
    gen = lambda: torch.Generator().manual_seed(3)      # noqa: E731
    off = dict(scale=(1.0, 1.0), wander=0.0, noise=0.0, shift=0, lead_mask=0.0)
    assert torch.equal(augmented(x, Augmentation(**off), gen()), x)
    scaled = augmented(x, Augmentation(**{**off, "scale": (0.5, 2.0)}), gen())
    factor = scaled / x
    assert torch.allclose(factor, factor[..., :1].expand_as(factor), atol=1e-4)  # per lead
    assert factor.min() >= 0.5 - 1e-5 and factor.max() <= 2.0 + 1e-5
    noisy = augmented(x, Augmentation(**{**off, "noise": 0.2}), gen()) - x
    assert 0.17 < noisy.std().item() < 0.23
    wander = augmented(x, Augmentation(**{**off, "wander": 0.3, "fs": 100.0}), gen()) - x
    assert wander.abs().max() <= 0.3 + 1e-5 and wander.abs().max() > 0.01
    assert (wander[..., 1:] - wander[..., :-1]).abs().max() < 0.02   # a slow drift, not noise
    shifted = augmented(x, Augmentation(**{**off, "shift": 5}), gen())
    for beat in range(6):
        lag = next(k for k in range(-5, 6)
                   if torch.equal(shifted[beat, :, max(k, 0):100 + min(k, 0)],
                                  x[beat, :, max(-k, 0):100 - max(k, 0)]))
        edge = x[beat, :, 0] if lag > 0 else x[beat, :, -1]          # no wrap-around
        filled = shifted[beat, :, :lag] if lag > 0 else shifted[beat, :, 100 + lag:]
        assert torch.equal(filled, edge.unsqueeze(1).expand_as(filled))
    masked = augmented(x, Augmentation(**{**off, "lead_mask": 0.95}), gen())
    zero = (masked == 0).all(2)
    assert zero.sum() > 6 * 12 * 0.8 and (~zero).sum(1).min() >= 1   # one lead always stays


def test_a_lead_half_stays_exactly_zero_and_keeps_a_lead_of_its_own():
    x = torch.randn(200, 12, 60)
    half, other = lead_halves(200, 12, torch.Generator().manual_seed(1))
    strong = Augmentation(noise=0.3, wander=0.3, lead_mask=0.9)
    view = augmented(x, strong, torch.Generator().manual_seed(2), half)
    zero = (view == 0).all(2, keepdim=True)
    assert zero[half == 0].all()                      # the other half: no noise, no wander
    kept = (~zero) & (half == 1)
    assert kept.sum((1, 2)).min() >= 1                # at least one lead, from its own half
    assert (kept.sum((1, 2)) == 1).any()              # (lead masking removed the rest)


def test_augmentations_are_reproducible_from_the_generator():
    x = torch.randn(4, 12, 80)
    a = augmented(x, Augmentation(), torch.Generator().manual_seed(9))
    b = augmented(x, Augmentation(), torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    assert not torch.equal(a, augmented(x, Augmentation(), torch.Generator().manual_seed(10)))


# ---------------------------------------------------------------- the loss

def test_contrastive_loss_is_the_symmetric_infonce_written_out():
    torch.manual_seed(0)
    z_a, z_b = (F.normalize(torch.randn(5, 7), dim=1) for _ in range(2))
    loss, found = contrastive_loss(z_a, z_b, temperature=0.5)
    expected = 0.0
    for i in range(5):
        for mine, other in ((z_a, z_b), (z_b, z_a)):
            scores = [math.exp(float(mine[i] @ other[j]) / 0.5) for j in range(5)]
            expected -= math.log(scores[i] / sum(scores)) / 10
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    partner = ((z_a @ z_b.T).argmax(1) == torch.arange(5)).float().mean()
    partner_back = ((z_b @ z_a.T).argmax(1) == torch.arange(5)).float().mean()
    assert found.item() == pytest.approx(((partner + partner_back) / 2).item())


def test_identical_views_give_a_low_loss_and_unrelated_ones_log_n():
    z = F.normalize(torch.eye(16), dim=1)
    loss, found = contrastive_loss(z, z.clone(), temperature=0.05)
    assert loss.item() < 1e-6 and found.item() == 1.0
    same = F.normalize(torch.ones(16, 4), dim=1)          # every view alike: chance
    loss, _ = contrastive_loss(same, same.clone(), temperature=0.1)
    assert loss.item() == pytest.approx(math.log(16), rel=1e-5)


# ---------------------------------------------------------------- a run

def test_a_run_writes_a_checkpoint_init_from_reads(pretrained, people_cohort):
    out, history = pretrained
    assert sorted(os.listdir(out)) == ["last_pretraining.pth", "pretrained_model.pth",
                                       "pretraining_curves.png", "pretraining_history.json",
                                       "run.json"]
    assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
    source = read_source(str(out / PRETRAINED_CHECKPOINT))
    cohort = load_cohort(people_cohort)
    assert source.kind == "pretraining" and source.patients_comparable
    assert source.patients == sorted(set(cohort.patient_ids.astype(str)))
    assert source.geometry["beat_samples"] == cohort.beats.shape[2]
    block = source.checkpoint["pretraining"]
    assert block["objective"] == "patient_contrastive" and block["epochs"] == 2
    assert block["data_fingerprint"] == cohort.fingerprint()
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["PAIRS"] == "beats_and_leads" and run["patients"] == 40
    assert "torch" in run["versions"]


def test_pretraining_changes_the_encoder_it_starts_from(pretrained, people_cohort, tmp_path):
    out, _ = pretrained
    trained, _ = load_checkpoint(out / PRETRAINED_CHECKPOINT)
    pretrain(pretrain_config(people_cohort, tmp_path / "lr0", EPOCHS=1, LR=1e-12), log=quiet)
    start, _ = load_checkpoint(tmp_path / "lr0" / PRETRAINED_CHECKPOINT)
    encoder = [name for name, _ in trained.named_parameters() if not name.startswith(HEAD_PREFIX)]
    still = [name for name in encoder if torch.allclose(trained.state_dict()[name],
                                                        start.state_dict()[name])]
    assert len(encoder) > 10 and still == []
    head = [name for name, _ in trained.named_parameters() if name.startswith(HEAD_PREFIX)]
    assert all(torch.equal(trained.state_dict()[n], start.state_dict()[n]) for n in head)


def test_a_run_killed_in_mid_epoch_resumes_to_the_same_weights(people_cohort, tmp_path,
                                                               monkeypatch):
    straight = pretrain(pretrain_config(people_cohort, tmp_path / "a", EPOCHS=3), log=quiet)
    real_views, calls = pretraining.batch_views, []

    def killed_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:          # 40 patients in batches of 8: the 2nd batch of epoch 2
            raise KeyboardInterrupt
        return real_views(*args, **kwargs)

    monkeypatch.setattr(pretraining, "batch_views", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt, match="--resume=True"):
        pretrain(pretrain_config(people_cohort, tmp_path / "b", EPOCHS=3), log=quiet)
    monkeypatch.setattr(pretraining, "batch_views", real_views)
    assert not (tmp_path / "b" / PRETRAINED_CHECKPOINT).exists()
    lines = []
    resumed = pretrain(pretrain_config(people_cohort, tmp_path / "b", EPOCHS=3, RESUME=True),
                       log=lines.append)
    assert any("Resuming" in line and "after epoch 1" in line for line in lines)
    assert resumed["loss"] == straight["loss"]
    a, _ = load_checkpoint(tmp_path / "a" / PRETRAINED_CHECKPOINT)
    b, _ = load_checkpoint(tmp_path / "b" / PRETRAINED_CHECKPOINT)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_resuming_a_finished_run_is_refused_unless_it_trains_longer(people_cohort, tmp_path):
    pretrain(pretrain_config(people_cohort, tmp_path / "done", EPOCHS=1), log=quiet)
    finished = (tmp_path / "done" / PRETRAINED_CHECKPOINT).read_bytes()
    with pytest.raises(UserError, match="holds a finished run of 1 epochs .* nothing to resume"):
        pretrain(pretrain_config(people_cohort, tmp_path / "done", EPOCHS=1, RESUME=True),
                 log=quiet)
    assert (tmp_path / "done" / PRETRAINED_CHECKPOINT).read_bytes() == finished
    longer = pretrain(pretrain_config(people_cohort, tmp_path / "done", EPOCHS=2, RESUME=True),
                      log=quiet)
    assert len(longer["loss"]) == 2


def test_fine_tuning_from_the_last_epoch_checkpoint_points_to_the_finished_one(pretrained):
    out, _ = pretrained
    with pytest.raises(UserError, match="fine-tune from the pretrained_model.pth a finished run"):
        read_source(str(out / LAST_PRETRAINING))


def test_resume_refuses_changed_options(people_cohort, tmp_path):
    pretrain(pretrain_config(people_cohort, tmp_path / "r", EPOCHS=1), log=quiet)
    with pytest.raises(UserError, match=r"cannot resume .*TEMPERATURE \(was 0.1, now 0.2\)"):
        pretrain(pretrain_config(people_cohort, tmp_path / "r", EPOCHS=2, RESUME=True,
                                 TEMPERATURE=0.2), log=quiet)


def test_an_earlier_run_is_kept_not_overwritten(people_cohort, tmp_path):
    pretrain(pretrain_config(people_cohort, tmp_path / "k", EPOCHS=1), log=quiet)
    first = (tmp_path / "k" / PRETRAINED_CHECKPOINT).read_bytes()
    lines = []
    pretrain(pretrain_config(people_cohort, tmp_path / "k", EPOCHS=1, SEED=1), log=lines.append)
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("k.")]
    assert len(kept) == 1 and (kept[0] / PRETRAINED_CHECKPOINT).read_bytes() == first
    assert any("was kept as" in line for line in lines)


# ---------------------------------------------------------------- patients left out

def test_excluded_patients_are_left_out_and_recorded(people_cohort, tmp_path):
    cohort = load_cohort(people_cohort)
    ids = sorted(set(cohort.patient_ids.astype(str)))
    listed = tmp_path / "test_patients.txt"
    listed.write_text("\n".join(ids[:5] + ["nobody"]) + "\n")
    lines = []
    pretrain(pretrain_config(people_cohort, tmp_path / "ex", EPOCHS=1,
                             EXCLUDE_PATIENTS=str(listed)), log=lines.append)
    source = read_source(str(tmp_path / "ex" / PRETRAINED_CHECKPOINT))
    assert source.patients == ids[5:]
    left_out = int(np.isin(cohort.patient_ids.astype(str), ids[:5]).sum())
    assert source.checkpoint["pretraining"]["excluded"]["beats_left_out"] == left_out
    assert any(f"left out 5 patients ({left_out} beats)" in line
               and "1 listed IDs are not in" in line for line in lines)


def test_exclusion_lists_are_read_from_split_json_or_text(tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [1, 2], "test": [3, "x4"]}))
    assert excluded_patients(str(split)) == {"3", "x4"}
    text = tmp_path / "ids.txt"
    text.write_text("a\n\n b \n")
    assert excluded_patients(str(text)) == {"a", "b"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": [1]}))
    with pytest.raises(UserError, match="split.json with a 'test' list"):
        excluded_patients(str(bad))
    with pytest.raises(UserError, match="file not found"):
        excluded_patients(str(tmp_path / "none.txt"))


def test_a_cohort_of_one_patient_is_refused(people_cohort, tmp_path):
    cohort = load_cohort(people_cohort)
    ids = sorted(set(cohort.patient_ids.astype(str)))
    listed = tmp_path / "all_but_one.txt"
    listed.write_text("\n".join(ids[1:]))
    with pytest.raises(UserError, match="leaves 1 patient for pretraining; a contrastive"):
        pretrain(pretrain_config(people_cohort, tmp_path / "one", EXCLUDE_PATIENTS=str(listed)),
                 log=quiet)
    assert not (tmp_path / "one").exists()     # refused before the output folder is made


# ---------------------------------------------------------------- fine-tuning from it

def test_fine_tuning_starts_from_the_pretrained_encoder(pretrained, people_cohort, tmp_path):
    out, _ = pretrained
    path = str(out / PRETRAINED_CHECKPOINT)
    stored, _ = load_checkpoint(path)
    seen = {}
    config = tiny_config(people_cohort, tmp_path / "ft", INIT_FROM=path, EPOCHS=1,
                         BOOTSTRAP=0, REPORT=False, ALLOW_PRETRAINING_OVERLAP=True)
    original = engine.fit

    def spy(*args, **kwargs):
        seen["source"] = kwargs["init_from"]
        return original(*args, **kwargs)
    engine.fit = spy
    try:
        lines = []
        engine.run_training(config, log=lines.append)
    finally:
        engine.fit = original
    assert any("INIT_FROM: pretraining checkpoint" in line and "new head" in line
               for line in lines)
    from lvr.train.finetune import initial_model
    model, record = initial_model(seen["source"], ["a", "b"], 12, stored.config["input_length"],
                                  experiment=config["EXPERIMENT"], dropout=config["DROPOUT"],
                                  log=quiet)
    for key, value in stored.state_dict().items():
        if not key.startswith(HEAD_PREFIX):
            assert torch.equal(model.state_dict()[key], value), key
    run = json.loads((tmp_path / "ft" / "run.json").read_text())
    assert run["init_from"]["kind"] == "pretraining"
    assert run["init_from"]["test_patients_seen"] == len(
        json.loads((tmp_path / "ft" / "split.json").read_text())["test"])


def test_pretraining_on_the_test_patients_is_refused_unless_allowed(pretrained, people_cohort,
                                                                     tmp_path):
    out, _ = pretrained
    config = tiny_config(people_cohort, tmp_path / "guard", EPOCHS=1, BOOTSTRAP=0, REPORT=False,
                         INIT_FROM=str(out / PRETRAINED_CHECKPOINT))
    with pytest.raises(UserError, match=r"test patients .* are among the patients INIT_FROM=.* "
                                        r"was pretrained on.*--allow_pretraining_overlap=True"):
        engine.run_training(config, log=quiet)


def test_pretraining_without_the_test_patients_fine_tunes_cleanly(people_cohort, tmp_path):
    first = tiny_config(people_cohort, tmp_path / "split_only", EPOCHS=1, BOOTSTRAP=0,
                        REPORT=False)
    engine.run_training(first, log=quiet)
    split = tmp_path / "split_only" / "split.json"
    pretrain(pretrain_config(people_cohort, tmp_path / "pre", EPOCHS=1,
                             EXCLUDE_PATIENTS=str(split)), log=quiet)
    config = dict(first, OUTPUT_DIR=str(tmp_path / "ft"),
                  INIT_FROM=str(tmp_path / "pre" / PRETRAINED_CHECKPOINT))
    engine.run_training(config, log=quiet)
    run = json.loads((tmp_path / "ft" / "run.json").read_text())
    assert run["init_from"]["test_patients_seen"] == 0


# ---------------------------------------------------------------- the script

def test_the_script_names_bad_options_before_torch_work(tmp_path):
    result = script_result("pretrain.py", "--pairs=segments")
    assert result.returncode == 2 and "--pairs" in result.stderr and "beats_and_leads" in \
        result.stderr
    result = script_result("pretrain.py", "--batch_size=1")
    assert result.returncode == 2 and "an integer >= 2" in result.stderr
    result = script_result("pretrain.py", f"--exclude_patients={tmp_path / 'none.txt'}",
                           f"--output_dir={tmp_path / 'out'}")
    assert result.returncode != 0 and "file not found" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_torchrun_gathers_the_negatives_of_both_processes(people_cohort, tmp_path):
    """With a learning rate too small to move the weights, the first epoch's loss is that of an
    untrained network: about log(BATCH_SIZE) when each view competes with the whole batch. Two
    processes that did not gather each other's views would score log(BATCH_SIZE / 2), 0.69
    lower."""
    common = [f"--data_dir={people_cohort}", "--experiment=baseline", "--epochs=1",
              "--batch_size=16", "--lr=1e-12", "--device=cpu"]
    single = subprocess.run([sys.executable, "pretrain.py", f"--output_dir={tmp_path / 'one'}",
                             *common], cwd=ROOT, capture_output=True, text=True,
                            timeout=HANG_LIMIT_S)
    assert single.returncode == 0, single.stderr
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    double = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "pretrain.py",
                             f"--output_dir={tmp_path / 'two'}", *common], cwd=ROOT,
                            capture_output=True, text=True, timeout=HANG_LIMIT_S)
    assert double.returncode == 0, double.stderr
    assert "2 processes" in double.stdout and double.stdout.count("Pretrained in") == 1
    loss = [json.loads((tmp_path / run / "pretraining_history.json").read_text())["loss"][0]
            for run in ("one", "two")]
    assert abs(loss[0] - loss[1]) < 0.25, loss
    assert loss[1] > math.log(16) - 0.4, loss
    source = read_source(str(tmp_path / "two" / PRETRAINED_CHECKPOINT))
    assert source.checkpoint["pretraining"]["processes"] == 2
    assert (tmp_path / "two" / LAST_PRETRAINING).exists()


GRADIENT_CHECK = """
import sys, torch, torch.distributed as dist, torch.nn.functional as F
sys.path.insert(0, sys.argv[1])
from lvr.train.contrastive import contrastive_loss
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
z_a, z_b = F.normalize(torch.randn(8, 5), dim=1), F.normalize(torch.randn(8, 5), dim=1)
half = slice(4 * rank, 4 * rank + 4)
a, b = z_a[half].clone().requires_grad_(), z_b[half].clone().requires_grad_()
loss, _ = contrastive_loss(a, b, 0.2, world)
loss.backward()
whole_a, whole_b = z_a.clone().requires_grad_(), z_b.clone().requires_grad_()
whole, _ = contrastive_loss(whole_a, whole_b, 0.2)
whole.backward()
losses = [torch.zeros(()) for _ in range(world)]
dist.all_gather(losses, loss.detach())
assert abs(sum(losses) / world - whole.item()) < 1e-5, (losses, whole)
# DDP averages the ranks' gradients: (1 / world) x what reached each rank's rows
assert torch.allclose(a.grad / world, whole_a.grad[half], atol=1e-6)
assert torch.allclose(b.grad / world, whole_b.grad[half], atol=1e-6)
print("same gradient", rank)
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_processes_take_the_gradient_of_one_batch_of_all_patients(tmp_path):
    """The gathered negatives pass their gradient back to the process that made them: the
    mean of the two processes' losses is the one-process loss of the whole batch, and each
    row's gradient after DDP's averaging is the one-process gradient."""
    script = tmp_path / "gradient_check.py"
    script.write_text(GRADIENT_CHECK)
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(script), ROOT],
                          capture_output=True, text=True, timeout=HANG_LIMIT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("same gradient") == 2
