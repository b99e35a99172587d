"""A small sample of the output for the page: a few rows, reject examples and augmented
images beside their parents, read lazily and never the whole data set."""

from __future__ import annotations

import base64
import json
import posixpath
import re
from collections.abc import Iterable

import numpy as np

from dsbuild.records import image_bytes, image_size, missing_image_reason
from dsbuild.report.text import natural_key


class OutputSample:
    """Reads a bounded number of rows from the output's shards, lazily and at most once."""

    SCAN_ROWS = 200_000
    HEAD_ROWS = 6
    FAMILIES = 6
    CHILDREN = 5
    THUMB = 96

    def __init__(self, manifest: dict, folder: str, fs=None):
        self.manifest, self.folder = manifest, str(folder).rstrip("/")
        self._fs = fs
        columns = manifest.get("job", {}).get("columns", {}) or {}
        self.image, self.label = columns.get("image"), columns.get("label")

    @property
    def fs(self):
        if self._fs is None:
            import fsspec

            self._fs, self.folder = fsspec.core.url_to_fs(self.folder)
        return self._fs

    def _files(self, kind: str) -> list[str]:
        return [posixpath.join(self.folder, s["file"]) for s in self.manifest.get("outputs", {}).get(kind, []) if s.get("rows")]

    def _batches(self, kind: str, columns: list[str] | None, batch_size: int = 4096) -> Iterable:
        """Record batches in shard order, until SCAN_ROWS rows were read."""
        import pyarrow.parquet as pq

        seen = 0
        for path in self._files(kind):
            try:
                with self.fs.open(path, "rb") as f:
                    pf = pq.ParquetFile(f)
                    names = set(pf.schema_arrow.names)
                    cols = [c for c in columns if c in names] if columns else None
                    for batch in pf.iter_batches(batch_size=batch_size, columns=cols):
                        yield batch
                        seen += batch.num_rows
                        if seen >= self.SCAN_ROWS:
                            return
            except (OSError, ValueError):
                continue

    def head(self) -> list[dict]:
        try:
            # a few rows only: a batch of 4096 images took a second to read and convert
            batch = next(iter(self._batches("data", None, batch_size=self.HEAD_ROWS)), None)
        except Exception:  # noqa: BLE001 - a sample is decoration; the report must still be written
            return []
        if batch is None:
            return []
        rows = batch.slice(0, self.HEAD_ROWS).to_pylist()
        return [{k: self._cell(k, v) for k, v in r.items()} for r in rows]

    def _cell(self, column: str, value):
        data = image_bytes(value) if column == self.image else value
        if isinstance(data, bytes):
            src = thumbnail(data, self.THUMB) if column == self.image else None
            return {"src": src} if src else f"<{len(data)} bytes>"
        if column == self.image and isinstance(value, dict):
            return f"<{missing_image_reason(value)}>"  # a Hugging Face image struct without its bytes
        return value

    def reject_examples(self, per_reason: int = 2, limit: int = 12) -> list[dict]:
        out: dict[tuple, list] = {}
        try:
            for batch in self._batches("rejects", ["id", "stage", "reason"]):
                for r in batch.to_pylist():
                    rule = (r.get("stage"), str(r.get("reason", "")).split("=", 1)[0])
                    bucket = out.setdefault(rule, [])
                    if len(bucket) < per_reason:
                        bucket.append({k: str(r.get(k, "")) for k in ("id", "stage", "reason")})
                if sum(len(v) for v in out.values()) >= limit:
                    break
        except Exception:  # noqa: BLE001
            return []
        return [e for v in out.values() for e in v][:limit]

    def augmented_families(self, params_column: str = "augment_params") -> list[tuple[dict, list[dict]]]:
        """Up to FAMILIES parents with their augmented children, from the first shards.

        Pass one reads only ids, row group by row group; pass two reads images of just
        the row groups that hold the chosen rows.
        """
        if not self.image:
            return []
        try:
            where, children = self._find_families()
            wanted = {rid for parent, kids in children.items() for rid in (parent, *kids)}
            rows = self._read_rows(where, wanted, [self.image, self.label, params_column])
        except Exception:  # noqa: BLE001 - a sample is decoration; the report must still be written
            return []
        families = []
        for parent, kids in children.items():
            members = [parent, *kids]
            if not all(m in rows and rows[m].get(self.image) for m in members):
                continue
            thumbs = [self._thumb_row(m, rows[m], params_column) for m in members]
            if all(t["src"] for t in thumbs):
                families.append((thumbs[0], thumbs[1:]))
        return families

    def _find_families(self) -> tuple[dict[str, set], dict[str, list[str]]]:
        """(path -> row groups to read, parent -> children ids) within SCAN_ROWS rows."""
        import pyarrow.parquet as pq

        position: dict[str, tuple[str, int]] = {}
        children: dict[str, list[str]] = {}
        seen = 0
        for path in self._files("data"):
            with self.fs.open(path, "rb") as f:
                pf = pq.ParquetFile(f)
                for rg in range(pf.num_row_groups):
                    for rid in pf.read_row_group(rg, columns=["id"]).column("id").to_pylist():
                        rid = str(rid)
                        position[rid] = (path, rg)
                        m = AUG_ID.match(rid)
                        if m and (m.group(1) in children or len(children) < 4 * self.FAMILIES):
                            children.setdefault(m.group(1), []).append(rid)
                    seen += pf.metadata.row_group(rg).num_rows
                    complete = [p for p in children if p in position]
                    if len(complete) >= self.FAMILIES or seen >= self.SCAN_ROWS:
                        break
            if seen >= self.SCAN_ROWS or len([p for p in children if p in position]) >= self.FAMILIES:
                break
        chosen = {p: sorted(k, key=natural_key)[: self.CHILDREN] for p, k in children.items() if p in position}
        chosen = dict(list(chosen.items())[: self.FAMILIES])
        where: dict[str, set] = {}
        for parent, kids in chosen.items():
            for rid in (parent, *kids):
                if rid in position:
                    path, rg = position[rid]
                    where.setdefault(path, set()).add(rg)
        return where, chosen

    def _read_rows(self, where: dict[str, set], wanted: set, columns: list) -> dict[str, dict]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        out = {}
        wanted_ids = pa.array(sorted(wanted), pa.string())
        for path, groups in where.items():
            with self.fs.open(path, "rb") as f:
                pf = pq.ParquetFile(f)
                cols = ["id", *[c for c in columns if c and c in pf.schema_arrow.names]]
                for rg in sorted(groups):
                    table = pf.read_row_group(rg, columns=cols)
                    ids = table.column("id").cast(pa.string())
                    for row in table.filter(pc.is_in(ids, wanted_ids)).to_pylist():
                        out[str(row["id"])] = row
        return out

    def _thumb_row(self, rid: str, row: dict, params_column: str) -> dict:
        ops = ""
        try:
            params = json.loads(row.get(params_column) or "null")
            if isinstance(params, list):
                ops = " + ".join(str(p.get("op", "?")) for p in params if isinstance(p, dict))
        except (TypeError, ValueError):
            params = None
        return {
            "id": rid,
            "src": thumbnail(image_bytes(row[self.image]), self.THUMB * 1.25),
            "label": row.get(self.label) if self.label else None,
            "ops": ops,
            "params": json.dumps(params) if params else "",
        }


AUG_ID = re.compile(r"^(.*)#aug(?:\d+\.)?\d+$")


def thumbnail(data: bytes, size: float) -> str | None:
    """A PNG data URI no larger than ``size`` pixels a side (small images are scaled up crisply)."""
    import cv2

    from dsbuild.kernels.decode import decode_image, encode_image

    dims = image_size(data)
    if dims is not None and dims[0] * dims[1] > 100_000_000:
        return None
    pixels = decode_image(data)
    if pixels is None or pixels.size == 0:
        return None
    if pixels.dtype != np.uint8:
        pixels = cv2.normalize(pixels, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    h, w = pixels.shape[:2]
    scale = size / max(h, w)
    if scale < 1:
        pixels = cv2.resize(pixels, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    elif scale >= 2:
        k = int(scale)
        pixels = cv2.resize(pixels, (w * k, h * k), interpolation=cv2.INTER_NEAREST)
    return "data:image/png;base64," + base64.b64encode(encode_image(pixels, "png")).decode("ascii")
