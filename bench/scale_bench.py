"""Scale benchmark: peak private memory and time of training, SmoothGrad and data preparation on
demo cohorts of 10,000, 50,000 and 200,000 beats.

    python bench/scale_bench.py            # full sizes (30-60 min on 2 cores, ~7 GB of disk)
    python bench/scale_bench.py --quick    # tiny sizes, for tests/test_bench.py (about a minute)

Each step runs the real script (or, for SmoothGrad, the saliency script's own chunked code) as a
subprocess. Peak private memory is the high-water mark, sampled every SAMPLE_S, of the sum of
RssAnon (/proc/<pid>/status) over the subprocess and all its children: the memory a process
allocated itself. Pages of a memory-mapped beat file are page cache (RssFile), shared and given
back under pressure, so they do not count. Steps:
- train: train_MCL_ResNet_1D_class2.py --epochs=1 on the cohort (loading plus one epoch,
  validation and test); time per training beat is the epoch's logged seconds over its beats;
- smoothgrad: SmoothGrad maps of SMOOTHGRAD_BEATS test beats of that run, through
  lvr.explain.maps.explained_beats (maps written to disk chunk by chunk);
- prepare: prepare_data.py --task=binary:NORM,MI on a table that lists the shared PTB-XL
  records (PTBXL_DIR) as often as needed to reach each record count, as distinct record paths.
Writes scale_bench.json and scale_bench.md to --out (default bench_scale/, gitignored).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import ROOT, OtherLoad, machine, script_env  # puts ROOT on sys.path: before lvr

SIZES = (10_000, 50_000, 200_000)          # beats per demo cohort
QUICK_SIZES = (300, 600)
BEATS_PER_PATIENT = 4 * 4.5                # demo: 4 groups, 2-7 beats per patient (mean 4.5)
SMOOTHGRAD_BEATS = 1000
QUICK_SMOOTHGRAD_BEATS = 16
RECORDS = (1_000, 5_000)                   # records prepared by prepare_data.py
QUICK_RECORDS = (12,)
PTBXL_DIR = Path("/work/shared/datasets/ptbxl500")
SAMPLE_S = 0.05                            # memory sampling interval
# torch threads per step: with two threads on a 2-core machine that other processes also use,
# a training epoch ran 3x slower (63 vs ~20 s per 1,000 beats): threads stall in their barriers.
THREADS = "1"
MB = 1e6
TARGETS = {                                # the targets, checked on the full sizes
    "train_peak_growth_mb": ("<=", 300),   # largest minus smallest cohort's peak
    "train_peak_max_mb": ("<", 1500),
    "train_s_per_beat_spread": ("<=", 1.15),   # slowest / fastest time per training beat
}
QUICK_TRAIN = ["--bootstrap=20", "--batch_size=32"]


# ----------------------------------------------------------------------------- measuring

def rss_anon_kb(pid):
    """RssAnon of one process in kB (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def process_tree(pid):
    """pid and its descendants, from /proc/<pid>/task/<tid>/children."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children", encoding="ascii") as handle:
                    todo += [int(child) for child in handle.read().split()]
        except OSError:
            continue
    return found


def measured_run(command, cwd=ROOT, env=None, load=None):
    """Run `command`; returns (seconds, peak summed RssAnon of its process tree in MB, stdout).
    `load` (a list) gets the share of the machine's CPU that other processes used meanwhile,
    which slows the command down. A failed command raises RuntimeError with its output's end."""
    with OtherLoad() as others:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        peak = [0]

        def sample():
            while process.poll() is None:
                peak[0] = max(peak[0], sum(rss_anon_kb(p) for p in process_tree(process.pid)))
                time.sleep(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        output = process.stdout.read()
        process.wait()
        sampler.join()
        seconds = time.perf_counter() - start
    if load is not None:
        load.append(round(others.fraction, 3))
    if process.returncode:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({process.returncode}):\n"
                           f"{output[-3000:]}")
    return seconds, peak[0] * 1024 / MB, output


# ----------------------------------------------------------------------------- steps

def demo_patients(beats):
    """Patients per group that give about `beats` beats in the demo generator."""
    return max(3, round(beats / BEATS_PER_PATIENT))


def written_demo(folder, beats):
    """Write a demo cohort of about `beats` beats; returns (beats written, seconds)."""
    seconds, _, output = measured_run(
        [sys.executable, str(ROOT / "demo_cohort.py"), f"--n_patients={demo_patients(beats)}",
         f"--output_dir={folder}", "--overwrite=True"], env=script_env(THREADS))
    return int(re.search(r"Wrote (\d+) beats", output).group(1)), seconds


def training_step(data_dir, output_dir, quick):
    """One epoch of the 2-class script: seconds, peak MB, epoch seconds and training beats."""
    if output_dir.exists():
        shutil.rmtree(output_dir)
    load = []
    seconds, peak, output = measured_run(
        [sys.executable, str(ROOT / "train_MCL_ResNet_1D_class2.py"), f"--data_dir={data_dir}",
         f"--output_dir={output_dir}", "--epochs=1", "--device=cpu",
         *(QUICK_TRAIN if quick else [])], env=script_env(THREADS), load=load)
    epoch_s = float(re.search(r"epoch +1/1 .*\| ([\d.]+) s", output).group(1))
    train_beats = int(re.search(r"train +\d+ patients +(\d+) beats", output).group(1))
    return {"seconds": round(seconds, 2), "peak_private_mb": round(peak, 1),
            "epoch_s": epoch_s, "train_beats": train_beats,
            "epoch_s_per_1000_beats": round(1000 * epoch_s / train_beats, 3),
            "other_cpu_fraction": load[0]}


def smoothgrad_step(train_dir, data_dir, n_beats):
    """SmoothGrad of n_beats test beats in a subprocess: seconds per 1,000 beats, peak MB."""
    load = []
    seconds, peak, output = measured_run(
        [sys.executable, str(Path(__file__).resolve()),
         f"--smoothgrad_job={train_dir},{data_dir},{n_beats}"], env=script_env(THREADS), load=load)
    job = json.loads(output.strip().splitlines()[-1])
    return {"beats": job["beats"], "maps_s": job["maps_s"],
            "s_per_1000_beats": round(1000 * job["maps_s"] / job["beats"], 2),
            "process_s": round(seconds, 2), "peak_private_mb": round(peak, 1),
            "other_cpu_fraction": load[0]}


def smoothgrad_job(train_dir, data_dir, n_beats):
    """Inside the subprocess: the saliency script's map step on the run's first test beats."""
    import tempfile

    import torch   # lazy, like the lvr imports below: only this subprocess needs them

    import Saliency_ana2_sys as script
    from lvr.train.checkpoints import load_checkpoint
    from lvr.data.cohort import load_cohort
    from lvr.explain.analysis import test_set
    from lvr.explain.maps import MapSettings, explained_beats
    from lvr.train.finished_run import read_finished_run
    settings = MapSettings(method=script.METHOD, num_samples=script.NUM_SAMPLES,
                           noise_level=script.NOISE_LEVEL, ig_steps=script.IG_STEPS,
                           occlusion_window_ms=script.OCCLUSION_WINDOW_MS,
                           batch_size=script.BATCH_SIZE, seed=script.SEED)
    run = read_finished_run(train_dir)
    cohort = load_cohort(data_dir)
    index = test_set(cohort, run.split, data_dir, train_dir)[:n_beats]
    model, _ = load_checkpoint(run.checkpoint_path, map_location=torch.device("cpu"))
    timings = {}
    with tempfile.TemporaryDirectory(dir=train_dir) as work_dir:
        explained_beats(model, cohort, index, settings, torch.device("cpu"), work_dir,
                        timings=timings, log=lambda *_: None)
    print(json.dumps({"beats": int(len(index)), "maps_s": timings["maps"]}))


def ptbxl_copies_table(folder, n_records):
    """A table CSV listing n_records records: the NORM/MI records of PTBXL_DIR repeated, each
    copy under its own folder of links (its own record path) with its own patient IDs."""
    from lvr.prepare.record_tables import ptbxl_table   # lazy: loads pandas and the format readers
    base = ptbxl_table(str(PTBXL_DIR), "mi_norm")
    # both classes from the first rows on, so that even a few records make a cohort that trains
    base = base.assign(turn=base.groupby("group").cumcount()).sort_values(
        ["turn", "group"], kind="stable")
    rows, copy = [], 0
    while len(rows) < n_records:
        for record, patient, group in base[["record", "patient_id", "group"]].itertuples(
                index=False):
            if len(rows) == n_records:
                break
            target = folder / f"copy_{copy}" / record
            target.parent.mkdir(parents=True, exist_ok=True)
            for suffix in (".hea", ".dat"):
                link = target.with_name(target.name + suffix)
                if not link.exists():
                    link.symlink_to(PTBXL_DIR / f"{record}{suffix}")
            rows.append(f"copy_{copy}/{record},{int(patient) * 1000 + copy},{group}")
        copy += 1
    table = folder / f"records_{n_records}.csv"
    table.write_text("record,patient_id,group\n" + "\n".join(rows) + "\n")
    return table


def prepare_step(work, n_records):
    """prepare_data.py on n_records records: seconds per 1,000 records, peak MB (all workers)."""
    table = ptbxl_copies_table(work / "ptbxl_copies", n_records)
    output_dir = work / f"prepared_{n_records}"
    load = []
    seconds, peak, _ = measured_run(
        [sys.executable, str(ROOT / "prepare_data.py"), f"--table={table}",
         "--task=binary:NORM,MI", f"--output_dir={output_dir}", "--overwrite=True"],
        env=script_env(THREADS), load=load)
    summary = json.loads((output_dir / "prepare_summary.json").read_text())
    beats = sum(summary["beats_per_group"].values())
    shutil.rmtree(output_dir)
    return {"records": n_records, "records_kept": summary["records_kept"], "beats": beats,
            "seconds": round(seconds, 2),
            "s_per_1000_records": round(1000 * seconds / n_records, 1),
            "peak_private_mb": round(peak, 1),
            "workers": summary["options"]["WORKERS"], "other_cpu_fraction": load[0]}


# ----------------------------------------------------------------------------- report

def target_checks(sizes):
    """The issue's targets from the per-size training results."""
    peaks = [s["train"]["peak_private_mb"] for s in sizes]
    per_beat = [s["train"]["epoch_s_per_1000_beats"] for s in sizes]
    values = {"train_peak_growth_mb": round(peaks[-1] - peaks[0], 1),
              "train_peak_max_mb": max(peaks),
              "train_s_per_beat_spread": round(max(per_beat) / min(per_beat), 3)}
    return {key: {"value": value, "target": f"{TARGETS[key][0]} {TARGETS[key][1]}",
                  "met": bool(value <= TARGETS[key][1] if TARGETS[key][0] == "<="
                              else value < TARGETS[key][1])}
            for key, value in values.items()}


def markdown(result):
    lines = ["| beats | cohort files (GB) | train: peak private (MB) | train: load + 1 epoch (s) | "
             "epoch s / 1,000 train beats | SmoothGrad s / 1,000 beats | SmoothGrad peak (MB) | "
             "CPU used by others (train, SmoothGrad) |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for size in result["sizes"]:
        train, grad = size["train"], size["smoothgrad"]
        lines.append(f"| {size['beats']:,} | {size['file_gb']:.2f} | "
                     f"{train['peak_private_mb']:.0f} | {train['seconds']:.0f} | "
                     f"{train['epoch_s_per_1000_beats']:.2f} | "
                     f"{grad['s_per_1000_beats']:.1f} | {grad['peak_private_mb']:.0f} | "
                     f"{train['other_cpu_fraction']:.0%}, {grad['other_cpu_fraction']:.0%} |")
    lines += ["", "| records | kept | beats | s / 1,000 records | peak private, all workers (MB) | "
                  "workers | CPU used by others |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for step in result["prepare"]:
        lines.append(f"| {step['records']:,} | {step['records_kept']:,} | {step['beats']:,} | "
                     f"{step['s_per_1000_records']:.0f} | {step['peak_private_mb']:.0f} | "
                     f"{step['workers']} | {step['other_cpu_fraction']:.0%} |")
    lines += ["", "| target | value | bound | met |", "|---|---:|---|---|"]
    for key, check in result["targets"].items():
        lines.append(f"| {key} | {check['value']} | {check['target']} | "
                     f"{'yes' if check['met'] else 'NO'} |")
    machine = result["machine"]
    note = " (quick: tiny sizes, targets not meaningful)" if result["quick"] else ""
    lines += ["", f"{machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
                  f"{result['torch_threads']} torch thread(s), {machine['date']}{note}"]
    return "\n".join(lines) + "\n"


def flushed_print(*args):
    print(*args, flush=True)


def run_scale_bench(out, quick=False, keep=False, log=flushed_print):
    """Every step at every size; writes scale_bench.json and scale_bench.md in `out`."""
    out = Path(out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    sizes = []
    for target in (QUICK_SIZES if quick else SIZES):
        cohort = work / f"cohort_{target}"
        beats, gen_s = written_demo(cohort, target)
        file_gb = sum(p.stat().st_size for p in cohort.glob("cut_*.npy")) / 1e9
        log(f"{beats} beats ({file_gb:.2f} GB) written in {gen_s:.0f} s; training one epoch")
        train = training_step(cohort, work / f"train_{target}", quick)
        log(f"  train: {train}")
        grad = smoothgrad_step(work / f"train_{target}", cohort,
                               QUICK_SMOOTHGRAD_BEATS if quick else SMOOTHGRAD_BEATS)
        log(f"  smoothgrad: {grad}")
        sizes.append({"target_beats": target, "beats": beats, "patients_per_group":
                      demo_patients(target), "file_gb": round(file_gb, 3),
                      "generate_s": round(gen_s, 1), "train": train, "smoothgrad": grad})
        if not keep:
            shutil.rmtree(cohort)
            shutil.rmtree(work / f"train_{target}")
    prepare = []
    for n_records in (QUICK_RECORDS if quick else RECORDS):
        prepare.append(prepare_step(work, n_records))
        log(f"  prepare: {prepare[-1]}")
    result = {"quick": quick, "machine": machine(), "sizes": sizes, "prepare": prepare,
              "targets": target_checks(sizes), "sample_s": SAMPLE_S, "torch_threads": THREADS}
    if not keep:
        shutil.rmtree(work)
    (out / "scale_bench.json").write_text(json.dumps(result, indent=1))
    (out / "scale_bench.md").write_text(markdown(result))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds), for tests")
    parser.add_argument("--out", default=str(ROOT / "bench_scale"), help="output folder")
    parser.add_argument("--keep", action="store_true", help="keep the cohorts and runs")
    parser.add_argument("--smoothgrad_job", help=argparse.SUPPRESS)   # internal: one subprocess
    args = parser.parse_args()
    if args.smoothgrad_job:
        train_dir, data_dir, n_beats = args.smoothgrad_job.split(",")
        smoothgrad_job(train_dir, data_dir, int(n_beats))
        return
    result = run_scale_bench(args.out, args.quick, args.keep)
    print(markdown(result))


if __name__ == "__main__":
    main()
