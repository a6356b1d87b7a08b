"""The cohort writer: every record of a table -> its beats, in a pool of worker processes
-> a cohort folder.

The records come from lvr/prepare/record_tables.py, each record's beats from
lvr/prepare/record_beats.py; a record that fails is rejected with its reason and never stops the
others.

Output (OUTPUT_DIR): cut_<GROUP>.npy float32 (N, 12, T) in mV, filtered, not standardised;
cut_<GROUP>_patient_ids.npy (N,), int64 or fixed-width text; cohort.json; beats_manifest.csv
(group, patient_id, record, beat_index among the record's complete beats, r_peak_sample at FS
in the whole record, row in cut_<GROUP>.npy; -1 for BEATS=median); prepare_summary.json (what
was read, kept, rejected and why); patients.csv (patient_id and the patient's covariates: PTB-XL's
age, sex and device, or a user's table's columns other than record, patient_id and group), when
there are any. Patients with records in groups of different class are left
out whole: the training code needs one class per patient.

    python prepare_data.py --ptbxl_dir=DIR --task=mi_norm --output_dir=OUT
    python prepare_data.py --table=records.csv --task=binary:CONTROL,LVR --output_dir=OUT
"""
import csv
import re
import time
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lvr.progress import progress_bar
from lvr.errors import UserError
from lvr.prepare.formats import FORMAT_NAMES, RecordRejected
from lvr.leads import LEAD_NAMES
from lvr.prepare.record_beats import checked_options, detector_problem, record_beats
from lvr.data.patients import PATIENTS_FILE
from lvr.prepare.record_tables import (class_conflict_rejections, cohort_name, covariate_columns,
                               input_table, patients_in_several_classes, task_labels, to_json)
from lvr.run_folder import (atomic_write, library_versions, unwritable_folder_problem,
                            write_json_atomic)

# fewer patients in a class cannot be split by patient at all (lvr.data.split.patient_split_indices)
MIN_PATIENTS_PER_CLASS = 2
OUTPUT_FILES = ("cohort.json", "beats_manifest.csv", "prepare_summary.json", PATIENTS_FILE)
DERIVED_NOTE = "derived leads"  # start of the note lvr.prepare.formats adds to an 8-lead record


# ---------------------------------------------------------------- worker pool

def prepared_record(job):
    """record_beats for one (path, options) job; any failure becomes the record's reason."""
    path, options = job
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = record_beats(path, options)
            reason = None
        except RecordRejected as rejected:
            result, reason = None, str(rejected)
        except Exception as error:  # one bad record must not cost the others
            result, reason = None, f"error: {type(error).__name__}: {error}"
    if result is not None:
        seen = sorted({str(w.message).splitlines()[0][:200] for w in caught})
        result.info["notes"] += [f"warning: {message}" for message in seen]
    return result, reason


def prepared_records(jobs, workers):
    """(RecordBeats or None, reason) for each job, in job order, in `workers` processes."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield prepared_record(job)
        return
    done = 0
    try:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for outcome in pool.map(prepared_record, jobs, chunksize=4):
                done += 1
                yield outcome
    except BrokenProcessPool as error:
        for _ in jobs[done:]:
            yield None, f"worker died: {error}"


# ---------------------------------------------------------------- output

class NpyAppender:
    """Writes an (N, *shape) float32 .npy file whose N is known only at the end.

    Rows go to a temporary raw file as they come, so a large cohort never has to fit in memory.
    """

    def __init__(self, path, row_shape):
        self.path, self.row_shape, self.rows = Path(path), tuple(row_shape), 0
        self.part = self.path.with_name(f".{self.path.name}.part")
        self.handle = open(self.part, "wb")

    def append(self, array):
        array = np.ascontiguousarray(array, dtype="<f4")
        assert array.shape[1:] == self.row_shape, (array.shape, self.row_shape)
        self.handle.write(array.tobytes())
        self.rows += len(array)

    def finish(self):
        self.handle.close()
        header = {"descr": "<f4", "fortran_order": False, "shape": (self.rows, *self.row_shape)}
        with atomic_write(self.path) as temporary, open(temporary, "wb") as out, \
                open(self.part, "rb") as part:
            np.lib.format.write_array_header_1_0(out, header)
            while chunk := part.read(1 << 24):
                out.write(chunk)
        self.part.unlink()

    def discard(self):
        self.handle.close()
        self.part.unlink(missing_ok=True)


def output_folder_problem(folder, overwrite):
    """None if `folder` may be written, else what is wrong and what to do."""
    if folder.exists() and not folder.is_dir():
        return f"--output_dir={folder} exists and is not a folder; choose another path"
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        return (f"--output_dir={folder} is not empty; choose a new folder or pass --overwrite=True "
                f"to replace the files this script writes there")
    problem = unwritable_folder_problem(folder)
    if problem:
        return f"--output_dir={folder}: {problem}; choose a folder you can write"
    return None


def previous_outputs(folder):
    """Files in `folder` that an earlier run of this script wrote."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.name in OUTPUT_FILES or re.fullmatch(r"cut_.+\.npy", p.name))


def summary_lines(summary, folder, groups):
    lines = [f"records: {summary['records_read']} read, {summary['records_kept']} kept, "
             f"{summary['records_rejected']} rejected"]
    for group in groups:
        lines.append(f"  {group}: {summary['beats_per_group'][group]} beats from "
                     f"{summary['records_per_group'][group]} records, "
                     f"{summary['patients_per_group'][group]} patients")
    if summary["records_per_format"]:
        lines.append("formats read: " + ", ".join(f"{name} {n}" for name, n
                                                  in summary["records_per_format"].items()))
    if summary["records_with_derived_leads"]:
        lines.append(f"{summary['records_with_derived_leads']} record(s) had 8 leads: III, aVR, "
                     f"aVL, aVF derived from I and II")
    if summary["rejection_counts"]:
        top = ", ".join(f"{kind} {n}" for kind, n in list(summary["rejection_counts"].items())[:5])
        lines.append(f"rejected by reason: {top} (all reasons in prepare_summary.json)")
    empty = [g for g in groups if summary["beats_per_group"][g] == 0]
    if empty:
        lines.append(f"warning: no beats for group(s) {', '.join(empty)}")
    covariates = summary.get("patients_table")
    if covariates:
        differing = ", ".join(f"{c} {n}" for c, n in covariates["patients_with_differing_records"]
                              .items() if n)
        lines.append(f"{PATIENTS_FILE}: {covariates['patients']} patients, columns "
                     f"{', '.join(covariates['columns'])}"
                     + (f"; patients whose records differ (first record's value kept): "
                        f"{differing}" if differing else ""))
    lines.append(f"wrote {folder}: " + ", ".join(f"cut_{g}.npy" for g in groups)
                 + ", cohort.json, beats_manifest.csv, prepare_summary.json"
                 + (f", {PATIENTS_FILE}" if covariates else ""))
    return lines


# ---------------------------------------------------------------- script

def cohort_description(name, labels, options, task, source):
    """cohort.json: groups, labels, sampling, R position and how the beats were made."""
    groups = labels["groups"]
    return {"name": name, "groups": groups, "group_names": {g: g for g in groups},
            **{k: v for k, v in labels.items() if k != "groups"},
            "leads": list(LEAD_NAMES), "sampling_rate": options.fs,
            "r_peak_sample": options.pre_samples,
            "source": {"tool": "prepare_data.py", "task": task, **source, "units": "mV",
                       "input_unit": options.unit or "each file's stated unit",
                       "plausible_amplitude_mv": list(options.plausible_mv),
                       "filter": f"notches at {list(options.notch_hz)} Hz (Q 30), Butterworth "
                                 f"band-pass {options.bandpass[0]:g}-{options.bandpass[1]:g} Hz, "
                                 f"order {options.bandpass_order}, zero-phase; not standardised",
                       "window_s": [-options.pre, options.post], "beats": options.beats,
                       "r_peaks": f"neurokit2 ecg_findpeaks method={options.detector} on lead "
                                  f"{options.detector_lead}, snapped to the dominant QRS "
                                  f"deflection within {options.r_refine_s} s",
                       "manifest": "beats_manifest.csv", "versions": library_versions()}}


def prepare_cohort(*, table_csv, ptbxl_dir, task, name, output_dir, overwrite, min_likelihood,
                   ptbxl_device, workers, record_options, recorded_options, log=print):
    """The whole job of prepare_data.py: records -> checked beats -> a cohort folder.

    The records come from the CSV `table_csv` or the PTB-XL folder `ptbxl_dir` (PTB-XL's selected
    by `min_likelihood` and `ptbxl_device`), labelled for `task`; the cohort is `name` in
    `output_dir` ("" for either: the defaults of cohort_name, data/<name>), replacing this
    script's files there only with `overwrite`. Each record is cut by `record_options`
    (record_beats.Options as given; checked here) in `workers` processes. `recorded_options`,
    the script's options, are written to prepare_summary.json as they are.
    """
    started = time.time()
    options = checked_options(record_options)
    labels = task_labels(task)
    groups = labels["groups"]
    table, source = input_table(table_csv, ptbxl_dir, task, min_likelihood, ptbxl_device, groups,
                                log)
    database = source.pop("database", None)   # the flow's first box; not cohort.json's
    records_read = len(table)
    rejections = class_conflict_rejections(table, patients_in_several_classes(table, labels))
    table = table[~table["record"].isin({r["record"] for r in rejections})].reset_index(drop=True)
    name = cohort_name(name, task, ptbxl_dir, table_csv)
    folder = Path(output_dir or Path("data") / name)
    problem = output_folder_problem(folder, overwrite)
    if problem:
        raise UserError(problem)
    problem = detector_problem(options)
    if problem:
        raise UserError(f"--detector={options.detector} does not run in "
                        f"neurokit2.ecg_findpeaks: {problem}")
    for old in previous_outputs(folder):
        old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    written = written_beats(table, options, folder, groups, workers, rejections)
    write_patient_ids(folder, groups, written.patients,
                      np.issubdtype(table["patient_id"].dtype, np.integer))
    write_manifest(folder / "beats_manifest.csv", written.manifest)
    covariates = write_patients_table(folder / PATIENTS_FILE, table, rejections)
    write_json_atomic(folder / "cohort.json",
                      cohort_description(name, labels, options, task, source))
    summary = {
        "database": database,
        "records_read": records_read,
        "records_kept": sum(written.kept_records.values()),
        "records_rejected": len(rejections),
        "beats_per_group": written.beats_per_group,
        "records_per_group": {g: written.kept_records[g] for g in groups},
        "records_per_format": dict(written.formats.most_common()),
        "records_with_derived_leads": written.derived,
        "patients_per_group": {g: len(set(written.patients[g])) for g in groups},
        "rejection_counts": dict(Counter(r["reason"].split(":")[0]
                                         for r in rejections).most_common()),
        "rejections": rejections,
        "patients_table": covariates,
        "notes": written.notes,
        "options": recorded_options,
        "elapsed_s": round(time.time() - started, 1),
    }
    write_json_atomic(folder / "prepare_summary.json", summary)
    log("\n".join(summary_lines(summary, folder, groups)))
    short = classes_too_small(labels, written.patients)
    if short:
        raise UserError(f"the cohort in {folder} cannot train: {'; '.join(short)}. A "
                        f"patient-level split needs {MIN_PATIENTS_PER_CLASS} patients per class "
                        f"at the least (3 with a test set). The files are written; every "
                        f"rejected record and its reason is in "
                        f"{folder / 'prepare_summary.json'}")
    return summary


def classes_too_small(labels, patients):
    """'class MI (group MI): 1 patient' for each class with fewer than MIN_PATIENTS_PER_CLASS
    patients written."""
    mapping = labels["binary_labels"] or labels["multiclass_labels"]
    if not mapping:          # unlabelled: no class to train
        return []
    names = labels["binary_class_names"] or labels["multiclass_class_names"]
    short = []
    for cls in sorted(set(mapping.values())):
        groups = [g for g, c in mapping.items() if c == cls]
        count = len({p for g in groups for p in patients[g]})
        if count < MIN_PATIENTS_PER_CLASS:
            short.append(f"class {names[cls]} (group {', '.join(groups)}): "
                         f"{count} patient{'s' if count != 1 else ''}")
    return short


class WrittenBeats(NamedTuple):
    patients: dict          # group -> patient ID of each beat written
    manifest: list          # rows of beats_manifest.csv
    notes: list             # per-record notes (warnings, dropped beats)
    kept_records: Counter   # group -> records that gave beats
    beats_per_group: dict   # group -> beats written
    formats: Counter        # format name -> records that gave beats
    derived: int            # kept records whose III, aVR, aVL, aVF were derived (8-lead files)


def written_beats(table, options, folder, groups, workers, rejections):
    """Prepare every record (in `workers` processes) and append its beats to cut_<GROUP>.npy;
    a rejected record is added to `rejections`."""
    arrays = {g: NpyAppender(folder / f"cut_{g}.npy", (len(LEAD_NAMES), options.window_samples))
              for g in groups}
    patients = {g: [] for g in groups}
    manifest, notes, kept_records, formats = [], [], Counter(), Counter()
    jobs = [(path, options) for path in table["path"]]
    outcomes = prepared_records(jobs, min(workers, len(jobs)))
    try:
        progress = progress_bar(outcomes, total=len(jobs), desc="records", unit="rec")
        for (result, reason), row in zip(progress, table.itertuples(index=False), strict=True):
            pid = to_json(row.patient_id)
            if result is None:
                rejections.append({"record": row.record, "group": row.group, "patient_id": pid,
                                   "reason": reason})
                continue
            start = arrays[row.group].rows
            arrays[row.group].append(result.beats)
            patients[row.group] += [pid] * len(result.beats)
            kept_records[row.group] += 1
            formats[FORMAT_NAMES[result.info["format"]]] += 1
            beats = zip(result.beat_index, result.r_peaks, strict=True)
            manifest += [(row.group, pid, row.record, int(b), int(r), start + i)
                         for i, (b, r) in enumerate(beats)]
            if result.info["notes"]:
                notes.append({"record": row.record, "notes": result.info["notes"]})
        for appender in arrays.values():
            appender.finish()
    finally:
        for appender in arrays.values():
            appender.discard()
    derived = sum(any(n.startswith(DERIVED_NOTE) for n in entry["notes"]) for entry in notes)
    return WrittenBeats(patients, manifest, notes, kept_records,
                        {g: arrays[g].rows for g in groups}, formats, derived)


def write_patient_ids(folder, groups, patients, integer_ids):
    for group in groups:
        ids = np.asarray(patients[group], dtype=np.int64 if integer_ids else str)
        with atomic_write(folder / f"cut_{group}_patient_ids.npy") as temporary:
            np.save(temporary, ids, allow_pickle=False)


def write_manifest(path, rows):
    with atomic_write(path) as temporary, open(temporary, "w", newline="",
                                                encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "patient_id", "record", "beat_index", "r_peak_sample", "row"])
        writer.writerows(rows)


def patient_covariates(table, rejections):
    """One row per patient of the records that gave beats, in table order: patient_id and
    covariate_columns. A patient whose records differ in a column gets the first record's
    filled value (table order: PTB-XL's by ecg_id, so its earliest recording). Returns (table or
    None without covariates, {column: patients whose records differ})."""
    columns = covariate_columns(table)
    kept = table[~table["record"].isin({r["record"] for r in rejections})]
    if not columns or kept.empty:
        return None, {}
    values = kept[columns].replace("", np.nan)
    by_patient = values.groupby(kept["patient_id"], sort=False)
    differing = {c: int((by_patient[c].nunique() > 1).sum()) for c in columns}
    patients = by_patient.first()
    for column in columns:
        numbers = patients[column]
        if numbers.dtype.kind == "f" and np.all(numbers.dropna() == np.round(numbers.dropna())):
            patients[column] = numbers.astype("Int64")   # 56, not 56.0
    return patients.rename_axis("patient_id").reset_index(), differing


def write_patients_table(path, table, rejections):
    """patients.csv (patient_covariates); its description for prepare_summary.json, or None
    (nothing written) when the records carry no covariates."""
    patients, differing = patient_covariates(table, rejections)
    if patients is None:
        return None
    with atomic_write(path) as temporary:
        patients.to_csv(temporary, index=False)
    return {"file": PATIENTS_FILE, "columns": [c for c in patients.columns if c != "patient_id"],
            "patients": len(patients), "patients_with_differing_records": differing,
            "rule": "a patient whose records differ gets the first record's filled value"}
