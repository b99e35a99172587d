"""Group × label statistics for auditing and mitigating unfairness, from mergeable counts.

Everything here starts from one small table: for each cell (the row's group in every
sensitive column, and its label) the row count ``n`` and the weight sum ``w``. Tables of
two partitions merge by adding, so the audit, Kamiran–Calders weights, resampling targets
and the massaging count are the same for any partitioning, and the data is never
collected. The metric definitions are fairlearn's (selection rate per group; demographic
parity difference = max − min, ratio = min / max) and AIF360's (statistical parity
difference and disparate impact against a reference group).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from dsbuild.kernels.moments import round_bits

MISSING = "<NA>"
LABEL = "_label"
GROUP_JOIN = ", "
CELL_JOIN = "/"


# -- groups -----------------------------------------------------------------------------


def bin_labels(edges: Sequence[float]) -> list[str]:
    """Names of the bins cut at ``edges``: ``[25]`` gives ``<25``, ``>=25``."""
    edges = [float(e) for e in edges]
    names = [f"<{edges[0]:g}"]
    names += [f"[{lo:g},{hi:g})" for lo, hi in zip(edges, edges[1:])]
    names.append(f">={edges[-1]:g}")
    return names


def group_codes(col: pd.Series, edges: Sequence[float] | None = None) -> tuple[np.ndarray, list[str]]:
    """(codes, names): each row's group as an index into ``names``; missing is ``<NA>``.

    A column with ``edges`` is cut into bins ``[e_i, e_i+1)``; any other column's values
    are its groups, named by their text; blank text is missing, as a CSV reader and the
    cleaning stages make it. ``names`` may hold groups no row has (a categorical's unused
    categories, blank text): counting skips them.
    """
    if edges:
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        codes = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right").astype(np.int64)
        names = bin_labels(edges)
        codes[np.isnan(values)] = len(names)
        return codes, [*names, MISSING]
    codes, uniques = factorize(col)
    names = [_text(u) for u in uniques]
    codes[codes < 0] = len(names)
    blank = [i for i, u in enumerate(uniques) if isinstance(u, str) and not u.strip()]
    if blank:
        codes[np.isin(codes, blank)] = len(names)
    return codes, [*names, MISSING]


def factorize(col: pd.Series) -> tuple[np.ndarray, list]:
    """(int64 codes, values), −1 for missing. A categorical column's own codes are used
    as they are: hashing a few hundred thousand rows per partition is most of an audit."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return np.array(col.cat.codes, dtype=np.int64), list(col.cat.categories)
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64), list(uniques)


def group_text(col: pd.Series, edges: Sequence[float] | None = None) -> np.ndarray:
    """Each row's group name (object array)."""
    codes, names = group_codes(col, edges)
    return np.asarray(names, dtype=object)[codes]


def _text(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def joint_text(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Intersection names ``Female, White`` from per-column group names (see :func:`joint_name`)."""
    if len(columns) == 1:
        return np.asarray(columns[0], dtype=object)
    out = _quoted(columns[0])
    for col in columns[1:]:
        out = np.char.add(np.char.add(out, GROUP_JOIN), _quoted(col))
    return out.astype(object)


def joint_name(groups: Sequence) -> str:
    """One intersection's name, as :func:`joint_text` names each row's."""
    if len(groups) == 1:
        return str(groups[0])
    return GROUP_JOIN.join(_quoted(np.array([str(g) for g in groups], dtype=object)))


def cell_text(groups: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cell names ``<group>/<label>`` (resample's cells and reject reasons), each part
    quoted as :func:`_quoted` quotes an intersection's: group ``a/b`` × label ``c`` and
    ``a`` × ``b/c`` were both ``a/b/c``, one cell, so each got the other's rows and
    target; ``>=25/good`` stays as it was."""
    if not len(groups):
        return np.zeros(0, dtype=object)
    cells = np.char.add(np.char.add(_quoted(groups, CELL_JOIN), CELL_JOIN), _quoted(labels, CELL_JOIN))
    return cells.astype(object)


def _quoted(names, separator: str = GROUP_JOIN) -> np.ndarray:
    """Group names as parts of an intersection's name: one holding the separator (or
    starting with a quote) is written as a JSON string, ``"Black, African American"``,
    so that ``a, b`` × ``c`` and ``a`` × ``b, c`` are not both ``a, b, c``; the others,
    nearly all, as they are."""
    codes, uniques = pd.factorize(np.asarray(names, dtype=object), use_na_sentinel=False)
    texts = [str(u) for u in uniques]
    return np.array([json.dumps(t, ensure_ascii=False) if separator in t or t.startswith('"') else t for t in texts], dtype=str)[codes]


# -- the contingency table --------------------------------------------------------------


def contingency(
    part: pd.DataFrame,
    sensitive: Sequence[str],
    label: str,
    weight: str | None = None,
    bins: Mapping[str, Sequence[float]] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Counts and weight sums per (group in each sensitive column, label) of one partition.

    Rows without a label are left out. ``extra`` adds more per-row keys (a model's
    prediction, say) as further columns of the table.
    """
    bins = bins or {}
    keys: list[tuple[str, np.ndarray, list]] = []
    for col in sensitive:
        codes, names = group_codes(part[col], bins.get(col))
        keys.append((col, codes, names))
    keys.append((LABEL, *factorize(part[label])))
    for name, values in (extra or {}).items():
        keys.append((name, *factorize(pd.Series(values))))

    valid = np.ones(len(part), dtype=bool)
    for name, codes, _ in keys[len(sensitive):]:
        valid &= codes >= 0
    sizes = [max(len(names), 1) for _, _, names in keys]
    joint = keys[0][1].copy()  # group codes are never negative; label codes are where valid
    for (_, codes, _), size in zip(keys[1:], sizes[1:]):
        joint *= size
        joint += codes
    weights = weight and weight in part.columns
    if not valid.all():
        joint = joint[valid]
    w = _weights(part, weight)[valid] if weights else None

    size = int(np.prod(sizes))
    if size <= max(4 * len(joint), 1 << 16):
        n_all = np.bincount(joint, minlength=size)
        cells = np.flatnonzero(n_all)
        n = n_all[cells].astype(np.int64)
        wsum = np.bincount(joint, weights=w, minlength=size)[cells] if weights else n.astype(np.float64)
    else:
        cells, inverse = np.unique(joint, return_inverse=True)
        n = np.bincount(inverse, minlength=len(cells)).astype(np.int64)
        wsum = np.bincount(inverse, weights=w, minlength=len(cells)) if weights else n.astype(np.float64)
    coords = np.unravel_index(cells, sizes)
    data = {name: [names[i] for i in idx] for (name, _, names), idx in zip(keys, coords)}
    table = pd.DataFrame({**data, "n": n, "w": wsum})
    return table.sort_values(list(data), kind="stable", ignore_index=True)


def _weights(part: pd.DataFrame, weight: str | None) -> np.ndarray:
    """Each row's weight; a row without a usable one (missing, infinite, negative) counts
    for nothing. ``nan_to_num`` had made an infinite weight 1.8e308, and one such row
    turned every factor of its table into NaN."""
    if weight and weight in part.columns:
        w = weight_values(part[weight])
        return np.where(usable_weights(w), w, 0.0)
    return np.ones(len(part), dtype=np.float64)


def weight_values(column: pd.Series) -> np.ndarray:
    """A weight column as float64, text that is no number as NaN."""
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def usable_weights(w: np.ndarray) -> np.ndarray:
    """Weights a trainer's ``sample_weight`` takes: finite and not negative."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(w) & (w >= 0)


def key_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in ("n", "w")]


def tidy(table: pd.DataFrame) -> pd.DataFrame:
    """One row per cell, sorted by the keys, so merged tables compare equal."""
    keys = key_columns(table)
    if table.empty:
        return table.reset_index(drop=True)
    out = table.groupby(keys, sort=True, dropna=False, observed=True)[["n", "w"]].sum().reset_index()
    out["n"] = out["n"].astype(np.int64)
    return out


def merge_tables(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """The table of two partitions together (the ``combine`` of every fairness stage).

    Tables hold tens of cells, so they are added in a dict rather than by a pandas
    groupby (a few ms each, and the last merges are all the workers wait on before the
    apply pass); each cell's sums are the groupby's: one addition per cell and merge.
    Keys the dict cannot order fall back to the groupby.
    """
    keys = key_columns(a)
    cells = _add_cells(a, b, keys) if key_columns(b) == keys else None
    if not cells:
        return tidy(pd.concat([a, b], ignore_index=True))
    columns = {k: [key[i] for key in cells] for i, k in enumerate(keys)}  # typed as contingency types them
    return pd.DataFrame({**columns, "n": np.array([c[0] for c in cells.values()], dtype=np.int64),
                         "w": np.array([c[1] for c in cells.values()], dtype=np.float64)})


def _add_cells(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> dict[tuple, list] | None:
    """key -> [n, w] of both tables, in key order; None where a key is missing or the keys
    cannot be ordered (the groupby handles those)."""
    cells: dict[tuple, list] = {}
    for t in (a, b):
        for key, n, w in zip(zip(*(t[k].tolist() for k in keys)), t["n"].tolist(), t["w"].tolist()):
            cell = cells.get(key)
            if cell is None:
                cells[key] = [n, w]
            else:
                cell[0] += n
                cell[1] += w
    try:
        order = sorted(cells)
    except TypeError:
        return None
    if any(_isna(v) for key in order for v in key):
        return None
    return {key: cells[key] for key in order}


# -- favourable label -------------------------------------------------------------------


def favorable_value(labels: Sequence, favorable=None):
    """The label value that counts as the favourable outcome.

    Given explicitly, or ``True`` / ``1`` for a boolean or 0/1 label; anything else must
    be named, since guessing which outcome is good would be guessing policy.
    """
    values = [v for v in labels if not _isna(v)]
    if favorable is not None:
        for v in values:
            if v == favorable or _text(v) == _text(favorable):
                return v
        raise ValueError(f"favorable label {favorable!r} is not among the labels {sorted(map(str, values))}")
    if values and all(isinstance(v, (bool, np.bool_)) for v in values):
        return True
    if values and {_text(v) for v in values} <= {"0", "1"}:
        return next((v for v in values if _text(v) == "1"), 1)
    raise ValueError(
        f"the label has values {sorted(map(str, values))[:10]}; say which is favourable "
        "with the stage option `favorable:`"
    )


def _isna(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def positive(table: pd.DataFrame, favorable) -> np.ndarray:
    return np.array([v == favorable for v in table[LABEL]], dtype=bool)


# -- audit ------------------------------------------------------------------------------


def views(sensitive: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The groupings an audit reports: each sensitive column, and their intersection."""
    out = [(col, [col]) for col in sensitive]
    if len(sensitive) > 1:
        out.append((" × ".join(sensitive), list(sensitive)))
    return out


def rates(table: pd.DataFrame, columns: Sequence[str], favorable, outcome: str = LABEL) -> pd.DataFrame:
    """Per group: count, weight, weight of favourable outcomes, and the (weighted) rate."""
    t = table.assign(_pos_w=np.where([v == favorable for v in table[outcome]], table["w"], 0.0))
    g = t.groupby(list(columns), sort=True, dropna=False)[["n", "w", "_pos_w"]].sum()
    g["rate"] = g["_pos_w"] / g["w"].where(g["w"] > 0)
    g.index = [joint_name(k) if isinstance(k, tuple) else str(k) for k in g.index]
    return g


def parity(
    table: pd.DataFrame,
    sensitive: Sequence[str],
    favorable,
    privileged: Mapping[str, str] | None = None,
    outcome: str = LABEL,
) -> dict:
    """Per view (each sensitive column and the intersection): groups' counts, base rates,
    statistical parity difference and disparate impact against the reference group, and
    fairlearn's demographic parity difference and ratio.

    The reference is the privileged group when the job names one, else the group with the
    highest rate (so SPD ≤ 0 and DI ≤ 1 for every other group).
    """
    privileged = dict(privileged or {})
    report = {}
    for name, cols in views(sensitive):
        g = _known_groups(rates(table, cols, favorable, outcome))
        ref = _reference(g, cols, privileged)
        ref_rate = float(g.loc[ref, "rate"]) if ref is not None else float("nan")
        groups = {}
        for key, row in g.iterrows():
            rate = float(row["rate"])
            groups[key] = {
                "count": int(row["n"]),
                "weight": float(row["w"]),
                "base_rate": rate,
                "spd": rate - ref_rate,
                "di": _ratio(rate, ref_rate),
            }
        valid = g["rate"].dropna()
        others = [v for k, v in groups.items() if k != ref]
        report[name] = {
            "reference": ref,
            "groups": groups,
            "spd": _least([v["spd"] for v in others], default=0.0),
            "di": _least([v["di"] for v in others], default=1.0),
            "demographic_parity_difference": float(valid.max() - valid.min()) if len(valid) else 0.0,
            "demographic_parity_ratio": _ratio(float(valid.min()), float(valid.max())) if len(valid) else 1.0,
        }
    return report


def _least(values: list[float], default: float) -> float:
    """The smallest of the groups' figures, past those a group without weight leaves NaN:
    ``min`` kept a NaN that came first, so the headline depended on the groups' names."""
    present = [v for v in values if not np.isnan(v)]
    return min(present) if present else (float("nan") if values else default)


def _known_groups(g: pd.DataFrame) -> pd.DataFrame:
    """The groups of rates without ``<NA>`` in their name (a row missing a sensitive value
    is in no group to compare), unless that leaves none."""
    known = g[g.index.map(lambda k: MISSING not in k.split(GROUP_JOIN))]
    return known if len(known) else g


def _reference(g: pd.DataFrame, cols: Sequence[str], privileged: Mapping[str, str]):
    if g.empty:
        return None
    if all(c in privileged for c in cols):
        key = joint_name([_text(privileged[c]) for c in cols])
        if key in g.index:
            return key
    # Rates from float weight sums differ in their last bits with the partitioning: groups
    # whose rates tie (as reweighing or resampling makes them) took turns as the reference.
    return str(g["rate"].round(12).idxmax())  # a tie: the first group in order


def _ratio(a: float, b: float) -> float:
    if b == 0 or np.isnan(b) or np.isnan(a):
        return float("nan") if a != 0 else 1.0
    return float(a / b)


def equalized_odds(table: pd.DataFrame, sensitive: Sequence[str], favorable, prediction: str) -> dict:
    """fairlearn's equalized odds difference and ratio per view, from (group, y, ŷ) counts.

    Difference = max(TPR range, FPR range); ratio = min(TPR min/max, FPR min/max).
    """
    t = table.assign(_y=positive(table, favorable))
    out = {}
    for name, cols in views(sensitive):
        tpr = _known_groups(rates(t[t["_y"]], cols, favorable, prediction))["rate"].dropna()
        fpr = _known_groups(rates(t[~t["_y"]], cols, favorable, prediction))["rate"].dropna()
        out[name] = {
            "equalized_odds_difference": float(max(_span(tpr), _span(fpr))),
            "equalized_odds_ratio": float(min(_min_over_max(tpr), _min_over_max(fpr))),
            "true_positive_rate": {k: float(v) for k, v in tpr.items()},
            "false_positive_rate": {k: float(v) for k, v in fpr.items()},
        }
    return out


MIN_SKILL = 0.2  # (balanced accuracy - chance) / (1 - chance) below which a model is said to tell the classes apart little


def skill(balanced_accuracy: float, chance: float) -> float:
    """How far a model's balanced accuracy is from chance toward 1 (0: chance, 1: perfect);
    the audit's model and label_issues' warn below :data:`MIN_SKILL`."""
    return (balanced_accuracy - chance) / (1 - chance)


def prediction_skill(table: pd.DataFrame, favorable, prediction: str) -> dict:
    """Weighted accuracy and balanced accuracy of a model's predictions against the labels,
    from (y, ŷ) counts. Parity alone cannot tell a fair model from a useless one: a model
    that predicts the favourable outcome for every row has parity difference 0."""
    y = positive(table, favorable)
    hit = np.array([v == favorable for v in table[prediction]], dtype=bool) == y
    w = table["w"].to_numpy(dtype=np.float64)
    total, pos = w.sum(), w[y].sum()
    recall = [w[hit & y].sum() / pos if pos > 0 else np.nan, w[hit & ~y].sum() / (total - pos) if total > pos else np.nan]
    return {"accuracy": float(w[hit].sum() / total) if total > 0 else float("nan"),
            "balanced_accuracy": float(np.nanmean(recall)) if not np.isnan(recall).all() else float("nan")}


def _span(s: pd.Series) -> float:
    return float(s.max() - s.min()) if len(s) else 0.0


def _min_over_max(s: pd.Series) -> float:
    return _ratio(float(s.min()), float(s.max())) if len(s) else 1.0


# -- mitigation targets -----------------------------------------------------------------


def reweighing(table: pd.DataFrame, sensitive: Sequence[str], strength: float = 1.0) -> pd.DataFrame:
    """Kamiran & Calders: W(s, y) = P(s)·P(y) / P(s, y) per cell, from weight sums.

    ``s`` is the intersection of all sensitive columns, so every group × label cell ends
    up with the weight it would have if group and label were independent. With
    ``strength`` λ each group's label distribution moves λ of the way to the overall one
    instead (:func:`target_label_rates`): W(s, y) = P'(y | s) / P(y | s), which is
    Kamiran & Calders' weight at λ = 1 and keeps every group's total weight.
    """
    t = _cells(table, sensitive, "w", strength)
    t["factor"] = np.where(t["w"] > 0, t["target_rate"] / t["rate"].where(t["w"] > 0), 1.0)
    return t.drop(columns=["rate", "target_rate"])


def target_label_rates(rate: np.ndarray, overall: np.ndarray, strength: float) -> np.ndarray:
    """P'(y | s) = P(y | s) + λ·(P(y) − P(y | s)): λ = 0 keeps the data, 1 makes group and
    label independent, λ > 1 goes past parity (so a model that learns the rest of the
    bias from the features still ends up near parity). Raises if a rate would leave [0, 1]."""
    target = rate + strength * (overall - rate)
    if np.any(target < -1e-12) or np.any(target > 1 + 1e-12):
        raise ValueError(
            f"strength {strength:g} pushes a group's label rate outside [0, 1]; "
            f"the largest possible here is {max_strength(rate, overall):.3g}"
        )
    return np.clip(target, 0.0, 1.0)


def max_strength(rate: np.ndarray, overall: np.ndarray) -> float:
    """The largest λ for which every P'(y | s) stays in [0, 1]."""
    gap = overall - rate
    up = np.where(gap > 0, (1 - rate) / np.where(gap > 0, gap, 1), np.inf)
    down = np.where(gap < 0, rate / np.where(gap < 0, -gap, 1), np.inf)
    return float(min(up.min(initial=np.inf), down.min(initial=np.inf)))


def _cells(table: pd.DataFrame, sensitive: Sequence[str], by: str, strength: float = 1.0) -> pd.DataFrame:
    """Per (group, label) cell: ``rate`` = P(y | s) and ``target_rate`` = P'(y | s), from
    the ``by`` column (``w``: weight sums, ``n``: row counts)."""
    cols = list(sensitive)
    t = table.groupby([*cols, LABEL], sort=True, dropna=False)[["n", "w"]].sum().reset_index()
    # Weight sums added in the partitions' order differ in their last bits, and so did every
    # weight reweighing gave; rounded to 32 significant bits (whole sums below 2³² stay).
    t["w"] = round_bits(t["w"].to_numpy(dtype=np.float64), 32)
    total = t[by].sum()
    in_group = t.groupby(cols, dropna=False)[by].transform("sum")
    t["rate"] = t[by] / in_group.where(in_group > 0)
    overall = t.groupby(LABEL, dropna=False)[by].transform("sum") / total
    t["target_rate"] = target_label_rates(t["rate"].fillna(overall).to_numpy(), overall.to_numpy(), strength)
    return t


def resample_targets(table: pd.DataFrame, sensitive: Sequence[str], strength: float = 1.0) -> pd.DataFrame:
    """Kamiran & Calders sampling: each cell's size if group and label were independent,
    ``round(n_s · n_y / n)``, in rows (weights play no part in which rows exist). With
    ``strength`` λ, ``round(n_s · P'(y | s))`` (:func:`target_label_rates`)."""
    t = _cells(table, sensitive, "n", strength)
    t["expected"] = t.groupby(list(sensitive), dropna=False)["n"].transform("sum") * t["target_rate"]
    t["target"] = np.round(t["expected"]).astype(np.int64)
    return t.drop(columns=["rate", "target_rate"])


def massage_changes(table: pd.DataFrame, sensitive: Sequence[str], favorable, strength: float = 1.0) -> pd.DataFrame:
    """Per group, how many labels to flip so its favourable rate equals the overall rate.

    ``change > 0`` promotes that many negatives, ``< 0`` demotes positives. With two
    groups this is Kamiran & Calders' M = (|D|·|F+| − |F|·|D+|) / n, promoted in the
    deprived group and demoted in the favoured one, so the count of positives is kept.
    With ``strength`` λ each group's rate moves λ of the way (λ·M flips; past the overall
    rate for λ > 1). A λ that would flip more rows than a group has raises, as reweighing's
    and resampling's do (:func:`target_label_rates`): cut to the rows there were, the
    flips left the groups' rates nowhere near λ of the way (strength 5 on Adult by sex
    gave a disparate impact of 0.33, reversed).
    """
    cols = list(sensitive)
    t = table.assign(_pos=np.where(positive(table, favorable), table["n"], 0))
    g = t.groupby(cols, sort=True, dropna=False)[["n", "_pos"]].sum().reset_index()
    g = g.rename(columns={"_pos": "positives"})
    overall = g["positives"].sum() / g["n"].sum()
    target_label_rates((g["positives"] / g["n"]).to_numpy(dtype=np.float64), np.full(len(g), overall), strength)
    g["change"] = np.round(strength * (g["n"] * overall - g["positives"])).astype(np.int64)
    return g
