"""Cutting CSV text into blocks of whole records when quoted values span lines."""

import csv
import gzip
import io

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from dsbuild.io.sources import quoted
from dsbuild.io.sources import SourceError, read_source

values = st.text(alphabet='ab ,"\n', max_size=12)


def _csv(rows) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def _blocks(data: bytes, size: int) -> list[bytes]:
    """Every range's records, the quote states from each range's counts, as the source cuts."""
    starts = list(range(0, len(data), size))
    counts = [quoted.range_counts(data[s : s + size]) for s in starts]
    inside, out = 0, []
    for s, (odd, _, _) in zip(starts, counts):
        out.append(quoted.read_records(io.BytesIO(data), s, size, inside, inside ^ odd))
        inside ^= odd
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(values, values), min_size=1, max_size=30), st.integers(1, 40))
def test_blocks_are_whole_records_whatever_the_cut(rows, size):
    data = _csv(rows)
    blocks = _blocks(data, size)
    assert b"".join(blocks) == data
    parsed = [r for b in blocks for r in csv.reader(io.StringIO(b.decode(), newline=""))]
    assert parsed == [list(r) for r in rows]


def test_lines_split_outside_quotes_only():
    data = b'a,"x\ny"\n\nb,c\n'
    assert quoted.lines(data) == [b'a,"x\ny"', b"", b"b,c", b""]
    assert quoted.records_end(b'a,1\nb,"open\n') == 4


def _reviews(n: int, late: int = 0) -> bytes:
    rows = [["review_id", "stars", "text"]]
    for i in range(n):
        text = f"review {i}, \"quoted\"" + (f"\nsecond line\n\nafter an empty line {i}" if i >= late and i % 3 == 0 else "")
        rows.append([f"r{i}", str(i % 5 + 1), text])
    return _csv(rows)


def _read(spec) -> pd.DataFrame:
    return read_source(spec).frame.compute().set_index("review_id")


def test_quoted_newlines_read_alike_at_any_blocksize(tmp_path):
    data = _reviews(600)
    lines = data.split(b"\n")
    lines.insert(40, b"")  # an empty line, counted as a row number as elsewhere
    lines.insert(90, b"r-bad,1,two,fields too many")
    (tmp_path / "r.csv").write_bytes(b"\n".join(lines))
    whole = _read({"format": "csv", "path": str(tmp_path / "r.csv")})
    assert whole.loc["r3", "text"] == "review 3, \"quoted\"\nsecond line\n\nafter an empty line 3"
    bad = whole[whole["_reason"].notna()]
    assert bad["_reason"].tolist() == ["csv:fields=expected 3, got 4"] and bad["_raw"].tolist() == ["r-bad,1,two,fields too many"]
    for blocksize in (997, 4096):
        cut = _read({"format": "csv", "path": str(tmp_path / "r.csv"), "blocksize": blocksize})
        pd.testing.assert_frame_equal(cut.sort_values("id"), whole.sort_values("id"))


def test_values_spanning_lines_past_the_sample(tmp_path):
    (tmp_path / "r.csv").write_bytes(_reviews(600, late=400))
    spec = {"format": "csv", "path": str(tmp_path / "r.csv"), "blocksize": 2000, "infer_bytes": 2000}
    try:
        read_source(spec).frame.compute()
        raise AssertionError("a block cut inside a value was read")
    except SourceError as e:
        assert "set source.newlines_in_values: true" in str(e)
    cut = _read({**spec, "newlines_in_values": True})
    whole = _read({"format": "csv", "path": str(tmp_path / "r.csv")})
    pd.testing.assert_frame_equal(cut.sort_values("id"), whole.sort_values("id"))
    # a compressed file is one block: Arrow's own chunks must not cut a value either
    (tmp_path / "r.csv.gz").write_bytes(gzip.compress(_reviews(40_000, late=30_000)))
    packed = _read({"format": "csv", "path": str(tmp_path / "r.csv.gz"), "infer_bytes": 4096})
    assert len(packed) == 40_000 and packed.loc["r30000", "text"].endswith("after an empty line 30000")


def test_a_quote_left_open_to_the_end_of_the_file_is_a_row_not_a_crash(tmp_path):
    """A record that opens a quote it never closes runs to the end of the file: with an
    empty line in the file and a value spanning lines before it, the reader counted the
    records without it and failed on its number (IndexError: index 1 is out of bounds)."""
    (tmp_path / "r.csv").write_bytes(b'a,b,c\r\n1,"x,2,3\r\n4,"y,5\r\n6,"z,7,8\r\n\r\n')
    rows = read_source({"format": "csv", "path": str(tmp_path / "r.csv")}).frame.compute()
    assert len(rows) == 2 and rows["id"].is_unique
    assert rows["_reason"].notna().tolist() == [False, True] and rows["_raw"].iloc[1].startswith('6,"z')


def test_quotes_that_do_not_pair_up_stop_the_read(tmp_path):
    """A file is cut at newlines outside quotes by the count of quotes before each: one
    quote left open (or a quote inside an unquoted value) turned every later cut, and
    records were split and joined without a word: 3,003 rows from 3,000 records, ids
    missing, a ledger that balanced. Read as one block, with an empty line in it, its rows
    were numbered past the records found (IndexError). Such a file now stops the run,
    named."""
    lines = _reviews(600).split(b"\n")
    lines[300] = b'r-open,1,"five inch'
    (tmp_path / "r.csv").write_bytes(b"\n".join(lines))
    for blocksize in (997, 2**20):
        try:
            read_source({"format": "csv", "path": str(tmp_path / "r.csv"), "blocksize": blocksize}).frame.compute()
            raise AssertionError("a file whose quotes do not pair up was read")
        except SourceError as e:
            assert str(e).startswith(f"{tmp_path / 'r.csv'}: its quote characters do not pair up")
