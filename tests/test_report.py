"""report.html: built from real runs, opened in real headless Chromium.

The browser is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages separated by NUL on file descriptors 3 and 4), so the test needs nothing
beyond Debian's ``chromium`` package and the standard library.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dsbuild
from dsbuild.report import render_report

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Browser:
    """Just enough of the DevTools protocol: send a command, collect events, wait."""

    def __init__(self, binary: str, profile: str):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4.
        high_r, high_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in (to_chrome_r, from_chrome_w))

        def place_pipes():
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            close_fds=False, preexec_fn=place_pipes,  # Python's own fds are not inheritable (PEP 446)
        )
        for fd in (to_chrome_r, from_chrome_w, high_r, high_w):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session = None

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        reply = self._until(lambda m: m.get("id") == self._next_id, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        for e in self.events:
            if e.get("method") == method:
                return e
        return self._until(lambda m: m.get("method") == method, timeout)

    def _until(self, done, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if done(message):
                    return message
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            self._buffer += chunk

    def open_page(self, width: int = 1200, height: int = 900) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def close(self) -> None:
        try:
            os.close(self._to_chrome)
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._from_chrome)
            if self.proc.stderr:
                self.proc.stderr.close()


@pytest.fixture(scope="module")
def browser():
    binary = chromium_path()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); .ci/run installs it")
    with tempfile.TemporaryDirectory(prefix="dsbuild-chromium-") as profile:
        b = Browser(binary, profile)
        try:
            b.send("Browser.getVersion", timeout=120)
            yield b
        finally:
            b.close()


def load_report(browser: Browser, path: Path, screenshot: Path) -> dict:
    """Open the page, wait for it, and return what it loaded, logged and requested."""
    browser.events.clear()
    browser.open_page()
    browser.send("Page.navigate", {"url": path.resolve().as_uri()})
    browser.wait_event("Page.loadEventFired")
    images = browser.send("Runtime.evaluate", {
        "expression": "JSON.stringify([...document.images].map(i => ({src: i.src.slice(0, 40), alt: i.alt, "
                      "complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})))",
        "returnByValue": True,
    })["result"]["value"]
    sections = browser.send("Runtime.evaluate", {
        "expression": "JSON.stringify([...document.querySelectorAll('section h2')].map(h => h.textContent))",
        "returnByValue": True,
    })["result"]["value"]
    shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    copy_to = os.environ.get("DSBUILD_SCREENSHOT_DIR")
    if copy_to:
        Path(copy_to).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(copy_to) / screenshot.name)
    errors = [e["params"] for e in browser.events if e["method"] == "Runtime.exceptionThrown"]
    errors += [e["params"] for e in browser.events if e["method"] == "Runtime.consoleAPICalled" and e["params"].get("type") in ("error", "assert")]
    errors += [e["params"]["entry"] for e in browser.events if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
    requests = [e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"]
    return {"images": json.loads(images), "sections": json.loads(sections), "errors": errors, "requests": requests}


def assert_clean_page(page: dict) -> None:
    assert page["images"], "the report has no images"
    broken = [i for i in page["images"] if not i["complete"] or i["width"] == 0]
    assert not broken, f"images that did not load: {broken}"
    assert not page["errors"], f"console errors: {page['errors']}"
    remote = [u for u in page["requests"] if not u.startswith(("file:", "data:"))]
    assert not remote, f"the report asked the network for {remote}"


DIGITS_JOB = """
name: report-digits
seed: 0
source: {format: sample, name: digits, partitions: 3}
columns: {label: label, image: image}
stages:
  - validate_images: {}
  - select:
      drop: [image_format]
      where: [{column: label, op: "!=", value: "7"}]
  - augment: {balance_to: 200, max_copies: 3}
sink: {path: unused, shard_rows: 500}
"""


GERMAN_CREDIT_JOB = """
name: report-german-credit
seed: 0
source: {format: sample, name: german_credit, partitions: 3}
columns: {label: credit, sensitive: [sex], features: [duration, amount, age]}
stages:
  - ranges: {columns: {age: {min: 20, max: 70}}}
  - sanitize: {method: l2, fraction: 0.03}
  - fairness_audit: {favorable: good}
  - reweigh: {favorable: good}
sink: {path: unused, shard_rows: 400}
"""


def build(cluster, tmp_path_factory, job: str, name: str):
    from distributed import Client

    out = tmp_path_factory.mktemp("report") / name
    with Client(cluster) as client:
        manifest = dsbuild.run(job, output=str(out), client=client)
    return out, manifest


@pytest.fixture(scope="module")
def digits_output(tmp_path_factory, cluster):
    return build(cluster, tmp_path_factory, DIGITS_JOB, "digits")


@pytest.fixture(scope="module")
def german_credit_output(tmp_path_factory, cluster):
    return build(cluster, tmp_path_factory, GERMAN_CREDIT_JOB, "german-credit")


def test_pipeline_writes_report_that_renders_in_chromium(digits_output, browser, tmp_path):
    out, manifest = digits_output
    report = out / "report.html"
    assert report.exists(), "the pipeline did not write report.html"
    page = load_report(browser, report, tmp_path / "report-digits.png")
    assert_clean_page(page)
    assert {"Overview", "Rows through the build", "Rejects by reason", "Time per stage", "Class balance",
            "Augmented images", "Output"} <= set(page["sections"])
    assert (tmp_path / "report-digits.png").stat().st_size > 10_000


def test_augmented_images_sit_beside_their_parents(digits_output):
    out, manifest = digits_output
    html = (out / "report.html").read_text()
    families = re.findall(r'<div class="family">(.*?)</div>', html, flags=re.S)
    assert families
    data = pd.read_parquet(out / "data", columns=["id", "label"]).set_index("id")["label"]
    for family in families:
        ids = re.findall(r'<img class="thumb" src="data:image/png;base64,[^"]+" alt="([^"]+)"', family)
        parent, children = ids[0], ids[1:]
        assert children and all(c.startswith(parent + "#aug") for c in children)
        assert {data[parent]} == {data[c] for c in children}, "a copy must keep its parent's label"


def test_report_reads_only_the_output_and_names_the_rejects(digits_output):
    out, manifest = digits_output
    html = (out / "report.html").read_text()
    rejected = next(s for s in manifest["stages"] if s["name"] == "select")["rejected_by_reason"]
    assert rejected and all(reason in html for reason in rejected)
    sevens = pd.read_parquet(out / "rejects")
    assert (sevens["reason"].str.startswith("filter:")).all()
    # Examples of rejected rows come from rejects/, so their ids are real reject ids.
    assert any(f">{rid}<" in html for rid in sevens["id"].head(50))
    assert "<script" not in html.lower() and "http://" not in html and "https://" not in html


def test_fairness_and_cleaning_report_renders_in_chromium(german_credit_output, browser, tmp_path):
    out, manifest = german_credit_output
    page = load_report(browser, out / "report.html", tmp_path / "report-german-credit.png")
    assert_clean_page(page)
    assert {"Stage · fairness_audit", "Stage · reweigh", "Stage · ranges", "Stage · sanitize", "Class balance"} <= set(page["sections"])
    alts = [i["alt"] for i in page["images"]]
    # reweigh's before/after parity is drawn as bars per group, the audit's as one set of bars.
    assert "base rate per group of sex, before and after" in alts
    assert "base rate per group of sex" in alts
    assert "class balance around sanitize" in alts


def test_fairness_tables_carry_the_manifest_figures(german_credit_output):
    out, manifest = german_credit_output
    html = (out / "report.html").read_text()
    reweigh = next(s for s in manifest["stages"] if s["name"] == "reweigh")["summary"]
    before, after = reweigh["before"]["sex"], reweigh["after"]["sex"]
    assert before["di"] < 0.95 and abs(after["di"] - 1) < 1e-6
    for figure in (before["di"], after["groups"]["female"]["base_rate"]):
        assert f">{figure:.4g}<" in html


def test_inspect_prints_the_highlights(german_credit_output):
    from dsbuild.cli import summary_table

    out, manifest = german_credit_output
    text = summary_table(manifest)
    di = next(s for s in manifest["stages"] if s["name"] == "reweigh")["summary"]["before"]["sex"]["di"]
    assert f"reweigh: disparate impact by sex {di:.4g} → 1" in text
    assert "sanitize: 2 classes" in text


def shapes_summary() -> dict:
    """Summaries in the shapes the stages record, built with the stages' own kernels."""
    from dsbuild.kernels.unionfind import size_histogram

    rng = np.random.default_rng(0)
    edges = np.linspace(0, 6, 25)
    return {
        "method": "l2",
        "rows_per_class": {"benign": 357, "malignant": 212},
        "removed_per_class": {"benign": 18, "malignant": 11},
        "score_cut_per_class": {"benign": 3.2, "malignant": 2.7},
        "score_histogram": {
            c: {"edges": edges.tolist(), "counts": np.histogram(rng.gamma(2, 0.8, 400), edges)[0].tolist()}
            for c in ("benign", "malignant")
        },
        "cluster_sizes": size_histogram(np.array([2] * 40 + [3] * 9 + [4] * 3 + [7, 12, 90])),
        "confident_joint": {"given x true": ["benign", "malignant"], "counts": [[340, 17], [9, 203]]},
        "annotators": {"count": 60, "skill_quantiles": {"0.05": 0.31, "0.5": 0.82, "0.95": 0.97},
                       "lowest_skill": [{"annotator": f"a{i}", "skill": 0.1 * i, "votes": 10 + i} for i in range(40)]},
        "beta": rng.standard_normal(64).round(4).tolist(),
        "nested": {"deeper": {"still": {"deeper": {"and": {"deeper": {"x": 1}}}}}},
        "empty": {},
    }


def test_every_summary_shape_renders_in_chromium(digits_output, browser, tmp_path):
    out, manifest = digits_output
    shaped = {**manifest, "stages": [*manifest["stages"], {
        "name": "sanitize", "shape": "fit_apply", "in": 1, "out": 1, "rejected": 0, "added": 0,
        "rejected_by_reason": {}, "metrics": {}, "summary": shapes_summary(),
    }]}
    report = tmp_path / "report.html"
    report.write_text(render_report(shaped, str(out)))
    page = load_report(browser, report, tmp_path / "report-shapes.png")
    assert_clean_page(page)
    alts = [i["alt"] for i in page["images"]]
    assert {"score_histogram / benign", "score_histogram / malignant", "cluster_sizes", "beta",
            "class balance around sanitize"} <= set(alts)
    html = report.read_text()
    assert '<table class="matrix">' in html and ">340<" in html
    assert "… and 15 more" in html  # 40 annotators, 25 shown


def long_labels_manifest() -> dict:
    """Every figure kind with 40-character names: stages, reasons, groups, classes, matrix axes."""
    names = [f"a group with a long name, number {i:02d}".ljust(40, "x") for i in range(12)]
    view = {"groups": {g: {"count": 100 + i, "base_rate": 0.1 + 0.03 * i, "spd": 0.0, "di": 1.0} for i, g in enumerate(names)},
            "reference": names[0], "spd": -0.1, "di": 0.7}
    stage = {
        "name": "a stage whose name runs to forty chars xx", "shape": "fit_apply", "in": 48842, "out": 48000,
        "rejected": 842, "added": 0, "seconds": {"fit": 0.4, "tasks": 1.2}, "labels": dict.fromkeys(names, 4000),
        "rejected_by_reason": {f"{n} ({i})": 1000 // (i + 1) for i, n in enumerate(names * 3)},
        "summary": {
            "before": {"sex × race": view}, "after": {"sex × race": view},
            "per_column": {n: 10.0 ** (i % 5) for i, n in enumerate(names)},
            "correlation": {"columns": [n[:24] for n in names * 2], "matrix": np.eye(24).tolist()},
        },
    }
    return {"job": {"name": "long-labels"}, "stages": [stage, dict(stage, name="s2", summary={})]}


def drawn_tick_labels(axis) -> list:
    """Labels of the ticks inside the view: matplotlib keeps, and does not draw, the others."""
    lo, hi = sorted(axis.get_view_interval())
    span = (hi - lo) * 1e-9
    return [label for loc, label in zip(axis.get_ticklocs(), axis.get_ticklabels()) if lo - span <= loc <= hi + span]


def test_long_labels_stay_inside_their_figures(monkeypatch, tmp_path):
    """Margins are fitted to the labels: every drawn text lies inside the image, none is clipped."""
    from matplotlib.text import Text

    from dsbuild.report import charts

    figures = []
    draw = charts.img
    monkeypatch.setattr(charts, "img", lambda fig, alt: figures.append(fig) or draw(fig, alt))
    html = render_report(long_labels_manifest(), str(tmp_path))
    assert "could not be drawn" not in html
    assert len(figures) >= 7  # flow, rejects, time, balance, base rates, bar chart, heatmap
    for fig in figures:
        renderer = fig.canvas.get_renderer()
        canvas = fig.bbox
        for ax in fig.axes:
            legend = ax.get_legend()
            texts = [*drawn_tick_labels(ax.xaxis), *drawn_tick_labels(ax.yaxis), ax.xaxis.label, ax.yaxis.label,
                     ax.title, *ax.texts, *(legend.get_texts() if legend else [])]
            for text in texts:
                if not (isinstance(text, Text) and text.get_visible() and text.get_text()):
                    continue
                box = text.get_window_extent(renderer)
                assert (canvas.x0 <= box.x0 and box.x1 <= canvas.x1 and canvas.y0 <= box.y0 and box.y1 <= canvas.y1), (
                    f"{text.get_text()!r} at {box.extents} is outside the {canvas.width:.0f}x{canvas.height:.0f} image")


def test_thumbnails_of_hugging_face_image_structs(tmp_path):
    """An output whose image column is the struct ``datasets`` writes for Image() gets its
    thumbnails, in the sample rows and beside augmented copies; a path-only cell says so."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dsbuild.kernels.decode import encode_image
    from dsbuild.report import OutputSample

    png = encode_image(np.arange(64, dtype=np.uint8).reshape(8, 8), "png")
    ids = ["a", "a#aug0", "a#aug1", "b"]
    cells = [{"bytes": png, "path": "a.png"}, {"bytes": png, "path": None}, {"bytes": png, "path": None}, {"bytes": None, "path": "b.png"}]
    image = pa.array(cells, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"id": ids, "image": image, "label": [1, 1, 1, 2]}), tmp_path / "data" / "part-00000.parquet")
    manifest = {"job": {"columns": {"image": "image", "label": "label"}},
                "outputs": {"data": [{"file": "data/part-00000.parquet", "rows": 4}]}}
    sample = OutputSample(manifest, str(tmp_path))
    [(parent, children)] = sample.augmented_families()
    assert parent["id"] == "a" and [c["id"] for c in children] == ["a#aug0", "a#aug1"]
    assert all(t["src"].startswith("data:image/png;base64,") for t in (parent, *children))
    head = {r["id"]: r["image"] for r in sample.head()}
    assert head["a"]["src"].startswith("data:image/png;base64,") and head["b"] == "<empty-image:path-only=b.png>"


def test_user_strings_are_escaped_in_every_table(tmp_path):
    """A column named ``<script>…`` went into the sample table's header as markup, and a
    group whose value began with ``<b>`` into the fairness table: the page ran them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"id": ["a"], "<script>alert(1)</script>": [1.0]}), tmp_path / "data" / "part-00000.parquet")
    group = "<b>x</b><img src=x onerror=alert(2)>"
    view = {"groups": {group: {"count": 10, "base_rate": 0.5, "spd": 0.0, "di": 1.0}}, "reference": group, "spd": 0.0, "di": 1.0}
    stage = {"name": "reweigh", "shape": "fit_apply", "in": 1, "out": 1, "rejected": 0, "added": 0,
             "rejected_by_reason": {}, "metrics": {}, "summary": {"before": {"sex": view}, "after": {"sex": view}}}
    manifest = {"job": {"name": "t"}, "stages": [stage], "outputs": {"data": [{"file": "data/part-00000.parquet", "rows": 1}]}}
    page = render_report(manifest, str(tmp_path))
    assert "<script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;x&lt;/b&gt;&lt;img src=x onerror=alert(2)&gt; (reference)" in page


def test_dollar_signs_in_names_are_drawn_as_text(monkeypatch, tmp_path):
    """matplotlib reads text between two '$' as TeX: a reason naming a column 'cost_$_usd_$'
    lost the rejects section ("could not be drawn: ParseSyntaxException"), and classes
    '$0-$50K' were set as a formula."""
    from matplotlib.text import Text

    from dsbuild.report import charts

    stage = {"name": "ranges", "shape": "map", "in": 10, "out": 7, "rejected": 3, "added": 0, "seconds": {"fit": 0.1, "tasks": 0.2},
             "rejected_by_reason": {"range:cost_$_usd_$": 3}, "labels": {"$0-$50K": 4, "$50K+": 3}}
    source = {**stage, "name": "source", "out": 10, "rejected": 0, "rejected_by_reason": {}, "labels": {"$0-$50K": 6, "$50K+": 4}}
    figures = []
    draw = charts.img
    monkeypatch.setattr(charts, "img", lambda fig, alt: figures.append(fig) or draw(fig, alt))
    page = render_report({"job": {"name": "t", "columns": {"label": "income"}}, "stages": [source, stage]}, str(tmp_path))
    assert "could not be drawn" not in page
    texts = [t.get_text() for fig in figures for t in fig.findobj(Text)]
    assert any("cost_$_usd_$" in t for t in texts) and "$0-$50K" in texts
    assert not any(t._parse_math for fig in figures for t in fig.findobj(Text) if "$" in t.get_text())


def test_a_long_reason_is_cut_in_the_plots_not_drawn_whole(monkeypatch, tmp_path):
    """A select's reason names its list (filter:label:not_in:0,1,…,2999): the rejects plot
    grew to hold it, 110,452 pixels wide."""
    from dsbuild.report import charts

    reason = "filter:label:not_in:" + ",".join(str(i) for i in range(3000))
    stage = {"name": "select", "shape": "map", "in": 10, "out": 7, "rejected": 3, "added": 0, "seconds": {"fit": 0.1, "tasks": 0.2},
             "rejected_by_reason": {reason: 3}, "labels": {"a" * 500: 4, "b": 3}}
    source = {**stage, "name": "source", "out": 10, "rejected": 0, "rejected_by_reason": {}, "labels": {"a" * 500: 7, "b": 3}}
    figures = []
    draw = charts.img
    monkeypatch.setattr(charts, "img", lambda fig, alt: figures.append(fig) or draw(fig, alt))
    page = render_report({"job": {"name": "t", "columns": {"label": "y"}}, "stages": [source, stage]}, str(tmp_path))
    assert "could not be drawn" not in page and len(figures) >= 3
    assert max(fig.bbox.width for fig in figures) < 1500
    labels = [t.get_text() for fig in figures for ax in fig.axes for t in [*ax.get_xticklabels(), *ax.get_yticklabels()]]
    assert any(t.startswith("filter:label:not_in:0,1,2") and t.endswith("…") for t in labels)


def test_a_long_reason_is_cut_in_the_examples_table(tmp_path):
    """The plots cut a long reason; the table of reject examples printed it whole (3,000 values)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    reason = "filter:label:not_in:" + ",".join(str(i) for i in range(3000))
    (tmp_path / "rejects").mkdir()
    pq.write_table(pa.table({"id": ["r1"], "stage": ["select"], "reason": [reason]}), tmp_path / "rejects" / "part-00000.parquet")
    stage = {"name": "select", "shape": "map", "in": 1, "out": 0, "rejected": 1, "added": 0, "rejected_by_reason": {reason: 1}}
    manifest = {"job": {"name": "t"}, "stages": [stage], "outputs": {"rejects": [{"file": "rejects/part-00000.parquet", "rows": 1}]}}
    page = render_report(manifest, str(tmp_path))
    assert "Examples from the rejects" in page and "filter:label:not_in:0,1,2" in page
    cell = page.split("Examples from the rejects")[1].split("<td>select</td><td>")[1].split("</td>")[0]
    assert reason not in page and cell.endswith("…") and len(cell) <= 120


def test_an_audit_by_split_with_a_model_is_drawn_as_tables_not_json(tmp_path):
    """``fairness_audit`` with ``by: [split]`` and a model puts each split's prediction
    figures five keys deep (by, split, test, model, predictions): the page printed them as
    one line of JSON where the whole data set's were tables."""
    view = {"reference": "Male", "spd": -0.15, "di": 0.2, "groups": {
        "Female": {"count": 1064, "base_rate": 0.035747, "spd": -0.15, "di": 0.2},
        "Male": {"count": 2190, "base_rate": 0.183497, "spd": 0.0, "di": 1.0}}}
    odds = {"sex": {"equalized_odds_difference": 0.22, "equalized_odds_ratio": 0.1,
                    "true_positive_rate": {"Female": 0.2252, "Male": 0.45}, "false_positive_rate": {"Female": 0.0075, "Male": 0.0722}}}
    audit = {"rows": 3254, "data": {"sex": view},
             "model": {"name": "logistic_regression", "sample_rows": 3254, "predictions": {"sex": view}, "equalized_odds": odds}}
    stage = {"name": "fairness_audit", "shape": "fit_apply", "in": 3254, "out": 3254, "rejected": 0, "added": 0,
             "rejected_by_reason": {}, "summary": {"favorable": ">50K", **audit, "by": {"split": {"test": audit}}}}
    page = render_report({"job": {"name": "t"}, "stages": [stage]}, str(tmp_path))
    assert "base_rate" not in page and "true_positive_rate" not in page
    assert page.count("<td>Female</td><td>0.2252</td>") == 2  # the whole data set's and the test split's


def test_highlights_name_the_audited_model_figures():
    """An audit with a model printed the data's disparate impact and nothing of the model,
    whose demographic parity and equalized odds differences are what the user asked for."""
    from dsbuild.report import highlights

    view = {"reference": "Male", "spd": -0.15, "di": 0.2, "demographic_parity_difference": 0.15, "groups": {
        "Female": {"count": 10, "base_rate": 0.05, "spd": -0.15, "di": 0.25},
        "Male": {"count": 20, "base_rate": 0.2, "spd": 0.0, "di": 1.0}}}
    summary = {"favorable": ">50K", "rows": 30, "data": {"sex": view}, "model": {
        "name": "logistic_regression", "sample_rows": 30, "predictions": {"sex": {**view, "demographic_parity_difference": 0.1549}},
        "equalized_odds": {"sex": {"equalized_odds_difference": 0.2248, "equalized_odds_ratio": 0.1}}}}
    lines = highlights({"stages": [{"name": "fairness_audit", "summary": summary}]})
    assert "fairness_audit: logistic_regression's predictions by sex: demographic parity difference 0.1549, " \
           "equalized odds difference 0.2248" in lines


def test_highlights_say_what_the_feature_repairs_did():
    """reweigh and the audit had a line in the run's summary; correlation_remover and
    disparate_impact_remover had none, though their summaries hold what changed."""
    from dsbuild.report import highlights

    stages = [
        {"name": "correlation_remover", "summary": {"alpha": 0.8, "max_abs_correlation_before": {"capital-gain": 0.045777},
                                                    "max_abs_correlation_after": {"capital-gain": 0.009167}}},
        {"name": "disparate_impact_remover", "summary": {"repair_level": 0.5, "features": {"age": {"exact": True}, "hours": {}}}},
    ]
    assert highlights({"stages": stages}) == [
        "correlation_remover: max abs correlation: capital-gain 0.04578 → 0.009167",
        "disparate_impact_remover: age, hours repaired at level 0.5",
    ]


def test_highlights_count_the_cells_a_cleaning_stage_changed():
    """ranges, impute, outliers and the like keep every row; their ``kind:column`` counts
    were in the manifest only."""
    from dsbuild.report import highlights

    stages = [
        {"name": "impute", "metrics": {"imputed:age": 0.0, "imputed:occupation": 1843.0}, "summary": {"age": {}}},
        {"name": "canonicalize", "metrics": {"canonicalized:sex": 4.0, "unknown:sex": 1.0}},
        {"name": "split", "metrics": {"split:train": 8.0, "split:test": 2.0},
         "summary": {"column": "split", "fractions": {"train": 0.8, "test": 0.2}}},
        {"name": "sanitize", "metrics": {"unscored": 0.0}},
    ]
    assert highlights({"stages": stages}) == [
        "impute: imputed age 0, occupation 1\u202f843",
        "canonicalize: canonicalized sex 4; unknown sex 1",
        "split: train 8 · test 2",
    ]
