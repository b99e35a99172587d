"""Each stage's marked output split into kept and rejected rows, written, and counted:
one accounting task per stage and partition, whose small results the driver sums."""

from __future__ import annotations

import pickle
import time
from collections import Counter

import numpy as np
import pandas as pd

from dsbuild.io.sink import Sink
from dsbuild.io.sources import RAW
from dsbuild.records import REASON, STAGE
from dsbuild.stages.base import ADDED, GONE, METRIC, REJECT

INTERNAL = (REJECT, ADDED, RAW)


def _kept(out):
    """A stage's kept rows, handed to the next stage, whose task they are fused into; their
    key names no stage (as ``dsbuild-split-kept`` it named one called ``split``)."""
    return out.map_partitions(kept_rows, meta=kept_rows(out._meta), token="dsbuild-kept-rows")


def _rejected(out, stage: str):
    return out.map_partitions(rejected_rows, stage, meta=rejected_rows(out._meta, stage), token="dsbuild-rejected-rows")


def kept_rows(part: pd.DataFrame) -> pd.DataFrame:
    drop = [c for c in part.columns if c in INTERNAL or c.startswith((METRIC, GONE))]
    keep = part[REJECT].isna().to_numpy()
    return (part if keep.all() else part[keep]).drop(columns=drop)


def rejected_rows(part: pd.DataFrame, stage: str) -> pd.DataFrame:
    """Rejected rows whole, with ``reason`` and ``stage`` (and ``raw`` text from sources)."""
    drop = [c for c in part.columns if c == ADDED or c.startswith(METRIC)]
    marked = part[REJECT].notna().to_numpy()
    rej = (part[marked] if marked.any() else part.iloc[:0]).drop(columns=drop)  # most stages reject nothing
    rej = rej.rename(columns={REJECT: REASON, RAW: "raw", **{c: c[len(GONE):] for c in rej.columns if c.startswith(GONE)}})
    rej[REASON] = rej[REASON].astype("string")
    rej[STAGE] = pd.array([stage] * len(rej), dtype="string")
    return rej


_FILES_META = pd.DataFrame(
    {
        "partition": pd.Series(dtype="int64"), "k": pd.Series(dtype="int64"), "path": pd.Series(dtype=object),
        "rows": pd.Series(dtype="int64"), "bytes": pd.Series(dtype="int64"), "memory": pd.Series(dtype="int64"),
        "sha256": pd.Series(dtype=object), "group": pd.Series(dtype=object), "dictionary": pd.Series(dtype=object),
        "schema": pd.Series(dtype=object),  # the sink's finish reads the file's schema here, not from the file
    }
)


_ACCOUNT_META = pd.DataFrame({"partition": pd.Series(dtype="int64"), "counts": pd.Series(dtype=object), "files": pd.Series(dtype=object)})


def _written(frame, sink: Sink, folder: str, label: str, scratch: bool = False):
    return frame.map_partitions(_write, sink, folder, scratch, meta=_FILES_META, token=f"dsbuild-write-{label}", enforce_metadata=False)


def _write(part: pd.DataFrame, sink: Sink, folder: str, scratch: bool, partition_info=None) -> pd.DataFrame:
    index = partition_info["number"] if partition_info else 0
    files = _write_files(part, sink, folder, scratch, index)
    return pd.DataFrame([{"partition": index, "k": k, **f} for k, f in enumerate(files)], columns=_FILES_META.columns)


def _write_files(part: pd.DataFrame, sink: Sink, folder: str, scratch: bool, index: int) -> list[dict]:
    return sink.write_scratch(part, folder, index) if scratch else sink.write_partition(part, folder, index, by=sink.partition_by)


def _in_order(files: pd.DataFrame) -> list[dict]:
    """The files in output order; ``group`` (a partition folder) only where there is one."""
    records = files.sort_values(["partition", "k"]).drop(columns=["partition", "k"]).to_dict("records")
    return [{k: v for k, v in r.items() if k != "group" or isinstance(v, str)} for r in records]


def _account(part: pd.DataFrame, sink: Sink, folder: str, stage: str, label: str | None, partition_info=None) -> pd.DataFrame:
    """One partition of a stage's marked output, accounted for in one task: its rejected
    rows written to the rejects staging folder, its counts returned (a small dict, never
    rows: the driver sums them). Most stages reject no row of most partitions: those build
    no empty frame of rejects, a fixed cost per stage and partition (half of the
    accounting of a 5,000-row partition of Adult)."""
    index = partition_info["number"] if partition_info else 0
    files = sink.write_partition(rejected_rows(part, stage), folder, index) if part[REJECT].notna().any() else []
    return pd.DataFrame({"partition": [index], "counts": [_partition_counts(part, label)], "files": [files]})


_ACCOUNT_WRITE_META = _ACCOUNT_META.assign(kept=pd.Series(dtype=object), partial=pd.Series(dtype=object),
                                           partial_taken=pd.Series(dtype=bool), partial_seconds=pd.Series(dtype="float64"))


def _account_and_write(part: pd.DataFrame, sink: Sink, rejects: str, stage: str, label: str | None, folder: str, scratch: bool,
                       first: tuple | None = None, first_bytes: int = 0, partition_info=None) -> pd.DataFrame:
    """:func:`_account` and the write of the stage's kept rows, in one task; the files
    listed as the sink gives them (a frame of them made into records again cost 1.5 ms a
    partition). ``first``: the next stage's first ``(partial, state)``, taken here on the
    kept rows as the checkpoint gives them back, where any were written, and sent to the
    driver only if it pickles to at most ``first_bytes`` (``partial_taken``)."""
    out = _account(part, sink, rejects, stage, label, partition_info)
    kept = kept_rows(part)
    files = _write_files(kept, sink, folder, scratch, int(out["partition"].iloc[0]))
    partial, taken, seconds = None, False, 0.0
    if first is not None and files:
        t = time.perf_counter()
        kept = kept.reset_index(drop=True)
        kept.columns = kept.columns.astype(object)  # as execution._CheckpointPart gives them
        partial = first[0](kept, first[1])
        taken = _pickled_bytes(partial) <= first_bytes
        partial, seconds = (partial, time.perf_counter() - t) if taken else (None, 0.0)
    return out.assign(kept=[files], partial=[partial], partial_taken=[taken], partial_seconds=[seconds])


def _pickled_bytes(value) -> int:
    """The bytes ``value`` pickles to, its arrays counted without being copied."""
    buffers: list = []
    head = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return len(head) + sum(b.raw().nbytes for b in buffers)


def _kept_files(accounted: pd.DataFrame) -> pd.DataFrame:
    """The files that :func:`_account_and_write` tasks wrote, as :func:`_write` lists them."""
    rows = [{"partition": p, "k": k, **f} for p, files in zip(accounted["partition"], accounted["kept"]) for k, f in enumerate(files)]
    return pd.DataFrame(rows, columns=_FILES_META.columns)


def _partition_counts(part: pd.DataFrame, label: str | None = None) -> dict:
    """Counts of one partition of a stage's marked output, with the kept rows per label.
    Counted on numpy arrays: a stage's counts are taken for every partition, and pandas'
    per-column operations cost 2.3 ms of a 400-row partition of Adult, these 0.6 ms."""
    reasons = part[REJECT]
    kept = reasons.isna().to_numpy()
    labels = _label_counts(part[label][kept] if not kept.all() else part[label]) if label and label in part.columns else {}
    return {
        "rows": len(part),
        "kept": int(kept.sum()),
        "rejected": _rules(reasons) if not kept.all() else {},
        "added": int(part[ADDED].to_numpy(dtype=bool, na_value=False).sum()) if ADDED in part.columns else 0,
        "metrics": {c[len(METRIC):]: _metric_sum(part[c]) for c in part.columns if c.startswith(METRIC)},
        "labels": labels,
    }


def _metric_sum(values: pd.Series) -> float:
    array = values.to_numpy()
    if array.dtype.kind in "biu":
        return float(array.sum())
    if array.dtype.kind == "f":
        return float(np.nansum(array))
    return float(pd.to_numeric(values, errors="coerce").sum())


def _label_counts(labels: pd.Series) -> dict[str, int]:
    """Rows per label as text, the most common first (at most ``_MAX_LABELS``, ties by
    text). Counted on the column as it is and only the distinct values made text:
    converting every label to text first was nine tenths of a stage's accounting (1 M
    categorical labels, 0.2 s). Text labels are counted by Arrow (0.04 ms for a 400-row
    partition, pandas' ``value_counts`` and its index 0.7 ms)."""
    if isinstance(labels.dtype, pd.StringDtype):
        import pyarrow as pa
        import pyarrow.compute as pc

        found = pc.value_counts(pa.array(labels.array))
        texts = ["<missing>" if t is None else t for t in found.field("values").to_pylist()]
        pairs = zip(texts, found.field("counts").to_pylist())
    else:
        found = labels.value_counts(dropna=False)
        found = found[found > 0]  # a categorical's unused categories
        texts = pd.Series(found.index, dtype=labels.dtype).astype("string").fillna("<missing>")
        pairs = zip(texts, found.to_numpy().tolist())
    counts: Counter = Counter()
    for text, n in pairs:
        counts[text] += int(n)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:_MAX_LABELS])


def _rules(reasons: pd.Series) -> dict[str, int]:
    """Rejected rows per rule (a reason up to its first ``=``), counted by Arrow: a stage
    like exact_dedup rejects a large share of the rows, each with its own reason."""
    import pyarrow as pa
    import pyarrow.compute as pc

    given = reasons.dropna()
    if given.empty:
        return {}
    texts = pa.array(given.astype("string").array)
    counts = pc.value_counts(pc.list_element(pc.split_pattern(texts, "=", max_splits=1), 0))
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))


_MAX_LABELS = 200


def _sum_counts(counts) -> dict:
    acc = {"rows": 0, "kept": 0, "rejected": {}, "added": 0, "metrics": {}, "labels": {}}
    for c in counts:
        acc = {
            "rows": acc["rows"] + c["rows"],
            "kept": acc["kept"] + c["kept"],
            "rejected": _add(acc["rejected"], c["rejected"]),
            "added": acc["added"] + c["added"],
            "metrics": _add(acc["metrics"], c["metrics"]),
            "labels": _add(acc["labels"], c.get("labels", {})),
        }
    top = sorted(acc["labels"].items(), key=lambda kv: (-kv[1], kv[0]))[:_MAX_LABELS]
    acc["labels"] = dict(sorted(top))
    return acc


def _add(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}
