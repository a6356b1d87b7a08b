"""A training script's whole job: cohort -> split -> fit -> evaluate -> write.

`run_training(config)` runs one patient-level split (or CV_FOLDS folds, lvr.train.cross_validation):
it trains with lvr.train.loop.fit, tests the best checkpoint (lvr.report.results), and writes the
figures and provenance files. It is the only function here that reads the scripts' options;
everything it calls takes the values it uses.
"""
import contextlib
import dataclasses
import functools
import os
import time

import numpy as np
import torch
import torch.distributed as dist

from lvr.choices import ARGMAX_THRESHOLD, threshold_rule
from lvr.data.beats import StandardisedBeats
from lvr.data.cohort import load_cohort
from lvr.data.demo import resolve_data_dir
from lvr.data.geometry import cohort_geometry
from lvr.data.split import patient_split_indices, too_few_training_patients
from lvr.errors import UserError
from lvr.report.characteristics import characteristics_markdown, characteristics_table
from lvr.report.flow import participant_flow
from lvr.report.flow_figures import plot_flow
from lvr.report.html import write_report
from lvr.report.predictions import write_predictions
from lvr.report.results import (TEST_RESULTS, log_test_summary, probability_report,
                                write_probability_figure, write_test_outputs)
from lvr.report.training_figures import plot_training_curves
from lvr.run_folder import (atomic_write, disk_space_guard, invocation_record, output_lock,
                            prepare_output_dir, run_record, save_npy_atomic, total_wall_time,
                            write_json_atomic)
from lvr.stats.operating_point import (argmax_note, operating_point_report,
                                       validation_operating_point)
from lvr.stats.subgroups import performance_subgroups, subgroup_report
from lvr.train.checkpoints import add_to_checkpoint, load_checkpoint
from lvr.train.cross_validation import CV_SUMMARY, cross_validate
from lvr.train.distributed import barrier, distributed_setup, quiet_log
from lvr.train.finetune import check_source, checked_test_overlap, read_source
from lvr.train.loop import (BEST_CHECKPOINT, EXTRA_HISTORY_KEYS, HISTORY_KEYS, LAST_CHECKPOINT,
                            Recipe, fit, predict_logits)

FLOW_FILE = "participant_flow.json"
CHARACTERISTICS_FILE = "characteristics.json"


@dataclasses.dataclass
class RunContext:
    """What every split of one run shares: the cohort, its labels, and where this process runs."""
    cohort: object                  # lvr.data.cohort.Cohort
    data_dir: str
    labels: np.ndarray              # class of every beat for the run's task
    class_names: list
    x_all: StandardisedBeats        # every beat, read and standardised batch by batch
    device: torch.device
    rank: int = 0
    world_size: int = 1
    log: object = print
    task: str = "binary"
    init_from: object = None        # lvr.train.finetune.Source of INIT_FROM, read once, checked

    @property
    def writer(self):
        """Only rank 0 writes files."""
        return self.rank == 0


def run_training(config, log=print):
    """Train, select and test as configured: one split, or CV_FOLDS patient-level folds.

    Under torchrun every process runs this; only rank 0 prints and writes. Returns the test
    report (with CV: the cross-validation summary).
    """
    start_time = time.time()
    rank, world_size, device = distributed_setup(config["DEVICE"])
    if rank != 0:
        log = quiet_log
    output_dir, folds, resume = config["OUTPUT_DIR"], config["CV_FOLDS"], config["RESUME"]
    init_from = config.get("INIT_FROM")
    try:
        run = run_context(config["DATA_DIR"], config["TASK"], class_names=config["CLASS_NAMES"],
                          num_classes=config["NUM_CLASSES"], batch_size=config["BATCH_SIZE"],
                          normalisation=config["NORMALISATION"],
                          allow_pickle=config["ALLOW_PICKLE"], device=device, rank=rank,
                          world_size=world_size, log=log)
        if init_from and not (resume and not folds):
            # before the output folder is touched: a checkpoint that does not fit moves nothing
            run.init_from = checked_source(init_from, run.cohort,
                                           experiment=config["EXPERIMENT"],
                                           normalisation=config["NORMALISATION"])
        # drawn before the output folder is touched too: a cohort too small to split moves nothing
        parts = None if folds else trainable_split(run, config["TEST_SIZE"], config["VAL_SIZE"],
                                                   config["SEED"])
        if run.writer:
            prepare_run_folder(output_dir, resume=resume, cross_validation=bool(folds), log=log)
        barrier(world_size)
        recipe = Recipe.from_options(config)
        test_split = functools.partial(
            train_and_test, run, test_size=config["TEST_SIZE"], val_size=config["VAL_SIZE"],
            normalisation=config["NORMALISATION"], threshold=config["THRESHOLD"],
            bootstrap=config["BOOTSTRAP"], init_from=init_from,
            allow_pretraining_overlap=config.get("ALLOW_PRETRAINING_OVERLAP", False),
            html_report=config["REPORT"])

        def train_fold(k, parts, fold_dir, fold_resume):
            """Fold k of a cross-validation: the split's run with seed SEED + k."""
            return test_split(parts, fold_dir, recipe=dataclasses.replace(recipe,
                                                                          seed=recipe.seed + k),
                              run_config=dict(config, SEED=config["SEED"] + k),
                              resume=fold_resume, start_time=time.time())

        with (output_lock(output_dir) if run.writer else contextlib.nullcontext()), \
                disk_space_guard(output_dir, f"last complete checkpoint: "
                                             f"{os.path.join(output_dir, LAST_CHECKPOINT)}"):
            if folds:
                return cross_validate(train_fold, run, folds, output_dir,
                                      val_size=config["VAL_SIZE"], seed=config["SEED"],
                                      run_config=config, start_time=start_time,
                                      html_report=config["REPORT"])
            return test_split(parts, output_dir, recipe=recipe, run_config=config, resume=resume,
                              start_time=start_time)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(resume_hint(output_dir)) from None
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def resume_hint(output_dir):
    """What to do after Ctrl-C: where the last completed epoch is, and how to continue."""
    kept = [os.path.join(root, LAST_CHECKPOINT) for root, _, files in os.walk(output_dir)
            if LAST_CHECKPOINT in files] if os.path.isdir(output_dir) else []
    if not kept:
        return "no epoch was completed, so nothing is kept; run the command again"
    return (f"the last completed epoch is kept in {kept[0]}"
            + (f" (and {len(kept) - 1} more folds)" if len(kept) > 1 else "")
            + "; run the same command with --resume=True to continue from it")


def trainable_split(run, test_size, val_size, seed):
    """The patient-level split of the run's beats, or a UserError when it leaves a class too
    few training patients to learn from."""
    parts = patient_split_indices(run.labels, run.cohort.patient_ids, test_size, val_size, seed)
    problem = too_few_training_patients(run.labels, run.cohort.patient_ids, parts)
    if problem:
        raise UserError(problem)
    return parts


def run_context(data_dir, task, *, class_names, num_classes, batch_size, normalisation, device,
                allow_pickle=False, rank=0, world_size=1, log=print, model_file=None):
    """Load the cohort of `data_dir` (DATA_DIR; the demo when there is none) and describe the
    run of `task`; checks that need the cohort happen here. `class_names`: the CLASS_NAMES
    option (empty: the cohort's), `num_classes`: the classes the script trains, `batch_size`:
    BATCH_SIZE, which the processes share. Beats are normalised as `normalisation` says (the
    run's NORMALISATION, or an evaluated checkpoint's); `model_file`: the checkpoint an
    evaluation scores, whose classes the cohort must have."""
    data_dir = resolve_data_dir(data_dir, log=log)
    cohort = load_cohort(data_dir, allow_pickle=allow_pickle)
    for text in cohort.warnings:
        log(f"warning: {text}")
    if not cohort.patient_ids_given:
        log("warning: no cut_<GROUP>_patient_ids.npy files, so every beat counts as its own "
            "patient and the split is per beat (beats of one patient may land in train and test)")
    labels = cohort.labels(task)
    class_names = class_names_for(cohort, task, class_names, num_classes, model_file)
    if batch_size % world_size:
        raise UserError(f"BATCH_SIZE={batch_size} must be divisible by the "
                        f"{world_size} processes (each takes an equal share of every batch)")
    log(f"Data: {data_dir} ({cohort.spec['name']}), {len(labels)} beats x "
        f"{cohort.beats.shape[1]} leads x {cohort.beats.shape[2]} samples; task {task}: "
        f"{', '.join(class_names)}")
    if world_size > 1:
        log(f"Distributed: {world_size} processes ({dist.get_backend()}), "
            f"{batch_size // world_size} beats per process per batch")
    return RunContext(cohort=cohort, data_dir=data_dir, labels=labels, class_names=class_names,
                      x_all=StandardisedBeats(cohort.beats, normalisation=normalisation),
                      device=device, rank=rank, world_size=world_size, log=log, task=task)


def checked_source(path, cohort, *, experiment, normalisation):
    """INIT_FROM `path` read and checked against this run's network `experiment`, its beats'
    `normalisation` and its cohort (lvr.train.finetune)."""
    source = read_source(path)
    check_source(source, cohort, experiment=experiment, normalisation=normalisation)
    return source


def prepare_run_folder(output_dir, *, resume, cross_validation, log):
    """`output_dir` ready for this run (rank 0): an earlier run is kept, a resumed one checked;
    a finished cross-validation is not resumed (its folds are done: it would only be summarised
    again; a single run is checked by lvr.train.loop.fit, which may train it longer)."""
    if cross_validation and resume:
        if not os.path.isdir(output_dir):
            raise UserError(f"--resume=True but {output_dir} does not exist; start without "
                            f"--resume")
        if os.path.exists(os.path.join(output_dir, CV_SUMMARY)):
            raise UserError(f"--resume=True: the cross-validation in {output_dir} finished "
                            f"({CV_SUMMARY}); there is nothing to resume. To train longer, "
                            f"start a new run with a larger --epochs and without --resume "
                            f"(this one is then kept as {output_dir}.<timestamp>)")
        return
    prepare_output_dir(output_dir, resume, log, finished_file=CV_SUMMARY
                       if cross_validation else TEST_RESULTS, resume_file=LAST_CHECKPOINT)


def class_names_for(cohort, task, names, num_classes, model_file=None):
    """The class names of `task`: `names` (CLASS_NAMES) or the cohort's; their number must be
    the cohort's and `num_classes` (NUM_CLASSES, what the script trains, or the classes of the
    evaluated `model_file`)."""
    names = list(names or cohort.class_names(task))
    n_classes = int(cohort.labels(task).max()) + 1
    if model_file and n_classes != num_classes:
        raise UserError(f"the cohort's {task} task has {n_classes} classes ({names}) but "
                        f"{model_file} is a {num_classes}-class model; score it on a cohort "
                        f"with its classes")
    if len(names) != n_classes or n_classes != num_classes:
        raise UserError(f"the cohort's {task} task has {n_classes} classes ({names}) but this "
                        f"script trains NUM_CLASSES={num_classes}; use the other "
                        f"training script or fix cohort.json")
    return names


def train_and_test(run, parts, output_dir, *, recipe, run_config, resume, start_time, test_size,
                   val_size, normalisation, threshold, bootstrap, init_from,
                   allow_pretraining_overlap, html_report):
    """Train on parts['train'] as `recipe` says, select on parts['val'], test on parts['test']
    in output_dir; returns the test report.

    `run_config` (the run's options) is recorded in the checkpoints and run.json; the split was
    drawn with `test_size` and `val_size`; the beats are normalised `normalisation`; the
    2-class operating point is chosen by the `threshold` rule; CIs take `bootstrap` patient
    resamples; a new run starts from the checkpoint `init_from` (INIT_FROM, '' for none) whose
    training patients may be test patients only with `allow_pretraining_overlap`;
    `html_report`: write report.html."""
    cohort, labels = run.cohort, run.labels
    for name, idx in parts.items():
        run.log(split_summary(name, labels[idx], cohort.patient_ids[idx], len(labels)))
    tensors = {name: (run.x_all.rows(idx), torch.from_numpy(labels[idx]))
               for name, idx in parts.items()}
    if run.writer and not resume:
        write_json_atomic(os.path.join(output_dir, "split.json"),
                          split_record(run, parts, seed=recipe.seed, test_size=test_size,
                                       val_size=val_size))
    check_threshold_computable(labels[parts["val"]], cohort.patient_ids[parts["val"]],
                               num_classes=len(run.class_names), threshold=threshold)
    source = None
    if init_from and not resume:
        source = checked_test_overlap(
            run.init_from or checked_source(init_from, cohort, experiment=recipe.experiment,
                                            normalisation=normalisation),
            cohort, cohort.patient_ids[parts["test"]],
            allow_pretraining_overlap=allow_pretraining_overlap, log=run.log)
    outcome = fit(recipe, tensors["train"], tensors["val"], run.class_names, output_dir, resume,
                  in_channels=cohort.beats.shape[1], input_length=cohort.beats.shape[2],
                  device=run.device, task=run.task, normalisation=normalisation,
                  run_config=run_config, rank=run.rank, world_size=run.world_size, log=run.log,
                  init_from=source, started=start_time)
    checkpoint = os.path.join(output_dir, BEST_CHECKPOINT)
    point = chosen_operating_point(run, tensors["val"], cohort.patient_ids[parts["val"]],
                                   checkpoint, threshold=threshold, batch_size=recipe.batch_size)
    report, prob = evaluate(run, tensors["test"], parts["test"], checkpoint,
                            batch_size=recipe.batch_size, bootstrap=bootstrap, seed=recipe.seed,
                            operating_point=point)
    report.update({"best_epoch": outcome.best_epoch, "best_val_acc": outcome.best_val_acc,
                   "selected_by": recipe.select_by, "normalisation": normalisation,
                   "class_names": run.class_names, "processes": run.world_size})
    if run.writer:
        write_predictions(os.path.join(output_dir, "predictions.csv"), cohort, parts["test"],
                          labels[parts["test"]], prob, run.class_names)
        write_probability_figure(output_dir, report, labels[parts["test"]], prob,
                                 cohort.patient_ids[parts["test"]], run.class_names)
        write_cohort_tables(output_dir, run, {name: cohort.patient_ids[idx]
                                              for name, idx in parts.items()})
        write_run_outputs(run, output_dir, outcome, report, run_config=run_config,
                          start_time=start_time, html_report=html_report)
    barrier(run.world_size)
    return report


def split_summary(name, labels, patient_ids, total):
    counts = np.bincount(labels, minlength=int(labels.max()) + 1 if len(labels) else 0)
    return (f"  {name:<5} {len(np.unique(patient_ids)):>5} patients {len(labels):>6} beats "
            f"({100 * len(labels) / total:4.1f}%)  per class: {counts.tolist()}")


def split_record(run, parts, *, seed, test_size, val_size):
    """split.json: the patients of each split and what they were drawn from (by `seed`, with
    `test_size` and `val_size` of the patients for test and validation)."""
    cohort = run.cohort
    return {"seed": seed, "test_size": test_size, "val_size": val_size, "task": run.task,
            "data_dir": run.data_dir, "data_fingerprint": cohort.fingerprint(),
            "patient_ids_given": cohort.patient_ids_given,
            "cohort": cohort_geometry(cohort),
            **{name: sorted(set(cohort.patient_ids[idx].tolist())) for name, idx in parts.items()}}


def check_threshold_computable(y_val, val_patient_ids, *, num_classes, threshold):
    """A `threshold` rule (THRESHOLD) that reads the validation patients needs both classes
    among them; said before training, not after it."""
    if num_classes != 2 or threshold_rule(threshold)[0] in ("probability", "argmax"):
        return
    present = np.unique(y_val)
    if len(present) < 2:
        raise UserError(f"the validation split has patients of class {int(present[0])} only "
                        f"({len(np.unique(val_patient_ids))} patients), so THRESHOLD="
                        f"{threshold} cannot be chosen on it; use a cohort with more "
                        f"patients, a larger VAL_SIZE, or a fixed --threshold=0.5")


def chosen_operating_point(run, val, val_patient_ids, checkpoint, *, threshold, batch_size):
    """The 2-class operating point chosen by the `threshold` rule on the validation patients
    with the best checkpoint's probabilities (lvr.stats.operating_point), stored in that
    checkpoint; None for more classes, which classify by argmax."""
    if len(run.class_names) != 2:
        return None
    prob_val = best_probabilities(run, val[0], checkpoint, batch_size)
    point = validation_operating_point(val[1].numpy(), prob_val, val_patient_ids, threshold)
    if run.writer:
        add_to_checkpoint(checkpoint, operating_point=point)
    barrier(run.world_size)
    return point


def best_probabilities(run, x, checkpoint, batch_size, progress=None):
    """Class probabilities of the checkpoint's model for the beats `x` (`progress`: the
    description of a bar over them, or None)."""
    model, _ = load_checkpoint(checkpoint, map_location=run.device)
    logits = predict_logits(model, x, batch_size, run.device, run.rank, run.world_size,
                            progress=progress)
    return torch.softmax(logits, 1).numpy()


def evaluate(run, test, index, checkpoint, *, batch_size, bootstrap, seed, operating_point=None,
             progress="testing"):
    """Test metrics of the model in `checkpoint` on the cohort's beats `index` (their tensors:
    `test`), predicted `batch_size` beats at a time, with patient-bootstrap CIs (`bootstrap`
    resamples drawn by `seed`), patient-level metrics, the metrics at `operating_point` (2
    classes; chosen before the test set was seen) and per subgroup and covariate level.
    `progress`: the description of the bar over the beats scored."""
    x_test, y_test = test
    cohort, y = run.cohort, y_test.numpy()
    patient_ids = cohort.patient_ids[index]
    prob = best_probabilities(run, x_test, checkpoint, batch_size, progress=progress)
    report = probability_report(y, prob, patient_ids, run.class_names, bootstrap, seed)
    report["operating_point"] = (
        operating_point_report(y, prob, patient_ids, operating_point, bootstrap, seed)
        if operating_point else argmax_note(len(run.class_names)))
    report["subgroups"] = subgroup_report(
        y, prob, patient_ids, np.asarray(cohort.spec["groups"])[cohort.group_index[index]],
        cohort.patient_table, performance_subgroups(cohort.spec),
        threshold=ARGMAX_THRESHOLD if (operating_point or {}).get("threshold") is None
        else operating_point["threshold"],
        n_boot=bootstrap, seed=seed)
    return report, prob


def write_cohort_tables(output_dir, run, split):
    """participant_flow.json and .png, characteristics.json and .md of the run's `split`
    (split.json's patient lists)."""
    cohort, task = run.cohort, run.task
    flow = participant_flow(cohort, task, split, run.class_names)
    write_json_atomic(os.path.join(output_dir, FLOW_FILE), flow)
    plot_flow(os.path.join(output_dir, "participant_flow.png"), flow)
    table = characteristics_table(cohort, task, split, run.class_names)
    write_json_atomic(os.path.join(output_dir, CHARACTERISTICS_FILE), table)
    with atomic_write(os.path.join(output_dir, "characteristics.md")) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(characteristics_markdown(table))


def write_run_outputs(run, output_dir, outcome, report, *, run_config, start_time, html_report):
    """Curves, test results, figures and run.json (recording `run_config`, and the history of
    the run's invocations: the interrupted ones, then this one, begun at `start_time`) of a
    finished run (rank 0 only); `html_report`: report.html too."""
    history = outcome.history
    for key in HISTORY_KEYS + EXTRA_HISTORY_KEYS:
        save_npy_atomic(os.path.join(output_dir, f"{key}.npy"), np.asarray(history[key]))
    plot_training_curves(output_dir, *(history[key] for key in HISTORY_KEYS),
                         best_epoch=outcome.best_epoch)
    write_test_outputs(output_dir, report, run.class_names)
    history = outcome.earlier_runs + [invocation_record(start_time, outcome.epochs_trained)]
    wall = total_wall_time(history)
    point = report.get("operating_point") or {}
    write_json_atomic(os.path.join(output_dir, "run.json"), run_record(
        run_config, wall, cohort=run.cohort, data_dir=run.data_dir, device=run.device,
        world_size=run.world_size, init_from=outcome.init_from, history=history,
        operating_point={key: point.get(key) for key in ("rule", "threshold", "chosen_on")}
        if point.get("threshold") is not None else None))
    log_test_summary(report, run.class_names, output_dir, wall, run.log,
                     model_file=BEST_CHECKPOINT)
    if html_report:
        write_report(output_dir, log=run.log)
