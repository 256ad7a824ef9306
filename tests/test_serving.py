"""`serve`: the real server on a free loopback port, spoken to over HTTP."""

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from distilbench.cli import main
from distilbench.serving import MicroBatcher, ServeLimits, bind_socket, create_app

TEXTS = ["stock market fell", "the team won the cup final", "", "new vaccine trial results",
         "ünïcödé 日本語 emoji 😀", "a much longer headline about the economy " * 20]


def save_checkpoint(tiny_bert_dir, out, task: str, labels: list[str], thresholds: dict | None = None):
    """A tiny random classifier saved the way training saves its checkpoints."""
    import torch

    from distilbench.models import load_classifier

    torch.manual_seed(0)
    model, tokenizer = load_classifier(str(tiny_bert_dir), task, labels)
    if thresholds:  # where compare stores the thresholds tuned on validation
        model.config.update({"distilbench": {**(model.config.to_dict().get("distilbench") or {}),
                                             "thresholds": thresholds}})
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
    path = save_checkpoint(tiny_bert_dir, tmp_path_factory.mktemp("ml"), "multilabel", ["toxic", "insult"],
                           thresholds)
    limits = ServeLimits(max_text_chars=50)  # truncate
    with ServerThread(create_app(path, backend="torch-fp32", limits=limits)) as server:
        yield server, thresholds


def expected_records(model_dir, texts, tmp_path) -> list[dict]:
    """What `distilbench predict` writes for `texts` (its lines may also hold a row number)."""
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "predictions.jsonl"
    with pytest.raises(SystemExit) as code:
        main(["predict", "--model", str(model_dir), "--input", str(source), "--output", str(out),
              "--backend", "torch-fp32", "--max-length", "128", "--no-progress"])  # the server's own limit here
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
    alone = [record for i in range(0, len(texts), 5)  # max_texts is 8
             for record in httpx.post(f"{multiclass.url}/predict",
                                      json={"texts": texts[i:i + 5]}).json()["predictions"]]
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


@pytest.mark.parametrize(("body", "status"), [
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
])
def test_bad_input_gets_a_clear_4xx(multiclass, body, status):
    response = httpx.post(f"{multiclass.url}/predict", content=json.dumps(body),  # ASCII, lone surrogates escaped
                          headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    if status == 413:
        assert "texts[0] has 1001 characters" in response.json()["detail"]


@pytest.mark.parametrize("raw", [b'{"texts": ["a"', b"", b"null", b"\xff\xfe", b'{"\\ud800": 1}',
                                 b'{"texts": ["a"], "x": "\\udc00"}'])
def test_malformed_json_is_422(multiclass, raw):
    response = httpx.post(f"{multiclass.url}/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422), response.text


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
