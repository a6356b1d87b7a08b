"""Figures of the explanation checks (lvr/explain/checks.py): wave-importance heatmap,
randomisation sanity check and lead-deletion curves, in the style of the saliency figures.
"""
import matplotlib.pyplot as plt
import numpy as np

from lvr.report.figures import STYLE, save_figure
from lvr.leads import WAVES


def lead_wave_axes(ax, lead_names, true_leads=(), true_wave=None):
    """Waves along x, leads along y, the known ground truth in bold."""
    ax.set_xticks(range(len(WAVES)), WAVES)
    ax.set_yticks(range(len(lead_names)), lead_names)
    for label in ax.get_xticklabels():
        label.set_fontweight("bold" if label.get_text() == true_wave else "normal")
    for label in ax.get_yticklabels():
        label.set_fontweight("bold" if label.get_text() in true_leads else "normal")
    ax.set_xlabel("Wave")
    ax.set_ylabel("Lead")


def plot_wave_importance_heatmap(path, subgroups, lead_names, true_leads=(), true_wave=None,
                                 dpi=200):
    """Lead x wave mean share of saliency (%), annotated, one panel per subgroup.

    subgroups: {name: shares (N, C, 5)} from explanation_checks.wave_importance_shares. Each
    lead's top wave is boxed; `true_leads` / `true_wave` (a known ground truth) are marked in
    bold on the axes.
    """
    names = list(subgroups)
    means = {name: np.asarray(subgroups[name], dtype=float).mean(axis=0) * 100
             if len(subgroups[name]) else None for name in names}
    finite = [m for m in means.values() if m is not None]
    vmax = max((float(m.max()) for m in finite), default=1.0)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, max(1, len(names)), figsize=(6.2 * max(1, len(names)) + 1.2,
                                                                0.62 * len(lead_names) + 2.6),
                                 squeeze=False, layout="constrained")
        image = None
        for ax, name in zip(axes[0], names, strict=False):
            mean = means[name]
            if mean is None:
                ax.text(0.5, 0.5, f"{name}: no samples", ha="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            image = ax.imshow(mean, aspect="auto", cmap="YlOrRd", vmin=0, vmax=vmax,
                              interpolation="nearest")
            top = mean.argmax(axis=1)
            for c in range(mean.shape[0]):
                for w in range(mean.shape[1]):
                    dark = mean[c, w] > 0.6 * vmax
                    ax.text(w, c, f"{mean[c, w]:.0f}", ha="center", va="center", fontsize=11,
                            color="white" if dark else "black",
                            fontweight="bold" if w == top[c] else "normal")
                ax.add_patch(plt.Rectangle((top[c] - 0.5, c - 0.5), 1, 1, fill=False,
                                           edgecolor="black", lw=2.4))
            lead_wave_axes(ax, lead_names, true_leads, true_wave)
            ax.set_title(f"{name} (n={len(subgroups[name])})")
        if image is not None:
            bar = fig.colorbar(image, ax=list(axes[0]), fraction=0.035, pad=0.03)
            bar.set_label("Mean share of the lead's saliency (%)")
        note = "Box: each lead's top wave"
        if true_leads or true_wave:
            note += f"; bold: ground truth ({', '.join(true_leads)}{', ' if true_leads else ''}"
            note += f"{true_wave or ''})"
        fig.suptitle(f"Saliency share per wave. {note}", fontsize=14)
        return save_figure(fig, path, dpi)


def plot_sanity_check(path, result, dpi=200):
    """Spearman (trained vs randomised map) per cascading stage and for full randomisation.

    result: the dict of explanation_checks.sanity_check. Stage i randomises everything from the
    head down to its block; the dashed line is the flag threshold.
    """
    stages = result.get("sanity_cascading") or []
    labels = [f"+ {s['layers_randomised']}" for s in stages] + ["all (full)"]
    values = [s["spearman"] for s in stages] + [result["sanity_spearman"]]
    threshold = result.get("sanity_threshold", 0.5)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(7.0, 0.85 * len(labels) + 3), 5.8),
                               layout="constrained")
        positions = np.arange(len(labels))
        colours = ["#4c72b0"] * len(stages) + ["#d62728" if result.get("sanity_flag")
                                                 else "#2ca02c"]
        ax.bar(positions, np.nan_to_num(values), color=colours, edgecolor="black", alpha=0.9)
        if stages:
            ax.plot(positions[:-1], [s["spearman"] for s in stages], color="#1f3b73", lw=1.5,
                    marker="o")
        for p, v in zip(positions, values, strict=True):
            v = float("nan") if v is None else float(v)
            below = np.isfinite(v) and v < 0
            ax.text(p, np.nan_to_num(v) + (-0.03 if below else 0.03),
                    f"{v:.2f}" if np.isfinite(v) else "n/a", ha="center",
                    va="top" if below else "bottom", fontsize=11)
        ax.axhline(threshold, color="black", ls="--", lw=1.3,
                   label=f"flag threshold {threshold:g}: map barely changes")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(positions, labels, rotation=40, ha="right")
        lowest = np.nanmin(np.array([np.nan if v is None else v for v in values] + [0.0], float))
        ax.set_ylim(min(-0.2, lowest - 0.12), 1.12)
        ax.set_ylabel("Spearman rank correlation")
        ax.set_xlabel("Parameters randomised (cascading from the head)")
        count = result.get("sanity_sample_count", result.get("sample_count", "?"))
        ax.set_title(f"Randomisation sanity check (n={count})")
        ax.legend(loc="upper right", frameon=False)
        ax.grid(alpha=0.3, axis="y")
        return save_figure(fig, path, dpi)


def plot_deletion_curves(path, results, dpi=200):
    """True-class probability vs leads removed: saliency order vs random order, mean +/- sd.

    results: {name: dict of explanation_checks.deletion_test}, one panel each (or one dict).
    """
    if "deletion_curve" in results:
        results = {"": results}
    names = list(results)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(names), figsize=(6.8 * len(names), 6.0), squeeze=False,
                                 sharey=True, layout="constrained")
        for ax, name in zip(axes[0], names, strict=False):
            result = results[name]
            curve = result["deletion_curve"]
            k = np.asarray(curve["k"])
            for key, colour, label in (("top", "#d62728", "most important leads first"),
                                       ("random", "#4c72b0", "random leads")):
                mean = np.asarray(curve[f"{key}_mean"])
                sd = np.asarray(curve[f"{key}_sd"])
                ax.plot(k, mean, color=colour, lw=2.2, marker="o", label=label)
                ax.fill_between(k, np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1),
                                color=colour, alpha=0.15)
            ax.set_xticks(k)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("Leads removed (k)")
            count = result.get("deletion_count", result.get("sample_count"))
            ax.set_title(f"{name + ': ' if name else ''}win rate "
                         f"{result['deletion_win_rate']:.2f} (n={count})")
            ax.text(0.03, 0.04, f"area: top {result['deletion_auc_top']:.2f}, random "
                    f"{result['deletion_auc_random']:.2f}", transform=ax.transAxes, fontsize=12)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("P(true class)")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
        fig.suptitle("Lead deletion test (mean +/- sd over beats)", fontsize=16)
        return save_figure(fig, path, dpi)


def plot_wave_effects_heatmap(path, tables, lead_names, true_leads=(), true_wave=None,
                              map_name="SmoothGrad", dpi=200):
    """Counterfactual lead x wave effects beside the map's wave shares, one row per subgroup.

    tables: {subgroup: {"effect": (C, 5) mean drop in P(true class), "share": (C, 5) mean share
    of the map or None, "patients": int}}. The three largest effects are boxed; the ground truth,
    when known, is bold on the axes.
    """
    names = list(tables) or ["(none)"]
    vmax = max((float(np.abs(t["effect"]).max()) for t in tables.values()), default=1.0) or 1.0
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(names), 2, figsize=(13.5, (0.55 * len(lead_names) + 1.8)
                                                          * len(names) + 0.8),
                                 squeeze=False, layout="constrained")
        for row, name in zip(axes, names, strict=False):
            table = tables.get(name)
            if table is None:
                for ax in row:
                    ax.set_axis_off()
                continue
            effect = 100 * np.asarray(table["effect"], dtype=float)
            image = row[0].imshow(effect, aspect="auto", cmap="RdBu_r", vmin=-100 * vmax,
                                  vmax=100 * vmax, interpolation="nearest")
            top = np.argsort(-effect.ravel(), kind="stable")[:3]
            for c in range(effect.shape[0]):
                for w in range(effect.shape[1]):
                    strong = abs(effect[c, w]) > 0.6 * 100 * vmax
                    row[0].text(w, c, f"{effect[c, w]:.1f}", ha="center", va="center",
                                fontsize=10, color="white" if strong else "black")
            for cell in top:
                c, w = divmod(int(cell), effect.shape[1])
                row[0].add_patch(plt.Rectangle((w - 0.5, c - 0.5), 1, 1, fill=False,
                                               edgecolor="black", lw=2.4))
            fig.colorbar(image, ax=row[0], fraction=0.05, pad=0.02).set_label(
                "Drop in P(true class) (points)")
            row[0].set_title(f"{name}: segment swap effect (n={table['patients']} patients)")
            share = table.get("share")
            if share is None:
                row[1].text(0.5, 0.5, "no wave shares", ha="center", transform=row[1].transAxes)
                row[1].set_axis_off()
            else:
                share = 100 * np.asarray(share, dtype=float)
                image = row[1].imshow(share, aspect="auto", cmap="YlOrRd", vmin=0,
                                      vmax=max(float(share.max()), 1e-9), interpolation="nearest")
                for c in range(share.shape[0]):
                    for w in range(share.shape[1]):
                        row[1].text(w, c, f"{share[c, w]:.0f}", ha="center", va="center",
                                    fontsize=10,
                                    color="white" if share[c, w] > 0.6 * share.max() else "black")
                fig.colorbar(image, ax=row[1], fraction=0.05, pad=0.02).set_label(
                    "Share of the lead's map (%)")
                row[1].set_title(f"{map_name} share per wave")
            for ax in row:
                if not ax.axison:
                    continue
                lead_wave_axes(ax, lead_names, true_leads, true_wave)
        note = "Box: the three largest effects"
        if true_leads or true_wave:
            note += f"; bold: ground truth ({', '.join(true_leads)} {true_wave or ''})"
        fig.suptitle(f"Which lead and wave hold the evidence. {note}", fontsize=14)
        return save_figure(fig, path, dpi)
