"""Sizes in a job file: a number of bytes, or text as Dask reads it (``64MiB``, ``1GB``).

Cluster specs took ``memory_limit: 4GiB`` while ``shard_bytes: 1GiB`` was "Input should be
a valid integer"; every size option now takes both.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, StringConstraints


def byte_count(value):
    """``value`` as a whole number of bytes when it is text; anything else is left to the field's type."""
    if not isinstance(value, str):
        return value
    from dask.utils import parse_bytes

    try:
        return parse_bytes(value)
    except ValueError:
        raise ValueError(f"{value!r} is no size; write it like 64MiB, 1GiB or a number of bytes") from None


#: what the job schema lets through as text: a number and a unit (dask's parse_bytes judges)
SIZE_TEXT = Annotated[str, StringConstraints(pattern=r"^\s*[0-9.]+(e[0-9]+)?\s*[A-Za-z]*\s*$")]

Bytes = Annotated[int, BeforeValidator(byte_count, json_schema_input_type=int | SIZE_TEXT)]
