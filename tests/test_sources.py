"""Sources: every row gets a stable id; rows that cannot be parsed are marked, not lost."""

import codecs
import gzip
import json
import re
import tracemalloc

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from dsbuild.io.sources import RAW, SourceError, read_source
from dsbuild.io.sources.text import MAX_BLOCKS
from dsbuild.kernels.decode import decode_image, encode_image
from dsbuild.stages.base import REJECT


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


def read(spec) -> pd.DataFrame:
    return read_source(spec).frame.compute()


def test_csv_ids_are_row_numbers_across_blocks(tmp_path):
    lines = ["a,b,c"] + [f"{i},{i * 0.5},s{i}" for i in range(30_000)]
    (tmp_path / "x.csv").write_text("\n".join(lines) + "\n")
    src = read_source({"format": "csv", "path": str(tmp_path / "x.csv"), "blocksize": 100_000})
    assert src.frame.npartitions > 3
    df = src.frame.compute()
    assert len(df) == 30_000 and df[REJECT].isna().all()
    row = df.set_index("id").loc["x.csv:12345"]
    assert row["a"] == 12345 and row["c"] == "s12345"
    assert str(df["a"].dtype) == "Int64" and df["b"].dtype == np.float64


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_small_files_share_partitions_up_to_the_blocksize(tmp_path, fmt):
    """A folder of many small files: a partition per file made every stage's tasks and the
    sink's files per file (2,000 files of 50 rows: 36 s, against pandas' 0.8 s). A large
    file is still cut into blocks of its own."""

    def line(k: int, i: int, bad) -> str:
        return f"{k},{i},{bad}\n" if fmt == "csv" else f'{{"k": {k}, "i": {i}, "bad": {json.dumps(bad)}}}\n'

    folder = tmp_path / "parts"
    folder.mkdir()
    head = "k,i,bad\n" if fmt == "csv" else ""
    for k in range(10, 50):  # two digits everywhere: files of one size
        (folder / f"f{k}.{fmt}").write_text(head + "".join(line(k, i, "x" if (k, i) == (17, 13) else i) for i in range(10, 35)))
    (folder / f"z.{fmt}").write_text(head + "".join(line(99, i, i) for i in range(1000, 3000)))
    size, big = (folder / f"f10.{fmt}").stat().st_size, (folder / f"z.{fmt}").stat().st_size
    spec = {"format": fmt, "path": str(folder), "blocksize": 10 * size + 5, "infer_bytes": 200}
    src = read_source(spec)
    assert src.frame.npartitions == 4 + -(-big // (10 * size + 5))  # 40 small files ten a partition, then z's blocks
    df = src.frame.compute()
    assert len(df) == 40 * 25 + 2000 and df["id"].is_unique
    assert df.loc[df["id"] == f"f17.{fmt}:3", REJECT].notna().all() and df[REJECT].notna().sum() == 1
    assert df.loc[df["id"] == f"f22.{fmt}:4", ["k", "i"]].values.tolist() == [[22, 14]]
    one_each = read({**spec, "blocksize": size - 1})  # a partition per file
    pd.testing.assert_frame_equal(df.reset_index(drop=True), one_each.reset_index(drop=True))


def test_csv_raw_text_of_a_rejected_row_of_a_crlf_file_has_no_carriage_return(tmp_path):
    lines = ["x,y"] + [f"{i},{i}" for i in range(3000)] + ["oops,3"]
    (tmp_path / "w.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    df = read({"format": "csv", "path": str(tmp_path / "w.csv"), "infer_bytes": 8_000})  # 'oops' is past the typing sample
    assert df.loc[df[REJECT].notna(), RAW].tolist() == ["oops,3"]


def test_jsonl_raw_text_of_a_rejected_line_of_a_crlf_file_has_no_carriage_return(tmp_path):
    (tmp_path / "w.jsonl").write_bytes(b'{"a": 1}\r\n[1, 2]\r\n{"a": 3\r\n{"a": "x"}\r\n')
    df = read({"format": "jsonl", "path": str(tmp_path / "w.jsonl")})
    assert df.loc[df[REJECT].notna(), RAW].tolist() == ["[1, 2]", '{"a": 3', '{"a": "x"}']


def test_csv_line_longer_than_the_blocksize(tmp_path):
    """Blocks that lie inside one long line hold no record: they failed with Arrow's
    'Empty CSV file'."""
    (tmp_path / "t.csv").write_text("key,text\na,short\nb," + "lorem ipsum " * 1000 + "\nc,end\n")
    src = read_source({"format": "csv", "path": str(tmp_path / "t.csv"), "blocksize": 2000})
    assert src.frame.npartitions > 3
    df = src.frame.compute()
    assert df["id"].tolist() == ["t.csv:0", "t.csv:1", "t.csv:2"] and df["text"].str.len().tolist() == [5, 12000, 3]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_blocksize_making_too_many_blocks_is_refused(tmp_path, fmt):
    """blocksize: 1 listed one block per byte and never started."""
    rows = [{"a": i, "b": "x" * 20} for i in range(5_000)]
    path = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SourceError, match=r"source.blocksize: 1 bytes cuts 1 file\(s\) of [\d,]+ bytes into [\d,]+ blocks") as e:
        read_source({"format": fmt, "path": str(path), "blocksize": 1})
    least = int(re.search(r"take a blocksize of ([\d,]+) or more", str(e.value))[1].replace(",", ""))
    size = path.stat().st_size
    assert -(-size // least) <= MAX_BLOCKS < -(-size // (least // 2))  # the least power of two that is enough


def test_csv_types_do_not_depend_on_the_blocksize(tmp_path):
    """Types came from the first block: with small blocks, a column of whole numbers that
    turns fractional later was typed int and its later rows rejected; with large ones, not."""
    lines = ["a,b"] + [f"{i},{i if i < 2000 else i + 0.5}" for i in range(4000)]
    (tmp_path / "x.csv").write_text("\n".join(lines) + "\n")
    small, large = (read({"format": "csv", "path": str(tmp_path / "x.csv"), "blocksize": size}) for size in (8_000, 10**6))
    assert small["b"].dtype == large["b"].dtype == np.float64 and small[REJECT].isna().all()
    pd.testing.assert_frame_equal(small.sort_values("a").reset_index(drop=True), large.sort_values("a").reset_index(drop=True))


def test_csv_bad_rows_are_marked_with_their_row_and_text(tmp_path):
    lines = ["a,b,c"] + [f"{i},{i * 0.5},s{i}" for i in range(20_000)]
    lines[15_001] = "15000,not-a-number,s"  # data row 15000: wrong type, beyond the inference sample
    lines[17_001] = "1,2,3,4"  # data row 17000: too many fields
    (tmp_path / "x.csv").write_text("\n".join(lines) + "\n")
    df = read({"format": "csv", "path": str(tmp_path / "x.csv"), "blocksize": 50_000, "infer_bytes": 50_000})
    assert len(df) == 20_000
    bad = df[df[REJECT].notna()].set_index("id")
    assert bad.loc["x.csv:15000", REJECT] == "type:b=not-a-number"
    assert bad.loc["x.csv:15000", RAW] == "15000,not-a-number,s"
    assert bad.loc["x.csv:17000", REJECT] == "csv:fields=expected 3, got 4"
    assert bad.loc["x.csv:17000", RAW] == "1,2,3,4"
    assert len(bad) == 2


def test_csv_integer_column_with_inf_or_a_huge_number_past_the_sample_rejects_the_row(tmp_path):
    """'inf' and '1e30' are numbers equal to their floor: they passed the whole-number test
    and Arrow then failed the run converting them to int64."""
    lines = ["a,b"] + [f"{i},{i}" for i in range(50)] + ["50,inf", "51,1e30", "52,-inf", "53,3.0"]
    (tmp_path / "x.csv").write_text("\n".join(lines) + "\n")
    df = read({"format": "csv", "path": str(tmp_path / "x.csv"), "infer_bytes": 100})
    assert len(df) == 54 and str(df["b"].dtype) == "Int64"
    bad = df[df[REJECT].notna()].set_index("id")[REJECT].to_dict()
    assert bad == {"x.csv:50": "type:b=inf", "x.csv:51": "type:b=1e30", "x.csv:52": "type:b=-inf"}
    assert df.set_index("id").loc["x.csv:53", "b"] == 3


def test_csv_large_integers_in_a_block_with_a_bad_value_are_not_rounded(tmp_path):
    """A block with a value that does not fit is converted by hand; its integers went
    through float64 and every one above 2**53 came out rounded (...993 became ...992)."""
    big = 2**53 + 1
    lines = ["a,b"] + [f"{i},{big + 2 * i}" for i in range(20)] + ["20,oops", f"21,{2**63 - 1}", f"22,{2**63}"]
    (tmp_path / "x.csv").write_text("\n".join(lines) + "\n")
    df = read({"format": "csv", "path": str(tmp_path / "x.csv"), "infer_bytes": 200}).set_index("id")
    assert str(df["b"].dtype) == "Int64"
    assert [int(df.loc[f"x.csv:{i}", "b"]) for i in range(20)] == [big + 2 * i for i in range(20)]
    assert int(df.loc["x.csv:21", "b"]) == 2**63 - 1
    assert df[REJECT].dropna().to_dict() == {"x.csv:20": "type:b=oops", "x.csv:22": f"type:b={2**63}"}


def test_csv_header_name_quoted_around_the_separator_is_one_column(tmp_path):
    """The header was split on every separator, quotes or not: 'Weight, kg' made two
    columns, and every row was rejected as csv:fields=expected 4, got 3."""
    (tmp_path / "x.csv").write_text('id,"Weight, kg", "say ""hi""",age\n1,"1,5",a,30\n2,2,b,40\n')
    df = read({"format": "csv", "path": str(tmp_path / "x.csv")})
    assert list(df.columns[:4]) == ["id", "Weight, kg", 'say "hi"', "age"]
    assert df[REJECT].isna().all() and df["Weight, kg"].tolist() == ["1,5", "2"] and df["age"].tolist() == [30, 40]


def test_csv_without_header_whose_lines_never_have_the_named_columns_names_the_separator(tmp_path):
    """A space-separated file (German credit) read with column_names and no sep: every row
    was rejected as csv:fields=expected 3, got 1 and the run succeeded with nothing kept.
    A title line before rows that fit is still only a rejected row."""
    (tmp_path / "g.data").write_text("A11 6 1169\nA12 48 5951\n")
    spec = {"format": "csv", "path": str(tmp_path / "g.data"), "header": False, "column_names": ["a", "b", "c"]}
    with pytest.raises(SourceError, match="g.data: column_names names 3 columns.*have 1 field.*source.sep"):
        read_source(spec)
    assert read(spec | {"sep": " "})["b"].tolist() == [6, 48]
    (tmp_path / "t.csv").write_text("|1x3 Cross validator\n1,2,3\n4,5,6\n")
    df = read(spec | {"path": str(tmp_path / "t.csv")})
    assert len(df) == 3 and df[REJECT].notna().sum() == 1
    (tmp_path / "h.csv").write_text("a,b,c,d\n1,2,3,4\n")  # column_names that rename a header of another width
    with pytest.raises(SourceError, match="column_names names 3 columns.*have 4 field"):
        read_source(spec | {"path": str(tmp_path / "h.csv"), "header": True})


def test_csv_column_names_over_a_row_read_as_the_header_is_said(tmp_path):
    """German credit has no header: column_names without header: false read its first row
    as the header to rename, and the run had 999 rows, unsaid; without column_names its
    values named the columns ('6', '1169')."""
    (tmp_path / "g.data").write_text("A11 6 A34 1169\nA12 48 A32 5951\nA14 12 A34 2096\n")
    spec = {"format": "csv", "path": str(tmp_path / "g.data"), "sep": " ", "column_names": ["status", "months", "history", "amount"]}
    src = read_source(spec)
    assert src.notes == [f"source: {tmp_path / 'g.data'}: line 1 (A11 6 A34 1169) is read as the header, which column_names "
                         "renames, so it is no row; it holds numbers where the next line does, as a row would: if the file "
                         "has no header, set source.header: false"]
    assert len(src.frame.compute()) == 2
    assert len(read(spec | {"header": False})) == 3
    (tmp_path / "h.data").write_text("code months kind amount\nA12 48 A32 5951\n")  # a header, renamed: quiet
    assert read_source(spec | {"path": str(tmp_path / "h.data")}).notes == []
    copy = {"format": "csv", "path": str(tmp_path / "g.data"), "sep": " "}  # PostgreSQL's COPY writes no header
    assert read_source(copy).notes == [f"source: {tmp_path / 'g.data'}: line 1 (A11 6 A34 1169) is read as the header, so "
                                       "its values name the columns; it holds numbers where the next line does, as a row "
                                       "would: if the file has no header, set source.header: false and column_names"]
    assert read_source(copy | {"path": str(tmp_path / "h.data")}).notes == []


def test_csv_header_of_years_or_a_run_is_no_row(tmp_path):
    """A wide table's header of years (the World Bank's "Country Name",…,"1960","1961") or of
    months 1..12 over values was said to be a row, with header: false as its fix. It is
    quiet now; a row of values (Adult through PostgreSQL's COPY, a birth year over a birth
    year) is still said."""
    quiet = {"wide.csv": '"Country Name","Country Code","2019","2020","2021",\n"Aruba","ABW","106314","106766","107195",\n'
                         '"Africa Eastern and Southern","AFE","667242986","685112979","702977106",\n',
             "months.csv": "store,1,2,3,4,5,6,7,8,9,10,11,12\nOslo,83,84,80,81,85,90,95,93,88,84,82,99\n",
             "one.csv": "country,2019\nGermany,83\n", "decimals.csv": "country,2019,2020\nGermany,83.5,84.1\n",
             "pandas.csv": "0,1\n5.1,3.5\n4.9,3.0\n"}  # pd.DataFrame(X).to_csv(index=False)
    said = {"copy.csv": "39,State-gov,77516,Bachelors,13,Never-married\n50,Self-emp-not-inc,83311,Bachelors,13,Married\n",
            "born.csv": "Alice,1990\nBob,1985\n"}
    for name, text in {**quiet, **said}.items():
        (tmp_path / name).write_text(text)
        notes = read_source({"format": "csv", "path": str(tmp_path / name)}).notes
        assert [n.split(": ")[2][:17] for n in notes] == ([] if name in quiet else ["line 1 (" + text[:9]])


def test_csv_with_a_title_line_and_empty_lines_keeps_every_row(tmp_path):
    """UCI's adult.test: a first line that is no row, and an empty line at the end. Arrow
    skips empty lines, and an empty line crashed the read of any block that also had a
    rejected row. Ids stay the rows' data lines, empty lines counted, at any blocksize."""
    names = ["age", "sex", "income"]
    lines = ["|1x3 Cross validator", "25, Male, <=50K.", "", "38, Female, >50K.", ""]
    with gzip.open(tmp_path / "adult.test.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    df = read({"format": "csv", "path": str(tmp_path / "adult.test.gz"), "header": False, "column_names": names})
    assert df.set_index("id")[REJECT].to_dict() == {
        "adult.test.gz:0": "csv:fields=expected 3, got 1", "adult.test.gz:1": None, "adult.test.gz:3": None}
    assert df.set_index("id")["age"].to_dict() == {"adult.test.gz:0": None, "adult.test.gz:1": 25, "adult.test.gz:3": 38}

    # A value of the wrong type beyond the sample that types the columns, after an empty line.
    lines = ["x,y"] + [f"{i},{i}" for i in range(3000)] + [""]
    lines[2201], lines[2301] = "", "oops,2300"
    (tmp_path / "x.csv").write_text("\n".join(lines) + "\n")
    df = read({"format": "csv", "path": str(tmp_path / "x.csv"), "blocksize": 8_000, "infer_bytes": 8_000})
    assert len(df) == 2999 and df["id"].is_unique
    bad = df[df[REJECT].notna()]
    assert bad[REJECT].tolist() == ["type:x=oops"] and bad[RAW].tolist() == ["oops,2300"] and bad["id"].tolist() == ["x.csv:2300"]
    assert set(df.loc[df[REJECT].isna(), "x"]) == set(range(3000)) - {2200, 2300}
    whole = read({"format": "csv", "path": str(tmp_path / "x.csv"), "infer_bytes": 8_000})
    assert sorted(whole["id"]) == sorted(df["id"])  # the same ids whatever the blocks


def test_csv_unknown_encoding_is_an_option_error_not_a_traceback(tmp_path):
    """A misspelt encoding raised LookupError from deep in the reader, in validate too."""
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(Exception, match="unknown encoding 'utf-9' \\(did you mean 'utf-8'\\?\\)") as e:
        read_source({"format": "csv", "path": str(tmp_path / "x.csv"), "encoding": "utf-9"})
    assert not isinstance(e.value, LookupError)


def test_csv_in_another_encoding_is_named_or_its_stray_rows_rejected(tmp_path):
    """A Latin-1 file read as UTF-8 came out as columns of bytes; one stray byte past the
    sample that types the columns crashed the read."""
    (tmp_path / "latin.csv").write_bytes("name,city\nJosé,Zürich\nAnna,Köln\n".encode("latin-1"))
    with pytest.raises(SourceError, match=r"latin.csv: line 2 is not utf8 text .*set source.encoding"):
        read_source({"format": "csv", "path": str(tmp_path / "latin.csv")})
    df = read({"format": "csv", "path": str(tmp_path / "latin.csv"), "encoding": "latin-1"})
    assert df["city"].tolist() == ["Zürich", "Köln"]

    lines = ["name,n"] + [f"n{i},{i}" for i in range(3000)]
    lines[2501] = "Jos\xe9,2500"
    (tmp_path / "late.csv").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    df = read({"format": "csv", "path": str(tmp_path / "late.csv"), "blocksize": 8_000, "infer_bytes": 8_000})
    bad = df[df[REJECT].notna()]
    assert len(df) == 3000 and bad["id"].tolist() == ["late.csv:2500"] and bad[REJECT].tolist() == ["encoding:name"]
    assert df.loc[df[REJECT].isna(), "n"].sum() == sum(range(3000)) - 2500


def test_csv_with_decimal_commas(tmp_path):
    """A European export: ';' between fields, ',' as the decimal mark; one bad number past
    the typing sample is rejected with its own text."""
    lines = ["name;price;qty"] + [f"n{i};{i},5;{i}" for i in range(3000)]
    lines[2501] = "bad;zwei,5;3"
    (tmp_path / "euro.csv").write_text("\n".join(lines) + "\n")
    df = read({"format": "csv", "path": str(tmp_path / "euro.csv"), "sep": ";", "decimal": ",", "blocksize": 8_000, "infer_bytes": 8_000})
    assert df["price"].dtype == np.float64 and df["price"].sum() == sum(i + 0.5 for i in range(3000) if i != 2500)
    assert df.loc[df[REJECT].notna(), REJECT].tolist() == ["type:price=zwei,5"]
    with pytest.raises(ValueError, match="decimal ',' is also the separator"):
        read_source({"format": "csv", "path": str(tmp_path / "euro.csv"), "sep": ",", "decimal": ","})
    sniffed = read({"format": "csv", "path": str(tmp_path / "euro.csv"), "decimal": ",", "blocksize": 8_000, "infer_bytes": 8_000})
    pd.testing.assert_frame_equal(sniffed, df)


def test_csv_decimal_commas_are_found_without_being_told(tmp_path):
    """A ';'-separated European export read its 3,50 as the text "3,50", so no numeric
    stage took the column: columns whose every value is a decimal-comma number are read
    as numbers, and validate says so; decimal: '.' keeps them text."""
    lines = ["name;price;qty;code"] + [f"n{i};{i},5;{i};c{i}.{i}" for i in range(3000)]
    lines[7] = "kiwi;;7;c7.7"
    lines[2501] = "bad;zwei,5;3;c1.1"
    (tmp_path / "euro.csv").write_text("\n".join(lines) + "\n")
    spec = {"format": "csv", "path": str(tmp_path / "euro.csv"), "blocksize": 8_000, "infer_bytes": 8_000}
    src = read_source(spec)
    assert src.notes == [f"source: {tmp_path / 'euro.csv'}: price is written with a decimal comma (3,50): read as numbers; "
                         "set source.decimal: '.' to read them as text"]
    df = src.frame.compute()
    assert df["price"].dtype == np.float64 and df["price"].sum() == sum(i + 0.5 for i in range(3000) if i not in (6, 2500))
    assert df["code"].iloc[1] == "c1.1" and df.loc[df[REJECT].notna(), REJECT].tolist() == ["type:price=zwei,5"]
    told = read({**spec, "decimal": ","})
    pd.testing.assert_frame_equal(told, df)
    assert read_source({**spec, "decimal": "."}).schema.field("price").type == pa.string()
    assert read_source({**spec, "text_columns": ["price"]}).notes == []
    declared = read({**spec, "column_types": {"price": "float"}})  # declared a number, it was every row's type:price=3,50
    pd.testing.assert_frame_equal(declared, df)
    (tmp_path / "mixed.csv").write_text("a;b\n1,5;1.5\n2,5;2.5\n")  # a comma beside a point: as written
    assert read_source({"format": "csv", "path": str(tmp_path / "mixed.csv")}).schema.types == [pa.string(), pa.float64()]


def test_csv_thousands_dots_with_a_decimal_comma_are_found_without_being_told(tmp_path):
    """A German spreadsheet's export writes 1.234,50: since the decimal comma alone was
    found, such columns were still text. Found the same way, validate says so, a value past
    the sample that is no number is rejected, and a job may declare it (thousands: '.')."""
    german = str.maketrans(",.", ".,")
    lines = ["ort;betrag;einwohner;kurs"] + [f"o{i};{i * 1234.5:,.2f};{i * 98765:,}".translate(german) + f";{i},{i}"
                                               for i in range(2000)]
    lines[1500] = "o1500;zwölf;7;1,5"
    (tmp_path / "de.csv").write_text("\n".join(lines) + "\n")
    spec = {"format": "csv", "path": str(tmp_path / "de.csv"), "blocksize": 8_000, "infer_bytes": 8_000}
    src = read_source(spec)
    assert src.notes == [f"source: {tmp_path / 'de.csv'}: betrag, einwohner, kurs are written with thousands dots and a "
                         "decimal comma (1.234,50): read as numbers; set source.decimal: '.' to read them as text"]
    assert [str(t) for t in src.schema.types] == ["string", "double", "int64", "double"]
    df = src.frame.compute().set_index("id")
    assert df.loc["de.csv:1234", ["betrag", "einwohner", "kurs"]].tolist() == [1234 * 1234.5, 1234 * 98765, 1234.1234]
    assert df[REJECT].dropna().to_dict() == {"de.csv:1499": "type:betrag=zwölf"}
    assert df["betrag"].sum() == pytest.approx(sum(i * 1234.5 for i in range(2000) if i != 1499))
    for told in ({"thousands": "."}, {"decimal": ","}, {"decimal": ",", "thousands": "."}):
        pd.testing.assert_frame_equal(read({**spec, **told}).set_index("id"), df)
    assert read_source({**spec, "decimal": "."}).schema.field("betrag").type == pa.string()
    kept = read_source({**spec, "text_columns": ["kurs"]})
    assert [str(t) for t in kept.schema.types] == ["string", "double", "int64", "string"]
    # 1.000 alone is a float to Arrow: read with thousands dots it would be 1000, so every column stays as written
    (tmp_path / "both.csv").write_text("betrag;menge\n1.234,50;1.000\n2,5;2.500\n")
    both = read_source({"format": "csv", "path": str(tmp_path / "both.csv")})
    assert both.schema.types == [pa.string(), pa.float64()]
    assert both.notes == [f"source: {tmp_path / 'both.csv'}: betrag is written with thousands dots and a decimal comma "
                          "(1.234,50), but read so, menge (double: '1.000') would be read as int64: every column is read "
                          "as written; set source.decimal: ',' and thousands: '.' to read them so"]
    told = read({"format": "csv", "path": str(tmp_path / "both.csv"), "thousands": "."})
    assert told["betrag"].tolist() == [1234.5, 2.5] and told["menge"].tolist() == [1000, 2500]


@pytest.mark.parametrize("words", [("t", "f"), ("true", "false")])
def test_csv_booleans_as_postgresql_copy_writes_them(tmp_path, words):
    """COPY ... TO ... (FORMAT csv) writes a boolean as t or f: the column was text, and no
    stage read it as a boolean. A value that is neither, past the type sample, is rejected
    with the column named; the booleans beside it in its block are read (every row of the
    block with a value there was rejected, true and false too)."""
    true, false = words
    lines = ["id,married,seen"] + [f"{i},{(true, false)[i % 2]},2024-01-01 07:{i % 60:02d}:00+00" for i in range(1, 3001)]
    lines[20] = "20,,2024-01-01 07:20:00+00"  # NULL
    lines[2500] = "2500,maybe,2024-01-01 07:40:00+00"
    (tmp_path / "copy.csv").write_text("\n".join(lines) + "\n")
    src = read_source({"format": "csv", "path": str(tmp_path / "copy.csv"), "infer_bytes": 8_000, "blocksize": 8_000})
    assert src.schema.field("married").type == pa.bool_() and src.frame.npartitions > 3
    df = src.frame.compute()
    assert df.loc[df[REJECT].notna(), [REJECT, RAW]].values.tolist() == [["type:married=maybe", "2500,maybe,2024-01-01 07:40:00+00"]]
    df = df[df[REJECT].isna()].set_index("id")
    assert df.loc["2501", "married"] is np.False_ and df.loc["2502", "married"] is np.True_ and pd.isna(df.loc["20", "married"])
    assert df["married"].sum() == sum(1 for i in range(1, 3001) if i % 2 == 0 and i not in (20, 2500))


# PostgreSQL 15.18's `\copy notes to 'notes.txt'` (COPY's default text format) of a table
# (note int, author text, body text, score numeric(6,2), ok boolean, seen timestamptz, day date)
# holding a newline, a tab, a backslash, the text \N, NULL beside '', quotes and a leading space.
_COPY_TEXT = (b"1\tAnn\tline one\\nline two\t3.50\tt\t2024-01-02 03:04:05+00\t2024-01-02\n"
              b"2\tBob\ttab\\there\t\\N\tf\t2024-01-02 03:04:05.123456+00\t\\N\n"
              b"3\t\tback\\\\slash and \\\\N literal\t1.25\t\\N\t\\N\t2023-12-31\n"
              b'4\t\\N\tsay "hi", ok\t10.00\tt\t2024-06-30 23:59:59+00\t2024-06-30\n'
              b"5\t lead\tcr\\rhere\t-2.00\tf\t2024-03-01 00:00:00+00\t2024-03-01\n")
_NOTES = ["note", "author", "body", "score", "ok", "seen", "day"]


def test_csv_dialect_postgres_text_reads_copy_exactly(tmp_path):
    """COPY ... TO's default text format was only said: read as CSV, \\N was text, a value's
    \\n stayed two characters, an empty author was missing and ' lead' lost its space. Read
    with dialect: postgres_text, every value is the table's, at any blocksize."""
    (tmp_path / "notes.txt").write_bytes(_COPY_TEXT * 400)
    spec = {"format": "csv", "path": str(tmp_path / "notes.txt"), "dialect": "postgres_text", "column_names": _NOTES}
    src = read_source(spec | {"blocksize": 4_000})
    assert src.frame.npartitions > 3 and src.notes == []
    df = src.frame.compute().set_index("id", drop=False)
    assert df[REJECT].isna().all() and len(df) == 2000
    first = df.iloc[:5]
    assert first["body"].tolist() == ["line one\nline two", "tab\there", "back\\slash and \\N literal", 'say "hi", ok', "cr\rhere"]
    assert first["author"].tolist()[:3] == ["Ann", "Bob", ""] and pd.isna(first["author"].iat[3]) and first["author"].iat[4] == " lead"
    assert first["score"].tolist()[:1] == [3.5] and pd.isna(first["score"].iat[1])
    assert first["ok"].tolist()[:2] == [True, False] and pd.isna(first["ok"].iat[2])
    assert str(df["seen"].dtype).endswith("UTC]") and first["seen"].iat[1] == pd.Timestamp("2024-01-02 03:04:05.123456", tz="UTC")
    assert df.loc["notes.txt:1999", "body"] == "cr\rhere"  # rows numbered as lines across blocks
    assert df.equals(read(spec).set_index("id", drop=False))


def test_csv_postgres_text_escapes_written_by_hand(tmp_path):
    """COPY FROM also reads octal and hex bytes (\\101, \\x42), as a file written by hand
    may hold; an escaped backslash before an n is a backslash and an n. Bytes that are not
    UTF-8 (\\377, which COPY FROM refuses) reject their row, naming the column."""
    (tmp_path / "hand.txt").write_bytes(b"1\t\\101\\x42c\n2\ta\\\\nb\n3\t\\377\n4\ta\\\\\\nb\n")
    df = read({"format": "csv", "path": str(tmp_path / "hand.txt"), "dialect": "postgres_text", "column_names": ["n", "body"]})
    assert df["body"].tolist()[:2] == ["ABc", "a\\nb"] and pd.isna(df["body"].iat[2]) and df["body"].iat[3] == "a\\\nb"
    assert df[REJECT].tolist() == [None, None, "encoding:body", None] and df[RAW].iat[2] == "\\377"


def test_csv_postgres_text_with_arrays_and_json_is_split_at_tabs(tmp_path):
    """COPY's text export of a table with jsonb and array columns (commas in every line,
    no NULL) was split at commas, its columns named '1\\t1.5\\t0.333…' and '{"a": …', without
    a note; its first row (a whole number over a decimal: 1.5 over 3) was no row to the
    header check. A file not named .csv that a tab splits alike is read at tabs, and the
    note names the dialect. As PostgreSQL 15.18 wrote it."""
    (tmp_path / "kinds.txt").write_bytes(
        b'1\t1.5\t0.33333333333333333333\t{"a": "x\\\\\\\\y", "n": 1}\t{1,2}\t{"a b","c\\\\"d"}\n'
        b'2\t3\t0.66666666666666666667\t{"a": "x\\\\\\\\y", "n": 2}\t{2,3}\t{"a b","c\\\\"d"}\n'
        b'3\tInfinity\t1.00000000000000000000\t{"a": "x\\\\\\\\y", "n": 3}\t{3,4}\t{"a b","c\\\\"d"}\n')
    src = read_source({"format": "csv", "path": str(tmp_path / "kinds.txt")})
    assert src.schema.names[:3] == ["1", "1.5", "0.33333333333333333333"] and len(src.schema.names) == 6
    assert src.notes[0].endswith("set source.dialect: postgres_text and column_names")
    df = read({"format": "csv", "path": str(tmp_path / "kinds.txt"), "dialect": "postgres_text",
               "column_names": ["k", "f", "n", "j", "a", "t"]})
    assert df["f"].tolist() == [1.5, 3.0, np.inf] and df["j"].iat[0] == '{"a": "x\\\\y", "n": 1}'
    assert df["t"].iat[0] == '{"a b","c\\"d"}' and df["a"].iat[2] == "{3,4}"


def test_csv_postgres_text_is_suggested_and_needs_names(tmp_path):
    """validate names the dialect for a tab-separated file with \\N fields, where the run
    read \\N as text; the dialect without column_names says where the names are."""
    (tmp_path / "notes.txt").write_bytes(_COPY_TEXT)
    path = str(tmp_path / "notes.txt")
    assert [n.split(": ", 2)[2][:40] for n in read_source({"format": "csv", "path": path}).notes] == [
        "fields that are \\N alone, tab separated,"]
    assert "dialect: postgres_text" in read_source({"format": "csv", "path": path, "header": False, "column_names": _NOTES}).notes[0]
    (tmp_path / "adult.txt").write_bytes(  # Adult's first lines as COPY wrote them: no NULL among them
        b"39\tState-gov\t77516\tBachelors\t13\tNever-married\t<=50K\t1\t2024-05-01 12:00:01.000001+00\tf\n"
        b"50\tSelf-emp-not-inc\t83311\tBachelors\t13\tMarried-civ-spouse\t<=50K\t2\t2024-05-01 12:00:02.000002+00\tf\n")
    assert read_source({"format": "csv", "path": str(tmp_path / "adult.txt")}).notes[0].endswith(
        "set source.header: false and column_names; if it is PostgreSQL's COPY text format (tab separated, no header), "
        "set source.dialect: postgres_text and column_names")
    with pytest.raises(SourceError, match=r"writes no header: give source.column_names.*\\d <table>.*WITH \(HEADER\)"):
        read_source({"format": "csv", "path": path, "dialect": "postgres_text"})
    with_header = b"note\tauthor\tbody\tscore\tok\tseen\tday\n" + _COPY_TEXT  # COPY ... TO ... WITH (HEADER)
    (tmp_path / "h.txt").write_bytes(with_header)
    df = read({"format": "csv", "path": str(tmp_path / "h.txt"), "dialect": "postgres_text", "header": True})
    assert list(df.columns[1:8]) == _NOTES and df["body"].iat[1] == "tab\there"


def test_csv_a_value_that_is_no_time_is_rejected_alone(tmp_path):
    """A timestamp column (ISO with +00, as PostgreSQL writes) whose value past the type
    sample is no time ('soon') failed the whole run with Arrow's "Unsupported cast from
    double to timestamp"; now that row is rejected, naming the column, and the times beside
    it in its block are read."""
    lines = ["n,seen,day"] + [f"{i},2024-01-01 07:{i % 60:02d}:00+00,2024-02-{1 + i % 28:02d}" for i in range(3000)]
    lines[2501] = "2500,soon,2024-02-01"
    lines[2701] = "2700,2024-01-01 07:00:00+00,someday"
    (tmp_path / "times.csv").write_text("\n".join(lines) + "\n")
    src = read_source({"format": "csv", "path": str(tmp_path / "times.csv"), "infer_bytes": 8_000, "blocksize": 8_000})
    assert src.schema.field("seen").type == pa.timestamp("s", tz="UTC") and src.schema.field("day").type == pa.date32()
    df = src.frame.compute().set_index("id")
    assert df.loc[df[REJECT].notna(), [REJECT, RAW]].values.tolist() == [["type:seen=soon", "2500,soon,2024-02-01"],
                                                                          ["type:day=someday", "2700,2024-01-01 07:00:00+00,someday"]]
    assert df["seen"].notna().sum() == 2998 and df.loc["times.csv:2501", "seen"] == pd.Timestamp("2024-01-01 07:41", tz="UTC")


def test_csv_bigquery_timestamps_are_times_in_utc(tmp_path):
    """BigQuery's CSV export writes a TIMESTAMP as 2024-01-02 03:04:05 UTC (.123456 UTC
    with microseconds), NULL as an empty field: the column stayed text, where ISO times
    with +00 or Z are read as timestamps. Now they are timestamps in UTC to the
    microsecond, in every block; a later value that is no time is rejected alone."""
    rows = [f"{i},2024-01-{1 + i % 28:02d} {i % 24:02d}:04:05{'.123456' * (i % 3 > 0)} UTC,{'true' if i % 2 else 'false'}"
            for i in range(3000)]
    rows[10], rows[2600] = "10,,true", "2600,yesterday,true"
    (tmp_path / "bq.csv").write_text("\n".join(["user_id,created_at,active", *rows]) + "\n")
    src = read_source({"format": "csv", "path": str(tmp_path / "bq.csv"), "infer_bytes": 8_000, "blocksize": 8_000})
    assert src.schema.field("created_at").type == pa.timestamp("us", tz="UTC") and src.frame.npartitions > 3
    df = src.frame.compute().set_index("id")
    assert df.loc[df[REJECT].notna(), [REJECT, RAW]].values.tolist() == [["type:created_at=yesterday", "2600,yesterday,true"]]
    assert df.loc["bq.csv:2997", "created_at"] == pd.Timestamp("2024-01-02 21:04:05", tz="UTC")
    assert df.loc["bq.csv:2998", "created_at"] == pd.Timestamp("2024-01-03 22:04:05.123456", tz="UTC")
    assert pd.isna(df.loc["bq.csv:10", "created_at"]) and df["created_at"].notna().sum() == 2998
    text = read({"format": "csv", "path": str(tmp_path / "bq.csv"), "text_columns": ["created_at"]})
    assert text["created_at"].iat[1] == "2024-01-02 01:04:05.123456 UTC"


@pytest.mark.parametrize("how", [{"orient": "records", "lines": True}, {"orient": "records"}, {"orient": "records", "indent": 2}])
def test_json_given_as_csv_is_named(tmp_path, how):
    """pandas' JSON lines (or a JSON array) given as format: csv were read with columns
    named '{"a":1' and 'b:"x"}', their rows rejected as csv:fields or kept as pieces: the
    run now stops naming the format to use, with a header or without."""
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y,z", "w"]})
    frame.to_json(tmp_path / "t.json", **how)
    for spec in ({}, {"header": False, "column_names": ["a", "b"]}):
        with pytest.raises(SourceError, match=r"t.json: (JSON lines|a JSON array).*, not CSV .*: use format: jsonl"):
            read_source({"format": "csv", "path": str(tmp_path / "t.json")} | spec)
    assert read({"format": "jsonl", "path": str(tmp_path / "t.json")})["b"].tolist() == ["x", "y,z", "w"]
    (tmp_path / "jsonb.txt").write_bytes(b'[{"a": 1}, {"a": 2}]\t1\n[{"a": 3}]\t2\n')  # COPY of a jsonb column: read
    spec = {"format": "csv", "path": str(tmp_path / "jsonb.txt"), "sep": "\t", "header": False, "column_names": ["j", "k"]}
    assert read(spec)["j"].tolist() == ['[{"a": 1}, {"a": 2}]', '[{"a": 3}]']
    (tmp_path / "braces.csv").write_text("{code},n\n{a},1\n")  # braces in a CSV's names: read as CSV
    assert read({"format": "csv", "path": str(tmp_path / "braces.csv")})["{code}"].tolist() == ["{a}"]


@pytest.mark.parametrize("named, told", [("postgres_text", "format: csv with dialect: postgres_text"), ("TSV", "format: csv"),
                                          ("json", "format: jsonl"), ("ndjson", "format: jsonl")])
def test_a_format_named_by_its_writer_names_the_source_that_reads_it(named, told):
    """format: postgres_text (or tsv, json) was "unknown format" and a list of formats: the
    way to the dialect, or to jsonl for a .json file, was left to be found."""
    from dsbuild.job import load_job

    with pytest.raises(Exception, match=rf"unknown format '{named}': .* read by {told}"):
        load_job({"name": "t", "source": {"format": named, "path": "x"}, "stages": [], "sink": {"path": "out"}})


def test_text_given_as_parquet_names_the_source_that_reads_it(tmp_path):
    """A CSV or JSON lines export named in a Parquet job stopped with Arrow's "Parquet magic
    bytes not found in footer. Either the file is corrupted or this is not a parquet file";
    a Parquet file cut short keeps Arrow's words."""
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    frame.to_csv(tmp_path / "t.parquet", index=False)
    frame.to_json(tmp_path / "j.parquet", orient="records", lines=True)
    frame.to_parquet(tmp_path / "whole.parquet")
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "whole.parquet").read_bytes()[:-100])
    for name, said in (("t", "it is text .*: use format: csv"), ("j", "it is JSON text: use format: jsonl"),
                       ("cut", "(?!it is)")):
        with pytest.raises(SourceError, match=rf"{name}.parquet: not a readable Parquet file: {said}"):
            read_source({"format": "parquet", "path": str(tmp_path / f"{name}.parquet")})


def test_csv_separator_from_the_file(tmp_path):
    """A tab for .tsv; else the one of , ; tab | that splits the first lines alike."""
    (tmp_path / "people.tsv").write_text("name\tage\tcity\nann\t31\tOslo, NO\nbob\t42\tRome\n")
    (tmp_path / "pipes.txt").write_text("a|b|c\n1|x, y|3\n2|z; w|4\n")
    (tmp_path / "one.csv").write_text("text\nhello; world\n")
    assert read({"format": "csv", "path": str(tmp_path / "people.tsv")})["city"].tolist() == ["Oslo, NO", "Rome"]
    assert read({"format": "csv", "path": str(tmp_path / "pipes.txt")})["b"].tolist() == ["x, y", "z; w"]
    assert list(read({"format": "csv", "path": str(tmp_path / "pipes.txt"), "sep": ","}).columns[:2]) == ["id", "a|b|c"]
    assert read({"format": "csv", "path": str(tmp_path / "one.csv")})["text"].tolist() == ["hello; world"]  # one column


def test_read_source_from_python_keeps_lists_structs_dates_and_bytes_as_a_run_does(tmp_path):
    """Dask's conversion of object columns to text (on by default; a run turns it off)
    made a Parquet file's embeddings '[1. 2.]' for read_source() called from Python, and a
    JSON lines field's lists too. Only text columns are text; the rest as a run reads them."""
    import datetime

    table = pa.table({"emb": [[1.0, 2.0], [3.0]], "box": [{"x": 1, "y": 2}, None], "day": [datetime.date(2024, 1, 2)] * 2,
                      "blob": [b"\x89PNG", b"GIF8"], "s": ["a", None]})
    pq.write_table(table, tmp_path / "t.parquet")
    (tmp_path / "t.jsonl").write_text('{"emb": [1.0, 2.0], "s": "a"}\n{"emb": [3.0], "s": null}\n')
    for spec in ({"format": "parquet", "path": str(tmp_path / "t.parquet")}, {"format": "jsonl", "path": str(tmp_path / "t.jsonl")}):
        with dask.config.set({"dataframe.convert-string": True}):  # Dask's default, as in a user's session
            src = read_source(spec)
            out = src.frame.compute()
        with dask.config.set({"dataframe.convert-string": False}):  # as dsbuild.run reads
            run = read_source(spec).frame.compute()
        assert src.frame["s"].dtype == out["s"].dtype == pd.StringDtype("pyarrow") and out["s"].tolist() == ["a", pd.NA]
        for column in run.columns.drop(["id", "s", REJECT, RAW], errors="ignore"):
            assert src.frame[column].dtype == out[column].dtype == run[column].dtype, column
            assert [np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for v in out[column]] == \
                [np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for v in run[column]], column
        assert out["emb"].map(list).tolist() == [[1.0, 2.0], [3.0]]


def test_parquet_partition_folders_are_columns(tmp_path):
    """``year=2024/country=NO/part.parquet``: the folders' values come back as columns, as
    pandas, Arrow and Spark read them; they were dropped without a word."""
    df = pd.DataFrame({"year": np.repeat([2023, 2024], 6), "city": np.tile(["Oslo", "São Paulo", None], 4), "v": np.arange(12)})
    df.to_parquet(tmp_path / "ds", partition_cols=["year", "city"])
    out = read({"format": "parquet", "path": str(tmp_path / "ds")}).sort_values("v").reset_index(drop=True)
    assert out["year"].dtype == "Int64" and out["year"].tolist() == df["year"].tolist()
    assert out["city"].fillna("-").tolist() == ["Oslo", "São Paulo", "-"] * 4  # pandas writes None as Hive's default
    assert out["id"].iloc[0].startswith("year=2023/city=Oslo/")
    assert read({"format": "parquet", "path": str(tmp_path / "ds"), "columns": ["v", "year"]}).columns.tolist() == ["id", "v", "year"]
    pq.write_table(pa.table({"v": [99]}), tmp_path / "ds" / "stray.parquet")
    with pytest.raises(SourceError, match="different partition folders"):
        read_source({"format": "parquet", "path": str(tmp_path / "ds")})


def test_frames_from_python_number_rows_whatever_their_partitions():
    import dask.dataframe as dd

    df = pd.DataFrame({"a": np.arange(10), "b": list("abcdefghij")})
    ids = [f"pets:{i}" for i in range(10)]
    for frame, rows in ((df, 4), (dd.from_pandas(df, npartitions=3).reset_index(drop=True), 1), (dd.from_pandas(df, npartitions=1), 1)):
        src = read_source({"format": "frame", "frame": frame, "name": "pets", "rows_per_partition": rows})
        out = src.frame.compute()
        assert out["id"].tolist() == ids and out["a"].tolist() == list(range(10)) and src.files[0]["size"] == 10
    keyed = read({"format": "frame", "frame": df.set_index("b")})  # a meaningful index is kept as a column
    assert keyed.columns.tolist() == ["id", "b", "a"] and keyed["id"].iloc[0] == "frame:0"
    assert read({"format": "frame", "frame": df.assign(id=df["b"])})["id"].tolist() == list("abcdefghij")
    with pytest.raises(ValueError, match="pandas or Dask DataFrame, got list"):
        read_source({"format": "frame", "frame": [1, 2]})


def test_a_dask_frames_rows_are_counted_in_one_task_per_partition(client, tmp_path):
    """A Dask frame without ids is computed once to count its partitions' rows; ``.compute()``
    fuses nothing (dask 2026.8), so every step the user chained ran as a task of its own:
    a read, a map and a filter were 6 tasks per partition (81 partitions of Adult: 487
    tasks, 82 fused)."""
    import dask.dataframe as dd
    from dask.utils import key_split
    from distributed import get_task_stream

    pd.DataFrame({"a": np.arange(40), "b": np.arange(40.0)}).to_parquet(tmp_path / "in.parquet", row_group_size=10)
    frame = dd.read_parquet(tmp_path / "in.parquet", split_row_groups=True)
    frame = frame.map_partitions(lambda p: p.assign(c=p["a"] * 2))
    frame = frame[frame["a"] % 3 > 0]
    with get_task_stream(client) as stream:
        src = read_source({"format": "frame", "frame": frame, "name": "f"})
    assert len(stream.data) <= frame.npartitions + 1, sorted(key_split(t["key"]) for t in stream.data)
    assert src.frame.compute()["id"].tolist() == [f"f:{i}" for i in range(len(frame))]


def test_frames_as_python_makes_them_number_columns_keep_indexes_and_object_types(tmp_path):
    """pd.DataFrame(X) names its columns 0, 1: they failed deep in the pipeline; a Dask
    frame's named index was dropped when its divisions were unknown; a pandas frame's
    lists and decimals had no Arrow type for a run left with no rows."""
    import decimal

    import dask.dataframe as dd

    assert read({"format": "frame", "frame": pd.DataFrame(np.eye(2))}).columns.tolist() == ["id", "0", "1"]
    with pytest.raises(SourceError, match="column 'a' is named more than once"):
        read_source({"format": "frame", "frame": pd.DataFrame([[1, 2]], columns=["a", "a"])})
    with pytest.raises(SourceError, match="MultiIndex; flatten them first"):
        read_source({"format": "frame", "frame": pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", 1), ("a", 2)]))})
    users = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "spend": [1.0, 2.0, 3.0]}).set_index("user_id")
    unknown = dd.from_pandas(users, npartitions=2).clear_divisions()
    assert read({"format": "frame", "frame": unknown}).columns.tolist() == ["id", "user_id", "spend"]
    objects = pd.DataFrame({"lst": [[1.0], [2.0, 3.0]], "dec": [decimal.Decimal("1.25"), None], "s": ["a", "b"]})
    schema = read_source({"format": "frame", "frame": objects}).schema
    assert {f.name: str(f.type) for f in schema} == {"lst": "list<item: double>", "dec": "decimal128(3, 2)"}


def test_a_frame_column_of_mixed_types_is_refused_naming_it():
    """A spreadsheet's column of numbers and text (1, 'a') in a pandas frame: the run
    failed writing its first partition, with Arrow's "Could not convert 'a' with type
    str: tried to convert to int64" and no column named; past the first 10,000 rows the
    source's type check did not look."""
    mixed = pd.DataFrame({"n": [1] * 10_000 + ["a"], "x": np.arange(10_001)})
    with pytest.raises(SourceError, match=r"frame 'sheet': column 'n' holds int and str values \(sheet:0 is 1, "
                                          r"sheet:10000 is 'a'\); .* frame\['n'\].astype\('string'\)"):
        read_source({"format": "frame", "frame": mixed, "name": "sheet"})
    late = pd.DataFrame({"s": pd.Series([None] * 10_000 + [[1.0]], dtype=object)})  # typed by every value, not the first
    assert str(read_source({"format": "frame", "frame": late}).schema.field("s").type) == "list<item: double>"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_column_types_replace_the_types_read_off_the_first_bytes(tmp_path, fmt):
    """A column of whole numbers in the first infer_bytes and 2.5 later rejected the later
    rows, and there was no way to declare it float (nor an id of digits text, in JSON lines,
    but for text_columns)."""
    rows = [{"k": i, "v": i, "code": i} for i in range(300)] + [{"k": 300, "v": 2.5, "code": 7}, {"k": 301, "v": "abc", "code": 8}]
    if fmt == "csv":
        text = "k,v,code\n" + "".join(f"{r['k']},{r['v']},{r['code']}\n" for r in rows)
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / f"t.{fmt}").write_text(text)
    spec = {"format": fmt, "path": str(tmp_path / f"t.{fmt}"), "infer_bytes": 500, "blocksize": 2000}
    df = read({**spec, "column_types": {"v": "float", "code": "str"}}).set_index("id")
    assert df["v"].dtype == np.float64 and df.loc[f"t.{fmt}:300", "v"] == 2.5
    assert df[REJECT].dropna().tolist() == ["type:v=abc" if fmt == "csv" else "type:v='abc'"]
    assert df.loc[f"t.{fmt}:299", "code"] == "299"
    with pytest.raises(SourceError, match="column_types names 'w', which is not a column"):
        read_source({**spec, "column_types": {"w": "int"}})


def test_parquet_written_by_pandas_keeps_its_index_as_a_column(tmp_path):
    """pandas writes an index as columns its metadata names the index: restored as the
    frame's index, the reader's row numbering dropped them. A frame saved with
    set_index("id") lost its ids (rows became file:row), one with set_index("user") its
    user column; an unnamed index (a filtered frame's) is row labels, not a feature."""
    frame = pd.DataFrame({"id": ["u1", "u2", "u3"], "user": ["a", "b", "c"], "v": [1.0, 2.0, 3.0]})
    frame.set_index("id").to_parquet(tmp_path / "by_id.parquet")
    frame.drop(columns="id").set_index("user").to_parquet(tmp_path / "by_user.parquet")
    frame[frame["v"] > 1].drop(columns="id").to_parquet(tmp_path / "filtered.parquet")
    src = read_source({"format": "parquet", "path": str(tmp_path / "by_id.parquet")})
    assert src.ids_given and src.frame.compute()["id"].tolist() == ["u1", "u2", "u3"]
    assert src.read_columns(["id"]).compute()["id"].tolist() == ["u1", "u2", "u3"]
    assert read({"format": "parquet", "path": str(tmp_path / "by_user.parquet")})["user"].tolist() == ["a", "b", "c"]
    src = read_source({"format": "parquet", "path": str(tmp_path / "filtered.parquet")})
    assert src.schema.names == ["user", "v"] and src.frame.compute().columns.tolist() == ["id", "user", "v"]


@pytest.mark.parametrize("layout", ["lines", "array"])
def test_json_fields_come_from_the_whole_type_sample(tmp_path, layout):
    """Fields were read off the first 1,000 records, not the first infer_bytes: a field an
    API added at record 1,500 (a 50 kB file) was no column, and every record with it was
    rejected as json:unknown-field."""
    records = [{"k": i, **({"note": f"n{i}"} if i >= 1500 else {})} for i in range(2000)]
    if layout == "lines":
        (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        (tmp_path / "t.json").write_text(json.dumps(records))
    df = read({"format": "jsonl", "path": str(next(tmp_path.iterdir()))})
    assert df[REJECT].isna().all() and df["note"].notna().sum() == 500


def test_json_lines_files_that_add_a_field_merge_their_schemas(tmp_path):
    """A folder of exports where later files carry a field the first lacks (an API that
    added one): their records were rejected as json:unknown-field, and no option read the
    union of the files' fields, as Parquet's merge_schemas does."""
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"k": i}) + "\n" for i in range(3)))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"k": i, "new": i * 10}) + "\n" for i in range(3, 5)))
    first_only = read({"format": "jsonl", "path": str(tmp_path)})
    assert first_only[REJECT].fillna("").tolist() == [""] * 3 + ["json:unknown-field=new"] * 2
    merged = read({"format": "jsonl", "path": str(tmp_path), "merge_schemas": True}).set_index("id")
    assert merged[REJECT].isna().all() and merged["k"].tolist() == list(range(5))
    assert merged["new"].isna().sum() == 3 and merged.loc["b.jsonl:1", "new"] == 40


def test_csv_numbers_with_thousands_separators(tmp_path):
    """A spreadsheet's export writes "1,234.50": read as text, no numeric stage took the
    column, and there was no option to read it as pandas' thousands= does. A value past
    the type sample that is no number is rejected with the column named."""
    lines = ["k,amount,qty"] + [f'{i},"{i * 1000 + 0.5:,.2f}","{i * 1000:,}"' for i in range(200)] + ['200,"N/A",7', '201,abc,"1,000"']
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    spec = {"format": "csv", "path": str(tmp_path / "t.csv"), "thousands": ",", "infer_bytes": 2000, "blocksize": 2000}
    df = read(spec).set_index("id")
    assert df["amount"].dtype == np.float64 and str(df["qty"].dtype) == "Int64"
    assert df.loc["t.csv:123", "amount"] == 123000.5 and df.loc["t.csv:123", "qty"] == 123000
    assert pd.isna(df.loc["t.csv:200", "amount"]) and df.loc["t.csv:200", "qty"] == 7  # N/A is missing
    assert df[REJECT].dropna().to_dict() == {"t.csv:201": "type:amount=abc"}
    (tmp_path / "eu.csv").write_text('x;y\n"1.234,5";1\n2,25;2\n')
    assert read({"format": "csv", "path": str(tmp_path / "eu.csv"), "thousands": ".", "decimal": ","})["x"].tolist() == [1234.5, 2.25]
    with pytest.raises(ValueError, match="thousands ',' is also the separator"):
        read_source({**spec, "thousands": ",", "sep": ","})


def test_csv_blank_header_names_are_named_as_pandas_names_them(tmp_path):
    """DataFrame.to_csv writes its index under a blank name: the column was '', a second
    blank name stopped the read ("'' is named more than once"). pandas' names instead."""
    (tmp_path / "x.csv").write_text(",a,,b\n0,1.5,x,2\n1,2.5,y,3\n")
    df = read({"format": "csv", "path": str(tmp_path / "x.csv")})
    assert [c for c in df.columns if c not in ("id", REJECT)][:4] == ["Unnamed: 0", "a", "Unnamed: 2", "b"]
    assert df["Unnamed: 0"].tolist() == [0, 1] and df["Unnamed: 2"].tolist() == ["x", "y"]


def test_csv_header_naming_a_column_twice_is_an_error(tmp_path):
    (tmp_path / "dup.csv").write_text("a,b,a\n1,2,3\n")
    with pytest.raises(SourceError, match="dup.csv: column 'a' is named more than once"):
        read_source({"format": "csv", "path": str(tmp_path / "dup.csv")})


def test_csv_gzip_and_folder_of_files(tmp_path):
    for k in range(3):
        with gzip.open(tmp_path / f"part{k}.csv.gz", "wt") as f:
            f.write("x,y\n" + "".join(f"{k * 10 + i},{i}\n" for i in range(10)))
    df = read({"format": "csv", "path": str(tmp_path)})
    assert sorted(df["x"]) == list(range(30))
    assert set(df["id"]) == {f"part{k}.csv.gz:{i}" for k in range(3) for i in range(10)}


def test_csv_with_different_headers_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "a.csv").write_text("x,y\n1,2\n")
    (tmp_path / "b.csv").write_text("x,z\n1,2\n")
    with pytest.raises(SourceError, match=r"b\.csv: header \['x', 'z'\] differs.*lacks \['y'\]; has \['z'\] besides"):
        read_source({"format": "csv", "path": str(tmp_path)})


def test_csv_files_listing_the_same_columns_in_another_order_are_read_by_name(tmp_path):
    """Exports of one table by two tools: each value lands in its column, typed as the
    first file says, and a value that does not fit is rejected naming its column."""
    (tmp_path / "a.csv").write_text("x,y,name\n1,2.5,ann\n3,4.5,bob\n")
    (tmp_path / "b.csv").write_text("name,x,y\ncid,5,6.5\ndee,oops,7.5\n")
    df = read({"format": "csv", "path": str(tmp_path)}).set_index("id")
    assert [c for c in df.columns if not c.startswith("_")] == ["x", "y", "name"]
    assert df.loc["b.csv:0", ["x", "y", "name"]].tolist() == [5, 6.5, "cid"]
    assert df.loc["a.csv:1", ["x", "y", "name"]].tolist() == [3, 4.5, "bob"]
    assert df.loc[df[REJECT].notna(), REJECT].to_dict() == {"b.csv:1": "type:x=oops"}


def test_jsonl_malformed_and_mistyped_lines(tmp_path):
    (tmp_path / "r.jsonl").write_text('{"a": 1, "b": "x"}\n{"a": "zz", "b": "y"}\nnot json\n\n{"a": 3, "b": "z"}\n')
    df = read({"format": "jsonl", "path": str(tmp_path / "r.jsonl")}).set_index("id")
    assert df.loc["r.jsonl:0", "a"] == 1 and df.loc["r.jsonl:4", "b"] == "z"
    assert df.loc["r.jsonl:1", REJECT] == "type:a='zz'"
    assert df.loc["r.jsonl:2", REJECT] == "json:JSONDecodeError=r.jsonl line 3, column 1: Expecting value"
    assert df.loc["r.jsonl:2", RAW] == "not json"
    assert len(df) == 4  # the blank line is not a record


def test_jsonl_rejects_say_where_a_line_is_wrong(tmp_path):
    """A malformed line was rejected as json:JSONDecodeError alone: nothing said which line
    of which file, nor what was wrong in it. The reason names the file, the line (as an
    editor counts, 1-based) and the column, in any block of a file cut into many."""
    import json

    lines = [json.dumps({"a": i, "s": "x" * 30}) for i in range(400)]
    lines[7], lines[350], lines[351] = '{"a": 7,, "s": "y"}', "[1, 2]", '{"a": 1} {"a": 2}'
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "e.jsonl").write_text("\n".join(lines) + "\n")
    df = read({"format": "jsonl", "path": str(tmp_path / "d"), "blocksize": 4_000, "infer_bytes": 2_000}).set_index("id")
    assert df[REJECT].dropna().to_dict() == {
        "e.jsonl:7": "json:JSONDecodeError=e.jsonl line 8, column 9: Expecting property name enclosed in double quotes",
        "e.jsonl:350": "json:ValueError=e.jsonl line 351: an array, not an object",
        "e.jsonl:351": "json:JSONDecodeError=e.jsonl line 352, column 10: Extra data"}


def test_a_json_file_holding_one_array_reads_like_json_lines(tmp_path):
    """What many tools export as .json: one array of objects, pretty-printed or on one
    line. It was "no JSON object in the first lines", or a crash on a list."""
    import json

    (tmp_path / "pretty.json").write_text(json.dumps([{"a": 1, "b": "x"}, 7, {"a": "zz", "b": "y"}, {"a": 3, "b": "z"}], indent=2))
    (tmp_path / "flat.json").write_text(json.dumps([{"a": 5, "b": "w"}]))
    df = read({"format": "jsonl", "path": str(tmp_path), "blocksize": 16}).set_index("id")
    assert df.loc["pretty.json:0", "a"] == 1 and df.loc["pretty.json:3", "b"] == "z" and df.loc["flat.json:0", "a"] == 5
    assert df.loc["pretty.json:1", REJECT] == "json:ValueError=pretty.json element 1: a number, not an object"
    assert df.loc["pretty.json:1", RAW] == "7"
    assert df.loc["pretty.json:2", REJECT] == "type:a='zz'" and len(df) == 5
    (tmp_path / "cut.json").write_text('[{"a": 1},\n{"a": 2')
    with pytest.raises(SourceError, match="cut.json: starts as a JSON array but does not parse as one"):
        read({"format": "jsonl", "path": str(tmp_path / "cut.json")})


def test_parquet_folder_glob_and_empty_files(tmp_path):
    for k in range(2):
        pq.write_table(pa.table({"v": list(range(k * 5, k * 5 + 5))}), tmp_path / f"p{k}.parquet", row_group_size=2)
    (tmp_path / "empty.parquet").write_bytes(b"")
    src = read_source({"format": "parquet", "path": str(tmp_path), "rows_per_partition": 2})
    df = src.frame.compute()
    assert sorted(df["v"]) == list(range(10))
    assert df.set_index("id").loc["p1.parquet:3", "v"] == 8
    assert [s["path"].rsplit("/", 1)[1] for s in src.skipped] == ["empty.parquet"]
    df = read({"format": "parquet", "path": str(tmp_path / "p*.parquet")})
    assert len(df) == 10


def test_parquet_rows_of_blobs_get_smaller_partitions(tmp_path):
    """Encoded images cost far more CPU per byte than tabular rows: 40 MiB of 20 KiB
    rows is split at 16 MiB; 40 MiB of small rows stays one 64 MiB partition."""
    rng = np.random.default_rng(0)
    blobs = pa.table({"image": pa.array([rng.bytes(20 * 2**10) for _ in range(2048)], pa.binary())})
    pq.write_table(blobs, tmp_path / "blobs.parquet", row_group_size=64, compression="none")
    numbers = pa.table({f"x{k}": np.arange(2**19, dtype=np.float64) for k in range(10)})
    pq.write_table(numbers, tmp_path / "numbers.parquet", row_group_size=2**15)
    assert read_source({"format": "parquet", "path": str(tmp_path / "blobs.parquet")}).frame.npartitions == 3
    assert read_source({"format": "parquet", "path": str(tmp_path / "numbers.parquet")}).frame.npartitions == 1
    chosen = {"format": "parquet", "path": str(tmp_path / "blobs.parquet"), "bytes_per_partition": 64 * 2**20}
    assert read_source(chosen).frame.npartitions == 1


def test_a_parquet_row_group_larger_than_a_partition_is_read_once_as_several(tmp_path, client):
    """A file pandas wrote in one row group was one partition, one worker's work,
    whatever bytes_per_partition said: it is read by one task and handed on in slices,
    with the ids and order of the rows read whole."""
    from dask.utils import key_split

    import dsbuild
    from dsbuild.pipeline import validate_against_source

    numbers = pa.table({"id": [f"r{i}" for i in range(2**16)], **{f"x{k}": np.arange(2**16, dtype=np.float64) for k in range(8)}})
    pq.write_table(numbers, tmp_path / "one.parquet")  # 6 MiB uncompressed, one row group
    pq.write_table(numbers.slice(0, 10), tmp_path / "small.parquet")
    spec = {"format": "parquet", "path": str(tmp_path / "one.parquet"), "bytes_per_partition": "1MiB"}
    src = read_source(spec)
    assert src.frame.npartitions == 6 and src.notes == []
    tasks = [key_split(k) for k in dict(src.frame.__dask_graph__())]
    assert tasks.count("table") == 1 and tasks.count("rows") == 6
    df = src.frame.compute()
    whole = read_source({**spec, "bytes_per_partition": "1GiB"}).frame.compute()
    assert src.frame.npartitions == 6 and read_source({**spec, "bytes_per_partition": "1GiB"}).frame.npartitions == 1
    pd.testing.assert_frame_equal(df.reset_index(drop=True), whole.reset_index(drop=True))
    by_rows = read_source({**spec, "path": str(tmp_path / "one.parquet"), "bytes_per_partition": None,
                           "rows_per_partition": 10_000}).frame
    assert by_rows.npartitions == 7 and list(by_rows.compute()["x0"]) == list(range(2**16))
    ids = src.read_columns(["id"])
    assert ids.npartitions == 6 and list(ids.compute()["id"]) == list(whole["id"])
    both = read_source({**spec, "path": str(tmp_path)})  # a split file beside one read whole, in file order
    assert both.frame.npartitions == 7 and list(both.frame.compute()["id"]) == [*whole["id"], *whole["id"][:10]]
    with pq.ParquetWriter(tmp_path / "first.parquet", numbers.schema) as w:  # a large row group before a small one
        w.write_table(numbers, row_group_size=2**16)
        w.write_table(numbers.slice(0, 10))
    first = read_source({**spec, "path": str(tmp_path / "first.parquet")}).frame
    assert first.npartitions == 7 and list(first.compute()["id"]) == [*whole["id"], *whole["id"][:10]]
    job = dsbuild.job(name="p", source=spec, sink={"path": str(tmp_path / "out")})
    assert validate_against_source(job) == []


def test_parquet_schema_clash_names_the_file(tmp_path):
    pq.write_table(pa.table({"v": [1, 2]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"v": ["x", "y"]}), tmp_path / "b.parquet")
    with pytest.raises(SourceError, match=r"b\.parquet: column 'v' has type string, but int64"):
        read_source({"format": "parquet", "path": str(tmp_path)})


def test_parquet_exports_that_gained_a_column_read_as_their_union_when_asked(tmp_path):
    """Daily exports where a later one added a column: an error that says what to set;
    with merge_schemas, the union of the columns, null where a file lacks one."""
    pq.write_table(pa.table({"x": [1, 2], "y": ["a", "b"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"x": [3.5], "y": ["c"], "w": [1]}), tmp_path / "b.parquet")
    pq.write_table(pa.table({"w": [7], "x": pa.array([5], pa.int32())}), tmp_path / "c.parquet")
    with pytest.raises(SourceError, match=r"b\.parquet: column 'w' is not in .*a\.parquet; set merge_schemas: true"):
        read_source({"format": "parquet", "path": str(tmp_path)})
    source = read_source({"format": "parquet", "path": str(tmp_path), "merge_schemas": True})
    assert source.schema.names == ["x", "y", "w"] and source.schema.field("x").type == pa.float64()
    df = source.frame.compute().set_index("id")
    assert df["x"].to_dict() == {"a.parquet:0": 1.0, "a.parquet:1": 2.0, "b.parquet:0": 3.5, "c.parquet:0": 5.0}
    assert df["w"].isna().tolist() == [True, True, False, False] and df.loc["c.parquet:0", "y"] is pd.NA
    only_w = read({"format": "parquet", "path": str(tmp_path), "merge_schemas": True, "columns": ["w"]})
    assert list(only_w.columns) == ["id", "w"] and only_w["w"].count() == 2
    with pytest.raises(SourceError, match="no file has column 'v'"):
        read_source({"format": "parquet", "path": str(tmp_path), "merge_schemas": True, "columns": ["v"]})


def test_parquet_own_id_column_is_kept(tmp_path):
    pq.write_table(pa.table({"id": [10, 11], "v": [1, 2]}), tmp_path / "a.parquet")
    assert read({"format": "parquet", "path": str(tmp_path)})["id"].tolist() == ["10", "11"]


def test_images_folder_with_class_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            (tmp_path / cls / f"{i}.png").write_bytes(encode_image(rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)))
    (tmp_path / "dog" / "notes.jpg").write_text("this is not a picture")
    df = read({"format": "images", "path": str(tmp_path), "files_per_partition": 2}).set_index("id")
    assert len(df) == 7
    assert df.loc["cat/1.png", "label"] == "cat" and df.loc["dog/notes.jpg", "label"] == "dog"
    assert (df.loc["cat/1.png", "image_height"], df.loc["cat/1.png", "image_width"]) == (5, 7)
    assert df.loc["dog/notes.jpg", "image_format"] == "unknown"
    assert decode_image(df.loc["dog/2.png", "image"]).shape == (5, 7, 3)


def test_an_images_folder_of_large_files_is_cut_by_bytes_too(tmp_path):
    """256 files a partition whatever their size: a folder of phone photos (4 MiB each)
    was one partition of 1 GiB, and workers of 2 GiB died holding it and its copies."""
    rng = np.random.default_rng(0)
    sizes = [300, 300, 300, 900, 100, 100]  # KiB
    for i, kib in enumerate(sizes):
        (tmp_path / f"{i}.jpg").write_bytes(rng.bytes(kib * 2**10))
    src = read_source({"format": "images", "path": str(tmp_path), "bytes_per_partition": 2**20})
    assert src.frame.npartitions == 3  # [300, 300, 300], [900], [100, 100]
    assert sorted(src.frame.compute()["id"]) == [f"{i}.jpg" for i in range(6)]
    by_count = read_source({"format": "images", "path": str(tmp_path), "files_per_partition": 2, "bytes_per_partition": 2**20})
    assert by_count.frame.npartitions == 4  # [300, 300], [300], [900], [100, 100]
    assert read_source({"format": "images", "path": str(tmp_path)}).frame.npartitions == 1  # 2 MiB: under 16 MiB


def test_hidden_files_and_folders_are_listed_not_read(tmp_path):
    """A notebook's checkpoints would be a class of their own, macOS's '._' copies corrupt
    pictures; a camera's '_DSC0001.JPG' is a photo. Tables leave out writers' '_' files too."""
    png = encode_image(np.zeros((3, 3, 3), np.uint8))
    for rel in ("cat/1.png", "cat/_DSC0001.png", "dog/2.png", "dog/._2.png", ".ipynb_checkpoints/3.png", "cat/.thumbs/1.png"):
        (tmp_path / "img" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "img" / rel).write_bytes(png)
    src = read_source({"format": "images", "path": str(tmp_path / "img")})
    df = src.frame.compute()
    assert sorted(df["id"]) == ["cat/1.png", "cat/_DSC0001.png", "dog/2.png"] and set(df["label"]) == {"cat", "dog"}
    assert sorted(s["path"].split("/img/")[1] for s in src.skipped) == [".ipynb_checkpoints/3.png", "cat/.thumbs/1.png", "dog/._2.png"]
    assert "'.thumbs' starts with '.'" in next(s["why"] for s in src.skipped if ".thumbs" in s["path"])

    (tmp_path / "tab" / "_temporary").mkdir(parents=True)
    pq.write_table(pa.table({"v": [1, 2]}), tmp_path / "tab" / "part-0.parquet")
    pq.write_table(pa.table({"v": [3]}), tmp_path / "tab" / "_temporary" / "part-1.parquet")
    src = read_source({"format": "parquet", "path": str(tmp_path / "tab")})
    assert src.frame.compute()["v"].tolist() == [1, 2] and len(src.skipped) == 1
    (tmp_path / "csv" / ".cache").mkdir(parents=True)
    (tmp_path / "csv" / ".cache" / "a.csv").write_text("v\n1\n")
    with pytest.raises(SourceError, match="holds no files ending in .csv.*not read: .*/.cache/a.csv: '.cache' starts with '.'"):
        read_source({"format": "csv", "path": str(tmp_path / "csv")})


def test_a_spark_outputs_success_and_checksum_files_are_listed_not_read(tmp_path):
    """Spark (Hadoop's file system) writes _SUCCESS and a hidden .crc checksum beside each
    file: they were left out without a word, as no file of the source's kind. Each is
    listed, and one line says how many of which kind (validate and the run's summary)."""
    from dsbuild.io.sources.common import skipped_note

    out = tmp_path / "spark"
    out.mkdir()
    for k in range(25):
        pq.write_table(pa.table({"v": [k]}), out / f"part-{k:05d}-c000.snappy.parquet")
        (out / f".part-{k:05d}-c000.snappy.parquet.crc").write_bytes(b"crc\x00\x00\x00\x02\x00")
    (out / "_SUCCESS").write_bytes(b"")
    (out / "._SUCCESS.crc").write_bytes(b"crc\x00\x00\x00\x02\x00")
    (out / "notes.txt").write_text("exported by the nightly job")
    src = read_source({"format": "parquet", "path": str(out)})
    assert sorted(src.frame.compute()["v"]) == list(range(25))
    listed = [(s["path"].rsplit("/", 1)[1], s["why"]) for s in src.skipped]
    assert listed[:2] == [("._SUCCESS.crc", "'._SUCCESS.crc' starts with '.': hidden files and folders are not read"),
                          (".part-00000-c000.snappy.parquet.crc", "'.part-00000-c000.snappy.parquet.crc' starts with '.': "
                                                                  "hidden files and folders are not read")]
    assert listed[20:] == [("spark", "6 more hidden files in it are not read either"),
                           ("_SUCCESS", "'_SUCCESS' starts with '_': a writer's own files are not read"),
                           ("notes.txt", "not a file this source reads (names ending in .parquet, .pq, .parq)")]
    assert skipped_note(src.skipped) == ("28 files not read, each listed in manifest.json (input.skipped): 26 hidden "
                                         "(._SUCCESS.crc, …); 1 a writer's own (_SUCCESS); 1 of another "
                                         "kind (notes.txt)")
    assert skipped_note([]) is None


def test_an_empty_text_file_is_listed_not_read(tmp_path):
    """A 0-byte CSV or JSON-lines file among good ones stopped the run ("empty file, no
    header line"); Parquet's were listed as not read."""
    for fmt, good in (("csv", "v\n1\n2\n"), ("jsonl", '{"v": 1}\n{"v": 2}\n')):
        folder = tmp_path / fmt
        folder.mkdir()
        (folder / f"a.{fmt}").write_text("")
        (folder / f"b.{fmt}").write_text(good)
        src = read_source({"format": fmt, "path": str(folder)})
        assert src.frame.compute()["v"].tolist() == [1, 2]
        assert [(s["path"].rsplit("/", 1)[1], s["why"]) for s in src.skipped] == [(f"a.{fmt}", "empty file (0 bytes): no rows to read")]
        (folder / f"b.{fmt}").write_text("")
        with pytest.raises(SourceError, match="every file is empty"):
            read_source({"format": fmt, "path": str(folder)})


def test_a_glob_leaves_out_what_its_wildcards_matched_hidden(tmp_path):
    """fsspec's '*' matches names starting with '.' (a shell's does not): data/*/*.parquet
    read a notebook's checkpoint copies as more rows, and Spark's _temporary failed the
    read as another partitioning. A name the pattern spells is read."""
    for rel, v in (("year=2024/a.parquet", 1), ("year=2025/a.parquet", 2), (".ipynb_checkpoints/a.parquet", 3),
                   ("_temporary/a.parquet", 4)):
        (tmp_path / "tab" / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"v": [v]}), tmp_path / "tab" / rel)
    src = read_source({"format": "parquet", "path": str(tmp_path / "tab" / "*" / "*.parquet")})
    assert sorted(src.frame.compute()["v"].tolist()) == [1, 2]
    assert sorted(s["path"].split("/tab/")[1] for s in src.skipped) == [".ipynb_checkpoints/a.parquet", "_temporary/a.parquet"]
    src = read_source({"format": "parquet", "path": str(tmp_path / "tab" / "_temporary" / "*.parquet")})
    assert src.frame.compute()["v"].tolist() == [4] and src.skipped == []


def test_image_ids_are_unique_for_a_file_or_a_glob(tmp_path):
    """A file's id was '.', and a glob's images were named by their bare file names, so
    cat/0.png and dog/0.png were both '0.png' (and had no label)."""
    png = encode_image(np.zeros((3, 3, 3), np.uint8))
    for rel in ("cat/0.png", "dog/0.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(png)
    df = read({"format": "images", "path": str(tmp_path / "cat" / "0.png")})
    assert df["id"].tolist() == ["0.png"]
    df = read({"format": "images", "path": str(tmp_path / "*" / "*.png")})
    assert sorted(df["id"]) == ["cat/0.png", "dog/0.png"] and sorted(df["label"]) == ["cat", "dog"]


def test_flat_image_folder_has_no_label(tmp_path):
    (tmp_path / "a.png").write_bytes(encode_image(np.zeros((2, 2), np.uint8)))
    df = read({"format": "images", "path": str(tmp_path)})
    assert "label" not in df.columns and df["id"].tolist() == ["a.png"]
    with pytest.raises(SourceError, match="not in a class subfolder"):
        read_source({"format": "images", "path": str(tmp_path), "labels": "folders"})


def test_a_stray_image_beside_class_folders_is_named_and_other_files_listed(tmp_path):
    """One image at the top of a folder of class folders turned the labels off, and the
    job failed later on a missing label column; a text file among them went unsaid."""
    png = encode_image(np.zeros((2, 2), np.uint8))
    for rel in ("cats/1.png", "dogs/2.png", "stray.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(png)
    with pytest.raises(SourceError, match="2 images sit in class subfolders, but 'stray.png' not: move it into a class folder"):
        read_source({"format": "images", "path": str(tmp_path)})
    (tmp_path / "stray.png").unlink()
    for k in range(25):
        (tmp_path / "cats" / f"{k}.xml").write_text("<annotation/>")
    src = read_source({"format": "images", "path": str(tmp_path)})
    assert sorted(src.frame.compute()["label"]) == ["cats", "dogs"]
    assert len(src.skipped) == 21 and "not a file this source reads" in src.skipped[0]["why"]
    assert src.skipped[-1]["why"] == "5 more files in it are not read either"


def test_bundled_samples():
    digits = read({"format": "sample", "name": "digits", "partitions": 3})
    assert len(digits) == 1797 and digits["id"].is_unique
    assert decode_image(digits["image"].iloc[5]).shape == (8, 8)
    assert sorted(digits["label"].unique()) == [str(d) for d in range(10)]
    adult = read({"format": "sample", "name": "adult"})
    assert adult.shape[0] == 32_561 and adult["income"].value_counts()[">50K"] == 7_841
    assert adult["workclass"].isna().sum() == 1_836  # the '?' cells of the original
    german = read({"format": "sample", "name": "german_credit"})
    assert german.shape[0] == 1000 and set(german["sex"]) == {"male", "female"}
    cancer = read({"format": "sample", "name": "breast_cancer"})
    assert cancer.shape == (569, 32)


@pytest.mark.parametrize("name", ["adult", "german_credit"])
def test_bundled_tables_take_their_partitions(name):
    """The tables bundled as a compressed CSV came as one partition whatever the job's
    ``partitions`` said, so a job (or test) that varied it to check that its output does
    not depend on the partitioning varied nothing."""
    one = read_source({"format": "sample", "name": name, "partitions": 1}).frame
    four = read_source({"format": "sample", "name": name, "partitions": 4}).frame
    assert one.npartitions == 1 and four.npartitions == 4
    rows = four.map_partitions(len).compute().tolist()
    assert len(rows) == 4 and min(rows) > 0
    pd.testing.assert_frame_equal(four.compute().reset_index(drop=True), one.compute().reset_index(drop=True))


def test_missing_path_is_named(tmp_path):
    with pytest.raises(SourceError, match="does not exist") as e:
        read_source({"format": "csv", "path": str(tmp_path / "nope.csv")})
    assert "did you mean" not in str(e.value)


def test_a_misspelt_source_path_gets_the_name_meant(tmp_path):
    """A typo in a job file's name was answered with the file meant; one in the source's
    path (``trian.csv``) was not."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SourceError, match=r"does not exist.*; did you mean '.*data/train\.csv'\?$"):
        read_source({"format": "csv", "path": str(tmp_path / "data" / "trian.csv")})
    with pytest.raises(SourceError, match="does not exist") as e:  # its folder missing too: nothing to suggest
        read_source({"format": "csv", "path": str(tmp_path / "dta" / "trian.csv")})
    assert "did you mean" not in str(e.value)


def test_csv_from_a_spreadsheet_keeps_its_names_and_quoted_values(tmp_path):
    """A byte-order mark before the header (Excel's "CSV UTF-8"), CRLF line ends, and
    quoted values holding the separator, a space after it, or a line break. The mark
    became part of the first column's name (so ``columns.id: id`` found no column), and
    the spaces after separators were taken out inside quotes too: "Smith, J" → "Smith,J"."""
    text = 'id, name, age\r\nu1, "Smith, J", 30\r\nu2, "two\nlines", 41\r\nu3,  Ann , 52\r\n'
    (tmp_path / "a.csv").write_bytes("\ufeff".encode() + text.encode())
    df = read({"format": "csv", "path": str(tmp_path / "a.csv")}).set_index("id")
    assert list(df.columns[:2]) == ["name", "age"] and df.index.tolist() == ["u1", "u2", "u3"]
    assert df["name"].tolist() == ["Smith, J", "two\nlines", "Ann "] and df["age"].tolist() == [30, 41, 52]


@pytest.mark.parametrize("quoted", [False, True], ids=["plain", "quoted-elsewhere"])
def test_csv_every_space_after_a_separator_is_skipped_not_two(tmp_path, quoted):
    """skip_initial_space took out two spaces after a separator, as two replaces do:
    ",    x" became "  x" and a cell of three spaces one space (csv's skipinitialspace,
    which reads the header and the sample, takes them all)."""
    last = '"q, r"' if quoted else "q"
    text = f"id,text,n\na,   ,1\nb,    x  y  ,2\nc,{last},3\n"
    (tmp_path / "a.csv").write_text(text)
    df = read({"format": "csv", "path": str(tmp_path / "a.csv")}).set_index("id")
    assert df["text"].isna()["a"] and df.loc["b", "text"] == "x  y  " and df["n"].tolist() == [1, 2, 3]


def test_csv_spaces_after_separators_are_skipped_in_bounded_memory():
    """Adult's ``39, State-gov, ...``: the substitution over a whole 64 MiB block kept an
    object per piece it cut and peaked at 1.6 GiB (25 times the block)."""
    from dsbuild.io.sources.delimited import _strip_after_separators

    line = b"39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K\n"
    data = line * 40_000
    tracemalloc.start()
    try:
        stripped = _strip_after_separators(data, ",")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stripped == data.replace(b", ", b",")
    assert peak < 4 * len(data)


def test_csv_spaces_after_separators_with_quotes_across_slices(monkeypatch):
    """The block is stripped a slice at a time: a quoted value that spans lines, and so
    slices, keeps its spaces; those after a separator outside quotes go."""
    from dsbuild.io.sources import delimited

    monkeypatch.setattr(delimited, "_STRIP_SLICE", 4)
    data = b'a,  "x, y\nz,  w\n, v",  b\nc, d\n"e, ""f"",\n g",   h\n'
    assert delimited._strip_after_separators(data, ",") == b'a,"x, y\nz,  w\n, v",b\nc,d\n"e, ""f"",\n g",h\n'


def test_csv_block_read_holds_its_table_about_once(tmp_path):
    """Arrow's ``read_csv`` keeps every parsed chunk until the whole table is converted:
    a block's read peaked at twice its table in Arrow memory (2.1x here; 188 MiB for a
    64 MiB block of Adult whose table is 96 MiB)."""
    rng = np.random.default_rng(0)
    n = 300_000
    words = np.array([f"word{i}" for i in range(1000)])[rng.integers(0, 1000, n)]
    pd.DataFrame({"a": rng.integers(0, 10**6, n), "b": rng.standard_normal(n), "w": words, "t": ["a longer text value"] * n}).to_csv(
        tmp_path / "a.csv", index=False)
    table_bytes = pacsv.read_csv(tmp_path / "a.csv").nbytes
    old, pool = pa.default_memory_pool(), pa.proxy_memory_pool(pa.default_memory_pool())
    pa.set_memory_pool(pool)
    try:
        rows = len(read({"format": "csv", "path": str(tmp_path / "a.csv")}))  # the frame is freed before the pool
    finally:
        pa.set_memory_pool(old)
    assert rows == n
    assert pool.max_memory() < 1.9 * table_bytes


def test_csv_own_id_column_is_kept(tmp_path):
    (tmp_path / "a.csv").write_text("id,v\nu7,1\nu9,2\nu3,3,extra\n")
    df = read({"format": "csv", "path": str(tmp_path / "a.csv")}).set_index("id")
    assert df.loc["u7", "v"] == 1 and df.loc["u9", "v"] == 2
    assert df.loc["a.csv:2", REJECT] == "csv:fields=expected 2, got 3"  # unparseable: no own id to use


def test_parquet_files_whose_types_differ_without_losing_values(tmp_path):
    """Files written apart by pandas: a column entirely missing in one file (type null),
    categoricals with few and with many categories (int8 and int16 dictionary indices),
    integers in one file and floats in another (where pandas met a missing value),
    columns in another order. Each was refused as a schema clash."""
    pd.DataFrame({"x": [1, 2], "note": ["a", "b"], "c": pd.Categorical(["u", "v"])}).to_parquet(tmp_path / "a.parquet")
    many = [f"k{i}" for i in range(300)]
    pd.DataFrame({"note": [None, None], "x": [3.5, np.nan], "c": pd.Categorical(["k0", "k299"], categories=many)}).to_parquet(tmp_path / "b.parquet")
    assert pq.read_schema(tmp_path / "b.parquet").field("note").type == pa.null()
    df = read({"format": "parquet", "path": str(tmp_path)}).sort_values("id")
    assert df["x"].tolist()[:3] == [1.0, 2.0, 3.5] and np.isnan(df["x"].iloc[3])
    assert df["note"].tolist()[:2] == ["a", "b"] and df["note"].iloc[2:].isna().all()
    assert df["c"].astype(str).tolist() == ["u", "v", "k0", "k299"]


def test_parquet_written_by_pandas_from_nested_arrow_columns(tmp_path):
    """pandas records an Arrow-backed column's dtype as text it cannot parse again for
    nested types; the file still reads, its structs and lists as dicts and lists."""
    objects = pa.struct([("bbox", pa.list_(pa.list_(pa.float64()))), ("category", pa.list_(pa.string()))])
    cells = [{"bbox": [[1.0, 2.0, 3.0, 4.0]], "category": ["cat"]}, {"bbox": [], "category": []}, None]
    frame = pd.DataFrame({
        "objects": pd.Series(cells, dtype=pd.ArrowDtype(objects)),
        "embedding": pd.Series([[0.5, 1.5], [2.0], None], dtype=pd.ArrowDtype(pa.list_(pa.float32()))),
        "n": pd.Series([1, 2, None], dtype="int64[pyarrow]"),
    })
    frame.to_parquet(tmp_path / "nested.parquet")
    with pytest.raises(TypeError, match="not understood"):  # what a plain read of the file does
        pq.read_table(tmp_path / "nested.parquet").to_pandas()
    with dask.config.set({"dataframe.convert-string": False}):  # as dsbuild.run reads
        out = read({"format": "parquet", "path": str(tmp_path / "nested.parquet")})
    assert [list(map(list, o["bbox"])) if o is not None else None for o in out["objects"]] == [[[1.0, 2.0, 3.0, 4.0]], [], None]
    assert [list(o["category"]) if o is not None else None for o in out["objects"]] == [["cat"], [], None]
    assert [list(e) if e is not None else None for e in out["embedding"]] == [[0.5, 1.5], [2.0], None]
    assert out["n"].tolist()[:2] == [1, 2] and pd.isna(out["n"].iloc[2])


def test_a_file_that_is_not_csv_text_is_named_for_what_it_is(tmp_path):
    """A Parquet file read as CSV was 'not utf8 text; set source.encoding to latin-1'."""
    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(SourceError, match="x.parquet: not CSV text but a Parquet file: use format: parquet"):
        read_source({"format": "csv", "path": str(tmp_path / "x.parquet")})


def test_jsonl_blocks_read_by_arrow_equal_those_read_line_by_line(tmp_path, monkeypatch):
    """Arrow's JSON reader takes a block whose lines all fit (200,000 lines: 3.0 s → 0.2 s);
    a block with a line that does not, or a blank line, goes line by line, as before."""
    from dsbuild.io.sources.jsonl import _JsonBlock

    rows = [{"k": i, "x": i / 3, "s": f"t{i}", "tags": ["a", "b"][: i % 3], "box": {"w": i, "h": 2.5}} for i in range(3000)]
    lines = [json.dumps(r) for r in rows]
    lines[2500] = '{"k": "not a number", "x": 1.0}'  # past the typing sample, in a later block
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n\n" + json.dumps(rows[0]) + "\n")
    spec = {"format": "jsonl", "path": str(tmp_path / "d.jsonl"), "blocksize": 20_000, "infer_bytes": 20_000}
    reader = _JsonBlock(None, read_source(spec).schema)
    assert reader._read_whole(("\n".join(lines[:3]) + "\n").encode(), "d.jsonl", 0).num_rows == 3  # Arrow's
    assert reader._read_whole((lines[2500] + "\n").encode(), "d.jsonl", 0) is None  # line by line
    fast = read(spec)
    monkeypatch.setattr(_JsonBlock, "_read_whole", lambda self, *a: None)
    slow = read(spec)
    pd.testing.assert_frame_equal(fast.reset_index(drop=True), slow.reset_index(drop=True))
    assert fast.loc[fast[REJECT].notna(), "id"].tolist() == ["d.jsonl:2500"] and len(fast) == 3001
    assert fast.set_index("id").loc["d.jsonl:3001", "k"] == 0  # numbered by line past the blank one


def test_jsonl_values_that_do_not_fit_are_rejected_the_same_way_at_any_blocksize(tmp_path):
    """An integer beyond int64 or an escaped lone surrogate crashed the job; 7.5 in an integer
    column became 7; a whole number in a float column was kept by Arrow's reader and
    rejected line by line, so the output changed with the blocksize."""
    lines = ['{"i": 1, "f": 1.5, "s": "a"}', '{"i": 2, "f": 2.5, "s": "b"}', '{"i": 9223372036854775808, "f": 9007199254740993, "s": "c"}',
             '{"i": 7.5, "f": 3, "s": "d"}', '{"i": 3, "f": 1.0, "s": "\\ud800"}', '{"i": 4, "f": 12345678901234567890123, "s": "e"}']
    (tmp_path / "v.jsonl").write_text("\n".join(lines) + "\n")
    outs = []
    for blocksize, infer in ((16, 64), (100, 64), (10**6, 64)):  # the first two lines type the columns
        df = read({"format": "jsonl", "path": str(tmp_path / "v.jsonl"), "blocksize": blocksize, "infer_bytes": infer})
        outs.append(df.sort_values("id").reset_index(drop=True))
    for other in outs[1:]:
        pd.testing.assert_frame_equal(outs[0], other)
    df = outs[0].set_index("id")
    assert df[REJECT].dropna().to_dict() == {"v.jsonl:2": "type:i=9223372036854775808", "v.jsonl:3": "type:i=7.5",
                                             "v.jsonl:4": "type:s='\\ud800'"}
    assert df.loc["v.jsonl:5", "f"] == 1.2345678901234568e22 and str(df["i"].dtype) == "Int64"


def test_jsonl_a_field_with_no_value_in_the_sample_keeps_its_later_objects_as_json(tmp_path):
    """An API that fills a field only sometimes: null (or []) through the type sample,
    objects and lists after it. Each of those rows was rejected as type:meta={...}; the
    field is read as text, an object or list as its JSON, and validate says so."""
    lines = [{"id": f"x{i}", "meta": None if i < 2500 else {"a": i, "b": "é"}, "vals": [] if i < 2500 else [1.5],
              "n": i} for i in range(3000)]
    (tmp_path / "api.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    src = read_source({"format": "jsonl", "path": str(tmp_path / "api.jsonl"), "blocksize": 20_000, "infer_bytes": 20_000})
    df = src.frame.compute().set_index("id")
    assert df[REJECT].isna().all() and len(df) == 3000 and df["n"].sum() == sum(range(3000))
    assert df.loc["x2999", "meta"] == '{"a": 2999, "b": "é"}' and df.loc["x2999", "vals"] == "[1.5]"
    assert pd.isna(df.loc["x0", "meta"]) and df.loc["x0", "vals"] == "[]"
    assert src.notes == [f"source: {tmp_path / 'api.jsonl'}: meta, vals have no value in the first 20,000 bytes (null, or "
                         "empty lists): read as text, an object or list as its JSON; set infer_bytes to type them by more lines"]


def test_jsonl_a_field_added_inside_an_object_is_rejected_not_dropped(tmp_path):
    """A field an API added inside an object after the type sample ({"user": {"age": 3,
    "city": "Oslo"}}) was dropped from every row without a word, where one added at the
    top is rejected as json:unknown-field. It is rejected the same way, named by its path,
    inside lists of objects too; the rows without it are read as before."""
    lines = [{"user": {"age": i, **({"city": "Oslo"} if i >= 2500 else {})}, "tags": [{"k": "a"}], "n": i} for i in range(3000)]
    lines[2400]["tags"] = [{"k": "b"}, {"k": "c", "v": 1}]
    (tmp_path / "api.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    for blocksize in (20_000, 10**7):
        with dask.config.set({"dataframe.convert-string": False}):
            df = read({"format": "jsonl", "path": str(tmp_path / "api.jsonl"), "blocksize": blocksize, "infer_bytes": 20_000})
        reasons = df.set_index("id")[REJECT].dropna()
        assert reasons["api.jsonl:2400"] == "json:unknown-field=tags.v" and reasons["api.jsonl:2999"] == "json:unknown-field=user.city"
        assert len(reasons) == 501 and df.set_index("id").loc["api.jsonl:11", "user"] == {"age": 11}


def test_jsonl_fractions_inside_lists_and_objects_of_integers_are_rejected(tmp_path):
    """[1, 2.5] in a list of integers became [1, 2], and {"p": 1.5} in an object of them {"p": 1}."""
    lines = ['{"l": [1, 2], "n": {"p": 1}}', '{"l": [3], "n": {"p": 2}}', '{"l": [1, 2.5], "n": {"p": 1}}',
             '{"l": [5], "n": {"p": 1.5}}', '{"l": [6.0], "n": {"p": 3}}']
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    for blocksize in (10, 10**6):
        with dask.config.set({"dataframe.convert-string": False}):  # lists as lists, as dsbuild.run reads them
            df = read({"format": "jsonl", "path": str(tmp_path / "c.jsonl"), "blocksize": blocksize, "infer_bytes": 30}).set_index("id")
        assert df[REJECT].dropna().to_dict() == {"c.jsonl:2": "type:l=[1, 2.5]", "c.jsonl:3": "type:n={'p': 1.5}"}
        assert list(df.loc["c.jsonl:4", "l"]) == [6]


def test_jsonl_not_in_utf8_stops_the_run_or_rejects_the_line_never_keeps_it(tmp_path):
    """Arrow's JSON reader took latin-1 bytes into string columns as they were: the run
    succeeded and its Parquet could not be read back (UnicodeDecodeError)."""
    (tmp_path / "a.jsonl").write_bytes(b'{"t": "plain"}\n{"t": "caf\xe9"}\n')
    with pytest.raises(SourceError, match=r"a.jsonl: line 2 is not UTF-8 text"):
        read({"format": "jsonl", "path": str(tmp_path / "a.jsonl")})
    lines = [b'{"t": "line %d caf\xc3\xa9"}' % i for i in range(300)]
    lines[250] = b'{"t": "caf\xe9 latin"}'  # past the sample, in a later block
    (tmp_path / "b.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    df = read({"format": "jsonl", "path": str(tmp_path / "b.jsonl"), "infer_bytes": 500, "blocksize": 2000})
    assert df.loc[df[REJECT].notna(), REJECT].tolist() == ["json:not-utf8=b.jsonl line 251"]
    assert df.loc[df[REJECT].notna(), "id"].tolist() == ["b.jsonl:250"]
    assert [t for t in df["t"].dropna()] == [f"line {i} café" for i in range(300) if i != 250]


def test_jsonl_in_utf16_as_powershell_writes_it(tmp_path):
    """Windows PowerShell's Out-File and > write UTF-16 (little-endian, with its byte-order
    mark, CRLF): such a file was refused with advice to convert it. It is read as its
    text, cut into blocks at its own newlines, beside UTF-8 files; a .json array and
    UTF-32 too. A line that is not JSON is rejected with its text."""
    lines = [json.dumps({"n": i, "name": f"Müller {i} 日本"}, ensure_ascii=False) for i in range(3000)]
    lines[2500] = '{"n": 2500, "name": "cut'
    (tmp_path / "ps.jsonl").write_bytes("\r\n".join([*lines, ""]).encode("utf-16"))
    spec = {"format": "jsonl", "path": str(tmp_path / "ps.jsonl"), "blocksize": 8_000, "infer_bytes": 4_000}
    src = read_source(spec)
    assert src.frame.npartitions > 10
    assert src.notes == [f"source: {tmp_path / 'ps.jsonl'} starts with UTF-16's byte-order mark: read as utf-16 text"]
    df = src.frame.compute().set_index("id")
    assert len(df) == 3000 and df.loc["ps.jsonl:2999", "name"] == "Müller 2999 日本" and df.loc["ps.jsonl:0", "n"] == 0
    assert df.loc["ps.jsonl:2500", RAW] == '{"n": 2500, "name": "cut' and df[REJECT].notna().sum() == 1
    assert df["n"].sum() == sum(range(3000)) - 2500
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "a.jsonl").write_text('{"n": 1, "name": "ä"}\n', encoding="utf-8")
    (tmp_path / "more" / "b.json").write_bytes(codecs.BOM_UTF32_BE + '[{"n": 2, "name": "ö"}]'.encode("utf-32-be"))
    (tmp_path / "more" / "c.jsonl.gz").write_bytes(gzip.compress('{"n": 3, "name": "ü"}\r\n'.encode("utf-16")))
    more = read({"format": "jsonl", "path": str(tmp_path / "more")})
    assert more[["id", "n", "name"]].values.tolist() == [["a.jsonl:0", 1, "ä"], ["b.json:0", 2, "ö"], ["c.jsonl.gz:0", 3, "ü"]]


def test_jsonl_numbers_dates_and_times_written_as_text_are_read_as_such(tmp_path):
    """BigQuery's JSON export writes INT64 as text ("39", exact past 2**53) and TIMESTAMP as
    "2024-01-01 10:00:00 UTC"; Spark and pandas write dates and times as ISO text. They were
    text, where the same table as CSV or Parquet had numbers and timestamps. A later value
    that is not such text is rejected, naming it; a code with a leading zero stays text."""
    import datetime

    big = 2**53 + 1
    lines = [json.dumps({"n": str(i), "big": str(big + i), "ts": f"2024-01-01 10:{i % 60:02d}:00 UTC", "day": f"2024-02-{i % 28 + 1:02d}",
                         "spark": f"2024-01-01T10:{i % 60:02d}:00.000Z", "code": f"0{i % 9}", "local": f"2024-01-01T08:{i % 60:02d}"})
             for i in range(3000)]
    lines[2500] = lines[2500].replace('"n": "2500"', '"n": "abc"')
    (tmp_path / "bq.json").write_text("\n".join(lines) + "\n")
    src = read_source({"format": "jsonl", "path": str(tmp_path / "bq.json"), "infer_bytes": 8_000, "blocksize": 8_000})
    assert [str(t) for t in src.schema.types] == ["int64", "int64", "timestamp[us, tz=UTC]", "date32[day]", "timestamp[us, tz=UTC]",
                                                   "string", "timestamp[us]"]
    assert src.notes[0].endswith("n (int64), big (int64), ts (timestamp[us, tz=UTC]), day (date32[day]), spark (timestamp[us, "
                                 "tz=UTC]), local (timestamp[us]): written as JSON text ('39', as BigQuery writes INT64; ISO dates "
                                 "and times): read as such; list them in source.text_columns to keep them text")
    df = src.frame.compute().set_index("id")
    assert df[REJECT].dropna().to_dict() == {"bq.json:2500": "type:n='abc'"} and src.frame.npartitions > 10
    row = df.loc["bq.json:2999"]
    assert row["n"] == 2999 and row["big"] == big + 2999 and row["code"] == "02" and row["day"] == datetime.date(2024, 2, 4)
    assert row["ts"] == row["spark"] == pd.Timestamp("2024-01-01 10:59", tz="UTC") and row["local"] == pd.Timestamp("2024-01-01 08:59")
    assert df["n"].sum() == sum(range(3000)) - 2500
    kept = read_source({"format": "jsonl", "path": str(tmp_path / "bq.json"), "text_columns": ["n"], "infer_bytes": 8_000})
    assert kept.schema.field("n").type == pa.string()


def test_a_zip_archive_of_several_files_is_refused_and_one_in_it_can_be_named(tmp_path):
    """fsspec reads a .zip as its first file: a Kaggle download (train.csv, test.csv,
    sample_submission.csv) was read as train.csv alone, without a word. It stops, naming
    the files; a chained URL reads one (or a glob several); a zip of one file is read."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "titanic.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("train.csv", "PassengerId,Survived,Age\n" + "".join(f"{i},{i % 2},{20 + i}\n" for i in range(1, 101)))
        z.writestr("test.csv", "PassengerId,Age\n" + "".join(f"{i},{i}\n" for i in range(101, 151)))
        z.writestr("gender_submission.csv", "PassengerId,Survived\n101,0\n")
    with pytest.raises(SourceError, match=r"titanic.zip: a zip archive of 3 files \(train.csv, test.csv, gender_submission.csv\); "
                                          r"only its first would be read: name the one to read, as path: zip://train.csv::"):
        read_source({"format": "csv", "path": str(tmp_path / "titanic.zip")})
    df = read({"format": "csv", "path": f"zip://train.csv::{tmp_path / 'titanic.zip'}", "blocksize": 500})
    assert len(df) == 100 and df["Age"].sum() == sum(range(21, 121)) and df["id"].iloc[-1] == "train.csv:99"
    with zipfile.ZipFile(tmp_path / "one.csv.zip", "w") as z:
        z.writestr("one.csv", "a,b\n1,x\n")
    assert read({"format": "csv", "path": str(tmp_path / "one.csv.zip")})[["a", "b"]].values.tolist() == [[1, "x"]]


def test_an_excel_workbook_given_as_csv_says_to_save_it_as_csv(tmp_path):
    """An .xlsx is a zip of XML parts: the advice was "a zip archive: unpack it"."""
    import zipfile

    parts = {  # the parts of a one-sheet workbook, [Content_Types].xml first as Excel writes it
        "[Content_Types].xml": '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" '
                               'ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/'
                               'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/></Types>',
        "_rels/.rels": '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="r1" '
                       'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
                       '</Relationships>',
        "xl/workbook.xml": '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheets><sheet name="Sheet1" '
                           'sheetId="1"/></sheets></workbook>',
        "xl/worksheets/sheet1.xml": '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row '
                                    'r="1"><c r="A1"><v>1</v></c></row></sheetData></worksheet>',
    }
    with zipfile.ZipFile(tmp_path / "prices.xlsx", "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in parts.items():
            z.writestr(name, text)
    with pytest.raises(SourceError, match=r"prices.xlsx: not CSV text but an Excel workbook: save it as CSV"):
        read_source({"format": "csv", "path": str(tmp_path / "prices.xlsx")})


def test_a_frame_pandas_wrote_whole_with_to_json_is_refused_not_read_as_one_row(tmp_path):
    """DataFrame.to_json() writes one object of columns (orient='columns', its default; or
    'index', of rows): it was read as one row of 3 struct columns, and the run kept 1 row."""
    df = pd.DataFrame({"age": [39, 50, 38], "sex": ["Male", "Female", "Male"], "income": ["<=50K", ">50K", "<=50K"]})
    for orient in ("columns", "index"):
        df.to_json(tmp_path / f"{orient}.json", orient=orient)
        with pytest.raises(SourceError, match=rf"{orient}.json: one JSON object holding a whole table, by column or by row "
                                              r"\(.*\), as pandas' DataFrame.to_json\(\) writes by default: it would be read "
                                              r"as one row; write it as df.to_json\(path, orient='records', lines=True\)"):
            read_source({"format": "jsonl", "path": str(tmp_path / f"{orient}.json")})
    df.to_json(tmp_path / "lines.jsonl", orient="records", lines=True)
    assert read({"format": "jsonl", "path": str(tmp_path / "lines.jsonl")})["age"].tolist() == [39, 50, 38]
    (tmp_path / "one.jsonl").write_text('{"train": {"acc": 0.9, "loss": 0.3}, "test": {"acc": 0.8, "loss": 0.4}}\n')
    assert len(read({"format": "jsonl", "path": str(tmp_path / "one.jsonl")})) == 1  # one record of objects is a row


def test_csv_in_utf16_as_excel_exports_unicode_text(tmp_path):
    """Excel's "Unicode Text" is UTF-16 with a byte-order mark. Files are cut and lines
    found at the byte \\n, which in UTF-16 is half a character: encoding: utf-16 failed as
    "not utf-16 text", and without it the advice was latin-1, then to set the encoding. It
    is read as UTF-8 text, and without the encoding by its byte-order mark."""
    rows = "a\tb\n" + "".join(f"{i}\tcafé {i}\n" for i in range(3000)) + "oops\tx\n"
    (tmp_path / "export.txt").write_text(rows, encoding="utf-16")
    df = read({"format": "csv", "path": str(tmp_path / "export.txt"), "encoding": "utf-16", "blocksize": 4_000, "infer_bytes": 2_000})
    assert len(df) == 3001 and df.loc[df["id"] == "export.txt:2999", "b"].tolist() == ["café 2999"]
    assert df.loc[df[REJECT].notna(), ["id", REJECT, RAW]].values.tolist() == [["export.txt:3000", "type:a=oops", "oops\tx"]]
    src = read_source({"format": "csv", "path": str(tmp_path / "export.txt"), "blocksize": 4_000, "infer_bytes": 2_000})
    pd.testing.assert_frame_equal(src.frame.compute(), df)
    assert src.notes == [f"source: {tmp_path / 'export.txt'} starts with UTF-16's byte-order mark: read as utf-16 text"]
    (tmp_path / "u32.csv").write_bytes("a,b\n1,x\n".encode("utf-32"))
    assert read({"format": "csv", "path": str(tmp_path / "u32.csv")})[["a", "b"]].values.tolist() == [[1, "x"]]
    (tmp_path / "l1.csv").write_bytes(b"\xff\xfea,b\n1,x\n")  # the job's encoding has the last word
    assert list(read({"format": "csv", "path": str(tmp_path / "l1.csv"), "encoding": "latin-1"}).columns[1:3]) == ["ÿþa", "b"]


def test_csv_with_a_value_longer_than_arrows_parsing_block(tmp_path):
    """A record over 1 MiB (a document, an image as base64) failed the run with Arrow's
    "straddling object straddles two block boundaries", in the type sample or in a block."""
    rows = ["a,b"] + [f"{i},short" for i in range(60)]
    rows[30], rows[40] = "29," + "x" * (2 * 2**20), "39,too,many"
    (tmp_path / "long.csv").write_text("\n".join(rows) + "\n")
    for blocksize in (64 * 2**20, 2**20):
        df = read({"format": "csv", "path": str(tmp_path / "long.csv"), "blocksize": blocksize}).set_index("id")
        assert len(df) == 60 and len(df.loc["long.csv:29", "b"]) == 2 * 2**20 and df.loc["long.csv:59", "b"] == "short"
        assert df[REJECT].dropna().to_dict() == {"long.csv:39": "csv:fields=expected 2, got 3"}


def test_csv_whose_lines_end_with_a_carriage_return_alone_is_a_clear_error(tmp_path):
    """Old Mac line ends (Excel for Mac's "CSV" export): the whole file was one line to
    the header's reader, and the run ended in csv.Error's traceback."""
    (tmp_path / "mac.csv").write_bytes(b'doc,text\ra,one two\rb,"three"\r')
    with pytest.raises(SourceError, match=r"mac.csv: its lines end with a carriage return alone"):
        read({"format": "csv", "path": str(tmp_path / "mac.csv")})


def test_jsonl_whose_lines_end_with_a_carriage_return_alone_says_so(tmp_path):
    """The whole file was one line that did not parse: 'no JSON object in the first lines'."""
    (tmp_path / "mac.jsonl").write_bytes(b'{"t": "a"}\r{"t": "b"}\r')
    with pytest.raises(SourceError, match=r"mac.jsonl: its lines end with a carriage return alone"):
        read({"format": "jsonl", "path": str(tmp_path / "mac.jsonl")})


def test_a_file_that_is_not_json_lines_says_what_it_holds(tmp_path):
    """An API's {"data": [...]}, objects pretty-printed over lines, an array in a .jsonl
    file: each was "no JSON object in the first lines", with no word of what to do."""
    import json

    (tmp_path / "api.json").write_text(json.dumps({"data": [{"a": 1}, {"a": 2}], "next": None}, indent=2))
    (tmp_path / "pretty.jsonl").write_text("".join(json.dumps({"a": i}, indent=2) + "\n" for i in range(3)))
    (tmp_path / "array.jsonl").write_text(json.dumps([{"a": 1}]))
    says = {"api.json": "one JSON object, whose 'data' holds the records; .* jq -c '.data\\[\\]'",
            "pretty.jsonl": "pretty-printed over lines; write one per line, e.g. jq -c .",
            "array.jsonl": "one JSON array; name the file .json"}
    for name, what in says.items():
        with pytest.raises(SourceError, match=f"{name}: no JSON object in the first lines: it.* {what}"):
            read({"format": "jsonl", "path": str(tmp_path / name)})


def test_a_glob_that_matches_nothing_says_so(tmp_path, monkeypatch):
    """A glob that matched no file was said to hold "no files ending in .csv, .csv.gz,
    ...", as if it had matched some of another kind; a relative one says where it looked."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError, match=f"source path 'exports/\\*.csv' matches no file \\(looked for {tmp_path}/exports"):
        read({"format": "csv", "path": "exports/*.csv"})


def test_a_format_in_capitals_is_read_as_its_lower_case(tmp_path):
    """``format: CSV`` (as the files' extensions spell it) was "unknown format 'CSV'"."""
    from dsbuild.io.sources import check_source_spec
    from dsbuild.job import load_job

    (tmp_path / "A.CSV").write_text("a,b\n1,x\n2,y\n")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "B.PARQUET")
    assert read({"format": "CSV", "path": str(tmp_path / "A.CSV")})["b"].tolist() == ["x", "y"]
    assert read({"format": "Parquet", "path": str(tmp_path / "B.PARQUET")})["a"].tolist() == [1]
    check_source_spec({"format": "JSONL", "path": "x.jsonl"})
    job = load_job({"name": "j", "source": {"format": "CSV", "path": str(tmp_path)}, "stages": [], "sink": {"path": str(tmp_path / "out")}})
    assert job.source.format == "csv"
    with pytest.raises(ValueError, match=r"unknown option 'pth' \(did you mean 'path'\?\)"):
        load_job({"name": "j", "source": {"format": "CSV", "pth": "x"}, "stages": [], "sink": {"path": str(tmp_path / "out")}})


@pytest.mark.parametrize("text", ['2,"unclosed\n3,y\n4,z\n', '2,"unclosed\n3,y\n\n4,z\n', '"2,unclosed\n3,y\n4,z\n'])
def test_csv_read_whole_whose_quote_is_never_closed_names_its_line(tmp_path, text):
    """Read as one block, Arrow took the rest of the file after an unclosed quote as one
    value (or one row of too few fields): 2 rows from 4 records, the ledger balanced."""
    (tmp_path / "uq.csv").write_text("a,b\n1,x\n" + text)
    with pytest.raises(SourceError, match=r"uq.csv: its quote characters do not pair up \(the record at line 3 opens a quote"):
        read({"format": "csv", "path": str(tmp_path / "uq.csv")})
    (tmp_path / "uq.csv").write_text('a,b\n1,x\n2,5" screen\n3,"two\nlines"\n')  # a quote inside a value, as a literal
    assert read({"format": "csv", "path": str(tmp_path / "uq.csv")})["b"].tolist() == ["x", '5" screen', "two\nlines"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-32-le"])
def test_csv_in_utf16_or_utf32_is_cut_into_blocks_like_utf8(tmp_path, encoding):
    """A UTF-16 or UTF-32 file was read whole, as one partition, its bytes, text and UTF-8
    held at once (about three times its size): it is cut at its own newlines, whose code
    unit is never part of another character (Ċ is 0A 01 in UTF-16-LE, an emoji two units)."""
    text = "a\tb\n" + "".join(f"{i}\tĊafé 😀 {i}\n" for i in range(3000)) + "oops\tx\n"
    (tmp_path / "u.txt").write_bytes(("\ufeff" if encoding.endswith("le") else "").encode(encoding) + text.encode(encoding))
    spec = {"format": "csv", "path": str(tmp_path / "u.txt"), "encoding": encoding, "infer_bytes": 2_000}
    src = read_source({**spec, "blocksize": 5_000})
    assert src.frame.npartitions > 10
    cut, whole = (f.reset_index(drop=True) for f in (src.frame.compute(), read({**spec, "blocksize": 10**8})))
    pd.testing.assert_frame_equal(cut, whole)
    assert cut["b"].tolist()[:3000] == [f"Ċafé 😀 {i}" for i in range(3000)] and cut["id"].tolist()[2999] == "u.txt:2999"
    assert cut.loc[cut[REJECT].notna(), ["id", REJECT, RAW]].values.tolist() == [["u.txt:3000", "type:a=oops", "oops\tx"]]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32-le"])
def test_csv_in_utf16_whose_values_span_lines_is_cut_into_blocks(tmp_path, encoding):
    """A UTF-16 file whose quoted values span lines was read whole, as one partition:
    quotes were counted in bytes, where 0x22 may be half of a character (∀ is 22 00 in
    UTF-16-LE, Ċ holds 0A). Quotes and newlines are counted by code unit, so it is cut
    between records as a UTF-8 file is, with the same rows and ids."""
    text = "a\tb\n" + "".join(f'{i}\t"∀Ċ 😀 ""{i}""{chr(10) * (i % 3)}x"\n' for i in range(2000)) + "oops\tx\n"
    (tmp_path / "u.txt").write_bytes(("\ufeff" if encoding.endswith("le") else "").encode(encoding) + text.encode(encoding))
    (tmp_path / "u8.txt").write_text(text)
    spec = {"format": "csv", "path": str(tmp_path / "u.txt"), "encoding": encoding, "infer_bytes": 2_000}
    src = read_source({**spec, "blocksize": 5_001})
    assert src.frame.npartitions > 5
    cut = src.frame.compute().reset_index(drop=True)
    utf8 = read({**spec, "path": str(tmp_path / "u8.txt"), "encoding": "utf8", "blocksize": 5_000}).reset_index(drop=True)
    pd.testing.assert_frame_equal(cut.assign(id=cut["id"].str.replace("u.txt", "u8.txt")), utf8)
    assert cut["b"].tolist()[:3] == ['∀Ċ 😀 "0"x', '∀Ċ 😀 "1"\nx', '∀Ċ 😀 "2"\n\nx'] and len(cut) == 2001
    assert cut.loc[cut[REJECT].notna(), "id"].tolist() == ["u.txt:2000"]


def test_csv_block_with_a_value_that_does_not_fit_reads_only_its_column_by_hand(tmp_path, monkeypatch):
    """One bad value made the whole block be read again as bytes, every column typed by hand
    from Python objects (a 64 MiB block of Adult: +461 MiB, +182 MiB clean): only the columns
    Arrow names are read as text now, the others as in a clean block, with the same rejects."""
    from dsbuild.io.sources import delimited

    by_hand = []
    monkeypatch.setattr(delimited, "_decoded", lambda column, reasons, name, f=delimited._decoded: by_hand.append(name) or f(column, reasons, name))
    rng = np.random.default_rng(0)
    n = 20_000
    df = pd.DataFrame({"a": rng.integers(0, 10**6, n), "b": rng.integers(0, 100, n).astype(object), "c": rng.standard_normal(n),
                       "w": np.array([f"word{i}" for i in range(100)])[rng.integers(0, 100, n)]})
    df.loc[n - 10, "b"] = "oops"
    lines = df.to_csv(index=False).encode().split(b"\n")  # data row r is line r + 1
    lines[n - 4], lines[n - 2] = lines[n - 4].rsplit(b",", 1)[0] + b",caf\xe9", lines[n - 2] + b",extra"
    (tmp_path / "bad.csv").write_bytes(b"\n".join(lines))
    out = read({"format": "csv", "path": str(tmp_path / "bad.csv"), "infer_bytes": 100_000})
    assert sorted(by_hand) == ["b", "w"]
    assert out.loc[out[REJECT].notna()].set_index("id")[[REJECT, RAW]].to_dict("index") == {
        f"bad.csv:{n - 10}": {REJECT: "type:b=oops", RAW: lines[n - 9].decode()},
        f"bad.csv:{n - 5}": {REJECT: "encoding:w", RAW: lines[n - 4].decode("utf8", "replace")},
        f"bad.csv:{n - 3}": {REJECT: "csv:fields=expected 4, got 5", RAW: lines[n - 2].decode()}}
    kept = out[out[REJECT].isna()].set_index("id")
    assert len(kept) == n - 3 and str(kept["b"].dtype) == "Int64" and kept["c"].dtype == np.float64
    assert kept.loc["bad.csv:7", ["a", "b", "w"]].tolist() == df.loc[7, ["a", "b", "w"]].tolist()


def test_a_dask_frame_of_decimals_or_mixed_objects_is_typed_as_a_pandas_one():
    """Dask's own conversion made a column of Decimals text ('1.50', which no numeric stage
    takes) and a column of 1 and 'a' text too; with that conversion off, the mixed column
    failed in the sink with no column named. Each is typed as a pandas frame's is."""
    import decimal

    import dask.dataframe as dd

    prices = pd.DataFrame({"price": [decimal.Decimal("1.50"), decimal.Decimal("2.25"), None, decimal.Decimal("3.1")],
                           "s": list("abcd")})
    mixed = pd.DataFrame({"n": [1, 2, 3, "a"]})
    for convert in (True, False):
        with dask.config.set({"dataframe.convert-string": convert}):
            src = read_source({"format": "frame", "frame": dd.from_pandas(prices, npartitions=2)})
            out = src.frame.compute()
            assert src.frame.npartitions == 2 and str(src.schema.field("price").type) == "decimal128(3, 2)"
            assert out["price"].dtype == np.float64 and out["price"].tolist()[:2] == [1.5, 2.25] and out["s"].tolist() == list("abcd")
            with pytest.raises(SourceError, match=r"frame 'sheet': column 'n' holds int and str values \(.* is 'a'\)"):
                read_source({"format": "frame", "frame": dd.from_pandas(mixed, npartitions=2), "name": "sheet"})
    with dask.config.set({"dataframe.convert-string": False}):  # a Dask frame of its own partitions: typed by each
        frame = dd.from_pandas(prices, npartitions=2).map_partitions(lambda p: p.copy())
        src = read_source({"format": "frame", "frame": frame})
        assert str(src.schema.field("price").type) == "decimal128(3, 2)" and src.frame.compute()["price"].dtype == np.float64
        assert src.read_columns(["s"]).compute()["s"].tolist() == list("abcd")  # the id check reads some columns
        frame = dd.from_pandas(mixed, npartitions=2).map_partitions(lambda p: p.copy())
        with pytest.raises(SourceError, match=r"column 'n' holds int and str values \(partition 1, row 0, is 3, partition 1, row 1, is 'a'\)"):
            read_source({"format": "frame", "frame": frame, "name": "sheet"})


def test_frames_keep_decimals_lists_and_dates_through_dasks_string_conversion():
    """dd.from_delayed puts Dask's conversion of object columns to text over the
    partitions (dsbuild.run turns it off, but a user's frame was built before): decimals,
    lists (embeddings) and dates reached every stage as text ('[1.0]') and were written
    as text. They are read as a pandas frame's are."""
    import datetime
    import decimal

    import dask.dataframe as dd

    df = pd.DataFrame({"price": [decimal.Decimal("1.50"), decimal.Decimal("2.25"), None, decimal.Decimal("3.10")],
                       "emb": [[1.0], [2.0, 3.0], None, [4.0]], "day": [datetime.date(2024, 1, d) for d in range(1, 5)],
                       "s": pd.Series(list("abcd"), dtype=object), "n": [1, 2, 3, 4]})
    delayed = dd.from_delayed([dask.delayed(df.iloc[:2]), dask.delayed(df.iloc[2:])])
    assert delayed["price"].dtype != object  # Dask's conversion is there to be undone
    for frame in (df, delayed):
        with dask.config.set({"dataframe.convert-string": False}):  # as dsbuild.run reads
            src = read_source({"format": "frame", "frame": frame, "name": "t"})
            out = src.frame.compute()
        assert {f.name: str(f.type) for f in src.schema} == {"price": "decimal128(3, 2)", "emb": "list<item: double>",
                                                              "day": "date32[day]", "s": "string"}
        assert out["price"].dtype == np.float64 and out["price"].tolist()[:2] == [1.5, 2.25]
        assert out["emb"].tolist()[:2] == [[1.0], [2.0, 3.0]] and out["day"].tolist()[0] == datetime.date(2024, 1, 1)
        assert out["s"].tolist() == list("abcd") and out["id"].tolist() == ["t:0", "t:1", "t:2", "t:3"]
    assert read_source({"format": "frame", "frame": delayed}).frame.compute()["s"].dtype == pd.StringDtype("pyarrow")


def test_a_folder_of_csv_exports_with_a_tsv_among_them_reads_each_by_its_separator(tmp_path):
    """The separator found in the first file split every file: a .tsv beside .csv files
    stopped the run as "header ['a\\tb'] differs from ['a', 'b']"."""
    (tmp_path / "a.csv").write_text("a,b\n1, x\n")
    (tmp_path / "b.tsv").write_text("b\ta\ny, z\t2\nthree\toops\n")
    df = read({"format": "csv", "path": str(tmp_path)}).set_index("id")
    assert df.loc[["a.csv:0", "b.tsv:0"], ["a", "b"]].values.tolist() == [[1, "x"], [2, "y, z"]]
    assert df.loc["b.tsv:1", [REJECT, RAW]].tolist() == ["type:a=oops", "three\toops"]
    (tmp_path / "c.csv").write_text("a;c\n1;2\n")  # another header, by any separator: still named
    with pytest.raises(SourceError, match=r"c.csv: header \['a;c'\] differs"):
        read({"format": "csv", "path": str(tmp_path)})


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_folder_of_text_files_compressed_any_way_fsspec_reads(tmp_path, fmt):
    """Only .csv.gz/.bz2/.zst/.xz, .tsv.gz and .jsonl.gz, .json.gz, .ndjson.gz were read
    from a folder: .tsv.bz2 and .jsonl.xz files were "not a file this source reads"."""
    import bz2
    import lzma

    rows = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    text = {"csv": "a\tb\n1\tx\n2\ty\n", "jsonl": "".join(json.dumps(r) + "\n" for r in rows)}[fmt]
    names = {"csv": ("t.tsv.bz2", "t.TXT.xz"), "jsonl": ("t.jsonl.bz2", "t.ndjson.xz")}[fmt]
    (tmp_path / names[0]).write_bytes(bz2.compress(text.encode()))
    (tmp_path / names[1]).write_bytes(lzma.compress(text.encode()))
    (tmp_path / "array.json.bz2").write_bytes(bz2.compress(json.dumps(rows).encode())) if fmt == "jsonl" else None
    df = read({"format": fmt, "path": str(tmp_path)})
    assert len(df) == (6 if fmt == "jsonl" else 4) and df[REJECT].isna().all() and sorted(df["b"]) == sorted(["x", "y"] * (len(df) // 2))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_compression_fsspec_cannot_read_here_says_what_to_install(tmp_path, fmt):
    """Without zstandard, a .zst file was read as its compressed bytes: "line 1 is not
    utf8 text ... set source.encoding to the file's, e.g. latin-1"."""
    try:
        import zstandard  # noqa: F401
        pytest.skip("zstandard is installed: fsspec reads .zst here")
    except ImportError:
        pass
    (tmp_path / f"a.{fmt}.zst").write_bytes(b"\x28\xb5\x2f\xfd\x04\x00\x41\x00\x00")  # zstd's magic number, then a frame
    with pytest.raises(SourceError, match=rf"a.{fmt}.zst: compressed as .zst, which fsspec reads with zstandard, not installed here"):
        read_source({"format": fmt, "path": str(tmp_path)})


def test_csv_types_come_from_the_first_file_with_rows_not_a_header_alone(tmp_path):
    """A folder of daily exports whose first day had no rows: its header alone typed every
    column as text, and the numbers of every later file were kept as strings."""
    (tmp_path / "2024-01-01.csv").write_text("a,b,c\n")
    (tmp_path / "2024-01-02.csv").write_text("c;b;a\nx;2.5;1\n")  # another order and separator: read by its own
    (tmp_path / "2024-01-03.csv").write_text("a,b,c\n2,3.5,y\n")
    src = read_source({"format": "csv", "path": str(tmp_path)})
    assert [str(t) for t in src.schema.types] == ["int64", "double", "string"]
    df = src.frame.compute()
    assert df["a"].tolist() == [1, 2] and df["b"].tolist() == [2.5, 3.5] and df[REJECT].isna().all()


def test_jsonl_fields_come_from_the_first_file_with_records(tmp_path):
    """A folder of daily exports whose first day was [] (or blank lines) stopped the run:
    "no JSON object in the first lines: it is one JSON array; name the file .json"."""
    (tmp_path / "2024-01-01.json").write_text("[ ]\n")
    (tmp_path / "2024-01-02.jsonl").write_text("\n\n")
    (tmp_path / "2024-01-03.jsonl").write_text('{"a": 1, "b": 2.5}\n')
    df = read({"format": "jsonl", "path": str(tmp_path)})
    assert df[["id", "a", "b"]].values.tolist() == [["2024-01-03.jsonl:0", 1, 2.5]]
    with pytest.raises(SourceError, match=r"2024-01-01.json: no JSON object in the first lines: it is a JSON array of no objects$"):
        read({"format": "jsonl", "path": str(tmp_path / "2024-01-01.json")})


def test_csv_separator_found_when_quoted_values_hold_it(tmp_path):
    """The standard library's sniffer counts a separator per line: a semicolon export whose
    quoted values hold semicolons (CRLF lines, as Excel writes) was split at commas, one
    column 'a;b' holding whole lines."""
    (tmp_path / "e.csv").write_bytes('\ufeffa;b\r\n1;"café; bar"\r\n2;"x, y"\r\n'.encode())
    df = read({"format": "csv", "path": str(tmp_path / "e.csv")})
    assert df[["a", "b"]].values.tolist() == [[1, "café; bar"], [2, "x, y"]]


def _read_as_without(tmp_path, lead: str, **options) -> list:
    """A file whose ``lead`` comes before its header, in UTF-8 and UTF-16, cut in blocks
    and whole, read with ``options``: the frame and ids of the file without it. The
    sources, for their notes."""
    rows = [f'{i};"x{i}{chr(10) if i % 7 == 0 else ""}y";{i},5' for i in range(2000)]
    body = "a;b;c\r\n" + "\r\n".join(rows) + "\r\n"
    (tmp_path / "plain.csv").write_text(body)
    (tmp_path / "lead.csv").write_text(lead + body)
    (tmp_path / "wide.csv").write_bytes((lead + body).encode("utf-16"))
    sources = []
    for cut in ({"blocksize": 4_000, "infer_bytes": 4_000}, {}):
        want = read({"format": "csv", "path": str(tmp_path / "plain.csv"), **cut})
        assert len(want) == 2000 and want["c"].sum() == sum(i + 0.5 for i in range(2000))
        for name, encoding in (("lead.csv", "utf8"), ("wide.csv", "utf-16")):
            src = read_source({"format": "csv", "path": str(tmp_path / name), "encoding": encoding, **options, **cut})
            got = src.frame.compute()
            pd.testing.assert_frame_equal(got.assign(id=got["id"].str.replace(name, "plain.csv")).reset_index(drop=True),
                                          want.reset_index(drop=True))
            sources.append((tmp_path / name, src))
    return sources


def test_csv_whose_first_line_is_excels_separator_hint_is_read_with_it(tmp_path):
    """Excel's European exports may start with "sep=;": such a file was refused, and the
    user had to cut the line off every export. It is read with that separator; the line
    is no row, and rows are numbered as in the file without it, however it is cut."""
    for path, src in _read_as_without(tmp_path, "sep=;\r\n"):
        assert src.notes[0] == (f"source: {path} starts with Excel's separator hint 'sep=;': read with that "
                                "separator; the line is no row (not in the ledger), and rows are numbered from the line "
                                "after the header")
    (tmp_path / "x.csv").write_bytes(b"sep=|\na|b\n1|2\n")
    assert read({"format": "csv", "path": str(tmp_path / "x.csv")})[["a", "b"]].values.tolist() == [[1, 2]]


def test_csv_skip_rows_leaves_out_the_lines_before_the_header(tmp_path):
    """A file that opens with a title or a notice (Adult's test file: ``|1x3 Cross
    validator``) could not be read: validate said ok and the run rejected every row as
    csv:fields. Now its first line stops the read, naming skip_rows, and with skip_rows the
    file reads as the one without those lines, ids and all, however it is cut."""
    assert len(_read_as_without(tmp_path, "Exported 2024-01-02\r\n(c) Example\r\n", skip_rows=2)) == 4
    (tmp_path / "adult.test").write_text("|1x3 Cross validator\n25, Private, <=50K.\n38, Private, >50K.\n")
    spec = {"format": "csv", "path": str(tmp_path / "adult.test")}
    with pytest.raises(SourceError, match=r"adult.test: line 1, read as the header, has 1 field\(s\) \(\|1x3 Cross "
                                          r"validator\) but the lines after it have 3 .*skip_rows: 1"):
        read_source(spec)
    names = {"header": False, "column_names": ["age", "workclass", "income"]}
    assert read(spec | names | {"skip_rows": 1})["income"].tolist() == ["<=50K.", ">50K."]
    assert read(spec | names | {"skip_rows": 1})["id"].tolist() == ["adult.test:0", "adult.test:1"]


_ADULT = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation", "relationship", "race",
          "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country", "income"]


def test_csv_skip_rows_by_file(tmp_path):
    """UCI's Adult: adult.data has no title line, adult.test opens with '|1x3 Cross
    validator'. Read together, skip_rows: 1 lost adult.data's first row without a word, and
    without it the title was a csv:fields reject nothing named. A mapping of file name or
    glob -> lines skips them in those files only; validate names the file and the mapping;
    a name that matches no file stops the read. As UCI ships them, gzipped (first lines)."""
    with gzip.open(tmp_path / "adult.data.gz", "wt") as f:
        f.write("39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, "
                "United-States, <=50K\n50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, "
                "Husband, White, Male, 0, 0, 13, United-States, <=50K\n")
    with gzip.open(tmp_path / "adult.test.gz", "wt") as f:
        f.write("|1x3 Cross validator\n25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, Black, "
                "Male, 0, 0, 40, United-States, <=50K.\n38, Private, 89814, HS-grad, 9, Married-civ-spouse, "
                "Farming-fishing, Husband, White, Male, 0, 0, 50, United-States, <=50K.\n")
    spec = {"format": "csv", "path": str(tmp_path / "adult.*.gz"), "header": False, "column_names": _ADULT}
    src = read_source(spec)
    assert src.notes == [f"source: {tmp_path / 'adult.test.gz'}: line 1 (|1x3 Cross validator) has 1 field(s) where the "
                         "lines after it have 15, as column_names: it is rejected as csv:fields; if it is a title or a "
                         "note, set source.skip_rows: {adult.test.gz: 1}"]
    assert src.frame.compute()[REJECT].tolist() == [None, None, None, None, "csv:fields=expected 15, got 1"]
    assert read(spec | {"skip_rows": 1})["age"].tolist() == [50, 25, 38]  # adult.data's first row lost
    for mapping in ({"adult.test.gz": 1}, {"*.test.gz": 1}):
        src = read_source(spec | {"skip_rows": mapping})
        df = src.frame.compute()
        assert src.notes == [] and df[REJECT].isna().all() and df["age"].tolist() == [39, 50, 25, 38]
        assert df["id"].tolist() == ["adult.data.gz:0", "adult.data.gz:1", "adult.test.gz:0", "adult.test.gz:1"]
    with pytest.raises(SourceError, match=r"skip_rows names 'adult.tset.gz', which matches none of the files read "
                                          r"\(adult.data.gz, adult.test.gz\)"):
        read_source(spec | {"skip_rows": {"adult.tset.gz": 1}})


def test_csv_skip_rows_by_file_with_headers_however_cut(tmp_path):
    """Exports with a header where one has a notice above it: the read stopped at "header
    [...] differs"; it now names the file's line and the mapping, and with it the files read
    as they would without the notice, ids and all, in blocks or whole."""
    rows = [f"{i},x{i},{i}.5" for i in range(2000)]
    (tmp_path / "jan.csv").write_text("a,b,c\n" + "\n".join(rows) + "\n")
    (tmp_path / "feb.csv").write_text("Exported 2024-03-01 by Example\na,b,c\n" + "\n".join(rows) + "\n")
    spec = {"format": "csv", "path": str(tmp_path / "*.csv")}
    with pytest.raises(SourceError, match=r"feb.csv: line 1, read as the header, has 1 field\(s\) .* but the lines after "
                                          r"it have 3 .*set source.skip_rows: \{feb.csv: 1\}"):
        read_source(spec)
    for cut in ({"blocksize": 4_000, "infer_bytes": 4_000}, {}):
        df = read(spec | cut | {"skip_rows": {"feb.csv": 1}}).set_index("id")
        assert len(df) == 4000 and df[REJECT].isna().all() and df["c"].sum() == 2 * sum(i + 0.5 for i in range(2000))
        assert df.loc["feb.csv:1234", "b"] == "x1234" and df.loc["jan.csv:1999", "a"] == 1999


def test_the_digits_sample_is_planned_without_scikit_learn():
    """The driver imported scikit-learn (1.7 s of the quick start's validate and run) only
    to count the digits and build an empty frame of their columns; the workers load them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    probe = ("import sys\nfrom dsbuild.io.sources import read_source\n"
             "src = read_source({'format': 'sample', 'name': 'digits', 'partitions': 3})\n"
             "print(src.frame.npartitions, src.files[0]['size'], 'sklearn' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.stdout.split() == ["3", "1797", "False"]
    with dask.config.set(scheduler="sync"):
        src = read_source({"format": "sample", "name": "digits", "partitions": 3})
        rows = src.frame.compute()
    assert len(rows) == 1797 and rows.dtypes.to_dict() == src.frame._meta.dtypes.to_dict()
    assert rows["label"].value_counts().sort_index().index.tolist() == [str(d) for d in range(10)]
