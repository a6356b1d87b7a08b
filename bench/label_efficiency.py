"""Label efficiency: does a pretrained encoder need fewer labelled patients than one from scratch?

    python bench/label_efficiency.py               # the full benchmark (docs/pretraining.md)
    python bench/label_efficiency.py --quick       # a small demo, 2 folds, 1 seed (a slow test)
    python bench/label_efficiency.py --report_only # the table and figure of what is finished

Every network is the 2-class script's default (EXPERIMENT, LR, NORMALISATION, ...) fine-tuned
with 10%, 25%, 50% and 100% of each fold's labelled patients (drawn per class, per seed): the
same fraction of its training and of its validation patients, since a user with 19 labelled
patients has no 60 more to select epochs on. The test patients are those of a 5-fold
patient-level cross-validation, the same for every run. Every run gets about the optimizer
steps of the 100% run: EPOCHS / fraction epochs (MAX_EPOCHS, a cap the default fractions never
reach). Arms:

- scratch: random initial weights;
- self_supervised: INIT_FROM a pretrain.py checkpoint (its defaults, PRETRAIN_EPOCHS);
- supervised: INIT_FROM a 4-class run on PTB-XL superclass4 (NORM, MI, STTC, CD), another task.

Synthetic task (demo): pretraining on an unlabelled pool of POOL_FACTOR x as many demo patients
from another generator seed (LVR and non-LVR mixed, labels never read). Real tasks (the shared
PTB-XL records: mi_norm, lvh_norm): pretraining on every PTB-XL record of the patients outside
the fold's test patients of both tasks (EXCLUDE_PATIENTS); one checkpoint per fold and arm, and
each fine-tuning run checks that its test patients were not seen (lvr.train.finetune's guard).

Report per task, arm and fraction: the pooled out-of-fold patient-level AUC (every patient of
the cohort predicted once per seed), mean +- sd over seeds; and per pretrained arm the smallest
fraction whose mean reaches scratch's at 100%. Every job is written as it finishes (OUT/jobs);
run the command again to resume. Written to OUT/label_efficiency.json, .md and .png.
"""
import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from common import ROOT, machine
from model_bench import run_script, script_constants, write_json

FRACTIONS = (0.1, 0.25, 0.5, 1.0)
SEEDS = (0, 1, 2)
FOLDS = 5
EPOCHS = 10                  # at 100% of the training patients; fewer patients, more epochs
MAX_EPOCHS = 100             # EPOCHS / 10%: every fraction gets the 100% run's steps
PRETRAIN_EPOCHS = 40         # pretrain.py's default
SUPERVISED_EPOCHS = 10       # the 4-class run on superclass4
FS = 250                     # Hz, as bench/model_bench.py: beats of 250 samples
PTBXL_BEATS = "random:2"
DEMO_PATIENTS = 30           # per group of the labelled demo (4 groups: 120 patients)
POOL_FACTOR = 10             # the unlabelled pool: 10x the labelled patients
POOL_SEED = 101              # the pool's generator seed (the labelled demo's is the default)
WORKERS = 2                  # jobs at once, one thread each (2 cores)
SEED = 42                    # the folds (the training scripts' default seed)
ARMS = ("scratch", "self_supervised", "supervised")
BINARY_SCRIPT, FOUR_CLASS_SCRIPT = "train_MCL_ResNet_1D_class2.py", "train_MCL_ResNet_1D_class4.py"
TASKS = {"demo": ("scratch", "self_supervised"),
         "ptbxl_mi_norm": ARMS, "ptbxl_lvh_norm": ARMS}
QUICK = {"tasks": ("demo",), "folds": 2, "seeds": (0,), "fractions": (0.25, 1.0),
         "epochs": 2, "max_epochs": 8, "pretrain_epochs": 2, "demo_patients": 8,
         "pool_factor": 3}


# ----------------------------------------------------------------------------- cohorts

def make_cohort(kind, folder, ptbxl_dir, patients=DEMO_PATIENTS, seed=None):
    """A cohort made by the README's commands, once: demo, or prepare_data.py on PTB-XL."""
    if (folder / "cohort.json").exists():
        return
    if folder.exists():           # a run killed while writing it: the benchmark's own folder
        shutil.rmtree(folder)
    if kind == "demo":
        command = ["demo_cohort.py", f"--fs={FS}", f"--n_patients={patients}",
                   f"--output_dir={folder}"] + ([f"--seed={seed}"] if seed is not None else [])
    else:
        command = ["prepare_data.py", f"--ptbxl_dir={ptbxl_dir}", f"--task={kind}", f"--fs={FS}",
                   f"--beats={PTBXL_BEATS}", "--workers=2", f"--output_dir={folder}"]
    run_script(command, folder.parent / f"{folder.name}.log")


def fold_test_patients(cohort_dir, folds, task="binary"):
    """The test patients (text) of each fold of the training scripts' cross-validation."""
    sys.path.insert(0, str(ROOT))
    from lvr.data.cohort import load_cohort
    from lvr.train.cross_validation import cv_fold_parts
    cohort = load_cohort(str(cohort_dir))
    labels = cohort.labels(task)
    return [sorted(set(cohort.patient_ids[parts["test"]].astype(str).tolist()))
            for parts in cv_fold_parts(labels, cohort.patient_ids, folds, 0.2, SEED)]


def cohort_without(source, target, patients):
    """A copy of the cohort in `source` without the beats of `patients` (text IDs), in
    `target`: the supervised pretraining's cohort, which must not hold a test patient."""
    if (target / "cohort.json").exists():
        return
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    spec = json.loads((source / "cohort.json").read_text())
    for group in spec["groups"]:
        ids = np.load(source / f"cut_{group}_patient_ids.npy")
        keep = ~np.isin(ids.astype(str), sorted(patients))
        np.save(partial / f"cut_{group}.npy", np.load(source / f"cut_{group}.npy")[keep])
        np.save(partial / f"cut_{group}_patient_ids.npy", ids[keep])
    spec["name"] = f"{spec.get('name', source.name)} without {len(patients)} test patients"
    (partial / "cohort.json").write_text(json.dumps(spec, indent=1))
    os.replace(partial, target)


# ----------------------------------------------------------------------------- jobs

def epochs_for(fraction, epochs, max_epochs):
    """Epochs of a run on `fraction` of the training patients: the 100% run's optimizer steps."""
    return min(max_epochs, int(math.ceil(epochs / fraction - 1e-9)))


def patient_subset(train_idx, labels, patient_ids, fraction, seed, stream=7):
    """Beat positions of `fraction` of the patients of `train_idx`, drawn per class (at least 2
    of each) by `seed` and `stream` (one for training, one for validation patients); the smaller
    fractions of one seed are subsets of the larger ones."""
    if fraction >= 1:
        return train_idx
    ids = patient_ids[train_idx].astype(str)
    patients, first = np.unique(ids, return_index=True)
    classes = labels[train_idx][first]
    rng = np.random.default_rng([seed, stream])
    chosen = []
    for cls in np.unique(classes):
        members = rng.permutation(patients[classes == cls])
        chosen += members[:max(2, int(round(fraction * len(members))))].tolist()
    return train_idx[np.isin(ids, chosen)]


def finetune_job(job, out_path):
    """One fine-tuning run: train on the job's fraction, select on validation, predict test."""
    import torch
    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(1)
    from lvr.data.cohort import load_cohort
    from lvr.train.checkpoints import load_checkpoint
    from lvr.train.cross_validation import cv_fold_parts
    from lvr.train.finetune import check_source, checked_test_overlap, read_source
    from lvr.train.loop import BEST_CHECKPOINT, fit, predict_logits
    from lvr.train.loop import Recipe
    config = dict(script_constants(BINARY_SCRIPT), DATA_DIR=job["cohort"], DEVICE="cpu",
                  EPOCHS=job["epochs"], SEED=SEED + 1000 * job["seed"] + job["fold"],
                  INIT_FROM=job["init_from"] or "", REPORT=False)
    cohort = load_cohort(job["cohort"])
    labels = cohort.labels("binary")
    parts = list(cv_fold_parts(labels, cohort.patient_ids, job["folds"], config["VAL_SIZE"],
                               SEED))[job["fold"]]
    train = patient_subset(parts["train"], labels, cohort.patient_ids, job["fraction"],
                           job["seed"])
    val = patient_subset(parts["val"], labels, cohort.patient_ids, job["fraction"], job["seed"],
                         stream=8)
    from lvr.data.beats import StandardisedBeats
    x_all = StandardisedBeats(cohort.beats, normalisation=config["NORMALISATION"])
    source = None
    if job["init_from"]:
        source = read_source(job["init_from"])
        check_source(source, cohort, experiment=config["EXPERIMENT"],
                     normalisation=config["NORMALISATION"])
        source = checked_test_overlap(source, cohort, cohort.patient_ids[parts["test"]],
                                      allow_pretraining_overlap=config.get(
                                          "ALLOW_PRETRAINING_OVERLAP", False),
                                      log=lambda *_: None)
    start = time.time()
    with tempfile.TemporaryDirectory() as folder:
        fit(Recipe.from_options(config), (x_all.rows(train), torch.from_numpy(labels[train])),
            (x_all.rows(val), torch.from_numpy(labels[val])),
            list(cohort.class_names("binary")), folder, False,
            in_channels=cohort.beats.shape[1], input_length=cohort.beats.shape[2],
            device=torch.device("cpu"), task="binary", normalisation=config["NORMALISATION"],
            run_config=config, log=lambda *_: None, init_from=source)
        model, stored = load_checkpoint(os.path.join(folder, BEST_CHECKPOINT))
        logits = predict_logits(model, x_all.rows(parts["test"]), 256, torch.device("cpu"))
    prob = torch.softmax(logits, 1)[:, 1].numpy()
    write_json(out_path, {
        **{k: job[k] for k in ("task", "arm", "fraction", "seed", "fold", "epochs")},
        "train_patients": len(np.unique(cohort.patient_ids[train])),
        "val_patients": len(np.unique(cohort.patient_ids[val])),
        "test_patients_seen": None if source is None else source.test_patients_seen,
        "best_epoch": stored.get("epoch"), "test_patient_ids": cohort.patient_ids[
            parts["test"]].astype(str).tolist(), "test_labels": labels[parts["test"]].tolist(),
        "test_prob": [round(float(p), 6) for p in prob], "seconds": round(time.time() - start, 1)})
    return out_path


# ----------------------------------------------------------------------------- the report

def patient_auc(labels, prob, patient_ids):
    """AUC over patients (the mean probability of each one's beats)."""
    from sklearn.metrics import roc_auc_score
    ids = np.asarray(patient_ids)
    patients, inverse = np.unique(ids, return_inverse=True)
    mean = np.bincount(inverse, weights=prob) / np.bincount(inverse)
    y = np.zeros(len(patients), dtype=int)
    y[inverse] = labels
    return float(roc_auc_score(y, mean))


def summary(jobs_dir, tasks, fractions, seeds, folds):
    """{task: {arm: {fraction: {mean, sd, per_seed, seeds}}}} of the finished seeds (all folds)."""
    found = {}
    for task, arms in tasks.items():
        for arm in arms:
            for fraction in fractions:
                per_seed = {}
                for seed in seeds:
                    paths = [jobs_dir / job_name(task, arm, fraction, seed, fold)
                             for fold in range(folds)]
                    if not all(p.exists() for p in paths):
                        continue
                    rows = [json.loads(p.read_text()) for p in paths]
                    per_seed[seed] = patient_auc(
                        np.concatenate([r["test_labels"] for r in rows]),
                        np.concatenate([r["test_prob"] for r in rows]),
                        np.concatenate([r["test_patient_ids"] for r in rows]))
                values = list(per_seed.values())
                found.setdefault(task, {}).setdefault(arm, {})[str(fraction)] = {
                    "mean": float(np.mean(values)) if values else None,
                    "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                    "per_seed": {str(s): v for s, v in per_seed.items()},
                    "seeds": len(values)}
    return found


def matching_fraction(arm_rows, scratch_full, fractions):
    """The smallest fraction whose mean AUC reaches scratch's mean at 100%, or None."""
    for fraction in fractions:
        mean = arm_rows[str(fraction)]["mean"]
        if mean is not None and scratch_full is not None and mean >= scratch_full:
            return fraction
    return None


def markdown(result):
    fractions = result["fractions"]
    lines = [f"Label efficiency ({result['machine']['date'][:10]}, {result['machine']['cpu']}, "
             f"{result['folds']} folds x {len(result['seeds'])} seeds; quick: {result['quick']}). "
             f"Pooled out-of-fold patient-level test AUC, mean +- sd over seeds.", ""]
    header = "| task | arm | " + " | ".join(f"{int(f * 100)}%" for f in fractions) + \
        " | matches scratch at 100% from |"
    lines += [header, "|" + "---|" * (len(fractions) + 3)]
    for task, arms in result["auc"].items():
        scratch_full = arms["scratch"][str(fractions[-1])]["mean"]
        for arm, rows in arms.items():
            cells = []
            for f in fractions:
                row = rows[str(f)]
                cells.append("not run" if row["mean"] is None else
                             f"{row['mean']:.3f}" + (f" ± {row['sd']:.3f}" if row["sd"] is not None
                                                     else "") +
                             ("" if row["seeds"] == len(result["seeds"]) else
                              f" ({row['seeds']} seed{'s' if row['seeds'] > 1 else ''})"))
            if arm == "scratch":
                match = "(reference)"
            elif scratch_full is None:
                match = "n/a"
            else:
                fraction = matching_fraction(rows, scratch_full, fractions)
                match = "never" if fraction is None else f"{int(fraction * 100)}%"
            lines.append(f"| {task} | {arm} | " + " | ".join(cells) + f" | {match} |")
    lines += ["", f"Fine-tuning runs: {result['jobs_done']} of {result['jobs_total']}, "
              f"{result['finetune_seconds'] / 60:.0f} min of training in all (one thread "
              f"each, {result['machine']['workers']} at once); wall time "
              f"{result['wall_time_total_s'] / 60:.0f} min over every invocation (this one "
              f"{result['wall_time_s'] / 60:.0f} min)."]
    return "\n".join(lines) + "\n"


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = list(result["auc"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False,
                             constrained_layout=True)
    colours = {"scratch": "#444444", "self_supervised": "#1f77b4", "supervised": "#d62728"}
    for axis, task in zip(axes[0], tasks, strict=True):
        for arm, rows in result["auc"][task].items():
            points = [(100 * float(f), row["mean"], row["sd"] or 0.0)
                      for f, row in rows.items() if row["mean"] is not None]
            if not points:
                continue
            x, mean, sd = (np.array(v) for v in zip(*points, strict=True))
            axis.errorbar(x, mean, yerr=sd, marker="o", ms=4, capsize=3, label=arm.replace(
                "_", "-"), color=colours.get(arm))
        axis.set_xscale("log")
        axis.set_xticks([100 * f for f in result["fractions"]])
        axis.set_xticklabels([f"{int(100 * f)}%" for f in result["fractions"]])
        axis.minorticks_off()
        axis.set(title=task, xlabel="labelled patients (training and validation)",
                 ylabel="patient-level AUC")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(frameon=False, loc="lower right")
    fig.suptitle(f"Fine-tuning from scratch or a pretrained encoder (mean ± sd over "
                 f"{len(result['seeds'])} seeds, {result['machine']['date'][:10]})", fontsize=10)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def finished_job(path, job):
    """Whether `path` holds this job's result by the current method: one written before the
    validation patients were subsampled (no val_patients) or with other epochs is redone."""
    if not path.exists():
        return False
    done = json.loads(path.read_text())
    return "val_patients" in done and done.get("epochs") == job["epochs"]


def job_name(task, arm, fraction, seed, fold):
    return f"{task}-{arm}-f{int(round(fraction * 100)):03d}-seed{seed}-fold{fold + 1}.json"


# ----------------------------------------------------------------------------- the run

class Bench:
    def __init__(self, out, ptbxl_dir, quick, log=print, tasks=None):
        self.out, self.ptbxl_dir, self.quick, self.log = Path(out).resolve(), ptbxl_dir, quick, log
        settings = QUICK if quick else {}
        self.tasks = {t: TASKS[t] for t in tasks or settings.get("tasks", TASKS)}
        self.folds = settings.get("folds", FOLDS)
        self.seeds = settings.get("seeds", SEEDS)
        self.fractions = settings.get("fractions", FRACTIONS)
        self.epochs = settings.get("epochs", EPOCHS)
        self.max_epochs = settings.get("max_epochs", MAX_EPOCHS)
        self.pretrain_epochs = settings.get("pretrain_epochs", PRETRAIN_EPOCHS)
        self.demo_patients = settings.get("demo_patients", DEMO_PATIENTS)
        self.pool_factor = settings.get("pool_factor", POOL_FACTOR)
        self.start = time.time()
        self.jobs_dir = self.out / "jobs"
        earlier = self.out / "label_efficiency.json"
        stored = json.loads(earlier.read_text()) if earlier.exists() else {}
        self.earlier_wall_s = stored.get("wall_time_total_s", stored.get("wall_time_s", 0.0))

    def cohorts(self):
        folder = self.out / "cohorts"
        folder.mkdir(parents=True, exist_ok=True)
        if "demo" in self.tasks:
            make_cohort("demo", folder / "demo", None, self.demo_patients)
            make_cohort("demo", folder / "demo_pool", None,
                        self.pool_factor * self.demo_patients, seed=POOL_SEED)
        if any(t.startswith("ptbxl_") for t in self.tasks):
            if not (Path(self.ptbxl_dir) / "ptbxl_database.csv").exists():
                raise SystemExit(f"error: --ptbxl_dir={self.ptbxl_dir} holds no "
                                 f"ptbxl_database.csv; the PTB-XL tasks need the records")
            for kind in ("mi_norm", "lvh_norm", "superclass4", "unlabelled"):
                make_cohort(kind, folder / f"ptbxl_{kind}", self.ptbxl_dir)
        self.log(f"cohorts ready in {folder} ({self.elapsed()})")

    def pretrained(self):
        """{(task, arm, fold): checkpoint}: the pretraining runs, made once each."""
        cohorts, runs = self.out / "cohorts", self.out / "pretrained"
        runs.mkdir(parents=True, exist_ok=True)
        checkpoints = {}
        if "demo" in self.tasks:
            path = self.pretrain(cohorts / "demo_pool", runs / "demo_self_supervised", "")
            for fold in range(self.folds):
                checkpoints["demo", "self_supervised", fold] = path
        ptbxl = [t for t in self.tasks if t.startswith("ptbxl_")]
        for fold in range(self.folds) if ptbxl else ():
            tests = sorted(set().union(*(fold_test_patients(cohorts / task, self.folds)[fold]
                                         for task in ptbxl)))
            listed = runs / f"ptbxl_fold{fold + 1}_test_patients.txt"
            listed.write_text("\n".join(tests) + "\n")
            ssl = self.pretrain(cohorts / "ptbxl_unlabelled",
                                runs / f"ptbxl_self_supervised_fold{fold + 1}", listed)
            supervised = self.supervised(cohorts, runs, fold, tests)
            for task in ptbxl:
                checkpoints[task, "self_supervised", fold] = ssl
                checkpoints[task, "supervised", fold] = supervised
        return checkpoints

    def pretrain(self, cohort, folder, excluded):
        path = folder / "pretrained_model.pth"
        if not path.exists():
            resume = (folder / "last_pretraining.pth").exists()    # killed: go on from there
            if not resume:
                shutil.rmtree(folder, ignore_errors=True)
            run_script(["pretrain.py", f"--data_dir={cohort}", f"--output_dir={folder}",
                        f"--epochs={self.pretrain_epochs}", f"--exclude_patients={excluded}",
                        "--device=cpu", f"--resume={resume}"], folder.with_suffix(".log"),
                       threads="2")
            self.log(f"pretrained {folder.name} ({self.elapsed()})")
        return str(path)

    def supervised(self, cohorts, runs, fold, tests):
        folder = runs / f"ptbxl_supervised_fold{fold + 1}"
        path = folder / "best_model.pth"
        if not (folder / "test_eval_results.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
            cohort = cohorts / f"ptbxl_superclass4_without_fold{fold + 1}"
            cohort_without(cohorts / "ptbxl_superclass4", cohort, tests)
            run_script([FOUR_CLASS_SCRIPT, f"--data_dir={cohort}", f"--output_dir={folder}",
                        f"--epochs={SUPERVISED_EPOCHS if not self.quick else 2}",
                        "--bootstrap=0", "--report=False", "--device=cpu"],
                       folder.with_suffix(".log"), threads="2")
            self.log(f"supervised pretraining {folder.name} ({self.elapsed()})")
        return str(path)

    def all_jobs(self, checkpoints):
        """Every fine-tuning run, seed by seed: an interrupted benchmark has whole seeds."""
        return [{"task": task, "arm": arm, "fraction": fraction, "seed": seed, "fold": fold,
                 "folds": self.folds, "cohort": str(self.out / "cohorts" / task),
                 "epochs": epochs_for(fraction, self.epochs, self.max_epochs),
                 "init_from": checkpoints.get((task, arm, fold)) if arm != "scratch" else None}
                for seed in self.seeds for task, arms in self.tasks.items() for arm in arms
                for fraction in self.fractions for fold in range(self.folds)]

    def finetune(self, checkpoints):
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        jobs = self.all_jobs(checkpoints)
        todo = [job for job in jobs if not finished_job(self.jobs_dir / job_name(
            job["task"], job["arm"], job["fraction"], job["seed"], job["fold"]), job)]
        self.log(f"fine-tuning: {len(jobs) - len(todo)} of {len(jobs)} runs done earlier")
        with ProcessPoolExecutor(WORKERS, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(finetune_job, job, self.jobs_dir / job_name(
                job["task"], job["arm"], job["fraction"], job["seed"], job["fold"]))
                for job in todo]
            for i, future in enumerate(futures, 1):
                name = Path(future.result()).name
                if i % 10 == 0 or i == len(futures):
                    self.log(f"fine-tuning {i}/{len(todo)}: {name} ({self.elapsed()})")
                    self.write(len(jobs))
        return self.write(len(jobs))

    def write(self, jobs_total, wall_time_s=None, wall_time_total_s=None, ran_on=None):
        """The table, JSON and figure of every finished job; wall times of this invocation and
        of all of them (an earlier invocation's total plus this one's)."""
        wall_time_s = wall_time_s or round(time.time() - self.start, 1)
        done = [p for p in self.jobs_dir.glob("*.json") if p.name.split("-")[0] in self.tasks]
        result = {"machine": ran_on or machine(threads_per_run=1, workers=WORKERS),
                  "quick": self.quick,
                  "folds": self.folds, "seeds": list(self.seeds),
                  "fractions": list(self.fractions), "epochs_at_100": self.epochs,
                  "max_epochs": self.max_epochs, "pretrain_epochs": self.pretrain_epochs,
                  "fs": FS, "ptbxl_beats": PTBXL_BEATS,
                  "demo_patients_per_group": self.demo_patients, "pool_factor": self.pool_factor,
                  "auc": summary(self.jobs_dir, self.tasks, self.fractions, self.seeds,
                                 self.folds),
                  "jobs_done": len(done), "jobs_total": jobs_total,
                  "finetune_seconds": round(sum(json.loads(p.read_text())["seconds"]
                                                for p in done), 1),
                  "wall_time_s": wall_time_s,
                  "wall_time_total_s": wall_time_total_s or round(self.earlier_wall_s
                                                                  + wall_time_s, 1)}
        write_json(self.out / "label_efficiency.json", result)
        (self.out / "label_efficiency.md").write_text(markdown(result))
        plot(result, self.out / "label_efficiency.png")
        return result

    def elapsed(self):
        return f"{(time.time() - self.start) / 60:.1f} min"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench_label_efficiency", help="output folder")
    parser.add_argument("--ptbxl_dir", default=str(ROOT.parent / "shared" / "datasets" /
                                                   "ptbxl500"), help="PTB-XL records")
    parser.add_argument("--quick", action="store_true",
                        help="a small demo: 2 folds, 1 seed, 2 fractions")
    parser.add_argument("--tasks", default="",
                        help=f"comma-separated subset of {', '.join(TASKS)} (default: all)")
    parser.add_argument("--report_only", action="store_true",
                        help="write the table and figure of the finished runs, train nothing")
    args = parser.parse_args()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise SystemExit(f"error: --tasks: unknown {', '.join(unknown)}; the tasks are "
                         f"{', '.join(TASKS)}")
    bench = Bench(args.out, args.ptbxl_dir, args.quick, tasks=tasks)
    if args.report_only:
        stored = Path(args.out) / "label_efficiency.json"
        if not stored.exists():
            raise SystemExit(f"error: {stored} not found; run the benchmark first")
        previous = json.loads(stored.read_text())
        bench = Bench(args.out, args.ptbxl_dir, previous["quick"], tasks=tasks)
        result = bench.write(previous["jobs_total"], previous["wall_time_s"],
                             previous.get("wall_time_total_s", previous["wall_time_s"]),
                             ran_on=previous["machine"])
    else:
        bench.cohorts()
        result = bench.finetune(bench.pretrained())
    print(markdown(result))


if __name__ == "__main__":
    main()
