"""Figures: each function draws one figure from plain arrays and writes one PNG; none computes a
statistic. Only numpy, matplotlib and the run-folder helpers are imported here, so the processes
that draw per-sample figures start fast. DejaVu Sans ships with matplotlib, so text renders the
same on every machine.
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lvr.run_folder import atomic_write  # noqa: E402

# Explanation figures: large bold type, legible when a panel is shrunk into a paper's column.
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 15,
    "axes.titlesize": 17,
    "axes.titleweight": "bold",
    "axes.labelsize": 15,
    "axes.labelweight": "bold",
    "xtick.labelsize": 13,
    "ytick.labelsize": 13,
    "legend.fontsize": 12,
}
WAVE_COLOURS = {"P": "#17becf", "PR": "#e377c2", "QRS": "#2ca02c", "ST": "#bcbd22", "T": "#ff7f0e"}


def save_figure(fig, path, dpi=200):
    """Write `fig` atomically (complete on disk or not there) and close it; returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with atomic_write(path) as temporary:
            fig.savefig(temporary, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
