"""What a run leaves on disk: atomic writes, the output folder, its lock, a full disk, versions.

Every file a run writes goes through `atomic_write`: it is written under a temporary name in the
same folder and renamed into place, so a killed run leaves either the old file or the new one,
never half of one.
"""
import contextlib
import datetime
import json
import os
import platform
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata

import numpy as np

from lvr.errors import FULL_DISK_ERRNOS, UserError, write_failure

LOCK_FILE = ".run.lock"
TEMPORARY_MARK = ".tmp"   # in the name of every file atomic_write has not renamed yet
VERSIONED_PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "matplotlib", "pandas", "wfdb",
                      "neurokit2", "seaborn", "jinja2")
CODE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Files by which a folder is known to hold a run of this project (training, evaluation,
# pretraining, saliency analysis, cross-validation): only such a folder is kept aside
RUN_FILES = ("run.json", "split.json", "last_checkpoint.pth", "best_model.pth",
             "test_eval_results.json", "predictions.csv", "saliency_run.json",
             "last_pretraining.pth", "pretrained_model.pth", "pretraining_history.json",
             "cv_summary.json", "fold_agreement.json", "measurements.npz", LOCK_FILE)


@contextlib.contextmanager
def atomic_write(path):
    """Yield a temporary path next to `path`; on success it is renamed to `path`.

    The temporary name keeps the extension (savefig and np.save choose the format by it) and
    holds TEMPORARY_MARK, so `removed_temporary_files` can clear leftovers of a killed run.
    """
    folder, name = os.path.split(os.path.abspath(path))
    root, ext = os.path.splitext(name)
    temporary = os.path.join(folder, f".{root}.{os.getpid()}.{secrets.token_hex(3)}"
                                     f"{TEMPORARY_MARK}{ext}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


def write_json_atomic(path, payload):
    with atomic_write(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())


def save_npy_atomic(path, array):
    with atomic_write(path) as temporary:
        np.save(temporary, array)


def unwritable_folder_problem(path):
    """Why folder `path` cannot be written, or None. A folder that does not exist yet is judged
    by its nearest existing parent, where it will be made; nothing is left behind."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return f"{probe} is a file, so no folder can be made there"
    try:
        with tempfile.TemporaryDirectory(dir=probe, prefix=".write-check-"):
            pass
    except OSError as error:
        where = "it" if probe == os.path.abspath(path) else f"{probe}, where it would be made,"
        return f"{where} cannot be written ({error.strerror or error})"
    return None


def removed_temporary_files(output_dir):
    """Delete half-written files an interrupted run left (atomic writes never renamed them).

    Only called while this run holds the folder's lock, so no other writer owns them.
    """
    count = 0
    for name in os.listdir(output_dir):
        if TEMPORARY_MARK in name and name.startswith("."):
            os.remove(os.path.join(output_dir, name))
            count += 1
    return count


def code_version():
    """{"commit", "modified"} of the git checkout this code runs from; None outside one (a copy
    without .git, or no git installed)."""
    def git(*args):
        done = subprocess.run(["git", "-C", CODE_ROOT, *args], capture_output=True, text=True,
                              timeout=10)
        return done.stdout.strip() if done.returncode == 0 else None
    try:
        commit = git("rev-parse", "HEAD")
        if not commit:
            return None
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "modified": bool(changed)}


def library_versions():
    """Python, the platform and the installed version of each package the pipeline uses."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in VERSIONED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def prepare_output_dir(output_dir, resume=False, log=print, finished_file="test_eval_results.json",
                       resume_file="last_checkpoint.pth"):
    """Make `output_dir` ready for a new run without losing an earlier one.

    A folder holding a run (`holds_a_run`) is renamed to `<output_dir>.<timestamp>` (never
    deleted); any other non-empty folder holds the user's own files and is refused. With resume
    it must hold the interrupted run's `resume_file`. `finished_file` marks a finished run
    (None: no such mark).
    """
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"--output_dir={output_dir} is a file, not a folder; choose another path")
    holder = lock_holder(output_dir)
    if holder:
        raise UserError(f"{output_dir} is in use by another run (pid {holder.get('pid')} on "
                        f"{holder.get('host')}); wait for it or choose another --output_dir")
    if resume:
        if not os.path.exists(os.path.join(output_dir, resume_file)):
            raise UserError(f"--resume=True but {output_dir} holds no {resume_file} to resume "
                            f"from; start a new run without --resume")
        return
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        if not holds_a_run(output_dir):
            raise UserError(foreign_folder_problem(output_dir))
        moved = kept_name(output_dir)
        os.replace(output_dir, moved)
        unfinished = finished_file and not os.path.exists(os.path.join(moved, finished_file))
        log(f"An earlier run in {output_dir} was kept as {moved}"
            + (" (it had not finished: resume it with --resume=True after moving it back)"
               if unfinished else ""))
    os.makedirs(output_dir, exist_ok=True)


def holds_a_run(folder):
    """True when `folder` holds a run of this project (RUN_FILES, a fold_<k> folder, or the
    temporary files of a killed one), not only files of the user's."""
    names = os.listdir(folder)
    return any(name in RUN_FILES or re.fullmatch(r"fold_\d+", name)
               or (name.startswith(".") and (TEMPORARY_MARK in name or name.startswith(".work-")))
               for name in names)


def foreign_folder_problem(folder):
    """The one line refusing `folder`, which holds files but no run of this project."""
    names = sorted(os.listdir(folder))
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (f"--output_dir={folder} is not empty and holds no run of this project ({shown}); "
            f"choose a new or empty folder (nothing in it is moved or overwritten)")


def kept_name(output_dir):
    """`<output_dir>.<timestamp of its last change>`, with a suffix if that name is taken."""
    stamp = datetime.datetime.fromtimestamp(os.path.getmtime(output_dir))
    base = f"{output_dir.rstrip('/')}.{stamp:%Y%m%d-%H%M%S}"
    moved, suffix = base, 1
    while os.path.exists(moved):
        moved, suffix = f"{base}-{suffix}", suffix + 1
    return moved


def lock_holder(output_dir):
    """The live run holding `output_dir`'s lock, as a dict, or None."""
    path = os.path.join(output_dir, LOCK_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            holder = json.load(handle)
    except (OSError, ValueError):
        return None
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder.get("pid", -1)), 0)
        except (ProcessLookupError, ValueError):
            return None
        except PermissionError:
            pass
    return holder


@contextlib.contextmanager
def output_lock(output_dir):
    """Hold OUTPUT_DIR for this run: a second run pointed at it stops with a clear message."""
    path = os.path.join(output_dir, LOCK_FILE)
    holder = lock_holder(output_dir)
    if holder:
        raise UserError(f"{output_dir} is in use by another run (pid {holder.get('pid')} on "
                        f"{holder.get('host')}, since {holder.get('started')}); wait for it or "
                        f"choose another --output_dir. If no such run exists, delete {path}")
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)  # stale: its process is gone
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise UserError(f"{output_dir} was just taken by another run; choose another "
                        f"--output_dir") from None
    with os.fdopen(fd, "w") as handle:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "started": datetime.datetime.now().isoformat(timespec="seconds")}, handle)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def disk_space_guard(output_dir, resume_hint="last complete checkpoint"):
    """Turn a full disk into a clear message; atomic writes left every earlier file intact."""
    try:
        yield
    except OSError as error:
        failure = write_failure(error, output_dir, resume_hint, then="continue with --resume=True")
        if failure is None or error.errno not in FULL_DISK_ERRNOS:
            raise
        raise failure from None


def invocation_record(started, epochs, ended=None):
    """One invocation of a run (run.json's "history"): its command, its start and end (ISO; the
    end of an interrupted one is its last completed epoch), the `epochs` [first, last] it
    trained (None: none) and its wall time. `started`, `ended`: time.time() values (`ended`
    default now)."""
    ended = time.time() if ended is None else ended
    return {"command": list(sys.argv), "started": iso_time(started), "ended": iso_time(ended),
            "epochs": epochs, "wall_time_s": round(ended - started, 2)}


def iso_time(seconds):
    return datetime.datetime.fromtimestamp(seconds).isoformat(timespec="seconds")


def total_wall_time(history):
    """Seconds over every invocation of `history` whose time is known."""
    return sum(run.get("wall_time_s") or 0.0 for run in history)


def run_record(run_config, wall, cohort=None, data_dir=None, device=None, world_size=1,
               **fields):
    """run.json's provenance: the configuration (`run_config`, recorded as it is) and command,
    the data (`cohort`, read from `data_dir`), the machine (`device`, a torch.device), the
    versions and the wall time; `fields` adds what one kind of run records of its own."""
    record = {"config": run_config, "command": sys.argv}
    if cohort is not None:
        record.update({"data_dir": data_dir, "data_fingerprint": cohort.fingerprint(),
                       "data_files": cohort.files, "demo_data": cohort.is_demo})
    if device is not None:
        import torch  # lazy: run_folder is imported by scripts that never load torch
        record.update({"device": str(device),
                       "cuda_device": torch.cuda.get_device_name(device)
                       if device.type == "cuda" else None,
                       "processes": world_size, "torch_threads": torch.get_num_threads()})
    record.update(fields)
    record.update({"versions": library_versions(), "code": code_version(),
                   "wall_time_s": round(wall, 2),
                   "finished": datetime.datetime.now().isoformat(timespec="seconds")})
    return record
