"""The benchmarks' own helpers: a smoke run (``python -m benchmarks --quick``) must finish."""

from benchmarks.bench_dedup import _speed_row


def test_exact_dedup_row_with_duckdb_under_the_clocks_tick():
    """DuckDB's CPU time of the quick run's 20,000 rows can read 0 (under a 10 ms tick):
    the CPU ratio divided by it and the smoke run stopped."""
    row = _speed_row("20,000 rows, one process", (0.5, 0.8, 100), (0.01, 0.0, 100))
    assert "50.0×" in row and "under the clock's tick" in row and "MISMATCH" not in row
    assert "(CPU 2.0×)" in _speed_row("x", (0.5, 0.8, 100), (0.25, 0.4, 99)) and "MISMATCH: DuckDB drops 99" in \
        _speed_row("x", (0.5, 0.8, 100), (0.25, 0.4, 99))
