"""`serve`: the real server on a free loopback port, spoken to over HTTP."""

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from distilbench.cli.commands import main
from distilbench.serving.app import MicroBatcher, ServeLimits, bind_socket, create_app

TEXTS = [
    "stock market fell",
    "the team won the cup final",
    "",
    "new vaccine trial results",
    "ünïcödé 日本語 emoji 😀",
    "a much longer headline about the economy " * 20,
]


def save_checkpoint(tiny_bert_dir, out, task: str, labels: list[str], thresholds: dict | None = None):
    """A tiny random classifier saved the way training saves its checkpoints."""
    import torch

    from distilbench.models.registry import load_classifier

    torch.manual_seed(0)
    model, tokenizer = load_classifier(str(tiny_bert_dir), task, labels)
    if thresholds:  # where compare stores the thresholds tuned on validation
        model.config.update(
            {"distilbench": {**(model.config.to_dict().get("distilbench") or {}), "thresholds": thresholds}}
        )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


class ServerThread:
    """uvicorn serving `app` on a free 127.0.0.1 port in a background thread."""

    def __init__(self, app):
        import uvicorn

        self.sock = bind_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                return self
            self.thread.join(0.01)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def multiclass_dir(tmp_path_factory, tiny_bert_dir):
    return save_checkpoint(tiny_bert_dir, tmp_path_factory.mktemp("mc"), "multiclass", ["business", "sport", "tech"])


@pytest.fixture(scope="module")
def multiclass(multiclass_dir):
    """Small limits, long texts refused, a long wait so concurrent requests surely share a batch."""
    limits = ServeLimits(max_texts=8, max_text_chars=1000, on_long_text="reject", max_batch_size=16, max_wait_ms=30)
    with ServerThread(create_app(multiclass_dir, backend="torch-fp32", limits=limits)) as server:
        yield server


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory, tiny_bert_dir):
    thresholds = {"toxic": 0.2, "insult": 0.9}
    path = save_checkpoint(tiny_bert_dir, tmp_path_factory.mktemp("ml"), "multilabel", ["toxic", "insult"], thresholds)
    limits = ServeLimits(max_text_chars=50)  # truncate
    with ServerThread(create_app(path, backend="torch-fp32", limits=limits)) as server:
        yield server, thresholds


def expected_records(model_dir, texts, tmp_path) -> list[dict]:
    """What `distilbench predict` writes for `texts` (its lines may also hold a row number)."""
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "predictions.jsonl"
    with pytest.raises(SystemExit) as code:
        main(
            [
                "predict",
                "--model",
                str(model_dir),
                "--input",
                str(source),
                "--output",
                str(out),
                "--backend",
                "torch-fp32",
                "--max-length",
                "128",
                "--no-progress",
            ]
        )  # the server's own limit here
    assert code.value.code == 0
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def assert_same_records(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.get("label") == w.get("label") and g.get("labels") == w.get("labels")
        assert g["probabilities"].keys() == w["probabilities"].keys()
        np.testing.assert_allclose(list(g["probabilities"].values()), list(w["probabilities"].values()), atol=1e-5)


def test_predictions_equal_distilbench_predict(multiclass, multiclass_dir, tmp_path, capsys):
    response = httpx.post(f"{multiclass.url}/predict", json={"texts": TEXTS})
    assert response.status_code == 200
    assert_same_records(response.json()["predictions"], expected_records(multiclass_dir, TEXTS, tmp_path))


def test_multilabel_uses_stored_thresholds(multilabel):
    server, thresholds = multilabel
    response = httpx.post(f"{server.url}/predict", json={"texts": TEXTS[:3] + ["x" * 10_000]})  # long: truncated
    assert response.status_code == 200
    for record in response.json()["predictions"]:
        assert set(record) == {"labels", "probabilities"}
        probs = record["probabilities"]
        assert record["labels"] == [name for name in ("toxic", "insult") if probs[name] >= thresholds[name]]
    meta = httpx.get(f"{server.url}/metadata").json()
    assert meta["task"] == "multilabel" and meta["labels"] == ["toxic", "insult"]
    assert meta["thresholds"] == thresholds and meta["backend"] == "torch-fp32"


def test_health_and_metadata(multiclass, multiclass_dir):
    assert httpx.get(f"{multiclass.url}/health").json() == {"status": "ok"}
    meta = httpx.get(f"{multiclass.url}/metadata").json()
    assert meta["task"] == "multiclass" and meta["labels"] == ["business", "sport", "tech"]
    assert meta["model"] == str(multiclass_dir) and meta["thresholds"] is None
    assert meta["limits"]["max_length"] == 128  # the tiny encoder's positions, not the tokenizer's 512
    assert meta["batching"] == {"enabled": True, "max_batch_size": 16, "max_wait_ms": 30}
    schema = httpx.get(f"{multiclass.url}/openapi.json").json()
    texts = schema["components"]["schemas"]["PredictRequest"]["properties"]["texts"]
    assert texts["minItems"] == 1 and texts["maxItems"] == 8


def test_concurrent_requests_share_forward_passes(multiclass):
    texts = [f"headline number {i} about {'markets' if i % 2 else 'football'}" for i in range(20)]
    alone = [
        record
        for i in range(0, len(texts), 5)  # max_texts is 8
        for record in httpx.post(f"{multiclass.url}/predict", json={"texts": texts[i : i + 5]}).json()["predictions"]
    ]
    before = httpx.get(f"{multiclass.url}/metadata").json()["stats"]
    start = threading.Barrier(len(texts))

    def ask(text: str) -> list[dict]:
        with httpx.Client(base_url=multiclass.url) as client:
            start.wait()
            response = client.post("/predict", json={"texts": [text]})
            assert response.status_code == 200
            return response.json()["predictions"]

    with ThreadPoolExecutor(len(texts)) as pool:
        answers = list(pool.map(ask, texts))
    after = httpx.get(f"{multiclass.url}/metadata").json()["stats"]
    assert after["requests"] - before["requests"] == len(texts)
    assert after["forward_passes"] - before["forward_passes"] < len(texts) / 2
    assert_same_records([a[0] for a in answers], alone)  # each request got its own text's answer


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"texts": []}, 422),  # empty list
        ({"texts": ["a"] * 9}, 422),  # more than max_texts
        ({"texts": "a text"}, 422),  # not a list
        ({"texts": ["a", 3]}, 422),  # not strings
        ({"texts": [None]}, 422),
        ({"text": ["a"]}, 422),  # misspelt field
        ({"texts": ["a"], "extra": 1}, 422),
        ([], 422),
        ({"texts": ["a" * 1001]}, 413),  # longer than max_text_chars, and this server refuses
        ({"texts": ["a" * 1000, "\ud800 lone surrogate", "\x00"]}, 200),
    ],
)
def test_bad_input_gets_a_clear_4xx(multiclass, body, status):
    response = httpx.post(
        f"{multiclass.url}/predict",
        content=json.dumps(body),  # ASCII, lone surrogates escaped
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status, response.text
    if status == 413:
        assert "texts[0] has 1001 characters" in response.json()["detail"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"texts": ["a"',
        b"",
        b"null",
        b'{"\\ud800": 1}',
        b'{"texts": ["a"], "x": "\\udc00"}',
        b'{"texts": ["a"]} trailing',
        b"\xef\xbb\xbf[",
    ],
)
def test_malformed_json_is_422(multiclass, raw):
    response = httpx.post(f"{multiclass.url}/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\xff\xfe", "byte 0xff at offset 0"),
        ('{"texts": ["caf\u00e9"]}'.encode("latin-1"), "byte 0xe9 at offset 15"),
        ('{"texts": ["a"]}'.encode("utf-16"), "byte 0xff at offset 0"),  # valid JSON in UTF-16 (FastAPI takes it)
        (b'{"texts": ["\xed\xa0\x80"]}', "byte 0xed at offset 12"),  # an encoded surrogate: not UTF-8 either
        # UTF-16/32 of ASCII without a BOM: valid UTF-8 bytes (with NULs) that FastAPI would decode as UTF-16/32
        ('{"texts": ["a"]}'.encode("utf-16-le"), "it looks like UTF-16-LE"),
        ('{"texts": ["a"]}'.encode("utf-32-be"), "it looks like UTF-32-BE"),
    ],
)
def test_a_body_that_is_not_utf8_gets_a_400_that_says_so(multiclass, raw, why):
    response = httpx.post(f"{multiclass.url}/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": f"request body is not UTF-8 ({why}); send JSON encoded as UTF-8"}


def test_schemathesis_finds_no_server_error(multiclass):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{multiclass.url}/openapi.json")
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def no_5xx(case):
        case.call_and_validate()

    no_5xx()


def test_micro_batcher_never_exceeds_the_batch_size():
    sizes = []

    def predict(texts):
        sizes.append(len(texts))
        return [{"label": t} for t in texts]

    async def scenario():
        batcher = MicroBatcher(predict, max_batch_size=4, max_wait_s=0.05)
        await batcher.start()
        requests = [[f"{i}-{j}" for j in range(n)] for i, n in enumerate([3, 1, 2, 2, 3])]
        answers = await asyncio.gather(*(batcher.submit(texts) for texts in requests))
        await batcher.stop()
        return requests, answers

    requests, answers = asyncio.run(scenario())
    assert [[a["label"] for a in answer] for answer in answers] == requests
    assert max(sizes) <= 4 and sum(sizes) == 11 and len(sizes) < 5


def test_serve_cli_errors_are_one_line(tmp_path, multiclass, capsys):
    with pytest.raises(SystemExit) as code:
        main(["serve", "--model", str(tmp_path / "nonexistent"), "--port", "0"])
    err = capsys.readouterr().err.strip()
    assert code.value.code == 2 and "no config.json" in err and len(err.splitlines()) == 1
    port = multiclass.url.rsplit(":", 1)[1]  # taken by the running test server
    with pytest.raises(SystemExit) as code:
        main(["serve", "--model", str(tmp_path), "--port", port])
    err = capsys.readouterr().err.strip()
    assert code.value.code == 2 and f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err
    with pytest.raises(SystemExit) as code:
        main(["serve", "--model", str(tmp_path), "--max-batch-size", "0"])
    assert code.value.code == 2 and "--max-batch-size" in capsys.readouterr().err


def test_oversized_bodies_are_refused_before_they_are_read(multiclass_dir):
    limits = ServeLimits(max_body_mb=0.001)  # 1,000 bytes
    with ServerThread(create_app(multiclass_dir, backend="torch-fp32", limits=limits)) as server:
        small = httpx.post(f"{server.url}/predict", json={"texts": ["a short one"]})
        assert small.status_code == 200
        declared = httpx.post(f"{server.url}/predict", json={"texts": ["word " * 400]})  # Content-Length
        assert declared.status_code == 413 and "--max-body-mb" in declared.json()["detail"]

        def chunks():  # no Content-Length: counted as it arrives
            yield b'{"texts": ["'
            for _ in range(40):
                yield b"word " * 20
            yield b'"]}'

        streamed = httpx.post(f"{server.url}/predict", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and "--max-body-mb" in streamed.json()["detail"]
        assert httpx.post(f"{server.url}/predict", json={"texts": ["still serving"]}).status_code == 200
        assert httpx.get(f"{server.url}/metadata").json()["limits"]["max_body_mb"] == 0.001


def test_a_full_queue_answers_503_with_retry_after(multiclass_dir):
    """With room for 2 pending texts and a 300 ms gathering wait, a third text arriving meanwhile is
    refused at once; the first two are answered, and the server takes texts again afterwards."""
    limits = ServeLimits(max_pending=2, max_wait_ms=300, max_batch_size=16)
    with ServerThread(create_app(multiclass_dir, backend="torch-fp32", limits=limits)) as server:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, f"{server.url}/predict", json={"texts": ["one", "two"]})
            for _ in range(200):  # until the first request waits in the batcher
                if httpx.get(f"{server.url}/metadata").json()["stats"]["pending"] == 2:
                    break
                threading.Event().wait(0.005)
            busy = httpx.post(f"{server.url}/predict", json={"texts": ["three"]})
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert "2 texts are waiting or running" in busy.json()["detail"]
            assert first.result().status_code == 200 and len(first.result().json()["predictions"]) == 2
        assert httpx.post(f"{server.url}/predict", json={"texts": ["three"]}).status_code == 200
        stats = httpx.get(f"{server.url}/metadata").json()["stats"]
        assert stats["refused_busy"] == 1 and stats["pending"] == 0


def _memory_kb(pid: int, field: str) -> int:
    """A field of /proc/PID/status in kB (VmRSS: now; VmHWM: the peak since start or the last reset)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.fixture()
def served_process(multiclass_dir):
    """`distilbench serve` in its own process (so its memory is its own) on a free loopback port."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distilbench",
            "serve",
            "--model",
            str(multiclass_dir),
            "--port",
            "0",
            "--backend",
            "torch-fp32",
            "--threads",
            "1",
            "--max-body-mb",
            "4",
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = process.stdout.readline()  # "serving ... at http://127.0.0.1:PORT (loaded in ...)"
        match = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
        assert match, f"the server did not start: {line}{process.stdout.read() if process.poll() is not None else ''}"
        yield process, match.group(1)
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the server's memory from /proc")
def test_concurrent_large_bodies_stay_within_the_in_flight_budget(served_process):
    """16 clients send a 4 MB body each at once to a server with --max-body-mb 4: bodies in flight are
    bounded (by default twice --max-body-mb), so the others get a 503 with Retry-After before their body
    is read, and the server's peak memory grows by a few bodies, not by 16 (64 MB of bodies, several
    times that parsed and queued)."""
    process, url = served_process
    clients, body_mb = 16, 4
    meta = httpx.get(f"{url}/metadata").json()
    assert meta["limits"]["max_body_mb"] == body_mb and meta["limits"]["max_inflight_mb"] == 2 * body_mb
    assert httpx.post(f"{url}/predict", json={"texts": ["warm"]}).status_code == 200
    text = "x" * (body_mb * 1_000_000 // 256 - 8)  # 256 texts, just under 4 MB together
    body = json.dumps({"texts": [text] * 256}).encode()
    assert body_mb * 1e6 - 10_000 < len(body) <= body_mb * 1e6
    try:  # the peak from here on (Linux >= 4.0); without it, the start-up peak is the floor
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")
    except OSError:
        pass
    before = _memory_kb(process.pid, "VmRSS")
    start = threading.Barrier(clients)

    def send(_) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=120) as client:
            start.wait()
            return client.post("/predict", content=body, headers={"content-type": "application/json"})

    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(send, range(clients)))
    growth_mb = (_memory_kb(process.pid, "VmHWM") - before) / 1024
    statuses = sorted(answer.status_code for answer in answers)
    # 2 bodies in flight: their bytes, the parsed texts and the answers (about 25 MB here); 16 at once would
    # be several times that (about 165 MB without the budget)
    assert growth_mb < 12 * body_mb, f"peak memory grew by {growth_mb:.0f} MB; statuses {statuses}"
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 1, statuses
    for answer in answers:
        if answer.status_code == 503:
            assert answer.headers["retry-after"] == "1" and "--max-inflight-mb" in answer.json()["detail"]
        else:
            assert len(answer.json()["predictions"]) == 256
    stats = httpx.get(f"{url}/metadata").json()["stats"]
    assert stats["refused_inflight"] == statuses.count(503) and stats["body_bytes_in_flight"] == 0
    assert httpx.post(f"{url}/predict", json={"texts": ["still serving"]}).status_code == 200


def test_bodies_in_flight_are_counted_across_requests_declared_or_chunked(multiclass_dir):
    """While one chunked body of 900 bytes is held (budget 1,500 bytes), a declared 900-byte body is refused
    before it is read and a second chunked one when it passes the budget; once the first is answered, the
    budget is free again."""
    limits = ServeLimits(max_body_mb=0.001, max_inflight_mb=0.0015)
    with pytest.raises(Exception, match="--max-inflight-mb"):
        ServeLimits(max_body_mb=2, max_inflight_mb=1).validate()
    with ServerThread(create_app(multiclass_dir, backend="torch-fp32", limits=limits)) as server:
        release = threading.Event()
        text = "w" * 880

        def held():
            yield b'{"texts": ["' + text.encode()
            release.wait(30)
            yield b'"]}'

        def chunked():
            yield b'{"texts": ["' + text.encode()
            yield b'"]}'

        headers = {"content-type": "application/json"}
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, f"{server.url}/predict", content=held(), headers=headers, timeout=60)
            for _ in range(400):  # until the first body's bytes are counted
                if httpx.get(f"{server.url}/metadata").json()["stats"]["body_bytes_in_flight"] > 0:
                    break
                threading.Event().wait(0.005)
            declared = httpx.post(f"{server.url}/predict", json={"texts": [text]})
            assert declared.status_code == 503 and declared.headers["retry-after"] == "1"
            assert "--max-inflight-mb" in declared.json()["detail"]
            streamed = httpx.post(f"{server.url}/predict", content=chunked(), headers=headers)
            assert streamed.status_code == 503 and "--max-inflight-mb" in streamed.json()["detail"]
            release.set()
            assert first.result().status_code == 200
        assert httpx.post(f"{server.url}/predict", json={"texts": [text]}).status_code == 200
        meta = httpx.get(f"{server.url}/metadata").json()
        assert meta["limits"]["max_inflight_mb"] == 0.0015
        assert meta["stats"]["refused_inflight"] == 2 and meta["stats"]["body_bytes_in_flight"] == 0


def _raw_json():
    """JSON text (not Python objects: numbers too large for Python's int or float, NaN, deep nesting and
    lone surrogates survive only as text), some of it a well-formed request, some of it junk."""
    from hypothesis import strategies as st

    odd_text = st.text(st.characters(codec=None, categories=None), max_size=40)  # surrogates and controls too
    # escaped (a lone surrogate as \\udXXX: valid JSON) or raw (a lone surrogate: bytes that are not UTF-8)
    string = st.tuples(odd_text, st.booleans()).map(lambda t: json.dumps(t[0], ensure_ascii=t[1]))
    numbers = st.one_of(
        st.integers().map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(
            [
                "1e999999",
                "-1e-999999",
                "NaN",
                "Infinity",
                "-Infinity",
                "-0",
                "1" * 5000,
                "-" + "9" * 4301,
                "0." + "1" * 5000,
                "1E+400",
                "12345678901234567890123",
            ]
        ),
    )
    scalars = st.one_of(numbers, string, st.sampled_from(["true", "false", "null"]))
    values = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
            st.dictionaries(string, inner, max_size=3).map(
                lambda d: "{" + ",".join(f"{k}:{v}" for k, v in d.items()) + "}"
            ),
        ),
        max_leaves=12,
    )
    junk = st.one_of(values, values, values, st.integers(1, 100_000).map(lambda n: "[" * n + "]" * n))
    texts = st.lists(string, min_size=1, max_size=8).map(lambda items: "[" + ",".join(items) + "]")
    body = st.one_of(
        texts.map(lambda t: '{"texts":' + t + "}"),  # well-formed: odd unicode in the texts
        junk.map(lambda v: '{"texts":' + v + "}"),  # wrong types, huge numbers, nesting
        st.tuples(texts, string, values).map(lambda t: '{"texts":' + t[0] + "," + t[1] + ":" + t[2] + "}"),
        junk,
        st.text(max_size=30),
    )  # anything at all
    return body.map(lambda text: text.encode("utf-8", "surrogatepass"))


def test_fuzzed_json_bodies_never_get_a_server_error(multiclass):
    """Odd unicode, numbers beyond float and int, NaN, 100,000-deep nesting, wrong types and junk: every
    answer is a 200 with predictions, or a 4xx/503 with a JSON error that says what is wrong."""
    from hypothesis import HealthCheck, given, settings

    with httpx.Client(base_url=multiclass.url, timeout=60) as client:

        @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(raw=_raw_json())
        def answered_cleanly(raw: bytes):
            response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
            status = response.status_code
            assert status == 200 or 400 <= status < 500 or status == 503, (status, ascii(response.text[:300]))
            answer = response.json()
            if status == 200:
                assert len(answer["predictions"]) == len(json.loads(raw)["texts"])
            else:
                assert answer["detail"], ascii(response.text[:300])

        answered_cleanly()
    assert httpx.get(f"{multiclass.url}/health").json() == {"status": "ok"}
