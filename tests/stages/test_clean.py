"""The cleaning rules on Adult: results, counters, rejects, bad rules, partition independence."""

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from skimage import data

from dsbuild.cleaning_eval import adult, clean_with_stages, inject_errors, score
from dsbuild.kernels.decode import encode_image
from dsbuild.kernels.robust import MAD_TO_SIGMA
from dsbuild.records import IMAGE_DTYPE
from dsbuild.stages import Roles, Shapes, StageContext, StageError
from dsbuild.stages.clean import (
    Canonicalize,
    Cast,
    Constraints,
    Impute,
    NormalizeUnits,
    Outliers,
    Ranges,
    Select,
    ValidateImages,
)
from dsbuild.testing import run_stage, stage_metrics

PARTS = (1, 3, 7)


@pytest.fixture(scope="module")
def sample():
    return adult(rows=3000, seed=1)


def raw_output(stage, frame, npartitions=3):
    stage.bind(StageContext(stage.name))
    ddf = dd.from_pandas(frame, npartitions=npartitions, sort=False)
    stage.check(ddf._meta)
    return stage.build(ddf, Shapes()).compute()


def same_for_any_partitioning(stage_factory, frame, roles=None):
    """Kept rows in ``frame``'s order, and rejects; equal to the last bit for 1, 3 and 7
    partitions (pandas' default tolerance had hidden a sketched mean that was not)."""
    results = [run_stage(stage_factory(), frame, npartitions=n, roles=roles) for n in PARTS]
    for kept, rejected in results[1:]:
        pd.testing.assert_frame_equal(kept, results[0][0], check_exact=True)
        pd.testing.assert_frame_equal(rejected, results[0][1], check_exact=True)
    kept, rejected = results[0]
    order = frame["id"][frame["id"].isin(kept["id"])]
    return kept.set_index("id").loc[order].reset_index(), rejected


# -- select ---------------------------------------------------------------------------


def test_select_rejects_rows_whole_while_kept_rows_lose_the_columns_it_removes():
    """A row select's where rejected lost the columns select also removed (rejects hold
    removed rows whole)."""
    frame = pd.DataFrame({"id": ["a", "b"], "age": [30, 12], "name": ["Ann", "Bob"], "note": ["x", "y"]})
    for options in ({"columns": ["age"]}, {"drop": ["name", "note"]}):
        kept, rejected = run_stage(Select(where=[{"column": "age", "op": ">=", "value": 18}], **options), frame)
        assert kept.columns.tolist() == ["id", "age"] and kept["id"].tolist() == ["a"]
        assert rejected[["id", "age", "name", "note"]].values.tolist() == [["b", 12, "Bob", "y"]]


def test_select_keeps_the_id_and_one_column_per_name():
    """A name listed twice in columns made two columns of one name, and the sink failed the
    run (Duplicate column names); drop: [id] removed the rows' id, which select always keeps."""
    frame = pd.DataFrame({"id": ["a", "b"], "age": [30, 12], "name": ["Ann", "Bob"]})
    kept, _ = run_stage(Select(columns=["name", "age", "name"]), frame)
    assert kept.columns.tolist() == ["id", "name", "age"]
    with pytest.raises(StageError, match="'id' names the rows.*cannot be dropped"):
        run_stage(Select(drop=["id"]), frame)


def test_rules_that_would_rewrite_the_id_are_refused():
    """normalize_units made ids 1.0, and canonicalize's case made 'a1' and 'A1' one id: the
    output held two rows of one id, which every later stage keys rows by."""
    frame = pd.DataFrame({"id": ["a1", "A1"], "v": [1.0, 2.0], "k": ["x", "x"]})
    for stage in (Canonicalize(columns={"id": {"case": "upper"}}), Cast(schema={"id": "str"}),
                  NormalizeUnits(columns={"id": {"to": "kg"}}), Impute(columns={"id": "mode"}),
                  Ranges(columns={"id": {"allowed": ["a1"], "action": "null"}}), Constraints(rules=["k -> id"])):
        with pytest.raises(StageError, match="'id' names the rows and is no data"):
            run_stage(stage, frame)
    kept, rejected = run_stage(Ranges(columns={"id": {"allowed": ["a1"]}}), frame)  # selecting rows by id is fine
    assert kept["id"].tolist() == ["a1"] and rejected["id"].tolist() == ["A1"]


def test_select_comparison_the_column_cannot_make_fails_its_check():
    """It failed later, building the graph, where the error lost the stage's place in the job."""
    stage = Select(where=[{"column": "age", "op": "==", "value": "30"}])
    stage.bind(StageContext("select"))
    with pytest.raises(StageError, match="cannot compare column 'age'"):
        stage.check(pd.DataFrame({"id": pd.Series([], dtype=str), "age": pd.Series([], dtype="Int64")}))


def test_select_matches_the_whole_value_and_contains_finds_a_part():
    frame = pd.DataFrame({"id": ["a", "b", "c"], "occupation": ["Prof-specialty", "Sales", None]})
    kept = {op: run_stage(Select(where=[{"column": "occupation", "op": op, "value": v}]), frame)[0]["id"].tolist()
            for op, v in (("matches", "Prof"), ("contains", "^Prof"))}
    assert kept == {"matches": [], "contains": ["a"]}


def test_select_compares_dictionary_date_and_zoned_time_columns():
    """Columns as a Parquet source gives them. Every comparison was computed for every
    condition, and an unordered categorical refuses ``<``: ``sex == F`` on a dictionary
    column failed. Dates and times come as text (JSON) or dates (YAML) from a job file."""
    import datetime

    import pyarrow as pa

    from dsbuild.io.sources import to_pandas
    from dsbuild.stages.clean import Select

    paris = datetime.timezone(datetime.timedelta(hours=1))
    frame = to_pandas(pa.table({
        "id": [f"r{i}" for i in range(4)],
        "sex": pa.array(["F", "M", None, "F"]).dictionary_encode(),
        "day": pa.array([datetime.date(2020, 1, d) for d in (1, 2, 3)] + [None]),
        "ts": pa.array([datetime.datetime(2021, 3, 1, h, tzinfo=paris) for h in (0, 1, 2, 3)], pa.timestamp("us", tz="Europe/Paris")),
        "n": pa.array([1, None, 3, 4], pa.int64()),
    }))
    conditions = [
        (("sex", "==", "F"), ["r0", "r3"]),
        (("sex", "!=", "F"), ["r1"]),
        (("day", ">=", "2020-01-02"), ["r1", "r2"]),
        (("day", "==", "2020-01-02"), ["r1"]),
        (("day", "in", ["2020-01-03"]), ["r2"]),
        (("day", "<", datetime.date(2020, 1, 2)), ["r0"]),
        (("ts", ">=", datetime.date(2021, 3, 1)), ["r0", "r1", "r2", "r3"]),
        (("ts", ">", "2021-03-01T01:30:00+01:00"), ["r2", "r3"]),
    ]
    for (column, op, value), want in conditions:
        kept, _ = run_stage(Select(where=[{"column": column, "op": op, "value": value}]), frame)
        assert kept["id"].tolist() == want, (column, op, value)
    for column, value in (("sex", "a"), ("n", "3"), ("day", "soon")):
        with pytest.raises(StageError, match=f"cannot compare column '{column}'"):
            run_stage(Select(where=[{"column": column, "op": "<" if column == "sex" else "==", "value": value}]), frame)


# -- normalize_units --------------------------------------------------------------------


def with_minutes(sample):
    frame = sample.copy()
    frame["hours-per-week"] = frame["hours-per-week"].astype("str")
    rows = frame.index[::5]
    frame.loc[rows, "hours-per-week"] = (sample.loc[rows, "hours-per-week"] * 60).astype(str) + " min"
    frame.loc[frame.index[1::50], "hours-per-week"] = "forty"
    return frame


def test_cast_int_rejects_inf_and_huge_numbers_and_reads_big_integers_exactly():
    """inf and 1e30 are whole numbers to a floor test: the cast failed the run
    (OverflowError) instead of rejecting the row. Text beside a value that is no number
    went through float64, and 9007199254740993 became ...992."""
    frame = pd.DataFrame({"id": list("abcdef"), "n": ["9007199254740993", "inf", "1e30", "oops", "3.0", "-inf"]})
    kept, rejected = run_stage(Cast(schema={"n": "int"}), frame, npartitions=1)
    assert kept["n"].dtype == "Int64" and kept["n"].tolist() == [9007199254740993, 3]
    assert dict(zip(rejected["id"], rejected["reason"])) == {
        "b": "cast:n:int=inf", "c": "cast:n:int=1e30", "d": "cast:n:int=oops", "f": "cast:n:int=-inf"}
    floats = pd.DataFrame({"id": list("abc"), "n": [1.0, np.inf, 2.5]})
    kept, rejected = run_stage(Cast(schema={"n": "int"}), floats, npartitions=1)
    assert kept["n"].tolist() == [1] and rejected["id"].tolist() == ["b", "c"]


def test_cast_reads_blank_text_as_missing_whatever_the_format():
    """A CSV reader makes a blank cell null, Parquet and JSONL keep it: cast rejected it
    (cast:x:float=), so the same table kept or lost the row by its format."""
    for to, first in (("int", "1"), ("float", "1.5"), ("bool", "yes"), ("datetime", "2024-01-02")):
        blank = pd.DataFrame({"id": list("abcd"), "x": [first, "", " \t", None]})
        kept, rejected = run_stage(Cast(schema={"x": to}), blank)
        assert rejected.empty, (to, rejected["reason"].tolist())
        assert kept["x"].isna().tolist() == [False, True, True, True]


def test_cast_bool_reads_numbers_and_datetime_refuses_them():
    """A 0/1 flag kept as floats (1.0, 0.0, NaN) was read as the text '1.0' and every row was
    rejected; numbers cast to datetime became nanoseconds after 1970 without a word."""
    frame = pd.DataFrame({"id": list("abcd"), "flag": [1.0, 0.0, np.nan, 2.0], "n": [1, 0, 2, 3]})
    kept, rejected = run_stage(Cast(schema={"flag": "bool"}), frame)
    assert kept["flag"].tolist() == [True, False, pd.NA] and rejected["reason"].tolist() == ["cast:flag:bool=2.0"]
    with pytest.raises(StageError, match="cast of 'n' to datetime: the column is int64, and numbers are no dates"):
        run_stage(Cast(schema={"n": "datetime"}), frame)


def test_cast_datetime_parses_each_value_alone_whatever_the_partitioning():
    """pandas takes its format from a partition's first value: dates and ISO timestamps in
    one column lost one kind or the other, depending on which came first in a partition."""
    values = ["2024-03-01", "2024-03-01T10:00:00Z", "03/04/2024", "13/04/2024", "1.12.2023", "Mar 5, 2024",
              " 2024-03-02 ", "2024-03-01T10:00:00+02:00", "yesterday", "2024-13-45", "1709251200", None]
    frame = pd.DataFrame({"id": [f"r{i:02d}" for i in range(len(values))], "when": values})
    runs = [run_stage(Cast(schema={"when": "datetime"}), frame, npartitions=n) for n in (1, 3, 5)]
    kept = [k.set_index("id")["when"].sort_index() for k, _ in runs]
    for other in kept[1:]:
        pd.testing.assert_series_equal(kept[0], other)
    utc = [pd.Timestamp(t, tz="UTC") for t in ("2024-03-01", "2024-03-01 10:00", "2024-04-03", "2024-04-13", "2023-12-01",
                                               "2024-03-05", "2024-03-02", "2024-03-01 08:00")]
    assert kept[0].iloc[:8].tolist() == utc and kept[0].iloc[8:].isna().all()
    assert sorted(runs[0][1]["reason"]) == ["cast:when:datetime=1709251200", "cast:when:datetime=2024-13-45", "cast:when:datetime=yesterday"]


def test_cast_datetime_reads_a_columns_slashed_dates_in_one_order():
    """Each value read alone, month first before day first, a column written day first
    came out mixed: 03/04/2024 was 4 March beside 13/04/2024's 13 April, 01/02/2024 was
    2 January. The column's values decide its order (counted over the data set), or the
    job does (day_first); where the column writes both, a date read as two days is rejected."""
    day_first = ["03/04/2024", "13/04/2024", "25/12/2023", "01/02/2024", "2024-05-06"]
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(5)], "d": day_first})
    for n in (1, 3):
        kept, rejected = run_stage(Cast(schema={"d": "datetime"}), frame, npartitions=n)
        assert rejected.empty and kept["d"].dt.strftime("%Y-%m-%d").tolist() == [
            "2024-04-03", "2024-04-13", "2023-12-25", "2024-02-01", "2024-05-06"]
    us = frame.assign(d=["03/04/2024", "04/13/2024", "12/25/2023", "01/02/2024", None])
    kept, _ = run_stage(Cast(schema={"d": "datetime"}), us)
    assert kept["d"].dt.strftime("%Y-%m-%d").tolist()[:4] == ["2024-03-04", "2024-04-13", "2023-12-25", "2024-01-02"]
    both = frame.assign(d=["03/04/2024", "04/13/2024", "13/04/2024", "05/05/2024", None])
    kept, rejected = run_stage(Cast(schema={"d": "datetime"}), both)
    assert rejected[["id", "reason"]].values.tolist() == [
        ["r0", "cast:d:datetime=03/04/2024 (day or month first? the column writes both)"]]
    kept, rejected = run_stage(Cast(schema={"d": "datetime"}, day_first=True), both)
    assert kept["d"].dt.strftime("%Y-%m-%d").tolist()[0] == "2024-04-03"
    assert rejected[["id", "reason"]].values.tolist() == [["r1", "cast:d:datetime=04/13/2024"]]


def test_cast_to_category_gives_a_categorical_per_partition(client, tmp_path):
    """``category`` gave text. Each partition holds its own categories (one has none but
    missing values), as a Parquet dictionary column does, and the output is a dictionary
    column that reads back with every value."""
    import pyarrow.parquet as pq

    import dsbuild

    colors = ["red", "blue"] * 30 + [""] * 60 + ["green", "red"] * 30
    (tmp_path / "in.csv").write_text("n,color\n" + "\n".join(f"{i},{c}" for i, c in enumerate(colors)) + "\n")
    kept, _ = run_stage(Cast(schema={"color": "category"}), pd.DataFrame({"id": range(180), "color": colors}).astype({"id": str}), npartitions=3)
    assert isinstance(kept["color"].dtype, pd.CategoricalDtype)
    dsbuild.run({
        "name": "cast-category", "seed": 0, "source": {"format": "csv", "path": str(tmp_path / "in.csv"), "blocksize": 300},
        "stages": [{"cast": {"schema": {"color": "category"}}}], "sink": {"path": str(tmp_path / "out"), "shard_rows": 50},
    }, client=client)
    shards = sorted((tmp_path / "out" / "data").glob("*.parquet"))
    assert len(shards) > 1 and all(str(pq.read_schema(f).field("color").type).startswith("dictionary<values=string") for f in shards)
    out = pd.read_parquet(tmp_path / "out" / "data")
    assert out["color"].astype(object).where(out["color"].notna(), "").tolist() == colors


def test_normalize_units_converts_minutes_and_rejects_unparseable(sample):
    frame = with_minutes(sample)
    kept, rejected = same_for_any_partitioning(lambda: NormalizeUnits(columns={"hours-per-week": {"to": "h"}}), frame)
    truth = sample.set_index("id")["hours-per-week"]
    assert (kept.set_index("id")["hours-per-week"] == truth.reindex(kept["id"])).all()
    assert len(rejected) == len(frame.index[1::50])
    assert set(rejected["reason"]) == {"units:hours-per-week=no-number:forty"}
    metrics = stage_metrics(raw_output(NormalizeUnits(columns={"hours-per-week": {"to": "h"}}), frame))
    assert metrics["converted:hours-per-week"] == len(frame.index[::5])
    assert metrics["unit_error:hours-per-week"] == len(rejected)


def test_normalize_units_from_unit_column_and_null_on_error():
    frame = pd.DataFrame(
        {"id": list("abcd"), "w": [2.0, 500.0, 3.0, 1.0], "w_unit": ["kg", "g", "lb", "bushel"]}
    )
    kept, rejected = run_stage(
        NormalizeUnits(columns={"w": {"to": "kg", "unit_column": "w_unit", "on_error": "null"}}), frame
    )
    assert rejected.empty
    assert kept["w"].iloc[:3].tolist() == pytest.approx([2.0, 0.5, 1.36077711])
    assert np.isnan(kept["w"].iloc[3])
    assert kept["w_unit"].tolist() == ["kg", "kg", "kg", "bushel"]


def test_normalize_units_refuses_unknown_units_and_columns(sample):
    with pytest.raises(ValidationError, match="unknown unit 'fortnights'"):
        NormalizeUnits(columns={"hours-per-week": {"to": "fortnights"}})
    with pytest.raises(ValidationError, match="assume: unit 'kg' is not a duration unit"):
        NormalizeUnits(columns={"hours-per-week": {"to": "h", "assume": "kg"}})
    with pytest.raises(StageError, match="'normalize_units'.*'hours_per_week'.*did you mean 'hours-per-week'"):
        run_stage(NormalizeUnits(columns={"hours_per_week": {"to": "h"}}), sample)


def test_normalize_units_rejects_keep_what_they_came_with():
    """Thousands are one number and numbers side by side are refused, not summed
    (``180 175 g`` was 355 g). A rejected row kept no trace of its value: the float column
    cannot hold ``n/a kg``, so the reason does; a number and its unit come back as they were."""
    frame = pd.DataFrame({
        "id": list("abcd"),
        "mass": ["1 500 g", "180 175 g", "n/a kg", "2 kg"],
        "w": [2.0, 3.0, 4.0, 5.0],
        "w_unit": ["g", "g", "g", "bushel"],
    })
    kept, rejected = run_stage(NormalizeUnits(columns={"mass": {"to": "g"}, "w": {"to": "kg", "unit_column": "w_unit"}}), frame)
    assert kept[["id", "mass", "w", "w_unit"]].values.tolist() == [["a", 1500.0, 0.002, "kg"]]
    assert dict(zip(rejected["id"], rejected["reason"])) == {
        "b": "units:mass=ambiguous-numbers:180 175 g", "c": "units:mass=no-number:n/a kg", "d": "units:w=unknown-unit:bushel:5.0"}
    assert rejected[["w", "w_unit"]].values.tolist() == [[3.0, "g"], [4.0, "g"], [5.0, "bushel"]]
    assert rejected["mass"].iloc[2] == 2000.0  # rejected for w; text cannot go back into a float column


def test_normalize_units_reads_m_as_months_in_a_months_rule():
    """A loan's term written ``12m``, ``2 years``, ``6 mo`` under ``to: month`` became
    0.0003 months for ``12m`` (minutes), and ``to: d`` rows with ``m`` were read alike."""
    frame = pd.DataFrame({"id": list("abcde"), "term": ["12m", "2 years", "6 mo", "18", "1y 6m"]})
    kept, rejected = run_stage(NormalizeUnits(columns={"term": {"to": "month"}}), frame)
    assert rejected.empty and kept["term"].tolist() == [12.0, 24.0, 6.0, 18.0, 18.0]
    kept, rejected = run_stage(NormalizeUnits(columns={"term": {"to": "d"}}), frame)
    assert dict(zip(rejected["id"], rejected["reason"])) == {"a": "units:term=ambiguous-unit:m:12m",
                                                             "e": "units:term=ambiguous-unit:m:1y 6m"}
    with pytest.raises(ValidationError, match="assume: 'm' is minutes or months beside d; write min or mo"):
        NormalizeUnits(columns={"term": {"to": "d", "assume": "m"}})


def test_normalize_units_rules_sharing_a_unit_column_read_the_units_as_they_came():
    """The first rule rewrote the shared unit column to its target (lb -> kg) before the
    second read it: 10 (lb) became 22.05 lb. Two targets cannot share one unit column."""
    frame = pd.DataFrame({"id": list("abc"), "w": [1.0, 2.0, 3.0], "h": [10.0, 20.0, 30.0], "u": ["lb", "kg", None]})
    kept, _ = run_stage(NormalizeUnits(columns={"w": {"to": "kg", "unit_column": "u"}, "h": {"to": "kg", "unit_column": "u"}}), frame)
    assert kept["h"].tolist() == pytest.approx([10 * 0.45359237, 20.0, 30.0])
    assert kept["w"].tolist() == pytest.approx([0.45359237, 2.0, 3.0]) and kept["u"].tolist() == ["kg"] * 3
    with pytest.raises(ValidationError, match="share unit_column 'u'"):
        NormalizeUnits(columns={"w": {"to": "kg", "unit_column": "u"}, "h": {"to": "lb", "unit_column": "u"}})


def test_blank_cells_are_missing_whatever_the_format():
    """CSV reads a blank cell as null, Parquet and JSONL keep it: canonicalize rejected it as
    an unknown value and normalize_units as no-number, so the output followed the format."""
    stages = {
        "sex": lambda: Canonicalize(columns={"sex": {"vocabulary": ["Male", "Female"], "unknown": "reject"}}),
        "weight": lambda: NormalizeUnits(columns={"weight": {"to": "kg"}}),
    }
    first = {"sex": "Male", "weight": "72 kg"}
    for column, make in stages.items():
        blank = pd.DataFrame({"id": list("abcd"), column: [first[column], "", " \t", None]})
        null = pd.DataFrame({"id": list("abcd"), column: [first[column], None, None, None]})
        (kept, rejected), (kept_null, _) = run_stage(make(), blank), run_stage(make(), null)
        assert rejected.empty and kept[column].isna().tolist() == [False, True, True, True]
        pd.testing.assert_frame_equal(kept, kept_null)


def test_impute_fills_a_float32_column_and_keeps_its_type():
    """A float32 column (Parquet features) failed the run: pandas refuses to set the float64
    mean 4.428571428571429 into it (Invalid value for dtype 'float32')."""
    frame = pd.DataFrame({"id": list("abcdefgh"), "f": np.array([1, 2, 3, 4, np.nan, 6, 7, 8], dtype=np.float32),
                          "g": pd.array([1, 2, 3, 4, None, 6, 7, 8], dtype="Float32")})
    kept, _ = run_stage(Impute(columns={"f": "mean", "g": "mode"}), frame)
    assert kept["f"].dtype == np.float32 and kept["f"].iloc[4] == np.float32(31 / 7)
    assert str(kept["g"].dtype) == "Float32" and kept["g"].iloc[4] == 1


def test_impute_mode_refuses_a_column_whose_values_rarely_repeat(monkeypatch):
    """The mode counts every distinct value, and the counts meet in one task: on a column of
    amounts or ids that is the whole column in one process (and its mode arbitrary)."""
    import dask

    from dsbuild.stages.clean import impute

    monkeypatch.setattr(impute, "MODE_MAX_DISTINCT", 50)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(200)], "amount": rng.normal(size=200).round(6),
                          "city": pd.array(rng.choice(["Oslo", "Lima", None], 200), dtype="string")})
    frame.loc[::7, "amount"] = np.nan
    with dask.config.set(scheduler="sync"):  # the patched limit holds in this process
        for npartitions in (1, 4):
            with pytest.raises(StageError, match="mode of 'amount' is over more than 50 distinct values.*use median or mean"):
                run_stage(Impute(columns={"amount": "mode"}), frame, npartitions=npartitions)
        kept, _ = run_stage(Impute(columns={"amount": "median", "city": "mode"}), frame, npartitions=4)
    assert kept["amount"].notna().all() and kept["city"].notna().all()


def test_impute_constant_the_column_cannot_hold_is_refused_before_the_run():
    """'unknown' for a float column and 5 for a text one failed the run in a worker; 2.5 for
    an integer column was rounded to 2."""
    frame = pd.DataFrame({"id": list("abc"), "f": [1.0, None, 3.0], "n": pd.array([1, None, 3], dtype="Int64"),
                          "s": pd.array(["x", None, "y"], dtype="string")})
    for column, value, problem in (("f", "unknown", "a number"), ("n", 2.5, "a whole number"), ("s", 5, "text")):
        with pytest.raises(StageError, match=f"constant .* for '{column}' needs to be {problem}"):
            run_stage(Impute(columns={column: {"strategy": "constant", "value": value}}), frame)
    kept, _ = run_stage(Impute(columns={"f": {"strategy": "constant", "value": 0}, "n": {"strategy": "constant", "value": 2.0},
                                        "s": {"strategy": "constant", "value": "?"}}), frame)
    assert kept[["f", "n", "s"]].iloc[1].tolist() == [0.0, 2, "?"]


def test_ranges_bound_that_is_not_a_number_is_refused():
    """min: .nan compared false with every value: the rule let everything through."""
    with pytest.raises(ValidationError, match="finite number"):
        Ranges(columns={"age": {"min": float("nan")}})


def test_ranges_takes_times_as_the_bounds_of_a_timestamp_column(tmp_path):
    """``min: 2021-03-02`` on a column of timestamps was "Input should be a valid number":
    dates in the future or before a system existed could not be ruled out. A bound is read
    in the column's zone, as its values are shown; a number for times (or a time for
    numbers) is refused before the run."""
    from dsbuild.job import load_job

    ts = pd.to_datetime(["2021-03-01 23:30", "2021-03-05 00:00", None, "2022-01-01 00:00"]).tz_localize("Europe/Oslo")
    frame = pd.DataFrame({"id": list("abcd"), "ts": ts, "n": [1, 2, 3, 4]})
    rule = {"min": "2021-03-02", "max": "2021-12-31"}
    kept, rejected = run_stage(Ranges(columns={"ts": rule}), frame, npartitions=2)
    assert kept["id"].tolist() == ["b", "c"] and rejected["reason"].tolist() == [
        "range:ts=2021-03-01 23:30:00+01:00", "range:ts=2022-01-01 00:00:00+01:00"]
    clipped, _ = run_stage(Ranges(columns={"ts": {**rule, "action": "clip"}}), frame)
    assert clipped["ts"].dtype == frame["ts"].dtype
    assert clipped["ts"].dt.strftime("%Y-%m-%d").tolist()[::3] == ["2021-03-02", "2021-12-31"]
    emptied, _ = run_stage(Ranges(columns={"ts": {"min": "2021-03-02T00:00:00+00:00", "action": "null"}}), frame)
    assert emptied["ts"].isna().tolist() == [True, False, True, False]
    for column, bound, says in (("n", "2021-03-02", "has times as bounds but the column is int64"),
                                ("ts", 3, "not numeric \\(give its bounds as times")):
        with pytest.raises(StageError, match=says):
            run_stage(Ranges(columns={column: {"min": bound}}), frame)
    with pytest.raises(ValidationError, match="one is a time, the other a number"):
        Ranges(columns={"ts": {"min": 1, "max": "2021-01-01"}})
    with pytest.raises(ValidationError, match="is above max"):  # a bound with a zone and one without compare
        Ranges(columns={"ts": {"min": "2022-01-01T00:00+00:00", "max": "2021-12-31"}})
    (tmp_path / "job.yaml").write_text("name: t\nsource: {format: sample, name: adult}\n"
                                       "stages:\n  - ranges: {columns: {ts: {min: 2021-03-02}}}\nsink: {path: out}\n")
    assert load_job(tmp_path / "job.yaml").resolved()["stages"][0]["ranges"]["columns"]["ts"]["min"] == "2021-03-02"  # as written


def test_select_and_ranges_read_a_time_alike():
    """A time without a zone is read in a zoned column's zone by both. On a column whose
    times have no zone, a time given with one was read apart: ranges dropped its zone
    (02:00+01:00 became 02:00, an hour off if the column is UTC), select failed with
    pandas' "Invalid comparison". Both refuse it now, saying how to write it."""
    ts = pd.to_datetime(["2021-03-01 23:30", "2021-03-02 00:30", "2021-03-02 01:30"])
    frame = pd.DataFrame({"id": list("abc"), "zoned": ts.tz_localize("Europe/Oslo"), "naive": ts})
    for column in ("zoned", "naive"):
        selected, _ = run_stage(Select(where=[{"column": column, "op": ">=", "value": "2021-03-02"}]), frame)
        ranged, _ = run_stage(Ranges(columns={column: {"min": "2021-03-02"}}), frame)
        assert selected["id"].tolist() == ranged["id"].tolist() == ["b", "c"], column
    says = "has a zone .* and the column's times have none: write it without one \\(2021-03-02T01:00:00\\)"
    with pytest.raises(StageError, match=f"cannot compare column 'naive'.*{says}"):
        run_stage(Select(where=[{"column": "naive", "op": ">=", "value": "2021-03-02T01:00+01:00"}]), frame)
    with pytest.raises(StageError, match=f"rule for 'naive': .*{says}"):
        run_stage(Ranges(columns={"naive": {"min": "2021-03-02T01:00+01:00"}}), frame)


def test_ranges_takes_dates_as_the_bounds_of_a_date_column():
    """A Parquet date column (dates, as objects, in pandas) took no time bounds: "the
    column is object, not timestamps (cast it to datetime first)", and a cast made it a
    UTC timestamp in the output, where select compares it with a date as it is. A bound
    with a time of day is refused: a date cannot be compared with it."""
    import datetime

    import pyarrow as pa

    from dsbuild.io.sources import to_pandas

    frame = to_pandas(pa.table({"id": list("abcd"), "day": pa.array([datetime.date(2020, 1, d) for d in (1, 2, 3)] + [None])}))
    kept, rejected = run_stage(Ranges(columns={"day": {"min": "2020-01-02"}}), frame)
    selected, _ = run_stage(Select(where=[{"column": "day", "op": ">=", "value": "2020-01-02"}]), frame)
    assert kept["id"].tolist() == ["b", "c", "d"] and selected["id"].tolist() == ["b", "c"]  # a missing date is impute's
    assert rejected["reason"].tolist() == ["range:day=2020-01-01"]
    clipped, _ = run_stage(Ranges(columns={"day": {"max": "2020-01-02", "action": "clip"}}), frame)
    assert clipped["day"].tolist() == [datetime.date(2020, 1, d) for d in (1, 2, 2)] + [None]
    emptied, _ = run_stage(Ranges(columns={"day": {"min": "2020-01-02", "action": "null"}}), frame)
    assert emptied["day"].isna().tolist() == [True, False, False, True]
    with pytest.raises(StageError, match="rule for 'day': 2020-01-02T10:00:00 is a time .* give a date \\(2020-01-02\\)"):
        run_stage(Ranges(columns={"day": {"min": "2020-01-02T10:00"}}), frame)


def test_ranges_allowed_values_of_another_kind_than_the_column_are_refused():
    """allowed: ['1', '2'] on an integer column (or [1, 2] on a text one) matched no value:
    every row was rejected as range:n=1, range:n=2, ..."""
    frame = pd.DataFrame({"id": list("abc"), "n": pd.array([1, 2, 3], dtype="Int64"), "s": pd.array(["1", "2", "x"], dtype="string")})
    for column, allowed in (("n", ["1", "2"]), ("s", [1, 2])):
        with pytest.raises(StageError, match=f"allowed values of '{column}' are .* no value would be allowed"):
            run_stage(Ranges(columns={column: {"allowed": allowed}}), frame)
    kept, rejected = run_stage(Ranges(columns={"n": {"allowed": [1, 2]}, "s": {"allowed": ["1", "2"]}}), frame)
    assert kept["id"].tolist() == ["a", "b"] and rejected["id"].tolist() == ["c"]


def test_ranges_allowed_dates_are_read_as_the_column_holds_them():
    """allowed: [2020-01-02] (a job file's date is its text) on a Parquet date or timestamp
    column matched no value: every row was rejected as range:day=..., where select's ``in``
    reads the same text as the column's date."""
    import datetime

    import pyarrow as pa

    from dsbuild.io.sources import to_pandas

    frame = to_pandas(pa.table({
        "id": list("abc"), "day": pa.array([datetime.date(2020, 1, d) for d in (1, 2, 3)]),
        "ts": pa.array([datetime.datetime(2020, 1, d, tzinfo=datetime.timezone.utc) for d in (1, 2, 3)], pa.timestamp("us", tz="UTC"))}))
    for column in ("day", "ts"):
        kept, _ = run_stage(Ranges(columns={column: {"allowed": ["2020-01-02", "2020-01-03"]}}), frame)
        selected, _ = run_stage(Select(where=[{"column": column, "op": "in", "value": ["2020-01-02", "2020-01-03"]}]), frame)
        assert kept["id"].tolist() == selected["id"].tolist() == ["b", "c"], column
    with pytest.raises(StageError, match="allowed values of 'ts' .* are not all its values' kind"):
        run_stage(Ranges(columns={"ts": {"allowed": ["soon"]}}), frame)


def test_blank_cells_are_missing_to_impute_and_ranges():
    """A blank cell from Parquet or JSONL was a value to impute (not filled, and the mode
    when common, so missing cells were filled with blanks) and outside ranges' allowed set
    (rejected as range:c=), where a CSV twin's null was filled and passed."""
    blank = pd.DataFrame({"id": list("abcdefg"), "c": ["", "", " ", "M", "M", "F", None]})
    kept, _ = run_stage(Impute(columns={"c": "mode"}), blank)
    assert kept["c"].tolist() == ["M"] * 5 + ["F", "M"]
    assert kept["c_imputed"].tolist() == [True, True, True, False, False, False, True]
    kept, rejected = run_stage(Ranges(columns={"c": {"allowed": ["M", "F"]}}), blank)
    assert rejected.empty and len(kept) == 7


# -- ranges -----------------------------------------------------------------------------


def test_ranges_null_clip_reject_and_allowed_sets(sample):
    frame = sample.copy()
    frame.loc[frame.index[::10], "age"] = 999
    rules = {
        "age": {"min": 17, "max": 90, "action": "null"},
        "hours-per-week": {"min": 10, "max": 60, "action": "clip"},
        "race": {"allowed": ["White", "Black"], "action": "reject"},
    }
    kept, rejected = same_for_any_partitioning(lambda: Ranges(columns=rules), frame)
    survivors = frame[frame["race"].isin(["White", "Black"])]
    assert len(kept) == len(survivors) and len(rejected) == len(frame) - len(survivors)
    assert rejected["reason"].str.startswith("range:race=").all()
    assert kept["age"].isna().sum() == (survivors["age"] == 999).sum()
    assert kept["age"].max() <= 90
    assert kept["hours-per-week"].between(10, 60).all() and kept["hours-per-week"].dtype == np.int64
    metrics = stage_metrics(raw_output(Ranges(columns=rules), frame))
    assert metrics["out_of_range:age"] == (frame["age"] == 999).sum()
    assert metrics["out_of_range:hours-per-week"] == (~frame["hours-per-week"].between(10, 60)).sum()


def test_ranges_clip_nullable_integers_to_a_fractional_bound():
    """Parquet integers with nulls arrive as Int64, which cannot hold 20.5: the clip failed."""
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(6)], "n": pd.array([3, None, 25, 80, 40, 20], dtype="Int64")})
    kept, _ = run_stage(Ranges(columns={"n": {"min": 20.5, "max": 60, "action": "clip"}}), frame, npartitions=2)
    assert kept["n"].dtype == np.float64 and kept["n"].tolist()[2:] == [25.0, 60.0, 40.0, 20.5]
    assert kept["n"].iloc[0] == 20.5 and np.isnan(kept["n"].iloc[1])


def test_ranges_on_text_points_at_cast_and_normalize_units():
    """A CSV column with '42 years' in it is text: the message said only 'cast it first',
    and a cast rejects every value with a unit."""
    frame = pd.DataFrame({"id": list("ab"), "age": ["42 years", "38"]})
    with pytest.raises(StageError, match="not numeric \\(cast it to float first; or, if its values carry units, 42 years "
                                         "or 40h, normalize_units reads them\\)"):
        run_stage(Ranges(columns={"age": {"min": 17}}), frame)


def test_ranges_clip_keeps_a_float32_column_float32():
    """A float32 column (a Parquet float) clipped to a bound with a fraction came out
    float64, and the output's schema changed for that column alone."""
    frame = pd.DataFrame({"id": list("abc"), "f": np.float32([1, 2, 3]), "g": pd.array([1, 2, None], dtype="Float32")})
    kept, _ = run_stage(Ranges(columns={"f": {"min": 2.5, "action": "clip"}, "g": {"max": 1.5, "action": "clip"}}), frame)
    assert kept["f"].dtype == np.float32 and kept["f"].tolist() == [2.5, 2.5, 3.0]
    assert str(kept["g"].dtype) == "Float32" and kept["g"].tolist()[:2] == [1.0, 1.5]


def test_null_actions_keep_integers_whole():
    """ranges and outliers with action null made an int64 column float64 (3 printed as 3.0,
    and an id-like count past 2**53 lost its last digits); they make it Int64 / UInt32."""
    big = 2**53 + 1
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(8)], "n": np.array([big, 1, 2, 3, 4, 5, 6, 1000], dtype=np.int64),
                          "u": np.arange(8, dtype=np.uint32)})
    kept, _ = run_stage(Ranges(columns={"n": {"max": 999, "action": "null"}, "u": {"max": 6, "action": "null"}}), frame, npartitions=3)
    assert str(kept["n"].dtype) == "Int64" and str(kept["u"].dtype) == "UInt32"
    assert kept["n"].isna().tolist() == [True] + [False] * 6 + [True] and kept["u"].isna().sum() == 1
    frame["n"] = np.array([big] + [10] * 7, dtype=np.int64)
    kept, _ = run_stage(Outliers(columns={"n": {"method": "mad", "action": "null"}}), frame.iloc[:, :2].assign(n=frame["n"] + np.arange(8)))
    assert str(kept["n"].dtype) == "Int64" and kept["n"].isna().tolist() == [True] + [False] * 7
    assert kept["n"].iloc[1] == 11


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"min": 90, "max": 17}, "min 90.0 is above max 17.0"),
        ({"allowed": [1], "action": "clip"}, "clip needs min or max"),
        ({"action": "null"}, "give min, max or allowed"),
    ],
)
def test_ranges_refuses_impossible_rules(rule, message):
    with pytest.raises(ValidationError, match=message) as err:
        Ranges(columns={"age": rule})
    assert "columns.age" in str(err.value)


def test_ranges_refuses_bounds_on_text(sample):
    with pytest.raises(StageError, match="'ranges'.*'sex' has min/max"):
        run_stage(Ranges(columns={"sex": {"min": 0}}), sample)


def test_rows_rejected_by_one_rule_keep_the_cells_another_changed(sample):
    """A row rejected for its age left with its hours already clipped: rejects hold removed
    rows as they came."""
    frame = sample.copy()
    frame.loc[frame.index[::100], "age"] = 999
    frame.loc[frame.index[::50], "hours-per-week"] = 99
    rules = {"hours-per-week": {"max": 60, "action": "clip"}, "age": {"max": 90}}
    kept, rejected = same_for_any_partitioning(lambda: Ranges(columns=rules), frame)
    assert len(rejected) == 30 and (rejected["hours-per-week"] == 99).all()
    assert (kept["hours-per-week"] <= 60).all() and (kept["hours-per-week"] == 60).sum() >= 30


# -- impute -----------------------------------------------------------------------------


def with_holes(sample):
    frame = sample.copy()
    frame["age"] = frame["age"].astype(float)
    frame.loc[frame.index[::7], "age"] = np.nan
    frame.loc[frame.index[3::11], "marital-status"] = np.nan
    return frame


def test_impute_median_by_group_and_mode_are_exact(sample):
    frame = with_holes(sample)
    rules = {"age": {"strategy": "median", "by": ["relationship"]}, "marital-status": "mode", "workclass": "mode"}
    kept, rejected = same_for_any_partitioning(lambda: Impute(columns=rules), frame)
    assert rejected.empty
    medians = frame.groupby("relationship")["age"].median()
    holes = frame["age"].isna().to_numpy()
    expected = frame.loc[holes, "relationship"].map(medians).to_numpy()
    assert np.array_equal(kept["age"].to_numpy()[holes], expected)
    assert kept["age_imputed"].to_numpy().tolist() == holes.tolist()
    mode = frame["marital-status"].mode().iloc[0]
    assert (kept.loc[frame["marital-status"].isna().to_numpy(), "marital-status"] == mode).all()
    assert kept["workclass"].notna().all()
    stage = Impute(columns=rules)
    metrics = stage_metrics(raw_output(stage, frame))
    assert metrics["imputed:age"] == holes.sum()
    assert stage.summary()["age"]["error"] == "exact"


def test_impute_by_two_columns_uses_each_combination(sample):
    frame = with_holes(sample)
    frame.loc[frame.index[5::13], "sex"] = np.nan
    kept, _ = same_for_any_partitioning(lambda: Impute(columns={"age": "median"}, by=["relationship", "sex"]), frame)
    holes = frame["age"].isna().to_numpy()
    medians = frame.groupby(["relationship", "sex"], dropna=False)["age"].transform("median").to_numpy()
    assert np.isnan(medians[holes]).sum() == 0 and frame["sex"][holes].isna().any()
    assert np.array_equal(kept["age"].to_numpy()[holes], medians[holes])


def test_impute_median_from_sketch_is_within_stated_error(sample):
    frame = sample.copy()
    frame["fnlwgt"] = frame["fnlwgt"].astype(float)
    frame.loc[frame.index[::9], "fnlwgt"] = np.nan
    kept, _ = same_for_any_partitioning(lambda: Impute(columns={"fnlwgt": "median"}, max_distinct=100, alpha=0.01), frame)
    values = np.sort(frame["fnlwgt"].dropna().to_numpy())
    lower_median = values[(len(values) - 1) // 2]
    filled = kept.loc[frame["fnlwgt"].isna().to_numpy(), "fnlwgt"].unique()
    assert len(filled) == 1 and abs(filled[0] - lower_median) <= 0.01 * lower_median
    stage = Impute(columns={"fnlwgt": "median"}, max_distinct=100, alpha=0.01)
    raw_output(stage, frame)
    assert stage.summary()["fnlwgt"]["error"] == "relative error <= 0.01 of the value at rank floor(q*(n-1))"


def test_impute_mean_from_sketch_is_the_same_at_any_partitioning(sample):
    """A sketched column's mean is a float sum in the partitions' order: the filled value
    differed in its last bits between 1, 3 and 7 partitions."""
    frame = sample.copy()
    frame["fnlwgt"] = np.random.default_rng(0).normal(size=len(frame)) * 7.3 + 0.1
    frame.loc[frame.index[::9], "fnlwgt"] = np.nan
    missing = frame.loc[frame["fnlwgt"].isna(), "id"]
    filled = set()
    for n in PARTS:
        kept, _ = run_stage(Impute(columns={"fnlwgt": "mean"}, max_distinct=100), frame, npartitions=n)
        filled |= set(kept.loc[kept["id"].isin(missing), "fnlwgt"])
    assert len(filled) == 1 and filled.pop() == pytest.approx(frame["fnlwgt"].mean(), rel=1e-9)


def test_impute_fills_each_type_with_a_value_of_that_type(client, tmp_path):
    """Parquet booleans, dates, decimals and dictionary columns (each file with its own
    categories) filled by their mode, and nullable integers by their mean: modes were
    counted by their text and filled as text (a boolean column failed, dates and decimals
    became strings), a mean failed in an integer column, and a mode missing from a file's
    categories could not be set."""
    import datetime
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    import dsbuild

    def file(k, sexes):
        hole = [i % 4 == k for i in range(12)]
        return pa.table({
            "flag": pa.array([None if h else i % 3 == 0 for i, h in enumerate(hole)]),
            "day": pa.array([None if h else datetime.date(2020, 1, 1 + i % 3 // 2) for i, h in enumerate(hole)]),
            "dec": pa.array([None if h else decimal.Decimal(i % 3 // 2) / 10 for i, h in enumerate(hole)], pa.decimal128(5, 2)),
            "sex": pa.array([None if h else sexes[i % len(sexes)] for i, h in enumerate(hole)]).dictionary_encode(),
            "n": pa.array([None if h else i % 3 // 2 for i, h in enumerate(hole)], pa.int64()),
        })

    (tmp_path / "in").mkdir()
    for k, sexes in enumerate([["M", "M", "F"], ["M"], ["F"]]):
        pq.write_table(file(k, sexes), tmp_path / "in" / f"p{k}.parquet")
    rules = {"flag": "mode", "day": "mode", "dec": "mode", "sex": "mode", "n": "mean"}
    dsbuild.run({
        "name": "impute-types", "seed": 0, "source": {"format": "parquet", "path": str(tmp_path / "in")},
        "stages": [{"impute": {"columns": rules}}], "sink": {"path": str(tmp_path / "out")},
    }, client=client)
    out = pd.read_parquet(tmp_path / "out" / "data").sort_values("id").reset_index(drop=True)
    source = pd.concat([pd.read_parquet(tmp_path / "in" / f"p{k}.parquet") for k in range(3)], ignore_index=True)
    source.index = [f"p{k}.parquet:{i}" for k in range(3) for i in range(12)]
    source = source.loc[out["id"]].reset_index(drop=True)
    filled = {"flag": False, "day": datetime.date(2020, 1, 1), "dec": decimal.Decimal("0.00"), "sex": "M", "n": 0}
    for column, value in filled.items():
        holes = source[column].isna().to_numpy()
        assert holes.any() and out[f"{column}_imputed"].tolist() == holes.tolist()
        assert out.loc[holes, column].map(type).eq(type(value)).all() and (out.loc[holes, column] == value).all(), column
        assert out.loc[~holes, column].astype(object).tolist() == source.loc[~holes, column].astype(object).tolist(), column
    schema = pq.read_schema(next((tmp_path / "out" / "data").glob("*.parquet")))
    assert [str(schema.field(c).type) for c in ("flag", "day", "n")] == ["bool", "date32[day]", "int64"]


def test_impute_fills_times_with_their_median_and_mean():
    """Timestamps (with a zone or not) and durations, as Parquet gives them: a median or
    mean was refused (needs a numeric column, it is datetime64[ns]), where pandas' own
    median of times fills them. The fill is the column's type, zone and unit."""
    start = pd.Timestamp("2021-03-01 12:00")
    times = [start + pd.Timedelta(hours=h) for h in (0, 1, 2, 10, 20)]
    frame = pd.DataFrame({
        "id": list("abcdefg"),
        "at": pd.Series(times + [None, None], dtype="datetime64[ns]"),
        "zoned": pd.Series(times + [None, None], dtype="datetime64[us]").dt.tz_localize("UTC").dt.tz_convert("Europe/Oslo"),
        "took": pd.Series([pd.Timedelta(seconds=s) for s in (1, 2, 3, 4, 6)] + [None, None], dtype="timedelta64[us]"),
    })
    kept, _ = run_stage(Impute(columns={"at": "median", "zoned": "median", "took": "mean"}), frame, npartitions=3)
    kept = kept.set_index("id")
    assert kept.loc["f", "at"] == frame["at"].median() == start + pd.Timedelta(hours=2)
    assert kept.loc["g", "zoned"] == frame["zoned"].median() and kept["zoned"].dtype == frame["zoned"].dtype
    assert kept.loc["f", "took"] == pd.Timedelta(seconds=3.2) and kept["took"].dtype == frame["took"].dtype
    assert kept["at"].dtype == frame["at"].dtype and kept.loc[list("abcde"), "at"].tolist() == times


def test_impute_refuses_median_of_text_and_unknown_group(sample):
    with pytest.raises(StageError, match="median of 'sex' needs a numeric column"):
        run_stage(Impute(columns={"sex": "median"}), sample)
    with pytest.raises(StageError, match="group column \\(by\\) 'gender'"):
        run_stage(Impute(columns={"age": "median"}, by=["gender"]), sample)
    with pytest.raises(ValidationError, match="constant needs a value"):
        Impute(columns={"age": {"strategy": "constant"}})


def test_impute_refuses_a_mean_over_infinities():
    """A column holding inf (a division by zero upstream) filled its missing cells with
    inf, or with NaN (inf - inf) that left them missing though marked imputed."""
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(6)], "w": [1, 2, np.inf, -np.inf, np.nan, np.nan]})
    with pytest.raises(StageError, match=r"the mean of 'w' is nan: the column holds infinite values; reject or clip"):
        run_stage(Impute(columns={"w": "mean"}), frame)
    with pytest.raises(StageError, match=r"the mean of 'w' is inf"):
        run_stage(Impute(columns={"w": "mean"}), frame.drop(index=[3]))
    kept, _ = run_stage(Impute(columns={"w": "median"}), frame)
    assert kept["w"].tolist()[4:] == [1.5, 1.5]


# -- canonicalize -----------------------------------------------------------------------


def test_canonicalize_maps_spellings_and_reports_unknown(sample):
    frame = sample.copy()
    frame.loc[frame.index[::4], "sex"] = frame.loc[frame.index[::4], "sex"].str.upper() + " "
    frame.loc[frame.index[1::9], "sex"] = frame.loc[frame.index[1::9], "sex"].str[0]
    frame.loc[frame.index[2::100], "sex"] = "unknown"
    rule = {"sex": {"vocabulary": ["Male", "Female"], "synonyms": {"Male": ["M"], "Female": ["F"]}, "unknown": "reject"}}
    kept, rejected = same_for_any_partitioning(lambda: Canonicalize(columns=rule), frame)
    assert set(kept["sex"]) == {"Male", "Female"}
    merged = kept.merge(sample[["id", "sex"]], on="id", suffixes=("", "_clean"))
    assert (merged["sex"] == merged["sex_clean"]).all()
    assert len(rejected) == len(frame.index[2::100])
    assert set(rejected["reason"]) == {"unknown-value:sex=unknown"}
    metrics = stage_metrics(raw_output(Canonicalize(columns=rule), frame))
    assert metrics["unknown:sex"] == len(rejected)
    assert metrics["canonicalized:sex"] == (frame["sex"] != sample["sex"]).sum() - len(rejected)
    frame.loc[frame.index[2::100], "sex"] = " UNKNOWN "
    _, rejected = run_stage(Canonicalize(columns=rule), frame)
    assert set(rejected["sex"]) == {" UNKNOWN "}  # as it came, not tidied


def test_canonicalize_keeps_a_categorical_column_categorical():
    """A Parquet dictionary column came out as plain text; a rejected row keeps its value."""
    df = pd.DataFrame({"id": [f"r{i}" for i in range(6)], "sex": pd.Categorical(["M", "male", "F", "x", " Female", None])})
    stage = Canonicalize(columns={"sex": {"synonyms": {"Male": ["M", "male"], "Female": ["F"]}, "unknown": "reject"}})
    for n in (1, 3):
        kept, rejected = run_stage(stage, df, npartitions=n)
        assert isinstance(kept["sex"].dtype, pd.CategoricalDtype)
        assert kept.set_index("id")["sex"].astype(object).to_dict() == {"r0": "Male", "r1": "Male", "r2": "Female", "r4": "Female", "r5": np.nan}
        assert rejected[["id", "sex"]].astype(object).values.tolist() == [["r3", "x"]]


def test_canonicalize_refuses_a_column_of_numbers():
    """It respells text: a column of codes came out as the text "1", "2"."""
    df = pd.DataFrame({"id": ["a", "b"], "code": [1, 2], "when": pd.to_datetime(["2020-01-01", "2021-01-01"])})
    for column in ("code", "when"):
        with pytest.raises(StageError, match=f"canonicalize respells text, and '{column}' holds"):
            run_stage(Canonicalize(columns={column: {}}), df)


def test_canonicalize_common_spelling_unifies_mixed_case_categories(sample):
    """Adult's workclass with rows written 'private' and ' PRIVATE ' kept three spellings
    of one class: without a vocabulary only trimming applied, and case: title made
    'Self-emp-not-inc' 'Self-Emp-Not-Inc'. case: common gives each value the spelling
    most rows use, counted over the data set, whatever the partitioning."""
    frame = sample.copy()
    frame.loc[frame.index[::50], "workclass"] = "private"
    frame.loc[frame.index[1::50], "workclass"] = " PRIVATE "
    frame.loc[frame.index[2::50], "race"] = "white"
    rules = {"workclass": {"case": "common"}, "race": {"case": "common", "vocabulary": ["White", "Black"]}}
    kept, rejected = same_for_any_partitioning(lambda: Canonicalize(columns=rules), frame)
    assert rejected.empty
    assert set(kept["workclass"].dropna()) == set(sample["workclass"].dropna())
    assert (kept["workclass"] == "Private").sum() == (frame["workclass"].str.strip().str.lower() == "private").sum()
    assert set(kept["race"]) == set(sample["race"])  # in the vocabulary, or the others' own spellings
    metrics = stage_metrics(raw_output(Canonicalize(columns=rules), frame))
    assert metrics["canonicalized:workclass"] == len(frame.index[::50]) + len(frame.index[1::50])


def test_canonicalize_common_refuses_free_text(monkeypatch):
    """case: common gathers every distinct spelling in one task: on free text, the column."""
    from dsbuild.stages.clean import canonicalize as module

    monkeypatch.setattr(module, "COMMON_MAX_DISTINCT", 5)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(12)], "note": [f"text {i}" for i in range(12)]})
    for n in (1, 3):
        with pytest.raises(StageError, match="case: common of 'note' counts more than 5 distinct spellings"):
            run_stage(Canonicalize(columns={"note": {"case": "common"}}), frame, npartitions=n)


def test_canonicalize_missing_spellings_become_missing_for_impute():
    """'N/A', '-' and '?' kept in a Parquet or JSON column (only a CSV reader's null values
    catch them) were categories of their own, which impute's mode never filled."""
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(7)],
                          "occupation": ["Sales", "N/A", " n/a ", "-", "?", "Tech-support", None]})
    rules = {"occupation": {"missing": ["N/A", "-", "?"]}}
    kept, rejected = run_stage(Canonicalize(columns=rules), frame)
    assert rejected.empty and kept["occupation"].isna().tolist() == [False, True, True, True, True, False, True]
    metrics = stage_metrics(raw_output(Canonicalize(columns=rules), frame))
    assert metrics["missing:occupation"] == 4 and metrics["canonicalized:occupation"] == 0
    with pytest.raises(ValidationError, match="missing: 'unknown' is also a value"):
        Canonicalize(columns={"sex": {"vocabulary": ["Male", "Unknown"], "missing": ["unknown"]}})


def test_canonicalize_refuses_ambiguous_table():
    with pytest.raises(ValidationError, match="would mean both"):
        Canonicalize(columns={"sex": {"vocabulary": ["Male", "male"]}})


# -- outliers ---------------------------------------------------------------------------


def test_outliers_mad_matches_numpy(sample):
    kept, _ = same_for_any_partitioning(lambda: Outliers(columns={"fnlwgt": {"threshold": 3.5}}), sample)
    x = sample["fnlwgt"].to_numpy(dtype=float)
    med = np.median(x)
    z = (x - med) / (MAD_TO_SIGMA * np.median(np.abs(x - med)))
    assert kept["fnlwgt_outlier"].tolist() == (np.abs(z) > 3.5).tolist()
    assert 0 < kept["fnlwgt_outlier"].sum() < len(sample) * 0.05


def test_outliers_iqr_per_class_rejects(sample):
    roles = Roles(label="income")
    kept, rejected = same_for_any_partitioning(
        lambda: Outliers(columns={"age": {"method": "iqr", "action": "reject"}}, per_class=True), sample, roles=roles
    )
    expected = []
    for _, g in sample.groupby("income"):
        q1, q3 = np.quantile(g["age"], [0.25, 0.75])
        expected += g.loc[(g["age"] < q1 - 1.5 * (q3 - q1)) | (g["age"] > q3 + 1.5 * (q3 - q1)), "id"].tolist()
    assert sorted(rejected["id"]) == sorted(expected) and len(expected) > 0
    assert len(kept) + len(rejected) == len(sample) and not kept["id"].isin(rejected["id"]).any()
    assert rejected["reason"].str.startswith("outlier:age=").all()


def test_outliers_iqr_of_zero_is_warned_about(sample):
    """Capital gains are 0 for most rows: Tukey's fences collapse to [0, 0] and every
    gain is an outlier. The rule does what it says; the run says why."""
    stage = Outliers(columns={"capital-gain": {"method": "iqr", "action": "reject"}, "age": {"method": "iqr"}})
    kept, rejected = run_stage(stage, sample)
    gains = int((sample["capital-gain"] != 0).sum())
    assert len(rejected) == gains > 0
    (note,) = stage.result_warnings({"metrics": {"outlier:capital-gain": gains}})
    assert "'capital-gain' has an interquartile range of 0 (half its values or more are 0" in note
    assert f"({gains:,} rows). method: mad falls back" in note


def test_outliers_from_sketch_do_not_depend_on_partitioning(sample):
    kept, _ = same_for_any_partitioning(
        lambda: Outliers(columns={"fnlwgt": {"action": "null"}}, max_distinct=200), sample
    )
    assert kept["fnlwgt"].isna().sum() == kept["fnlwgt_outlier"].sum() > 0


def test_outliers_refuses_text_and_per_class_without_label(sample):
    with pytest.raises(StageError, match="outliers of 'sex' need a numeric column"):
        run_stage(Outliers(columns={"sex": {}}), sample)
    with pytest.raises(StageError, match="per_class needs columns.label"):
        run_stage(Outliers(columns={"age": {}}, per_class=True), sample)


# -- constraints ------------------------------------------------------------------------


def with_fd_violations(sample, every=13):
    frame = sample.copy()
    rows = frame.index[::every]
    frame.loc[rows, "education-num"] = (frame.loc[rows, "education-num"] % 16) + 1
    return frame, rows


def test_impute_says_when_a_column_has_no_value_to_fill_from():
    """A column every cell of which is missing has no median or mode: impute filled nothing
    and the run said nothing."""
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(6)], "a": pd.array([None] * 6, dtype="Float64"),
                          "b": [1.0, None, 2.0, None, 3.0, None]})
    stage = Impute(columns={"a": "median", "b": "mean"})
    kept, _ = run_stage(stage, frame, npartitions=2)
    assert kept["a"].isna().all() and kept["b"].notna().all()
    notes = stage.result_warnings({"in": len(frame), "metrics": {}})
    assert len(notes) == 1 and "'a' has no value to take a median of (every cell is missing)" in notes[0]


def test_a_second_impute_keeps_the_first_ones_marks(client):
    """impute, outliers (action null), impute: the second impute wrote its own
    ``<col>_imputed`` over the first's, and the ages the first had filled read as observed."""
    from dsbuild.stages.shapes import Shapes

    frame = pd.DataFrame({"id": [f"r{i}" for i in range(8)], "age": [30.0, None, 40.0, 35.0, 300.0, 33.0, None, 38.0]})
    ddf = dd.from_pandas(frame, npartitions=2, sort=False)
    shapes = Shapes()
    for k, stage in enumerate((Impute(columns={"age": "median"}), Ranges(columns={"age": {"max": 120, "action": "null"}}),
                               Impute(columns={"age": "mean"}))):
        stage.bind(StageContext(f"{stage.name}#{k}"))
        stage.check(ddf._meta)
        ddf = stage.build(ddf, shapes)
    out = ddf.compute().set_index("id")
    assert out["age_imputed"].tolist() == [False, True, False, False, True, False, True, False]
    assert out["age"].notna().all()


def test_a_second_outliers_keeps_the_first_ones_marks(client):
    """outliers (action null) then outliers again on the column: the second wrote its own
    ``<col>_outlier`` over the first's, and the value the first had emptied read as no
    outlier, with nothing to say why it was missing."""
    from dsbuild.stages.shapes import Shapes

    frame = pd.DataFrame({"id": [f"r{i}" for i in range(10)],
                          "fnlwgt": [100.0, 102.0, 98.0, 101.0, 99.0, 10_000.0, 103.0, 97.0, 100.0, 150.0]})
    ddf = dd.from_pandas(frame, npartitions=2, sort=False)
    shapes = Shapes()
    for k, stage in enumerate((Outliers(columns={"fnlwgt": {"method": "mad", "threshold": 6, "action": "null"}}),
                               Outliers(columns={"fnlwgt": {"method": "mad", "threshold": 6}}))):
        stage.bind(StageContext(f"{stage.name}#{k}"))
        stage.check(ddf._meta)
        ddf = stage.build(ddf, shapes)
    out = ddf.compute().set_index("id")
    assert out["fnlwgt_outlier"].tolist() == [False] * 5 + [True] + [False] * 3 + [True]
    assert out["fnlwgt"].isna().tolist() == out["fnlwgt_outlier"].tolist()  # the first emptied both; the second found none


def test_constraints_repair_to_majority_records_old_values(client, sample):
    frame, rows = with_fd_violations(sample)
    outs = [
        raw_output(Constraints(rules=["education -> education-num"]), frame, npartitions=n)
        .sort_values("id")
        .reset_index(drop=True)
        for n in PARTS
    ]
    for out in outs[1:]:
        pd.testing.assert_frame_equal(out, outs[0])
    out = outs[0].set_index("id").loc[frame["id"]]
    assert out["_reason"].isna().all()
    assert (out["education-num"].to_numpy() == sample["education-num"].to_numpy()).all()
    repaired = out["education-num_repaired_from"]
    assert repaired.notna().sum() == len(rows)
    assert repaired.dropna().tolist() == frame.loc[rows, "education-num"].tolist()
    metrics = stage_metrics(outs[0])
    assert metrics["repaired:education->education-num"] == len(rows)
    assert metrics["fd_violation:education->education-num"] == len(rows)
    assert metrics["unresolved:education->education-num"] == 0
    stage = Constraints(rules=["education -> education-num"])
    raw_output(stage, frame)
    touched = frame.loc[rows, "education"].nunique()
    assert stage.summary()["education->education-num"] == {"conflicted_groups": touched, "groups_with_clear_majority": touched}


def test_constraints_merge_few_counts_by_a_tree_and_shuffle_many(client, sample, monkeypatch):
    """Every rule shuffled its counts on the determinant: a fixed cost for each pair of
    partitions, 10 of the Adult clean job's 21 s of worker CPU on 80 partitions. A few
    thousand combinations are merged by a tree; past PAIRS_IN_ONE_TASK they are still
    shuffled, with the same result."""
    from dsbuild.stages.shapes import Shapes
    from dsbuild.stages.clean import constraints

    frame, rows = with_fd_violations(sample)
    group = Shapes.group
    monkeypatch.setattr(Shapes, "group", lambda *a, **k: pytest.fail("shuffled a few counts"))
    stage = Constraints(rules=["education -> education-num", "occupation, sex -> workclass"])
    tree = raw_output(stage, frame, npartitions=7).sort_values("id").reset_index(drop=True)
    assert tree["education-num_repaired_from"].notna().sum() == len(rows)
    monkeypatch.setattr(Shapes, "group", group)
    monkeypatch.setattr(constraints, "PAIRS_IN_ONE_TASK", 20)
    again = Constraints(rules=["education -> education-num", "occupation, sex -> workclass"])
    shuffled = raw_output(again, frame, npartitions=7).sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(shuffled, tree)
    assert again.summary() == stage.summary()


def test_ranges_doubt_a_rule_most_rows_break(client, sample):
    """An allowed set spelled otherwise than the column (United States, where Adult writes
    United-States) rejected 96 % of the rows without a word."""
    for allowed, doubted in ((["United States", "Mexico"], True), (["United-States", "Mexico"], False)):
        stage = Ranges(columns={"native-country": {"allowed": allowed}, "age": {"min": 17, "max": 90}})
        out = raw_output(stage, sample)
        notes = stage.result_warnings({"in": len(sample), "metrics": stage_metrics(out)})
        assert len(notes) == doubted, notes
        assert all("outside the rule for 'native-country' and were rejected: check its allowed values" in n for n in notes)


def test_constraints_doubt_a_rule_the_data_does_not_follow(client, sample):
    """'occupation -> workclass' is no dependency of Adult, yet most occupations have a
    clear majority workclass: the rule repaired a fifth of the rows to it without a word.
    A dependency with a few entry errors is not doubted."""
    frame, _ = with_fd_violations(sample)
    for rule, doubted in (("occupation -> workclass", True), ("education -> education-num", False)):
        stage = Constraints(rules=[rule])
        out = raw_output(stage, frame)
        notes = stage.result_warnings({"in": len(frame), "metrics": stage_metrics(out)})
        assert len(notes) == doubted, notes
        assert all("rule 'occupation->workclass' disagrees with" in n for n in notes)


def test_constraints_reject_and_unresolved_groups(client):
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(8)],
            "zip": ["1", "1", "1", "2", "2", "3", "3", "3"],
            "city": ["A", "A", "B", "C", "D", "E", "E", "E"],
        }
    )
    out = raw_output(Constraints(rules=["zip -> city"], action="reject"), frame).sort_values("id")
    rejected = out[out["_reason"].notna()]
    assert rejected["id"].tolist() == ["r2"] and rejected["_reason"].tolist() == ["fd:zip->city=A"]
    metrics = stage_metrics(out)
    assert metrics["unresolved:zip->city"] == 2 and metrics["fd_violation:zip->city"] == 1
    assert metrics["repaired:zip->city"] == 0


def test_constraints_on_a_float_dependent(client):
    """A float dependent column (education-num cast to float) failed the task: pandas' NA
    does not fit a numpy float column."""
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(5)], "edu": ["HS", "HS", "HS", "BA", "BA"],
                          "num": [9.0, 9.0, 13.0, 13.0, 13.0]})
    out = raw_output(Constraints(rules=["edu -> num"]), frame).sort_values("id")
    assert out["num"].tolist() == [9.0, 9.0, 9.0, 13.0, 13.0]
    assert out["num_repaired_from"].tolist()[2] == 13.0 and out["num_repaired_from"].isna().sum() == 4
    out = raw_output(Constraints(rules=["edu -> num"], action="reject"), frame).sort_values("id")
    assert out["_reason"].tolist()[2] == "fd:edu->num=9.0" and out["_reason"].isna().sum() == 4


def test_constraints_refuses_bad_rules(sample):
    with pytest.raises(ValidationError, match=r"not a dependency; write it as 'a, b -> c' \["):
        Constraints(rules=["education = education-num"])
    with pytest.raises(ValidationError, match=r"'amount >= 0' is not a dependency.*A bound on a column is ranges'"):
        Constraints(rules=["amount >= 0"])  # a row check: said where it is written
    with pytest.raises(StageError, match="column of rule 'education->schooling' 'schooling'"):
        run_stage(Constraints(rules=["education -> schooling"]), sample)


# -- detection and repair of planted errors -----------------------------------------------


def test_planted_errors_are_found_and_fixed():
    clean = adult(rows=6000, seed=3)
    dirty, truth = inject_errors(clean, rate=0.02, seed=3)
    kept, rejected, metrics = clean_with_stages(dirty, npartitions=4)
    assert rejected.empty
    result = score(clean, dirty, kept, truth).set_index(["kind", "column"])
    exact = [("unit", "hours-per-week"), ("synonym", "sex"), ("synonym", "race"), ("fd", "education-num")]
    for key in exact:
        assert result.loc[key, "detect_precision"] >= 0.99 and result.loc[key, "detect_recall"] >= 0.99, key
        assert result.loc[key, "repair_precision"] >= 0.99 and result.loc[key, "repair_recall"] >= 0.99, key
    assert result.loc[("range", "age"), ["detect_precision", "detect_recall"]].min() >= 0.99
    assert result.loc[("outlier", "fnlwgt"), "detect_recall"] >= 0.99
    assert result.loc[("outlier", "fnlwgt"), "detect_precision"] >= 0.8
    assert result.loc[("missing", "marital-status"), "repair_recall"] >= 0.6
    age_spread = (clean["age"] - clean["age"].median()).abs().mean()
    assert result.loc[("range", "age"), "repair_mae"] < age_spread
    assert metrics["repaired:education->education-num"] == (truth["kind"] == "fd").sum()


def test_validate_images_decides_alike_on_hugging_face_image_structs(as_hf_images):
    """Struct cells (``datasets``' Image()) are checked on their bytes: same kept rows,
    rejects and reasons as a binary column; a path without bytes says so."""
    png, jpeg = encode_image(data.camera()[::8, ::8], "png"), encode_image(data.astronaut()[::8, ::8], "jpeg", 90)
    blobs = [png, jpeg, png[: len(png) // 2], b"not an image", b"", None, encode_image(data.moon()[:1, ::8], "png")]
    plain = pd.DataFrame({"id": [f"r{i}" for i in range(len(blobs))], "image": pd.Series(blobs, dtype=IMAGE_DTYPE)})
    results = {}
    for form, frame in (("bytes", plain), ("struct", as_hf_images(plain)), ("dicts", as_hf_images(plain, arrow=False))):
        kept, rejected = run_stage(ValidateImages(min_side=2), frame, roles=Roles(image="image"))
        results[form] = kept["id"].tolist(), kept["image_height"].tolist(), dict(zip(rejected["id"], rejected["reason"]))
    assert results["bytes"][0] == ["r0", "r1"]
    assert results["bytes"][2] == {"r2": "truncated", "r3": "decode-error:unknown-format", "r4": "empty-image",
                                   "r5": "empty-image", "r6": "too-small:1x64"}
    path_only = {"r5": "empty-image:path-only=r5.png"}
    for form in ("struct", "dicts"):
        assert results[form] == (results["bytes"][0], results["bytes"][1], {**results["bytes"][2], **path_only})


def test_validate_images_formats_by_any_name_and_from_the_bytes():
    """``formats: [png, jpg]`` rejected every JPEG as ``jpeg`` is not ``jpg``, and without an
    ``<image>_format`` column (Parquet, Hugging Face) formats were not checked at all. A
    rejected image keeps the size its source read from the header."""
    png, jpeg = encode_image(data.camera()[::8, ::8], "png"), encode_image(data.astronaut()[::8, ::8], "jpeg", 90)
    frame = pd.DataFrame({"id": ["a", "b", "c"], "image": pd.Series([png, jpeg, jpeg[:200]], dtype=IMAGE_DTYPE),
                          "image_height": pd.array([64, 64, 64], dtype="Int64")})
    kept, rejected = run_stage(ValidateImages(formats=["PNG", "jpg"]), frame, roles=Roles(image="image"))
    assert kept["id"].tolist() == ["a", "b"]
    assert ValidateImages(formats=[".JPG", "tif"]).options.formats == ["jpeg", "tiff"]
    kept, rejected = run_stage(ValidateImages(formats=["jpeg"]), frame, roles=Roles(image="image"))
    assert kept["id"].tolist() == ["b"]
    assert dict(zip(rejected["id"], rejected["reason"])) == {"a": "format-not-allowed:png", "c": "truncated"}
    assert rejected["image_height"].tolist() == [64, 64]
    with pytest.raises(ValidationError, match="unknown image format 'jpge'.*did you mean 'jpeg'"):
        ValidateImages(formats=["jpge"])


def test_validate_images_gives_a_rejected_image_no_made_up_size():
    """Sizes are nullable, as the image sources give them: a file that is not an image had
    height, width and channels 0 in the rejects (int64 could not hold the source's
    missing value), and every rejected image had 0 channels."""
    png = encode_image(data.camera()[::8, ::8], "png")
    frame = pd.DataFrame({"id": ["a", "b", "c"], "image": pd.Series([png, b"not an image", png[:100]], dtype=IMAGE_DTYPE),
                          "image_height": pd.array([64, None, 64], dtype="Int64")})
    kept, rejected = run_stage(ValidateImages(), frame, roles=Roles(image="image"))
    assert kept["image_height"].tolist() == [64] and kept["image_channels"].tolist() == [1]
    rejected = rejected.set_index("id")
    assert rejected.loc["c", "image_height"] == 64 and pd.isna(rejected.loc["b", "image_height"])
    assert rejected["image_width"].isna().all() and rejected["image_channels"].isna().all()


@pytest.mark.parametrize("on_cluster", [False, True])
def test_validate_images_rejects_jpegs_whose_scan_data_is_damaged(on_cluster, request):
    """A whole JPEG (every marker, its EOI) whose scan data was zeroed decoded to an image
    and was kept; libjpeg's warning names it, in the threads of one process (each decode
    told its own warning) as on the workers."""
    if on_cluster:
        request.getfixturevalue("client")
    good = [encode_image(np.roll(data.astronaut(), 37 * i, axis=1)[::2, ::2], "jpeg", 90) for i in range(8)]
    damaged = []
    for blob in good[:4]:
        sos = blob.index(b"\xff\xda")
        start, end = sos + 2 + int.from_bytes(blob[sos + 2 : sos + 4], "big"), blob.rindex(b"\xff\xd9")
        damaged.append(blob[:start] + bytes(end - start) + blob[end:])
    blobs = [b for pair in zip(good, damaged + good[4:]) for b in pair]
    frame = pd.DataFrame({"id": [f"r{i:02d}" for i in range(len(blobs))], "image": pd.Series(blobs, dtype=IMAGE_DTYPE)})
    kept, rejected = run_stage(ValidateImages(), frame, npartitions=4, roles=Roles(image="image"))
    assert rejected["id"].tolist() == ["r01", "r03", "r05", "r07"]
    assert set(rejected["reason"]) == {"corrupt-scan=premature end of data segment"}
    assert len(kept) == 12


def test_reasons_are_written_for_the_rejected_rows_alone():
    """A rule wrote a reason for every row of every partition, rejected or not (a third of
    canonicalize's time on 400-row partitions); the rejected rows still read theirs."""
    from dsbuild.stages.clean.cells import _details

    values = pd.Series([1.5, 2.0, 300.0, None], dtype="float64")
    assert _details("range:x", values, np.array([False, False, True, False])).tolist() == [None, None, "range:x=300.0", None]
    assert _details("range:x", values, np.zeros(4, dtype=bool)).tolist() == [None] * 4
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(6)], "x": [1, 5, 500, None, 7, -3]})
    kept, rejected = run_stage(Ranges(columns={"x": {"min": 0, "max": 100}}), frame, npartitions=2)
    assert kept["id"].tolist() == ["r0", "r1", "r3", "r4"]
    assert rejected.set_index("id")["reason"].to_dict() == {"r2": "range:x=500.0", "r5": "range:x=-3.0"}
