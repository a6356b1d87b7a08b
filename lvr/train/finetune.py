"""Fine-tuning from a checkpoint (INIT_FROM): the network a training run starts from.

A run starts from random weights, or from any checkpoint of this project: a supervised run's
best_model.pth (another task, e.g. PTB-XL superclasses) or a pretraining checkpoint of
pretrain.py (its extra "pretraining" block; its head was never trained). The encoder (every
state-dict entry outside ``head.``) is loaded exactly; the head too when the classes match.

Before any training the checkpoint is checked against the run: the same architecture, the
same NORMALISATION, and the cohort's leads, sampling rate and window those of the checkpoint's
training cohort (lvr.data.geometry, the external evaluation's check). Its training patients must not
be this run's test patients unless ALLOW_PRETRAINING_OVERLAP says the transductive use is
meant. FREEZE_EPOCHS and ENCODER_LR_FACTOR act in lvr.train.loop through the helpers at the end.
"""
import dataclasses
import json
import os

import numpy as np
import torch.nn as nn

from lvr.data.beat_files import file_sha256
from lvr.data.geometry import cohort_geometry, geometry_problems, training_geometry
from lvr.errors import UserError
from lvr.train.checkpoints import checkpoint_normalisation, load_checkpoint
from model import ArchitectureError, build_model

HEAD_PREFIX = "head."
PRETRAINING_KEY = "pretraining"     # the extra of a pretraining checkpoint (pretrain.py)


@dataclasses.dataclass
class Source:
    """An INIT_FROM checkpoint, read once at the start of a run, and what it was trained on."""
    path: str
    model: nn.Module                # the checkpoint's network (eval mode, CPU)
    checkpoint: dict                # the loaded checkpoint dict
    kind: str                       # "supervised" or "pretraining"
    geometry: dict | None           # leads, sampling rate, window of its training cohort
    patients: list | None           # its training (and validation) patients, as text
    patients_comparable: bool       # False: IDs are counters (demo) or beat numbers
    data_fingerprint: str | None
    sha256: str
    test_patients_seen: int | None = None   # set per split by checked_test_overlap


def read_source(path):
    """The checkpoint at `path` with the provenance a fine-tuning run needs, or a UserError.

    A supervised checkpoint takes its cohort's geometry and patients from split.json beside it
    (train and val: the patients its weights saw); a pretraining checkpoint from its
    "pretraining" extra ("cohort", "patients")."""
    model, checkpoint = load_checkpoint(path, map_location="cpu")
    pretraining = checkpoint.get(PRETRAINING_KEY)
    if pretraining is None and "projection_state_dict" in checkpoint:
        raise UserError(f"INIT_FROM={path} is pretrain.py's checkpoint of the last epoch done "
                        f"(last_pretraining.pth), which lacks the run's provenance; fine-tune "
                        f"from the pretrained_model.pth a finished run writes beside it (an "
                        f"unfinished run: run pretrain.py again with --resume=True)")
    if isinstance(pretraining, dict):
        patients = pretraining.get("patients")
        return Source(
            path=str(path), model=model, checkpoint=checkpoint, kind="pretraining",
            geometry=pretraining.get("cohort"),
            patients=None if patients is None else [str(p) for p in patients],
            patients_comparable=bool(pretraining.get("patient_ids_given", True))
            and not pretraining.get("demo_data", False),
            data_fingerprint=pretraining.get("data_fingerprint"), sha256=file_sha256(path))
    folder = os.path.dirname(os.path.abspath(path))
    split = read_json(os.path.join(folder, "split.json"))
    run = read_json(os.path.join(folder, "run.json")) or {}
    if split is None or "train" not in split:
        return Source(path=str(path), model=model, checkpoint=checkpoint, kind="supervised",
                      geometry=None, patients=None, patients_comparable=False,
                      data_fingerprint=None, sha256=file_sha256(path))
    return Source(
        path=str(path), model=model, checkpoint=checkpoint, kind="supervised",
        geometry=training_geometry(split, model),
        patients=sorted({str(p) for part in ("train", "val") for p in split.get(part, [])}),
        patients_comparable=split.get("patient_ids_given") is not False
        and not run.get("demo_data", False),
        data_fingerprint=split.get("data_fingerprint"), sha256=file_sha256(path))


def read_json(path):
    """The JSON object in `path` (a run's split.json or run.json), None where there is none."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} cannot be read ({error}); INIT_FROM reads the run files beside "
                        f"its checkpoint: restore the file the run wrote, or move the checkpoint "
                        f"out of this folder") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} holds a {type(value).__name__}, not the JSON object a run "
                        f"writes; restore the file, or move the checkpoint out of this folder")
    return value


def check_source(source, cohort, *, experiment, normalisation):
    """A UserError unless `source` fits this run, which trains `experiment` on the beats of
    `cohort` normalised `normalisation`: architecture, normalisation, geometry."""
    name = f"INIT_FROM={source.path}"
    stored = source.model.config
    if stored["experiment"] != experiment:
        raise UserError(f"{name} is a {stored['experiment']} network; EXPERIMENT is "
                        f"{experiment}: pass --experiment={stored['experiment']} or "
                        f"another checkpoint")
    trained_on = checkpoint_normalisation(source.checkpoint, source.path)
    if trained_on != normalisation:
        raise UserError(f"{name} was trained on beats normalised {trained_on}; NORMALISATION "
                        f"is {normalisation}: pass --normalisation={trained_on} or "
                        f"another checkpoint")
    if source.geometry is None:
        where = ("its 'pretraining' block has no 'cohort'" if source.kind == "pretraining"
                 else "no split.json of its run lies beside it")
        raise UserError(f"{name}: the leads, sampling rate and window of its training cohort "
                        f"are unknown ({where}), so they cannot be checked against "
                        f"{cohort.data_dir}; keep the checkpoint in its run folder, or pretrain "
                        f"it again with this code")
    problems = geometry_problems(source.geometry, cohort_geometry(cohort))
    if problems:
        raise UserError(f"{cohort.data_dir} cannot fine-tune {name}: " + "; ".join(problems)
                        + ". Prepare the cohort as the checkpoint's training data was prepared "
                        "(prepare_data.py --fs, --pre, --post) or start from another checkpoint")


def checked_test_overlap(source, cohort, test_patient_ids, *, allow_pretraining_overlap=False,
                         log=print):
    """`source` with test_patients_seen: how many of this split's test patients its weights
    were trained on (None: not comparable). Any is refused unless `allow_pretraining_overlap`
    (ALLOW_PRETRAINING_OVERLAP).

    IDs are compared as text, as lvr.evaluate.external.shared_patients does, and only where both
    cohorts name people: the demo's IDs are counters, and without patient-ID files a beat is a
    patient."""
    unchecked = ("this cohort is the synthetic demo, whose patient IDs are counters"
                 if cohort.is_demo else
                 "this cohort has no patient-ID files" if not cohort.patient_ids_given else
                 f"the patients of INIT_FROM={source.path} are not known as people (demo data, "
                 f"or no patient IDs)" if not source.patients_comparable or source.patients is None
                 else None)
    if unchecked:
        log(f"note: whether INIT_FROM saw this run's test patients is not checked: {unchecked}; "
            f"run.json records init_from.test_patients_seen as null")
        return dataclasses.replace(source, test_patients_seen=None)
    shared = sorted(set(source.patients) & set(np.unique(np.asarray(test_patient_ids)
                                                         .astype(str)).tolist()))
    if shared:
        shown = ", ".join(shared[:5]) + (", ..." if len(shared) > 5 else "")
        what = (f"{len(shared)} of this run's {len(np.unique(test_patient_ids))} test patients "
                f"(e.g. {shown}) are among the patients INIT_FROM={source.path} was "
                f"{'pretrained' if source.kind == 'pretraining' else 'trained'} on")
        if not allow_pretraining_overlap:
            raise UserError(f"{what}, so the test would score patients the encoder has seen; "
                            f"pretrain without this run's test patients, or, if the "
                            f"transductive use is meant, pass --allow_pretraining_overlap=True")
        log(f"warning: {what}; trained because --allow_pretraining_overlap=True, recorded in "
            f"run.json (init_from.test_patients_seen)")
    return dataclasses.replace(source, test_patients_seen=len(shared))


def fresh_model(experiment, num_classes, in_channels, input_length, *, dropout):
    """A randomly initialised network of `experiment` (EXPERIMENT, with `dropout` before its
    head) for these beats, or a UserError."""
    try:
        return build_model(num_classes=num_classes, experiment=experiment,
                           in_channels=in_channels, dropout_rate=dropout,
                           input_length=input_length)
    except ArchitectureError as error:
        raise UserError(f"EXPERIMENT={experiment!r} cannot take these beats "
                        f"({in_channels} leads x {input_length} samples): {error}") from None


def initial_model(source, class_names, in_channels, input_length, *, experiment, dropout,
                  log=print):
    """(the network of `experiment` this run starts from, its init_from record for run.json).

    `source` is a Source or a checkpoint path. The encoder's entries are the checkpoint's
    exactly; the head is the checkpoint's when it was trained on the same classes (same number
    and names, not a pretraining checkpoint), else new, and the log says which and why."""
    if not isinstance(source, Source):
        source = read_source(source)
    model = fresh_model(experiment, len(class_names), in_channels, input_length,
                        dropout=dropout)
    if model.config["architecture"] != source.model.config["architecture"]:
        differ = sorted(key for key in set(model.config["architecture"])
                        | set(source.model.config["architecture"])
                        if model.config["architecture"].get(key)
                        != source.model.config["architecture"].get(key))
        stored, built = source.model.config["architecture"], model.config["architecture"]
        raise UserError(f"INIT_FROM={source.path} is a {source.model.config['experiment']} "
                        f"network of another architecture than this code builds for "
                        f"EXPERIMENT={experiment}: "
                        + "; ".join(f"{key} {stored.get(key)!r} there, {built.get(key)!r} here"
                                    for key in differ)
                        + "; pass a checkpoint of this architecture")
    stored = source.model.state_dict()
    target = model.state_dict()
    encoder = [key for key in target if not key.startswith(HEAD_PREFIX)]
    unfit = [key for key in encoder if key not in stored or stored[key].shape != target[key].shape]
    if unfit:
        raise UserError(f"INIT_FROM={source.path}: its encoder does not fit this run's network "
                        f"({', '.join(unfit[:3])}{' ...' if len(unfit) > 3 else ''}); the beats "
                        f"differ in leads or length from its training cohort's")
    reason = new_head_reason(source, class_names)
    loaded = {key: stored[key] for key in (encoder if reason else target)}
    model.load_state_dict({**target, **loaded})
    log(f"INIT_FROM: {source.kind} checkpoint {source.path}: encoder loaded; "
        + (f"new head ({reason})" if reason else "head loaded (the same classes)"))
    record = {"path": source.path, "sha256": source.sha256, "kind": source.kind,
              "head": "new" if reason else "loaded", "data_fingerprint": source.data_fingerprint,
              "epoch": source.checkpoint.get("epoch", (source.checkpoint.get(PRETRAINING_KEY)
                                                       or {}).get("epochs")),
              "test_patients_seen": source.test_patients_seen}
    return model, record


def new_head_reason(source, class_names):
    """Why the checkpoint's head cannot be kept for `class_names`, or None when it can."""
    if source.kind == "pretraining":
        return "a pretraining checkpoint's head was never trained"
    stored_classes = source.model.config["num_classes"]
    if stored_classes != len(class_names):
        return f"the checkpoint has {stored_classes} classes, this run {len(class_names)}"
    names = source.checkpoint.get("class_names")
    if names is None:
        return "the checkpoint stores no class names to match"
    if [str(n) for n in names] != [str(n) for n in class_names]:
        return f"the checkpoint's classes are {list(names)}, this run's {list(class_names)}"
    return None


# ----------------------------------------------------------------------------- used in training

def encoder_parameters(model):
    return [p for name, p in model.named_parameters() if not name.startswith(HEAD_PREFIX)]


def head_parameters(model):
    return [p for name, p in model.named_parameters() if name.startswith(HEAD_PREFIX)]


def optimizer_groups(model, lr, encoder_lr_factor=1.0):
    """The optimizer's parameters: one group at `lr` (factor 1, as before fine-tuning existed),
    or an encoder group at lr * factor and a head group at lr. The plateau scheduler scales
    every group alike, so the ratio holds."""
    if encoder_lr_factor == 1:
        return list(model.parameters())
    return [{"params": encoder_parameters(model), "lr": lr * encoder_lr_factor,
             "name": "encoder"},
            {"params": head_parameters(model), "lr": lr, "name": "head"}]


def set_encoder_frozen(model, frozen):
    """Encoder parameters out of (frozen) or back in the backward pass; the head always in. A
    parameter without a gradient is skipped by AdamW, weight decay included."""
    for parameter in encoder_parameters(model):
        parameter.requires_grad_(not frozen)


def hold_encoder_statistics(model):
    """The encoder's BatchNorm layers in eval mode (call after model.train()): a frozen
    encoder's running statistics stay as loaded. Dropout keeps training: it holds no state."""
    model = getattr(model, "module", model)   # under DDP, the wrapped network
    for name, module in model.named_modules():
        if isinstance(module, (nn.BatchNorm1d, nn.SyncBatchNorm)) and not (
                name + ".").startswith(HEAD_PREFIX):
            module.eval()
