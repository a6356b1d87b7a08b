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
from lvr.data.demo import DEMO_DEFAULTS as DEMO, DemoOptions, write_demo_cohort

# folder the cohort is written to
OUTPUT_DIR: valid.folder(written=True) = os.path.join("data", "demo")
# replace an existing cohort in OUTPUT_DIR
OVERWRITE: valid.FLAG = False
# generator seed: same seed, same cohort
SEED: valid.SEED = DEMO.seed
# patients per group
N_PATIENTS: valid.integer(1) = DEMO.n_patients
# beats per patient, drawn uniformly in [lo, hi]
BEATS_PER_PATIENT: valid.ascending(valid.integer(1), strict=False) = DEMO.beats_per_patient
# leads that carry the LVR effect
LVR_LEADS: valid.LEADS = DEMO.lvr_leads
# the sign: T, QRS, Q, ST_DEPRESSION or ST_ELEVATION
LVR_WAVE: valid.LVR_WAVE = DEMO.lvr_wave
# per-patient strength s (T: wave scaled by 1 - s)
LVR_STRENGTH: valid.ascending(valid.number(), strict=False) = DEMO.lvr_strength
# share of non-LVR patients with milder s~U(lo, hi)
NON_LVR_CHANGE: valid.NON_LVR_CHANGE = DEMO.non_lvr_change
# patients whose ECG contradicts their class
DISCORDANT_SHARE: valid.SHARE = DEMO.discordant_share
# sampling rate (Hz)
FS: valid.integer(1) = DEMO.fs
# beat window length (s)
WINDOW_S: valid.POSITIVE = DEMO.window_s
# R peak position in the window (s)
R_PEAK_S: valid.NON_NEGATIVE = DEMO.r_peak_s
# white noise standard deviation (mV)
NOISE_MV: valid.NON_NEGATIVE = DEMO.noise_mv
# baseline wander amplitude (mV)
WANDER_MV: valid.NON_NEGATIVE = DEMO.wander_mv
# gain on every beat (1.2: a device 20% too high)
AMPLITUDE_SCALE: valid.POSITIVE = 1.0


def main():
    config = configure(globals())
    if os.path.exists(os.path.join(OUTPUT_DIR, "cohort.json")) and not OVERWRITE:
        raise UserError(f"{OUTPUT_DIR} already holds a cohort; choose another --output_dir or "
                        f"pass --overwrite=True to replace it")
    start = time.time()
    options = DemoOptions(
        seed=config["SEED"], n_patients=config["N_PATIENTS"],
        beats_per_patient=config["BEATS_PER_PATIENT"], lvr_leads=config["LVR_LEADS"],
        lvr_wave=config["LVR_WAVE"], lvr_strength=config["LVR_STRENGTH"],
        non_lvr_change=config["NON_LVR_CHANGE"], discordant_share=config["DISCORDANT_SHARE"],
        fs=config["FS"], window_s=config["WINDOW_S"], r_peak_s=config["R_PEAK_S"],
        noise_mv=config["NOISE_MV"], wander_mv=config["WANDER_MV"])
    counts = write_demo_cohort(OUTPUT_DIR, options, amplitude_scale=AMPLITUDE_SCALE)
    per_group = ", ".join(f"{g}: {n}" for g, n in counts.items())
    print(f"Wrote {sum(counts.values())} beats ({per_group}) to {OUTPUT_DIR} in "
          f"{time.time() - start:.1f} s; LVR signal in {', '.join(LVR_LEADS)} ({LVR_WAVE})"
          + (f"; amplitudes x {AMPLITUDE_SCALE:g}." if AMPLITUDE_SCALE != 1 else "."))


if __name__ == "__main__":
    run_script(main)
