import numpy as np
import pandas as pd
import pytest

from dsbuild.kernels.units import UnitTable, convert_column, parse_quantity


def parse(text, target, factors=None):
    table = UnitTable(target, factors)
    return parse_quantity(text, table, table.target)


@pytest.mark.parametrize(
    "text, target, expected",
    [
        ("90 min", "min", 90.0),
        ("1.5h", "min", 90.0),
        ("1h 30min", "min", 90.0),
        ("2 days", "h", 48.0),
        ("90", "min", 90.0),
        ("3 kg", "g", 3000.0),
        ("4 lb", "kg", 1.81436948),
        ("72°F", "C", 22.2222222222),
        ("72 deg F", "C", 22.2222222222),
        ("100 C", "F", 212.0),
        ("300 K", "C", 26.85),
        ("5 ft 3 in", "cm", 160.02),
        ("180cm", "m", 1.8),
        ("2 m", "m", 2.0),
        ("1,500 m", "km", 1.5),
        ("3 dozen", "item", 36.0),
    ],
)
def test_parse_converts_to_target(text, target, expected):
    factors = {"dozen": 12} if target == "item" else None
    value, _, problem = parse(text, target, factors)
    assert problem is None
    assert value == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    "text, target, expected",
    [("5'11", "cm", 180.34), ("5ft11", "cm", 180.34), ("6’2”", "cm", 187.96), ("1m80", "cm", 180.0),
     ("1h30", "min", 90.0), ("11 st 2", "lb", 156.0), ("2 min 30", "s", 150.0)],
)
def test_as_people_write_them(text, target, expected):
    """Typographic primes, and a bare last number in the next smaller unit."""
    value, _, problem = parse(text, target)
    assert problem is None and value == pytest.approx(expected, rel=1e-9)
    assert parse("3 in 2", "cm")[2] == "no-unit"  # nothing smaller than an inch


def test_money_with_its_symbol_first_and_shares_in_percent():
    usd = UnitTable("USD", {"$": 1, "€": 1.08})
    assert [parse_quantity(v, usd, usd.target)[0] for v in ("$1,234.50", "-€3", "5 $", "1,234")] == pytest.approx([1234.5, -3.24, 5, 1234])
    assert parse_quantity("£5", usd, usd.target)[2] == "unknown-unit:£"
    assert parse("45%", "fraction")[0] == pytest.approx(0.45) and parse("250 bp", "%")[0] == pytest.approx(2.5)


def test_a_currency_code_before_its_amount():
    """German credit's amounts written ``DM 2,315`` were unparseable, though ``$2,315``
    and ``2,315 DM`` read: a code (EUR, CHF, Rs.) comes before the amount as often as a
    symbol does."""
    dm = UnitTable("DM", {"DM": 1, "EUR": 1.95583, "Rs": 0.02})
    values = ("DM 2,315", "DM2315", "EUR 12.50", "-EUR 3", "Rs. 500", "2,315 DM")
    assert [parse_quantity(v, dm, dm.target)[0] for v in values] == pytest.approx([2315, 2315, 24.447875, -5.86749, 10, 2315])
    assert parse_quantity("USD 5", dm, dm.target)[2] == "unknown-unit:USD"


def test_terms_parted_by_a_comma_or_and_and_a_sign_after_a_currency():
    """``2 days, 4 hours`` and ``1 hour and 30 minutes`` were unknown units ('days,',
    'hour and'), and ``EUR -3`` unparseable; numbers alone beside each other stay refused."""
    assert parse("2 days, 4 hours", "h")[0] == 52.0 and parse("1 hour and 30 minutes", "h")[0] == 1.5
    assert parse("1 yr, 6 mo", "month")[0] == 18.0 and parse("1h & 30m", "min")[0] == 90.0
    assert parse("180, 175", "cm")[2] == "unparseable" and parse("1,500 m", "km")[0] == 1.5
    eur = UnitTable("EUR", {"EUR": 1})
    assert parse_quantity("EUR -3", eur, eur.target)[0] == -3.0 and parse_quantity("-EUR -3", eur, eur.target)[2] == "unparseable"
    kg = UnitTable("kg")
    assert parse_quantity("1,5 kg, 300 g", kg, kg.target, decimal=",")[0] == pytest.approx(1.8)


def test_decimal_comma():
    table = UnitTable("kg")
    assert parse_quantity("70,5 kg", table, table.target, decimal=",")[0] == 70.5
    assert parse_quantity("1.000,5 g", table, table.target, decimal=",")[0] == pytest.approx(1.0005)
    assert parse_quantity("70,5 kg", table, table.target)[2] == "unparseable"
    assert parse_quantity("1,000 g", table, table.target)[0] == 1.0


def test_m_means_minutes_for_durations_and_metres_for_lengths():
    assert parse("2 m", "h")[0] == pytest.approx(2 / 60)
    assert parse("2 m", "cm")[0] == pytest.approx(200)


@pytest.mark.parametrize(
    "text, problem",
    [("abc", "no-number"), ("5 furlongs", "unknown-unit:furlongs"), ("1,5 m", "unparseable"), ("3 kg", "unknown-unit:kg")],
)
def test_problems_are_named(text, problem):
    value, changed, got = parse(text, "min")
    assert np.isnan(value) and not changed and got == problem


def test_changed_only_when_unit_differs_from_target():
    assert parse("90 min", "min")[1] is False
    assert parse("90 minutes", "min")[1] is False
    assert parse("1.5 h", "min")[1] is True


def test_unknown_target_unit_is_refused():
    with pytest.raises(ValueError, match="unknown unit 'parsec'; known"):
        UnitTable("parsec")
    with pytest.raises(ValueError, match=r"unknown unit 'celcius' \(did you mean 'celsius'\?\)"):
        UnitTable("celcius")


def test_a_declared_unit_is_also_read_in_its_plural():
    """German credit's durations written as '6 months' and '2 years' with factors
    {month: 1, year: 12} were unknown units, a third of the column rejected, while the
    built-in units read 'days' and 'hours'. A name that is no word keeps its own."""
    factors = {"month": 1, "year": 12, "yr": 12, "$": 1}
    assert parse("6 months", "month", factors) == (6.0, False, None)
    assert parse("2 years", "month", factors) == (24.0, True, None)
    assert parse("1 yrs", "month", factors) == (12.0, True, None)
    assert parse("3 mo", "month", factors) == (3.0, False, None)  # a built-in month now
    assert parse("2 years", "d", {"year": 365.25}) == (730.5, True, None)
    assert UnitTable("item", {"dozen": 12}).has("dozens") and not UnitTable("$", {"$": 1}).has("$s")


def test_m_in_a_column_of_months_is_months_and_beside_days_is_refused():
    """``12m`` in a column whose rule is in months was read as 12 minutes (0.0003
    months). Months and years are built in, and a duration's ``m`` is read by the
    column's scale: months beside months or years, minutes beside hours, minutes or
    seconds; beside days or weeks either could be meant, so it is refused by name."""
    assert parse("12m", "month") == (12.0, False, None) and parse("12 months", "mo") == (12.0, False, None)
    assert parse("1y 6m", "month")[0] == 18.0 and parse("2y6", "month")[0] == 30.0 and parse("36m", "year")[0] == 3.0
    assert parse("90m", "h")[0] == 1.5 and parse("1h 30m", "min")[0] == 90.0
    assert parse("12m", "d") == (pytest.approx(np.nan, nan_ok=True), False, "ambiguous-unit:m")
    assert parse("12m", "d", {"month": 30})[2] == "ambiguous-unit:m"
    assert parse("12 months", "d", {"month": 30})[0] == 360.0  # a declared month's plural is the declared one
    assert parse("12m", "d", {"m": 30})[0] == 360.0  # declared, it is no longer open
    assert parse("1 year", "d")[0] == 365.2425 and parse("12m", "wk")[2] == "ambiguous-unit:m"
    _, _, problem = convert_column(pd.Series([3.0]), UnitTable("d"), pd.Series(["m"]))
    assert problem[0] == "ambiguous-unit:m"


def test_custom_factor_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        UnitTable("kg", {"sack": -1})


def test_convert_column_uses_value_unit_then_unit_column_then_assume():
    values = pd.Series(["2 h", "30", None, "45", "x"], dtype="str")
    units = pd.Series(["min", "min", "h", None, None], dtype="str")
    out, changed, problem = convert_column(values, UnitTable("min"), units, assume="s")
    assert out[:2].tolist() == [120.0, 30.0]
    assert np.isnan(out[2]) and problem[2] is None
    assert out[3] == pytest.approx(0.75)
    assert changed.tolist() == [True, False, False, True, False]
    assert problem[4] == "no-number"


def test_numeric_values_with_unit_column():
    out, changed, problem = convert_column(
        pd.Series([1.0, 2.0, 3.0]), UnitTable("kg"), pd.Series(["g", "kg", "stone"])
    )
    assert out.tolist() == pytest.approx([0.001, 2.0, 19.05087954])
    assert changed.tolist() == [True, False, True]
    assert problem.tolist() == [None, None, None]


def test_unknown_unit_in_unit_column_is_a_problem():
    _, _, problem = convert_column(pd.Series([1.0]), UnitTable("kg"), pd.Series(["bushel"]))
    assert problem[0] == "unknown-unit:bushel"


def test_a_value_with_its_own_unit_does_not_need_the_unit_column():
    """The unit written in the value wins: ``5 lb`` beside a unit column saying ``bushel``
    was rejected as unknown-unit:bushel, though the column's unit was never needed."""
    out, changed, problem = convert_column(
        pd.Series(["5 lb", "3", "2 kg", "n/a"]), UnitTable("kg"), pd.Series(["bushel", "bushel", "bushel", "bushel"]))
    assert out[0] == pytest.approx(5 * 0.45359237) and out[2] == 2.0 and changed.tolist() == [True, False, False, False]
    assert problem.tolist() == [None, "unknown-unit:bushel", None, "no-number"]


@pytest.mark.parametrize(
    "text, target, decimal, expected",
    [("1 500 g", "g", ".", 1500.0), ("2 000 g", "g", ".", 2000.0), ("1 234,50 €", "EUR", ",", 1234.5),
     ("100 000 km", "km", ".", 100000.0), ("1\u202f234\u202f567,5 €", "EUR", ",", 1234567.5),
     ("12\u00a0500 g", "g", ".", 12500.0), ("1'234 g", "g", ".", 1234.0)],
)
def test_thousands_grouped_by_spaces_are_one_number(text, target, decimal, expected):
    """Each group was a term of its own, summed: ``1 500 g`` was 501 g."""
    table = UnitTable(target, {"€": 1} if target == "EUR" else None)
    value, _, problem = parse_quantity(text, table, table.target, decimal)
    assert problem is None and value == pytest.approx(expected)


@pytest.mark.parametrize("text, target", [("5 11", "cm"), ("180 175 g", "g"), ("5 11 in", "cm"), ("1234 567", "g"), ("1h 30 15", "min")])
def test_numbers_side_by_side_are_ambiguous_not_summed(text, target):
    """``5 11`` was 16 cm. Two readings (one number, two numbers) fit ``180 175``, so it is
    refused; ``100 000`` is one (no number is written alone with a leading 0)."""
    value, _, problem = parse(text, target)
    assert np.isnan(value) and problem == "ambiguous-numbers"


def test_blank_text_is_missing_not_a_problem():
    """A CSV reader makes a blank cell null; Parquet and JSON keep it. Both are missing."""
    out, changed, problem = convert_column(pd.Series(["72 kg", "", "  ", "\u00a0", None], dtype="str"), UnitTable("kg"))
    assert out[0] == 72.0 and np.isnan(out[1:]).all()
    assert problem.tolist() == [None] * 5 and not changed.any()
