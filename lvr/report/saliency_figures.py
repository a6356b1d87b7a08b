"""Saliency figures: the per-sample three-row figure and the two subgroup figures.

A per-sample figure is drawn from a job dict of plain arrays, so worker processes can draw them.
"""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import matplotlib.pyplot as plt
import numpy as np

from lvr.measure.delineation import r_peak_index
from lvr.report.figures import STYLE, WAVE_COLOURS, save_figure

TOP_K = 6
HEATMAP_COLOURS = ("YlOrRd", "YlGn", "PuBu", "OrRd")   # one colour map per subgroup panel, in turn
CLIP_PERCENTILE = 99   # the map's colour scale ends here: a few spikes would darken the rest


def draw_sample_figure(job):
    """The original's three-row figure for one beat; `job` is a dict of plain arrays/values.

    Rows, on one time axis in ms: the most important leads' waveforms, the lead x time saliency
    map, and the best lead's saliency over its waveform with the R peak marked. A narrow
    column on the right holds the map's colour bar, so every row is as wide as the others.
    """
    beat, sal, fs = job["beat"], job["saliency"], job["fs"]
    importance = sal.mean(axis=1)
    top = np.argsort(importance)[::-1][:min(TOP_K, beat.shape[0])]
    t_ms = np.arange(beat.shape[1]) / fs * 1000.0
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(13, 16))
        grid = fig.add_gridspec(3, 2, width_ratios=(1, 0.025), wspace=0.03, hspace=0.42)
        first = fig.add_subplot(grid[0, 0])
        axes = [first] + [fig.add_subplot(grid[row, 0], sharex=first) for row in (1, 2)]
        draw_top_leads(axes[0], job, t_ms, top, importance / max(importance.sum(), 1e-12))
        draw_saliency_map(fig, axes[1], fig.add_subplot(grid[1, 1]), job, t_ms)
        draw_best_lead(axes[2], job, t_ms, int(top[0]))
        axes[0].set_xlim(0, t_ms[-1])
        return save_figure(fig, job["path"], job.get("dpi", 150))


def draw_top_leads(ax, job, t_ms, top, share):
    """The top leads' standardised waveforms, stacked, each with its share of importance."""
    beat, leads = job["beat"], job["lead_names"]
    for row, lead in enumerate(top[::-1]):
        signal = beat[lead]
        normed = (signal - signal.mean()) / (signal.std() + 1e-6)
        ax.plot(t_ms, normed + 4 * row, lw=1.4,
                label=f"{leads[lead]}: {100 * share[lead]:.1f}% of importance")
    ax.set_yticks([4 * r for r in range(len(top))], [leads[i] for i in top[::-1]])
    ax.set_ylabel("Lead")
    ax.set_xlabel("Time (ms)")
    ax.set_title(f"Top-{len(top)} leads  |  {job['subtype']} sample {job['index']}  |  "
                 f"true: {job['true_name']}, predicted: {job['pred_name']} "
                 f"(p={job['prob']:.2f})", fontsize=15)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.01, 1.0),
              frameon=False)
    ax.grid(alpha=0.3)


def draw_saliency_map(fig, ax, colour_axis, job, t_ms):
    """Saliency per lead and time, coloured up to the map's CLIP_PERCENTILE (the colour bar in
    `colour_axis` says so), with the delineated waves on a top axis when known."""
    sal, fs, n_leads = job["saliency"], job["fs"], job["saliency"].shape[0]
    half = 500.0 / fs   # half a sample in ms: each column is centred on its sample's time
    top = float(np.percentile(sal, CLIP_PERCENTILE))
    image = ax.imshow(sal, aspect="auto", cmap="viridis", interpolation="nearest",
                      extent=[t_ms[0] - half, t_ms[-1] + half, n_leads - 0.5, -0.5], vmin=0.0,
                      vmax=top if top > 0 else None)
    segments = job.get("segments") or {}
    if segments:
        waves = ax.secondary_xaxis("top")
        waves.set_xticks([(s + e) / 2 / fs * 1000 for s, e in segments.values()],
                         list(segments))
        waves.tick_params(length=0, labelsize=12)
        for label, wave in zip(waves.get_xticklabels(), segments, strict=True):
            label.set_color(WAVE_COLOURS.get(wave, "black"))
            label.set_fontweight("bold")
        for start, end in segments.values():
            for edge in (start, end):
                ax.axvline(edge / fs * 1000, color="white", lw=0.8, ls="--", alpha=0.7)
    ax.set_yticks(range(n_leads), job["lead_names"])
    ax.set_xlabel("Time (ms)")
    ax.set_ylabel("Lead")
    ax.set_title("Saliency per lead and time" + (" (waves from neurokit2 delineation)"
                                                 if segments else ""), pad=24 if segments else 6)
    bar = fig.colorbar(image, cax=colour_axis, extend="max")
    bar.set_label(f"{job.get('map_name', 'Saliency')}, colour clipped at\nthe map's "
                  f"{CLIP_PERCENTILE}th percentile", fontsize=12)


def draw_best_lead(ax, job, t_ms, best):
    """The most important lead's min-max saliency over its waveform, R peak marked."""
    beat, leads = job["beat"], job["lead_names"]
    sal_best = job["saliency"][best]
    sal_norm = (sal_best - sal_best.min()) / (np.ptp(sal_best) + 1e-12)
    ax.plot(t_ms, sal_norm, color="#2ca02c", lw=1.6, label="Saliency (min-max)")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("Saliency")
    ax.set_xlabel("Time (ms)")
    twin = ax.twinx()
    twin.plot(t_ms, beat[best] / (beat[best].std() + 1e-6), color="#1f77b4", lw=1.4, alpha=0.85,
              label=f"Lead {leads[best]} (standardised)")
    twin.set_yticks([])
    r_idx = r_peak_index(beat, job["fs"], job.get("r_peak_sample"))
    ax.axvline(t_ms[r_idx], color="black", ls="--", lw=1.2)
    ax.text(t_ms[r_idx] + 8, 1.0, "R peak", va="top", fontsize=13)
    ax.set_title(f"Most important lead {leads[best]}: saliency over the beat")
    lines = ax.get_legend_handles_labels()
    lines_twin = twin.get_legend_handles_labels()
    ax.legend(lines[0] + lines_twin[0], lines[1] + lines_twin[1], loc="upper right")
    ax.grid(alpha=0.3)


def draw_sample_figures(jobs, workers, progress=None):
    """Draw every job's figure, in `workers` processes (1: in this process, in order)."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield draw_sample_figure(job)
            if progress:
                progress.update()
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        chunk = max(1, len(jobs) // (4 * workers))
        for path in pool.map(draw_sample_figure, jobs, chunksize=chunk):
            if progress:
                progress.update()
            yield path


def plot_lead_importance_comparison(path, subgroups, lead_names, dpi=200):
    """Mean +/- sd normalised importance per lead, one panel per subgroup, top 3 in red."""
    names = list(subgroups)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, max(1, len(names)), figsize=(7.5 * max(1, len(names)), 5.5),
                                 squeeze=False)
        for ax, name in zip(axes[0], names, strict=False):
            values = subgroups[name]
            if len(values) == 0:
                ax.text(0.5, 0.5, f"{name}: no samples", ha="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            mean, sd = values.mean(0), values.std(0)
            top3 = np.argsort(mean)[::-1][:3]
            colours = ["#d62728" if i in top3 else "#4c72b0" for i in range(len(mean))]
            ax.bar(range(len(mean)), mean, yerr=sd, capsize=4, color=colours, edgecolor="black",
                   alpha=0.85)
            ax.set_xticks(range(len(lead_names)), lead_names)
            ax.set_ylabel("Normalised importance")
            ax.set_title(f"{name} (n={len(values)}), top 3 in red")
            ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        save_figure(fig, path, dpi)


def plot_lead_importance_heatmap(path, subgroups, lead_names, dpi=200):
    """Samples x leads normalised importance, one panel per subgroup."""
    names = list(subgroups)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, max(1, len(names)), figsize=(7.5 * max(1, len(names)), 7),
                                 squeeze=False)
        for i, (ax, name) in enumerate(zip(axes[0], names, strict=False)):
            values, cmap = subgroups[name], HEATMAP_COLOURS[i % len(HEATMAP_COLOURS)]
            if len(values) == 0:
                ax.set_axis_off()
                continue
            image = ax.imshow(values, aspect="auto", cmap=cmap, interpolation="nearest")
            ax.set_xticks(range(len(lead_names)), lead_names)
            ax.set_xlabel("Lead")
            ax.set_ylabel("Sample")
            ax.set_title(f"{name} (n={len(values)})")
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03).set_label("Normalised importance")
        fig.tight_layout()
        save_figure(fig, path, dpi)
