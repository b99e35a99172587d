"""A folder of images, one subfolder per class giving the label."""

from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import Field

from dsbuild.io.sources.common import BLOB_PARTITION_BYTES, Source, SourceError, _expand, _file_record, _relative, _Spec
from dsbuild.records import ID, image_series, image_size, sniff_image_format
from dsbuild.sizes import Bytes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".pnm", ".pam",
                    ".jp2", ".j2k", ".exr", ".pfm", ".hdr")


class ImagesSource(_Spec):
    format: Literal["images"]
    path: str
    labels: Literal["auto", "folders", "none"] = Field(
        "auto", description="label from the class subfolder; auto: when every image sits in one"
    )
    extensions: list[str] = Field(default_factory=lambda: list(IMAGE_EXTENSIONS))
    files_per_partition: int = Field(256, gt=0)
    bytes_per_partition: Bytes = Field(
        BLOB_PARTITION_BYTES, gt=0, description="a partition ends at files_per_partition files or this many bytes of "
        "files, whichever comes first (a larger file is a partition of its own): a worker holds a few partitions, "
        "decoded and copied, at once")


def _read_images(spec: ImagesSource) -> Source:
    import dask.dataframe as dd

    suffixes = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in spec.extensions)
    # ids relative to the folder, a file's own folder or a glob's: relative to the path as
    # written, a file was '.' and a glob's files their bare names (cat/0.png, dog/0.png: 0.png twice)
    fs, root, files, skipped = _expand(spec.path, suffixes, ignore=(".",))  # '_DSC0001.JPG' is a photo
    rels = [_relative(f, root) for f in files]
    in_folders = all("/" in r for r in rels)
    flat = [r for r in rels if "/" not in r]
    if spec.labels == "folders" and not in_folders:
        raise SourceError(f"{spec.path}: labels: folders, but {flat[0]!r} is not in a class subfolder")
    if spec.labels == "auto" and flat and len(flat) < len(rels):  # one stray file turned the labels off
        raise SourceError(f"{spec.path}: {len(rels) - len(flat):,} images sit in class subfolders, but {flat[0]!r}"
                          f"{f' and {len(flat) - 1:,} more' if len(flat) > 1 else ''} not: move "
                          f"{'it' if len(flat) == 1 else 'them'} into a class folder, or set labels: none to read the images "
                          "without labels")
    with_labels = spec.labels == "folders" or (spec.labels == "auto" and in_folders)
    records = [_file_record(fs, f) for f in files]
    chunks = _chunks(list(zip(files, rels)), [r["size"] or 0 for r in records], spec.files_per_partition, spec.bytes_per_partition)
    reader = _ImageFiles(fs, with_labels)
    return Source(dd.from_map(reader, chunks, meta=reader(None), divisions=None, label="read-images", enforce_metadata=False), records, skipped,
                  filesystem=fs)


def _chunks(files: list, sizes: list[int], max_files: int, max_bytes: int) -> list[list]:
    """The files in order, cut into partitions of at most ``max_files`` files and
    ``max_bytes`` bytes (a file larger alone). By count alone, 256 phone photos of 4 MiB
    were one partition of 1 GiB, which workers of 2 GiB died holding with its copies."""
    chunks: list[list] = []
    held = 0
    for item, size in zip(files, sizes):
        if not chunks or len(chunks[-1]) == max_files or held + size > max_bytes:
            chunks.append([])
            held = 0
        chunks[-1].append(item)
        held += size
    return chunks


class _ImageFiles:
    def __init__(self, fs, with_labels: bool):
        self.fs, self.with_labels = fs, with_labels

    def __call__(self, chunk) -> pd.DataFrame:
        chunk = chunk or []
        blobs = []
        for path, _ in chunk:
            with self.fs.open(path, "rb") as f:
                blobs.append(f.read())
        df = images_frame([rel for _, rel in chunk], blobs, [path for path, _ in chunk])
        if self.with_labels:
            df["label"] = pd.array([rel.split("/")[0] for _, rel in chunk], dtype="string")
        return df


def images_frame(ids: list[str], blobs: list[bytes], paths: list[str] | None = None) -> pd.DataFrame:
    """The standard image columns: bytes with format, height and width beside them."""
    sizes = [image_size(b) for b in blobs]
    return pd.DataFrame(
        {
            ID: pd.array(ids, dtype="string"),
            "image": image_series(blobs),
            "image_format": pd.array([sniff_image_format(b) for b in blobs], dtype="string"),
            "image_height": pd.array([s[0] if s else None for s in sizes], dtype="Int64"),
            "image_width": pd.array([s[1] if s else None for s in sizes], dtype="Int64"),
            **({"path": pd.array(paths, dtype="string")} if paths is not None else {}),
        }
    )
