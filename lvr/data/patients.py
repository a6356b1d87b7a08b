"""patients.csv: one row per patient of a cohort (patient_id plus any columns: age, sex, site...).

The table is optional. ``patient_table`` reads and checks it against the cohort's patient IDs:
IDs are compared as text ("15709" and "15709.0" are the same integer ID, "007" stays "007": the
rule of patient_id_values, which prepare_data.py applies to a user's table too). A malformed
table is a CohortError naming the file, the row or column and what to do; cohort patients the
table lacks are a warning (their covariates count as unknown); rows for patients outside the
cohort are ignored with a note.

The table is not part of the cohort's data fingerprint (lvr.data.cohort.Cohort.fingerprint), which
identifies the beats a model was trained and tested on: adding or correcting covariates must not
make a finished run look as if it had been trained on other data. Its sha256 is kept on the
cohort (``patient_table_sha256``) for a run's provenance instead.
"""
import csv
import os
from typing import NamedTuple

import numpy as np
import pandas as pd

from lvr.data.cohort_json import CohortError

PATIENTS_FILE = "patients.csv"
ID_COLUMN = "patient_id"
SHOWN = 5   # IDs or rows quoted in a message


def patient_id_values(column):
    """Patient ids (text) as int64 when every one is a plain integer, else as fixed-width strings.

    "15709" and "15709.0" become 15709; "007" stays text, so it cannot merge with "7".
    """
    text = column.astype(str).str.strip()
    if text.str.fullmatch(r"-?(0|[1-9]\d*)(\.0*)?").all():
        return text.str.replace(r"\.0*$", "", regex=True).astype(np.int64).to_numpy()
    return np.asarray(text.to_numpy(), dtype=str)


class PatientTable(NamedTuple):
    table: object      # pandas DataFrame indexed by patient ID (str), cohort patients only
    warnings: list     # cohort patients absent from the table
    notes: list        # table rows ignored (patients not in the cohort)


def shown(values):
    values = list(values)
    more = f" and {len(values) - SHOWN} more" if len(values) > SHOWN else ""
    return ", ".join(repr(str(v)) for v in values[:SHOWN]) + more


def csv_rows(path):
    """The header and the data rows (blank lines left out) of a CSV file, as text."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise CohortError(f"{path} cannot be read as a UTF-8 CSV file ({error}); save the "
                          f"patient table as CSV (UTF-8)") from None
    rows = [[cell.strip() for cell in row] for row in rows if row]
    return (rows[0] if rows else []), rows[1:]


def read_table(path):
    """patients.csv as text columns, its header and row lengths checked."""
    header, rows = csv_rows(path)
    if ID_COLUMN not in header:
        raise CohortError(f"{path} has no '{ID_COLUMN}' column (its columns: "
                          f"{', '.join(map(repr, header)) or 'none'}); the first line must name "
                          f"the columns, one of them '{ID_COLUMN}' with the IDs of "
                          f"cut_<GROUP>_patient_ids.npy")
    empty = [i + 1 for i, name in enumerate(header) if not name]
    if empty:
        raise CohortError(f"{path}: column {empty[0]} of the header has no name; name every "
                          f"column or remove the empty one")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise CohortError(f"{path}: column(s) {', '.join(map(repr, repeated))} appear twice in "
                          f"the header; each column needs its own name")
    uneven = [i + 1 for i, row in enumerate(rows) if len(row) != len(header)]
    if uneven:
        raise CohortError(f"{path}: data row {uneven[0]} has {len(rows[uneven[0] - 1])} fields, "
                          f"the header {len(header)} ({len(uneven)} such row(s)); cannot be read "
                          f"as CSV until every row has one field per column")
    return pd.DataFrame(rows, columns=header, dtype=str)


def typed_columns(table):
    """Each column other than patient_id as numbers when every filled cell is a number, else as
    text; empty cells become missing (NaN / None)."""
    out = pd.DataFrame(index=table.index)
    for name in table.columns:
        if name == ID_COLUMN:
            continue
        text = table[name].str.strip()
        filled = text != ""
        numbers = pd.to_numeric(text.where(filled), errors="coerce")
        if filled.any() and numbers[filled].notna().all():
            out[name] = numbers.astype(float)
        else:
            out[name] = text.where(filled, None)
    return out


def patient_table(data_dir, cohort_patient_ids):
    """PatientTable of DATA_DIR/patients.csv for the cohort's patients, or None without the file.

    `cohort_patient_ids`: the cohort's patient ID of every beat (str). The table's index is the
    patient ID as text, its rows the cohort's patients found in the file, in file order.
    """
    path = os.path.join(data_dir, PATIENTS_FILE)
    if not os.path.exists(path):
        return None
    table = read_table(path)
    ids = table[ID_COLUMN].str.strip()
    empty = np.flatnonzero((ids == "").to_numpy())
    if empty.size:
        raise CohortError(f"{path}: empty {ID_COLUMN} in data row(s) "
                          f"{', '.join(str(i + 1) for i in empty[:SHOWN])}; fill or remove them")
    ids = pd.Series(patient_id_values(ids), index=table.index).astype(str)
    repeated = ids[ids.duplicated(keep=False)]
    if len(repeated):
        first = repeated.iloc[0]
        rows = [i + 1 for i in np.flatnonzero((ids == first).to_numpy())]
        raise CohortError(f"{path}: {repeated.nunique()} patient ID(s) appear on more than one row "
                          f"(first: {first!r} on data rows {', '.join(map(str, rows))}); give "
                          f"one row per patient")
    cohort = pd.unique(np.asarray(cohort_patient_ids).astype(str))
    known = ids.isin(set(cohort)).to_numpy()
    if len(ids) and not known.any():
        raise CohortError(f"{path}: none of its {len(ids)} patient IDs is a patient of the cohort "
                          f"(the table has {shown(ids)}; the cohort has {shown(cohort)}); the IDs "
                          f"must be those of cut_<GROUP>_patient_ids.npy")
    typed = typed_columns(table)
    typed.index = pd.Index(ids, name=ID_COLUMN)
    found = set(ids)
    absent = [p for p in cohort if p not in found]
    warnings = ([f"{path} lacks {len(absent)} of the cohort's {len(cohort)} patients (first: "
                 f"{shown(absent)}); their covariates count as unknown"] if absent else [])
    extra = ids[~known]
    notes = ([f"{path}: {len(extra)} row(s) for patients outside the cohort ignored (first: "
              f"{shown(extra)})"] if len(extra) else [])
    return PatientTable(typed[known], warnings, notes)
