"""Candidate pairs of near duplicates: signatures -> thin band rows -> the rows of shared
buckets fetch their signatures -> buckets verified, each row against its leaders."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dsbuild.records import ID


def signatures(part: pd.DataFrame, signer, quality, partition_info=None) -> pd.DataFrame:
    """One row per (record, orientation): its signature (payload) and what verifying
    needs, and where the record lives (partition and row, for the pass that drops it).
    ``quality`` is the keep rule's column, or a function of the partition giving each
    row's (``near_dedup_images``' ``keep``), or None."""
    ok, entries = signer.sign(part)
    ok = ok[:, None] if ok.ndim == 1 else ok  # or per variant: (rows, variants)
    number = partition_info["number"] if partition_info else 0
    ids, at = part[ID].to_numpy(dtype=object), (np.int64(number) << np.int64(32)) + np.arange(len(part), dtype=np.int64)
    if callable(quality):
        q = np.asarray(quality(part), dtype=float)
    else:
        q = pd.to_numeric(part[quality], errors="coerce").to_numpy(dtype=float) if quality else np.zeros(len(part))
    frames = []
    for variant in range(entries.shape[1]):
        signed = ok[:, min(variant, ok.shape[1] - 1)] & ok[:, 0]
        frames.append(pd.DataFrame({
            "_variant": np.full(int(signed.sum()), variant, dtype=np.int8), ID: ids[signed], "_at": at[signed], "_quality": q[signed],
            "_payload": _as_objects(entries[signed, variant]),
        }))
    return pd.concat(frames, ignore_index=True) if frames else _SIGNATURE_META.copy()


def band_rows(signed: pd.DataFrame, signer, dtype) -> pd.DataFrame:
    """One thin row per (record, orientation, band): the bucket key and what verifying
    needs but the signature, which only rows that share a bucket fetch (:func:`with_payloads`)."""
    keys = signer.keys(_payloads(signed["_payload"].to_numpy(), dtype)) if len(signed) else np.zeros((0, 1), dtype=np.uint64)
    bands = keys.shape[1]
    return pd.DataFrame({
        "_band_key": keys.reshape(-1).astype(np.uint64),
        **{c: np.repeat(signed[c].to_numpy(), bands) for c in ("_variant", ID, "_at", "_quality")},
    })


def shared_buckets(bands: pd.DataFrame) -> pd.DataFrame:
    """The band rows whose bucket holds another row (only those are compared), with the
    partition their record lives in."""
    shared = bands[bands["_band_key"].duplicated(keep=False)]
    return shared.assign(_partition=shared["_at"].to_numpy() >> np.int64(32))


def with_payloads(signed: pd.DataFrame, wanted: pd.DataFrame) -> pd.DataFrame:
    """The band rows ``wanted`` (routed to this partition) with their records' signatures."""
    payload = signed.set_index(["_at", "_variant"])["_payload"]
    found = payload.reindex(pd.MultiIndex.from_arrays([wanted["_at"].to_numpy(), wanted["_variant"].to_numpy()]))
    return wanted.reset_index(drop=True).drop(columns="_partition", errors="ignore").assign(_payload=found.to_numpy())


def _as_objects(payload: np.ndarray) -> np.ndarray:
    out = np.empty(len(payload), dtype=object)
    for i, row in enumerate(payload):
        out[i] = row.tobytes() if isinstance(row, np.ndarray) else np.uint64(row).tobytes()
    return out


def _payloads(values, dtype) -> np.ndarray:
    return np.stack([np.frombuffer(v, dtype=dtype) for v in values]) if len(values) else np.zeros((0, 1), dtype=dtype)


_SIGNATURE_META = pd.DataFrame({
    "_variant": pd.Series([], dtype=np.int8), ID: pd.Series([], dtype=object), "_at": pd.Series([], dtype=np.int64),
    "_quality": pd.Series([], dtype=float), "_payload": pd.Series([], dtype=object),
})
_BAND_META = pd.DataFrame({"_band_key": pd.Series([], dtype=np.uint64), **{c: _SIGNATURE_META[c] for c in ("_variant", ID, "_at", "_quality")}})
_SHARED_META = _BAND_META.assign(_partition=pd.Series([], dtype=np.int64))
_BAND_PAYLOAD_META = _BAND_META.assign(_payload=pd.Series([], dtype=object))


EDGE_COLUMNS = {
    "a": object, "b": object, "qa": float, "qb": float, "at_a": np.int64, "at_b": np.int64, "distance": float,
    "turn": np.int8, "candidates": np.int64, "verified": np.int64,
}
_EDGE_META = pd.DataFrame({k: pd.Series([], dtype=v) for k, v in EDGE_COLUMNS.items()})


def verify_buckets(part: pd.DataFrame, signer, dtype) -> pd.DataFrame:
    """Verified edges among rows sharing a band key, each row checked against its bucket's
    leaders rather than against every other row (``leader_pairs``).

    One extra row (a = None) carries this partition's counts of comparisons and of close
    pairs, so the fit can report candidates even where none verified.
    """
    empty = pd.DataFrame({k: pd.Series([], dtype=v) for k, v in EDGE_COLUMNS.items()})
    if part.empty:
        return empty
    ids = part[ID].to_numpy(dtype=object)
    rank = pd.factorize(ids, sort=True)[0]
    variant = part["_variant"].to_numpy()
    order = np.lexsort((variant, rank, part["_band_key"].to_numpy()))  # a bucket's rows by id, at any partitioning
    keys, ids, rank, variant = part["_band_key"].to_numpy()[order], ids[order], rank[order], variant[order]
    payload = _payloads(part["_payload"].to_numpy()[order], dtype)
    q = part["_quality"].to_numpy()[order]
    at = part["_at"].to_numpy()[order]

    def pairable(i, j):
        return (rank[i] != rank[j]) & ((variant[i] == 0) | (variant[j] == 0))

    def close(i, j):
        a, b = _squeeze(payload[i]), _squeeze(payload[j])
        return signer.close(a, b, np.maximum(variant[i], variant[j])), signer.distance(a, b)

    i, j, distance, compared = leader_pairs(keys, pairable, close)
    verified = len(i)
    # a pair found in several of this partition's bands is one edge
    variants = int(variant.max(initial=0)) + 1
    _, first = np.unique((rank[i] * variants + variant[i]) * (variants * len(part)) + rank[j] * variants + variant[j], return_index=True)
    i, j, distance = i[first], j[first], distance[first]
    edges = pd.DataFrame({
        "a": ids[i], "b": ids[j], "qa": q[i], "qb": q[j], "at_a": at[i], "at_b": at[j], "distance": distance,
        "turn": signer.turn(variant[i], variant[j]), "candidates": 0, "verified": 0,
    })
    tally = pd.DataFrame({  # counted before the merge of bands, which depends on the partitioning
        "a": [None], "b": [None], "qa": [np.nan], "qb": [np.nan], "at_a": [-1], "at_b": [-1], "distance": [np.nan], "turn": [0],
        "candidates": [compared], "verified": [verified],
    })
    return pd.concat([tally, edges], ignore_index=True).astype(EDGE_COLUMNS)


_COMPARE_CHUNK = 1 << 16


def leader_pairs(keys: np.ndarray, pairable, close) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(leader, member, distance, comparisons) of the close pairs in runs of equal ``keys``
    (sorted), found by comparing each row with its run's leaders only.

    A run's first row leads; every later row is compared with it; the first row that no
    earlier leader took leads next, and so on. A bucket holding one cluster of n copies
    costs n - 1 comparisons instead of n (n - 1) / 2: 3,000 variants of one licence made
    4.5 M pairs in each of 16 bands (30 s, 2.9 GB). A row that is close to two leaders
    joins both, so components are those of all pairs whenever leaders are close to their
    cluster; what is lost is a pair of members both far from every leader they meet, in
    every band they share. ``pairable(i, j)`` says which positions may pair at all;
    ``close(i, j)`` returns (close, distance).
    """
    n = len(keys)
    new_run = np.r_[True, keys[1:] != keys[:-1]] if n else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(new_run)
    end_of = np.repeat(np.r_[starts[1:], n], np.diff(np.r_[starts, n]))
    settled = new_run & (end_of - np.arange(n) == 1)
    run = np.cumsum(new_run) - 1
    open_rows = np.flatnonzero(~settled)
    found_i, found_j, found_d, compared = [], [], [], 0
    while len(open_rows):
        leads = open_rows[np.r_[True, run[open_rows][1:] != run[open_rows][:-1]]]
        settled[leads] = True
        counts = end_of[leads] - leads - 1
        lead = np.repeat(leads, counts)
        member = lead + 1 + np.arange(len(lead)) - np.repeat(np.cumsum(counts) - counts, counts)
        ok = pairable(lead, member)
        lead, member = lead[ok], member[ok]
        compared += len(lead)
        for s in range(0, len(lead), _COMPARE_CHUNK):
            li, mj = lead[s : s + _COMPARE_CHUNK], member[s : s + _COMPARE_CHUNK]
            good, distance = close(li, mj)
            found_i.append(li[good])
            found_j.append(mj[good])
            found_d.append(np.asarray(distance, dtype=float)[good])
            settled[mj[good]] = True
        open_rows = open_rows[~settled[open_rows]]
    if not found_i:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0), compared
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d), compared


def _squeeze(payload: np.ndarray) -> np.ndarray:
    return payload[:, 0] if payload.ndim == 2 and payload.shape[1] == 1 and payload.dtype == np.uint64 else payload


def comparison_counts(edges: pd.DataFrame, state=None) -> tuple[int, int]:
    """(comparisons, close ones) the verifying pass counted in its tally rows."""
    return int(edges["candidates"].sum()), int(edges["verified"].sum())


def add_counts(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return a[0] + b[0], a[1] + b[1]
