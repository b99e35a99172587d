"""A stage's summary drawn by its shape (see the package's docstring), so a new stage gets a
readable section without touching the report."""

from __future__ import annotations

import contextvars
import html
import json
import re
from collections.abc import Callable

import numpy as np

from dsbuild.report import charts
from dsbuild.report.text import (
    MAX_TABLE_ROWS,
    first_numeric,
    first_of,
    fmt,
    integer,
    is_number,
    is_numeric_dict,
    is_scalar,
    is_short_list,
    more,
    natural_key,
    num,
    short,
    signed,
    table,
    title,
)

INHERITED_CUT: contextvars.ContextVar = contextvars.ContextVar("inherited_cut", default=None)
MAX_DEPTH = 8  # an audit by split has rates per group under 7 keys (by, split, test, model, equalized_odds, sex, true_positive_rate)
CUTOFF_KEYS = ("cutoff", "cut_off", "threshold", "cut", "limit")
COUNT_KEYS = ("counts", "count", "hist", "histogram", "frequencies")
EDGE_KEYS = ("edges", "bin_edges", "bins")


def class_counts(summary: dict) -> dict | None:
    """``{"before": {class: rows}, "after": {...}}`` from the summaries of stages that move classes.

    augment (``classes: {c: {rows, copies}}``), oversample (``counts`` and ``new_rows``) and
    sanitize (``rows_per_class`` and ``removed_per_class``).
    """
    if not isinstance(summary, dict):
        return None
    classes = summary.get("classes")
    if isinstance(classes, dict) and classes and all(isinstance(v, dict) and is_number(v.get("rows")) and is_number(v.get("copies")) for v in classes.values()):
        return _in_class_order({"before": {c: v["rows"] for c, v in classes.items()},
                                "after": {c: v["rows"] + v["copies"] for c, v in classes.items()}})
    for base, change, sign in (("counts", "new_rows", 1), ("rows_per_class", "removed_per_class", -1)):
        b, d = summary.get(base), summary.get(change)
        if is_numeric_dict(b) and isinstance(d, dict) and all(is_number(v) for v in d.values()):
            return _in_class_order({"before": b, "after": {c: n + sign * d.get(c, 0) for c, n in b.items()}})
    return None


def _in_class_order(pair: dict) -> dict:
    return {k: dict(sorted(v.items(), key=lambda kv: natural_key(str(kv[0])))) for k, v in pair.items()}


def render(value, path: list[str]) -> str:
    """HTML for any JSON-able summary value; ``path`` is the keys above it."""
    if len(path) >= MAX_DEPTH:
        return f"<pre>{html.escape(short(json.dumps(value, default=str), 2000))}</pre>"
    if isinstance(value, dict):
        return _render_dict(value, path)
    if isinstance(value, list):
        return _render_list(value, path)
    return f"<p>{html.escape(short(value))}</p>"


def _render_dict(d: dict, path: list[str]) -> str:
    if not d:
        return '<p class="muted">(empty)</p>'
    d = _nest_prefixed(d)
    cut = _cut_of(d)
    token = INHERITED_CUT.set(cut) if cut is not None else None
    try:
        return _render_dict_shapes(d, path)
    finally:
        if token is not None:
            INHERITED_CUT.reset(token)


def _render_dict_shapes(d: dict, path: list[str]) -> str:
    for special in SPECIAL:
        out = special(d, path)
        if out is not None:
            return out
    if is_numeric_dict(d) and len(d) >= 5:
        return charts.img(charts.bar_chart(d, ylabel=path[-1] if path else ""), " / ".join(path) or "values")
    records = _records_table(d)
    if records is not None:
        return records
    scalars = {k: v for k, v in d.items() if is_scalar(v) or is_short_list(v)}
    parts = []
    if scalars:
        parts.append(table(["", ""], [(k, fmt(v)) for k, v in scalars.items()], header=False))
    done = set(scalars)
    for k, v in d.items():
        if k in done:
            continue
        pair = _after_key(k, d)
        if pair is not None:
            parts.append(f"<h4>{html.escape(title(k.rsplit('_before', 1)[0] or k))}</h4>"
                         + _before_after({"before": v, "after": d[pair]}, [*path, k]))
            done.add(pair)
            continue
        parts.append(f"<h{min(4 + len(path), 6)}>{html.escape(title(k))}</h{min(4 + len(path), 6)}>" + render(v, [*path, k]))
    return "".join(parts)


def _render_list(items: list, path: list[str]) -> str:
    if not items:
        return '<p class="muted">(none)</p>'
    if all(isinstance(v, dict) and all(is_scalar(x) for x in v.values()) for v in items):
        columns = list(dict.fromkeys(k for v in items for k in v))
        rows = [[fmt(v.get(c)) for c in columns] for v in items[:MAX_TABLE_ROWS]]
        return table(columns, rows, numeric_from=first_numeric(items, columns)) + more(len(items))
    if all(is_number(v) for v in items):
        arr = np.asarray(items, dtype=float)
        text = (f"<p>{len(arr)} numbers: min {num(np.nanmin(arr))}, median {num(np.nanmedian(arr))}, "
                f"max {num(np.nanmax(arr))}</p>") if len(arr) > 12 else f"<p>{html.escape(fmt(items))}</p>"
        if len(arr) >= 20:
            fig, ax = charts.figure(7, 2.4)
            ax.hist(arr[np.isfinite(arr)], bins=min(40, max(10, len(arr) // 10)), color=charts.KEPT)
            charts.tidy(ax)
            text += charts.img(fig, " / ".join(path) or "values")
        return text
    if all(is_scalar(v) for v in items):
        return f"<p>{html.escape(fmt(items))}</p>"
    if len(items) > 1 and all(isinstance(r, list) and len(r) == len(items[0]) and all(map(is_number, r)) for r in items):
        return _heatmap(items, None, path) if len(items) * len(items[0]) > 16 else table(
            [""] * len(items[0]), [[num(v) for v in r] for r in items], numeric_from=0, header=False)
    return "".join(f"<h6>{i}</h6>{render(v, [*path, str(i)])}" for i, v in enumerate(items[:MAX_TABLE_ROWS])) + more(len(items))


def _parity_pair(d: dict, path: list[str]):
    """Fairness ``before``/``after``: base rate per group, per view, side by side."""
    if not (is_parity(d.get("before")) and is_parity(d.get("after"))):
        return None
    rest = {k: v for k, v in d.items() if k not in ("before", "after")}
    return _before_after({"before": d["before"], "after": d["after"]}, path) + (_render_dict(rest, path) if rest else "")


def _parity_single(d: dict, path: list[str]):
    """A fairness audit: base rate per group, per view."""
    if not is_parity(d):
        return None
    parts = []
    for view, v in d.items():
        groups = v["groups"]
        fig = charts.paired_bars({"base rate": {g: x.get("base_rate") for g, x in groups.items()}}, ylabel="base rate",
                           title=view, reference=v.get("reference"), colors=[charts.AFTER])
        parts.append(charts.img(fig, f"base rate per group of {view}"))
        parts.append(_parity_table({"": v}))
    return "".join(parts)


def _before_after(pair: dict, path: list[str]) -> str:
    before, after = pair["before"], pair["after"]
    if is_parity(before) and is_parity(after):
        parts = []
        for view in after:
            if view not in before:
                continue
            b, a = before[view]["groups"], after[view]["groups"]
            fig = charts.paired_bars(
                {"before": {g: x.get("base_rate") for g, x in b.items()}, "after": {g: x.get("base_rate") for g, x in a.items()}},
                ylabel="base rate (favourable)", title=view, reference=before[view].get("reference"),
            )
            parts.append(charts.img(fig, f"base rate per group of {view}, before and after"))
            parts.append(_parity_table({"before": before[view], "after": after[view]}))
        return "".join(parts)
    if is_numeric_dict(before) and is_numeric_dict(after):
        return charts.img(charts.paired_bars(pair, ylabel=path[-1] if path else ""), "before and after")
    return "<h5>before</h5>" + render(before, [*path, "before"]) + "<h5>after</h5>" + render(after, [*path, "after"])


def _parity_table(views: dict) -> str:
    rows = []
    for when, v in views.items():
        for g, x in v["groups"].items():
            ref = " (reference)" if g == v.get("reference") else ""
            rows.append([html.escape(str(c)) for c in (when, g + ref, integer(x.get("count")), num(x.get("base_rate")),
                                                       num(x.get("spd")), num(x.get("di")))])
        rows.append([html.escape(str(when)), "<b>overall</b>", "", "", f"<b>{num(v.get('spd'))}</b>", f"<b>{num(v.get('di'))}</b>"])
    head = ["", "group", "rows", "base rate", "parity difference", "disparate impact"]
    if all(not w for w in views):
        head, rows = head[1:], [r[1:] for r in rows]
    return table(head, rows, numeric_from=len(head) - 4, escape=False)


def _histogram(d: dict, path: list[str]):
    """``{counts, edges}`` (or a numeric-keyed dict of counts) with a cut-off line if one is given."""
    counts = first_of(d, COUNT_KEYS)
    edges = first_of(d, EDGE_KEYS)
    if not (isinstance(counts, list) and isinstance(edges, list) and all(map(is_number, counts)) and all(map(is_number, edges))):
        return None
    if len(edges) not in (len(counts), len(counts) + 1) or not counts:
        return None
    fig, ax = charts.figure(8, 2.8)
    counts_arr = np.asarray(counts, dtype=float)
    if len(edges) == len(counts) + 1:
        e = np.asarray(edges, dtype=float)
        ax.stairs(counts_arr, e, fill=True, color=charts.KEPT, alpha=0.85)
    else:
        ax.bar(np.asarray(edges, dtype=float), counts_arr, color=charts.KEPT)
    if counts_arr.max() > 50 * max(np.median(counts_arr[counts_arr > 0]) if (counts_arr > 0).any() else 1, 1):
        ax.set_yscale("log")
    cut = first_of(d, CUTOFF_KEYS)
    if not is_number(cut):
        cut = _inherited_cut(path)
    if is_number(cut):
        ax.axvline(float(cut), color=charts.REJECTED, lw=2, ls="--", label=f"cut-off {num(cut)}")
        ax.legend(frameon=False, fontsize=9)
    ax.set_ylabel("rows")
    ax.set_title(" / ".join(path[-2:]), fontsize=10, loc="left")
    charts.tidy(ax)
    rest = {k: v for k, v in d.items() if v is not counts and v is not edges}
    return charts.img(fig, " / ".join(path) or "histogram") + (_render_dict(rest, [*path, "·"]) if rest else "")


def _class_moves(d: dict, path: list[str]):
    """Rows per class before and after a stage that adds or removes rows by class."""
    pair = class_counts(d)
    if pair is None:
        return None
    used = {"classes"} if "classes" in d and not ("counts" in d or "rows_per_class" in d) else (
        {"counts", "new_rows"} if "new_rows" in d else {"rows_per_class", "removed_per_class"})
    rest = {k: v for k, v in d.items() if k not in used}
    rows = [(c, num(b), num(pair["after"].get(c)), signed(pair["after"].get(c, 0) - b)) for c, b in pair["before"].items()]
    moves = table(["class", "before", "after", "change"], rows[:MAX_TABLE_ROWS], numeric_from=1) + more(len(rows))
    note = '<p class="muted">Charted under <a href="#balance">Class balance</a>.</p>'
    return moves + note + (_render_dict(rest, path) if rest else "")


def _matrix(d: dict, path: list[str]):
    """A square count matrix with its row/column names (confusion matrix, confident joint)."""
    names = next((v for v in d.values() if isinstance(v, list) and v and all(isinstance(x, str) for x in v)), None)
    grid = next((v for v in d.values() if isinstance(v, list) and v and all(isinstance(r, list) for r in v)), None)
    if names is None or grid is None or len(grid) != len(names) or any(len(r) != len(names) or not all(map(is_number, r)) for r in grid):
        return None
    rest = {k: v for k, v in d.items() if v is not names and v is not grid}
    if len(names) > 12:
        key = next(k for k, v in d.items() if v is grid)
        return _heatmap(grid, names, [*path, key]) + (_render_dict(rest, path) if rest else "")
    axis = next((k for k, v in d.items() if v is names), "")
    top = max((max(r) for r in grid), default=0) or 1
    rows = []
    for name, r in zip(names, grid):
        cells = "".join(
            f'<td class="n" style="background: rgba(42,157,143,{0.08 + 0.6 * v / top:.2f})">{num(v)}</td>' for v in r
        )
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    head = f"<tr><th>{html.escape(str(axis))}</th>" + "".join(f'<th class="n">{html.escape(n)}</th>' for n in names) + "</tr>"
    return (f'<div class="scroll"><table class="matrix"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></div>'
            + (_render_dict(rest, path) if rest else ""))


def _heatmap(grid: list, names: list | None, path: list[str]) -> str:
    arr = np.asarray(grid, dtype=float)
    n = max(arr.shape)
    fig, ax = charts.figure(min(3 + 0.22 * n, 11), min(2.5 + 0.2 * n, 10))
    symmetric = np.nanmin(arr) < 0
    lim = np.nanmax(np.abs(arr)) or 1
    im = ax.imshow(arr, cmap="RdBu_r" if symmetric else "viridis", vmin=-lim if symmetric else None, vmax=lim if symmetric else None)
    if names is not None and n <= 60:
        ax.set_xticks(range(arr.shape[1]), names[: arr.shape[1]], rotation=90, fontsize=7)
        ax.set_yticks(range(arr.shape[0]), names[: arr.shape[0]], fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return charts.img(fig, " / ".join(path) or "matrix")


def _cut_of(d: dict):
    """A cut-off given in this dict: a number, or per key (class) numbers."""
    for k, v in d.items():
        name = str(k).lower()
        if name in CUTOFF_KEYS or "cut" in name or "threshold" in name:
            if is_number(v) or is_numeric_dict(v):
                return v
    return None


def _inherited_cut(path: list[str]):
    cut = INHERITED_CUT.get()
    if isinstance(cut, dict):
        return next((cut[p] for p in reversed(path) if p in cut), None)
    return cut


def _binned_counts(d: dict, path: list[str]):
    """A dict keyed by values or bins (cluster size ``2``, ``3-4``, ``65+``): bars in bin order."""
    if len(d) < 3 or not is_numeric_dict(d) or (path and "quantile" in path[-1]):
        return None
    lows = [BIN_KEY.match(str(k)) for k in d]
    if not all(lows):
        return None
    if not any(d.values()):
        return f'<p class="muted">{len(d)} bins, all zero.</p>'
    items = sorted(d.items(), key=lambda kv: float(BIN_KEY.match(str(kv[0])).group(1)))
    fig = charts.bar_chart(dict(items), ylabel="count", xlabel=path[-1].replace("_", " ") if path else "", sort=False, vertical=True)
    return charts.img(fig, " / ".join(path) or "histogram")


SPECIAL: list[Callable[[dict, list[str]], str | None]] = [
    _parity_pair, _parity_single, _class_moves, _histogram, _matrix, _binned_counts,
]


def _nest_prefixed(d: dict) -> dict:
    """``{"cluster_size:2": 5, "cluster_size:3-4": 1}`` → ``{"cluster_size": {"2": 5, "3-4": 1}}``."""
    prefixes = [str(k).split(":", 1)[0] for k in d if ":" in str(k)]
    shared = {p for p in prefixes if prefixes.count(p) >= 2 and p not in d}
    if not shared:
        return d
    out: dict = {}
    for k, v in d.items():
        head, _, tail = str(k).partition(":")
        if head in shared and tail:
            out.setdefault(head, {})[tail] = v
        else:
            out[k] = v
    return out


def _after_key(key: str, d: dict) -> str | None:
    if key.endswith("_before"):
        other = key[: -len("_before")] + "_after"
        return other if other in d else None
    return None


def is_parity(v) -> bool:
    return (
        isinstance(v, dict) and bool(v)
        and all(isinstance(x, dict) and isinstance(x.get("groups"), dict) and x["groups"]
                and all(isinstance(g, dict) and "base_rate" in g for g in x["groups"].values()) for x in v.values())
    )


def _records_table(d: dict) -> str | None:
    """A dict of same-shaped flat dicts (per column, per group) as one table."""
    if len(d) < 2 or not all(isinstance(v, dict) and v and all(is_scalar(x) or is_short_list(x) for x in v.values()) for v in d.values()):
        return None
    columns = list(dict.fromkeys(k for v in d.values() for k in v))
    if len(columns) > 12:
        return None
    rows = [[k, *(fmt(v.get(c)) for c in columns)] for k, v in list(d.items())[:MAX_TABLE_ROWS]]
    return table(["", *columns], rows, numeric_from=1 + first_numeric(list(d.values()), columns)) + more(len(d))


BIN_KEY = re.compile(r"^\s*[<>=≤≥\[(]*\s*(-?\d+(?:\.\d+)?)(?:\s*(?:-|–|,|\+)\s*(?:-?\d+(?:\.\d+)?)?[\])]?)?\s*$")
