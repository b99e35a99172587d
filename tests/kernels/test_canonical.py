import numpy as np
import pandas as pd
import pytest

from dsbuild.kernels.canonical import SynonymTable, canonicalize, match_key, tidy


def test_match_key_ignores_layout_case_and_width():
    assert match_key("  ＭＡＬＥ ") == match_key("male") == match_key("Male")
    assert match_key("Self  emp") == "self emp"
    # invisible format characters pasted with a value: zero-width space, BOM, direction mark
    assert match_key("us\u200b") == match_key("\ufeffUS") == match_key("u\u200es") == "us"


def test_tidy_keeps_case_unless_asked():
    assert tidy("  Private \t") == "Private"
    assert tidy("Ｐｒｉｖａｔｅ", case="lower") == "private"
    assert tidy("STRASSE", case="fold") == "strasse"


def test_synonym_table_maps_spellings_to_canonical():
    table = SynonymTable(["Male", "Female"], {"Male": ["M", "man"], "Female": ["F"]})
    values = pd.Series(["M", "male ", "Male", "ｍａｌｅ", "f", "woman", None], dtype="str")
    out, changed, unknown = canonicalize(values, table)
    assert out.tolist()[:6] == ["Male", "Male", "Male", "Male", "Female", "woman"]
    assert pd.isna(out.iloc[6])
    assert changed.tolist() == [True, True, False, True, True, False, False]
    assert unknown.tolist() == [False, False, False, False, False, True, False]


def test_without_table_nothing_is_unknown():
    out, changed, unknown = canonicalize(pd.Series([" a ", "b"]), case="upper")
    assert out.tolist() == ["A", "B"] and changed.all() and not unknown.any()


def test_ambiguous_table_is_refused():
    with pytest.raises(ValueError, match="would mean both"):
        SynonymTable(["Male", "Female"], {"Male": ["M"], "Female": ["m"]})


def test_bad_case_is_refused():
    with pytest.raises(ValueError, match="case must be"):
        canonicalize(pd.Series(["a"]), case="camel")


def test_result_dtype_is_str_for_empty_input():
    out, changed, unknown = canonicalize(pd.Series([], dtype="str"))
    assert out.dtype == "str" and len(changed) == 0 and unknown.dtype == np.bool_


def test_blank_text_is_missing_whatever_the_format():
    """A CSV reader makes a blank cell null, Parquet and JSON keep it: a closed vocabulary
    called it unknown (and rejected it) only when it came from Parquet or JSON."""
    table = SynonymTable(["Male", "Female"])
    out, changed, unknown = canonicalize(pd.Series(["Male", "", "  ", "\u3000", None], dtype="str"), table)
    assert out.iloc[0] == "Male" and out.iloc[1:].isna().all()
    assert not changed.any() and not unknown.any()
