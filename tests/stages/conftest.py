"""Image columns in the form Hugging Face ``datasets`` writes for ``Image()``."""

import pandas as pd
import pyarrow as pa
import pytest

HF_IMAGE = pd.ArrowDtype(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))


@pytest.fixture(scope="session")
def as_hf_images():
    """The frame with its binary ``image`` column as ``struct<bytes, path>``: an Arrow
    struct column (a pandas frame) or dicts in an object column (what dsbuild's Parquet
    source hands the stages). A null image becomes a path-only struct (``bytes`` null),
    as ``datasets`` writes an image it did not embed."""

    def convert(frame: pd.DataFrame, column: str = "image", arrow: bool = True) -> pd.DataFrame:
        cells = [{"bytes": b if isinstance(b, bytes) else None, "path": f"{rid}.png"} for rid, b in zip(frame["id"], frame[column])]
        return frame.assign(**{column: pd.Series(cells, index=frame.index, dtype=HF_IMAGE if arrow else object)})

    return convert
