"""The manifest as a page a person reads: ``report.html``, one static file.

Plots are matplotlib PNGs inlined as data URIs and the page has no script, so it opens
from a disk, a bucket or an e-mail attachment with no server and no network. Besides the
manifest it reads only a small sample of the output (a few rows, a few images), never the
whole data set.

Stage summaries are whatever each stage chose to record, so they are drawn by shape, and
a new stage gets a readable section without touching this file:

- flat dict: a table; dict of same-shaped dicts or list of flat dicts: one table;
- dict of 5+ numbers: bar chart; dict keyed by values or bins (``2``, ``3-4``, ``65+``):
  bars in bin order (dedup's ``cluster_sizes``; ``prefix:bin`` counters are nested first);
- ``{edges, counts}``: a histogram, with a line at a ``cutoff``/``threshold`` found in it
  or above it, per class when the cut-off is a dict (``score_cut_per_class``);
- fairness ``before``/``after`` (views of groups with ``base_rate``): grouped bars and a
  table of parity difference and disparate impact; an audit's single view likewise;
- ``X_before``/``X_after`` and ``before``/``after`` dicts of numbers: paired bars;
- class moves (augment ``classes: {rows, copies}``, oversample ``counts``+``new_rows``,
  sanitize ``rows_per_class``+``removed_per_class``): the Class balance section;
- names beside a square count matrix (``confident_joint``): a shaded table, or a heatmap
  when large (synthesize's ``correlation``); long number lists: range and histogram.
"""

from dsbuild.report.page import highlights, render_report
from dsbuild.report.sample import OutputSample

__all__ = ["OutputSample", "highlights", "render_report"]
