"""Shared fixtures: small synthetic cohorts written in the data contract."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from lvr import demo as demo_cohort  # noqa: E402


def small_cohort_config(**overrides):
    config = demo_cohort.default_config()
    config.update(N_PATIENTS=10, BEATS_PER_PATIENT=(1, 3), WINDOW_S=0.6, R_PEAK_S=0.2, SEED=5)
    config.update(overrides)
    return config


def write_small_cohort(folder, **overrides):
    demo_cohort.write_demo_cohort(str(folder), small_cohort_config(**overrides))
    return str(folder)


@pytest.fixture(scope="session")
def small_cohort_dir(tmp_path_factory):
    """A 40-patient, ~80-beat cohort of 0.6 s beats (T = 300); do not modify it."""
    return write_small_cohort(tmp_path_factory.mktemp("small_cohort"))


@pytest.fixture
def cohort_copy(tmp_path, small_cohort_dir):
    """A private copy of the small cohort that a test may break."""
    import shutil
    target = tmp_path / "cohort"
    shutil.copytree(small_cohort_dir, target)
    return target


def beats_of(folder, group):
    return np.load(os.path.join(folder, f"cut_{group}.npy"))
