"""Record tables: a user's CSV or PTB-XL's database -> a table of records, patients and groups.

A user's table has the columns record, patient_id, group; record = path relative to the CSV's
folder: a WFDB record without extension, or an EDF, DICOM, Philips XML or GE MUSE XML file, told
apart by content, see lvr/prepare/formats.py. PTB-XL's (--ptbxl_dir=DIR) is built from
ptbxl_database.csv and scp_statements.csv for a task of PTBXL_TASKS. Patients with records in
groups of different class are left out whole: the training code needs one class per patient.
"""
import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd

from lvr.choices import PTBXL_TASKS, UNLABELLED, UNLABELLED_GROUP
from lvr.errors import UserError
from lvr.prepare.formats import record_present
from lvr.data.patients import patient_id_values

# columns of a records table that describe the record, not the patient: the rest of a user's
# table (and PTB-XL's age, sex, device) go to patients.csv
RECORD_COLUMNS = ("record", "patient_id", "group", "ecg_id", "path")
PTBXL_SEX = {0: "male", 1: "female"}   # PTB-XL's coding (Wagner et al. 2020, Table 2)


def task_labels(task):
    """The group and label part of cohort.json for a TASK value."""
    kind, _, rest = task.partition(":")
    if task in ("mi_norm", "lvh_norm"):
        positive = task.split("_")[0].upper()
        return {"groups": ["NORM", positive], "binary_labels": {"NORM": 0, positive: 1},
                "binary_class_names": ["NORM", positive], "multiclass_labels": None,
                "multiclass_class_names": None, "analysis_subgroups": {positive: positive}}
    if task == UNLABELLED:
        return {"groups": [UNLABELLED_GROUP], "binary_labels": None, "binary_class_names": None,
                "multiclass_labels": None, "multiclass_class_names": None,
                "analysis_subgroups": None}
    if task == "superclass4":
        groups = ["NORM", "MI", "STTC", "CD"]
        return {"groups": groups, "binary_labels": None, "binary_class_names": None,
                "multiclass_labels": {g: i for i, g in enumerate(groups)},
                "multiclass_class_names": groups, "analysis_subgroups": None}
    groups = [g.strip() for g in rest.split(",") if g.strip()]
    unusable = [g for g in groups if not re.fullmatch(r"[A-Za-z0-9_.\-]+", g)]
    if unusable:
        raise UserError(f"--task={task!r}: group name(s) {unusable} cannot be part of a file name "
                        f"cut_<GROUP>.npy; use letters, digits, '_', '-', '.'")
    if kind == "binary" and len(groups) == 2 and len(set(groups)) == 2:
        negative, positive = groups
        return {"groups": groups, "binary_labels": {negative: 0, positive: 1},
                "binary_class_names": groups, "multiclass_labels": None,
                "multiclass_class_names": None, "analysis_subgroups": {positive: positive}}
    if kind == "multiclass" and len(groups) >= 2 and len(set(groups)) == len(groups):
        return {"groups": groups, "binary_labels": None, "binary_class_names": None,
                "multiclass_labels": {g: i for i, g in enumerate(groups)},
                "multiclass_class_names": groups, "analysis_subgroups": None}
    raise UserError(f"--task={task!r} is not understood: use {', '.join(PTBXL_TASKS)}, "
                    f"binary:NEGATIVE,POSITIVE or multiclass:A,B,C (group names of your table)")


def cohort_name(name, task, ptbxl_dir, table):
    if name:
        return name
    if ptbxl_dir:
        return f"ptbxl_{task}"
    stem = Path(table).stem
    return stem if ":" in task else f"{stem}_{task}"


# ---------------------------------------------------------------- PTB-XL

def ptbxl_statements(codes, min_likelihood):
    """The scp_codes of one PTB-XL record (its text "{'NORM': 100.0, ...}") whose likelihood is
    at least `min_likelihood` (0-100; 0 keeps all, as the PTB-XL benchmark code does)."""
    return {code for code, likelihood in ast.literal_eval(codes).items()
            if likelihood >= min_likelihood}


def ptbxl_superclasses(ptbxl_dir, min_likelihood=0.0):
    """ecg_id -> sorted diagnostic superclasses (of the statements with likelihood >=
    min_likelihood), plus the database table, from a PTB-XL folder."""
    folder = Path(ptbxl_dir)
    database, statements = folder / "ptbxl_database.csv", folder / "scp_statements.csv"
    for path in (database, statements):
        if not path.is_file():
            raise UserError(f"--ptbxl_dir={ptbxl_dir}: {path.name} not found there; point it at "
                            f"the PTB-XL folder that holds ptbxl_database.csv and "
                            f"scp_statements.csv")
    db = pd.read_csv(database, index_col="ecg_id")
    scp = pd.read_csv(statements, index_col=0)
    missing = {"patient_id", "scp_codes", "filename_hr"} - set(db.columns)
    if missing or "diagnostic_class" not in scp.columns:
        raise UserError(f"{database} / {statements}: not the PTB-XL layout (missing columns "
                        f"{sorted(missing) or ['diagnostic_class']})")
    diagnostic = scp[scp["diagnostic"] == 1]["diagnostic_class"].to_dict()
    superclasses = db["scp_codes"].map(lambda codes: sorted(
        {diagnostic[code] for code in ptbxl_statements(codes, min_likelihood)
         if code in diagnostic}))
    return superclasses, db


def device_family(device):
    """The first word of a PTB-XL device ("AT-6 C 5.5" -> "AT-6")."""
    return (str(device).split() or [""])[0]


def ptbxl_device_mask(db, device):
    """Which records' device starts with `device` as whole words, any case ("AT-6" keeps
    "AT-6 C 5.5" and "AT-6", not "AT-60"); an unknown device is a UserError listing them."""
    if "device" not in db.columns:
        raise UserError(f"--ptbxl_device={device!r}: ptbxl_database.csv has no device column")
    wanted = " ".join(device.split()).upper()
    written = db["device"].fillna("").map(lambda d: " ".join(str(d).split()).upper())
    mask = (written == wanted) | written.str.startswith(wanted + " ")
    if not mask.any():
        families = db["device"].map(device_family).value_counts()
        raise UserError(f"--ptbxl_device={device!r}: no PTB-XL record's device starts with it; "
                        f"device families present: "
                        + ", ".join(f"{name} ({n} records)" for name, n in families.items())
                        + " (or leave it empty for all)")
    return mask.to_numpy()


def ptbxl_table(ptbxl_dir, task, min_likelihood=0.0, device=""):
    """PTB-XL's records of a task as a table: ptbxl_records without the database's counts."""
    return ptbxl_records(ptbxl_dir, task, min_likelihood, device)[0]


def database_counts(db, superclasses, in_task, on_device, selection):
    """What the PTB-XL database holds and how many of its records a task keeps, for the
    participant flow (prepare_summary.json "database"): records and patients, records per
    device family and per diagnostic superclass (a record may have several, or none), the
    records of the task and why the others are not."""
    families = db["device"].map(device_family) if "device" in db.columns else None
    classes = pd.Series([c for s in superclasses for c in s], dtype=object).value_counts()
    unclassed = int(sum(not s for s in superclasses))
    return {"name": "PTB-XL", "records": int(len(db)),
            "patients": int(db["patient_id"].nunique()),
            "per_device": {} if families is None else
            {str(k): int(n) for k, n in families.value_counts().items()},
            "per_superclass": {**{str(k): int(n) for k, n in classes.items()},
                               **({"none": unclassed} if unclassed else {})},
            "selection": selection,
            "task_records": int((in_task & on_device).sum()),
            "not_in_task": {reason: n for reason, n in (
                ("no class of the task", int((~in_task).sum())),
                ("another device", int((in_task & ~on_device).sum()))) if n}}


def ptbxl_records(ptbxl_dir, task, min_likelihood=0.0, device=""):
    """PTB-XL's records as a table (record, patient_id, group, ecg_id) for a PTBXL_TASKS task,
    and the database's counts (database_counts) for the participant flow.

    mi_norm: NORM = the only diagnostic superclass is NORM; MI = MI among the superclasses.
    lvh_norm: NORM as above; LVH = the LVH statement among the record's scp_codes, whatever else
    the record has.
    superclass4: records with exactly one diagnostic superclass, one of NORM, MI, STTC, CD.
    unlabelled: every record, in the one group ALL (no statement is read).
    A statement counts only if its likelihood is >= min_likelihood (0: every statement); with
    `device` only records of that device (ptbxl_device_mask). Records are the 500 Hz files
    (filename_hr); patient_id is PTB-XL's, as an integer.
    """
    if task not in PTBXL_TASKS:
        raise UserError(f"--ptbxl_dir works with --task={', '.join(PTBXL_TASKS)}, not {task!r}; "
                        f"for other groupings write a table and pass --table")
    superclasses, db = ptbxl_superclasses(ptbxl_dir, min_likelihood)
    if task == "mi_norm":
        group = superclasses.map(lambda s: "MI" if "MI" in s else "NORM" if s == ["NORM"] else None)
    elif task == "lvh_norm":
        lvh = db["scp_codes"].map(lambda codes: "LVH" in ptbxl_statements(codes, min_likelihood))
        group = pd.Series(np.where(lvh, "LVH", np.where(superclasses.map(lambda s: s == ["NORM"]),
                                                          "NORM", None)), index=db.index)
    elif task == UNLABELLED:
        group = pd.Series(UNLABELLED_GROUP, index=db.index)
    else:
        group = superclasses.map(lambda s: s[0] if len(s) == 1 and s[0] != "HYP" else None)
    in_task = group.notna().to_numpy()
    on_device = ptbxl_device_mask(db, device) if device else np.ones(len(db), dtype=bool)
    keep = in_task & on_device
    table = pd.DataFrame({"record": db.loc[keep, "filename_hr"].to_numpy(),
                          "patient_id": db.loc[keep, "patient_id"].astype(np.int64).to_numpy(),
                          "group": group[keep].to_numpy(),
                          "ecg_id": db.index[keep].to_numpy()})
    if "age" in db.columns:
        table["age"] = pd.to_numeric(db.loc[keep, "age"], errors="coerce").to_numpy()
    if "sex" in db.columns:
        table["sex"] = db.loc[keep, "sex"].map(PTBXL_SEX).to_numpy()
    if "device" in db.columns:
        table["device"] = db.loc[keep, "device"].map(
            lambda d: " ".join(str(d).split()) if pd.notna(d) else None).to_numpy()
    selection = (f"task {task}, device {device or 'all'}, statements of likelihood >= "
                 f"{min_likelihood:g}")
    return table, database_counts(db, superclasses, in_task, on_device, selection)


def covariate_columns(table):
    """The columns of a records table that go to patients.csv (not RECORD_COLUMNS)."""
    return [c for c in table.columns if c not in RECORD_COLUMNS]


# ---------------------------------------------------------------- a user's table

def records_table(table_path, groups, log=print):
    """The user's table (record, patient_id, group), checked; record without extension. For
    the unlabelled task (groups == [ALL]) the group column is optional and every record goes
    to ALL."""
    unlabelled = list(groups) == [UNLABELLED_GROUP]
    path = Path(table_path)
    if not path.is_file():
        raise UserError(f"--table={table_path}: file not found; give a CSV with columns record, "
                        f"patient_id, group (or --ptbxl_dir=DIR for PTB-XL)")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserError(f"--table={table_path}: cannot be read as CSV ({error})") from None
    needed = ("record", "patient_id") if unlabelled else ("record", "patient_id", "group")
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise UserError(f"--table={table_path}: missing column(s) {', '.join(missing)} "
                        f"(has: {', '.join(map(str, table.columns))}); it needs "
                        f"{', '.join(needed)}")
    if unlabelled:
        given = sorted(set(table["group"].str.strip()) - {""}) if "group" in table else []
        if len(given) > 1:
            log(f"note: --task=unlabelled puts every record in group {UNLABELLED_GROUP}; the "
                f"table's {len(given)} groups ({', '.join(given[:5])}"
                f"{', ...' if len(given) > 5 else ''}) are not used")
        table["group"] = UNLABELLED_GROUP
    if table.empty:
        raise UserError(f"--table={table_path}: the table has a header but no records; add one "
                        f"row (record, patient_id, group) per recording")
    for column in ("record", "patient_id", "group"):
        table[column] = table[column].str.strip()
        empty = table.index[table[column] == ""]
        if len(empty):
            raise UserError(f"--table={table_path}: empty {column} in data row(s) "
                            f"{', '.join(str(i + 1) for i in empty[:10])}; fill or remove them")
    table["record"] = table["record"].str.replace(r"\.(hea|dat)$", "", regex=True)
    unknown = sorted(set(table["group"]) - set(groups))
    if unknown:
        raise UserError(f"--table={table_path}: group(s) {', '.join(unknown)} are not groups of "
                        f"this task ({', '.join(groups)}); remove those rows or choose "
                        f"--task=binary:NEG,POS / multiclass:A,B,C with your group names")
    duplicated = table["record"][table["record"].duplicated()].unique()
    if len(duplicated):
        raise UserError(f"--table={table_path}: record(s) listed twice: "
                        f"{', '.join(duplicated[:5])}; each record may appear once")
    table["patient_id"] = patient_id_values(table["patient_id"])
    return table


# ---------------------------------------------------------------- either table

def patients_in_several_classes(table, labels):
    """Patient ids whose records fall in groups of different class (binary or multiclass).

    The training code needs one class per patient, so such patients are left out whole.
    """
    conflicted = set()
    for mapping in (labels["binary_labels"], labels["multiclass_labels"]):
        if mapping:
            classes = table["group"].map(mapping).groupby(table["patient_id"]).nunique()
            conflicted |= set(classes.index[classes > 1])
    return conflicted


def class_conflict_rejections(table, patients):
    """A rejection entry for every record of `patients` (see patients_in_several_classes)."""
    rows = table[table["patient_id"].isin(patients)]
    groups = rows.groupby("patient_id")["group"].agg(lambda g: ", ".join(sorted(set(g))))
    return [{"record": row.record, "group": row.group, "patient_id": to_json(row.patient_id),
             "reason": f"patient in several classes: patient {row.patient_id} has records in "
                       f"{groups[row.patient_id]}; all are left out (one class per patient)"}
            for row in rows.itertuples(index=False)]


def to_json(value):
    """A numpy scalar as the plain Python value json writes."""
    return value.item() if isinstance(value, np.generic) else value


def with_paths(table, root):
    """The table with a `path` column: each record resolved against `root`."""
    table = table.copy()
    table["path"] = [str(Path(root) / record) for record in table["record"]]
    return table


def input_table(table_csv, ptbxl_dir, task, min_likelihood, device, groups, log=print):
    """The records to prepare (with resolved paths) and where they came from, checked: from the
    CSV `table_csv` or the PTB-XL folder `ptbxl_dir` (exactly one given), for `task` and its
    `groups`; `min_likelihood` and `device` select PTB-XL records (MIN_LIKELIHOOD,
    PTBXL_DEVICE). PTB-XL's source holds the database's counts under "database"."""
    if bool(table_csv) == bool(ptbxl_dir):
        raise UserError("give exactly one input: --table=CSV (columns record, patient_id, group) "
                        "or --ptbxl_dir=DIR (PTB-XL folder)")
    if task == UNLABELLED and min_likelihood != 0:
        raise UserError(f"--min_likelihood={min_likelihood!r} selects records by their "
                        f"statements; --task=unlabelled reads none and keeps every record: "
                        f"leave it at 0")
    if ptbxl_dir:
        if not Path(ptbxl_dir).is_dir():
            raise UserError(f"--ptbxl_dir={ptbxl_dir}: folder not found; download PTB-XL and point "
                            f"--ptbxl_dir at the folder with ptbxl_database.csv")
        table, database = ptbxl_records(ptbxl_dir, task, min_likelihood, device)
        table = with_paths(table, ptbxl_dir)
        source = {"ptbxl_dir": str(Path(ptbxl_dir).resolve()), "ptbxl_files": "filename_hr",
                  "table": "built from ptbxl_database.csv + scp_statements.csv",
                  "min_likelihood": min_likelihood, "ptbxl_device": device or "all",
                  "database": database}
    else:
        given = [f"--{name}={value!r}" for name, value, default in
                 (("min_likelihood", min_likelihood, 0), ("ptbxl_device", device, ""))
                 if value != default]
        if given:
            raise UserError(f"{', '.join(given)} select PTB-XL records: use with --ptbxl_dir, or "
                            f"filter your --table yourself")
        table = with_paths(records_table(table_csv, groups, log), Path(table_csv).parent)
        source = {"table": str(Path(table_csv).resolve())}
    if not any(record_present(path) for path in table["path"]):
        raise UserError(f"{table_csv or ptbxl_dir}: none of the {len(table)} records exists "
                        f"(first: {table['path'].iloc[0]}); record paths are relative to the "
                        f"table's folder (or to --ptbxl_dir): a WFDB record without extension, "
                        f"or an EDF, DICOM or XML file by its name")
    absent = [g for g in groups if not (table["group"] == g).any()]
    if absent:
        raise UserError(f"{table_csv or ptbxl_dir}: no records for group(s) {', '.join(absent)} "
                        f"of --task={task}; every group needs records")
    return table, source
