"""Figures of a training run: accuracy/loss curves (and a pretraining run's), ROC curves, the
confusion matrix, the reliability diagram and the decision curve.

The ROC, confusion and reliability figures given a test report's patient level draw it in a
panel of its own, left of the beats': the page's headline numbers are the patients', and each
panel's title names its level.

The metrics they show come from lvr/stats/metrics.py, lvr/stats/calibration.py and
lvr/stats/decision_curve.py.
"""
import os

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from lvr.report.figures import save_figure

TRAINING_STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 12,
    "axes.titlesize": 13,
    "axes.titleweight": "bold",
    "axes.labelsize": 12,
    "legend.fontsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
PATIENT_PANEL = "Patients (mean of their beats)"
BEAT_PANEL = "Beats"


def integer_epochs(ax, n_epochs):
    """Whole-epoch ticks on the x axis (a 2-epoch run has no epoch 1.5)."""
    ax.set_xlim(0.5, max(n_epochs, 1) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def level_axes(patients, width, height):
    """(figure, [(axes, level title), ...]): a patients' panel left of the beats' when the
    patient level is given, else the beats' alone."""
    panels = [PATIENT_PANEL, BEAT_PANEL] if patients is not None else [BEAT_PANEL]
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), height),
                             squeeze=False)
    return fig, list(zip(axes[0], panels, strict=True))


def plot_training_curves(output_dir, train_acc_list, train_loss_list, val_acc_list, val_loss_list,
                         best_epoch=None, filename="ACC_Loss_Curve.png"):
    """Accuracy curves (left) and loss curves (right) per epoch, as the original drew them."""
    epochs = np.arange(1, len(train_acc_list) + 1)
    with plt.rc_context(TRAINING_STYLE):
        fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
        ax_acc.plot(epochs, train_acc_list, "o-", color="#2ca02c", ms=3, lw=1.5, label="Training")
        ax_acc.plot(epochs, val_acc_list, "^--", color="#1f77b4", ms=4, lw=1.5, label="Validation")
        ax_loss.plot(epochs, train_loss_list, "o-", color="#d62728", ms=3, lw=1.5, label="Training")
        ax_loss.plot(epochs, val_loss_list, "^--", color="#9467bd", ms=4, lw=1.5,
                     label="Validation")
        for ax, title, ylabel in ((ax_acc, "Accuracy", "Accuracy"), (ax_loss, "Loss", "Loss")):
            if best_epoch:
                ax.axvline(best_epoch, color="grey", ls=":", lw=1.2,
                           label=f"Best checkpoint (epoch {best_epoch})")
            ax.set_title(f"Training & validation {title.lower()}")
            ax.set_xlabel("Epoch")
            ax.set_ylabel(ylabel)
            integer_epochs(ax, len(epochs))
            ax.grid(alpha=0.3)
        ax_acc.legend(loc="lower right")
        ax_loss.legend(loc="upper right")
        fig.tight_layout()
        save_figure(fig, os.path.join(output_dir, filename))


def plot_pretraining_curves(path, history, chance):
    """A pretraining run's contrastive loss (left) and the share of views that pick their
    patient's other view (right), per epoch, against the chance share 1 / batch."""
    epochs = np.arange(1, len(history["loss"]) + 1)
    with plt.rc_context(TRAINING_STYLE):
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        left.plot(epochs, history["loss"], "o-", color="#d62728", ms=3, lw=1.5)
        left.set(title="Contrastive loss (InfoNCE)", xlabel="Epoch", ylabel="Loss")
        right.plot(epochs, history["pair_accuracy"], "o-", color="#1f77b4", ms=3, lw=1.5,
                   label="Pretraining batches")
        right.axhline(chance, color="grey", ls="--", lw=1.2, label=f"Chance ({chance:.3f})")
        right.set(title="Views that find their patient's other view", xlabel="Epoch",
                  ylabel="Share of views", ylim=(0, 1.02))
        right.legend(loc="lower right")
        for ax in (left, right):
            integer_epochs(ax, len(epochs))
            ax.grid(alpha=0.3)
        fig.tight_layout()
        save_figure(fig, path)


def roc_panel(ax, fpr, tpr, auc, class_names, heading):
    """One level's ROC curve(s) in `ax`: flat `fpr`/`tpr` (binary) or one list per class."""
    binary = not fpr or not isinstance(fpr[0], (list, tuple, np.ndarray))
    if binary and auc is not None:
        ax.plot(fpr, tpr, lw=2, color="#1f77b4", label=f"{class_names[-1]} (AUC = {auc:.3f})")
    elif binary:
        ax.plot([], [], " ", label="AUC undefined: one class only")
    else:
        for k, name in enumerate(class_names):
            value = auc.get(f"class_{k}")
            ax.plot(fpr[k], tpr[k], lw=2, label=f"{name} (AUC = "
                    + ("undefined" if value is None else f"{value:.3f}") + ")")
        macro = auc.get("macro")
        ax.plot([], [], " ", label="Macro AUC = " + ("undefined" if macro is None
                                                      else f"{macro:.3f}"))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="Chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title(heading)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")


def plot_roc_curve(path, fpr, tpr, auc, class_names, title="ROC curve (test set)",
                   patients=None):
    """ROC curve(s) of the beats: `fpr`/`tpr` are flat lists (binary) or one list per class
    (one-vs-rest); with `patients` (a test report's patient_level: fpr, tpr, roc_auc) the
    patients' curves in a panel left of them."""
    with plt.rc_context(TRAINING_STYLE):
        fig, panels = level_axes(patients, 6.2, 6)
        for ax, heading in panels:
            level = patients if heading == PATIENT_PANEL else \
                {"fpr": fpr, "tpr": tpr, "roc_auc": auc}
            roc_panel(ax, level["fpr"], level["tpr"], level["roc_auc"], class_names, heading)
        fig.suptitle(title, fontweight="bold", fontsize=TRAINING_STYLE["axes.titlesize"] + 1)
        fig.tight_layout()
        save_figure(fig, path)


def confusion_panel(fig, ax, matrix, class_names, heading):
    """Counts with row percentages (share of each true class) in `ax`."""
    matrix = np.asarray(matrix)
    row_share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(row_share, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, f"{matrix[i, j]}\n{100 * row_share[i, j]:.1f}%", ha="center",
                    va="center", fontsize=11,
                    color="white" if row_share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=20, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(heading)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.set_label("Share of true class")


def plot_confusion_matrix(path, matrix, class_names, title="Confusion matrix (test set)",
                          patients=None):
    """Counts with row percentages (share of each true class); with `patients` (the patients'
    matrix) in a panel left of `matrix`'s, whose level the title then names as beats."""
    size = 2.2 + 1.3 * len(class_names)
    with plt.rc_context(TRAINING_STYLE):
        fig, panels = level_axes(patients, size + 1.2, size)
        for ax, heading in panels:
            if patients is None:
                confusion_panel(fig, ax, matrix, class_names, title)
            else:
                confusion_panel(fig, ax, patients if heading == PATIENT_PANEL else matrix,
                                class_names, heading)
        if patients is not None:
            fig.suptitle(title, fontweight="bold",
                         fontsize=TRAINING_STYLE["axes.titlesize"] + 1)
        fig.tight_layout()
        save_figure(fig, path)


def reliability_panel(ax, calibration, heading):
    """One level's reliability curves (one per class) in `ax`, the legend below the axes so
    that it covers no curve."""
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="Perfect calibration")
    for name, report in calibration.items():
        bins = report["reliability"]
        counts = np.array([b["count"] for b in bins], dtype=float)
        slope, intercept = report["calibration_slope"], report["calibration_intercept"]
        label = (f"{name}: Brier {report['brier']:.3f}, intercept "
                 + ("n/a" if intercept is None else f"{intercept:.2f}") + ", slope "
                 + ("n/a" if slope is None else f"{slope:.2f}"))
        line, = ax.plot([b["mean_predicted"] for b in bins], [b["observed"] for b in bins],
                        "-", lw=1.5, label=label)
        ax.scatter([b["mean_predicted"] for b in bins], [b["observed"] for b in bins],
                   s=20 + 180 * counts / max(counts.max(), 1), color=line.get_color(),
                   zorder=3)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("Mean predicted probability (bin)")
    ax.set_ylabel("Observed share of the class")
    ax.set_title(heading)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False, fontsize=9)


def plot_reliability_diagram(path, calibration, title="Calibration (test set)", patients=None):
    """Observed share of positives against mean predicted probability per bin, one line per
    class of lvr.stats.calibration.calibration_by_class, with Brier, intercept and slope in the
    legend; marker area follows the bin's count. With `patients` (the patient level's
    calibration_by_class) its panel is left of the beats'."""
    with plt.rc_context(TRAINING_STYLE):
        fig, panels = level_axes(patients, 5.8, 5.4 + 0.25 * len(calibration))
        for ax, heading in panels:
            reliability_panel(ax, patients if heading == PATIENT_PANEL else calibration,
                              heading)
        fig.suptitle(title, fontweight="bold", fontsize=TRAINING_STYLE["axes.titlesize"] + 1)
        fig.tight_layout()
        return save_figure(fig, path, dpi=200)


def plot_decision_curve(path, curve, title="Decision curve (test set, patients)"):
    """Net benefit of the model (with its bootstrap band), of treating all and of treating none
    against the threshold probability, from lvr.stats.decision_curve.decision_curve's dict. The
    y-axis stops a little above the largest of the prevalence, the model's net benefit and its
    band, and a little below 0, since treat-all falls steeply at high thresholds."""
    t = np.asarray(curve["thresholds"])
    model = np.asarray(curve["net_benefit_model"])
    band_top = max(curve["net_benefit_model_ci95_high"] or [0])
    top = max(curve["prevalence"], model.max(), band_top, 0.01) * 1.1
    with plt.rc_context(TRAINING_STYLE):
        fig, ax = plt.subplots(figsize=(6.6, 4.8))
        if curve["net_benefit_model_ci95_low"] is not None:
            ax.fill_between(t, curve["net_benefit_model_ci95_low"],
                            curve["net_benefit_model_ci95_high"], color="#1f77b4", alpha=0.2,
                            lw=0, label=f"Model, {100 * curve['level']:.0f}% bootstrap band")
        ax.plot(t, model, color="#1f77b4", lw=2, label="Model")
        ax.plot(t, curve["net_benefit_treat_all"], color="#d62728", lw=1.5, ls="--",
                label="Treat all")
        ax.plot(t, curve["net_benefit_treat_none"], color="black", lw=1.2, label="Treat none")
        ax.plot([], [], " ", label=f"{curve['n_patients']} patients, prevalence "
                                   f"{curve['prevalence']:.2f}")
        ax.set_xlim(t[0], t[-1])
        ax.set_ylim(-0.15 * top, top)
        ax.set_xlabel("Threshold probability")
        ax.set_ylabel("Net benefit")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        # below the axes: inside, it would cover the curves wherever they run
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
        fig.tight_layout()
        return save_figure(fig, path, dpi=200)


def plot_patient_probabilities(path, y_patient, p_patient, threshold, class_names,
                               title="Patient probabilities (test set)"):
    """Distribution of the patients' P(class 1) per true class (seaborn histogram, stacked
    bins of 0.05), with the operating point's threshold."""
    # lazy: seaborn (and pandas with it) takes a second to import, for this figure only
    import pandas as pd
    import seaborn as sns
    frame = pd.DataFrame({"probability": np.asarray(p_patient, dtype=float),
                          "true class": [class_names[int(k)] for k in y_patient]})
    with plt.rc_context(TRAINING_STYLE):
        fig, ax = plt.subplots(figsize=(6.6, 4.2))
        sns.histplot(frame, x="probability", hue="true class", hue_order=list(class_names),
                     bins=np.linspace(0, 1, 21), multiple="stack", palette=["#4c72b0", "#dd8452"],
                     edgecolor="white", ax=ax)
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1.2)
        ax.text(threshold, ax.get_ylim()[1] * 0.97, f" threshold {threshold:.3f}", va="top",
                ha="left" if threshold < 0.7 else "right", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"P({class_names[1]}), mean over the patient's beats")
        ax.set_ylabel("Patients")
        ax.set_title(title)
        save_figure(fig, path)
