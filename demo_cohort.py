"""Write a synthetic cohort with a known LVR signal (lvr/data/demo.py describes the simulation).

The defaults are the demo cohort the scripts use when data/ holds none; change LVR_LEADS, SEED or
the others to make an unseen cohort, e.g.
    python demo_cohort.py --output_dir=data/other --lvr_leads=I,aVL,V6 --seed=7
Every constant below can be overridden as --lower_case_name=value; --help lists them.
"""
import os
import time

from lvr.config import UserError, configure, run_script
from lvr.data.demo import DEMO_CONFIG as DEMO, write_demo_cohort

OUTPUT_DIR = os.path.join("data", "demo")       # folder the cohort is written to
OVERWRITE = False                               # replace an existing cohort in OUTPUT_DIR
SEED = DEMO["SEED"]                             # generator seed: same seed, same cohort
N_PATIENTS = DEMO["N_PATIENTS"]                 # patients per group
BEATS_PER_PATIENT = DEMO["BEATS_PER_PATIENT"]   # beats per patient, drawn uniformly in [lo, hi]
LVR_LEADS = DEMO["LVR_LEADS"]                   # leads that carry the LVR effect
LVR_WAVE = DEMO["LVR_WAVE"]                     # the sign: T, QRS, Q, ST_DEPRESSION or ST_ELEVATION
LVR_STRENGTH = DEMO["LVR_STRENGTH"]             # per-patient strength s (T: wave scaled by 1 - s)
NON_LVR_CHANGE = DEMO["NON_LVR_CHANGE"]         # share of non-LVR patients with milder s~U(lo, hi)
DISCORDANT_SHARE = DEMO["DISCORDANT_SHARE"]     # patients whose ECG contradicts their class
FS = DEMO["FS"]                                 # sampling rate (Hz)
WINDOW_S = DEMO["WINDOW_S"]                     # beat window length (s)
R_PEAK_S = DEMO["R_PEAK_S"]                     # R peak position in the window (s)
NOISE_MV = DEMO["NOISE_MV"]                     # white noise standard deviation (mV)
WANDER_MV = DEMO["WANDER_MV"]                   # baseline wander amplitude (mV)
AMPLITUDE_SCALE = 1.0                           # gain on every beat (1.2: a device 20% too high)


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
