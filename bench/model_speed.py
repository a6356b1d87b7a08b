"""CPU speed of each model variant and reference network: forward + backward of one batch.

Prints a markdown table (variant, parameters, median ms per batch) for a batch of BATCH beats
of LEADS x LENGTH samples, timed over REPS repetitions after WARMUP untimed ones, in train mode
with a cross-entropy loss, at torch's default thread count.

    python bench/model_speed.py [--json results.json]
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import common  # noqa: F401  puts the repository root on sys.path: before model
from model import EXPERIMENT_NAMES, build_model, parameter_count

BATCH = 32        # beats per training batch
LEADS = 12        # input leads
LENGTH = 500      # samples per beat (1 s at 500 Hz)
NUM_CLASSES = 2   # classifier outputs
WARMUP = 3        # untimed repetitions first
REPS = 15         # timed repetitions; the median is reported


def batch_milliseconds(model, batch, labels, warmup=WARMUP, reps=REPS):
    """Median wall-clock ms of forward + backward (parameter gradients) on one batch."""
    model.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for i in range(warmup + reps):
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        loss_fn(model(batch), labels).backward()
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def speed_table(experiments=EXPERIMENT_NAMES):
    """One row per experiment: name, parameter count, median ms per batch."""
    torch.manual_seed(0)
    batch = torch.randn(BATCH, LEADS, LENGTH)
    labels = torch.randint(0, NUM_CLASSES, (BATCH,))
    rows = []
    for name in experiments:
        model = build_model(NUM_CLASSES, experiment=name, in_channels=LEADS)
        rows.append({"variant": name, "parameters": parameter_count(model),
                     "ms_per_batch": round(batch_milliseconds(model, batch, labels), 1)})
    return rows


def markdown(rows):
    lines = [f"| variant | parameters | ms / batch ({BATCH} x {LEADS} x {LENGTH}, fwd+bwd) |",
             "|---|---:|---:|"]
    lines += [f"| {r['variant']} | {r['parameters']:,} | {r['ms_per_batch']:.1f} |" for r in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args()
    rows = speed_table()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"torch": torch.__version__,
                                               "threads": torch.get_num_threads(),
                                               "batch": [BATCH, LEADS, LENGTH],
                                               "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
