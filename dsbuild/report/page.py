"""``report.html``: the page's sections, from the manifest and a sample of the output."""

from __future__ import annotations

import html
import json

import numpy as np

from dsbuild.report import charts
from dsbuild.report.sample import OutputSample
from dsbuild.report.summaries import class_counts, is_parity, render
from dsbuild.report.text import (
    MAX_TABLE_ROWS,
    byte_size,
    integer,
    is_number,
    is_numeric_dict,
    more,
    num,
    short,
    slug,
    span,
    table,
    title,
)


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
        *((f"stage-{slug(s['name'])}", f"Stage · {s['name']}", lambda s=s: _stage_section(s))
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
        ("rows in", integer(t.get("in")), ""),
        ("kept", integer(t.get("kept")), "kept"),
        ("rejected", integer(t.get("rejected")), "rejected"),
        ("added", integer(t.get("added")), "added"),
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
        (s["name"], s.get("shape", ""), integer(s.get("in")), integer(s.get("out")), integer(s.get("rejected")),
         integer(s.get("added")), _seconds(s))
        for s in m.get("stages", [])
    ]
    parts.append(table(["stage", "shape", "in", "kept", "rejected", "added", "seconds"], rows, numeric_from=2))
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
        if "fractions" not in summary:
            out += _cell_count_lines(name, s.get("metrics") or {})
        if is_parity(summary.get("before")) and is_parity(summary.get("after")):
            rows = f" ({summary['where']})" if summary.get("where") else ""
            for view, b in summary["before"].items():
                a = summary["after"].get(view, {})
                out.append(f"{name}{rows}: disparate impact by {view} {num(b.get('di'))} → {num(a.get('di'))}, "
                           f"parity difference {num(b.get('spd'))} → {num(a.get('spd'))}")
        elif is_parity(summary.get("data")):
            for view, v in summary["data"].items():
                out.append(f"{name}: disparate impact by {view} {num(v.get('di'))}, parity difference {num(v.get('spd'))}")
            out += _model_lines(name, summary.get("model") or {})
            for column, values in (summary.get("by") or {}).items():
                for value, audit in values.items():
                    views = ", ".join(f"by {view} {num(v.get('di'))}" for view, v in audit["data"].items())
                    out.append(f"{name} ({column} = {value}, {integer(audit['rows'])} rows): disparate impact {views}")
        pair = class_counts(summary)
        if pair:
            b, a = [list(pair[k].values()) for k in ("before", "after")]
            out.append(f"{name}: {len(b)} classes of {span(b)} rows → {span(a)}")
        if isinstance(summary.get("fractions"), dict):
            metrics, column = s.get("metrics") or {}, summary.get("column")
            out.append(f"{name}: " + " · ".join(f"{k} {num(metrics.get(f'{column}:{k}', 0))}" for k in summary["fractions"]))
        if is_number(summary.get("clusters")):
            inside = summary.get("rows_in_clusters")
            out.append(f"{name}: {num(summary['clusters'])} duplicate clusters"
                       + (f" holding {num(inside)} rows" if is_number(inside) else ""))
        out += _before_after_lines(name, summary)
        out += _label_issue_lines(name, s.get("metrics") or {}) + _crowd_lines(name, summary)
        if is_number(summary.get("repair_level")) and isinstance(summary.get("features"), dict):
            out.append(f"{name}: {', '.join(summary['features'])} repaired at level {num(summary['repair_level'])}")
    return out


def _cell_count_lines(name: str, metrics: dict) -> list[str]:
    """The cleaning stages count what they did as ``kind:column`` metrics (``imputed:age``);
    they keep every row, so without this line the summary showed nothing of their work."""
    kinds: dict[str, list[str]] = {}
    for key, value in metrics.items():
        kind, _, column = key.partition(":")
        if column and is_number(value):
            kinds.setdefault(kind.replace("_", " "), []).append(f"{column} {num(value)}")
    if not kinds:
        return []
    return [f"{name}: " + "; ".join(f"{kind} {', '.join(counts)}" for kind, counts in kinds.items())]


def _before_after_lines(name: str, summary: dict) -> list[str]:
    """``X_before`` / ``X_after`` figures per column (correlation_remover's largest correlation
    with a group), one line each: the feature repairs had no line of their own."""
    out = []
    for key, before in summary.items():
        after = summary.get(key.removesuffix("_before") + "_after") if key.endswith("_before") else None
        if is_numeric_dict(before) and is_numeric_dict(after):
            pairs = ", ".join(f"{column} {num(v)} → {num(after.get(column))}" for column, v in before.items())
            out.append(f"{name}: {title(key.removesuffix('_before'))}: {pairs}")
    return out


def _label_issue_lines(name: str, metrics: dict) -> list[str]:
    """Rows a label-issue filter flagged, and those it relabelled: relabelled rows are
    kept, so the stage table showed nothing of them (sanitize_breast_cancer.yaml relabels 12)."""
    if not is_number(metrics.get("label_issues")):
        return []
    relabelled = f", {num(metrics['relabelled'])} relabelled" if is_number(metrics.get("relabelled")) else ""
    return [f"{name}: {num(metrics['label_issues'])} label issues found{relabelled}"]


def _crowd_lines(name: str, summary: dict) -> list[str]:
    """What a crowd's labels were aggregated from and how the model ended: the stage keeps
    every row, so the table said nothing of the method, the crowd or convergence."""
    annotations, annotators = summary.get("annotations"), summary.get("annotators")
    if not (summary.get("method") and isinstance(annotations, dict) and isinstance(annotators, dict)):
        return []
    rounds = summary.get("rounds")
    ending = ("" if not is_number(rounds) else
              f", converged in {num(rounds)} rounds" if summary.get("converged") else f", not converged after {num(rounds)} rounds")
    return [f"{name}: {summary['method']} over {num(annotations.get('used', 0))} answers by {num(annotators.get('count', 0))} "
            f"annotators on {num(summary.get('items_annotated', 0))} items{ending}"]


def _model_lines(name: str, model: dict) -> list[str]:
    """An audited model's figures per view, under fairlearn's names: what the user asked the
    audit with a model for."""
    if not is_parity(model.get("predictions")):
        return []
    odds = model.get("equalized_odds") or {}
    return [f"{name}: {model.get('name')}'s predictions by {view}: demographic parity difference "
            f"{num(v.get('demographic_parity_difference'))}, equalized odds difference "
            f"{num((odds.get(view) or {}).get('equalized_odds_difference'))}"
            for view, v in model["predictions"].items()]


def _flow_section(m: dict):
    stages = m.get("stages", [])
    if not stages:
        return None
    names = [s["name"] for s in stages]
    kept = np.array([max(s.get("out", 0) - s.get("added", 0), 0) for s in stages], dtype=float)
    added = np.array([s.get("added", 0) for s in stages], dtype=float)
    rejected = np.array([s.get("rejected", 0) for s in stages], dtype=float)
    fig, ax = charts.figure(9, 0.5 * len(stages) + 1.1)
    y = np.arange(len(stages))
    ax.barh(y, kept, color=charts.KEPT, label="kept")
    ax.barh(y, added, left=kept, color=charts.ADDED, label="added")
    ax.barh(y, rejected, left=kept + added, color=charts.REJECTED, label="rejected")
    total = (kept + added + rejected).max() or 1
    for i, s in enumerate(stages):
        note = f"{integer(s.get('in'))} → {integer(s.get('out'))}"
        extra = [f"−{integer(s['rejected'])}" if s.get("rejected") else "", f"+{integer(s['added'])}" if s.get("added") else ""]
        note += "".join(f"  {e}" for e in extra if e)
        ax.text(kept[i] + added[i] + rejected[i] + total * 0.01, i, note, va="center", fontsize=9, color="#333")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, total * 1.3)
    ax.set_xlabel("rows")
    charts.legend_above(ax, ncols=3)
    charts.tidy(ax)
    text = ("<p>Each bar is one stage: the rows it kept, the rows it made (augmentation, synthesis) "
            "and the rows it rejected. Rows in = kept + rejected − added, for every stage.</p>")
    return ("flow", "Rows through the build", text + charts.img(fig, "rows kept, added and rejected per stage"))


def _rejects_section(m: dict, sample: OutputSample):
    counts = [(f"{reason}  ({s['name']})", n, s["name"]) for s in m.get("stages", [])
              for reason, n in (s.get("rejected_by_reason") or {}).items() if n]
    if not counts:
        return ("rejects", "Rejects by reason", "<p>No row was rejected.</p>")
    counts.sort(key=lambda c: -c[1])
    shown, rest = counts[:charts.MAX_BARS], counts[charts.MAX_BARS:]
    if rest:
        shown.append((f"{len(rest)} other reasons", sum(c[1] for c in rest), ""))
    rejecting = list(dict.fromkeys(st for _, _, st in shown if st))
    colors = [charts.REJECT_SHADES[rejecting.index(st) % len(charts.REJECT_SHADES)] if st else "#999" for _, _, st in shown]
    fig, ax = charts.figure(9, 0.32 * len(shown) + 1.0)
    y = np.arange(len(shown))
    values = [c[1] for c in shown]
    ax.barh(y, values, color=colors)
    for i, v in enumerate(values):
        ax.text(v, i, f" {integer(v)}", va="center", fontsize=9)
    ax.set_yticks(y, [c[0] for c in shown])
    ax.invert_yaxis()
    ax.set_xlim(0, max(values) * 1.15)
    ax.set_xlabel("rows rejected")
    charts.tidy(ax)
    text = (f"<p>{integer(m.get('totals', {}).get('rejected'))} rows went to <code>rejects/</code>, whole, with their "
            "<code>reason</code> and <code>stage</code>; a reason's detail after <code>=</code> is in the row.</p>")
    examples = sample.reject_examples()
    if examples:
        text_ex = table(["stage", "reason", "id"], [(e["stage"], short(e["reason"]), short(e["id"])) for e in examples])
        examples_html = f"<details open><summary>Examples from the rejects</summary>{text_ex}</details>"
    else:
        examples_html = ""
    return ("rejects", "Rejects by reason", text + charts.img(fig, "rejected rows by reason") + examples_html)


def _time_section(m: dict):
    stages = [s for s in m.get("stages", []) if s.get("seconds")]
    timings = m.get("timings", {})
    if not stages and not timings:
        return None
    parts = []
    if stages:
        fit = np.array([s["seconds"].get("fit", 0.0) for s in stages])
        tasks = np.array([s["seconds"].get("tasks", 0.0) for s in stages])
        fig, ax = charts.figure(9, 0.45 * len(stages) + 1.1)
        y = np.arange(len(stages))
        ax.barh(y, fit, color=charts.FIT, label="planning and fitting (driver)")
        ax.barh(y, tasks, left=fit, color=charts.TASKS, label="tasks (summed over workers)")
        for i in range(len(stages)):
            ax.text(fit[i] + tasks[i], i, f" {fit[i] + tasks[i]:.2f} s", va="center", fontsize=9)
        ax.set_yticks(y, [s["name"] for s in stages])
        ax.invert_yaxis()
        ax.set_xlim(0, max((fit + tasks).max(), 1e-3) * 1.2)
        ax.set_xlabel("seconds")
        charts.legend_above(ax, ncols=2)
        charts.tidy(ax)
        parts.append(charts.img(fig, "seconds per stage"))
        if not tasks.any():
            parts.append('<p class="muted">Task times were not recorded for this run; the compute phase below holds them.</p>')
    if timings:
        parts.append(table(["phase", "seconds"], [(k.replace("_", " "), num(v)) for k, v in timings.items()], numeric_from=1))
    c = m.get("cluster", {})
    if c:
        parts.append(f"<p>Ran on {integer(c.get('workers'))} worker(s) with {integer(c.get('threads'))} thread(s).</p>")
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
                     + charts.img(charts.paired_bars(pairs, ylabel="rows"), "class balance before and after"))
    for s in m.get("stages", []):
        pair = class_counts(s.get("summary") or {})
        if pair:
            parts.append(f"<h3>{html.escape(s['name'])}</h3>"
                         + charts.img(charts.paired_bars(pair, ylabel="rows", xlabel=label), f"class balance around {s['name']}"))
    return ("balance", "Class balance", "".join(parts)) if parts else None


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
        lines.append(f'<span class="ops">{html.escape(short(row["ops"], 40))}</span>')
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
        parts.append("<h3>Counters</h3>" + render(stage["metrics"], []))
    if stage.get("summary"):
        parts.append("<h3>What it learned</h3>" + render(stage["summary"], []))
    return (f"stage-{slug(name)}", f"Stage · {name}", "".join(parts))


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
            cells.append(f'<img class="thumb small" src="{v["src"]}" alt="{html.escape(c)}">' if isinstance(v, dict) else html.escape(short(v)))
        body.append(cells)
    rows_html = table([html.escape(c) for c in columns], body, escape=False)
    return ("sample", "A look at the output", f"<p>The first rows of <code>data/</code>.</p>{rows_html}")


def _outputs_section(m: dict):
    out = m.get("outputs", {})
    parts = []
    for kind in ("data", "rejects"):
        shards = out.get(kind) or []
        if not shards:
            continue
        rows = [(s.get("file", ""), integer(s.get("rows")), byte_size(s.get("bytes")), str(s.get("sha256", ""))[:16] + "…") for s in shards]
        parts.append(f"<h3><code>{kind}/</code> · {len(shards)} shard(s), {integer(sum(s.get('rows', 0) for s in shards))} rows, "
                     f"{byte_size(sum(s.get('bytes', 0) or 0 for s in shards))}</h3>")
        parts.append(table(["file", "rows", "size", "sha256"], rows[:MAX_TABLE_ROWS], numeric_from=1) + more(len(rows)))
    schema = m.get("schema", {}).get("data")
    if schema:
        parts.append("<h3>Schema of <code>data/</code></h3>")
        parts.append(table(["column", "type"], [(f["name"], f["type"] + (" (partition folders)" if f.get("partition") else ""))
                                                 for f in schema]))
    return ("outputs", "Output", "".join(parts)) if parts else None


def _footer(m: dict) -> str:
    versions = " · ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items())
    fp = m.get("input", {}).get("fingerprint")
    return (f"<p>{html.escape(versions)}</p>"
            + (f"<p>input fingerprint <code>{html.escape(str(fp))}</code></p>" if fp else "")
            + "<p>Written by <code>dsbuild report</code> from <code>manifest.json</code>; regenerate with "
              "<code>dsbuild report OUTPUT</code>.</p>")


def _seconds(stage: dict) -> str:
    s = stage.get("seconds") or {}
    return f"{s.get('fit', 0) + s.get('tasks', 0):.2f}"


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
