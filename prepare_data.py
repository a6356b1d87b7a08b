"""Cut raw 12-lead ECG recordings into R-peak-aligned beats: a cohort folder for the scripts.

Input: a CSV table (columns record, patient_id, group; no group needed for --task=unlabelled;
record = path relative to the CSV's folder: a WFDB record without extension, or an EDF, DICOM,
Philips XML or GE MUSE XML file by its name), or PTB-XL itself (--ptbxl_dir=DIR builds the
table from ptbxl_database.csv and scp_statements.csv). lvr/prepare/record_tables.py describes the
tables, lvr/prepare/record_beats.py each step of a record, lvr/prepare/writer.py the output, lvr/prepare/formats.py
the formats.

    python prepare_data.py --ptbxl_dir=DIR --task=mi_norm --output_dir=OUT
    python prepare_data.py --table=records.csv --task=binary:CONTROL,LVR --output_dir=OUT
    python prepare_data.py --table=ecgs.csv --task=unlabelled --output_dir=OUT   # pretrain.py

Every constant below can be overridden as --lower_case_name=value; --help lists them.
"""
import os

from lvr.config import configure, run_script

TABLE = ""  # CSV with columns record, patient_id, group ("" when --ptbxl_dir is given)
PTBXL_DIR = ""  # PTB-XL folder (ptbxl_database.csv, scp_statements.csv, records500/)
TASK = "mi_norm"  # mi_norm | lvh_norm | superclass4 | unlabelled | binary:NEG,POS | multiclass:A,B
NAME = ""  # cohort name in cohort.json; "" = ptbxl_<task> or <table file stem>
OUTPUT_DIR = ""  # cohort folder to write; "" = data/<cohort name>
OVERWRITE = False  # replace this script's files in a non-empty OUTPUT_DIR
MIN_LIKELIHOOD = 0.0  # PTB-XL: a scp_code counts if its likelihood >= this (0: all, as benchmark)
PTBXL_DEVICE = ""  # PTB-XL: keep records whose device starts with this (e.g. AT-6, CS-12; "" = all)
UNIT = ""  # "" = each file's stated amplitude unit; uV | mV | V = read every record's values in it
PLAUSIBLE_MV = (0.1, 20.0)  # median lead peak-to-peak (mV) outside it: unit error (PTB-XL 0.43-3.7)
FS = 500  # Hz; every record is resampled to this rate
PRE = 0.3  # seconds kept before the R peak (the R peak sits at sample round(PRE * FS))
POST = 0.7  # seconds kept from the R peak on
BEATS = "all"  # all | first:K | random:K (K beats drawn with SEED) | median (one median beat)
BANDPASS = (0.5, 40.0)  # Hz, zero-phase Butterworth band-pass (scipy sosfiltfilt)
BANDPASS_ORDER = 2  # Butterworth order of each pass; sosfiltfilt doubles the effective order
NOTCH_HZ = (50.0, 60.0)  # mains hum removed by zero-phase notches (Q 30) before the band-pass
DETECTOR = "neurokit"  # neurokit2 ecg_findpeaks method (best agreement with wfdb XQRS on PTB-XL)
DETECTOR_LEAD = "II"  # lead the R peaks are detected on
R_REFINE_S = 0.08  # seconds: detections snap to the dominant QRS deflection within +- this
MIN_PEAK_RATIO = 0.35  # drop detections below this x the record's 75th-percentile R amplitude
HEART_RATE_BPM = (30.0, 220.0)  # plausible median heart rate; outside it the record is rejected
REJECT_FLAT_MV = 0.05  # reject a record with a lead whose filtered peak-to-peak is below this (mV)
REJECT_SATURATION = 0.2  # reject a lead stuck at its min or max value for this many seconds
REJECT_NOISE = 0.5  # reject when a lead's broadband power above BANDPASS[1] / in-band power > this
WORKERS = min(4, os.cpu_count() or 1)  # parallel processes (1 = run in this process)
SEED = 0  # seeds the beat draw of BEATS=random:K (per record, independent of WORKERS)


def main():
    config = configure(globals())
    # imported once the options are checked: --help and a bad option answer before the
    # signal-processing libraries load
    from lvr.prepare.writer import prepare_cohort
    prepare_cohort(config)


if __name__ == "__main__":
    run_script(main)
