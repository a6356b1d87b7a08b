"""Shared fixtures: small synthetic cohorts written in the data contract, and trained runs that
several test files read (session scope: trained once per test session)."""
import os
import shutil

# One thread for torch and BLAS, also in the scripts the tests start: the models are tiny, so a
# second thread only adds synchronisation (on a busy 2-core machine whole seconds per run), and
# one-thread CPU results are reproducible.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402

from helpers import write_small_cohort  # noqa: E402


@pytest.fixture(scope="session")
def small_cohort_dir(tmp_path_factory):
    """A 40-patient, ~80-beat cohort of 0.6 s beats (T = 300); do not modify it."""
    return write_small_cohort(tmp_path_factory.mktemp("small_cohort"))


@pytest.fixture
def cohort_copy(tmp_path, small_cohort_dir):
    """A private copy of the small cohort that a test may break."""
    target = tmp_path / "cohort"
    shutil.copytree(small_cohort_dir, target)
    return target
