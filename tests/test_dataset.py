import json
import os
import pickle

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

import ECG_dataset
from lvr.data import beat_files
from lvr.data.beat_files import BeatFiles
from lvr.data.beats import (ECGDataset, LeadDropout, StandardisedBeats, package_dataset,
                            standardize_beats)
from lvr.data.cohort import load_cohort
from lvr.data.cohort_json import CohortError
from lvr.data.split import patient_kfold_indices, patient_split_indices, split_dataset_by_patients
from lvr.data import demo
from lvr.leads import LEAD_NAMES
from helpers import beats_of, script_result
from references import cohort_in_memory

GROUPS = ("NS_0", "NS_1", "ST_0", "ST_1")


# ----------------------------------------------------------------------------- loading

def test_load_cohort_returns_float32_beats_labels_ids_and_groups(small_cohort_dir):
    cohort = load_cohort(small_cohort_dir)
    sizes = [len(beats_of(small_cohort_dir, g)) for g in GROUPS]
    assert cohort.beats.dtype == np.float32 and cohort.beats.shape == (sum(sizes), 12, 300)
    assert np.array_equal(np.bincount(cohort.group_index), sizes)
    assert np.array_equal(cohort.labels("multiclass"), np.repeat([0, 1, 2, 3], sizes))
    assert np.array_equal(cohort.labels("binary"), np.repeat([0, 1, 0, 1], sizes))
    assert cohort.patient_ids_given and cohort.patient_ids.dtype.kind == "U"
    assert cohort.class_names("multiclass")[3] == "STEMI LVR"
    assert len(cohort.fingerprint()) == 64


def test_seed_loaders_read_data_dir(monkeypatch, small_cohort_dir):
    monkeypatch.setattr(ECG_dataset, "DATA_DIR", small_cohort_dir)
    data, labels, ids = ECG_dataset.load_and_process_data()
    data2, labels2, ids2 = ECG_dataset.load_and_process_data_binary()
    assert data.shape == data2.shape and data.dtype == np.float32
    assert set(labels) == {0, 1, 2, 3} and set(labels2) == {0, 1}
    assert np.array_equal(labels2, np.isin(labels, [1, 3]).astype(int))
    assert np.allclose(data.mean(axis=2), 0, atol=1e-5)
    dataset, channels, length, classes = package_dataset(data, labels, ids)
    assert (channels, length, classes) == (12, 300, 4) and len(dataset) == len(labels)
    x, y, pid = dataset[0]
    assert x.shape == (12, 300) and int(y) == labels[0] and pid == ids[0]


def test_seed_style_dataset_from_list_of_pairs():
    items = [[np.ones((12, 5)) * i, i % 2] for i in range(4)]
    dataset = ECGDataset(items)
    assert len(dataset) == 4 and not dataset.has_patient_ids
    x, y = dataset[3]
    assert x.dtype.is_floating_point and float(x[0, 0]) == 3 and int(y) == 1


def test_standardize_matches_sklearn_and_flat_lead_is_zero():
    rng = np.random.default_rng(0)
    beats = rng.normal(3, 2, (5, 12, 100)).astype(np.float32)
    beats[1, 4] = 7.0
    ours = standardize_beats(beats)
    reference = np.array([StandardScaler().fit_transform(b.T).T for b in beats])
    assert ours.dtype == np.float32
    assert np.allclose(ours, reference, atol=1e-5)
    assert np.all(ours[1, 4] == 0) and np.isfinite(ours).all()


def test_missing_patient_ids_make_every_beat_its_own_patient(cohort_copy):
    for g in GROUPS:
        os.remove(cohort_copy / f"cut_{g}_patient_ids.npy")
    cohort = load_cohort(str(cohort_copy))
    assert not cohort.patient_ids_given
    assert len(np.unique(cohort.patient_ids)) == len(cohort.patient_ids)


def test_string_patient_ids_are_accepted(cohort_copy):
    for g in GROUPS:
        ids = np.load(cohort_copy / f"cut_{g}_patient_ids.npy")
        np.save(cohort_copy / f"cut_{g}_patient_ids.npy", np.array([f"P-{i}" for i in ids]))
    cohort = load_cohort(str(cohort_copy))
    assert cohort.patient_ids[0].startswith("P-")


def test_cohort_json_describes_other_groups(tmp_path):
    rng = np.random.default_rng(1)
    for g in ("NORM", "MI"):
        np.save(tmp_path / f"cut_{g}.npy", rng.normal(size=(6, 12, 300)).astype(np.float32))
    (tmp_path / "cohort.json").write_text(json.dumps({
        "groups": ["NORM", "MI"], "binary_labels": {"NORM": 0, "MI": 1},
        "binary_class_names": ["NORM", "MI"], "sampling_rate": 500}))
    cohort = load_cohort(str(tmp_path))
    assert cohort.class_names("binary") == ["NORM", "MI"]
    assert cohort.spec["analysis_subgroups"] == {"MI": "MI"}
    with pytest.raises(CohortError, match="multiclass"):
        cohort.labels("multiclass")


# ----------------------------------------------------------------------------- bad input

def break_object_array(folder):
    array = np.empty(3, dtype=object)
    array[:] = [np.zeros((12, 300))] * 3
    np.save(folder / "cut_NS_1.npy", array, allow_pickle=True)


def break_patient_in_two_classes(folder):
    ids0 = np.load(folder / "cut_NS_0_patient_ids.npy")
    ids1 = np.load(folder / "cut_NS_1_patient_ids.npy")
    ids1[0] = ids0[0]
    np.save(folder / "cut_NS_1_patient_ids.npy", ids1)


BAD_COHORTS = {
    "missing_file": (lambda f: os.remove(f / "cut_ST_1.npy"), "cut_ST_1.npy", "lacks"),
    "not_numpy": (lambda f: (f / "cut_NS_1.npy").write_text("beats,as,csv"), "cut_NS_1.npy",
                  "not a readable .npy"),
    "object_array": (break_object_array, "cut_NS_1.npy", "ALLOW_PICKLE"),
    "wrong_ndim": (lambda f: np.save(f / "cut_NS_1.npy", np.zeros((3, 3600))), "cut_NS_1.npy",
                   "2 dimensions"),
    "leads_last": (lambda f: np.save(f / "cut_NS_1.npy",
                                     np.transpose(np.load(f / "cut_NS_1.npy"), (0, 2, 1))),
                   "cut_NS_1.npy", "leads last"),
    "eleven_leads": (lambda f: np.save(f / "cut_ST_0.npy", np.load(f / "cut_ST_0.npy")[:, :11]),
                     "cut_ST_0.npy", "expected 12"),
    "different_length": (lambda f: np.save(f / "cut_ST_0.npy",
                                           np.load(f / "cut_ST_0.npy")[..., :250]),
                         "cut_ST_0.npy: T=250", "differ in length"),
    "nan": (lambda f: np.save(f / "cut_NS_0.npy", np.where(
        np.arange(300) == 7, np.nan, np.load(f / "cut_NS_0.npy"))), "cut_NS_0.npy", "NaN or Inf"),
    "inf": (lambda f: np.save(f / "cut_ST_1.npy", np.load(f / "cut_ST_1.npy") * np.inf),
            "cut_ST_1.npy", "NaN or Inf"),
    "empty_group": (lambda f: np.save(f / "cut_NS_1.npy", np.zeros((0, 12, 300), np.float32)),
                    "cut_NS_1.npy", "holds no beats"),
    "id_length": (lambda f: np.save(f / "cut_NS_0_patient_ids.npy",
                                    np.load(f / "cut_NS_0_patient_ids.npy")[:-1]),
                  "cut_NS_0_patient_ids.npy", "must match"),
    "ids_for_some_groups": (lambda f: os.remove(f / "cut_ST_0_patient_ids.npy"),
                            "cut_ST_0_patient_ids.npy", "every group or for none"),
    "patient_in_two_classes": (break_patient_in_two_classes, "patient_ids.npy",
                               "different binary class"),
    "bad_cohort_json": (lambda f: (f / "cohort.json").write_text("{groups: NS_0"), "cohort.json",
                        "not valid JSON"),
    "truncated": (lambda f: (f / "cut_NS_1.npy").write_bytes(
        (f / "cut_NS_1.npy").read_bytes()[:-100]), "cut_NS_1.npy", "is truncated"),
}


@pytest.mark.parametrize("case", sorted(BAD_COHORTS))
def test_bad_cohort_gets_a_clear_error(case, cohort_copy):
    breaker, file_name, message = BAD_COHORTS[case]
    breaker(cohort_copy)
    with pytest.raises(CohortError) as error:
        load_cohort(str(cohort_copy))
    assert file_name in str(error.value) and message in str(error.value)


def test_nan_in_the_last_chunk_of_a_file_larger_than_a_chunk_is_found(cohort_copy, monkeypatch):
    beats = np.load(cohort_copy / "cut_ST_1.npy")
    # a file of many chunks
    monkeypatch.setattr(beat_files, "CHECK_CHUNK_BYTES", 3 * beats[0].nbytes)
    assert len(beats) > 6
    beats[-1, 11, -1] = np.nan
    np.save(cohort_copy / "cut_ST_1.npy", beats)
    with pytest.raises(CohortError, match=rf"cut_ST_1.npy: 1 of {len(beats)} beats contain NaN "
                                             rf"or Inf \(first: beat {len(beats) - 1}\)"):
        load_cohort(str(cohort_copy))
    beats[1, 0, 0] = np.inf                                # two chunks: counted together
    np.save(cohort_copy / "cut_ST_1.npy", beats)
    with pytest.raises(CohortError, match=rf"2 of {len(beats)} beats .* \(first: beat 1\)"):
        load_cohort(str(cohort_copy))


def test_float64_beyond_float32_range_is_refused_like_inf(cohort_copy):
    beats = np.load(cohort_copy / "cut_NS_0.npy").astype(np.float64)
    beats[2, 3, 4] = 1e300                                 # Inf once read as float32
    np.save(cohort_copy / "cut_NS_0.npy", beats)
    with pytest.raises(CohortError, match=r"cut_NS_0.npy: 1 of .* \(first: beat 2\)"):
        load_cohort(str(cohort_copy))


def test_beat_files_read_like_the_concatenated_files(small_cohort_dir):
    cohort = load_cohort(small_cohort_dir)
    whole = np.concatenate([beats_of(small_cohort_dir, g) for g in GROUPS]).astype(np.float32)
    beats = cohort.beats
    assert isinstance(beats, BeatFiles) and beats.shape == whole.shape
    assert all(isinstance(a, np.memmap) for a in beats.arrays)       # nothing read into memory
    rng = np.random.default_rng(0)
    keys = [5, -1, slice(3, 40), slice(None, None, 7), rng.permutation(len(whole))[:30],
            np.array([len(whole) - 1, 0, 0]), rng.random(len(whole)) < 0.3, [2, 1]]
    for key in keys:
        assert np.array_equal(beats[key], whole[key]) and beats[key].dtype == np.float32
    assert np.array_equal(np.asarray(beats), whole)
    with pytest.raises(IndexError):
        beats[[len(whole)]]
    copied = pickle.dumps(beats)                 # what a spawned DataLoader worker receives
    assert len(copied) < 2000 and np.array_equal(pickle.loads(copied)[[7, 70]], whole[[7, 70]])
    in_memory = cohort_in_memory(small_cohort_dir).beats
    assert type(in_memory) is np.ndarray and np.array_equal(in_memory, whole)


def test_standardised_batches_equal_the_whole_array_standardised(small_cohort_dir):
    """Per batch from the map gives exactly (bit for bit) the numbers of standardising every
    beat at once, the data path before memory mapping."""
    cohort = load_cohort(small_cohort_dir)
    whole = torch.from_numpy(standardize_beats(np.asarray(cohort.beats)))
    rows = np.random.default_rng(1).permutation(len(whole))[:50]
    split = StandardisedBeats(cohort.beats).rows(rows)
    assert split.shape == (50, 12, 300) and len(split) == 50
    assert torch.equal(split[:], whole[rows])
    assert torch.equal(split[[4, 0, 49]], whole[rows[[4, 0, 49]]])
    assert torch.equal(split[torch.tensor([3, 2])], whole[rows[[3, 2]]])
    assert torch.equal(split[10:20], whole[rows[10:20]]) and torch.equal(split[7], whole[rows[7]])


def test_dataloader_workers_read_the_same_batches(small_cohort_dir):
    from lvr.train.loop import batch_loader
    cohort = load_cohort(small_cohort_dir)
    labels = torch.from_numpy(cohort.labels("binary"))
    dataset = ECGDataset.from_arrays(StandardisedBeats(cohort.beats), labels)
    batches = [[torch.cat(part) for part in zip(*batch_loader(dataset, 16, True, seed=3,
                                                              num_workers=workers), strict=True)]
               for workers in (0, 2)]
    assert all(torch.equal(a, b) for a, b in zip(*batches, strict=True))


def test_missing_folder_names_the_expected_files(tmp_path):
    with pytest.raises(CohortError, match="cut_NS_0.npy.*Data format"):
        load_cohort(str(tmp_path / "nowhere"))


def test_object_array_loads_when_pickle_is_allowed(cohort_copy):
    break_object_array(cohort_copy)
    np.save(cohort_copy / "cut_NS_1_patient_ids.npy", np.array([900, 901, 902]))
    cohort = load_cohort(str(cohort_copy), allow_pickle=True)
    assert cohort.beats.dtype == np.float32


@pytest.mark.parametrize("case", ["missing_file", "object_array", "leads_last", "nan", "truncated",
                                  "patient_in_two_classes", "different_length", "empty_group",
                                  "id_length", "not_numpy", "wrong_ndim"])
def test_training_script_reports_bad_cohort_without_traceback(case, cohort_copy, tmp_path):
    breaker, file_name, message = BAD_COHORTS[case]
    breaker(cohort_copy)
    output_dir = tmp_path / "results"
    output_dir.mkdir()
    (output_dir / "earlier_result.json").write_text("{}")
    run = script_result("train_MCL_ResNet_1D_class2.py", f"--data_dir={cohort_copy}",
                        f"--output_dir={output_dir}")
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and file_name in run.stderr and message in run.stderr
    assert (output_dir / "earlier_result.json").read_text() == "{}"


def test_non_default_missing_data_dir_is_an_error_not_the_demo(tmp_path):
    run = script_result("train_MCL_ResNet_1D_class2.py", f"--data_dir={tmp_path / 'mine'}",
                        f"--output_dir={tmp_path / 'out'}")
    assert run.returncode == 2 and "does not exist" in run.stderr and "DEMO" not in run.stdout
    assert not (tmp_path / "out").exists()


def test_default_data_dir_without_files_uses_the_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    messages = []
    folder = demo.resolve_data_dir("data", log=messages.append)
    assert folder == demo.DEMO_DIR and os.path.exists(os.path.join(folder, "cut_ST_1.npy"))
    assert any("DEMO DATA" in m for m in messages)
    (tmp_path / "data" / "cut_NS_0.npy").write_bytes(b"")
    assert demo.resolve_data_dir("data", log=messages.append) == "data"


# ----------------------------------------------------------------------------- split

def unbalanced_cohort(seed=0):
    rng = np.random.default_rng(seed)
    patients_per_class = [300, 120, 60]
    labels, ids = [], []
    for cls, n in enumerate(patients_per_class):
        for p in range(n):
            k = int(rng.integers(1, 8))
            labels += [cls] * k
            ids += [f"c{cls}p{p}"] * k
    return np.array(labels), np.array(ids)


def test_split_is_patient_level_stratified_and_close_to_7_2_1():
    labels, ids = unbalanced_cohort()
    data = np.zeros((len(labels), 1, 1))
    out = split_dataset_by_patients(data, labels, ids, test_size=0.1, val_size=0.2,
                                       random_state=42)
    parts = patient_split_indices(labels, ids, 0.1, 0.2, 42)
    patients = {k: set(ids[v]) for k, v in parts.items()}
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"])
    assert not (patients["val"] & patients["test"])
    assert sum(len(v) for v in parts.values()) == len(labels)
    n = len(set(ids))
    for name, share in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        assert abs(len(patients[name]) / n - share) < 0.02
        assert set(labels[parts[name]]) == {0, 1, 2}
    assert np.array_equal(out[5], labels[parts["test"]]) and set(out[6]) == patients["test"]
    again = patient_split_indices(labels, ids, 0.1, 0.2, 42)
    other = patient_split_indices(labels, ids, 0.1, 0.2, 43)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    assert not np.array_equal(parts["test"], other["test"])


def test_split_refuses_a_class_with_too_few_patients():
    labels = np.array([0] * 10 + [1, 1])
    ids = np.array([f"a{i}" for i in range(10)] + ["b0", "b1"])
    with pytest.raises(CohortError, match="class 1 has only 2 patient"):
        patient_split_indices(labels, ids)


def test_kfold_folds_are_disjoint_patients_covering_everything():
    labels, ids = unbalanced_cohort(1)
    folds = patient_kfold_indices(labels, ids, 5)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(labels)))
    for i in range(5):
        for j in range(i + 1, 5):
            assert not set(ids[folds[i]]) & set(ids[folds[j]])
        assert set(labels[folds[i]]) == {0, 1, 2}


# ----------------------------------------------------------------------------- lead dropout

def lead_dropout_set(p=0.3, seed=3, n=400):
    x = torch.randn(n, 12, 20) + 5.0  # no zero values of its own
    return LeadDropout(ECGDataset.from_arrays(x, torch.arange(n) % 2), p, seed), x


def test_lead_dropout_zeroes_whole_leads_at_its_rate_and_never_all():
    dropout, x = lead_dropout_set()
    out, y = dropout[torch.arange(len(x))]
    zeroed = (out == 0).all(dim=2)
    assert torch.equal(zeroed, dropout.masks())
    assert torch.equal(out[~zeroed], x[~zeroed]) and torch.equal(y, torch.arange(len(x)) % 2)
    assert abs(zeroed.float().mean().item() - 0.3) < 0.02
    assert not zeroed.all(dim=1).any()
    dense = LeadDropout(dropout.dataset, 0.95, 0)
    assert not dense.masks().all(dim=1).any()  # a full draw keeps every lead instead


def test_lead_dropout_mask_depends_on_seed_epoch_and_beat_only():
    dropout, _ = lead_dropout_set()
    index = torch.tensor([7, 3, 250])
    first = dropout[index][0]
    assert torch.equal(first[1], dropout[torch.tensor([3])][0][0])  # batch-independent
    assert torch.equal(dropout.masks(), lead_dropout_set()[0].masks())  # same seed and epoch
    dropout.set_epoch(1)
    changed = dropout.masks().clone()
    dropout.set_epoch(0)
    assert not torch.equal(changed, dropout.masks())
    assert not torch.equal(lead_dropout_set(seed=4)[0].masks(), dropout.masks())


def test_lead_dropout_zero_is_the_identity_and_bad_rates_are_refused():
    dropout, x = lead_dropout_set(p=0.0)
    assert torch.equal(dropout[torch.arange(5)][0], x[:5])
    with pytest.raises(CohortError.__base__, match="LEAD_DROPOUT must be in"):
        lead_dropout_set(p=1.0)


# ----------------------------------------------------------------------------- demo cohort

def test_demo_cohort_is_deterministic_and_carries_its_ground_truth(tmp_path, small_cohort_dir):
    from helpers import write_small_cohort
    again = write_small_cohort(tmp_path / "again")
    for g in GROUPS:
        assert np.array_equal(beats_of(small_cohort_dir, g), beats_of(again, g))
    spec = json.loads(open(os.path.join(small_cohort_dir, "cohort.json")).read())
    truth = spec["ground_truth"]
    assert truth["lvr_leads"] == ["V2", "V3", "V4"] and truth["lvr_wave"] == "T"
    assert spec["r_peak_sample"] == 100


def test_demo_beats_look_like_ecgs(small_cohort_dir):
    beats = beats_of(small_cohort_dir, "NS_0").astype(float)
    lead = {name: i for i, name in enumerate(LEAD_NAMES)}
    # R peak of lead II near the configured sample, with a plausible amplitude (mV)
    r = np.abs(beats[:, lead["II"]]).argmax(axis=1)
    assert np.all(np.abs(r - 100) <= 6)
    assert 0.5 < np.median(beats[:, lead["II"]].max(axis=1)) < 3.0
    # Einthoven: III = II - I up to the independent noise of each lead
    residual = beats[:, lead["III"]] - (beats[:, lead["II"]] - beats[:, lead["I"]])
    assert np.median(np.abs(residual)) < 0.15
    # R wave progression: V1 mostly negative QRS, V6 mostly positive
    assert np.median(beats[:, lead["V1"], 90:110].min(axis=1)) < -0.3
    assert np.median(beats[:, lead["V6"], 90:110].max(axis=1)) > 0.5


def test_lvr_changes_only_the_lvr_leads_in_the_t_window(tmp_path):
    from helpers import write_small_cohort
    base = write_small_cohort(tmp_path / "a", noise_mv=0.0, wander_mv=0.0)
    no_lvr = write_small_cohort(tmp_path / "b", noise_mv=0.0, wander_mv=0.0,
                                lvr_strength=(0.0, 0.0))
    changed = np.abs(beats_of(base, "NS_1") - beats_of(no_lvr, "NS_1")).max(axis=(0,))
    lead = {name: i for i, name in enumerate(LEAD_NAMES)}
    lvr_rows = [lead[n] for n in ("V2", "V3", "V4")]
    others = [i for i in range(12) if i not in lvr_rows]
    assert changed[others].max() == 0
    assert changed[lvr_rows].max() > 0.05
    with open(os.path.join(base, "cohort.json"), encoding="utf-8") as handle:
        window = json.load(handle)["ground_truth"]["lvr_window_ms"]
    t_ms = np.arange(changed.shape[1]) * 2
    outside = (t_ms < window[0]) | (t_ms > window[1])
    assert changed[lvr_rows][:, outside].max() < 0.1 * changed[lvr_rows].max()
