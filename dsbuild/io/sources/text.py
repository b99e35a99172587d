"""Text files cut into blocks of whole records, rows numbered whatever the block boundaries."""

from __future__ import annotations

import fsspec
import pandas as pd
from fsspec.utils import read_block

from dsbuild.io.sources import quoted as quoting
from dsbuild.io.sources.common import _COMPRESSED, SourceError, _file_record, _relative


def compressed_too(*suffixes: str) -> tuple[str, ...]:
    """The suffixes, and each followed by a compression's that fsspec reads: a folder of
    .tsv.bz2 or .jsonl.zst files (as large text dumps ship) held "no files ending in ..."."""
    return tuple(s + c for s in suffixes for c in ("", *_COMPRESSED))


_PACKAGES = {".zst": "zstandard", ".bz2": "bz2 (Python's own)", ".xz": "lzma (Python's own)", ".gz": "gzip (Python's own)"}


def check_compressions(fs, files: list[str]) -> None:
    """Stop at a file whose compression fsspec cannot read here: without ``zstandard``
    installed, a .csv.zst file was read as its compressed bytes, and the run said its line 1
    was not UTF-8 text and to set source.encoding to latin-1."""
    for path in files:
        suffix = next((c for c in _COMPRESSED if path.lower().endswith(c)), None)
        if suffix and fsspec.utils.infer_compression(path) is None:
            raise SourceError(f"{path}: compressed as {suffix}, which fsspec reads with {_PACKAGES[suffix]}, not installed "
                              f"here: install it (pip install {_PACKAGES[suffix].split()[0]}), or unpack the file")
        if fsspec.utils.infer_compression(path) == "zip":
            _check_one_member(fs, path)


def _check_one_member(fs, path: str) -> None:
    """Stop at a zip archive of more than one file: fsspec reads a .zip as its first file, so
    a Kaggle download (train.csv, test.csv, sample_submission.csv) was read as train.csv
    alone, without a word. A chained URL names the file to read."""
    import zipfile

    with fs.open(path, "rb") as f, zipfile.ZipFile(f) as archive:
        names = [i.filename for i in archive.infolist() if not i.is_dir()]
    if len(names) > 1:
        listed = ", ".join(names[:5]) + (f" and {len(names) - 5:,} more" if len(names) > 5 else "")
        raise SourceError(f"{path}: a zip archive of {len(names):,} files ({listed}); only its first would be read: name "
                          f"the one to read, as path: zip://{names[0]}::{path} (or zip://*.csv::{path} for several), "
                          "or unpack it")


def _text_blocks(
    fs, files: list[str], root: str, blocksize: int, count_rows: bool = True, whole=(), quoted: bool = False, read=None,
    units: dict[str, str] | None = None,
) -> tuple[list[tuple], list[dict]]:
    """(path, rel, start, length, first_row) per block, newline-aligned, rows counted.

    Compressed files, and the files in ``whole``, are one block each. Rows per block are
    counted by a parallel pass over the blocks first (cheap: only newlines are counted),
    so that every row gets its true row number whatever the block boundaries.

    ``quoted``: values may hold newlines, so a block is cut at newlines outside quotes
    (``quoted``) and rows are numbered by those; each block carries the quote states
    at its two ends as a sixth item.

    ``read`` reads a block as the reader will (default :func:`_read_text_block`): its
    newlines are counted (a UTF-16 file's, once transcoded to UTF-8). ``units``: the code
    unit (a numpy dtype) of each file in UTF-16 or UTF-32, whose quotes are counted by it.
    """
    spans, records = _spans(fs, files, root, blocksize, whole)
    if quoted:
        return _quoted_blocks(fs, spans, units or {}), records
    counts = [0] * len(spans)
    split = [i for i, s in enumerate(spans) if s[3] is not None]
    if split and count_rows:
        import dask

        counted = dask.compute(*[dask.delayed(_count_lines)(fs, *spans[i][::2], spans[i][3], read) for i in split])
        for i, n in zip(split, counted):
            counts[i] = n
    blocks, line = [], 0
    for i, (path, rel, start, length) in enumerate(spans):
        if start == 0:
            line = 0
        blocks.append((path, rel, start, length, line))
        line += counts[i]
    return blocks, records


def _spans(fs, files: list[str], root: str, blocksize: int, whole=()) -> tuple[list[tuple], list[dict]]:
    """(path, rel, start, length or None for the whole file) per byte range, and each
    file's record; compressed files and those in ``whole`` are one range."""
    records = [_file_record(fs, path) for path in files]
    cut = {r["path"]: r["size"] for r in records
           if fsspec.utils.infer_compression(r["path"]) is None and (r["size"] or 0) > blocksize and r["path"] not in whole}
    _check_block_count(cut, blocksize)
    spans = []
    for path in files:
        if path in cut:
            spans.extend((path, _relative(path, root), start, blocksize) for start in range(0, cut[path], blocksize))
        else:
            spans.append((path, _relative(path, root), 0, None))
    return spans, records


MAX_BLOCKS = 100_000


def _check_block_count(cut: dict[str, int], blocksize: int) -> None:
    """A blocksize far below the files' sizes makes a task per block in every stage:
    ``blocksize: 1`` listed one block per byte of a 50 MB file and never started."""
    blocks = sum(-(-size // blocksize) for size in cut.values())
    if blocks > MAX_BLOCKS:
        total = sum(cut.values())
        least = 1 << max(-(-total // MAX_BLOCKS) - 1, 1).bit_length()
        raise SourceError(f"source.blocksize: {blocksize:,} bytes cuts {len(cut):,} file(s) of {total:,} bytes into "
                          f"{blocks:,} blocks, a task each in every stage (at most {MAX_BLOCKS:,}); take a blocksize of "
                          f"{least:,} or more (the default is 64 MiB)")


# A compressed text file is taken to unpack to this many times its size when small files
# are put together into a partition (CSV and JSON lines compress 3-10 times).
_UNPACKED_PER_BYTE = 5


def together(blocks: list[tuple], records: list[dict], blocksize: int) -> list[tuple]:
    """The blocks as partitions: each file cut into blocks stays one block a partition, and
    runs of whole small files share one up to ``blocksize`` bytes.

    A folder of many small files (daily exports) made a partition, and so a round of tasks
    in every stage and a staged file in the sink, per file: 2,000 files of 50 rows took
    36 s to copy, pandas 0.8 s to read.
    """
    size = {r["path"]: (r["size"] or 0) * (_UNPACKED_PER_BYTE if fsspec.utils.infer_compression(r["path"]) else 1) for r in records}
    out, held, held_bytes = [], [], 0
    for block in blocks:
        path, length = block[0], block[3]
        if length is not None:  # a piece of a large file: a partition of its own
            if held:
                out.append(tuple(held))
                held, held_bytes = [], 0
            out.append((block,))
            continue
        if held and held_bytes + size[path] > blocksize:
            out.append(tuple(held))
            held, held_bytes = [], 0
        held.append(block)
        held_bytes += size[path]
    if held:
        out.append(tuple(held))
    return out


class Together:
    """Reads a partition of :func:`together`: its blocks one by one, as one frame."""

    def __init__(self, read):
        self.read = read

    def __call__(self, blocks: tuple) -> pd.DataFrame:
        frames = [self.read(b) for b in blocks]
        if len(frames) == 1:
            return frames[0]
        return pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)


def _quoted_blocks(fs, spans: list[tuple], units: dict[str, str]) -> list[tuple]:
    import dask

    split = [s for s in spans if s[3] is not None]
    counted = iter(dask.compute(*[dask.delayed(_range_counts)(fs, path, start, length, units.get(path, "u1"))
                                  for path, _, start, length in split]))
    blocks, inside, passed, left_open = [], 0, 0, {}
    for i, (path, rel, start, length) in enumerate(spans):
        if length is None:
            blocks.append((path, rel, start, None, 0, (0, 0)))
            continue
        if start == 0:
            inside, passed = 0, 0
        odd, if_outside, if_inside = next(counted)
        # the block's first record is the line after the first newline outside quotes in
        # its range, so its number counts every such newline before it (none for a file's first)
        blocks.append((path, rel, start, length, passed + 1 if start else 0, (inside, inside ^ odd)))
        passed += if_inside if inside else if_outside
        inside ^= odd
        left_open[path] = inside
    unpaired = [path for path, still in left_open.items() if still]
    if unpaired:
        raise unpaired_quotes(unpaired[0])
    return blocks


def unpaired_quotes(path: str, line: int | None = None) -> SourceError:
    """A file whose quotes do not pair up, read where values span lines: records end at
    newlines outside quotes, and after the odd quote every newline was taken the wrong way
    round. Cut into blocks, rows were split and joined without a word (3,003 rows read
    from 3,000 records, the ledger balanced); in one block, rows were numbered past the
    records found (IndexError); read whole, the rest of the file became one value. ``line``:
    where the record that opens the last quote begins, where it is known."""
    return SourceError(
        f"{path}: its quote characters do not pair up" + (f" (the record at line {line:,} opens a quote the file "
        "never closes)" if line else "") + ", so where its records end is ambiguous: a value opens a quote "
        "it never closes, or holds one unquoted (5\" screen, which CSV writes as \"5\"\" screen\"). Fix the file"
        + ("" if line else ", or set source.newlines_in_values: false if no value spans lines"))


def _range_counts(fs, path: str, start: int, length: int, unit: str = "u1") -> tuple[int, int, int]:
    with fs.open(path, "rb") as f:
        f.seek(start)
        return quoting.range_counts(f.read(length), unit)


def _count_lines(fs, path: str, start: int, length: int, read=None) -> int:
    return (read or _read_text_block)(fs, path, start, length).count(b"\n")


def _read_text_block(fs, path: str, start: int, length: int | None) -> bytes:
    with fs.open(path, "rb", compression="infer") as f:
        if length is None:
            data = f.read()
            return data if data.endswith(b"\n") or not data else data + b"\n"
        data = read_block(f, start, length, delimiter=b"\n")
    return data if data.endswith(b"\n") or not data else data + b"\n"
