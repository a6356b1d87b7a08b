"""Characteristics per split (TRIPOD+AI item 20b): patients, beats, class counts, and age and sex
when the cohort's patients.csv has them; and the comparison of a development cohort with an
evaluated one (TRIPOD+AI item 20c), flagging large differences.

Medians and quartiles are numpy's (linear interpolation). Percentages are of the split's
patients (or beats, for beat counts). Patients that patients.csv lacks, or whose cell is empty,
count as unknown and get a row of their own.
"""
import math

import numpy as np

from lvr.report.flow import split_masks

AGE_NAMES = ("age",)
SEX_NAMES = ("sex", "gender")
UNKNOWN = "unknown"
ALL = "all"
AGE_ROW = ("Age, years", "median [IQR]")
# differences between a development and an evaluated cohort large enough to warn about
LARGE_SMD = 0.5                 # standardised mean difference (Cohen's d; 0.5 is "medium")
LARGE_PREVALENCE_RATIO = 2.0    # a class's share of patients, one cohort's over the other's
IQR_PER_SD = 1.349              # the interquartile range of a normal distribution, in SDs


def share(n, total):
    return f"{n} ({100 * n / total:.1f}%)" if total else f"{n}"


def median_iqr(values):
    """{"median", "q1", "q3", "mean", "sd", "n"} and its text '56 [44-67]' (None without
    values); the mean and SD are for comparing cohorts (cohort_comparison)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return {"median": None, "q1": None, "q3": None, "mean": None, "sd": None, "n": 0}, "-"
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return ({"median": float(median), "q1": float(q1), "q3": float(q3),
             "mean": float(values.mean()),
             "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
             "n": int(len(values))},
            f"{median:.0f} [{q1:.0f}-{q3:.0f}]")


def column_named(table, names):
    if table is None:
        return None
    return next((c for c in table.columns if c.strip().lower() in names), None)


def level_text(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def characteristics_table(cohort, task, split, class_names=None):
    """Characteristics of each split of `split` (split.json, or {"train": [patient IDs], ...})
    and of all of them together. JSON-able:

    {"columns": ["train", "val", "test", "all"],
     "rows": [{"characteristic": str, "level": str, "values": {column: number or dict},
               "text": {column: str}}, ...],
     "notes": [...]}

    Rows, in order: Patients; Beats; Beats per patient (median [IQR]); Patients per class and
    Beats per class (one row per class, n (%)); with patients.csv, Age in years (median [IQR]
    of the patients whose age is known, then the unknown count) and Sex (n (%) per level).
    """
    class_names = list(class_names or cohort.class_names(task))
    labels = cohort.labels(task)
    masks = split_masks(cohort, split)
    masks[ALL] = np.any(list(masks.values()), axis=0)
    columns = list(masks)
    per_split = {}
    for name, mask in masks.items():
        patients, inverse = np.unique(cohort.patient_ids[mask], return_inverse=True)
        klass = np.zeros(len(patients), dtype=np.int64)
        klass[inverse] = labels[mask]
        per_split[name] = (patients, np.bincount(inverse, minlength=len(patients)), klass,
                           labels[mask])
    rows = []

    def add(characteristic, level, cells):
        rows.append({"characteristic": characteristic, "level": level,
                     "values": {c: cells[c][0] for c in columns},
                     "text": {c: cells[c][1] for c in columns}})

    add("Patients", "", {c: (len(p), str(len(p))) for c, (p, *_) in per_split.items()})
    add("Beats", "", {c: (int(b.sum()), str(int(b.sum()))) for c, (_, b, _, _) in
                      per_split.items()})
    add("Beats per patient", "median [IQR]",
        {c: median_iqr(b) for c, (_, b, _, _) in per_split.items()})
    for k, name in enumerate(class_names):
        add("Patients per class", name,
            {c: (int((cls == k).sum()), share(int((cls == k).sum()), len(p)))
             for c, (p, _, cls, _) in per_split.items()})
    for k, name in enumerate(class_names):
        add("Beats per class", name,
            {c: (int((y == k).sum()), share(int((y == k).sum()), len(y)))
             for c, (*_, y) in per_split.items()})
    table = cohort.patient_table
    notes = []
    age = column_named(table, AGE_NAMES)
    if age is not None and table[age].dtype.kind in "fiu":
        ages = {c: table[age].reindex(p).to_numpy(dtype=float) for c, (p, *_) in
                per_split.items()}
        add("Age, years", "median [IQR]", {c: median_iqr(a) for c, a in ages.items()})
        if any(np.isnan(a).any() for a in ages.values()):
            add("Age, years", UNKNOWN,
                {c: (int(np.isnan(a).sum()), share(int(np.isnan(a).sum()), len(a)))
                 for c, a in ages.items()})
    elif age is not None:
        notes.append(f"patients.csv column {age!r} is not numeric: no age row")
    sex = column_named(table, SEX_NAMES)
    if sex is not None:
        levels = {c: np.array([level_text(v) for v in table[sex].reindex(p)], dtype=object)
                  for c, (p, *_) in per_split.items()}
        order = sorted({v for v in levels[ALL] if v != UNKNOWN})
        order += [UNKNOWN] if (levels[ALL] == UNKNOWN).any() else []
        for level in order:
            add(sex.capitalize(), level,
                {c: (int((v == level).sum()), share(int((v == level).sum()), len(v)))
                 for c, v in levels.items()})
    if table is None:
        notes.append("no patients.csv: no age or sex rows")
    return {"columns": columns, "rows": rows, "notes": notes}


def characteristics_markdown(table):
    """The characteristics table as a Markdown table (one line per row)."""
    columns = table["columns"]
    lines = ["| Characteristic | " + " | ".join(columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for row in table["rows"]:
        label = row["characteristic"] + (f", {row['level']}" if row["level"] else "")
        lines.append(f"| {label} | " + " | ".join(row["text"][c] for c in columns) + " |")
    return "\n".join(lines) + "\n"


def rows_by_key(table):
    return {(row["characteristic"], row["level"]): row for row in table["rows"]}


def mean_and_sd(cell):
    """(mean, SD, estimated) of an age cell; a table written before means were stored gives
    them from the median and the IQR (SD = IQR / 1.349, as for a normal distribution)."""
    if cell.get("mean") is not None and cell.get("sd") is not None:
        return cell["mean"], cell["sd"], False
    return cell["median"], (cell["q3"] - cell["q1"]) / IQR_PER_SD, True


def standardised_difference(mean_a, sd_a, mean_b, sd_b):
    """(a - b) over the pooled SD sqrt((sd_a^2 + sd_b^2) / 2); inf when the SDs are 0 and the
    means differ, 0 when they do not."""
    pooled = math.sqrt((sd_a ** 2 + sd_b ** 2) / 2)
    if pooled > 0:
        return (mean_a - mean_b) / pooled
    return 0.0 if mean_a == mean_b else math.copysign(math.inf, mean_a - mean_b)


def proportion_difference(p_a, p_b):
    """The standardised difference of two proportions."""
    return standardised_difference(p_a, math.sqrt(p_a * (1 - p_a)), p_b,
                                   math.sqrt(p_b * (1 - p_b)))


def smd_text(d):
    return "SMD " + (f"{d:+.2f}" if math.isfinite(d) else "undefined (no spread)")


def age_comparison(dev, ev):
    """The age row and its flag, or a note when one cohort has no ages."""
    if AGE_ROW not in dev or AGE_ROW not in ev:
        if AGE_ROW in dev or AGE_ROW in ev:
            which = "development" if AGE_ROW in dev else "evaluated"
            return None, None, f"age only in the {which} cohort's patients.csv: not compared"
        return None, None, "age not compared: neither cohort's patients.csv has it"
    (mean_d, sd_d, est_d), (mean_e, sd_e, est_e) = (
        mean_and_sd(rows[AGE_ROW]["values"][ALL]) for rows in (dev, ev))
    if mean_d is None or mean_e is None:
        return None, None, "age unknown for every patient of one cohort: not compared"
    d = standardised_difference(mean_e, sd_e, mean_d, sd_d)
    texts = (dev[AGE_ROW]["text"][ALL], ev[AGE_ROW]["text"][ALL])
    row = {"characteristic": "Age, years", "level": "median [IQR]", "development": texts[0],
           "evaluated": texts[1], "difference": smd_text(d) + (" (SD from the IQR)"
                                                               if est_d or est_e else ""),
           "flagged": abs(d) > LARGE_SMD}
    flag = (f"the evaluated cohort's age differs from the development cohort's: median "
            f"{texts[1]} against {texts[0]} years ({smd_text(d)}, beyond {LARGE_SMD}); the "
            f"model may not transfer") if row["flagged"] else None
    return row, flag, None


def level_shares(rows, characteristic, skip=(UNKNOWN,)):
    """{level: share of the patients with a known level} of one characteristic's rows."""
    counts = {level: row["values"][ALL] for (name, level), row in rows.items()
              if name == characteristic and level not in skip}
    total = sum(counts.values())
    return {level: n / total for level, n in counts.items()} if total else {}


def share_rows(dev, ev, characteristic, by_ratio):
    """Rows and flags comparing one categorical characteristic's shares: by the ratio of the
    shares (class prevalence) or by their standardised difference (sex)."""
    rows, flags = [], []
    shares_d, shares_e = level_shares(dev, characteristic), level_shares(ev, characteristic)
    for level in dict.fromkeys([*shares_d, *shares_e]):
        p_d, p_e = shares_d.get(level, 0.0), shares_e.get(level, 0.0)
        if by_ratio:
            ratio = (max(p_d, p_e) / min(p_d, p_e) if min(p_d, p_e) > 0
                     else 1.0 if p_d == p_e else math.inf)
            flagged = ratio > LARGE_PREVALENCE_RATIO
            difference = (f"{p_e / p_d:.2f}x" if p_d > 0 else "absent in development")
            why = (f"{100 * p_e:.0f}% against {100 * p_d:.0f}% of patients, beyond "
                   f"{LARGE_PREVALENCE_RATIO:g}x")
        else:
            d = proportion_difference(p_e, p_d)
            flagged, difference = abs(d) > LARGE_SMD, smd_text(d)
            why = f"{100 * p_e:.0f}% against {100 * p_d:.0f}% ({difference}, beyond {LARGE_SMD})"
        text = {name: rows_[(characteristic, level)]["text"][ALL]
                if (characteristic, level) in rows_ else "0"
                for name, rows_ in (("development", dev), ("evaluated", ev))}
        rows.append({"characteristic": characteristic, "level": level, **text,
                     "difference": difference, "flagged": flagged})
        if flagged:
            flags.append(f"{characteristic.lower()} {level}: the evaluated cohort has {why}; "
                         f"the model may not transfer")
    if not by_ratio and len(rows) == 2:
        flags = flags[:1]   # two levels: the second's difference mirrors the first's
    return rows, flags


def cohort_comparison(development, evaluated):
    """A development cohort's characteristics (characteristics_table of the training run)
    against an evaluated cohort's, each over all its patients (column "all"): patients, age
    (standardised mean difference), sex (standardised difference of the shares) and patients
    per class (ratio of the prevalences). {"rows": [{"characteristic", "level", "development",
    "evaluated", "difference", "flagged"}], "flags": [warning lines], "notes": [...]}; a
    difference is flagged beyond LARGE_SMD or LARGE_PREVALENCE_RATIO."""
    dev, ev = rows_by_key(development), rows_by_key(evaluated)
    rows, flags, notes = [], [], []
    if ("Patients", "") in dev and ("Patients", "") in ev:
        rows.append({"characteristic": "Patients", "level": "",
                     "development": dev[("Patients", "")]["text"][ALL],
                     "evaluated": ev[("Patients", "")]["text"][ALL], "difference": "",
                     "flagged": False})
    age, flag, note = age_comparison(dev, ev)
    rows += [age] if age else []
    flags += [flag] if flag else []
    notes += [note] if note else []
    sex = {name for name, _ in dev if name.lower() in SEX_NAMES} & \
        {name for name, _ in ev if name.lower() in SEX_NAMES}
    for name in sorted(sex):
        more_rows, more_flags = share_rows(dev, ev, name, by_ratio=False)
        rows, flags = rows + more_rows, flags + more_flags
    if not sex and any(name.lower() in SEX_NAMES for name, _ in [*dev, *ev]):
        notes.append("sex only in one cohort's patients.csv: not compared")
    more_rows, more_flags = share_rows(dev, ev, "Patients per class", by_ratio=True)
    return {"rows": rows + more_rows, "flags": flags + more_flags,
            "notes": notes + [f"Development: every patient of the training run's split; "
                              f"evaluated: every patient scored. Flagged (bold): a standardised "
                              f"difference beyond {LARGE_SMD} or a class prevalence differing "
                              f"more than {LARGE_PREVALENCE_RATIO:g}-fold."]}
