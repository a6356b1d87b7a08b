"""Write a synthetic cohort with a known LVR signal (lvr/data/demo.py describes the simulation).

The defaults are the demo cohort the scripts use when data/ holds none; change LVR_LEADS, SEED or
the others to make an unseen cohort, e.g.
    python demo_cohort.py --output_dir=data/other --lvr_leads=I,aVL,V6 --seed=7
Every constant below can be overridden as --lower_case_name=value; --help lists them.
"""
import os
import time

from lvr import options as valid
from lvr.config import UserError, configure, run_script
from lvr.data.demo import DEMO_CONFIG as DEMO, write_demo_cohort

# folder the cohort is written to
OUTPUT_DIR: valid.folder(written=True) = os.path.join("data", "demo")
# replace an existing cohort in OUTPUT_DIR
OVERWRITE: valid.FLAG = False
# generator seed: same seed, same cohort
SEED: valid.SEED = DEMO["SEED"]
# patients per group
N_PATIENTS: valid.integer(1) = DEMO["N_PATIENTS"]
# beats per patient, drawn uniformly in [lo, hi]
BEATS_PER_PATIENT: valid.ascending(valid.integer(1), strict=False) = DEMO["BEATS_PER_PATIENT"]
# leads that carry the LVR effect
LVR_LEADS: valid.LEADS = DEMO["LVR_LEADS"]
# the sign: T, QRS, Q, ST_DEPRESSION or ST_ELEVATION
LVR_WAVE: valid.LVR_WAVE = DEMO["LVR_WAVE"]
# per-patient strength s (T: wave scaled by 1 - s)
LVR_STRENGTH: valid.ascending(valid.number(), strict=False) = DEMO["LVR_STRENGTH"]
# share of non-LVR patients with milder s~U(lo, hi)
NON_LVR_CHANGE: valid.NON_LVR_CHANGE = DEMO["NON_LVR_CHANGE"]
# patients whose ECG contradicts their class
DISCORDANT_SHARE: valid.SHARE = DEMO["DISCORDANT_SHARE"]
# sampling rate (Hz)
FS: valid.integer(1) = DEMO["FS"]
# beat window length (s)
WINDOW_S: valid.POSITIVE = DEMO["WINDOW_S"]
# R peak position in the window (s)
R_PEAK_S: valid.NON_NEGATIVE = DEMO["R_PEAK_S"]
# white noise standard deviation (mV)
NOISE_MV: valid.NON_NEGATIVE = DEMO["NOISE_MV"]
# baseline wander amplitude (mV)
WANDER_MV: valid.NON_NEGATIVE = DEMO["WANDER_MV"]
# gain on every beat (1.2: a device 20% too high)
AMPLITUDE_SCALE: valid.POSITIVE = 1.0


def main():
    config = configure(globals())
    if os.path.exists(os.path.join(OUTPUT_DIR, "cohort.json")) and not OVERWRITE:
        raise UserError(f"{OUTPUT_DIR} already holds a cohort; choose another --output_dir or "
                        f"pass --overwrite=True to replace it")
    start = time.time()
    counts = write_demo_cohort(OUTPUT_DIR, {name: config[name] for name in DEMO},
                               amplitude_scale=AMPLITUDE_SCALE)
    per_group = ", ".join(f"{g}: {n}" for g, n in counts.items())
    print(f"Wrote {sum(counts.values())} beats ({per_group}) to {OUTPUT_DIR} in "
          f"{time.time() - start:.1f} s; LVR signal in {', '.join(LVR_LEADS)} ({LVR_WAVE})"
          + (f"; amplitudes x {AMPLITUDE_SCALE:g}." if AMPLITUDE_SCALE != 1 else "."))


if __name__ == "__main__":
    run_script(main)
