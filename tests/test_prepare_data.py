"""Tests of prepare_data.py on real PTB-XL records (tests/data/ptbxl) and on WFDB records
written here from them (shuffled leads, other sampling rates, broken inputs)."""
import dataclasses
import json
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
import wfdb.processing
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

import lvr.data.cohort as ds
import lvr.prepare.writer as prepare
import lvr.prepare.record_beats as record_beats
import lvr.prepare.record_tables as record_tables
from helpers import (GIVEN_OPTIONS, HANG_LIMIT_S, OPTIONS, PTBXL_SLICE, ROOT, options,
                     reason_of, record_path, run_prepare_data)
from lvr.config import UserError

DATA = PTBXL_SLICE
SHARED_PTBXL = Path("/work/shared/datasets/ptbxl500")
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
RECORDS = sorted(p.with_suffix("") for p in (DATA / "records500" / "00000").glob("*.hea"))
R = OPTIONS.pre_samples


def physical(path):
    """(signal in mV, lead names, fs) of a WFDB record."""
    record = wfdb.rdrecord(str(path))
    return record.p_signal, list(record.sig_name), record.fs


def write_record(folder, name, x, names, fs):
    """Write x (samples, leads) in mV as a 16-bit WFDB record, 1 unit = 1 uV; return its path."""
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(names), sig_name=list(names), p_signal=x,
                fmt=["16"] * len(names), adc_gain=[1000.0] * len(names),
                baseline=[0] * len(names), write_dir=str(folder))
    return Path(folder) / name


def xqrs_heart_rate(path):
    """Heart rate from wfdb's XQRS on lead II: an estimate independent of our detector."""
    x, names, fs = physical(path)
    peaks = wfdb.processing.xqrs_detect(x[:, names.index("II")], fs=fs, verbose=False)
    return 60.0 * fs / np.median(np.diff(peaks))


@pytest.fixture(scope="module")
def shipped_beats():
    return {path.name: record_beats.record_beats(path, OPTIONS) for path in RECORDS}


# ------------------------------------------------------------------ beats of real records

def test_beats_per_record_fit_the_heart_rate(shipped_beats):
    assert len(RECORDS) >= 6
    for path in RECORDS:
        result = shipped_beats[path.name]
        rate = xqrs_heart_rate(path)
        assert result.info["heart_rate_bpm"] == pytest.approx(rate, rel=0.1), path.name
        usable = result.info["duration_s"] - OPTIONS.pre - OPTIONS.post
        expected = usable * rate / 60.0
        assert abs(len(result.beats) - expected) <= 1.5, (path.name, len(result.beats), expected)
        assert result.beats.shape[1:] == (12, OPTIONS.window_samples)
        assert result.beats.dtype == np.float32


def test_r_peak_sits_at_the_configured_offset(shipped_beats):
    # Beats are aligned on the dominant QRS deflection of lead II, its sign chosen per record:
    # that extreme sits at R, and it is (about) the largest |value| near R.
    near = slice(R - 25, R + 26)
    for name, result in shipped_beats.items():
        lead = result.beats[:, LEADS.index("II")]
        sign = np.sign(np.median(lead[:, R]))
        where = (sign * lead[:, near]).argmax(axis=1) + near.start
        assert np.mean(np.abs(where - R) <= 2) >= 0.9, (name, where)
        largest = np.abs(lead[:, near]).max(axis=1)
        assert np.all(np.abs(lead[:, R]) >= 0.5 * largest), name
        median_beat = np.median(lead, axis=0)
        assert abs(int(np.abs(median_beat[near]).argmax()) + near.start - R) <= 12, name
    exact = np.concatenate([np.abs(r.beats[:, 1, near]).argmax(axis=1) + near.start - R
                            for r in shipped_beats.values()])
    assert np.mean(np.abs(exact) <= 3) >= 0.85


def test_r_peak_offset_follows_pre_and_fs():
    changed = options(fs=250, pre=0.25, post=0.5)
    result = record_beats.record_beats(record_path(1), changed)
    r = changed.pre_samples
    assert result.beats.shape[2] == round(0.75 * 250) and r == round(0.25 * 250)
    lead = np.median(result.beats[:, 1], axis=0)
    assert abs(int(np.abs(lead[r - 12:r + 13]).argmax()) - 12) <= 1


def test_windows_are_cut_from_the_filtered_record_at_the_reported_r_peaks():
    x, _, fs = physical(record_path(108))
    filtered = record_beats.bandpassed(x, fs, OPTIONS.bandpass, OPTIONS.bandpass_order,
                                       OPTIONS.notch_hz)
    result = record_beats.record_beats(record_path(108), OPTIONS)
    assert np.all(np.diff(result.r_peaks) > 0)
    assert list(result.beat_index) == list(range(len(result.beats)))
    for beat, peak in zip(result.beats, result.r_peaks, strict=True):
        np.testing.assert_allclose(beat, filtered[peak - R:peak - R + OPTIONS.window_samples].T,
                                   atol=1e-5)


def test_slow_rhythms_do_not_count_t_waves_as_beats():
    # neurokit's detector alone marks T-wave bumps in these bradycardic records (about 50 bpm)
    for ecg_id in (240, 289):
        result = record_beats.record_beats(record_path(ecg_id), OPTIONS)
        assert result.info["heart_rate_bpm"] < 55
        amplitude = np.abs(result.beats[:, 1, R])
        assert amplitude.min() > 0.5 * np.median(amplitude)


def test_beat_selection_modes():
    every = record_beats.record_beats(record_path(270), OPTIONS)
    first = record_beats.record_beats(record_path(270), options(beats="first:3"))
    np.testing.assert_array_equal(first.beats, every.beats[:3])
    drawn = [record_beats.record_beats(record_path(270),
                                       options(beats="random:4", seed=seed))
             for seed in (1, 1, 2)]
    assert list(drawn[0].beat_index) == list(drawn[1].beat_index) == sorted(drawn[0].beat_index)
    np.testing.assert_array_equal(drawn[0].beats, every.beats[drawn[0].beat_index])
    assert list(drawn[0].beat_index) != list(drawn[2].beat_index)
    median = record_beats.record_beats(record_path(270), options(beats="median"))
    assert median.beats.shape == (1, 12, OPTIONS.window_samples)
    np.testing.assert_allclose(median.beats[0], np.median(every.beats, axis=0), atol=1e-6)
    with pytest.raises(UserError, match="first:K"):
        record_beats.beat_selection("some")


# ------------------------------------------------------------------ lead names and order

@settings(max_examples=50, deadline=None)
@given(order=st.permutations(range(12)), upper=st.lists(st.booleans(), min_size=12, max_size=12),
       extra=st.booleans())
def test_standard_lead_order_any_order_and_case(order, upper, extra):
    names = [LEADS[i].upper() if up else LEADS[i].lower()
             for i, up in zip(order, upper, strict=True)]
    if extra:
        names.insert(3, "RESP")
    columns, ignored = record_beats.standard_lead_order(names)
    assert [names[c].upper() for c in columns] == [lead.upper() for lead in LEADS]
    assert ignored == (["RESP"] if extra else [])


def test_shuffled_and_recased_leads_give_the_original_order(tmp_path):
    x, names, fs = physical(record_path(1))
    order = [7, 3, 11, 0, 5, 9, 1, 4, 10, 2, 6, 8]
    odd_names = ["v2", "avr", "v6", "i", "Avf", "V4", "ii", "aVl", "v5", "III", "V1", "v3"]
    assert [n.upper() for n in odd_names] == [names[i].upper() for i in order]
    extra = np.column_stack([x[:, order], 0.01 * np.sin(np.arange(len(x)) / 50)])
    shuffled = write_record(tmp_path, "shuffled", extra, odd_names + ["EXTRA"], fs)

    original = record_beats.record_beats(record_path(1), OPTIONS)
    result = record_beats.record_beats(shuffled, OPTIONS)
    np.testing.assert_allclose(result.beats, original.beats, atol=1e-5)
    np.testing.assert_array_equal(result.r_peaks, original.r_peaks)
    assert any("EXTRA" in note for note in result.info["notes"])
    # Einthoven: III = II - I, on the output, up to the 1 uV quantisation
    lead = {name: result.beats[:, i] for i, name in enumerate(LEADS)}
    np.testing.assert_allclose(lead["III"], lead["II"] - lead["I"], atol=0.005)
    np.testing.assert_allclose(lead["aVF"], (lead["II"] + lead["III"]) / 2, atol=0.005)


# ------------------------------------------------------------------ sampling rates

@pytest.mark.parametrize("fs_in", [100, 250, 1000])
def test_other_sampling_rates_give_the_same_beats(tmp_path, fs_in):
    x, names, fs = physical(record_path(1))
    ratio = Fraction(fs_in, fs)
    low = signal.resample_poly(x, ratio.numerator, ratio.denominator, axis=0)
    path = write_record(tmp_path, f"at{fs_in}", low, names, fs_in)
    original = record_beats.record_beats(record_path(1), OPTIONS)
    result = record_beats.record_beats(path, OPTIONS)
    assert result.info["fs_in"] == fs_in
    assert result.beats.shape[1:] == original.beats.shape[1:]
    assert abs(len(result.beats) - len(original.beats)) <= 1
    matched = 0
    for beat, peak in zip(result.beats, result.r_peaks, strict=True):
        distance = np.abs(original.r_peaks - peak)
        if distance.min() > 5:
            continue
        matched += 1
        reference = original.beats[distance.argmin()]
        correlation = np.corrcoef(beat.ravel(), reference.ravel())[0, 1]
        assert correlation > 0.97, (fs_in, peak, correlation)
    assert matched >= len(original.beats) - 1


def test_resampled_handles_non_integer_ratios():
    x = np.random.default_rng(0).standard_normal((3600, 2))
    assert record_beats.resampled(x, 360, 500).shape == (5000, 2)
    assert record_beats.resampled(x, 500.0, 500) is x


# ------------------------------------------------------------------ rejected records

def test_bad_records_are_rejected_with_clear_reasons(tmp_path):
    x, names, fs = physical(record_path(1))
    no_avf = write_record(tmp_path, "no_avf", np.delete(x, 5, axis=1), names[:5] + names[6:], fs)
    assert reason_of(no_avf).startswith(
        "missing lead: missing lead aVF (has: I, II, III, AVR, AVL, V1")

    unknown = write_record(tmp_path, "unknown", x, [f"ch{i}" for i in range(12)], fs)
    reason = reason_of(unknown)
    assert reason.startswith("missing lead: missing lead I, II, III") and "(has: ch0, ch1" in reason

    short = write_record(tmp_path, "short", x[:400], names, fs)
    assert reason_of(short).startswith("too short: 0.80 s")

    with_nan = x.copy()
    with_nan[1000:1020, 4] = np.nan
    assert reason_of(write_record(tmp_path, "nan", with_nan, names, fs)) == \
        "NaN samples: missing (NaN) samples in lead(s) aVL (20)"

    assert reason_of(tmp_path / "absent").startswith("unreadable: file not found")
    (tmp_path / "broken.hea").write_text("this is not a header\n")
    assert reason_of(tmp_path / "broken").startswith("unreadable: ")

    doubled = write_record(tmp_path, "doubled", x, ["I", "i"] + names[2:], fs)
    assert reason_of(doubled).startswith("duplicate lead: lead I appears twice")


def test_flat_saturated_and_noisy_leads_are_rejected(tmp_path):
    x, names, fs = physical(record_path(1))
    flat = x.copy()
    flat[:, 7] = 0.0
    assert reason_of(write_record(tmp_path, "flat", flat, names, fs)).startswith(
        "flat lead: lead V2")

    clipped = x.copy()
    clipped[2000:2300, 9] = x[:, 9].max()
    assert reason_of(write_record(tmp_path, "clipped", clipped, names, fs)).startswith(
        "saturated lead: lead V4 stays at its min/max value for 0.60 s")

    noisy = x + 0.2 * np.random.default_rng(1).standard_normal(x.shape)
    assert reason_of(write_record(tmp_path, "noisy", noisy, names, fs)).startswith("noisy: lead ")

    # mains hum is removed by the notch and band-pass: the record keeps its beats
    hum = x + 0.5 * np.sin(2 * np.pi * 50 * np.arange(len(x)) / fs)[:, None]
    hum_path = write_record(tmp_path, "hum", hum, names, fs)
    result, reason = prepare.prepared_record((str(hum_path), OPTIONS))
    clean = record_beats.record_beats(record_path(1), OPTIONS)
    assert reason is None and len(result.beats) == len(clean.beats)
    assert np.corrcoef(result.beats.ravel(), clean.beats.ravel())[0, 1] > 0.99


def test_implausible_heart_rate_is_rejected(tmp_path):
    x, names, fs = physical(record_path(1))
    too_slow = options(heart_rate_bpm=(80.0, 220.0))
    assert reason_of(record_path(1), too_slow).startswith("heart rate: median heart rate 64 bpm")
    too_fast = options(heart_rate_bpm=(30.0, 100.0))
    assert reason_of(record_path(108), too_fast).startswith("heart rate: median heart rate 121 bpm")
    t = np.arange(len(x)) / fs
    spikes = sum(np.exp(-((t - c) / 0.012) ** 2) for c in (0.5, 3.5, 6.5, 9.5))  # 20 per minute
    ecg = spikes[:, None] * np.linspace(0.5, 1.5, 12) + 0.05 * np.sin(2 * np.pi * 7 * t)[:, None]
    reason = reason_of(write_record(tmp_path, "slow", ecg, names, fs))
    assert reason.startswith("heart rate: median heart rate 20 bpm"), reason


def test_a_failing_record_does_not_stop_the_others(monkeypatch):
    real = record_beats.record_beats

    def explode_on_108(path, options):
        if str(path).endswith("00108_hr"):
            raise RuntimeError("boom")
        return real(path, options)

    monkeypatch.setattr(prepare, "record_beats", explode_on_108)
    outcomes = list(prepare.prepared_records([(str(p), OPTIONS) for p in RECORDS], workers=1))
    reasons = {p.name: reason for p, (_, reason) in zip(RECORDS, outcomes, strict=True)}
    assert reasons["00108_hr"] == "error: RuntimeError: boom"
    assert all(result is not None
               for p, (result, _) in zip(RECORDS, outcomes, strict=True) if p.name != "00108_hr")


# ------------------------------------------------------------------ tables and PTB-XL

def test_ptbxl_table_on_the_shipped_slice():
    table = record_tables.ptbxl_table(DATA, "mi_norm")
    assert dict(zip(table["ecg_id"], table["group"], strict=True)) == {
        1: "NORM", 108: "NORM", 289: "NORM", 240: "MI", 266: "MI", 270: "MI"}
    assert table["patient_id"].dtype == np.int64
    assert set(table["record"]) == {f"records500/00000/{i:05d}_hr"
                                    for i in (1, 108, 289, 240, 266, 270)}
    four = record_tables.ptbxl_table(DATA, "superclass4")
    assert dict(zip(four["ecg_id"], four["group"], strict=True)) == {
        1: "NORM", 108: "NORM", 289: "NORM", 240: "MI", 270: "MI", 22: "STTC", 32: "CD"}


@pytest.mark.skipif(not SHARED_PTBXL.is_dir(), reason="shared PTB-XL subset not present")
def test_ptbxl_table_counts_on_the_500_records():
    counts = record_tables.ptbxl_table(SHARED_PTBXL, "mi_norm")["group"].value_counts()
    assert counts.to_dict() == {"NORM": 290, "MI": 73}


def test_min_likelihood_counts_only_statements_that_likely():
    # the slice: 108 and 289 {'NORM': 80}, 240 {'IMI': 50}, 266 {'ALMI': 100, 'IMI': 80, ...}
    tables = {m: record_tables.ptbxl_table(DATA, "mi_norm", m) for m in (0, 50, 51, 100)}
    groups = {m: dict(zip(table["ecg_id"], table["group"], strict=True))
              for m, table in tables.items()}
    assert groups[0] == groups[50] == {1: "NORM", 108: "NORM", 289: "NORM", 240: "MI",
                                       266: "MI", 270: "MI"}
    assert groups[51] == {1: "NORM", 108: "NORM", 289: "NORM", 266: "MI", 270: "MI"}
    assert groups[100] == {1: "NORM", 266: "MI", 270: "MI"}


def group_changes(task, min_likelihood):
    """Records of the shared 500 whose group (or being in the task at all) changes."""
    def groups(m):
        return record_tables.ptbxl_table(SHARED_PTBXL, task, m).set_index("ecg_id")["group"]
    before, after = groups(0), groups(min_likelihood)
    both = before.index.union(after.index)
    return int((before.reindex(both).fillna("-") != after.reindex(both).fillna("-")).sum())


@pytest.mark.skipif(not SHARED_PTBXL.is_dir(), reason="shared PTB-XL subset not present")
def test_min_likelihood_changes_on_the_500_records():
    # the numbers docs/data.md gives for MIN_LIKELIHOOD
    assert [group_changes("mi_norm", m) for m in (50, 100)] == [27, 97]
    assert [group_changes("lvh_norm", m) for m in (50, 100)] == [2, 58]


def test_ptbxl_device_keeps_one_device_family():
    def ids(device):
        return set(record_tables.ptbxl_table(DATA, "superclass4", 0, device)["ecg_id"])
    assert ids("AT-6") == ids(" at-6 c ") == {270, 289}
    assert ids("cs-12") == ids("CS-12 E") == {1, 22, 32, 108, 240}
    for unknown in ("AT", "AT-60", "Schiller"):
        with pytest.raises(UserError, match=r"device families present: CS-12 \(5 records\), "
                                            r"AT-6 \(3 records\)"):
            ids(unknown)


def test_ptbxl_options_are_recorded_and_refused_with_a_table(monkeypatch, tmp_path):
    out = tmp_path / "cohort"
    run_prepare_data(monkeypatch, f"--ptbxl_dir={DATA}", f"--output_dir={out}", "--workers=1",
                     "--beats=first:1", "--min_likelihood=50", "--ptbxl_device=CS-12",
                     trainable=False)
    source = json.loads((out / "cohort.json").read_text())["source"]
    assert source["min_likelihood"] == 50.0 and source["ptbxl_device"] == "CS-12"
    summary = json.loads((out / "prepare_summary.json").read_text())
    assert summary["records_read"] == 3 and summary["records_per_group"] == {"NORM": 2, "MI": 1}
    with pytest.raises(UserError, match="--ptbxl_device='AT-6' select PTB-XL records"):
        run_prepare_data(monkeypatch, f"--table={DATA / 'records.csv'}",
                         f"--output_dir={tmp_path / 'x'}", "--ptbxl_device=AT-6")


def test_ptbxl_lvh_norm_takes_lvh_statements_and_pure_norm(tmp_path):
    shutil.copy(DATA / "scp_statements.csv", tmp_path)
    db = pd.read_csv(DATA / "ptbxl_database.csv", index_col="ecg_id").head(4).copy()
    db["scp_codes"] = ["{'NORM': 100.0}", "{'LVH': 50.0, 'SR': 0.0}", "{'LVH': 0.0, 'IMI': 80.0}",
                       "{'NORM': 80.0, 'IMI': 15.0}"]
    db.to_csv(tmp_path / "ptbxl_database.csv")
    table = record_tables.ptbxl_table(tmp_path, "lvh_norm")
    assert dict(zip(table["ecg_id"], table["group"], strict=True)) == {
        db.index[0]: "NORM", db.index[1]: "LVH", db.index[2]: "LVH"}
    assert record_tables.task_labels("lvh_norm")["binary_labels"] == {"NORM": 0, "LVH": 1}


def test_input_mistakes_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        record_tables.records_table(tmp_path / "nope.csv", ["NORM", "MI"])
    with pytest.raises(UserError, match="ptbxl_database.csv not found"):
        record_tables.ptbxl_table(tmp_path, "mi_norm")
    bad = tmp_path / "bad.csv"
    bad.write_text("record,patient\nx,1\n")
    with pytest.raises(UserError, match="missing column"):
        record_tables.records_table(bad, ["NORM", "MI"])
    bad.write_text("record,patient_id,group\nx,1,NORM\ny,2,HYP\n")
    with pytest.raises(UserError, match="HYP are not groups of this task"):
        record_tables.records_table(bad, ["NORM", "MI"])
    with pytest.raises(UserError, match="task"):
        record_tables.task_labels("three_class")
    with pytest.raises(UserError, match="detector_lead"):
        record_beats.checked_options(dataclasses.replace(GIVEN_OPTIONS, detector_lead="V7"))
    lead = record_beats.checked_options(dataclasses.replace(GIVEN_OPTIONS,
                                                            detector_lead="avf")).detector_lead
    assert lead == "aVF"


def test_patient_ids_keep_numbers_as_integers_and_text_as_fixed_width_strings():
    ids = record_tables.patient_id_values(pd.Series([15709.0, 13243.0]))
    assert ids.dtype == np.int64
    assert list(record_tables.patient_id_values(pd.Series(["15709", "7.0"]))) == [15709, 7]
    ids = record_tables.patient_id_values(pd.Series(["P001", "P002"]))
    assert ids.dtype.kind == "U"
    assert list(record_tables.patient_id_values(pd.Series(["007", "7"]))) == ["007", "7"]


# ------------------------------------------------------------------ the script

COHORT_KEYS = {"name", "groups", "group_names", "binary_labels", "binary_class_names",
               "multiclass_labels", "multiclass_class_names", "analysis_subgroups", "leads",
               "sampling_rate", "r_peak_sample", "source"}


def test_cohort_folder_from_a_table(monkeypatch, tmp_path):
    out = tmp_path / "cohort"
    run_prepare_data(monkeypatch, f"--table={DATA / 'records.csv'}", f"--output_dir={out}",
                     "--workers=1")
    cohort = json.loads((out / "cohort.json").read_text())
    assert set(cohort) == COHORT_KEYS
    assert cohort["groups"] == ["NORM", "MI"]
    assert cohort["binary_labels"] == {"NORM": 0, "MI": 1}
    assert cohort["binary_class_names"] == ["NORM", "MI"]
    assert cohort["group_names"] == {"NORM": "NORM", "MI": "MI"}
    assert cohort["analysis_subgroups"] == {"MI": "MI"}
    assert cohort["multiclass_labels"] is None and cohort["multiclass_class_names"] is None
    assert cohort["sampling_rate"] == 500 and cohort["r_peak_sample"] == 150

    manifest = pd.read_csv(out / "beats_manifest.csv")
    assert list(manifest.columns) == ["group", "patient_id", "record", "beat_index",
                                      "r_peak_sample", "row"]
    table = pd.read_csv(DATA / "records.csv")
    for group in cohort["groups"]:
        beats = np.load(out / f"cut_{group}.npy", allow_pickle=False)
        ids = np.load(out / f"cut_{group}_patient_ids.npy", allow_pickle=False)
        assert beats.dtype == np.float32 and beats.shape[1:] == (12, 500)
        assert ids.dtype == np.int64 and len(ids) == len(beats)
        rows = manifest[manifest["group"] == group]
        assert list(rows["row"]) == list(range(len(beats)))
        assert list(rows["patient_id"]) == list(ids)
        assert set(rows["patient_id"]) == set(table.loc[table["group"] == group, "patient_id"])
    # the manifest's R peak leads back to the beat in the original record
    first = manifest.iloc[0]
    x, _, fs = physical(DATA / first["record"])
    filtered = record_beats.bandpassed(x, fs, (0.5, 40.0), 2, (50.0, 60.0))
    beat = np.load(out / f"cut_{first['group']}.npy")[first["row"]]
    start = first["r_peak_sample"] - 150
    np.testing.assert_allclose(beat, filtered[start:start + 500].T, atol=1e-5)

    summary = json.loads((out / "prepare_summary.json").read_text())
    assert summary["records_read"] == 6 and summary["records_kept"] == 6
    assert summary["beats_per_group"] == {g: int((manifest["group"] == g).sum())
                                          for g in ("NORM", "MI")}
    assert not list(out.glob(".*.part"))

    # the project's loader accepts the folder as it is
    dataset = pytest.importorskip("ECG_dataset")
    loaded = dataset.load_cohort(str(out))
    assert loaded.beats.shape == (len(manifest), 12, 500) and loaded.patient_ids_given
    assert list(loaded.labels("binary")) == [cohort["binary_labels"][g] for g in manifest["group"]]


def test_patients_in_two_classes_are_left_out(monkeypatch, tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("record,patient_id,group\n"
                     f"{record_path(1)},7,NORM\n{record_path(270)},7,MI\n"
                     f"{record_path(108)},8,NORM\n{record_path(240)},9,MI\n")
    out = tmp_path / "out"
    run_prepare_data(monkeypatch, f"--table={table}", f"--output_dir={out}", "--workers=1",
                     trainable=False)
    summary = json.loads((out / "prepare_summary.json").read_text())
    assert summary["records_read"] == 4 and summary["records_kept"] == 2
    rejected = {r["record"]: r["reason"] for r in summary["rejections"]}
    assert set(rejected) == {str(record_path(1)), str(record_path(270))}
    assert all(reason.startswith("patient in several classes: patient 7 has records in MI, NORM")
               for reason in rejected.values())
    assert set(np.load(out / "cut_NORM_patient_ids.npy")) == {8}
    assert set(np.load(out / "cut_MI_patient_ids.npy")) == {9}


def test_mixed_table_keeps_good_records_and_lists_rejections(monkeypatch, tmp_path):
    x, names, fs = physical(record_path(1))
    write_record(tmp_path, "no_avf", np.delete(x, 5, axis=1), names[:5] + names[6:], fs)
    with_nan = x.copy()
    with_nan[10, 0] = np.nan
    write_record(tmp_path, "nan", with_nan, names, fs)
    write_record(tmp_path, "short", x[:300], names, fs)
    table = tmp_path / "table.csv"
    table.write_text("record,patient_id,group\n"
                     f"{record_path(1)},P1,NORM\n{record_path(270)},P2,MI\n"
                     "no_avf,P3,MI\nnan,P4,NORM\nshort,P5,NORM\nmissing,P6,MI\n")
    out = tmp_path / "out"
    run_prepare_data(monkeypatch, f"--table={table}", f"--output_dir={out}", "--workers=2",
                     trainable=False)
    summary = json.loads((out / "prepare_summary.json").read_text())
    reasons = {r["record"]: r["reason"] for r in summary["rejections"]}
    assert set(reasons) == {"no_avf", "nan", "short", "missing"}
    assert reasons["no_avf"].startswith("missing lead: missing lead aVF")
    assert summary["rejection_counts"] == {"missing lead": 1, "NaN samples": 1, "too short": 1,
                                           "unreadable": 1}
    assert summary["records_kept"] == 2
    ids = np.load(out / "cut_NORM_patient_ids.npy", allow_pickle=False)
    assert ids.dtype.kind == "U" and set(ids) == {"P1"}
    assert len(np.load(out / "cut_MI.npy")) == summary["beats_per_group"]["MI"] > 10


def test_superclass4_from_ptbxl_and_the_overwrite_rule(monkeypatch, tmp_path):
    out = tmp_path / "four"
    run_prepare_data(monkeypatch, f"--ptbxl_dir={DATA}", "--task=superclass4",
                     f"--output_dir={out}", "--workers=1", "--beats=first:2", trainable=False)
    cohort = json.loads((out / "cohort.json").read_text())
    assert set(cohort) == COHORT_KEYS and cohort["name"] == "ptbxl_superclass4"
    assert cohort["groups"] == ["NORM", "MI", "STTC", "CD"]
    assert cohort["multiclass_labels"] == {"NORM": 0, "MI": 1, "STTC": 2, "CD": 3}
    assert cohort["multiclass_class_names"] == ["NORM", "MI", "STTC", "CD"]
    assert cohort["binary_labels"] is None and cohort["analysis_subgroups"] is None
    assert [len(np.load(out / f"cut_{g}.npy")) for g in cohort["groups"]] == [6, 4, 2, 2]

    with pytest.raises(UserError, match="not empty.*--overwrite=True"):
        run_prepare_data(monkeypatch, f"--ptbxl_dir={DATA}", "--task=mi_norm",
                         f"--output_dir={out}")
    (out / "notes.txt").write_text("mine")
    run_prepare_data(monkeypatch, f"--ptbxl_dir={DATA}", "--task=mi_norm", f"--output_dir={out}",
                     "--overwrite=True", "--workers=1")
    assert json.loads((out / "cohort.json").read_text())["groups"] == ["NORM", "MI"]
    assert not (out / "cut_STTC.npy").exists()
    assert (out / "notes.txt").read_text() == "mine"


def test_script_end_to_end_and_missing_table_exit_codes(tmp_path):
    out = tmp_path / "cohort"
    done = subprocess.run([sys.executable, "prepare_data.py", f"--table={DATA / 'records.csv'}",
                           f"--output_dir={out}", "--workers=2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=HANG_LIMIT_S)
    assert done.returncode == 0, done.stderr
    assert "NORM:" in done.stdout and "MI:" in done.stdout and str(out) in done.stdout
    assert (out / "cut_MI_patient_ids.npy").is_file()

    missing = subprocess.run([sys.executable, "prepare_data.py", f"--table={tmp_path / 'none.csv'}",
                              f"--output_dir={tmp_path / 'x'}"],
                             cwd=ROOT, capture_output=True, text=True, timeout=HANG_LIMIT_S)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: --table=") and "Traceback" not in missing.stderr
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- unlabelled ECGs (pretrain.py)

def test_unlabelled_ptbxl_keeps_every_record_in_one_group(monkeypatch, tmp_path):
    table = record_tables.ptbxl_table(DATA, "unlabelled")
    database = pd.read_csv(DATA / "ptbxl_database.csv", index_col="ecg_id")
    assert sorted(table["ecg_id"]) == sorted(database.index) and set(table["group"]) == {"ALL"}
    out = tmp_path / "unlabelled"
    run_prepare_data(monkeypatch, f"--ptbxl_dir={DATA}", f"--output_dir={out}", "--workers=1",
                     "--beats=first:2", "--task=unlabelled")
    spec = json.loads((out / "cohort.json").read_text())
    assert spec["groups"] == ["ALL"] and spec["binary_labels"] is None \
        and spec["multiclass_labels"] is None
    cohort = ds.load_cohort(str(out))
    assert cohort.patient_ids_given and len(cohort.beats) == 2 * len(database)
    assert set(cohort.patient_ids.astype(int)) == set(database["patient_id"].astype(int))


def test_an_unlabelled_table_needs_no_group_column(monkeypatch, tmp_path, capsys):
    records = pd.read_csv(DATA / "records.csv")
    table = tmp_path / "ecgs.csv"
    records.drop(columns="group").assign(
        record=[str(DATA / r) for r in records["record"]]).to_csv(table, index=False)
    out = tmp_path / "from_table"
    run_prepare_data(monkeypatch, f"--table={table}", f"--output_dir={out}", "--workers=1",
                     "--beats=first:1", "--task=unlabelled")
    cohort = ds.load_cohort(str(out))
    assert cohort.groups == ["ALL"] and len(cohort.beats) == len(records)
    assert "not used" not in capsys.readouterr().out      # no group column, nothing to note
    with pytest.raises(UserError, match="missing column.*group"):
        run_prepare_data(monkeypatch, f"--table={table}", f"--output_dir={tmp_path / 'x'}",
                         "--task=binary:NORM,MI")


def test_an_unlabelled_table_notes_the_groups_it_does_not_use(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("record,patient_id,group\na,1,NORM\nb,2,MI\nc,3,\n")
    lines = []
    table = record_tables.records_table(path, ["ALL"], log=lines.append)
    assert table["group"].tolist() == ["ALL"] * 3
    assert lines == ["note: --task=unlabelled puts every record in group ALL; the table's 2 "
                     "groups (MI, NORM) are not used"]


def test_min_likelihood_is_refused_for_unlabelled(monkeypatch, tmp_path):
    with pytest.raises(UserError, match=r"--min_likelihood=50.0 selects records by their "
                                        r"statements; --task=unlabelled reads none"):
        run_prepare_data(monkeypatch, f"--ptbxl_dir={DATA}", f"--output_dir={tmp_path / 'u'}",
                         "--task=unlabelled", "--min_likelihood=50")
    assert not (tmp_path / "u").exists()
