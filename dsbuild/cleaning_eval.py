"""How well the cleaning stages find and fix errors whose cells are known.

UCI Adult is taken as clean; :func:`inject_errors` plants six kinds of error in
disjoint rows (each planted cell recorded with its clean and dirty value), the
six-rule job :data:`ADULT_RULES` cleans the dirty copy, and :func:`score` reports, per
kind, precision and recall of *detection* (the job changed the cell) and of *repair*
(the job changed it back to the clean value). Cells missing in the original data have
no known truth and are left out of scoring.

Used by ``tests/stages/test_clean.py`` on a sample and ``benchmarks/bench_clean.py``
on the whole set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dsbuild.records import ID

KINDS = ("unit", "range", "missing", "synonym", "fd", "outlier")

COLUMNS = {
    "unit": ["hours-per-week"],
    "range": ["age"],
    "missing": ["age", "marital-status"],
    "synonym": ["sex", "race"],
    "fd": ["education-num"],
    "outlier": ["fnlwgt"],
}

_MINUTES = ("{} min", "{}min", "{} minutes", "{} mins")
_SPELLINGS = {
    "Male": ["male", "MALE", " Male", "M", "m", "Male  ", "ｍａｌｅ"],
    "Female": ["female", "FEMALE", "Female ", "F", "f", "ｆｅｍａｌｅ"],
    "White": ["white", "WHITE", " White"],
    "Black": ["black", "BLACK", "Black "],
    "Asian-Pac-Islander": ["asian-pac-islander", "Asian Pacific Islander", "API"],
    "Amer-Indian-Eskimo": ["amer-indian-eskimo", "American Indian", "AIE"],
    "Other": ["other", "OTHER"],
}

ADULT_RULES: list[tuple[str, dict]] = [
    ("normalize_units", {"columns": {"hours-per-week": {"to": "h"}}}),
    ("ranges", {"columns": {"age": {"min": 17, "max": 90, "action": "null"}}}),
    (
        "canonicalize",
        {
            "columns": {
                "sex": {"vocabulary": ["Male", "Female"], "synonyms": {"Male": ["M"], "Female": ["F"]}},
                "race": {
                    "vocabulary": ["White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"],
                    "synonyms": {
                        "Asian-Pac-Islander": ["Asian Pacific Islander", "API"],
                        "Amer-Indian-Eskimo": ["American Indian", "AIE"],
                    },
                },
            }
        },
    ),
    ("outliers", {"columns": {"fnlwgt": {"method": "mad", "threshold": 6, "action": "null"}}}),
    (
        "impute",
        {
            "columns": {
                "age": {"strategy": "median", "by": ["relationship"]},
                "marital-status": {"strategy": "mode", "by": ["relationship"]},
                "fnlwgt": "median",
            }
        },
    ),
    ("constraints", {"rules": ["education -> education-num"]}),
]


def adult(path=None, rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Adult with an ``id`` column; ``rows`` takes a seeded sample."""
    from pathlib import Path

    path = path or Path(__file__).parent / "io" / "data" / "adult.csv.gz"
    frame = pd.read_csv(path)
    frame.insert(0, ID, [f"adult:{i}" for i in range(len(frame))])
    if rows is not None and rows < len(frame):
        frame = frame.sample(rows, random_state=seed).sort_index()
    return frame.reset_index(drop=True)


def inject_errors(clean: pd.DataFrame, rate: float = 0.02, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(dirty copy, truth) with ``rate`` of the rows per kind, rows disjoint across kinds.

    ``truth`` has one row per planted cell: id, column, kind, clean, dirty. The
    ``hours-per-week`` column of the dirty copy is text (``"40"``, or ``"2400 min"`` where
    a unit mix-up was planted), as it would arrive from a form.
    """
    rng = np.random.default_rng(seed)
    dirty = clean.copy()
    dirty["hours-per-week"] = clean["hours-per-week"].astype("str")
    for column in ("age", "fnlwgt"):
        dirty[column] = dirty[column].astype(np.float64)
    per_kind = int(round(rate * len(clean)))
    order = rng.permutation(len(clean))
    records = []

    def plant(rows, column, kind, values):
        for r, v in zip(rows, values):
            records.append((clean[ID].iat[r], column, kind, clean[column].iat[r], v))
        dirty.iloc[rows, dirty.columns.get_loc(column)] = values

    for k, kind in enumerate(KINDS):
        rows = np.sort(order[k * per_kind : (k + 1) * per_kind])
        if kind == "unit":
            hours = clean["hours-per-week"].to_numpy()[rows]
            fmt = rng.choice(_MINUTES, len(rows))
            plant(rows, "hours-per-week", kind, [f.format(h * 60) for f, h in zip(fmt, hours)])
        elif kind == "range":
            age = clean["age"].to_numpy()[rows]
            choice = rng.integers(0, 4, len(rows))
            typo = age * 10 + rng.integers(0, 10, len(rows))
            bad = np.select([choice == 0, choice == 1, choice == 2], [-age, np.full(len(rows), 999), rng.integers(0, 17, len(rows))], typo)
            plant(rows, "age", kind, bad.astype(np.float64))
        elif kind == "missing":
            half = len(rows) // 2
            plant(rows[:half], "age", kind, [np.nan] * half)
            plant(rows[half:], "marital-status", kind, [np.nan] * (len(rows) - half))
        elif kind == "synonym":
            half = len(rows) // 2
            for column, part in (("sex", rows[:half]), ("race", rows[half:])):
                plant(part, column, kind, [str(rng.choice(_SPELLINGS[v])) for v in clean[column].to_numpy()[part]])
        elif kind == "fd":
            num = clean["education-num"].to_numpy()[rows]
            wrong = (num - 1 + rng.integers(1, 16, len(rows))) % 16 + 1
            plant(rows, "education-num", kind, wrong)
        elif kind == "outlier":
            plant(rows, "fnlwgt", kind, clean["fnlwgt"].to_numpy()[rows] * 100.0)
    truth = pd.DataFrame.from_records(records, columns=[ID, "column", "kind", "clean", "dirty"])
    return dirty, truth


def _same(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Cell-wise equality where two missing values are equal and numbers compare as numbers."""
    na = a.isna().to_numpy() & b.isna().to_numpy()
    an, bn = pd.to_numeric(a, errors="coerce"), pd.to_numeric(b, errors="coerce")
    numeric = an.notna().to_numpy() & bn.notna().to_numpy()
    eq = np.where(numeric, np.isclose(an.to_numpy(dtype=float, na_value=np.nan), bn.to_numpy(dtype=float, na_value=np.nan)),
                  a.astype("str").to_numpy(dtype=object) == b.astype("str").to_numpy(dtype=object))
    return na | (eq & ~(a.isna().to_numpy() ^ b.isna().to_numpy()))


def score(clean: pd.DataFrame, dirty: pd.DataFrame, cleaned: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per kind and column: planted, changed, precision/recall of detection and repair.

    A changed cell is attributed to the kind planted in it; a changed cell where nothing
    was planted is a false positive of every kind that owns the column. Rejected rows
    (absent from ``cleaned``) count as detected but not repaired. Repair means the exact
    clean value, which imputation rarely recovers for numbers, so ``repair_mae`` gives
    the mean absolute error left in planted numeric cells.
    """
    base = clean.set_index(ID)
    before = dirty.set_index(ID)
    after = cleaned.set_index(ID).reindex(before.index)
    kept = before.index.isin(cleaned[ID])
    rows = []
    for kind in KINDS:
        for column in COLUMNS[kind]:
            planted = truth[(truth["kind"] == kind) & (truth["column"] == column)]
            known = base[column].notna().to_numpy()
            changed = ~_same(before[column], after[column]) | ~kept
            right = _same(base[column], after[column]) & kept
            here = before.index.isin(planted[ID])
            elsewhere = before.index.isin(truth.loc[(truth["column"] == column) & (truth["kind"] != kind), ID])
            n = int(here.sum())
            tp = int((changed & here).sum())
            detected = int((changed & ~elsewhere & known).sum())
            repaired = int((changed & here & right).sum())
            mae = float("nan")
            if pd.api.types.is_numeric_dtype(base[column]) and n:
                mae = float(np.nanmean(np.abs(pd.to_numeric(after[column], errors="coerce") - base[column])[here]))
            rows.append(
                {
                    "kind": kind,
                    "column": column,
                    "planted": n,
                    "changed": detected,
                    "detect_precision": tp / detected if detected else float("nan"),
                    "detect_recall": tp / n if n else float("nan"),
                    "repair_precision": repaired / detected if detected else float("nan"),
                    "repair_recall": repaired / n if n else float("nan"),
                    "repair_mae": mae,
                }
            )
    return pd.DataFrame(rows)


def clean_with_stages(dirty: pd.DataFrame, npartitions: int = 4, rules=ADULT_RULES, seed: int = 0):
    """Run the rules as one Dask graph on an in-memory frame; (kept, rejected, stages).

    Stands in for :func:`dsbuild.run` where no output folder is wanted (tests, scoring).
    """
    import dask.dataframe as dd

    from dsbuild.stages import Shapes, StageContext, stage_class
    from dsbuild.stages.base import METRIC, REJECT

    frame = dd.from_pandas(dirty, npartitions=npartitions, sort=False)
    stages = []
    for name, options in rules:
        stage = stage_class(name)(options).bind(StageContext(name, seed))
        stage.check(frame._meta)
        frame = stage.build(frame, Shapes())
        stages.append(stage)
    out = frame.compute()
    metrics = {c[len(METRIC):]: int(out[c].sum()) for c in out.columns if c.startswith(METRIC)}
    out = out.drop(columns=[c for c in out.columns if c.startswith(METRIC)])
    kept = out[out[REJECT].isna()].sort_values(ID, kind="stable").reset_index(drop=True)
    rejected = out[out[REJECT].notna()].sort_values(ID, kind="stable").reset_index(drop=True)
    return kept, rejected, metrics
