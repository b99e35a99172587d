"""Quantities with units: parse ``90 min``, ``1.5h``, ``3 kg``, ``72°F``, ``5 ft 3 in``,
``45%``, ``1 500 g`` and, with the rates given as factors, ``$1,234.50``, and convert them
to one canonical unit.

A unit is an affine map to its dimension's base unit (``base = value * factor +
offset``), so temperatures convert like everything else. Unit names are looked up
within the target's dimension, which resolves the one real clash (``m`` is metres for
lengths, minutes for durations); among durations, ``m`` is read by the target's scale
(:func:`_read_m_by_scale`). Parsing works on distinct strings only, so a column of
millions of rows with a few thousand spellings parses a few thousand times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Unit:
    name: str
    dimension: str
    factor: float
    offset: float = 0.0

    def to_base(self, value):
        return value * self.factor + self.offset

    def from_base(self, value):
        return (value - self.offset) / self.factor


def _units(dimension: str, table: dict[str, tuple[float, tuple[str, ...]]]) -> dict[str, Unit]:
    out = {}
    for name, (factor, aliases) in table.items():
        unit = Unit(name, dimension, factor)
        for alias in (name, *aliases):
            out[alias] = unit
    return out


_F_FACTOR = 5.0 / 9.0
_YEAR = 365.2425 * 86400.0
DIMENSIONS: dict[str, dict[str, Unit]] = {
    "duration": _units("duration", {
        "s": (1.0, ("sec", "secs", "second", "seconds")),
        "ms": (1e-3, ("msec", "millisecond", "milliseconds")),
        "min": (60.0, ("m", "mins", "minute", "minutes", "'")),
        "h": (3600.0, ("hr", "hrs", "hour", "hours")),
        "d": (86400.0, ("day", "days")),
        "wk": (604800.0, ("w", "week", "weeks")),
        "mo": (_YEAR / 12, ("month", "months", "mos", "mth", "mths")),  # the Gregorian mean, as numpy's M and Y
        "yr": (_YEAR, ("y", "yrs", "year", "years")),
    }),
    "length": _units("length", {
        "m": (1.0, ("metre", "metres", "meter", "meters")),
        "mm": (1e-3, ("millimetre", "millimetres", "millimeter", "millimeters")),
        "cm": (1e-2, ("centimetre", "centimetres", "centimeter", "centimeters")),
        "km": (1e3, ("kilometre", "kilometres", "kilometer", "kilometers")),
        "in": (0.0254, ("inch", "inches", '"')),
        "ft": (0.3048, ("foot", "feet", "'")),
        "yd": (0.9144, ("yard", "yards")),
        "mi": (1609.344, ("mile", "miles")),
    }),
    "mass": _units("mass", {
        "kg": (1.0, ("kgs", "kilo", "kilos", "kilogram", "kilograms")),
        "g": (1e-3, ("gr", "gram", "grams")),
        "mg": (1e-6, ("milligram", "milligrams")),
        "t": (1e3, ("tonne", "tonnes", "ton", "tons")),
        "lb": (0.45359237, ("lbs", "pound", "pounds")),
        "oz": (0.028349523125, ("ounce", "ounces")),
        "st": (6.35029318, ("stone", "stones")),
    }),
    "ratio": _units("ratio", {
        "fraction": (1.0, ("ratio",)),
        "%": (1e-2, ("percent", "pct", "per cent")),
        "‰": (1e-3, ("permille", "per mille")),
        "bp": (1e-4, ("bps", "basis point", "basis points")),
    }),
    "temperature": {
        **{a: Unit("C", "temperature", 1.0) for a in ("c", "celsius", "degc", "centigrade")},
        **{a: Unit("K", "temperature", 1.0, -273.15) for a in ("k", "kelvin", "kelvins")},
        **{a: Unit("F", "temperature", _F_FACTOR, -32.0 * _F_FACTOR) for a in ("f", "fahrenheit", "degf")},
    },
}

_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER = rf"[-+]?{_UNSIGNED}"
_UNIT = r"[^\d\s.,+-](?:[^\d]*[^\d\s])?"
_TERM = re.compile(rf"\s*({_NUMBER})\s*({_UNIT})?")
# A currency symbol or code written before its amount (``$1,234.50``, ``US$ 5``, ``-€3``,
# ``EUR 12.50``, ``DM 2,315``, ``Rs. 500``) is read as a unit after it; what it is worth
# comes from the rule's factors (``{$: 1}``). A code is 2-3 letters, capital first; the
# sign may stand on either side of it (``USD -3``, as accounting exports write it).
_CURRENCY_FIRST = re.compile(rf"^\s*([-+]?)\s*([A-Z]{{0,3}}[$€£¥₹₩₽₺]|[A-Z][A-Za-z]{{1,2}}\.?)\s*([-+]?)({_UNSIGNED})\s*$")
# Terms parted as people write them: ``2 days, 4 hours``, ``1 hour and 30 minutes``. Only
# after a unit: ``180, 175`` stays two numbers side by side, and ``1,500`` one number.
_TERM_SEPARATOR = re.compile(r"(?<=[^\d\s,.])\s*(?:,|\band\b|&)\s+(?=[-+]?[\d.])")
_WHOLE = re.compile(rf"^(?:\s*{_NUMBER}\s*(?:{_UNIT})?)+\s*$")
# Thousands grouped by a space (SI; French and Nordic writing use a no-break or thin space)
# or by an apostrophe (Swiss 1'234), one separator kind per number.
_GROUPED = re.compile(r"(?<![\d.,])\d{1,3}([ \u00a0\u202f\u2009'’])\d{3}(?:\1\d{3})*(?!\d)")


_PRIMES = str.maketrans({"’": "'", "′": "'", "‘": "'", "”": '"', "″": '"', "“": '"'})

# A bare number after a unit counts in the next smaller one, as people write it:
# 5'11 and 5ft11 (inches), 1m80 (cm), 1h30 (min), 11st2 (lb).
_SMALLER = {"ft": "in", "m": "cm", "km": "m", "h": "min", "min": "s", "d": "h", "st": "lb", "lb": "oz", "kg": "g", "yr": "mo"}


def unit_key(text: str) -> str:
    """The lookup form of a unit spelling: lower case, no degree sign, dots or spaces;
    typographic primes and quotes (``6’2”``, as word processors write them) as ' and "."""
    key = text.strip().lower().translate(_PRIMES).replace("°", "").replace("º", "").rstrip(".")
    key = re.sub(r"^deg(rees?)?\s*", "deg", key) if key.startswith("deg") and len(key) > 3 else key
    return re.sub(r"\s+", "", key)


def join_thousands(text: str, quote_is_unit: bool = False) -> str:
    """Digits grouped in thousands as one number: ``1 500 g`` is 1500 g, not 1 + 500 g.

    An apostrophe groups only where it is no unit of the column (``5'11`` is feet and
    inches). Two numbers a plain space parts (``180 175``) stay apart when they could be
    either: both three digits, the second not starting with 0 (``100 000`` is one number,
    as no one writes a number alone with a leading 0); :func:`parse_quantity` refuses them.
    """

    def join(match: re.Match) -> str:
        sep, groups = match.group(1), match.group(0).split(match.group(1))
        if sep in "'’" and quote_is_unit:
            return match.group(0)
        if sep == " " and len(groups[0]) == 3 and not groups[1].startswith("0"):
            return match.group(0)
        return "".join(groups)

    return _GROUPED.sub(join, text)


class UnitTable:
    """The units one column may carry: the target's dimension plus user-declared factors.

    ``factors`` maps a unit name to how many *target* units one of it is
    (``{dozen: 12}`` with target ``item``), which also allows a target that is no
    known unit at all (currencies, counts).
    """

    def __init__(self, target: str, factors: dict[str, float] | None = None):
        self.factors = {unit_key(k): float(v) for k, v in (factors or {}).items()}
        key = unit_key(target)
        homes = [d for d, table in DIMENSIONS.items() if key in table]
        exact = [d for d in homes if DIMENSIONS[d][key].name.lower() == key]
        self.dimension = (exact or homes or [None])[0]
        if self.dimension is None and key not in self.factors and not factors:
            import difflib

            close = difflib.get_close_matches(key, sorted(known_units()), n=1, cutoff=0.75)  # not parsec: sec
            raise ValueError(
                f"unknown unit {target!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; known: {', '.join(sorted(known_units()))} (or declare factors for a unit of your own)"
            )
        self.known = dict(DIMENSIONS[self.dimension]) if self.dimension else {}
        if self.dimension is None:
            self.known[key] = Unit(target, "custom", 1.0)
        self.target = self.known[key]
        self.ambiguous = _read_m_by_scale(self.known, self.target) if self.dimension == "duration" else set()
        self.ambiguous -= set(self.factors)
        for name, factor in self.factors.items():
            if factor <= 0 or not np.isfinite(factor):
                raise ValueError(f"factor for unit {name!r} must be a positive number, got {factor}")
            if factor == 1.0 and self.known.get(name) == self.target:  # {month: 1} beside to: month
                continue
            base = self.target.to_base(factor) - self.target.to_base(0.0)
            self.known[name] = Unit(name, self.target.dimension, base)
        for name in [*self.factors, *([key] if self.dimension is None else [])]:
            if _plural(name) not in self.factors:  # a declared month's months are its, not the built-in's
                self.known[_plural(name)] = self.known[name]

    def unit(self, text: str) -> Unit | None:
        return self.known.get(unit_key(text))

    def has(self, text: str) -> bool:
        return unit_key(text) in self.known

    def problem(self, text: str) -> str:
        """Why a unit spelling converts to nothing: one the column's scale leaves open
        (``m`` beside days), or one it does not know."""
        return f"{'ambiguous' if unit_key(text) in self.ambiguous else 'unknown'}-unit:{text}"

    def convert(self, value: np.ndarray, unit: Unit) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if unit == self.target:
            return value
        scale = unit.factor / self.target.factor
        shift = (unit.offset - self.target.offset) / self.target.factor
        return value * scale + shift if shift else value * scale


def _read_m_by_scale(known: dict[str, Unit], target: Unit) -> set[str]:
    """Read a duration's ``m`` as its column means it, in ``known``; the spellings left open.

    ``m`` was always minutes, so ``12m`` in a column of months (a loan's term, a child's
    age) became 12 minutes. A column counted in months or years writes months that way;
    one in hours, minutes or seconds, minutes; in days or weeks it could be either, and
    a row that writes it is rejected as ``ambiguous-unit:m`` rather than guessed.
    """
    if target.name in ("mo", "yr"):
        known["m"] = known["mo"]
    elif target.name in ("d", "wk"):
        del known["m"]
        return {"m"}
    return set()


def _plural(name: str) -> str:
    """A declared unit's plural, which the built-in units list beside their names: with
    ``factors: {year: 12}``, ``2 years`` was an unknown unit (a third of a column of
    durations in months and years rejected). A name that is no word keeps its own."""
    return f"{name}s" if name.isalpha() and len(name) > 1 and not name.endswith("s") else name


def parse_quantity(
    text: str, table: UnitTable, default: Unit | None, decimal: str = "."
) -> tuple[float, bool, str | None]:
    """(value in the target unit, unit differed from target, problem or None).

    A compound quantity (``1h 30min``, ``5 ft 3 in``) is the sum of its terms; a bare
    number takes ``default`` (None means a bare number is a problem), but a last bare
    number after a unit counts in the next smaller unit (``5'11``, ``1m80``); terms may be
    parted by a comma or ``and`` after a unit (``2 days, 4 hours``). Any other bare number
    beside another number (``5 11``, ``180 175 g``) is ``ambiguous-numbers``: summing them
    was a silent guess. Digits grouped in thousands are one number
    (:func:`join_thousands`). ``decimal=","`` reads ``1,80 m`` and ``1.000,5 g`` as European
    writing does. Blank text is a missing value: NaN and no problem.
    """
    if not text.strip():
        return np.nan, False, None
    text = _TERM_SEPARATOR.sub(" ", text)
    if decimal == ",":
        text = text.replace(".", "\0").replace(",", ".").replace("\0", ",")
    text = join_thousands(text, quote_is_unit=table.has("'"))
    text = _CURRENCY_FIRST.sub(r"\1\3\4 \2", text)
    if not _WHOLE.match(text):
        return np.nan, False, "unparseable" if re.search(r"\d", text) else "no-number"
    terms = []
    found = _TERM.findall(text)
    for i, (number, unit_text) in enumerate(found):
        if unit_text:
            unit = table.unit(unit_text)
        elif len(found) == 1:
            unit = default
        elif i == len(found) - 1 and found[i - 1][1]:
            smaller = _SMALLER.get(terms[-1][1].name)
            unit = table.unit(smaller) if smaller else None
        else:
            return np.nan, False, "ambiguous-numbers"
        if unit is None:
            return np.nan, False, table.problem(unit_text) if unit_text else "no-unit"
        terms.append((float(number.replace(",", "")), unit))
    changed = any(unit != table.target for _, unit in terms)
    if len(terms) == 1:
        magnitude, unit = terms[0]
        return float(table.convert(magnitude, unit)), changed, None
    if table.target.dimension == "temperature":
        return np.nan, False, "compound-temperature"
    base = sum(magnitude * unit.factor for magnitude, unit in terms)
    return float(table.target.from_base(base)), changed, None


def convert_column(
    values: pd.Series,
    table: UnitTable,
    unit_column: pd.Series | None = None,
    assume: str | None = None,
    decimal: str = ".",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values in the target unit, changed, problem) for a column of numbers or strings.

    A unit written in the value wins; otherwise the row's ``unit_column`` entry; otherwise
    ``assume`` (default: the target unit). ``problem`` holds None or why a present value
    did not convert; missing values, blank text among them (a CSV reader makes it null,
    Parquet and JSON keep it), stay missing and are no problem.
    """
    n = len(values)
    default = table.unit(assume) if assume is not None else table.target
    if unit_column is not None:
        unit_codes, unit_names = pd.factorize(unit_column.astype("str").str.strip().fillna(""))
    else:
        unit_codes, unit_names = np.zeros(n, dtype=np.int64), np.array([""] if n else [], dtype=object)
    present = values.notna().to_numpy()
    out = np.full(n, np.nan)
    changed = np.zeros(n, dtype=bool)
    problem = np.full(n, None, dtype=object)
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    for code, name in enumerate(unit_names):
        rows = unit_codes == code
        fallback = table.unit(name) if name else default
        if fallback is None and numeric:
            problem[rows] = table.problem(name)
            continue
        if numeric:
            out[rows] = table.convert(values.to_numpy(dtype=np.float64, na_value=np.nan)[rows], fallback)
            changed[rows] = fallback != table.target
        else:
            codes, uniques = pd.factorize(values if len(unit_names) == 1 else values[rows])
            parsed = [parse_quantity(str(u), table, fallback, decimal) for u in uniques]
            if fallback is None and name:  # a value with a unit of its own does not need the row's
                parsed = [(v, c, table.problem(name) if p == "no-unit" else p) for v, c, p in parsed]
            out[rows] = np.array([p[0] for p in parsed] + [np.nan], dtype=np.float64)[codes]
            changed[rows] = np.array([p[1] for p in parsed] + [False], dtype=bool)[codes]
            problem[rows] = np.array([p[2] for p in parsed] + [None], dtype=object)[codes]
    out[~present] = np.nan
    changed &= present
    problem[~present] = None
    return out, changed, problem


def known_units() -> set[str]:
    return {alias for table in DIMENSIONS.values() for alias in table}
