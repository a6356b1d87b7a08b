"""The participant flow as a CONSORT-style diagram: (PTB-XL's database -> the task's records ->)
records -> kept -> cohort -> splits, with the exclusions and their reasons in a box at the side.
Draws lvr.report.flow.participant_flow's dict."""
import textwrap

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from lvr.report.figures import save_figure

WIDTH = 100.0          # drawing units across the figure
LINE = 3.2             # height of one text line, in drawing units
PAD = 2.0              # inside a box, above and below the text
GAP = 7.0              # between a box and the next one down
UNITS_PER_INCH = 9.0
FONT_SIZE = 10.5
MAX_REASONS = 8        # exclusion reasons listed one by one; the rest are summed
MAIN_X, MAIN_W = 32.0, 44.0   # centre and width of the main column's boxes
WRAP = 52              # characters of a main box's line
SPLIT_TITLES = {"train": "Training", "val": "Validation", "test": "Test"}
EDGE, FACE, SIDE_FACE = "#2b2b2b", "#f4f6fa", "#fbf1ef"


def box(ax, centre_x, top, width, lines, face=FACE, bold_first=True):
    """A rounded box whose top edge is at `top`; returns its bottom edge."""
    height = len(lines) * LINE + 2 * PAD
    ax.add_patch(FancyBboxPatch((centre_x - width / 2, top - height), width, height,
                                boxstyle="round,pad=0,rounding_size=1.2", linewidth=1.2,
                                edgecolor=EDGE, facecolor=face))
    for i, line in enumerate(lines):
        ax.text(centre_x, top - PAD - (i + 0.5) * LINE, line, ha="center", va="center",
                fontsize=FONT_SIZE, fontweight="bold" if (i == 0 and bold_first) else "normal")
    return top - height


def arrow(ax, start, end):
    ax.annotate("", xy=end, xytext=start,
                arrowprops={"arrowstyle": "-|>", "color": EDGE, "linewidth": 1.2,
                            "shrinkA": 0, "shrinkB": 0, "mutation_scale": 12})


def class_lines(counts):
    return [f"{name}: {c['patients']} patients, {c['beats']} beats"
            for name, c in counts["per_class"].items()]


def exclusion_lines(records):
    reasons = sorted(records["rejected_by_reason"].items(), key=lambda item: (-item[1], item[0]))
    lines = [f"Records excluded (n = {records['rejected']})"]
    lines += [f"{reason}: {n}" for reason, n in reasons[:MAX_REASONS]]
    if len(reasons) > MAX_REASONS:
        lines.append(f"other reasons: {sum(n for _, n in reasons[MAX_REASONS:])}")
    return lines


def database_lines(database):
    """The database box: records and patients, then per device and per diagnostic superclass
    (wrapped to the box)."""
    lines = [f"{database['name']} database (n = {database['records']} records, "
             f"{database['patients']} patients)"]
    for title, counts in (("by device", database.get("per_device")),
                          ("by diagnostic superclass (a record may have several)",
                           database.get("per_superclass"))):
        if counts:
            lines += textwrap.wrap(f"{title}: " + ", ".join(f"{name} {n}" for name, n in
                                                            counts.items()), WRAP)
    return lines


def not_in_task_lines(database):
    left_out = database.get("not_in_task") or {}
    return [f"Not in the task (n = {database['records'] - database['task_records']})",
            *textwrap.wrap(database.get("selection", ""), WRAP - 14),
            *(f"{reason}: {n}" for reason, n in left_out.items())]


def step_down(ax, bottom, side_lines):
    """An arrow from a main box's `bottom` to the next main box, with the box of what left the
    flow at its side; returns the next box's top."""
    side_height = len(side_lines) * LINE + 2 * PAD
    next_top = bottom - GAP - max(0, side_height - GAP)
    junction = (bottom + next_top) / 2
    arrow(ax, (MAIN_X, bottom), (MAIN_X, next_top))
    side_left = MAIN_X + MAIN_W / 2 + 4
    side_w = WIDTH - side_left - 2
    box(ax, side_left + side_w / 2, junction + side_height / 2, side_w, side_lines,
        face=SIDE_FACE)
    arrow(ax, (MAIN_X, junction), (side_left, junction))
    return next_top


def plot_flow(path, flow, title="Participant flow"):
    """Draw `flow` (lvr.report.flow.participant_flow) to the PNG `path`; returns `path`."""
    records, cohort, splits = flow["records"], flow["cohort"], flow["splits"] or {}
    fig, ax = plt.subplots(figsize=(WIDTH / UNITS_PER_INCH, 1.0))
    main_x, main_w = MAIN_X, MAIN_W
    top = 0.0
    if records:
        database = records.get("database")
        if database:
            bottom = box(ax, main_x, top, main_w, database_lines(database))
            top = step_down(ax, bottom, not_in_task_lines(database))
        per_class = [f"{name}: {c['read']}" for name, c in records["per_class"].items()]
        bottom = box(ax, main_x, top, main_w,
                     [f"Records {'of the task' if database else 'read'} "
                      f"(n = {records['read']})", ", ".join(per_class)])
        kept_top = step_down(ax, bottom, exclusion_lines(records))
        bottom = box(ax, main_x, kept_top, main_w,
                     [f"Records kept (n = {records['kept']})",
                      ", ".join(f"{name}: {c['kept']}" for name, c in
                                records["per_class"].items())])
        top = bottom - GAP
        arrow(ax, (main_x, bottom), (main_x, top))
    cohort_lines = [f"Cohort: {cohort['patients']} patients, {cohort['beats']} beats",
                    *class_lines(cohort)]
    bottom = box(ax, main_x, top, main_w, cohort_lines)
    if splits:
        n = len(splits)
        split_w = (WIDTH - 4 * (n + 1)) / n
        centres = [4 + split_w / 2 + i * (split_w + 4) for i in range(n)]
        rail = bottom - GAP / 2
        ax.plot([main_x, main_x], [bottom, rail], color=EDGE, linewidth=1.2)
        ax.plot([min(centres + [main_x]), max(centres + [main_x])], [rail, rail], color=EDGE,
                linewidth=1.2)
        split_top = bottom - GAP - 2
        lowest = split_top
        for centre, (name, counts) in zip(centres, splits.items(), strict=True):
            arrow(ax, (centre, rail), (centre, split_top))
            lines = [f"{SPLIT_TITLES.get(name, name)}",
                     f"{counts['patients']} patients, {counts['beats']} beats",
                     *class_lines(counts)]
            lowest = min(lowest, box(ax, centre, split_top, split_w, lines))
        bottom = lowest
    height = -bottom + 2
    ax.set_xlim(0, WIDTH)
    ax.set_ylim(bottom - 1, 1 + (6 if title else 0))
    if title:
        ax.text(WIDTH / 2, 4, title, ha="center", va="center", fontsize=FONT_SIZE + 2.5,
                fontweight="bold")
    ax.axis("off")
    fig.set_size_inches(WIDTH / UNITS_PER_INCH, (height + (6 if title else 0)) / UNITS_PER_INCH)
    fig.subplots_adjust(0, 0, 1, 1)
    return save_figure(fig, path)
