"""What the benchmarks share: the repository root, the environment they run its scripts in, the
machine's description and the CPU time other processes used while a block ran.

Importing this module puts the repository root first on sys.path, so a benchmark run as a
script from anywhere (its own folder, bench/, is on sys.path already) imports lvr and model.
"""
import datetime
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def script_env(threads=None, code=ROOT):
    """The environment a benchmark runs a script of `code` in: that code first on the path, a
    fixed hash seed and, with `threads`, that many torch threads."""
    env = dict(os.environ, PYTHONPATH=str(code), PYTHONHASHSEED="0")
    if threads:
        env["OMP_NUM_THREADS"] = threads
    return env


def machine(**details):
    """The machine a benchmark ran on (CPU model, cores, Python, date), with `details` added."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"), **details}


def cpu_seconds():
    """(CPU seconds used by the whole machine, by this process and its finished children)."""
    try:
        with open("/proc/stat", encoding="utf-8") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        busy = float("nan")
    own = sum(getattr(resource.getrusage(who), field)
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for field in ("ru_utime", "ru_stime"))
    return busy, own


class OtherLoad:
    """Share of the machine's CPU capacity used by other processes while the block ran.

    Above ~0.1 the timings were disturbed: two torch threads on two busy cores stall in their
    barriers, and times can grow tenfold. Rerun when it is high.
    """

    def __enter__(self):
        self.start = (time.perf_counter(), *cpu_seconds())
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.start[0]
        busy, own = cpu_seconds()
        other = (busy - self.start[1]) - (own - self.start[2])
        self.fraction = max(0.0, other / (wall * (os.cpu_count() or 1))) if wall > 0 else 0.0
        return False
