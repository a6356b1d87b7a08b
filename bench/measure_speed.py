"""Speed of the ECG measurements (lvr/measure/ecg_features.py) with the nearest-peak search in
numpy (lvr.measure.delineation.numpy_find_closest) against neurokit2's own pandas search, side
by side on the same demo beats, in one process; checks the measurements are identical.

    python bench/measure_speed.py [--beats=200] [--leads=all]

Prints beats per second of both and their ratio. The ratio grows with the number of beats
delineated in one call (neurokit2's search is quadratic in it); the baseline delineates
CHUNK_BEATS beats at a time.
"""
import argparse
import contextlib
import tempfile
import time

import numpy as np

import common
import lvr.measure.delineation as delineation
from lvr.data.cohort import load_cohort
from lvr.data.demo import DEMO_DEFAULTS, write_demo_cohort
from lvr.measure.ecg_features import cohort_features


def measured(cohort, index, leads):
    """(features, methods, seconds) of the beats `index` of `cohort`."""
    start = time.perf_counter()
    features, _, methods = cohort_features(
        cohort.beats, index, cohort.spec["sampling_rate"], lead_names=list(cohort.spec["leads"]),
        r_peak_sample=cohort.spec.get("r_peak_sample"), leads=leads)
    return features, methods, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beats", type=int, default=200, help="demo beats measured")
    parser.add_argument("--leads", default="all", help="delineation leads: all, or II,V2,V5")
    args = parser.parse_args()
    leads = delineation.delineation_lead_names(args.leads)
    with tempfile.TemporaryDirectory() as folder:
        write_demo_cohort(folder, DEMO_DEFAULTS)
        cohort = load_cohort(folder)
        index = np.arange(min(args.beats, len(cohort.patient_ids)))
        fast, fast_methods, fast_s = measured(cohort, index, leads)
        numpy_search = delineation.numpy_find_closest
        delineation.numpy_find_closest = contextlib.nullcontext   # neurokit2's own search
        try:
            slow, slow_methods, slow_s = measured(cohort, index, leads)
        finally:
            delineation.numpy_find_closest = numpy_search
    same = np.array_equal(fast, slow, equal_nan=True) and fast_methods == slow_methods
    print(f"{len(index)} demo beats, delineation leads {args.leads}; {common.machine()}")
    print(f"| search | seconds | beats per second |\n|---|---:|---:|\n"
          f"| neurokit2 (pandas) | {slow_s:.1f} | {len(index) / slow_s:.2f} |\n"
          f"| numpy | {fast_s:.1f} | {len(index) / fast_s:.2f} |")
    print(f"ratio {slow_s / fast_s:.2f}; measurements identical: {same}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
