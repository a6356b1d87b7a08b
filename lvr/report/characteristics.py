"""Characteristics per split (TRIPOD+AI item 20b): patients, beats, class counts, and age and sex
when the cohort's patients.csv has them.

Medians and quartiles are numpy's (linear interpolation). Percentages are of the split's
patients (or beats, for beat counts). Patients that patients.csv lacks, or whose cell is empty,
count as unknown and get a row of their own.
"""
import numpy as np

from lvr.report.flow import split_masks

AGE_NAMES = ("age",)
SEX_NAMES = ("sex", "gender")
UNKNOWN = "unknown"
ALL = "all"


def share(n, total):
    return f"{n} ({100 * n / total:.1f}%)" if total else f"{n}"


def median_iqr(values):
    """{"median", "q1", "q3", "n"} and its text '56 [44-67]' (None without values)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return {"median": None, "q1": None, "q3": None, "n": 0}, "-"
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return ({"median": float(median), "q1": float(q1), "q3": float(q3), "n": int(len(values))},
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
