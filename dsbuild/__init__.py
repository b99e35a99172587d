"""dsbuild: build ML training sets you can trust, at any scale, on Dask."""

__version__ = "0.1.0"
