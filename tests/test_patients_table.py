"""patients.csv: read and checked with the cohort (lvr/data/patients.py), and written by
prepare_data.py from PTB-XL's age, sex and device or from a user's extra columns."""
import shutil

import numpy as np
import pandas as pd
import pytest

from helpers import PTBXL_SLICE, run_prepare_data
from lvr.data.cohort import load_cohort
from lvr.data.cohort_json import CohortError

DATA = PTBXL_SLICE


def cohort_ids(folder):
    return sorted(set(load_cohort(str(folder)).patient_ids.tolist()), key=int)


def write_table(folder, text):
    (folder / "patients.csv").write_text(text, encoding="utf-8")


def test_a_complete_table_is_exposed_indexed_by_patient_id_text(cohort_copy):
    ids = cohort_ids(cohort_copy)
    before = load_cohort(str(cohort_copy))
    rows = "".join(f"{p}.0,{40 + i},{'F' if i % 2 else 'M'},site {i % 3}\n"
                   for i, p in enumerate(ids))
    write_table(cohort_copy, "patient_id,age,sex,site\n" + rows)
    cohort = load_cohort(str(cohort_copy))
    table = cohort.patient_table
    assert list(table.index) == ids and table.index.dtype == object
    assert table["age"].dtype == float and table.loc[ids[1], "age"] == 41
    assert table.loc[ids[1], "sex"] == "F" and table.loc[ids[0], "site"] == "site 0"
    assert cohort.warnings == [] and cohort.notes == []
    # outside the fingerprint (which a finished run's resume checks); its own sha256 instead
    assert cohort.fingerprint() == before.fingerprint()
    assert before.patient_table is None and before.patient_table_sha256 is None
    assert len(cohort.patient_table_sha256) == 64


def test_missing_patients_warn_and_extra_rows_are_noted(cohort_copy):
    ids = cohort_ids(cohort_copy)
    write_table(cohort_copy, "patient_id,age\n" + "".join(f"{p},50\n" for p in ids[3:])
                + "99999,60\n")
    cohort = load_cohort(str(cohort_copy))
    assert len(cohort.patient_table) == len(ids) - 3
    [warning] = [w for w in cohort.warnings if "patients.csv" in w]
    assert f"lacks 3 of the cohort's {len(ids)} patients" in warning and "unknown" in warning
    [note] = cohort.notes
    assert "1 row(s) for patients outside the cohort ignored" in note and "'99999'" in note


@pytest.mark.parametrize("text, message", [
    ("id,age\n1,50\n", r"patients.csv has no 'patient_id' column \(its columns: 'id', 'age'\)"),
    ("patient_id,age\n1,50\n1,51\n2,40\n",
     r"1 patient ID\(s\) appear on more than one row \(first: '1' on data rows 1, 2\); give one "
     r"row per patient"),
    ("patient_id,age\n1,50\n,51\n", r"empty patient_id in data row\(s\) 2"),
    ("patient_id,age,age\n1,50,50\n", r"column\(s\) 'age' appear twice in the header"),
    ("patient_id,age\nP1,50\nP2,51\n",
     r"none of its 2 patient IDs is a patient of the cohort \(the table has 'P1', 'P2'; the "
     r"cohort has '1', '2'"),
    ("patient_id,age\n1,50,extra,fields\n2,1\n", r"cannot be read as CSV"),
])
def test_malformed_tables_are_clear_errors(cohort_copy, text, message):
    write_table(cohort_copy, text)
    with pytest.raises(CohortError, match=message) as error:
        load_cohort(str(cohort_copy))
    assert str(cohort_copy / "patients.csv") in str(error.value)


def test_text_ids_compare_as_text(cohort_copy):
    # "007" is not patient 7: a table of text IDs matches the cohort's text IDs only
    write_table(cohort_copy, "patient_id,age\n007,50\n1,40\n")
    cohort = load_cohort(str(cohort_copy))
    assert list(cohort.patient_table.index) == ["1"]
    assert "1 row(s) for patients outside the cohort ignored (first: '007')" in cohort.notes[0]


def test_prepare_data_writes_age_sex_and_device_from_ptbxl(monkeypatch, tmp_path):
    out = tmp_path / "cohort"
    run_prepare_data(monkeypatch, f"--ptbxl_dir={DATA}", "--task=mi_norm", f"--output_dir={out}",
                     "--workers=1", "--beats=first:1")
    written = pd.read_csv(out / "patients.csv")
    db = pd.read_csv(DATA / "ptbxl_database.csv", index_col="ecg_id")
    records = db.loc[[1, 108, 240, 266, 270, 289]]   # table order: by ecg_id
    assert list(written.columns) == ["patient_id", "age", "sex", "device"]
    assert list(written["patient_id"]) == records["patient_id"].astype(int).tolist()
    for (_, row), (_, source) in zip(written.iterrows(), records.iterrows(), strict=True):
        assert pd.isna(row["age"]) if pd.isna(source["age"]) else row["age"] == source["age"]
        assert row["sex"] == {0: "male", 1: "female"}[source["sex"]]
        assert row["device"] == " ".join(source["device"].split())
    cohort = load_cohort(str(out))
    assert set(cohort.patient_table.index) == set(cohort.patient_ids)
    assert cohort.warnings == []


def test_prepare_data_writes_a_users_extra_columns_first_record_wins(monkeypatch, tmp_path):
    shutil.copytree(DATA / "records500", tmp_path / "records500")
    table = pd.read_csv(DATA / "records.csv")
    table.loc[1, "patient_id"] = table.loc[0, "patient_id"]   # two NORM records of one patient
    table["site"] = ["A", "B", "A", "B", "A", "B"]
    table["age"] = [61, 62, 50, "", 70, 45]
    table.loc[len(table)] = ["records500/00000/missing", 123, "MI", "C", 99]   # rejected
    table.to_csv(tmp_path / "records.csv", index=False)
    out = tmp_path / "cohort"
    run_prepare_data(monkeypatch, f"--table={tmp_path / 'records.csv'}", f"--output_dir={out}",
                     "--workers=1", "--beats=first:1")
    written = pd.read_csv(out / "patients.csv", dtype={"patient_id": str})
    assert list(written.columns) == ["patient_id", "site", "age"]
    first = written.set_index("patient_id").loc[str(table.loc[0, "patient_id"])]
    assert first["site"] == "A" and first["age"] == 61      # the first record's values
    assert "123" not in set(written["patient_id"])           # its only record was rejected
    assert written["age"].isna().sum() == 1
    summary = pd.read_json(out / "prepare_summary.json", typ="series")
    assert summary["patients_table"]["patients_with_differing_records"] == {"site": 1, "age": 1}


def test_no_patients_csv_without_covariates(monkeypatch, tmp_path):
    out = tmp_path / "cohort"
    run_prepare_data(monkeypatch, f"--table={DATA / 'records.csv'}", f"--output_dir={out}",
                     "--workers=1", "--beats=first:1")
    assert not (out / "patients.csv").exists()
    assert load_cohort(str(out)).patient_table is None
    assert np.load(out / "cut_MI_patient_ids.npy").dtype == np.int64
