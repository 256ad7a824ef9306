"""Plots and reports of finished runs (tiny random models on slices of the shared data), and the
HTML report rendered in headless Chromium."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import missing
from distilbench.config import ExperimentConfig
from distilbench.core.console import DistilbenchError
from distilbench.experiments.compare import compare
from distilbench.reporting.report import make_plots, write_report
from distilbench.runs import describe_checkpoint, model_slug, read_json

PNG = b"\x89PNG\r\n\x1a\n"
TOXIC_LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


def tiny_run(tmp_path_factory, tiny_bert_dir, name: str, **settings) -> Path:
    """A finished two-model run (a tiny BERT and its DistilBERT-style student) in a fresh directory."""
    out = tmp_path_factory.mktemp(name) / "run"
    config = ExperimentConfig(
        models=[str(tiny_bert_dir), f"student:{tiny_bert_dir}"],
        epochs=2,
        train_batch_size=16,
        eval_batch_size=32,
        learning_rate=5e-4,
        max_length=32,
        precision="fp32",
        backend="torch-fp32",
        out=str(out),
        **settings,
    ).validate()
    compare(config, progress=False)
    return out


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory, tiny_bert_dir, shared_data) -> Path:
    return tiny_run(
        tmp_path_factory,
        tiny_bert_dir,
        "report-mc",
        task="multiclass",
        max_samples=200,
        data=str(shared_data("news-headlines.csv")),
        label_column="category",
    )


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory, tiny_bert_dir, shared_data) -> Path:
    """A multilabel run with a bench.json, as `distilbench bench RUN --out RUN/bench.json` leaves it."""
    # head_init random: a probe on the tiny random encoder's features fits the label priors, whose calibrated
    # thresholds stay 0.5, and the report's tuned-threshold columns (checked below) would have nothing to show
    run = tiny_run(
        tmp_path_factory,
        tiny_bert_dir,
        "report-ml",
        task="multilabel",
        max_samples=300,
        data=str(shared_data("toxic-comments.csv")),
        label_columns=TOXIC_LABELS,
        head_init="random",
    )
    rows = read_json(run / "comparison.json")["rows"]
    results = [
        {
            "model": model_slug(row["model"]),
            "backend": backend,
            "size_mb": row["size_mb"],
            "samples_per_s": {"median": rate, "min": rate * 0.9, "max": rate * 1.1},
            **({"test": {"hamming_score": 0.5 - i / 10}} if backend == "torch-fp32" else {}),
        }
        for i, row in enumerate(rows)
        for backend, rate in (("torch-fp32", 1000 * (i + 1)), ("onnx-fp32", 1500 * (i + 1)))
    ]
    (run / "bench.json").write_text(json.dumps({"results": results}))
    return run


def expected_plots(run: Path) -> set[str]:
    comparison = read_json(run / "comparison.json")
    slugs = [model_slug(row["model"]) for row in comparison["rows"]]
    per_model = ["training", "confusion"] if comparison["task"] == "multiclass" else ["training", "roc", "per-label"]
    per_model.append("reliability")
    forest = {"forest.png"} if len(slugs) > 1 else set()  # each model against the first: needs two
    return (
        {"label-counts.png", "loss-all.png", "metric-all.png", "metric-vs-throughput.png", "metric-vs-size.png"}
        | forest
        | {f"{kind}-{slug}.png" for kind in per_model for slug in slugs}
    )


@pytest.fixture(scope="module")
def reports(multiclass_run, multilabel_run) -> dict[str, tuple[Path, Path]]:
    return {"multiclass": write_report(multiclass_run), "multilabel": write_report(multilabel_run)}


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_make_plots_draws_every_plot_as_a_png(task, request):
    run = request.getfixturevalue(f"{task}_run")
    paths = make_plots(run)
    assert {p.name for p in paths} == expected_plots(run)
    for path in paths:
        assert path.parent == run / "plots"
        data = path.read_bytes()
        assert data.startswith(PNG), path
        assert 5_000 < len(data) < 300_000, path  # a real picture, and small
    assert not list((run / "plots").glob(".*.tmp"))  # atomic writes leave no temporary files


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_html_report_is_self_contained(task, request, reports):
    run = request.getfixturevalue(f"{task}_run")
    html_path, _ = reports[task]
    assert html_path == run / "report.html"
    page = html_path.read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"<(?:script|link|iframe|object|embed)\b", page, re.I)
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(expected_plots(run))
    assert all(base64.b64decode(image).startswith(PNG) for image in images)
    for row in read_json(run / "comparison.json")["rows"]:
        assert row["model"] in page
        assert f"<td>{describe_checkpoint(row['kept'])}</td>" in page  # the checkpoint that was tested
    assert "<th>tested checkpoint</th>" in page
    for heading in (
        "What was run",
        "Comparison on the test split",
        "Parameters",
        "Sample test predictions",
        "Most confident errors",
        "Calibration",
        "Where the models lose",
    ):
        assert f"<h2>{heading}</h2>" in page
    assert "<th>ECE (raw)</th>" in page and "<h3>Per text length (characters)</h3>" in page
    assert ("<h3>Per class</h3>" if task == "multiclass" else "<h3>Per label</h3>") in page
    assert "Throughput on a log scale." in page
    assert "layer 3" in page and "embeddings" in page  # the 4-layer teacher's parameters by layer
    assert "samples/s" in page and "eval speed-up" in page
    if task == "multilabel":
        assert "hamming_score (tuned)" in page and "bench.json" in page


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_markdown_report_references_existing_plots(task, request, reports):
    run = request.getfixturevalue(f"{task}_run")
    _, md_path = reports[task]
    text = md_path.read_text(encoding="utf-8")
    targets = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {Path(t).name for t in targets} == expected_plots(run)
    for target in targets:
        assert target.startswith("plots/") and (run / target).is_file()
    assert "| model |" in text


def test_parameters_by_layer_add_up_to_the_model_size(multiclass_run, reports):
    from distilbench.reporting.report import layer_counts

    for row in read_json(multiclass_run / "comparison.json")["rows"]:
        counts = layer_counts(multiclass_run / "models" / model_slug(row["model"]) / "best")
        assert sum(counts.values()) == row["params"]
        layers = sorted(g for g in counts if g.startswith("layer "))
        student = row["model"].startswith("student:")  # every other layer of the 4-layer teacher
        assert layers == (["layer 0", "layer 1"] if student else ["layer 0", "layer 1", "layer 2", "layer 3"])
        assert counts["embeddings"] > 0 and counts["head"] > 0


def test_pareto_front_keeps_the_points_nothing_beats():
    from distilbench.reporting.report import _pareto

    points = [(100, 0.9), (200, 0.8), (150, 0.7), (300, 0.8), (50, 0.95), (300, 0.8)]
    assert _pareto(points) == [4, 0, 3, 5]  # (150, .7) and (200, .8) are beaten; ties both stay


def test_report_is_deterministic(multiclass_run, reports):
    first = (multiclass_run / "report.html").read_text(encoding="utf-8")
    write_report(multiclass_run)
    assert (multiclass_run / "report.html").read_text(encoding="utf-8") == first


def test_texts_are_escaped(tmp_path, multiclass_run, reports):
    from distilbench.reporting.report import render_html, render_markdown

    page = render_html([("p", '<img src="http://x/y.png"> & co'), ("table", ["a|b"], [["<b>x</b>"]])], "t<")
    assert '<img src="http' not in page and "&lt;img src=&quot;http://x/y.png&quot;&gt; &amp; co" in page
    assert "<td>&lt;b&gt;x&lt;/b&gt;</td>" in page and "<title>t&lt;</title>" in page
    assert "a\\|b" in render_markdown([("table", ["a|b"], [["1"]])], tmp_path)


def test_a_directory_that_is_not_a_finished_run_is_refused(tmp_path, multiclass_run):
    for target in (tmp_path, tmp_path / "missing"):
        for function in (make_plots, write_report):
            with pytest.raises(DistilbenchError, match="not a finished distilbench run"):
                function(target)
    unfinished = tmp_path / "unfinished"  # a run that stopped before comparison.json
    shutil.copytree(multiclass_run / "data", unfinished / "data")
    (unfinished / "config.yaml").write_text("task: multiclass\n")
    with pytest.raises(DistilbenchError, match="comparison.json"):
        write_report(unfinished)
    assert not (unfinished / "report.html").exists()


# --------------------------------------------------------------------------- the page in a browser


def find_chromium() -> str:
    """Debian's Chromium, which `make test` (and so CI's .ci/run) installs when it is missing: a test never
    installs system packages. Missing, the browser test is skipped with the reason, and failed under CI=true."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing(
            "Chromium is not installed; `make test` installs it (as root, with apt-get), "
            "or run `apt-get install chromium`"
        )
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    return find_chromium()


def test_a_missing_chromium_is_never_installed_by_a_test_and_fails_on_ci(monkeypatch):
    def no_installing(*args, **kwargs):
        raise AssertionError(f"a test ran a command: {args}")

    monkeypatch.setattr(shutil, "which", lambda name: None)
    for name in ("run", "Popen", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, no_installing)
    monkeypatch.setattr(os, "system", no_installing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as outcome:
        find_chromium()
    assert outcome.type is pytest.fail.Exception and "Chromium is not installed" in str(outcome.value)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="`make test` installs it"):
        find_chromium()


class DevTools:
    """Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe): no extra package."""

    def __init__(self, binary: str, profile: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds() -> None:  # in the child: the protocol reads fd 3 and writes fd 4
            read, write = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 100), fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 100)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "--window-size=1200,900",
                "about:blank",
            ],
            preexec_fn=wire_fds,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.events: list[dict] = []
        self._replies: queue.Queue = queue.Queue()
        self._next_id = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_chrome, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._replies.put(json.loads(message))

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        return self.wait(lambda m: m.get("id") == self._next_id, timeout)

    def wait(self, match, timeout: float = 30) -> dict:
        """The first message (reply or event) that matches; events on the way are kept in self.events."""
        for event in self.events:
            if match(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = self._replies.get(timeout=max(deadline - time.monotonic(), 0.01))
            if "error" in message:
                raise RuntimeError(f"DevTools error: {message['error']}")
            if "method" in message:
                self.events.append(message)
            if match(message):
                return message.get("result", message)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, queue.Empty, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def render(binary: str, page: Path, profile: Path, screenshot: Path | None = None) -> dict:
    """Load a page offline and return its images' sizes, console errors and every URL it requested."""
    browser = DevTools(binary, profile)
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session)
        browser.events.clear()
        browser.call("Page.navigate", session, url=page.resolve().as_uri())
        browser.wait(lambda m: m.get("method") == "Page.loadEventFired", timeout=60)
        images = browser.call(
            "Runtime.evaluate",
            session,
            returnByValue=True,
            expression=("Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth}))"),
        )
        title = browser.call("Runtime.evaluate", session, expression="document.title", returnByValue=True)
        if screenshot is not None:
            size = browser.call("Page.getLayoutMetrics", session)["cssContentSize"]
            shot = browser.call(
                "Page.captureScreenshot",
                session,
                format="png",
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            )
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        events = list(browser.events)
    finally:
        browser.close()
    errors = [
        e["params"]
        for e in events
        if e["method"] == "Runtime.exceptionThrown"
        or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
        or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]
    requests = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    return {
        "images": images["result"]["value"],
        "title": title["result"]["value"],
        "errors": errors,
        "requests": requests,
    }


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_report_renders_in_chromium(task, request, reports, chromium, tmp_path):
    run = request.getfixturevalue(f"{task}_run")
    html_path, _ = reports[task]
    screenshot = tmp_path / "report.png"
    page = render(chromium, html_path, tmp_path / "profile", screenshot)
    assert page["title"] == f"distilbench report: {run.name}"
    assert len(page["images"]) == len(expected_plots(run))
    assert all(image["complete"] and image["width"] > 0 for image in page["images"]), page["images"]
    assert page["errors"] == []
    outside = [url[:100] for url in page["requests"] if not url.startswith(("file:", "data:"))]
    assert outside == []  # the page asked for nothing beyond itself and its inlined images
    assert screenshot.read_bytes().startswith(PNG)
