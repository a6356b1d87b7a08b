"""Checkpoint files: a model's config and weights plus plain extra values, written atomically.

A checkpoint is a torch file holding ``{"format": "mcl-resnet1d-v1", "config": model.config,
"state_dict": model.state_dict(), **extra}``: the config alone rebuilds the network, so a
file stays loadable after EXPERIMENTS changes. Files are read with ``weights_only=True``.
"""
import collections
import errno
import os
import pickle
import re
from pathlib import Path

import torch

from lvr.choices import NORMALISATIONS
from lvr.errors import UserError
from lvr.run_folder import atomic_write
from model import EXPERIMENT_NAMES, build_model, rebuild_model

CHECKPOINT_FORMAT = "mcl-resnet1d-v1"
RESERVED_KEYS = ("format", "config", "state_dict")
CONFIG_KEYS = ("experiment", "num_classes", "in_channels", "input_length", "dropout_rate",
               "architecture")
PLAIN_LEAVES = (str, int, float, bool, type(None))
PLAIN_CONTAINERS = (dict, collections.OrderedDict, list, tuple)
# How torch's stream writer reports a write the file system refused (a full disk, most often)
FAILED_WRITE = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")


class CheckpointError(UserError):
    """A checkpoint file that cannot be read or does not fit the model asked for."""


def checkpoint_normalisation(checkpoint, path):
    """How the model of `checkpoint` (a loaded dict) wants its beats normalised: the stored
    NORMALISATION, or per_lead for a checkpoint saved before it was stored."""
    value = checkpoint.get("normalisation", "per_lead")
    if value not in NORMALISATIONS:
        raise CheckpointError(f"checkpoint {path} stores normalisation {value!r}, which this code "
                              f"does not know ({', '.join(NORMALISATIONS)}); update the code")
    return value


def non_plain_value(value, where):
    """The location and type of the first value torch.load(weights_only=True) would refuse."""
    if type(value) in PLAIN_LEAVES or isinstance(value, torch.Tensor):
        return None
    if type(value) not in PLAIN_CONTAINERS:
        return f"{where} ({type(value).__name__})"
    if isinstance(value, dict):
        items = [(f"{where}[{key!r}]", v) for key, v in value.items()]
        items += [(f"key {key!r} in {where}", key) for key in value]
    else:
        items = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    for place, item in items:
        found = non_plain_value(item, place)
        if found:
            return found
    return None


def save_checkpoint(path, model, **extra):
    """Write `model` (config + weights) and `extra` plain values to `path`, atomically.

    `extra` may hold str, int, float, bool, None, tensors and dicts, lists and tuples of them
    (epoch, metrics, an optimizer state dict); anything else (numpy scalars, custom objects)
    is refused up front, since such a file would need weights_only=False to load.
    """
    clash = [key for key in RESERVED_KEYS if key in extra]
    if clash:
        raise ValueError(f"save_checkpoint: {', '.join(clash)} are written by save_checkpoint "
                         f"itself; rename the extra entries")
    for key, value in extra.items():
        found = non_plain_value(value, key)
        if found:
            raise TypeError(f"save_checkpoint: {found} is not a plain type; convert it "
                            f"(float(), int(), .tolist(), dict()) before saving")
    write_torch_file(path, {"format": CHECKPOINT_FORMAT, "config": model.config,
                            "state_dict": model.state_dict(), **extra})


def add_to_checkpoint(path, **extra):
    """Rewrite the checkpoint at `path` with the plain values `extra` added (or replaced), as
    atomically as save_checkpoint writes it; weights and config are kept as they are."""
    stored = read_checkpoint_file(Path(path), "cpu")
    for key, value in extra.items():
        found = non_plain_value(value, key)
        if found:
            raise TypeError(f"add_to_checkpoint: {found} is not a plain type")
    write_torch_file(path, {**stored, **extra})


def write_torch_file(path, payload):
    """torch.save `payload` to `path` atomically: every checkpoint is written here.

    torch's stream writer reports a write the disk refused as a RuntimeError ("unexpected
    pos", "file write failed"); it becomes the OSError of a full disk naming the file, so that
    lvr.errors.write_failure words it as it words every other refused write.
    """
    with atomic_write(path) as temporary:
        with open(temporary, "wb") as handle:
            try:
                torch.save(payload, handle)
            except RuntimeError as error:
                if not any(text in str(error) for text in FAILED_WRITE):
                    raise
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
            handle.flush()
            os.fsync(handle.fileno())


def read_checkpoint_file(path, map_location):
    """The object stored in `path`, loaded with weights_only=True, or a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path, or train a "
                              f"model first")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        message = str(error)
        if isinstance(error, pickle.UnpicklingError) and "Unsupported global" in message:
            raise CheckpointError(
                f"checkpoint {path} holds Python objects that torch.load refuses with "
                f"weights_only=True; if you trust the file, load it with weights_only=False and "
                f"re-save it with lvr.train.checkpoints.save_checkpoint") from None
        raise CheckpointError(
            f"checkpoint {path} is not a readable PyTorch file (truncated or corrupt: "
            f"{load_error_detail(error)}); copy or save it again") from None


def load_error_detail(error):
    """One line on why torch.load failed, without its paragraphs of advice on weights_only."""
    message = str(error)
    unpickler = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", message)
    line = unpickler.group(1) if unpickler else (message.strip().splitlines() or ["no detail"])[0]
    return f"{type(error).__name__}: {line.split('. ')[0][:160]}"


def is_state_dict(obj):
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in obj.items())


def state_dict_problems(model, state_dict):
    """Missing keys, unexpected keys and shape mismatches of `state_dict` against `model`."""
    expected = model.state_dict()
    problems = []
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    shapes = [f"{key} {tuple(state_dict[key].shape)} vs model {tuple(value.shape)}"
              for key, value in expected.items()
              if key in state_dict and state_dict[key].shape != value.shape]
    for label, items in (("missing", missing), ("unexpected", unexpected),
                         ("shape mismatch", shapes)):
        if items:
            shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
            problems.append(f"{label}: {shown}")
    return problems


def load_checkpoint(path, map_location="cpu", experiment=None, num_classes=None, in_channels=12,
                    dropout_rate=0.5):
    """(model in eval mode, checkpoint dict) from a file written by save_checkpoint.

    The model is rebuilt from the config stored in the file; `experiment` and `num_classes`,
    when given, must agree with it, and `in_channels` and `dropout_rate` are ignored. An
    old-style file holding only a state dict is rebuilt from `experiment` (required: no script
    passes it, so a script gets bare_state_dict_problem's message), `num_classes` (read from
    the head's weight when None), `in_channels` and `dropout_rate`; its checkpoint dict is
    returned in the new format.
    """
    path = Path(path)
    stored = read_checkpoint_file(path, map_location)
    if isinstance(stored, dict) and stored.get("format") == CHECKPOINT_FORMAT:
        build_args = stored_build_args(path, stored, experiment, num_classes)
        state_dict = stored["state_dict"]
    elif is_state_dict(stored):
        build_args = old_style_build_args(path, stored, experiment, num_classes, in_channels,
                                          dropout_rate)
        state_dict = stored
    else:
        raise CheckpointError(unknown_content(path, stored))
    model = rebuilt_model(path, build_args, state_dict)
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    model.eval()
    checkpoint = stored if state_dict is not stored else {
        "format": CHECKPOINT_FORMAT, "config": model.config, "state_dict": stored}
    return model, checkpoint


def stored_build_args(path, stored, experiment, num_classes):
    """Model arguments from a checkpoint's config, checked against what the caller asked for."""
    config = stored.get("config")
    if not isinstance(config, dict) or any(key not in config for key in CONFIG_KEYS) or (
            not is_state_dict(stored.get("state_dict"))):
        raise CheckpointError(f"checkpoint {path} says {CHECKPOINT_FORMAT} but lacks a "
                              f"complete config or state_dict; save it again")
    for name, asked in (("experiment", experiment), ("num_classes", num_classes)):
        if asked is not None and asked != config[name]:
            raise CheckpointError(f"checkpoint {path} holds a model with {name}="
                                  f"{config[name]!r}, but {name}={asked!r} was asked for; "
                                  f"pass the matching value or another checkpoint")
    return dict(num_classes=config["num_classes"], in_channels=config["in_channels"],
                experiment=config["experiment"], dropout_rate=config["dropout_rate"],
                input_length=config["input_length"], architecture=config["architecture"])


def old_style_build_args(path, state_dict, experiment, num_classes, in_channels, dropout_rate):
    """Model arguments for a file that holds only a state dict, rebuilt as `experiment`; without
    it a CheckpointError says what the file is (bare_state_dict_problem)."""
    if experiment is None:
        raise CheckpointError(bare_state_dict_problem(path, state_dict))
    if num_classes is None:
        if "head.weight" not in state_dict:
            raise CheckpointError(f"old-style checkpoint {path} has no head.weight; pass "
                                  f"num_classes=...")
        num_classes = state_dict["head.weight"].shape[0]
    return dict(num_classes=num_classes, in_channels=in_channels, experiment=experiment,
                dropout_rate=dropout_rate)


def fitting_experiments(state_dict):
    """The networks of this project (EXPERIMENT_NAMES) whose weights bear exactly the names in
    `state_dict`: those a file of torch.save(model.state_dict()) can be rebuilt as."""
    names = set(state_dict)
    return [name for name in EXPERIMENT_NAMES
            if set(build_model(2, name).state_dict()) == names]


def bare_state_dict_problem(path, state_dict):
    """Why a file of weights alone cannot be loaded, and what to do: an old-style file of this
    project's networks (the original saved best_model.pth so) can be converted once in Python;
    the weights of another network cannot be used at all. No script option helps: a script
    rebuilds a network only from the config a checkpoint stores."""
    fits = fitting_experiments(state_dict)
    if fits:
        return (f"checkpoint {path} is an old-style file holding only a state dict (weights "
                f"without the model config, as the original project saved them); its weights "
                f"fit the {' or '.join(fits)} network. The scripts rebuild a network only from "
                f"the config a checkpoint stores: convert it once with python -c \"from "
                f"lvr.train.checkpoints import load_checkpoint, save_checkpoint; save_checkpoint("
                f"'converted.pth', load_checkpoint('{path}', experiment='{fits[0]}')[0])\" and "
                f"give converted.pth")
    shown = ", ".join(sorted(state_dict)[:3])
    return (f"checkpoint {path} holds only a state dict ({len(state_dict)} weight tensors: "
            f"{shown}, ...) of a network this project does not define, without a model "
            f"config; this project cannot rebuild a network from weights alone. Give a "
            f"checkpoint this project wrote (a training run's best_model.pth, pretrain.py's "
            f"pretrained_model.pth)")


def unknown_content(path, stored):
    """Why `stored` is neither a checkpoint of this format nor a state dict."""
    if isinstance(stored, dict) and "format" in stored:
        return (f"checkpoint {path} has format {stored['format']!r}, but this code reads only "
                f"{CHECKPOINT_FORMAT}; save the model again with "
                f"lvr.train.checkpoints.save_checkpoint")
    found = (f"a dict with keys {sorted(map(str, stored))[:8]}" if isinstance(stored, dict)
             else f"a {type(stored).__name__}")
    return (f"checkpoint {path} holds {found}, neither a {CHECKPOINT_FORMAT} checkpoint nor a "
            f"state dict; save the model with lvr.train.checkpoints.save_checkpoint")


def rebuilt_model(path, build_args, state_dict):
    """The network built from `build_args` holding `state_dict`, or a CheckpointError saying why."""
    try:
        model = rebuild_model(**build_args)
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"checkpoint {path}: cannot rebuild the model ({error})") from None
    problems = state_dict_problems(model, state_dict)
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit a {build_args['experiment']} model with "
            f"num_classes={build_args['num_classes']}, in_channels={build_args['in_channels']} "
            f"({'; '.join(problems)}); pass the experiment and sizes it was trained with")
    model.load_state_dict(state_dict)
    return model
