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

from __future__ import annotations

import base64
import contextvars
import html
import io
import json
import math
import posixpath
import re
from collections.abc import Callable, Iterable

import numpy as np

from dsbuild.records import image_bytes, image_size, missing_image_reason

KEPT, REJECTED, ADDED, FIT, TASKS = "#2a9d8f", "#e76f51", "#457b9d", "#b8c0cc", "#264653"
BEFORE, AFTER = "#b8c0cc", "#2a9d8f"
REJECT_SHADES = ["#e76f51", "#f4a261", "#bc4749", "#e9c46a", "#8d6a9f", "#6b705c"]
PALETTE = ["#264653", "#2a9d8f", "#e9c46a", "#f4a261", "#e76f51", "#457b9d", "#8d6a9f", "#6b705c", "#a8dadc", "#bc4749"]
INHERITED_CUT: contextvars.ContextVar = contextvars.ContextVar("inherited_cut", default=None)
MAX_TABLE_ROWS = 25
MAX_BARS = 30
MAX_DEPTH = 8  # an audit by split has rates per group under 7 keys (by, split, test, model, equalized_odds, sex, true_positive_rate)
MAX_LABEL = 60  # characters of a tick label or legend entry
CUTOFF_KEYS = ("cutoff", "cut_off", "threshold", "cut", "limit")
COUNT_KEYS = ("counts", "count", "hist", "histogram", "frequencies")
EDGE_KEYS = ("edges", "bin_edges", "bins")
DPI = 110
PAD_POINTS = 6  # white between a label and the image's edge
MIN_PLOT_SIZE = (2.0, 0.9)  # inches (width, height) a plot keeps beside long labels: the figure grows instead


def render_report(manifest: dict, folder: str, fs=None) -> str:
    """The HTML of ``report.html`` for ``manifest``; ``folder`` holds its ``data/`` and ``rejects/``."""
    sample = OutputSample(manifest, folder, fs)
    builders = [
        ("overview", "Overview", lambda: _overview(manifest)),
        ("flow", "Rows through the build", lambda: _flow_section(manifest)),
        ("rejects", "Rejects by reason", lambda: _rejects_section(manifest, sample)),
        ("time", "Time per stage", lambda: _time_section(manifest)),
        ("balance", "Class balance", lambda: _class_balance_section(manifest)),
        ("augment", "Augmented images", lambda: _augment_section(manifest, sample)),
        *((f"stage-{_slug(s['name'])}", f"Stage · {s['name']}", lambda s=s: _stage_section(s))
          for s in manifest.get("stages", []) if _has_details(s)),
        ("sample", "A look at the output", lambda: _data_sample_section(manifest, sample)),
        ("outputs", "Output", lambda: _outputs_section(manifest)),
    ]
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):  # names and values are text: '$' is no TeX
        sections = [s for s in (_safely(*b) for b in builders) if s]
    nav = "".join(f'<a href="#{s[0]}">{html.escape(s[1])}</a>' for s in sections)
    body = "".join(f'<section id="{s[0]}"><h2>{html.escape(s[1])}</h2>{s[2]}</section>' for s in sections)
    job = manifest.get("job", {})
    title = f"dsbuild · {job.get('name', 'build')}"
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header>{_header(manifest)}<nav>{nav}</nav></header><main>{body}</main>"
        f"<footer>{_footer(manifest)}</footer></body></html>"
    )


def _safely(anchor: str, title: str, build):
    """A section, or a note saying why it could not be drawn: a report bug never costs a build."""
    try:
        return build()
    except Exception as e:  # noqa: BLE001
        return (anchor, title, f'<div class="alert warn">This section could not be drawn: {html.escape(repr(e))}</div>')


# -- page parts -------------------------------------------------------------------------


def _header(m: dict) -> str:
    job, t = m.get("job", {}), m.get("totals", {})
    ledger = m.get("ledger", {})
    status = (
        '<span class="pill ok">ledger balanced</span>'
        if ledger.get("balanced", True)
        else '<span class="pill bad">ledger NOT balanced</span>'
    )
    seconds = m.get("timings", {}).get("total")
    cards = [
        ("rows in", _int(t.get("in")), ""),
        ("kept", _int(t.get("kept")), "kept"),
        ("rejected", _int(t.get("rejected")), "rejected"),
        ("added", _int(t.get("added")), "added"),
        ("time", f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "—", ""),
    ]
    card_html = "".join(f'<div class="card {c}"><div class="num">{v}</div><div class="lbl">{k}</div></div>' for k, v, c in cards)
    return (
        f'<div class="title"><h1>{html.escape(str(job.get("name", "build")))}</h1>{status}</div>'
        f'<p class="sub">built {html.escape(str(m.get("created", "")))} by dsbuild {html.escape(str(m.get("dsbuild", "")))}'
        f" · seed {html.escape(str(job.get('seed', '')))} · source {html.escape(_source_text(job.get('source', {})))}</p>"
        f'<div class="cards">{card_html}</div>'
    )


def _source_text(source: dict) -> str:
    if not isinstance(source, dict):
        return str(source)
    return " ".join(f"{k}={v}" for k, v in source.items() if k in ("format", "name", "path") and v)


def _overview(m: dict):
    parts = []
    problems = m.get("ledger", {}).get("problems") or []
    if problems:
        parts.append('<div class="alert bad">' + "<br>".join(html.escape(p) for p in problems) + "</div>")
    for w in m.get("warnings", []) or []:
        parts.append(f'<div class="alert warn">{html.escape(str(w))}</div>')
    skipped = m.get("input", {}).get("skipped") or []
    if skipped:
        listed = "<br>".join(html.escape(f"{s.get('path')}: {s.get('why')}") for s in skipped[:10])
        more = f"<br>… {len(skipped) - 10} more in manifest.json" if len(skipped) > 10 else ""
        parts.append(f'<div class="alert warn">{len(skipped)} input file(s) not read:<br>{listed}{more}</div>')
    rows = [
        (s["name"], s.get("shape", ""), _int(s.get("in")), _int(s.get("out")), _int(s.get("rejected")),
         _int(s.get("added")), _seconds(s))
        for s in m.get("stages", [])
    ]
    parts.append(_table(["stage", "shape", "in", "kept", "rejected", "added", "seconds"], rows, numeric_from=2))
    notes = highlights(m)
    if notes:
        parts.append("<h3>Highlights</h3><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    return ("overview", "Overview", "".join(parts))


def highlights(m: dict) -> list[str]:
    """One line per thing a stage learned that a reader looks for first (also for ``dsbuild inspect``)."""
    out = []
    for s in m.get("stages", []):
        summary, name = s.get("summary") or {}, s["name"]
        if not isinstance(summary, dict):
            continue
        if _is_parity(summary.get("before")) and _is_parity(summary.get("after")):
            rows = f" ({summary['where']})" if summary.get("where") else ""
            for view, b in summary["before"].items():
                a = summary["after"].get(view, {})
                out.append(f"{name}{rows}: disparate impact by {view} {_num(b.get('di'))} → {_num(a.get('di'))}, "
                           f"parity difference {_num(b.get('spd'))} → {_num(a.get('spd'))}")
        elif _is_parity(summary.get("data")):
            for view, v in summary["data"].items():
                out.append(f"{name}: disparate impact by {view} {_num(v.get('di'))}, parity difference {_num(v.get('spd'))}")
            out += _model_lines(name, summary.get("model") or {})
            for column, values in (summary.get("by") or {}).items():
                for value, audit in values.items():
                    views = ", ".join(f"by {view} {_num(v.get('di'))}" for view, v in audit["data"].items())
                    out.append(f"{name} ({column} = {value}, {_int(audit['rows'])} rows): disparate impact {views}")
        pair = class_counts(summary)
        if pair:
            b, a = [list(pair[k].values()) for k in ("before", "after")]
            out.append(f"{name}: {len(b)} classes of {_span(b)} rows → {_span(a)}")
        if isinstance(summary.get("fractions"), dict):
            metrics, column = s.get("metrics") or {}, summary.get("column")
            out.append(f"{name}: " + " · ".join(f"{k} {_num(metrics.get(f'{column}:{k}', 0))}" for k in summary["fractions"]))
        if _is_number(summary.get("clusters")):
            inside = summary.get("rows_in_clusters")
            out.append(f"{name}: {_num(summary['clusters'])} duplicate clusters"
                       + (f" holding {_num(inside)} rows" if _is_number(inside) else ""))
    return out


def _model_lines(name: str, model: dict) -> list[str]:
    """An audited model's figures per view, under fairlearn's names: what the user asked the
    audit with a model for."""
    if not _is_parity(model.get("predictions")):
        return []
    odds = model.get("equalized_odds") or {}
    return [f"{name}: {model.get('name')}'s predictions by {view}: demographic parity difference "
            f"{_num(v.get('demographic_parity_difference'))}, equalized odds difference "
            f"{_num((odds.get(view) or {}).get('equalized_odds_difference'))}"
            for view, v in model["predictions"].items()]


def _flow_section(m: dict):
    stages = m.get("stages", [])
    if not stages:
        return None
    names = [s["name"] for s in stages]
    kept = np.array([max(s.get("out", 0) - s.get("added", 0), 0) for s in stages], dtype=float)
    added = np.array([s.get("added", 0) for s in stages], dtype=float)
    rejected = np.array([s.get("rejected", 0) for s in stages], dtype=float)
    fig, ax = _figure(9, 0.5 * len(stages) + 1.1)
    y = np.arange(len(stages))
    ax.barh(y, kept, color=KEPT, label="kept")
    ax.barh(y, added, left=kept, color=ADDED, label="added")
    ax.barh(y, rejected, left=kept + added, color=REJECTED, label="rejected")
    total = (kept + added + rejected).max() or 1
    for i, s in enumerate(stages):
        note = f"{_int(s.get('in'))} → {_int(s.get('out'))}"
        extra = [f"−{_int(s['rejected'])}" if s.get("rejected") else "", f"+{_int(s['added'])}" if s.get("added") else ""]
        note += "".join(f"  {e}" for e in extra if e)
        ax.text(kept[i] + added[i] + rejected[i] + total * 0.01, i, note, va="center", fontsize=9, color="#333")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, total * 1.3)
    ax.set_xlabel("rows")
    _legend_above(ax, ncols=3)
    _tidy(ax)
    text = ("<p>Each bar is one stage: the rows it kept, the rows it made (augmentation, synthesis) "
            "and the rows it rejected. Rows in = kept + rejected − added, for every stage.</p>")
    return ("flow", "Rows through the build", text + _img(fig, "rows kept, added and rejected per stage"))


def _rejects_section(m: dict, sample: OutputSample):
    counts = [(f"{reason}  ({s['name']})", n, s["name"]) for s in m.get("stages", [])
              for reason, n in (s.get("rejected_by_reason") or {}).items() if n]
    if not counts:
        return ("rejects", "Rejects by reason", "<p>No row was rejected.</p>")
    counts.sort(key=lambda c: -c[1])
    shown, rest = counts[:MAX_BARS], counts[MAX_BARS:]
    if rest:
        shown.append((f"{len(rest)} other reasons", sum(c[1] for c in rest), ""))
    rejecting = list(dict.fromkeys(st for _, _, st in shown if st))
    colors = [REJECT_SHADES[rejecting.index(st) % len(REJECT_SHADES)] if st else "#999" for _, _, st in shown]
    fig, ax = _figure(9, 0.32 * len(shown) + 1.0)
    y = np.arange(len(shown))
    values = [c[1] for c in shown]
    ax.barh(y, values, color=colors)
    for i, v in enumerate(values):
        ax.text(v, i, f" {_int(v)}", va="center", fontsize=9)
    ax.set_yticks(y, [c[0] for c in shown])
    ax.invert_yaxis()
    ax.set_xlim(0, max(values) * 1.15)
    ax.set_xlabel("rows rejected")
    _tidy(ax)
    text = (f"<p>{_int(m.get('totals', {}).get('rejected'))} rows went to <code>rejects/</code>, whole, with their "
            "<code>reason</code> and <code>stage</code>; a reason's detail after <code>=</code> is in the row.</p>")
    examples = sample.reject_examples()
    if examples:
        text_ex = _table(["stage", "reason", "id"], [(e["stage"], _short(e["reason"]), _short(e["id"])) for e in examples])
        examples_html = f"<details open><summary>Examples from the rejects</summary>{text_ex}</details>"
    else:
        examples_html = ""
    return ("rejects", "Rejects by reason", text + _img(fig, "rejected rows by reason") + examples_html)


def _time_section(m: dict):
    stages = [s for s in m.get("stages", []) if s.get("seconds")]
    timings = m.get("timings", {})
    if not stages and not timings:
        return None
    parts = []
    if stages:
        fit = np.array([s["seconds"].get("fit", 0.0) for s in stages])
        tasks = np.array([s["seconds"].get("tasks", 0.0) for s in stages])
        fig, ax = _figure(9, 0.45 * len(stages) + 1.1)
        y = np.arange(len(stages))
        ax.barh(y, fit, color=FIT, label="planning and fitting (driver)")
        ax.barh(y, tasks, left=fit, color=TASKS, label="tasks (summed over workers)")
        for i in range(len(stages)):
            ax.text(fit[i] + tasks[i], i, f" {fit[i] + tasks[i]:.2f} s", va="center", fontsize=9)
        ax.set_yticks(y, [s["name"] for s in stages])
        ax.invert_yaxis()
        ax.set_xlim(0, max((fit + tasks).max(), 1e-3) * 1.2)
        ax.set_xlabel("seconds")
        _legend_above(ax, ncols=2)
        _tidy(ax)
        parts.append(_img(fig, "seconds per stage"))
        if not tasks.any():
            parts.append('<p class="muted">Task times were not recorded for this run; the compute phase below holds them.</p>')
    if timings:
        parts.append(_table(["phase", "seconds"], [(k.replace("_", " "), _num(v)) for k, v in timings.items()], numeric_from=1))
    c = m.get("cluster", {})
    if c:
        parts.append(f"<p>Ran on {_int(c.get('workers'))} worker(s) with {_int(c.get('threads'))} thread(s).</p>")
    return ("time", "Time per stage", "".join(parts))


def _class_balance_section(m: dict):
    """Rows per class as read and as written, and around each stage that changes the balance."""
    label = m.get("job", {}).get("columns", {}).get("label") or "label"
    counted = [s for s in m.get("stages", []) if isinstance(s.get("labels"), dict) and s["labels"]]
    parts = []
    if counted:
        first, last = counted[0], counted[-1]
        pairs = {"as read": first["labels"], "as written": last["labels"]} if first is not last else {"as written": last["labels"]}
        parts.append(f"<p>Rows per value of <code>{html.escape(label)}</code>.</p>"
                     + _img(_paired_bars(pairs, ylabel="rows"), "class balance before and after"))
    for s in m.get("stages", []):
        pair = class_counts(s.get("summary") or {})
        if pair:
            parts.append(f"<h3>{html.escape(s['name'])}</h3>"
                         + _img(_paired_bars(pair, ylabel="rows", xlabel=label), f"class balance around {s['name']}"))
    return ("balance", "Class balance", "".join(parts)) if parts else None


def class_counts(summary: dict) -> dict | None:
    """``{"before": {class: rows}, "after": {...}}`` from the summaries of stages that move classes.

    augment (``classes: {c: {rows, copies}}``), oversample (``counts`` and ``new_rows``) and
    sanitize (``rows_per_class`` and ``removed_per_class``).
    """
    if not isinstance(summary, dict):
        return None
    classes = summary.get("classes")
    if isinstance(classes, dict) and classes and all(isinstance(v, dict) and _is_number(v.get("rows")) and _is_number(v.get("copies")) for v in classes.values()):
        return _in_class_order({"before": {c: v["rows"] for c, v in classes.items()},
                                "after": {c: v["rows"] + v["copies"] for c, v in classes.items()}})
    for base, change, sign in (("counts", "new_rows", 1), ("rows_per_class", "removed_per_class", -1)):
        b, d = summary.get(base), summary.get(change)
        if _is_numeric_dict(b) and isinstance(d, dict) and all(_is_number(v) for v in d.values()):
            return _in_class_order({"before": b, "after": {c: n + sign * d.get(c, 0) for c, n in b.items()}})
    return None


def _in_class_order(pair: dict) -> dict:
    return {k: dict(sorted(v.items(), key=lambda kv: _natural(str(kv[0])))) for k, v in pair.items()}


def _augment_section(m: dict, sample: OutputSample):
    if not any(s.get("added") for s in m.get("stages", [])):
        return None
    augment = next((s for s in m["stages"] if s.get("added") and "params_column" in (s.get("options") or {})), None)
    families = sample.augmented_families((augment or {}).get("options", {}).get("params_column", "augment_params"))
    if not families:
        return None
    rows = []
    for parent, children in families:
        cells = [_thumb_cell(parent, "parent")] + [_thumb_cell(c, c["id"].rsplit("#", 1)[-1]) for c in children]
        rows.append(f'<div class="family">{"".join(cells)}</div>')
    text = "<p>A few augmented rows from the output beside the row they were made from (hover for the parameters).</p>"
    return ("augment", "Augmented images", text + f'<div class="families">{"".join(rows)}</div>')


def _thumb_cell(row: dict, caption: str) -> str:
    lines = [html.escape(caption)]
    if row.get("ops"):
        lines.append(f'<span class="ops">{html.escape(_short(row["ops"], 40))}</span>')
    if row.get("label") is not None:
        lines.append(f'<span class="muted">label {html.escape(str(row["label"]))}</span>')
    tip = html.escape(row["id"] + (f"\n{row['params']}" if row.get("params") else ""))
    return (f'<figure><img class="thumb" src="{row["src"]}" alt="{html.escape(row["id"])}">'
            f'<figcaption title="{tip}">{"<br>".join(lines)}</figcaption></figure>')


def _has_details(stage: dict) -> bool:
    return bool(stage.get("summary") or stage.get("options") or stage.get("metrics"))


def _stage_section(stage: dict):
    name = stage["name"]
    parts = [f'<p class="muted">shape: {html.escape(str(stage.get("shape", "")))}</p>']
    if stage.get("options"):
        parts.append(f'<details><summary>options</summary><pre>{html.escape(json.dumps(stage["options"], indent=2, default=str))}</pre></details>')
    if stage.get("metrics"):
        parts.append("<h3>Counters</h3>" + _render(stage["metrics"], []))
    if stage.get("summary"):
        parts.append("<h3>What it learned</h3>" + _render(stage["summary"], []))
    return (f"stage-{_slug(name)}", f"Stage · {name}", "".join(parts))


def _data_sample_section(m: dict, sample: OutputSample):
    rows = sample.head()
    if not rows:
        return None
    columns = list(rows[0])
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r[c]
            cells.append(f'<img class="thumb small" src="{v["src"]}" alt="{html.escape(c)}">' if isinstance(v, dict) else html.escape(_short(v)))
        body.append(cells)
    table = _table([html.escape(c) for c in columns], body, escape=False)
    return ("sample", "A look at the output", f"<p>The first rows of <code>data/</code>.</p>{table}")


def _outputs_section(m: dict):
    out = m.get("outputs", {})
    parts = []
    for kind in ("data", "rejects"):
        shards = out.get(kind) or []
        if not shards:
            continue
        rows = [(s.get("file", ""), _int(s.get("rows")), _bytes(s.get("bytes")), str(s.get("sha256", ""))[:16] + "…") for s in shards]
        parts.append(f"<h3><code>{kind}/</code> · {len(shards)} shard(s), {_int(sum(s.get('rows', 0) for s in shards))} rows, "
                     f"{_bytes(sum(s.get('bytes', 0) or 0 for s in shards))}</h3>")
        parts.append(_table(["file", "rows", "size", "sha256"], rows[:MAX_TABLE_ROWS], numeric_from=1) + _more(len(rows)))
    schema = m.get("schema", {}).get("data")
    if schema:
        parts.append("<h3>Schema of <code>data/</code></h3>")
        parts.append(_table(["column", "type"], [(f["name"], f["type"] + (" (partition folders)" if f.get("partition") else ""))
                                                 for f in schema]))
    return ("outputs", "Output", "".join(parts)) if parts else None


def _footer(m: dict) -> str:
    versions = " · ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items())
    fp = m.get("input", {}).get("fingerprint")
    return (f"<p>{html.escape(versions)}</p>"
            + (f"<p>input fingerprint <code>{html.escape(str(fp))}</code></p>" if fp else "")
            + "<p>Written by <code>dsbuild report</code> from <code>manifest.json</code>; regenerate with "
              "<code>dsbuild report OUTPUT</code>.</p>")


# -- summaries, drawn by shape ----------------------------------------------------------


def _render(value, path: list[str]) -> str:
    """HTML for any JSON-able summary value; ``path`` is the keys above it."""
    if len(path) >= MAX_DEPTH:
        return f"<pre>{html.escape(_short(json.dumps(value, default=str), 2000))}</pre>"
    if isinstance(value, dict):
        return _render_dict(value, path)
    if isinstance(value, list):
        return _render_list(value, path)
    return f"<p>{html.escape(_short(value))}</p>"


def _render_dict(d: dict, path: list[str]) -> str:
    if not d:
        return '<p class="muted">(empty)</p>'
    d = _nest_prefixed(d)
    cut = _cut_of(d)
    token = INHERITED_CUT.set(cut) if cut is not None else None
    try:
        return _render_dict_shapes(d, path)
    finally:
        if token is not None:
            INHERITED_CUT.reset(token)


def _render_dict_shapes(d: dict, path: list[str]) -> str:
    for special in SPECIAL:
        out = special(d, path)
        if out is not None:
            return out
    if _is_numeric_dict(d) and len(d) >= 5:
        return _img(_bar_chart(d, ylabel=path[-1] if path else ""), " / ".join(path) or "values")
    table = _records_table(d)
    if table is not None:
        return table
    scalars = {k: v for k, v in d.items() if _is_scalar(v) or _is_short_list(v)}
    parts = []
    if scalars:
        parts.append(_table(["", ""], [(k, _fmt(v)) for k, v in scalars.items()], header=False))
    done = set(scalars)
    for k, v in d.items():
        if k in done:
            continue
        pair = _after_key(k, d)
        if pair is not None:
            parts.append(f"<h4>{html.escape(_title(k.rsplit('_before', 1)[0] or k))}</h4>"
                         + _before_after({"before": v, "after": d[pair]}, [*path, k]))
            done.add(pair)
            continue
        parts.append(f"<h{min(4 + len(path), 6)}>{html.escape(_title(k))}</h{min(4 + len(path), 6)}>" + _render(v, [*path, k]))
    return "".join(parts)


def _render_list(items: list, path: list[str]) -> str:
    if not items:
        return '<p class="muted">(none)</p>'
    if all(isinstance(v, dict) and all(_is_scalar(x) for x in v.values()) for v in items):
        columns = list(dict.fromkeys(k for v in items for k in v))
        rows = [[_fmt(v.get(c)) for c in columns] for v in items[:MAX_TABLE_ROWS]]
        return _table(columns, rows, numeric_from=_first_numeric(items, columns)) + _more(len(items))
    if all(_is_number(v) for v in items):
        arr = np.asarray(items, dtype=float)
        text = (f"<p>{len(arr)} numbers: min {_num(np.nanmin(arr))}, median {_num(np.nanmedian(arr))}, "
                f"max {_num(np.nanmax(arr))}</p>") if len(arr) > 12 else f"<p>{html.escape(_fmt(items))}</p>"
        if len(arr) >= 20:
            fig, ax = _figure(7, 2.4)
            ax.hist(arr[np.isfinite(arr)], bins=min(40, max(10, len(arr) // 10)), color=KEPT)
            _tidy(ax)
            text += _img(fig, " / ".join(path) or "values")
        return text
    if all(_is_scalar(v) for v in items):
        return f"<p>{html.escape(_fmt(items))}</p>"
    if len(items) > 1 and all(isinstance(r, list) and len(r) == len(items[0]) and all(map(_is_number, r)) for r in items):
        return _heatmap(items, None, path) if len(items) * len(items[0]) > 16 else _table(
            [""] * len(items[0]), [[_num(v) for v in r] for r in items], numeric_from=0, header=False)
    return "".join(f"<h6>{i}</h6>{_render(v, [*path, str(i)])}" for i, v in enumerate(items[:MAX_TABLE_ROWS])) + _more(len(items))


def _parity_pair(d: dict, path: list[str]):
    """Fairness ``before``/``after``: base rate per group, per view, side by side."""
    if not (_is_parity(d.get("before")) and _is_parity(d.get("after"))):
        return None
    rest = {k: v for k, v in d.items() if k not in ("before", "after")}
    return _before_after({"before": d["before"], "after": d["after"]}, path) + (_render_dict(rest, path) if rest else "")


def _parity_single(d: dict, path: list[str]):
    """A fairness audit: base rate per group, per view."""
    if not _is_parity(d):
        return None
    parts = []
    for view, v in d.items():
        groups = v["groups"]
        fig = _paired_bars({"base rate": {g: x.get("base_rate") for g, x in groups.items()}}, ylabel="base rate",
                           title=view, reference=v.get("reference"), colors=[AFTER])
        parts.append(_img(fig, f"base rate per group of {view}"))
        parts.append(_parity_table({"": v}))
    return "".join(parts)


def _before_after(pair: dict, path: list[str]) -> str:
    before, after = pair["before"], pair["after"]
    if _is_parity(before) and _is_parity(after):
        parts = []
        for view in after:
            if view not in before:
                continue
            b, a = before[view]["groups"], after[view]["groups"]
            fig = _paired_bars(
                {"before": {g: x.get("base_rate") for g, x in b.items()}, "after": {g: x.get("base_rate") for g, x in a.items()}},
                ylabel="base rate (favourable)", title=view, reference=before[view].get("reference"),
            )
            parts.append(_img(fig, f"base rate per group of {view}, before and after"))
            parts.append(_parity_table({"before": before[view], "after": after[view]}))
        return "".join(parts)
    if _is_numeric_dict(before) and _is_numeric_dict(after):
        return _img(_paired_bars(pair, ylabel=path[-1] if path else ""), "before and after")
    return "<h5>before</h5>" + _render(before, [*path, "before"]) + "<h5>after</h5>" + _render(after, [*path, "after"])


def _parity_table(views: dict) -> str:
    rows = []
    for when, v in views.items():
        for g, x in v["groups"].items():
            ref = " (reference)" if g == v.get("reference") else ""
            rows.append([html.escape(str(c)) for c in (when, g + ref, _int(x.get("count")), _num(x.get("base_rate")),
                                                       _num(x.get("spd")), _num(x.get("di")))])
        rows.append([html.escape(str(when)), "<b>overall</b>", "", "", f"<b>{_num(v.get('spd'))}</b>", f"<b>{_num(v.get('di'))}</b>"])
    head = ["", "group", "rows", "base rate", "parity difference", "disparate impact"]
    if all(not w for w in views):
        head, rows = head[1:], [r[1:] for r in rows]
    return _table(head, rows, numeric_from=len(head) - 4, escape=False)


def _histogram(d: dict, path: list[str]):
    """``{counts, edges}`` (or a numeric-keyed dict of counts) with a cut-off line if one is given."""
    counts = _first(d, COUNT_KEYS)
    edges = _first(d, EDGE_KEYS)
    if not (isinstance(counts, list) and isinstance(edges, list) and all(map(_is_number, counts)) and all(map(_is_number, edges))):
        return None
    if len(edges) not in (len(counts), len(counts) + 1) or not counts:
        return None
    fig, ax = _figure(8, 2.8)
    counts_arr = np.asarray(counts, dtype=float)
    if len(edges) == len(counts) + 1:
        e = np.asarray(edges, dtype=float)
        ax.stairs(counts_arr, e, fill=True, color=KEPT, alpha=0.85)
    else:
        ax.bar(np.asarray(edges, dtype=float), counts_arr, color=KEPT)
    if counts_arr.max() > 50 * max(np.median(counts_arr[counts_arr > 0]) if (counts_arr > 0).any() else 1, 1):
        ax.set_yscale("log")
    cut = _first(d, CUTOFF_KEYS)
    if not _is_number(cut):
        cut = _inherited_cut(path)
    if _is_number(cut):
        ax.axvline(float(cut), color=REJECTED, lw=2, ls="--", label=f"cut-off {_num(cut)}")
        ax.legend(frameon=False, fontsize=9)
    ax.set_ylabel("rows")
    ax.set_title(" / ".join(path[-2:]), fontsize=10, loc="left")
    _tidy(ax)
    rest = {k: v for k, v in d.items() if v is not counts and v is not edges}
    return _img(fig, " / ".join(path) or "histogram") + (_render_dict(rest, [*path, "·"]) if rest else "")


def _class_moves(d: dict, path: list[str]):
    """Rows per class before and after a stage that adds or removes rows by class."""
    pair = class_counts(d)
    if pair is None:
        return None
    used = {"classes"} if "classes" in d and not ("counts" in d or "rows_per_class" in d) else (
        {"counts", "new_rows"} if "new_rows" in d else {"rows_per_class", "removed_per_class"})
    rest = {k: v for k, v in d.items() if k not in used}
    rows = [(c, _num(b), _num(pair["after"].get(c)), _signed(pair["after"].get(c, 0) - b)) for c, b in pair["before"].items()]
    table = _table(["class", "before", "after", "change"], rows[:MAX_TABLE_ROWS], numeric_from=1) + _more(len(rows))
    note = '<p class="muted">Charted under <a href="#balance">Class balance</a>.</p>'
    return table + note + (_render_dict(rest, path) if rest else "")


def _matrix(d: dict, path: list[str]):
    """A square count matrix with its row/column names (confusion matrix, confident joint)."""
    names = next((v for v in d.values() if isinstance(v, list) and v and all(isinstance(x, str) for x in v)), None)
    grid = next((v for v in d.values() if isinstance(v, list) and v and all(isinstance(r, list) for r in v)), None)
    if names is None or grid is None or len(grid) != len(names) or any(len(r) != len(names) or not all(map(_is_number, r)) for r in grid):
        return None
    rest = {k: v for k, v in d.items() if v is not names and v is not grid}
    if len(names) > 12:
        key = next(k for k, v in d.items() if v is grid)
        return _heatmap(grid, names, [*path, key]) + (_render_dict(rest, path) if rest else "")
    axis = next((k for k, v in d.items() if v is names), "")
    top = max((max(r) for r in grid), default=0) or 1
    rows = []
    for name, r in zip(names, grid):
        cells = "".join(
            f'<td class="n" style="background: rgba(42,157,143,{0.08 + 0.6 * v / top:.2f})">{_num(v)}</td>' for v in r
        )
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    head = f"<tr><th>{html.escape(str(axis))}</th>" + "".join(f'<th class="n">{html.escape(n)}</th>' for n in names) + "</tr>"
    return (f'<div class="scroll"><table class="matrix"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></div>'
            + (_render_dict(rest, path) if rest else ""))


def _heatmap(grid: list, names: list | None, path: list[str]) -> str:
    arr = np.asarray(grid, dtype=float)
    n = max(arr.shape)
    fig, ax = _figure(min(3 + 0.22 * n, 11), min(2.5 + 0.2 * n, 10))
    symmetric = np.nanmin(arr) < 0
    lim = np.nanmax(np.abs(arr)) or 1
    im = ax.imshow(arr, cmap="RdBu_r" if symmetric else "viridis", vmin=-lim if symmetric else None, vmax=lim if symmetric else None)
    if names is not None and n <= 60:
        ax.set_xticks(range(arr.shape[1]), names[: arr.shape[1]], rotation=90, fontsize=7)
        ax.set_yticks(range(arr.shape[0]), names[: arr.shape[0]], fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _img(fig, " / ".join(path) or "matrix")


def _cut_of(d: dict):
    """A cut-off given in this dict: a number, or per key (class) numbers."""
    for k, v in d.items():
        name = str(k).lower()
        if name in CUTOFF_KEYS or "cut" in name or "threshold" in name:
            if _is_number(v) or _is_numeric_dict(v):
                return v
    return None


def _inherited_cut(path: list[str]):
    cut = INHERITED_CUT.get()
    if isinstance(cut, dict):
        return next((cut[p] for p in reversed(path) if p in cut), None)
    return cut


def _binned_counts(d: dict, path: list[str]):
    """A dict keyed by values or bins (cluster size ``2``, ``3-4``, ``65+``): bars in bin order."""
    if len(d) < 3 or not _is_numeric_dict(d) or (path and "quantile" in path[-1]):
        return None
    lows = [BIN_KEY.match(str(k)) for k in d]
    if not all(lows):
        return None
    if not any(d.values()):
        return f'<p class="muted">{len(d)} bins, all zero.</p>'
    items = sorted(d.items(), key=lambda kv: float(BIN_KEY.match(str(kv[0])).group(1)))
    fig = _bar_chart(dict(items), ylabel="count", xlabel=path[-1].replace("_", " ") if path else "", sort=False, vertical=True)
    return _img(fig, " / ".join(path) or "histogram")


SPECIAL: list[Callable[[dict, list[str]], str | None]] = [
    _parity_pair, _parity_single, _class_moves, _histogram, _matrix, _binned_counts,
]


def _nest_prefixed(d: dict) -> dict:
    """``{"cluster_size:2": 5, "cluster_size:3-4": 1}`` → ``{"cluster_size": {"2": 5, "3-4": 1}}``."""
    prefixes = [str(k).split(":", 1)[0] for k in d if ":" in str(k)]
    shared = {p for p in prefixes if prefixes.count(p) >= 2 and p not in d}
    if not shared:
        return d
    out: dict = {}
    for k, v in d.items():
        head, _, tail = str(k).partition(":")
        if head in shared and tail:
            out.setdefault(head, {})[tail] = v
        else:
            out[k] = v
    return out


def _after_key(key: str, d: dict) -> str | None:
    if key.endswith("_before"):
        other = key[: -len("_before")] + "_after"
        return other if other in d else None
    return None


def _is_parity(v) -> bool:
    return (
        isinstance(v, dict) and bool(v)
        and all(isinstance(x, dict) and isinstance(x.get("groups"), dict) and x["groups"]
                and all(isinstance(g, dict) and "base_rate" in g for g in x["groups"].values()) for x in v.values())
    )


def _records_table(d: dict) -> str | None:
    """A dict of same-shaped flat dicts (per column, per group) as one table."""
    if len(d) < 2 or not all(isinstance(v, dict) and v and all(_is_scalar(x) or _is_short_list(x) for x in v.values()) for v in d.values()):
        return None
    columns = list(dict.fromkeys(k for v in d.values() for k in v))
    if len(columns) > 12:
        return None
    rows = [[k, *(_fmt(v.get(c)) for c in columns)] for k, v in list(d.items())[:MAX_TABLE_ROWS]]
    return _table(["", *columns], rows, numeric_from=1 + _first_numeric(list(d.values()), columns)) + _more(len(d))


# -- plots ------------------------------------------------------------------------------


def _figure(width: float, height: float):
    """A figure on the Agg canvas with no layout engine: ``_img`` fits its margins.

    ``layout="constrained"`` makes ``savefig`` draw twice (once only to lay out) and lay
    out in both draws; measuring the labels once and drawing once costs less.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, min(max(height, 1.6), 14)), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _tidy(ax) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=9)


def _legend_above(ax, ncols: int) -> None:
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False, ncols=ncols, fontsize=9, borderaxespad=0.2)


def _bar_chart(values: dict, ylabel: str = "", xlabel: str = "", sort: bool = True, vertical: bool = False):
    items = [(str(k), float(v)) for k, v in values.items() if _is_number(v)]
    if sort:
        items.sort(key=lambda kv: -kv[1])
    if len(items) > MAX_BARS:
        items = items[:MAX_BARS]
    labels, nums = [k for k, _ in items], [v for _, v in items]
    if vertical:
        fig, ax = _figure(8, 2.8)
        ax.bar(range(len(nums)), nums, color=KEPT)
        ax.set_xticks(range(len(nums)), labels, rotation=0 if len(labels) < 16 else 60, fontsize=8)
        if nums and max(nums) > 50 * max(min(n for n in nums if n > 0) if any(n > 0 for n in nums) else 1, 1):
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_xlabel(xlabel)
    else:
        fig, ax = _figure(8, 0.3 * len(nums) + 1.0)
        ax.barh(range(len(nums)), nums, color=KEPT)
        for i, v in enumerate(nums):
            ax.text(v, i, f" {_num(v)}", va="center", fontsize=8)
        ax.set_yticks(range(len(nums)), labels)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel.replace("_", " "))
        lo, hi = min(min(nums), 0), max(max(nums), 0)
        ax.set_xlim(lo * 1.2, hi * 1.2 or 1)
    _tidy(ax)
    return fig


def _paired_bars(series: dict[str, dict], ylabel: str = "", title: str | None = None, reference=None, colors=None, xlabel: str = ""):
    """Grouped vertical bars: one group per key, one bar per series (before, after)."""
    keys = list(dict.fromkeys(k for s in series.values() for k in s))[:MAX_BARS]
    colors = colors or ([BEFORE, AFTER] if len(series) == 2 else PALETTE)
    fig, ax = _figure(max(5, min(10, 1.0 + 0.6 * len(keys) * len(series))), 3.0)
    width = 0.8 / len(series)
    x = np.arange(len(keys))
    for j, (name, s) in enumerate(series.items()):
        vals = [float(s.get(k)) if _is_number(s.get(k)) else np.nan for k in keys]
        bars = ax.bar(x + (j - (len(series) - 1) / 2) * width, vals, width, label=name, color=colors[j % len(colors)])
        if len(keys) * len(series) <= 16:
            ax.bar_label(bars, labels=[_num(v) if np.isfinite(v) else "" for v in vals], fontsize=8, padding=2)
    labels = [f"{k}\n(reference)" if reference is not None and k == reference else str(k) for k in keys]
    crowded = sum(len(str(k)) + 2 for k in keys) > 70
    ax.set_xticks(x, labels, rotation=45 if crowded else 0, ha="right" if crowded else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    if title or xlabel:
        ax.set_xlabel(title or xlabel)
    if len(series) > 1:
        _legend_above(ax, ncols=len(series))
    ax.margins(y=0.12)
    _tidy(ax)
    return fig


def _img(fig, alt: str) -> str:
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
                axis.set_major_formatter(FuncFormatter(lambda x, pos, named=named: _short(named(x, pos), MAX_LABEL)))
        legend = ax.get_legend()
        for text in legend.get_texts() if legend else []:
            text.set_text(_short(text.get_text(), MAX_LABEL))


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


# -- a small sample of the output -------------------------------------------------------


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
            src = _thumbnail(data, self.THUMB) if column == self.image else None
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
        chosen = {p: sorted(k, key=_natural)[: self.CHILDREN] for p, k in children.items() if p in position}
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
            "src": _thumbnail(image_bytes(row[self.image]), self.THUMB * 1.25),
            "label": row.get(self.label) if self.label else None,
            "ops": ops,
            "params": json.dumps(params) if params else "",
        }


BIN_KEY = re.compile(r"^\s*[<>=≤≥\[(]*\s*(-?\d+(?:\.\d+)?)(?:\s*(?:-|–|,|\+)\s*(?:-?\d+(?:\.\d+)?)?[\])]?)?\s*$")
AUG_ID = re.compile(r"^(.*)#aug(?:\d+\.)?\d+$")


def _natural(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _thumbnail(data: bytes, size: float) -> str | None:
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


# -- formatting -------------------------------------------------------------------------


def _table(head, rows, numeric_from: int | None = None, header: bool = True, escape: bool = True) -> str:
    def cell(i, v, tag):
        cls = ' class="n"' if numeric_from is not None and i >= numeric_from else ""
        return f"<{tag}{cls}>{html.escape(str(v)) if escape else v}</{tag}>"

    thead = "<thead><tr>" + "".join(cell(i, h, "th") for i, h in enumerate(head)) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(cell(i, v, "td") for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f'<div class="scroll"><table>{thead}<tbody>{body}</tbody></table></div>'


def _more(n: int) -> str:
    return f'<p class="muted">… and {_int(n - MAX_TABLE_ROWS)} more</p>' if n > MAX_TABLE_ROWS else ""


def _first_numeric(records: list[dict], columns: list[str]) -> int:
    """Index of the first column from which every column is numeric (right-aligned)."""
    numeric = [all(_is_number(r.get(c)) or r.get(c) is None for r in records) for c in columns]
    i = len(columns)
    while i > 0 and numeric[i - 1]:
        i -= 1
    return i


def _first(d: dict, keys: tuple[str, ...]):
    for k in keys:
        if k in d:
            return d[k]
    return None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _is_short_list(v) -> bool:
    return isinstance(v, list) and len(v) <= 12 and all(_is_scalar(x) for x in v)


def _is_numeric_dict(v) -> bool:
    return isinstance(v, dict) and bool(v) and all(_is_number(x) for x in v.values())


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else ("yes" if v else "no")
    if _is_number(v):
        return _num(v)
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v) if v else "—"
    return _short(v)


def _num(v) -> str:
    if v is None or not _is_number(v):
        return "—" if v is None else str(v)
    if isinstance(v, int):
        return _int(v)
    if not math.isfinite(v):
        return "—" if math.isnan(v) else ("∞" if v > 0 else "−∞")
    if v == int(v) and abs(v) < 1e15:
        return _int(int(v))
    return f"{v:.4g}"


def _span(values: list) -> str:
    lo, hi = min(values), max(values)
    return f"{_num(lo)} each" if lo == hi else f"{_num(lo)}–{_num(hi)}"


def _signed(v) -> str:
    return ("+" if _is_number(v) and v > 0 else "") + _num(v)


def _int(v) -> str:
    return f"{v:,}".replace(",", "\u202f") if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else ("—" if v is None else str(v))


def _bytes(n) -> str:
    n = float(n or 0)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _seconds(stage: dict) -> str:
    s = stage.get("seconds") or {}
    return f"{s.get('fit', 0) + s.get('tasks', 0):.2f}"


def _short(v, limit: int = 120) -> str:
    text = str(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _title(key: str) -> str:
    return str(key).replace("_", " ")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "stage"


CSS = """
:root { --ink:#1d2a33; --muted:#6b7785; --line:#e3e7ec; --bg:#f6f8fa; --kept:#2a9d8f; --rej:#e76f51; --add:#457b9d; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: var(--bg); }
header { background: #fff; border-bottom: 1px solid var(--line); padding: 24px max(24px, calc(50% - 560px)) 0; }
main, footer { max-width: 1120px; margin: 0 auto; padding: 0 24px; }
.title { display:flex; align-items:center; gap:14px; }
h1 { margin:0; font-size: 28px; }
h2 { font-size: 20px; margin: 0 0 12px; }
h3 { font-size: 16px; margin: 18px 0 8px; }
h4, h5, h6 { font-size: 14px; margin: 14px 0 6px; color: #33424d; }
.sub, .muted { color: var(--muted); }
.sub { margin: 4px 0 16px; }
.pill { font-size: 12px; padding: 3px 10px; border-radius: 999px; font-weight: 600; }
.pill.ok { background:#e0f2ef; color:#1f7a6f; } .pill.bad { background:#fde6df; color:#b23c1f; }
.cards { display:flex; gap:12px; flex-wrap:wrap; margin-bottom: 16px; }
.card { background: var(--bg); border:1px solid var(--line); border-radius:10px; padding:10px 16px; min-width:120px; }
.card .num { font-size: 22px; font-weight: 700; font-variant-numeric: tabular-nums; }
.card .lbl { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.card.kept { border-top: 3px solid var(--kept); } .card.rejected { border-top: 3px solid var(--rej); }
.card.added { border-top: 3px solid var(--add); }
nav { display:flex; gap: 4px 18px; flex-wrap: wrap; padding: 8px 0 12px; font-size: 14px; }
a { color: #1f6f8b; }
nav a { text-decoration: none; } nav a:hover { text-decoration: underline; }
section { background:#fff; border:1px solid var(--line); border-radius: 12px; padding: 20px 24px; margin: 20px 0; }
img.plot { display:block; max-width:100%; height:auto; margin: 8px 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 12px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: middle; }
th { font-weight: 600; color: #33424d; background: var(--bg); }
td.n, th.n { text-align: right; }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 8px; padding: 10px; overflow-x: auto; font-size: 13px; }
code { font-size: 13px; background: var(--bg); padding: 1px 4px; border-radius: 4px; }
details summary { cursor: pointer; color: #1f6f8b; margin: 8px 0; }
.alert { border-radius: 8px; padding: 10px 14px; margin: 6px 0; }
.alert.warn { background: #fff6e0; border: 1px solid #f0d48a; } .alert.bad { background: #fde6df; border: 1px solid #f2b2a0; }
.families { display:flex; flex-wrap: wrap; gap: 14px; }
.family { display:flex; gap: 10px; align-items: flex-end; padding: 10px 12px; border: 1px solid var(--line); border-radius: 10px; }
.family figure:first-child { padding-right: 10px; border-right: 2px solid var(--line); }
figure { margin: 0; text-align: center; font-size: 12px; max-width: 130px; }
figcaption .ops { color: #1f6f8b; }
img.thumb { image-rendering: pixelated; border-radius: 4px; background: #000; max-width: 120px; max-height: 120px; }
img.thumb.small { max-width: 48px; max-height: 48px; }
footer { color: var(--muted); font-size: 13px; padding-bottom: 32px; }
"""
