"""The demo cohort's LVR signs (LVR_WAVE): where each one lies, its ground truth, and that the
default cohort is the one generator version 4 made before the other signs existed."""
import dataclasses
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import HANG_LIMIT_S, ROOT
from lvr.data import demo
from lvr.choices import LVR_SIGNS
from lvr.config import UserError
from lvr.leads import LEAD_NAMES, WAVES

# Recorded from generator version 4 before the Q and ST signs were added (commit 7f0b6db's
# lvr/data/demo.py), with arrays_sha256 below. The generator's float work is float64 cast to
# float32; these hashes were the same with numpy's AVX-512, AVX2 and baseline SIMD paths.
V4_FULL_DEFAULT_SHA256 = "f7526525c11e1399952608729e5244d415cf01baf4f83944ce241eebce3822a2"
V4_TINY_SHA256 = {"T": "25ae49af84946a0ba63c2608abd7deb8de3d8330bbd942ec5798ec5ef474b290",
                  "QRS": "dfe9bf578dd6ddd40422efa6501d1cb5d3101aba7b90c1ee7bab61cf84fb2b12"}
# The default cohort's cohort.json from version 4, without the key added since (lvr_sign)
V4_DEFAULT_SPEC_SHA256 = "2da367244a3c4a3a6f41cdcec103e64f1e9bfa760ba5d5258087e2da59148140"
V4_DEFAULT_SOURCE = {
    "generator": "demo_cohort.py", "generator_version": 4,
    "config": {"SEED": 2024, "N_PATIENTS": 100, "BEATS_PER_PATIENT": [2, 7],
               "LVR_LEADS": ["V2", "V3", "V4"], "LVR_WAVE": "T", "LVR_STRENGTH": [0.8, 2.2],
               "NON_LVR_CHANGE": [0.3, 0.0, 0.6], "DISCORDANT_SHARE": 0.06, "FS": 500,
               "WINDOW_S": 1.0, "R_PEAK_S": 0.3, "NOISE_MV": 0.02, "WANDER_MV": 0.08}}
V4_DEFAULT_TRUTH = {
    "synthetic": True, "lvr_leads": ["V2", "V3", "V4"], "lvr_wave": "T",
    "lvr_window_ms": [419, 720],
    "lvr_effect": "T wave scaled by (1 - s) in the LVR leads, s ~ U(0.8, 2.2) per LVR patient; "
                  "30% of non-LVR patients have s ~ U(0.0, 0.6); 6% of patients are discordant",
    "stemi_leads": ["II", "III", "aVF"], "stemi_wave": "ST"}

SIGNS = tuple(LVR_SIGNS)
LVR_GROUPS = ("NS_1", "ST_1")
NON_LVR_GROUPS = ("NS_0", "ST_0")


def arrays_sha256(options):
    digest = hashlib.sha256()
    for group, (beats, ids) in demo.demo_cohort_arrays(options).items():
        digest.update(group.encode())
        digest.update(beats.tobytes())
        digest.update(ids.tobytes())
    return digest.hexdigest()


def tiny_default(**overrides):
    return dataclasses.replace(demo.DEMO_DEFAULTS, n_patients=3, beats_per_patient=(1, 2),
                               **overrides)


# ----------------------------------------------------------------------------- unchanged default

def test_the_default_cohort_is_byte_identical_to_generator_version_4():
    assert demo.DEMO_DEFAULTS.lvr_wave == "T" and demo.GENERATOR_VERSION == 4
    assert demo.DEMO_DEFAULTS == demo.DemoOptions()
    assert arrays_sha256(demo.DEMO_DEFAULTS) == V4_FULL_DEFAULT_SHA256
    assert arrays_sha256(tiny_default()) == V4_TINY_SHA256["T"]


def test_the_qrs_sign_is_unchanged_too():
    assert arrays_sha256(tiny_default(lvr_wave="QRS")) == V4_TINY_SHA256["QRS"]


def test_the_default_cohort_json_only_gained_lvr_sign_and_class_names():
    spec = demo.demo_cohort_spec(demo.DEMO_DEFAULTS)
    assert spec["source"] == V4_DEFAULT_SOURCE
    assert spec["binary_class_names"] == ["non-LVR", "LVR"]
    spec["binary_class_names"] = ["Normal", "Abnormal"]   # version 4 had the original's names
    truth = dict(spec["ground_truth"])
    assert truth.pop("lvr_sign") == "T"
    assert truth == V4_DEFAULT_TRUTH
    spec["ground_truth"] = truth
    assert hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest() == \
        V4_DEFAULT_SPEC_SHA256


def test_an_existing_version_4_default_demo_is_not_remade(tmp_path):
    """ensure_demo_cohort compares generator_version and source.config only."""
    (tmp_path / "cohort.json").write_text(json.dumps({"source": V4_DEFAULT_SOURCE}))
    messages = []
    assert demo.ensure_demo_cohort(str(tmp_path), log=messages.append) is False
    assert messages == [] and os.listdir(tmp_path) == ["cohort.json"]


# ----------------------------------------------------------------------------- the signs

def sign_options(sign, **overrides):
    options = dataclasses.replace(demo.DEMO_DEFAULTS, n_patients=6, beats_per_patient=(2, 2),
                                  lvr_wave=sign, discordant_share=0.0,
                                  non_lvr_change=(0.0, 0.0, 0.0), seed=11)
    return dataclasses.replace(options, **overrides)


def difference(options, **baseline):
    """group -> beats of `options` minus those of the same seed with `baseline` overrides
    (float)."""
    with_sign = demo.demo_cohort_arrays(options)
    without = demo.demo_cohort_arrays(dataclasses.replace(options, **baseline))
    return {g: with_sign[g][0].astype(float) - without[g][0].astype(float) for g in with_sign}


def lvr_rows(options):
    return [LEAD_NAMES.index(name) for name in options.lvr_leads]


def check_only_in_lvr_leads_and_window(diff, options, truth):
    """The change is zero outside LVR_LEADS; in them >= 90% of its energy lies in the window."""
    rows = lvr_rows(options)
    others = [i for i in range(len(LEAD_NAMES)) if i not in rows]
    assert np.abs(diff[:, others]).max() == 0
    energy = (diff[:, rows] ** 2).sum(axis=(0, 1))
    t_ms = np.arange(diff.shape[2]) * 1000 / options.fs
    lo, hi = truth["lvr_window_ms"]
    inside = (t_ms >= lo) & (t_ms <= hi)
    assert energy[inside].sum() >= 0.9 * energy.sum()
    return inside


@pytest.mark.parametrize("sign", SIGNS)
def test_each_sign_lies_in_its_leads_and_window(sign):
    options = sign_options(sign)
    truth = demo.demo_cohort_spec(options)["ground_truth"]
    diff = difference(options, lvr_strength=(0.0, 0.0))
    for group in NON_LVR_GROUPS:            # no mild change, no discordant patient
        assert np.abs(diff[group]).max() == 0
    lvr = np.concatenate([diff[g] for g in LVR_GROUPS])
    inside = check_only_in_lvr_leads_and_window(lvr, options, truth)
    rows = lvr_rows(options)
    assert np.abs(lvr[:, rows]).max(axis=(1, 2)).min() > 0.05      # every LVR beat shows it
    mean_in_window = lvr[:, rows][:, :, inside].mean()
    if sign == "ST_DEPRESSION":
        assert mean_in_window < -0.05
    if sign == "ST_ELEVATION":
        assert mean_in_window > 0.05
    if sign == "Q":                        # before the R peak, and a deeper negative wave there
        r = int(round(options.r_peak_s * options.fs))
        energy = (lvr[:, rows] ** 2).sum(axis=(0, 1))
        assert energy[:r].sum() >= 0.9 * energy.sum()
        assert lvr[:, rows, :r].min(axis=2).max() < -0.05   # deeper in every beat and lead


@pytest.mark.parametrize("sign", SIGNS)
def test_mild_change_and_discordant_patients_carry_the_same_sign(sign):
    # every non-LVR patient with a mild sign (s ~ U(0.3, 0.6)) against the same cohort with s = 0
    options = sign_options(sign, non_lvr_change=(1.0, 0.3, 0.6))
    truth = demo.demo_cohort_spec(options)["ground_truth"]
    mild = difference(options, non_lvr_change=(1.0, 0.0, 0.0))
    strong = difference(options, lvr_strength=(0.0, 0.0))
    for group in LVR_GROUPS:
        assert np.abs(mild[group]).max() == 0
    non_lvr = np.concatenate([mild[g] for g in NON_LVR_GROUPS])
    check_only_in_lvr_leads_and_window(non_lvr, options, truth)
    rows = lvr_rows(options)
    lvr = np.concatenate([strong[g] for g in LVR_GROUPS])
    assert 0 < np.abs(non_lvr[:, rows]).mean() < np.abs(lvr[:, rows]).mean()   # milder
    # every patient discordant: LVR patients lose the sign, non-LVR patients carry it in full
    options = sign_options(sign, discordant_share=1.0)
    flipped = difference(options, lvr_strength=(0.0, 0.0))
    for group in LVR_GROUPS:
        assert np.abs(flipped[group]).max() == 0
    check_only_in_lvr_leads_and_window(np.concatenate([flipped[g] for g in NON_LVR_GROUPS]),
                                       options, truth)


EXPECTED_TRUTH = {   # LVR_WAVE -> (lvr_wave, lvr_window_ms for R at 300 ms)
    "T": ("T", [419, 720]),
    "QRS": ("QRS", [255, 353]),
    "Q": ("QRS", [242, 310]),
    "ST_DEPRESSION": ("ST", [324, 456]),
    "ST_ELEVATION": ("ST", [324, 456]),
}


@pytest.mark.parametrize("sign", SIGNS)
def test_ground_truth_names_the_delineated_segment_and_the_sign(sign, tmp_path):
    options = sign_options(sign, n_patients=1, beats_per_patient=(1, 1), lvr_leads=("I", "aVL"))
    demo.write_demo_cohort(str(tmp_path), options)
    with open(tmp_path / "cohort.json", encoding="utf-8") as handle:
        spec = json.load(handle)
    truth = spec["ground_truth"]
    assert (truth["lvr_wave"], truth["lvr_window_ms"]) == EXPECTED_TRUTH[sign]
    assert truth["lvr_wave"] in WAVES and truth["lvr_sign"] == sign
    assert truth["lvr_leads"] == ["I", "aVL"] and "LVR leads" in truth["lvr_effect"]
    assert spec["source"]["config"]["LVR_WAVE"] == sign


def test_every_sign_of_the_generator_is_a_delineated_wave():
    assert set(LVR_SIGNS.values()) <= set(WAVES)
    with pytest.raises(UserError, match="LVR_WAVE must be one of T, QRS, Q, ST_DEPRESSION, "
                                        "ST_ELEVATION, got 'P'"):
        demo.write_demo_cohort("unused", dataclasses.replace(demo.DEMO_DEFAULTS, lvr_wave="P"))


def test_an_unknown_sign_is_one_error_line_listing_the_signs(tmp_path):
    run = subprocess.run([sys.executable, os.path.join(ROOT, "demo_cohort.py"), "--lvr_wave=XYZ",
                          f"--output_dir={tmp_path / 'out'}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=HANG_LIMIT_S)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == ["error: --lvr_wave='XYZ': must be one of T, QRS, Q, "
                                       "ST_DEPRESSION, ST_ELEVATION"]
    assert os.listdir(tmp_path) == []
