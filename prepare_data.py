"""Cut raw 12-lead ECG recordings into R-peak-aligned beats: a cohort folder for the scripts.

Input: a CSV table (columns record, patient_id, group; no group needed for --task=unlabelled;
record = path relative to the CSV's folder: a WFDB record without extension, or an EDF, DICOM,
Philips XML or GE MUSE XML file by its name), or PTB-XL itself (--ptbxl_dir=DIR builds the
table from ptbxl_database.csv and scp_statements.csv). lvr/prepare/record_tables.py describes the
tables, lvr/prepare/record_beats.py each step of a record, lvr/prepare/writer.py the output,
lvr/prepare/formats.py the formats.

    python prepare_data.py --ptbxl_dir=DIR --task=mi_norm --output_dir=OUT
    python prepare_data.py --table=records.csv --task=binary:CONTROL,LVR --output_dir=OUT
    python prepare_data.py --table=ecgs.csv --task=unlabelled --output_dir=OUT   # pretrain.py

Every constant below can be overridden as --lower_case_name=value; --help lists them.
"""
import os

from lvr import options as valid
from lvr.config import configure, run_script

# CSV with columns record, patient_id, group ("" when --ptbxl_dir is given)
TABLE: valid.file_path(optional=True) = ""
# PTB-XL folder (ptbxl_database.csv, scp_statements.csv, records500/)
PTBXL_DIR: valid.folder(optional=True) = ""
# mi_norm | lvh_norm | superclass4 | unlabelled | binary:NEG,POS | multiclass:A,B
TASK: valid.PREPARE_TASK = "mi_norm"
# cohort name in cohort.json; "" = ptbxl_<task> or <table file stem>
NAME: valid.TEXT = ""
# cohort folder to write; "" = data/<cohort name>
OUTPUT_DIR: valid.folder(optional=True, written=True) = ""
# replace this script's files in a non-empty OUTPUT_DIR
OVERWRITE: valid.FLAG = False
# PTB-XL: a scp_code counts if its likelihood >= this (0: all, as benchmark)
MIN_LIKELIHOOD: valid.number(0, 100) = 0.0
# PTB-XL: keep records whose device starts with this (e.g. AT-6, CS-12; "" = all)
PTBXL_DEVICE: valid.TEXT = ""
# "" = each file's stated amplitude unit; uV | mV | V = read every record's values in it
UNIT: valid.UNIT = ""
# median lead peak-to-peak (mV) outside it: unit error (PTB-XL 0.43-3.7)
PLAUSIBLE_MV: valid.ascending(valid.POSITIVE, strict=True) = (0.1, 20.0)
# Hz; every record is resampled to this rate
FS: valid.integer(1) = 500
# seconds kept before the R peak (the R peak sits at sample round(PRE * FS))
PRE: valid.NON_NEGATIVE = 0.3
# seconds kept from the R peak on
POST: valid.POSITIVE = 0.7
# all | first:K | random:K (K beats drawn with SEED) | median (one median beat)
BEATS: valid.BEATS = "all"
# Hz, zero-phase Butterworth band-pass (scipy sosfiltfilt)
BANDPASS: valid.ascending(valid.POSITIVE, strict=True) = (0.5, 40.0)
# Butterworth order of each pass; sosfiltfilt doubles the effective order
BANDPASS_ORDER: valid.integer(1) = 2
# mains hum removed by zero-phase notches (Q 30) before the band-pass
NOTCH_HZ: valid.FREQUENCIES = (50.0, 60.0)
# neurokit2 ecg_findpeaks method (best agreement with wfdb XQRS on PTB-XL)
DETECTOR: valid.matching(r"\w+", "the name of a neurokit2 ecg_findpeaks method") = "neurokit"
# lead the R peaks are detected on
DETECTOR_LEAD: valid.LEAD_NAME = "II"
# seconds: detections snap to the dominant QRS deflection within +- this
R_REFINE_S: valid.NON_NEGATIVE = 0.08
# drop detections below this x the record's 75th-percentile R amplitude
MIN_PEAK_RATIO: valid.SHARE = 0.35
# plausible median heart rate; outside it the record is rejected
HEART_RATE_BPM: valid.ascending(valid.POSITIVE, strict=True) = (30.0, 220.0)
# reject a record with a lead whose filtered peak-to-peak is below this (mV)
REJECT_FLAT_MV: valid.NON_NEGATIVE = 0.05
# reject a lead stuck at its min or max value for this many seconds
REJECT_SATURATION: valid.POSITIVE = 0.2
# reject when a lead's broadband power above BANDPASS[1] / in-band power > this
REJECT_NOISE: valid.POSITIVE = 0.5
# parallel processes (1 = run in this process)
WORKERS: valid.integer(1) = min(4, os.cpu_count() or 1)
# seeds the beat draw of BEATS=random:K (per record, independent of WORKERS)
SEED: valid.SEED = 0


def main():
    config = configure(globals())
    # imported once the options are checked: --help and a bad option answer before the
    # signal-processing libraries load
    from lvr.prepare.writer import prepare_cohort
    prepare_cohort(table_csv=config["TABLE"], ptbxl_dir=config["PTBXL_DIR"], task=config["TASK"],
                   name=config["NAME"], output_dir=config["OUTPUT_DIR"],
                   overwrite=config["OVERWRITE"], min_likelihood=config["MIN_LIKELIHOOD"],
                   ptbxl_device=config["PTBXL_DEVICE"], workers=config["WORKERS"],
                   record_options=record_options(config), recorded_options=config)


def record_options(config):
    """The per-record constants of `config` as lvr.prepare.record_beats.Options, unchecked."""
    # imported once the options are checked, like prepare_cohort in main
    from lvr.prepare.record_beats import Options
    return Options(fs=config["FS"], pre=config["PRE"], post=config["POST"], beats=config["BEATS"],
                   bandpass=config["BANDPASS"], bandpass_order=config["BANDPASS_ORDER"],
                   notch_hz=config["NOTCH_HZ"], detector=config["DETECTOR"],
                   detector_lead=config["DETECTOR_LEAD"], r_refine_s=config["R_REFINE_S"],
                   min_peak_ratio=config["MIN_PEAK_RATIO"],
                   heart_rate_bpm=config["HEART_RATE_BPM"],
                   reject_flat_mv=config["REJECT_FLAT_MV"],
                   reject_saturation=config["REJECT_SATURATION"],
                   reject_noise=config["REJECT_NOISE"], seed=config["SEED"], unit=config["UNIT"],
                   plausible_mv=config["PLAUSIBLE_MV"])


if __name__ == "__main__":
    run_script(main)
