"""matplotlib figures for the page: drawn on the Agg canvas, margins fitted to their labels,
inlined as PNG data URIs."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from dsbuild.report.text import is_number, num, short

KEPT, REJECTED, ADDED, FIT, TASKS = "#2a9d8f", "#e76f51", "#457b9d", "#b8c0cc", "#264653"
BEFORE, AFTER = "#b8c0cc", "#2a9d8f"
REJECT_SHADES = ["#e76f51", "#f4a261", "#bc4749", "#e9c46a", "#8d6a9f", "#6b705c"]
PALETTE = ["#264653", "#2a9d8f", "#e9c46a", "#f4a261", "#e76f51", "#457b9d", "#8d6a9f", "#6b705c", "#a8dadc", "#bc4749"]
MAX_BARS = 30
MAX_LABEL = 60  # characters of a tick label or legend entry
DPI = 110
PAD_POINTS = 6  # white between a label and the image's edge
MIN_PLOT_SIZE = (2.0, 0.9)  # inches (width, height) a plot keeps beside long labels: the figure grows instead


def figure(width: float, height: float):
    """A figure on the Agg canvas with no layout engine: ``img`` fits its margins.

    ``layout="constrained"`` makes ``savefig`` draw twice (once only to lay out) and lay
    out in both draws; measuring the labels once and drawing once costs less.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, min(max(height, 1.6), 14)), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def tidy(ax) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=9)


def legend_above(ax, ncols: int) -> None:
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False, ncols=ncols, fontsize=9, borderaxespad=0.2)


def bar_chart(values: dict, ylabel: str = "", xlabel: str = "", sort: bool = True, vertical: bool = False):
    items = [(str(k), float(v)) for k, v in values.items() if is_number(v)]
    if sort:
        items.sort(key=lambda kv: -kv[1])
    if len(items) > MAX_BARS:
        items = items[:MAX_BARS]
    labels, nums = [k for k, _ in items], [v for _, v in items]
    if vertical:
        fig, ax = figure(8, 2.8)
        ax.bar(range(len(nums)), nums, color=KEPT)
        ax.set_xticks(range(len(nums)), labels, rotation=0 if len(labels) < 16 else 60, fontsize=8)
        if nums and max(nums) > 50 * max(min(n for n in nums if n > 0) if any(n > 0 for n in nums) else 1, 1):
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_xlabel(xlabel)
    else:
        fig, ax = figure(8, 0.3 * len(nums) + 1.0)
        ax.barh(range(len(nums)), nums, color=KEPT)
        for i, v in enumerate(nums):
            ax.text(v, i, f" {num(v)}", va="center", fontsize=8)
        ax.set_yticks(range(len(nums)), labels)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel.replace("_", " "))
        lo, hi = min(min(nums), 0), max(max(nums), 0)
        ax.set_xlim(lo * 1.2, hi * 1.2 or 1)
    tidy(ax)
    return fig


def paired_bars(series: dict[str, dict], ylabel: str = "", title: str | None = None, reference=None, colors=None, xlabel: str = ""):
    """Grouped vertical bars: one group per key, one bar per series (before, after)."""
    keys = list(dict.fromkeys(k for s in series.values() for k in s))[:MAX_BARS]
    colors = colors or ([BEFORE, AFTER] if len(series) == 2 else PALETTE)
    fig, ax = figure(max(5, min(10, 1.0 + 0.6 * len(keys) * len(series))), 3.0)
    width = 0.8 / len(series)
    x = np.arange(len(keys))
    for j, (name, s) in enumerate(series.items()):
        vals = [float(s.get(k)) if is_number(s.get(k)) else np.nan for k in keys]
        bars = ax.bar(x + (j - (len(series) - 1) / 2) * width, vals, width, label=name, color=colors[j % len(colors)])
        if len(keys) * len(series) <= 16:
            ax.bar_label(bars, labels=[num(v) if np.isfinite(v) else "" for v in vals], fontsize=8, padding=2)
    labels = [f"{k}\n(reference)" if reference is not None and k == reference else str(k) for k in keys]
    crowded = sum(len(str(k)) + 2 for k in keys) > 70
    ax.set_xticks(x, labels, rotation=45 if crowded else 0, ha="right" if crowded else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    if title or xlabel:
        ax.set_xlabel(title or xlabel)
    if len(series) > 1:
        legend_above(ax, ncols=len(series))
    ax.margins(y=0.12)
    tidy(ax)
    return fig


def img(fig, alt: str) -> str:
    _shorten_labels(fig)
    _fit_margins(fig)
    fig.canvas.draw()
    buf = io.BytesIO()
    _png(fig.canvas.buffer_rgba(), buf)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="plot" src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _shorten_labels(fig) -> None:
    """Tick labels and legend entries cut to MAX_LABEL characters: they come from the data
    (reasons, classes, groups), and the figure grows to hold them, so one reason naming a
    3,000-value list made a plot 110,000 pixels wide. The manifest keeps them whole."""
    from matplotlib.ticker import FixedFormatter, FuncFormatter

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            named = axis.get_major_formatter()
            if isinstance(named, (FixedFormatter, FuncFormatter)):  # labels given as text (numbers keep their formatter)
                axis.set_major_formatter(FuncFormatter(lambda x, pos, named=named: short(named(x, pos), MAX_LABEL)))
        legend = ax.get_legend()
        for text in legend.get_texts() if legend else []:
            text.set_text(short(text.get_text(), MAX_LABEL))


def _fit_margins(fig) -> None:
    """Subplot margins that just hold every label, legend, title and note of the axes.

    Measured from their extents and applied with ``subplots_adjust``, then measured again
    in case that moved them (text placed in data units, aspect-locked heatmaps).
    """
    renderer = fig.canvas.get_renderer()
    for _ in range(3):
        margins = _overhang(fig, renderer)
        if _grow_to_fit(fig, margins):
            renderer = fig.canvas.get_renderer()
        elif all(abs(a - b) < 1 for a, b in zip(margins, _margins(fig))):
            return
        left, bottom, right, top = margins
        width, height = fig.bbox.width, fig.bbox.height
        fig.subplots_adjust(left=left / width, bottom=bottom / height, right=1 - right / width, top=1 - top / height)


def _margins(fig) -> tuple[float, float, float, float]:
    """The current subplot margins in pixels, as ``_overhang`` gives the wanted ones."""
    sp, width, height = fig.subplotpars, fig.bbox.width, fig.bbox.height
    return sp.left * width, sp.bottom * height, (1 - sp.right) * width, (1 - sp.top) * height


def _grow_to_fit(fig, margins) -> bool:
    """Enlarge a figure whose labels would squeeze its plot below MIN_PLOT_SIZE: long names never clip."""
    left, bottom, right, top = margins
    width, height = fig.get_size_inches()
    need_w = (left + right) / fig.dpi + MIN_PLOT_SIZE[0]
    need_h = (bottom + top) / fig.dpi + MIN_PLOT_SIZE[1]
    if need_w <= width + 0.01 and need_h <= height + 0.01:
        return False
    fig.set_size_inches(max(width, need_w), max(height, need_h))
    return True


def _overhang(fig, renderer) -> tuple[float, float, float, float]:
    """Pixels (left, bottom, right, top) the axes' decorations need beyond their plot area, plus a pad."""
    from matplotlib.transforms import Bbox

    inner = Bbox.union([ax.get_position(original=True) for ax in fig.axes]).transformed(fig.transFigure)
    outer = Bbox.union([ax.get_tightbbox(renderer) for ax in fig.axes])
    pad = PAD_POINTS * fig.dpi / 72
    return (max(inner.x0 - outer.x0, 0) + pad, max(inner.y0 - outer.y0, 0) + pad,
            max(outer.x1 - inner.x1, 0) + pad, max(outer.y1 - inner.y1, 0) + pad)


def _png(rgba, out) -> None:
    """RGB, as the figure is opaque, at zlib level 3 (Pillow comes with matplotlib).

    Half the time of ``savefig``'s RGBA at level 6, and files ~10% smaller.
    """
    from PIL import Image

    Image.fromarray(np.asarray(rgba)).convert("RGB").save(out, format="png", compress_level=3)
