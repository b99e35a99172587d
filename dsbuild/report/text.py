"""Text for the page: numbers, sizes and names as a reader wants them, and HTML tables."""

from __future__ import annotations

import html
import math
import re

import numpy as np

MAX_TABLE_ROWS = 25


def natural_key(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def table(head, rows, numeric_from: int | None = None, header: bool = True, escape: bool = True) -> str:
    def cell(i, v, tag):
        cls = ' class="n"' if numeric_from is not None and i >= numeric_from else ""
        return f"<{tag}{cls}>{html.escape(str(v)) if escape else v}</{tag}>"

    thead = "<thead><tr>" + "".join(cell(i, h, "th") for i, h in enumerate(head)) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(cell(i, v, "td") for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f'<div class="scroll"><table>{thead}<tbody>{body}</tbody></table></div>'


def more(n: int) -> str:
    return f'<p class="muted">… and {integer(n - MAX_TABLE_ROWS)} more</p>' if n > MAX_TABLE_ROWS else ""


def first_numeric(records: list[dict], columns: list[str]) -> int:
    """Index of the first column from which every column is numeric (right-aligned)."""
    numeric = [all(is_number(r.get(c)) or r.get(c) is None for r in records) for c in columns]
    i = len(columns)
    while i > 0 and numeric[i - 1]:
        i -= 1
    return i


def first_of(d: dict, keys: tuple[str, ...]):
    for k in keys:
        if k in d:
            return d[k]
    return None


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def is_short_list(v) -> bool:
    return isinstance(v, list) and len(v) <= 12 and all(is_scalar(x) for x in v)


def is_numeric_dict(v) -> bool:
    return isinstance(v, dict) and bool(v) and all(is_number(x) for x in v.values())


def fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else ("yes" if v else "no")
    if is_number(v):
        return num(v)
    if isinstance(v, list):
        return ", ".join(fmt(x) for x in v) if v else "—"
    return short(v)


def num(v) -> str:
    if v is None or not is_number(v):
        return "—" if v is None else str(v)
    if isinstance(v, int):
        return integer(v)
    if not math.isfinite(v):
        return "—" if math.isnan(v) else ("∞" if v > 0 else "−∞")
    if v == int(v) and abs(v) < 1e15:
        return integer(int(v))
    return f"{v:.4g}"


def span(values: list) -> str:
    lo, hi = min(values), max(values)
    return f"{num(lo)} each" if lo == hi else f"{num(lo)}–{num(hi)}"


def signed(v) -> str:
    return ("+" if is_number(v) and v > 0 else "") + num(v)


def integer(v) -> str:
    return f"{v:,}".replace(",", "\u202f") if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else ("—" if v is None else str(v))


def byte_size(n) -> str:
    n = float(n or 0)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def short(v, limit: int = 120) -> str:
    text = str(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def title(key: str) -> str:
    return str(key).replace("_", " ")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "stage"
