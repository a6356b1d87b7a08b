"""Fine-tuning from a checkpoint (INIT_FROM, FREEZE_EPOCHS, ENCODER_LR_FACTOR): the encoder is
loaded exactly, the head only for the same classes, a frozen encoder stays bit-identical, a
checkpoint that does not fit the run is refused with a message that says which option to pass,
and the patients a checkpoint saw are not tested on unless that is a stated choice."""
import json
import os
import shutil

import pytest
import torch

from helpers import quiet, tiny_config, write_small_cohort
from lvr.train import loop as training
from lvr.train import run as engine
from lvr.train.checkpoints import load_checkpoint, save_checkpoint
from lvr.data.beat_files import file_sha256
from lvr.data.beats import StandardisedBeats
from lvr.data.cohort import load_cohort
from lvr.config import UserError
from lvr.train.finetune import (HEAD_PREFIX, check_source, checked_test_overlap, initial_model,
                          optimizer_groups, read_source)
from lvr.data.geometry import cohort_geometry
from lvr.train.loop import build_optimizer
from lvr.train.loop import Recipe
from model import build_model


def not_synthetic(folder):
    """The cohort as a user's: its patient IDs name people (the demo's are counters)."""
    path = os.path.join(folder, "cohort.json")
    with open(path, encoding="utf-8") as handle:
        spec = json.load(handle)
    spec.pop("source")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(spec, handle)
    return folder


@pytest.fixture(scope="module")
def real_cohort(tmp_path_factory):
    """The small cohort with patient IDs that count as people (overlap is checked)."""
    return not_synthetic(write_small_cohort(tmp_path_factory.mktemp("real_cohort")))


@pytest.fixture(scope="module")
def source_run(real_cohort, tmp_path_factory):
    """A finished 1-epoch supervised 2-class run: the checkpoint the tests start from."""
    out = tmp_path_factory.mktemp("source") / "run"
    engine.run_training(tiny_config(real_cohort, out, EPOCHS=1, BOOTSTRAP=0, REPORT=False),
                        log=quiet)
    return out


def network_options(config):
    """The network a run of `config` trains: initial_model's named arguments."""
    return {"experiment": config["EXPERIMENT"], "dropout": config["DROPOUT"]}


def encoder_of(state_dict):
    return {key: value for key, value in state_dict.items() if not key.startswith(HEAD_PREFIX)}


def head_of(state_dict):
    return {key: value for key, value in state_dict.items() if key.startswith(HEAD_PREFIX)}


def assert_same_tensors(a, b):
    assert a.keys() == b.keys() and a
    different = [key for key in a if not torch.equal(a[key], b[key])]
    assert different == []


def some_beats(cohort_dir, n=8):
    cohort = load_cohort(str(cohort_dir))
    return StandardisedBeats(cohort.beats, normalisation="per_lead")[:n]


def pretraining_checkpoint(path, cohort_dir, **changes):
    """A checkpoint as pretrain.py writes it: a network of model.build_model with an untrained
    head and the "pretraining" extra."""
    cohort = load_cohort(str(cohort_dir))
    torch.manual_seed(3)
    model = build_model(num_classes=2, experiment="baseline", in_channels=12,
                        input_length=cohort.beats.shape[2])
    block = {"objective": "patient_contrastive", "epochs": 4,
             "data_fingerprint": cohort.fingerprint(), "data_dir": str(cohort_dir),
             "patients": sorted({str(p) for p in cohort.patient_ids}),
             "cohort": cohort_geometry(cohort), **changes}
    save_checkpoint(path, model, normalisation="per_lead", epoch=4, pretraining=block)
    return path


# ---------------------------------------------------------------- what is loaded

def test_init_from_loads_exactly_the_stored_encoder(source_run, real_cohort):
    path = source_run / "best_model.pth"
    stored, _ = load_checkpoint(path)
    config = tiny_config(real_cohort, "unused", INIT_FROM=str(path))
    lines = []
    model, record = initial_model(str(path), ["class_0", "class_1", "class_2", "class_3"], 12,
                                  300, **network_options(config), log=lines.append)
    x = some_beats(real_cohort)
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model.features(x), stored.features(x))
    assert_same_tensors(encoder_of(model.state_dict()), encoder_of(stored.state_dict()))
    assert record["head"] == "new" and record["kind"] == "supervised"
    assert lines == [f"INIT_FROM: supervised checkpoint {path}: encoder loaded; new head (the "
                     f"checkpoint has 2 classes, this run 4)"]


def test_the_head_is_loaded_for_the_same_classes_only(source_run, real_cohort):
    path = str(source_run / "best_model.pth")
    stored, checkpoint = load_checkpoint(path)
    config = tiny_config(real_cohort, "unused", INIT_FROM=path)
    same, record = initial_model(path, checkpoint["class_names"], 12, 300,
                                 **network_options(config), log=quiet)
    assert record["head"] == "loaded"
    assert_same_tensors(same.state_dict(), stored.state_dict())
    lines = []
    renamed, record = initial_model(path, ["no LVR", "LVR"], 12, 300, **network_options(config),
                                    log=lines.append)
    assert record["head"] == "new" and "this run's ['no LVR', 'LVR']" in lines[0]
    assert not torch.equal(renamed.head.weight, stored.head.weight)


def test_a_pretraining_checkpoint_gives_its_encoder_and_a_new_head(real_cohort, tmp_path):
    path = pretraining_checkpoint(tmp_path / "pretrained.pth", real_cohort)
    stored, _ = load_checkpoint(path)
    config = tiny_config(real_cohort, "unused", INIT_FROM=str(path))
    lines = []
    model, record = initial_model(str(path), ["class_0", "class_1"], 12, 300,
                                  **network_options(config), log=lines.append)
    assert_same_tensors(encoder_of(model.state_dict()), encoder_of(stored.state_dict()))
    assert not torch.equal(model.head.weight, stored.head.weight)
    assert record["kind"] == "pretraining" and record["head"] == "new" and record["epoch"] == 4
    assert "a pretraining checkpoint's head was never trained" in lines[0]


# ---------------------------------------------------------------- training from it

def test_freeze_epochs_leaves_the_encoder_bit_identical(source_run, real_cohort, tmp_path):
    path = source_run / "best_model.pth"
    stored, _ = load_checkpoint(path)
    config = tiny_config(real_cohort, tmp_path, INIT_FROM=str(path), EPOCHS=2, FREEZE_EPOCHS=2,
                         LR=1e-2)
    cohort = load_cohort(str(real_cohort))
    beats = StandardisedBeats(cohort.beats, normalisation="per_lead")
    labels = torch.from_numpy(cohort.labels("binary"))
    data = (beats.rows(list(range(len(labels)))), labels)
    source = read_source(str(path))
    training.fit(Recipe.from_options(config), data, data, ["class_0", "class_1"], str(tmp_path),
                 False, in_channels=12, input_length=300, device=torch.device("cpu"),
                 task=config["TASK"], normalisation=config["NORMALISATION"], run_config=config,
                 log=quiet, init_from=source)
    _, last = load_checkpoint(tmp_path / "last_checkpoint.pth")
    assert last["epoch"] == 2
    assert_same_tensors(encoder_of(last["state_dict"]), encoder_of(stored.state_dict()))
    assert any("running_mean" in key for key in encoder_of(last["state_dict"]))
    head, before = head_of(last["state_dict"]), head_of(stored.state_dict())
    assert all(not torch.equal(head[key], before[key]) for key in head)


def test_encoder_lr_factor_sets_the_groups_learning_rates():
    model = build_model(num_classes=2, experiment="baseline", input_length=300)
    optimizer = build_optimizer(optimizer_groups(model, 1e-3, 0.1), 1e-3, 0.0)
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert groups["encoder"]["lr"] == pytest.approx(1e-4) and groups["head"]["lr"] == 1e-3
    assert [id(p) for p in groups["head"]["params"]] == [id(p) for p in model.head.parameters()]
    assert len(groups["encoder"]["params"]) + len(groups["head"]["params"]) == \
        len(list(model.parameters()))
    assert len(build_optimizer(optimizer_groups(model, 1e-3), 1e-3, 0.0).param_groups) == 1


@pytest.fixture(scope="module")
def fine_tuned(source_run, real_cohort, tmp_path_factory):
    """A 2-epoch fine-tuning run from the source: head alone in epoch 1, encoder lr x 0.1."""
    out = tmp_path_factory.mktemp("fine_tuned") / "run"
    config = tiny_config(real_cohort, out, INIT_FROM=str(source_run / "best_model.pth"),
                         EPOCHS=2, FREEZE_EPOCHS=1, ENCODER_LR_FACTOR=0.1, BOOTSTRAP=0,
                         REPORT=False)
    lines = []
    report = engine.run_training(config, log=lines.append)
    return out, config, report, lines


def test_a_fine_tuning_run_records_the_checkpoint_it_started_from(fine_tuned, source_run):
    out, _, _, lines = fine_tuned
    with open(out / "run.json", encoding="utf-8") as handle:
        record = json.load(handle)["init_from"]
    with open(source_run / "split.json", encoding="utf-8") as handle:
        source_split = json.load(handle)
    path = str(source_run / "best_model.pth")
    assert record == {"path": path, "sha256": file_sha256(path), "kind": "supervised",
                      "head": "loaded", "data_fingerprint": source_split["data_fingerprint"],
                      "epoch": 1, "test_patients_seen": 0}
    assert any(line.startswith("INIT_FROM: supervised checkpoint") for line in lines)
    assert "head only" in next(line for line in lines if line.startswith("epoch   1/2"))


def test_the_encoder_trains_once_the_freeze_ends_at_its_own_rate(fine_tuned, source_run):
    out = fine_tuned[0]
    stored, _ = load_checkpoint(source_run / "best_model.pth")
    _, last = load_checkpoint(out / "last_checkpoint.pth")
    moved = [key for key, value in encoder_of(stored.state_dict()).items()
             if not torch.equal(value, last["state_dict"][key])]
    assert moved
    lrs = {group["name"]: group["lr"] for group in last["optimizer"]["param_groups"]}
    assert lrs == {"encoder": pytest.approx(1e-4), "head": 1e-3}


def test_a_fine_tuning_run_resumes_without_its_initial_checkpoint(fine_tuned, source_run,
                                                                  tmp_path, monkeypatch):
    _, config, full_report, _ = fine_tuned
    shutil.copytree(source_run, tmp_path / "init")
    kept = tmp_path / "init" / "best_model.pth"
    out = tmp_path / "interrupted"
    config = dict(config, OUTPUT_DIR=str(out), INIT_FROM=str(kept))
    real_epoch = training.train_one_epoch

    def interrupted(*args, **kwargs):
        if kwargs.get("frozen_encoder") is False:       # epoch 2, after the frozen epoch 1
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        engine.run_training(config, log=quiet)
    monkeypatch.setattr(training, "train_one_epoch", real_epoch)
    with pytest.raises(UserError, match="FREEZE_EPOCHS"):
        engine.run_training(dict(config, RESUME=True, FREEZE_EPOCHS=0), log=quiet)
    shutil.rmtree(tmp_path / "init")                    # read only at the start
    resumed = engine.run_training(dict(config, RESUME=True), log=quiet)
    assert resumed["accuracy"] == full_report["accuracy"]
    assert resumed["roc_auc"] == full_report["roc_auc"]
    with open(out / "run.json", encoding="utf-8") as handle:
        assert json.load(handle)["init_from"]["path"] == str(kept)


# ---------------------------------------------------------------- checkpoints that do not fit

def refusal(config, source_path, cohort_dir):
    with pytest.raises(UserError) as caught:
        check_source(read_source(str(source_path)), load_cohort(str(cohort_dir)),
                     experiment=config["EXPERIMENT"], normalisation=config["NORMALISATION"])
    return str(caught.value)


def test_another_architecture_is_refused_naming_both(source_run, real_cohort):
    path = source_run / "best_model.pth"
    message = refusal(tiny_config(real_cohort, "unused", EXPERIMENT="ms"), path, real_cohort)
    assert message == (f"INIT_FROM={path} is a baseline network; EXPERIMENT is ms: pass "
                       f"--experiment=baseline or another checkpoint")


def test_another_normalisation_is_refused_naming_the_option(source_run, real_cohort):
    path = source_run / "best_model.pth"
    message = refusal(tiny_config(real_cohort, "unused", NORMALISATION="per_beat"), path,
                      real_cohort)
    assert message == (f"INIT_FROM={path} was trained on beats normalised per_lead; "
                       f"NORMALISATION is per_beat: pass --normalisation=per_lead or another "
                       f"checkpoint")


@pytest.mark.parametrize("changes, expected", [
    ({"window_s": 0.8}, "its beats are 400 samples long but the model's window is 300 samples"),
    ({"fs": 250, "window_s": 1.2}, "its sampling rate is 250 Hz but the model was trained at "
                                   "500 Hz (resample: prepare_data.py --fs=500)")])
def test_another_window_or_sampling_rate_is_refused(source_run, tmp_path, changes, expected):
    other = write_small_cohort(tmp_path / "other", **changes)
    config = tiny_config(other, tmp_path / "out", INIT_FROM=str(source_run / "best_model.pth"))
    message = refusal(config, source_run / "best_model.pth", other)
    assert message.startswith(f"{other} cannot fine-tune INIT_FROM=") and expected in message
    assert "prepare_data.py --fs, --pre, --post" in message
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run.json").write_text("{}")
    with pytest.raises(UserError, match=expected.split(" (")[0]):
        engine.run_training(config, log=quiet)
    assert sorted(os.listdir(tmp_path)) == ["other", "out"]   # nothing moved aside


def test_a_checkpoint_without_its_cohorts_geometry_is_refused(real_cohort, tmp_path):
    path = pretraining_checkpoint(tmp_path / "pretrained.pth", real_cohort, cohort=None)
    message = refusal(tiny_config(real_cohort, "unused"), path, real_cohort)
    assert "the leads, sampling rate and window of its training cohort are unknown (its " \
           "'pretraining' block has no 'cohort')" in message
    lone = tmp_path / "lone.pth"
    shutil.copy(pretraining_checkpoint(tmp_path / "p2.pth", real_cohort), lone)
    stored = torch.load(lone, weights_only=True)
    del stored["pretraining"]                            # a supervised file away from its run
    torch.save(stored, lone)
    assert "no split.json of its run lies beside it" in refusal(tiny_config(real_cohort, "x"),
                                                                lone, real_cohort)


# ---------------------------------------------------------------- patients the checkpoint saw

def test_test_patients_the_checkpoint_was_trained_on_are_refused(source_run, real_cohort,
                                                                 tmp_path):
    config = tiny_config(real_cohort, tmp_path / "run", SEED=7,
                         INIT_FROM=str(source_run / "best_model.pth"))
    with pytest.raises(UserError) as caught:
        engine.run_training(config, log=quiet)
    message = str(caught.value)
    assert "of this run's" in message and "test patients (e.g. " in message
    assert "--allow_pretraining_overlap=True" in message
    assert not (tmp_path / "run" / "best_model.pth").exists()


def test_allowing_the_overlap_warns_and_counts_it(real_cohort, tmp_path):
    path = pretraining_checkpoint(tmp_path / "pretrained.pth", real_cohort)
    cohort = load_cohort(str(real_cohort))
    source = read_source(str(path))
    test_ids = cohort.patient_ids[:10]
    n_test = len(set(test_ids.tolist()))
    with pytest.raises(UserError, match=f"{n_test} of this run's {n_test} test patients"):
        checked_test_overlap(source, cohort, test_ids, allow_pretraining_overlap=False)
    lines = []
    allowed = checked_test_overlap(source, cohort, test_ids, allow_pretraining_overlap=True,
                                   log=lines.append)
    assert allowed.test_patients_seen == n_test
    assert lines[0].startswith(f"warning: {n_test} of this run's") and \
        "--allow_pretraining_overlap=True" in lines[0]
    demo = load_cohort(write_small_cohort(tmp_path / "demo"))     # counters, not people
    assert checked_test_overlap(source, demo, demo.patient_ids).test_patients_seen is None


def test_a_checkpoint_of_the_same_name_but_another_architecture_is_refused_naming_it(
        source_run, real_cohort):
    source = read_source(str(source_run / "best_model.pth"))
    changed = dict(source.model.config["architecture"], pooling="max")
    source.model.config = dict(source.model.config, architecture=changed)
    config = tiny_config(real_cohort, "unused")
    with pytest.raises(UserError) as refused:
        initial_model(source, ["no LVR", "LVR"], 12, 300, **network_options(config), log=quiet)
    assert "another architecture than this code builds for EXPERIMENT=baseline: pooling 'max' " \
           "there, 'avg' here" in str(refused.value)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_broken_split_json_beside_the_checkpoint_is_named(source_run, tmp_path, text):
    folder = tmp_path / "run"
    shutil.copytree(source_run, folder)
    (folder / "split.json").write_text(text)
    with pytest.raises(UserError, match=f"{folder / 'split.json'} (cannot be read|holds a list)"):
        read_source(str(folder / "best_model.pth"))


def test_an_overlap_that_cannot_be_checked_is_said(real_cohort, tmp_path):
    source = read_source(str(pretraining_checkpoint(tmp_path / "pretrained.pth", real_cohort)))
    demo = load_cohort(write_small_cohort(tmp_path / "demo"))
    lines = []
    assert checked_test_overlap(source, demo, demo.patient_ids,
                                log=lines.append).test_patients_seen is None
    assert lines == ["note: whether INIT_FROM saw this run's test patients is not checked: this "
                     "cohort is the synthetic demo, whose patient IDs are counters; run.json "
                     "records init_from.test_patients_seen as null"]
