"""Is the model worth using? Every network of the project, the PTB-XL benchmark's reference
networks, each input normalisation of the default and the conventional ECG-measurement baseline,
trained and tested on the same patient-level folds of five tasks.

    python bench/model_bench.py                  # the full benchmark (docs/benchmark.md)
    python bench/model_bench.py --quick          # a small demo, 3 folds, 2 epochs (a slow test)
    python bench/model_bench.py --report_only    # the table of what is finished so far

Two phases, each job written as it finishes; run the command again to resume where it stopped.

1. Recipe. The default (ca_ms_v2) and the best reference of the PTB-XL benchmark on its
   superdiagnostic task (resnet1d_wang, chosen before any run here) train at learning rates 1e-4
   and 1e-3 on every task and fold. Every epoch's validation predictions are kept, so each
   checkpoint rule (SELECT_BY: validation accuracy, AUC or loss) is scored on the same runs:
   the validation patients are halved, a rule picks its epoch on one half and is scored by the
   patient-level AUC of the other half (and the other way round). The recipe with the highest
   mean score wins; the test folds are not looked at.
2. Models. Every model trains with the winning recipe (and the default also with the original
   recipe) by the training scripts' own 5-fold cross-validation (--cv_folds), so every model
   sees the same folds; the ECG-measurement baseline fits on each fold's training patients.

Report per task and model: mean +- sd over folds of the patient-level test AUC (4 classes:
macro one-vs-rest); the pooled out-of-fold AUC (every patient predicted once) with a 95%
patient-bootstrap CI; the paired p against the default at the original recipe on the pooled
patients (DeLong for 2 classes, a paired patient bootstrap of the macro AUC for 4); parameters
and training seconds per fold. Written to OUT/model_bench.json and OUT/model_bench.md.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from common import ROOT, machine, script_env

FOLDS = 5
EPOCHS = 10                    # every network, every fold: the equal training budget
BOOTSTRAP = 200                # patient resamples of each fold's CIs (the pooled CI: POOLED_BOOT)
POOLED_BOOT = 1000
FS = 250                       # Hz: beats of 250 samples (0.3 s before R to 0.7 s after)
PTBXL_BEATS = "random:2"       # beats per PTB-XL record
DEMO_PATIENTS = 30             # demo patients per group (4 groups)
UNSEEN_DEMO_SEED = 7           # the unseen demo cohort: another generator seed, a Q-wave sign
WORKERS = 2                    # jobs at once, each on one thread (2 cores)
SEED = 42
LRS = (1e-4, 1e-3)
RULES = ("val_acc", "val_auc", "val_loss")
SEED_RECIPE = {"lr": 1e-4, "select_by": "val_acc"}      # the original's
RECIPE_MODELS = ("ca_ms_v2", "resnet1d_wang")
DEFAULT = "ca_ms_v2"                                     # the default when the bench was made
OURS = ("baseline", "ca", "ms", "ca_ms", "ca_ms_v2")
REFERENCES = ("resnet1d_wang", "xresnet1d101", "inception1d")
OTHER_NORMALISATIONS = ("per_beat", "none")
FEATURES = "ecg_features"      # the row of the conventional baseline
FEATURE_DELINEATION = "II,V2,V5"   # its wave boundaries: 4x faster than all 12 leads
BINARY_SCRIPT, FOUR_CLASS_SCRIPT = "train_MCL_ResNet_1D_class2.py", "train_MCL_ResNet_1D_class4.py"

# name -> (how the cohort is made, training script)
TASKS = {
    "demo": ("demo", BINARY_SCRIPT),
    "demo_q_unseen": ("demo_q", BINARY_SCRIPT),
    "ptbxl_mi_norm": ("ptbxl:mi_norm", BINARY_SCRIPT),
    "ptbxl_lvh_norm": ("ptbxl:lvh_norm", BINARY_SCRIPT),
    "ptbxl_superclass4": ("ptbxl:superclass4", FOUR_CLASS_SCRIPT),
}
QUICK = {"tasks": ("demo",), "folds": 3, "epochs": 2, "demo_patients": 8,
         "bootstrap": 20, "pooled_boot": 50}


# ----------------------------------------------------------------------------- cohorts

def make_cohort(kind, folder, ptbxl_dir, demo_patients):
    """The cohort of a task in `folder`, made once (its commands are the README's)."""
    if (folder / "cohort.json").exists():
        return
    common = [f"--output_dir={folder}"]
    if kind.startswith("ptbxl:"):
        command = ["prepare_data.py", f"--ptbxl_dir={ptbxl_dir}", f"--task={kind[6:]}",
                   f"--fs={FS}", f"--beats={PTBXL_BEATS}", "--workers=2", *common]
    else:
        command = ["demo_cohort.py", f"--fs={FS}", f"--n_patients={demo_patients}", *common]
        if kind == "demo_q":
            command += ["--lvr_wave=Q", f"--seed={UNSEEN_DEMO_SEED}"]
    run_script(command, folder.parent / f"{folder.name}.log")


def run_script(command, log_path, threads="1"):
    with open(log_path, "w", encoding="utf-8") as handle:
        done = subprocess.run([sys.executable, *command], cwd=ROOT, env=script_env(threads),
                              stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = Path(log_path).read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}); "
                           f"{log_path}:\n{tail}")


# ----------------------------------------------------------------------------- phase 1: recipe

def recipe_job(task, script, cohort_dir, model, lr, fold, folds, epochs, out_path):
    """Train `model` at `lr` on fold `fold` and keep every epoch's validation logits."""
    import torch

    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(1)
    from lvr.data.beats import StandardisedBeats
    from lvr.data.cohort import load_cohort
    from lvr.train.cross_validation import cv_fold_parts
    from lvr.train.loop import fit
    from lvr.train.loop import Recipe
    namespace = script_constants(script)
    config = dict(namespace, DATA_DIR=str(cohort_dir), EXPERIMENT=model, LR=lr, EPOCHS=epochs,
                  DEVICE="cpu", CV_FOLDS=folds, SEED=SEED + fold)
    cohort = load_cohort(str(cohort_dir))
    labels = cohort.labels(config["TASK"])
    parts = list(cv_fold_parts(labels, cohort.patient_ids, folds, config["VAL_SIZE"], SEED))[fold]
    x_all = StandardisedBeats(cohort.beats, normalisation=config["NORMALISATION"])
    epochs_logits = []
    start = time.time()
    with tempfile.TemporaryDirectory() as folder:
        fit(Recipe.from_options(config),
            (x_all.rows(parts["train"]), torch.from_numpy(labels[parts["train"]])),
            (x_all.rows(parts["val"]), torch.from_numpy(labels[parts["val"]])),
            list(cohort.class_names(config["TASK"])), folder, False,
            in_channels=cohort.beats.shape[1], input_length=cohort.beats.shape[2],
            device=torch.device("cpu"), task=config["TASK"],
            normalisation=config["NORMALISATION"], run_config=config, log=lambda *_: None,
            on_epoch=lambda epoch, model, logits: epochs_logits.append(logits.tolist()))
    result = {"task": task, "model": model, "lr": lr, "fold": fold,
              "label_smoothing": config["LABEL_SMOOTHING"],
              "val_labels": labels[parts["val"]].tolist(),
              "val_patients": cohort.patient_ids[parts["val"]].tolist(),
              "val_logits": epochs_logits, "seconds": round(time.time() - start, 1)}
    write_json(out_path, result)
    return out_path


def script_constants(script):
    """The UPPER_CASE constants of a training script, as its defaults."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(Path(script).stem, ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: getattr(module, name) for name in dir(module) if name.isupper()}


def rule_scores(job, seed=SEED):
    """Split-half validation score of each SELECT_BY rule for one recipe job: the rule picks its
    epoch on one half of the validation patients and the other half's patient-level AUC at that
    epoch is its score; the mean of both directions."""
    import torch

    from lvr.stats.metrics import macro_roc_auc, patient_level_arrays
    from lvr.train.loop import LabelSmoothingLoss, selection_score
    y = np.asarray(job["val_labels"])
    patients = np.asarray(job["val_patients"]).astype(str)
    logits = torch.tensor(job["val_logits"])                   # (epochs, beats, classes)
    halves = patient_halves(y, patients, seed)
    loss_fn = LabelSmoothingLoss(logits.shape[2], job["label_smoothing"])
    scores = {}
    for rule in RULES:
        directions = []
        for pick, score in ((0, 1), (1, 0)):
            chosen = halves == pick
            values = []
            for epoch_logits in logits:
                part, target = epoch_logits[chosen], torch.from_numpy(y[chosen])
                prob = torch.softmax(part, 1).numpy()
                values.append(selection_score(
                    rule, float((part.argmax(1) == target).float().mean()),
                    float(loss_fn(part, target)), macro_roc_auc(y[chosen], prob)))
            epoch = int(np.argmax(values))        # the first of equal scores, as fit keeps it
            held = halves == score
            prob = torch.softmax(logits[epoch][held], 1).numpy()
            _, y_patient, p_patient = patient_level_arrays(y[held], prob, patients[held])
            directions.append(macro_roc_auc(y_patient, p_patient))
        scores[rule] = float(np.nanmean(directions))
    return scores


def patient_halves(y, patients, seed):
    """0 or 1 per beat: the validation patients of each class split in two at random."""
    rng = np.random.default_rng(seed)
    half_of = {}
    for cls in np.unique(y):
        members = rng.permutation(np.unique(patients[y == cls]))
        half_of.update({p: i % 2 for i, p in enumerate(members)})
    return np.array([half_of[p] for p in patients])


def chosen_recipe(recipe_rows):
    """The (lr, rule) with the highest mean split-half score over models, tasks and folds; the
    original's recipe wins a tie."""
    means = {}
    for lr in LRS:
        for rule in RULES:
            values = [row["scores"][rule] for row in recipe_rows if row["lr"] == lr]
            means[(lr, rule)] = float(np.nanmean(values)) if values else float("nan")
    seed_key = (SEED_RECIPE["lr"], SEED_RECIPE["select_by"])
    best = max(means, key=lambda key: (means[key], key == seed_key))
    return {"lr": best[0], "select_by": best[1]}, means


# ----------------------------------------------------------------------------- phase 2: models

def model_rows(recipe):
    """(row name, training options) of every network row, the default at the original recipe
    first; a row equal to another is not repeated."""
    def options(experiment, normalisation="per_lead", chosen=recipe):
        return {"experiment": experiment, "normalisation": normalisation, "lr": chosen["lr"],
                "select_by": chosen["select_by"]}
    rows = {f"{DEFAULT} (original recipe)": options(DEFAULT, chosen=SEED_RECIPE)}
    for name in OURS + REFERENCES:
        rows[name] = options(name)
    for normalisation in OTHER_NORMALISATIONS:
        rows[f"{DEFAULT} {normalisation}"] = options(DEFAULT, normalisation)
    unique = {}
    for name, opts in rows.items():
        if opts not in unique.values():
            unique[name] = opts
    return unique


def folder_name(opts):
    return (f"{opts['experiment']}-{opts['normalisation']}-lr{opts['lr']:g}-"
            f"{opts['select_by']}")


def network_job(task, script, cohort_dir, opts, run_dir, folds, epochs, bootstrap):
    """One network's cross-validation on one task, by the training script (resumable); False if
    it was finished earlier."""
    if (run_dir / "cv_summary.json").exists():
        return False
    command = [script, f"--data_dir={cohort_dir}", f"--output_dir={run_dir}",
               f"--cv_folds={folds}", f"--epochs={epochs}", f"--bootstrap={bootstrap}",
               f"--seed={SEED}", "--device=cpu", *(f"--{k}={v}" for k, v in opts.items())]
    if run_dir.exists():
        command.append("--resume=True")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    run_script(command, run_dir.parent / f"{run_dir.name}.log")
    return True


def features_job(network_dir, out_dir, folds, bootstrap):
    """The ECG-measurement baseline on each fold's split of a finished network run; the folds
    after the first reuse its measurements (every fold's split covers every beat)."""
    for k in range(1, folds + 1):
        target = out_dir / f"fold_{k}"
        if (target / "test_eval_results.json").exists():
            continue
        if target.exists():
            shutil.rmtree(target)        # an unfinished fit of the bench's own; redone whole
        target.parent.mkdir(parents=True, exist_ok=True)
        reuse = [f"--measurements={out_dir / 'fold_1'}"] if k > 1 else []
        run_script(["ecg_features_baseline.py", f"--train_dir={network_dir / f'fold_{k}'}",
                    f"--output_dir={target}", f"--bootstrap={bootstrap}",
                    f"--delineation_leads={FEATURE_DELINEATION}", *reuse],
                   out_dir / f"fold_{k}.log")
    return out_dir


# ----------------------------------------------------------------------------- the table

def pooled_predictions(run_dir, folds):
    """(patients, labels, probabilities (patients, classes)) of every fold's test patients."""
    import pandas as pd

    from lvr.stats.metrics import patient_level_arrays
    tables = [pd.read_csv(run_dir / f"fold_{k}" / "predictions.csv", dtype={"patient": str},
                          keep_default_na=False) for k in range(1, folds + 1)]
    table = pd.concat(tables, ignore_index=True)
    prob = table[[c for c in table.columns if c.startswith("prob_")]].to_numpy()
    return patient_level_arrays(table["true_label"].to_numpy(), prob, table["patient"].to_numpy())


def fold_aucs(run_dir, folds):
    values = []
    for k in range(1, folds + 1):
        report = json.loads((run_dir / f"fold_{k}" / "test_eval_results.json").read_text())
        auc = report.get("patient_level", report)["roc_auc"]
        values.append(auc["macro"] if isinstance(auc, dict) else auc)
    return values


def fold_seconds(run_dir, folds):
    seconds = []
    for k in range(1, folds + 1):
        path = run_dir / f"fold_{k}" / "run.json"
        if path.exists():
            seconds.append(json.loads(path.read_text()).get("wall_time_s"))
    return float(np.mean(seconds)) if seconds and None not in seconds else None


def parameters(run_dir):
    """A network's parameters, or the logistic regression's coefficients and intercepts."""
    from lvr.train.checkpoints import load_checkpoint
    from model import parameter_count
    path = run_dir / "fold_1" / "best_model.pth"
    if path.exists():
        return parameter_count(load_checkpoint(path)[0])
    fitted = run_dir / "fold_1" / "baseline_model.json"
    if fitted.exists():
        model = json.loads(fitted.read_text())
        return int(np.size(model["coef"]) + np.size(model["intercept"]))
    return None


def resampled_macro_aucs(y, probs, n_boot, seed=SEED):
    """Macro AUCs (n_boot,) of each of `probs` on the same patient resamples (rows of y drawn
    with replacement, computed at once from counts); resamples lacking a class are drawn again."""
    from lvr.stats.metrics import weighted_roc_auc
    rng = np.random.default_rng(seed)
    kept = [[] for _ in probs]
    while sum(len(v) for v in kept[0]) < n_boot:
        weights = np.stack([np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y))
                            for _ in range(n_boot)]).astype(np.float64)
        aucs = [np.mean([weighted_roc_auc(y == k, prob[:, k], weights) for k in
                         ([1] if prob.shape[1] == 2 else range(prob.shape[1]))], axis=0)
                for prob in probs]
        finite = np.all([np.isfinite(a) for a in aucs], axis=0)
        for store, a in zip(kept, aucs, strict=True):
            store.append(a[finite])
    return [np.concatenate(v)[:n_boot] for v in kept]


def bootstrap_auc(y, prob, n_boot, seed=SEED):
    """Patient-bootstrap 95% CI of the (macro) AUC."""
    draws, = resampled_macro_aucs(y, [prob], n_boot, seed)
    return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]


def paired_p(y, prob_a, prob_b, n_boot, seed=SEED):
    """(two-sided p of AUC(a) = AUC(b) on the same patients, None or why there is no p): DeLong
    for 2 classes, a paired patient bootstrap of the macro AUC difference for more."""
    from lvr.stats.delong import delong_paired_test
    if prob_a.shape[1] == 2:
        test = delong_paired_test(y, prob_a[:, 1], prob_b[:, 1])
        return test["p"], test["reason"]
    a, b = resampled_macro_aucs(y, [prob_a, prob_b], n_boot, seed)
    differences = a - b
    # (k + 1) / (B + 1): a finite bootstrap cannot show p = 0 (Davison & Hinkley 1997, 4.2)
    tail = min((differences <= 0).sum(), (differences >= 0).sum())
    return float(min(1.0, 2 * (tail + 1) / (len(differences) + 1))), None


def task_rows(task_dir, rows, folds, pooled_boot):
    """The report rows of one task, for the models whose folds are all finished."""
    reference_name = f"{DEFAULT} (original recipe)"
    found, pooled = {}, {}
    for name, folder in rows.items():
        run_dir = task_dir / folder
        # run.json is the last file of a finished fold (of a network and of the baseline alike);
        # another worker may be writing a fold's other files right now
        if not all((run_dir / f"fold_{k}" / "run.json").exists() for k in range(1, folds + 1)):
            continue
        pooled[name] = pooled_predictions(run_dir, folds)
        values = fold_aucs(run_dir, folds)
        patients, y, prob = pooled[name]
        from lvr.stats.metrics import macro_roc_auc
        found[name] = {"fold_auc_mean": float(np.mean(values)),
                       "fold_auc_sd": float(np.std(values, ddof=1)), "fold_aucs": values,
                       "pooled_auc": macro_roc_auc(y, prob),
                       "pooled_auc_ci95": bootstrap_auc(y, prob, pooled_boot),
                       "patients": int(len(patients)), "parameters": parameters(run_dir),
                       "seconds_per_fold": fold_seconds(run_dir, folds)}
    if reference_name in pooled:
        ref_patients, ref_y, ref_prob = pooled[reference_name]
        for name, (patients, y, prob) in pooled.items():
            if name == reference_name:
                continue
            if list(patients) != list(ref_patients):
                raise RuntimeError(f"{task_dir}: {name} and {reference_name} predicted other "
                                   f"patients; the folds must be the same")
            p, reason = paired_p(y, prob, ref_prob, pooled_boot)
            found[name]["p_vs_default"] = p
            if reason:
                found[name]["p_vs_default_reason"] = reason
    return found


def significant(row):
    """p < 0.05 against the default; a p that is missing or not computable is not."""
    p = row.get("p_vs_default")
    return p is not None and p < 0.05


def p_cell(row):
    if row.get("p_vs_default_reason"):
        return "not computable"
    p = row.get("p_vs_default")
    return "" if p is None else f"{p:.3g}"


def decision(tasks):
    """Which rows beat the default at the original recipe: higher pooled AUC on most tasks and
    on no task significantly (p < 0.05) worse."""
    names = {name for rows in tasks.values() for name in rows} - {f"{DEFAULT} (original recipe)"}
    verdicts = {}
    for name in sorted(names):
        higher = worse = compared = 0
        gains = []
        for rows in tasks.values():
            reference = rows.get(f"{DEFAULT} (original recipe)")
            row = rows.get(name)
            if not reference or not row:
                continue
            compared += 1
            gains.append(row["pooled_auc"] - reference["pooled_auc"])
            higher += row["pooled_auc"] > reference["pooled_auc"]
            worse += row["pooled_auc"] < reference["pooled_auc"] and significant(row)
        verdicts[name] = {"tasks": compared, "higher": higher, "significantly_worse": worse,
                          "mean_gain": float(np.mean(gains)) if gains else None,
                          "better": compared > 0 and higher > compared / 2 and worse == 0}
    return verdicts


def markdown(result):
    lines = [f"Benchmark of {result['machine']['date'][:10]} ({result['machine']['cpu']}, "
             f"{result['machine']['cores']} cores; {result['folds']} folds, {result['epochs']} "
             f"epochs; quick: {result['quick']}).", ""]
    recipe = result.get("recipe")
    if recipe:
        lines += ["Recipe (split-half validation AUC, mean over tasks, folds and "
                  f"{', '.join(RECIPE_MODELS)}):", "", "| lr | " + " | ".join(RULES) + " |",
                  "|---|" + "---:|" * len(RULES)]
        for lr in LRS:
            lines.append(f"| {lr:g} | " + " | ".join(
                f"{recipe['scores'][f'{lr:g} {rule}']:.4f}" for rule in RULES) + " |")
        lines += ["", f"Chosen: lr {recipe['chosen']['lr']:g}, select by "
                      f"{recipe['chosen']['select_by']}.", ""]
    lines += [summary_table(result), ""]
    for task, rows in result["tasks"].items():
        lines += [f"**{task}**", "", "| model | AUC per fold (mean ± sd) | pooled AUC [95% CI] | "
                  "p vs default | parameters | s / fold |", "|---|---:|---:|---:|---:|---:|"]
        for name, row in sorted(rows.items(), key=lambda item: (-item[1]["pooled_auc"], item[0])):
            low, high = row["pooled_auc_ci95"]
            params, seconds = row["parameters"], row["seconds_per_fold"]
            lines.append(f"| {name} | {row['fold_auc_mean']:.3f} ± {row['fold_auc_sd']:.3f} | "
                         f"{row['pooled_auc']:.3f} [{low:.3f}, {high:.3f}] | "
                         f"{p_cell(row)} | "
                         f"{'' if params is None else f'{params:,}'} | "
                         f"{'' if seconds is None else round(seconds)} |")
        lines.append("")
    lines += ["Against `ca_ms_v2` at the original recipe, over tasks: pooled AUC higher on how "
              "many, significantly lower (p < 0.05) on how many, mean difference.", "",
              "| model | higher | significantly lower | mean AUC difference | better |",
              "|---|---:|---:|---:|---|"]
    ranked = sorted(result["decision"].items(),
                    key=lambda item: (-(item[1]["mean_gain"] or 0), item[0]))
    for name, v in ranked:
        gain = "" if v["mean_gain"] is None else f"{v['mean_gain']:+.3f}"
        lines.append(f"| {name} | {v['higher']} of {v['tasks']} | {v['significantly_worse']} | "
                     f"{gain} | {'yes' if v['better'] else 'no'} |")
    return "\n".join(lines) + "\n"


def summary_table(result):
    """Pooled out-of-fold AUC of every model (rows) on every task (columns); * marks p < 0.05
    against the default at the original recipe."""
    tasks = list(result["tasks"])
    names = sorted({name for rows in result["tasks"].values() for name in rows},
                   key=lambda name: (-np.mean([rows[name]["pooled_auc"] for rows in
                                               result["tasks"].values() if name in rows]), name))
    lines = ["| model | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for name in names:
        cells = []
        for task in tasks:
            row = result["tasks"][task].get(name)
            star = "*" if row and significant(row) else ""
            cells.append(f"{row['pooled_auc']:.3f}{star}" if row else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- driver

def write_json(path, value):
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


class Bench:
    def __init__(self, out, ptbxl_dir, quick, log=print):
        self.out, self.ptbxl_dir, self.quick, self.log = Path(out).resolve(), ptbxl_dir, quick, log
        self.said = set()   # reasons of tests that are not computable, logged once
        self.tasks = QUICK["tasks"] if quick else tuple(TASKS)
        self.folds = QUICK["folds"] if quick else FOLDS
        self.epochs = QUICK["epochs"] if quick else EPOCHS
        self.bootstrap = QUICK["bootstrap"] if quick else BOOTSTRAP
        self.pooled_boot = QUICK["pooled_boot"] if quick else POOLED_BOOT
        self.demo_patients = QUICK["demo_patients"] if quick else DEMO_PATIENTS
        self.start = time.time()

    def cohort(self, task):
        return self.out / "cohorts" / task

    def prepare(self):
        (self.out / "cohorts").mkdir(parents=True, exist_ok=True)
        for task in self.tasks:
            kind = TASKS[task][0]
            if kind.startswith("ptbxl:") and not (Path(self.ptbxl_dir) /
                                                   "ptbxl_database.csv").exists():
                raise SystemExit(f"error: --ptbxl_dir={self.ptbxl_dir} holds no "
                                 f"ptbxl_database.csv; the PTB-XL tasks need the records")
            make_cohort(kind, self.cohort(task), self.ptbxl_dir, self.demo_patients)
        self.log(f"cohorts ready in {self.out / 'cohorts'}")

    def recipe(self):
        folder = self.out / "recipe"
        folder.mkdir(parents=True, exist_ok=True)
        jobs = [(task, model, lr, fold) for task in self.tasks for model in RECIPE_MODELS
                for lr in LRS for fold in range(self.folds)]
        todo = [job for job in jobs if not self.recipe_path(*job).exists()]
        self.log(f"recipe: {len(jobs) - len(todo)} of {len(jobs)} trainings done earlier")
        with ProcessPoolExecutor(WORKERS, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(recipe_job, task, TASKS[task][1], self.cohort(task), model,
                                   lr, fold, self.folds, self.epochs, self.recipe_path(
                                       task, model, lr, fold))
                       for task, model, lr, fold in todo]
            for i, future in enumerate(futures, 1):
                self.log(f"recipe {i}/{len(todo)}: {Path(future.result()).name} "
                         f"({self.elapsed()})")
        rows = []
        for job in jobs:
            stored = json.loads(self.recipe_path(*job).read_text())
            rows.append({"task": job[0], "model": job[1], "lr": job[2], "fold": job[3],
                         "seconds": stored["seconds"], "scores": rule_scores(stored)})
        chosen, means = chosen_recipe(rows)
        return {"chosen": chosen, "scores": {f"{lr:g} {rule}": value
                                             for (lr, rule), value in means.items()},
                "runs": rows}

    def recipe_path(self, task, model, lr, fold):
        return self.out / "recipe" / f"{task}-{model}-lr{lr:g}-fold{fold + 1}.json"

    def models(self, recipe):
        options = model_rows(recipe["chosen"])
        rows = {name: folder_name(opts) for name, opts in options.items()}
        rows[FEATURES] = FEATURES
        # task by task, the slowest networks first, so the two workers finish a task together
        jobs = [(task, name) for task in self.tasks for name in sorted(
            options, key=lambda name: name not in ("inception1d", "xresnet1d101"))]
        with ThreadPoolExecutor(WORKERS) as pool:
            futures = {pool.submit(network_job, task, TASKS[task][1], self.cohort(task),
                                   options[name], self.out / "runs" / task / rows[name],
                                   self.folds, self.epochs, self.bootstrap): (task, name)
                       for task, name in jobs}
            earlier = 0
            for i, future in enumerate(futures, 1):
                if not future.result():
                    earlier += 1
                    continue
                task, name = futures[future]
                self.log(f"models {i}/{len(jobs)}: {task} {name} ({self.elapsed()})")
                self.write(recipe, rows)      # the table so far, readable while the rest runs
            if earlier:
                self.log(f"models: {earlier} of {len(jobs)} cross-validations done earlier")
        default_dir = folder_name(options[f"{DEFAULT} (original recipe)"])
        for task in self.tasks:
            features_job(self.out / "runs" / task / default_dir,
                         self.out / "runs" / task / FEATURES, self.folds, self.bootstrap)
            self.log(f"ECG-measurement baseline: {task} ({self.elapsed()})")
        return self.write(recipe, rows)

    def write(self, recipe, rows, wall_time_s=None):
        tasks = {task: task_rows(self.out / "runs" / task, rows, self.folds, self.pooled_boot)
                 for task in self.tasks}
        result = {"machine": machine(threads_per_run=1, workers=WORKERS), "quick": self.quick,
                  "folds": self.folds, "epochs": self.epochs, "fs": FS,
                  "ptbxl_beats": PTBXL_BEATS, "demo_patients_per_group": self.demo_patients,
                  "recipe": recipe, "rows": rows, "tasks": tasks, "decision": decision(tasks),
                  "wall_time_s": wall_time_s or round(time.time() - self.start, 1)}
        for task, task_found in tasks.items():
            for name, row in task_found.items():
                said = (task, name, row.get("p_vs_default_reason"))
                if said[2] and said not in self.said:
                    self.said.add(said)
                    self.log(f"{task} {name}: no p against the default, DeLong's test is "
                             f"{said[2]}")
        write_json(self.out / "model_bench.json", result)
        (self.out / "model_bench.md").write_text(markdown(result))
        return result

    def elapsed(self):
        return f"{(time.time() - self.start) / 60:.1f} min"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench_models", help="output folder")
    parser.add_argument("--ptbxl_dir", default=str(ROOT.parent / "shared" / "datasets" /
                                                   "ptbxl500"), help="PTB-XL records")
    parser.add_argument("--quick", action="store_true", help="a small demo, 3 folds, 2 epochs")
    parser.add_argument("--report_only", action="store_true",
                        help="write the table of the finished jobs, train nothing")
    args = parser.parse_args()
    if args.report_only:
        path = Path(args.out) / "model_bench.json"
        if not path.exists():
            raise SystemExit(f"error: {path} not found; the recipe phase writes it when it ends")
        stored = json.loads(path.read_text())
        bench = Bench(args.out, args.ptbxl_dir, stored["quick"])
        result = bench.write(stored["recipe"], stored["rows"], stored["wall_time_s"])
    else:
        bench = Bench(args.out, args.ptbxl_dir, args.quick)
        bench.prepare()
        recipe = bench.recipe()
        bench.log(f"recipe chosen: lr {recipe['chosen']['lr']:g}, "
                  f"{recipe['chosen']['select_by']}")
        result = bench.models(recipe)
    print(markdown(result))


if __name__ == "__main__":
    main()
