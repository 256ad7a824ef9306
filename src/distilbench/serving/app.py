"""`distilbench serve`: a saved classifier behind HTTP (FastAPI + uvicorn), with dynamic micro-batching.

Concurrent requests wait in one queue; a single worker gathers them until `max_batch_size` texts or
`max_wait_ms` after the first one arrived, runs one forward pass in a thread (the event loop keeps
accepting requests meanwhile) and answers each request with its own slice. With batching off every
request is its own forward pass, one after another: the baseline of benchmarks/serve.py.

No `from __future__ import annotations` here: FastAPI reads the request model of an endpoint from its
annotation at run time, and the models are classes made by api_models for the server's limits and task.
"""

import asyncio
import errno
import json
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from distilbench.core.console import DistilbenchError, say
from distilbench.runtime.predict import ChunkPredictor

log = logging.getLogger(__name__)

LONG_TEXT_ACTIONS = ("truncate", "reject")


@dataclass
class ServeLimits:
    """What one request may hold, and how requests are gathered into forward passes."""

    max_texts: int = 256  # texts per request (more: 422)
    max_text_chars: int = 10_000  # characters per text (more: truncated, or 413 with on_long_text='reject')
    on_long_text: str = "truncate"
    max_length: int | None = None  # tokens per text (default: what the model and tokenizer allow)
    batching: bool = True
    max_batch_size: int = 64  # texts per forward pass
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_body_mb: float = 32.0  # request body, read before it is parsed (more: 413)
    max_pending: int = 4096  # texts waiting or in a forward pass (more: 503 with Retry-After)
    # request bodies held at once across all requests, from the first byte to the answer (more: 503 with
    # Retry-After); None: twice max_body_mb. Without it, concurrent large bodies add up without bound.
    max_inflight_mb: float | None = None

    @property
    def inflight_mb(self) -> float:
        return 2 * self.max_body_mb if self.max_inflight_mb is None else self.max_inflight_mb

    def validate(self) -> "ServeLimits":
        for name in ("max_texts", "max_text_chars", "max_batch_size", "max_pending"):
            if getattr(self, name) < 1:
                raise DistilbenchError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_body_mb <= 0:
            raise DistilbenchError("--max-body-mb must be more than 0")
        if self.inflight_mb < self.max_body_mb:
            raise DistilbenchError(
                f"--max-inflight-mb ({self.inflight_mb:g}) must be at least --max-body-mb "
                f"({self.max_body_mb:g}), or no body of the largest size could ever be read"
            )
        if self.max_wait_ms < 0:
            raise DistilbenchError("--max-wait-ms must be 0 or more")
        if self.max_length is not None and self.max_length < 2:
            raise DistilbenchError("--max-length must be at least 2 tokens ([CLS] and [SEP])")
        if self.on_long_text not in LONG_TEXT_ACTIONS:
            raise DistilbenchError(f"--on-long-text must be one of {', '.join(LONG_TEXT_ACTIONS)}")
        return self


class Classifier(ChunkPredictor):
    """The bulk predictor as the server uses it: `auto` resolved to a backend, the token limit capped at
    the encoder's positions, forward passes counted for /metadata."""

    def __init__(
        self,
        model_dir: str | Path,
        backend: str = "auto",
        device: str = "auto",
        max_length: int | None = None,
        batch_size: int = 64,
        choice=None,
    ):
        from distilbench.runtime.batching import token_limit
        from distilbench.runtime.predict import resolve_model_backend

        # auto: the cached choice, else a calibration on the run's validation split or on built-in news texts;
        # an exported bundle: its own graph, without torch
        self.backend_name, self.backend_choice = resolve_model_backend(
            model_dir,
            backend,
            device=device,
            batch_size=batch_size,
            max_length=max_length,
            held_texts=_builtin_sample_texts,
            settings=choice,
        )
        super().__init__(str(model_dir), self.backend_name, device, batch_size, max_length, work_dir=None)
        self.model_dir = str(model_dir)
        self.forward_passes = 0
        if self.text_model is not None:  # tfidf, static, cascade: no tokens, no encoder
            self.architecture = {"model_type": self.text_model.kind}
            return
        self.architecture = _architecture(self.config)
        self.max_length = token_limit(self.tokenizer, max_length, self.runtime.max_positions)

    def predict(self, texts: list[str]) -> list[dict]:
        records = self.predictions(texts)
        self.forward_passes += -(-len(texts) // self.batch_size)
        return records


def _builtin_sample_texts() -> list[str]:
    """auto's calibration texts for a checkpoint outside a run directory (auto.builtin_sample_texts)."""
    from distilbench.runtime.auto import builtin_sample_texts

    return builtin_sample_texts()


def _architecture(config) -> dict:
    """Type, layers and hidden size for /metadata: an exported bundle's config read as JSON, else
    models.registry.describe of the checkpoint's transformers config."""
    if hasattr(config, "architecture"):  # runtime.bundle.BundleConfig
        return config.architecture()
    from distilbench.models.registry import describe

    return describe(config)


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future
    arrived: float


class Busy(Exception):
    """The batcher holds `max_pending` texts already: the request is refused, not queued."""


@dataclass
class MicroBatcher:
    """One queue, one worker: gathers requests into forward passes of up to `max_batch_size` texts.

    At most `max_pending` texts wait or run at once; `submit` refuses more (Busy), so a burst beyond
    what the model can answer gets a quick "retry later" instead of growing the queue and every wait.
    """

    predict: object  # list[str] -> list[dict], run in a worker thread
    max_batch_size: int = 64
    max_wait_s: float = 0.005
    batching: bool = True
    max_pending: int | None = None
    stats: dict = field(default_factory=lambda: {"requests": 0, "texts": 0, "batches": 0, "refused_busy": 0})

    def __post_init__(self):
        self.pending = 0  # texts submitted and not yet answered
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._carry: _Pending | None = None  # a request that did not fit the previous batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distilbench-forward")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(), name="distilbench-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> list[dict]:
        """The records of `texts`, computed in whichever batch they land in."""
        if self.max_pending is not None and self.pending + len(texts) > self.max_pending:
            self.stats["refused_busy"] += 1
            raise Busy(f"{self.pending} texts are waiting or running (at most {self.max_pending})")
        loop = asyncio.get_running_loop()
        pending = _Pending(texts, loop.create_future(), loop.time())
        self.pending += len(texts)
        try:
            await self._queue.put(pending)
            return await pending.future
        finally:  # answered, failed, or the client hung up
            self.pending -= len(texts)

    async def _gather(self) -> list[_Pending]:
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, count = [first], len(first.texts)
        if not self.batching:
            return batch
        loop = asyncio.get_running_loop()
        deadline = first.arrived + self.max_wait_s  # time spent queued behind the last forward counts
        while count < self.max_batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if count + len(item.texts) > self.max_batch_size:
                self._carry = item  # first in line for the next batch
                break
            batch.append(item)
            count += len(item.texts)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            batch = [item for item in batch if not item.future.done()]  # clients that hung up
            if not batch:
                continue
            texts = [text for item in batch for text in item.texts]
            try:
                records = await loop.run_in_executor(self._executor, self.predict, texts)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error (a 500)
                log.exception("forward pass over %d texts failed", len(texts))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.stats["requests"] += len(batch)
            self.stats["texts"] += len(texts)
            self.stats["batches"] += 1
            begin = 0
            for item in batch:
                if not item.future.done():
                    item.future.set_result(records[begin : begin + len(item.texts)])
                begin += len(item.texts)


def clean_text(text: str, limits: ServeLimits) -> str:
    """Lone UTF-16 surrogates (valid in JSON, not in UTF-8) become U+FFFD; long texts are cut."""
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace") if _has_surrogate(text) else text
    return text[: limits.max_text_chars]


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def create_app(
    model_dir: str | Path,
    *,
    backend: str = "auto",
    device: str = "auto",
    limits: ServeLimits | None = None,
    threads: int | None = None,
    warm_up: bool = True,
    choice=None,
):
    """The FastAPI app serving one checkpoint; the model loads (and warms up) here, not on the first request.

    `threads` sets the intra-op threads for the whole process (default: the library's choice, one per core):
    torch's for a checkpoint; for an exported bundle ONNX Runtime's, through OMP_NUM_THREADS, without torch.
    """
    from distilbench.runtime.bundle import is_exported_model
    from distilbench.runtime.light import is_text_model

    limits = (limits or ServeLimits()).validate()
    if threads is not None and (is_exported_model(model_dir) or is_text_model(model_dir)):
        os.environ["OMP_NUM_THREADS"] = str(threads)  # read by onnx_backend.session_threads
    elif threads is not None:
        import torch

        torch.set_num_threads(threads)
    classifier = load_classifier(model_dir, backend, device, limits, warm_up, choice)
    batcher = MicroBatcher(
        classifier.predict, limits.max_batch_size, limits.max_wait_ms / 1000, limits.batching, limits.max_pending
    )
    body_stats = {"body_bytes_in_flight": 0, "refused_inflight": 0}  # shared with the middleware
    app = new_app(classifier, batcher, limits, body_stats)
    models = api_models(limits, classifier.task)
    add_predict_route(app, batcher, limits, models)
    add_info_routes(app, classifier, batcher, limits, body_stats, models)
    return app


def load_classifier(
    model_dir: str | Path, backend: str, device: str, limits: ServeLimits, warm_up: bool, choice
) -> Classifier:
    """The model, loaded with the server's token limit and batch size; warmed up, so that the first calls'
    allocation (and, for compiled backends, compilation) stays off the first request."""
    classifier = Classifier(model_dir, backend, device, limits.max_length, limits.max_batch_size, choice)
    if warm_up:
        classifier.predict(["warm-up"])
        classifier.forward_passes = 0
        if getattr(classifier.text_model, "stage_counts", None) is not None:  # a cascade counts served rows only
            classifier.text_model.stage_counts = [0] * len(classifier.text_model.stage_counts)
    return classifier


def new_app(classifier: Classifier, batcher: MicroBatcher, limits: ServeLimits, body_stats: dict):
    """The FastAPI app without routes: the batcher started and stopped with it, the 422 handler, the body
    limits, and the route class that takes only UTF-8 bodies."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError

    from distilbench import __version__

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="distilbench",
        version=__version__,
        lifespan=lifespan,
        description=f"{classifier.task} text classifier {classifier.model_dir} ({classifier.backend_name})",
    )
    app.state.classifier = classifier
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(
        BodyLimit,
        max_bytes=int(limits.max_body_mb * 1e6),
        max_inflight_bytes=int(limits.inflight_mb * 1e6),
        stats=body_stats,
    )
    app.state.batcher = batcher
    app.state.limits = limits
    app.router.route_class = utf8_route_class()
    return app


@dataclass
class ApiModels:
    """The request and response models of the endpoints (they document the API at /docs)."""

    request: type
    response: type
    health: type


def api_models(limits: ServeLimits, task: str) -> ApiModels:
    """Pydantic models of a request (its limits in its schema) and of the answer for `task`."""
    from pydantic import BaseModel, ConfigDict, Field

    long_texts = "truncated" if limits.on_long_text == "truncate" else "refused (413)"

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: Annotated[
            list[str],
            Field(
                min_length=1,
                max_length=limits.max_texts,
                description=f"1 to {limits.max_texts} texts; texts longer than "
                f"{limits.max_text_chars} characters are {long_texts}",
            ),
        ]

    if task == "multiclass":

        class Prediction(BaseModel):
            label: str = Field(description="the most probable label")
            probabilities: dict[str, float] = Field(description="softmax probability of every label")
    else:

        class Prediction(BaseModel):
            labels: list[str] = Field(description="labels whose probability reaches their stored threshold")
            probabilities: dict[str, float] = Field(description="sigmoid probability of every label")

    class PredictResponse(BaseModel):
        predictions: list[Prediction] = Field(description="one per text, in request order")

    class Health(BaseModel):
        status: Literal["ok"]

    return ApiModels(PredictRequest, PredictResponse, Health)


def utf8_route_class():
    """A route class for which a body that is not UTF-8 gets a 400 that says so."""
    from fastapi import HTTPException
    from fastapi.routing import APIRoute

    class Utf8Route(APIRoute):
        """JSON is UTF-8 (RFC 8259): any other body gets a 400 that says so, before FastAPI parses it (its
        parser would take UTF-16 and UTF-32 too, and answer other bytes with a vague 400)."""

        def get_route_handler(self):
            handler = super().get_route_handler()

            async def utf8_only(request):
                body = await request.body()  # kept on the request: FastAPI reads it from there
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise HTTPException(
                        400,
                        f"request body is not UTF-8 (byte 0x{body[exc.start]:02x} at offset "
                        f"{exc.start}); send JSON encoded as UTF-8",
                    ) from None
                encoding = json.detect_encoding(body)  # UTF-16/32 of ASCII text can be valid UTF-8 bytes
                if encoding not in ("utf-8", "utf-8-sig"):
                    raise HTTPException(
                        400, f"request body is not UTF-8 (it looks like {encoding.upper()}); send JSON encoded as UTF-8"
                    )
                return await handler(request)

            return utf8_only

    return Utf8Route


PREDICT_RESPONSES = {
    400: {"description": "the body cannot be read as text (not UTF-8)"},
    413: {
        "description": "a text is longer than the server's --max-text-chars "
        "(with --on-long-text reject), or the body is larger than "
        "--max-body-mb"
    },
    422: {"description": 'not a JSON object {"texts": [1 or more strings]}, or more texts than --max-texts'},
    503: {
        "description": "the server holds --max-pending texts, or --max-inflight-mb "
        "of request bodies, already; retry after the seconds in the "
        "Retry-After header"
    },
}


def add_predict_route(app, batcher: MicroBatcher, limits: ServeLimits, models: ApiModels) -> None:
    """POST /predict: texts in, one prediction each out, through the batcher."""
    from fastapi import HTTPException, Response

    request_model = models.request

    @app.post(
        "/predict",
        response_model=models.response,
        summary="Predict the label(s) of texts",
        responses=PREDICT_RESPONSES,
    )
    async def predict(request: request_model):
        texts = request.texts
        if limits.on_long_text == "reject":
            for i, text in enumerate(texts):
                if len(text) > limits.max_text_chars:
                    raise HTTPException(
                        413, f"texts[{i}] has {len(text)} characters; this server takes at most {limits.max_text_chars}"
                    )
        try:
            records = await batcher.submit([clean_text(t, limits) for t in texts])
        except Busy as exc:
            raise HTTPException(503, f"server busy: {exc}; retry later", headers={"Retry-After": "1"}) from None
        # plain dicts of str and float: skip FastAPI's re-validation of the response (response_model documents it)
        return Response(json.dumps({"predictions": records}), media_type="application/json")


def add_info_routes(
    app, classifier: Classifier, batcher: MicroBatcher, limits: ServeLimits, body_stats: dict, models: ApiModels
) -> None:
    """GET /health and GET /metadata."""

    @app.get("/health", response_model=models.health, summary="Liveness: the model is loaded and the worker runs")
    async def health():
        return {"status": "ok"}

    @app.get("/metadata", summary="Task, labels, thresholds, model, backend, limits and batching counters")
    async def metadata() -> dict:
        return server_metadata(classifier, batcher, limits, body_stats)


def server_metadata(classifier: Classifier, batcher: MicroBatcher, limits: ServeLimits, body_stats: dict) -> dict:
    """What GET /metadata answers: the model, its labels and thresholds, the limits and the counters."""
    return {
        "task": classifier.task,
        "labels": classifier.label_names,
        "thresholds": (
            dict(zip(classifier.label_names, classifier.thresholds.tolist()))
            if classifier.task == "multilabel"
            else None
        ),
        "model": classifier.model_dir,
        "architecture": classifier.architecture,
        "backend": classifier.backend_name,
        "backend_choice": classifier.backend_choice,
        "limits": {
            "max_texts": limits.max_texts,
            "max_text_chars": limits.max_text_chars,
            "on_long_text": limits.on_long_text,
            "max_length": classifier.max_length,
            "max_body_mb": limits.max_body_mb,
            "max_inflight_mb": limits.inflight_mb,
            "max_pending": limits.max_pending,
        },
        "batching": {
            "enabled": limits.batching,
            "max_batch_size": limits.max_batch_size,
            "max_wait_ms": limits.max_wait_ms,
        },
        "stats": {
            **batcher.stats,
            "pending": batcher.pending,
            "forward_passes": classifier.forward_passes,
            **body_stats,
            **_stage_counts(classifier),
        },
    }


def _stage_counts(classifier: Classifier) -> dict:
    """A cascade's rows answered by each stage since the server started ({} for any other model)."""
    counts = getattr(classifier.text_model, "stage_counts", None)
    return {"stage_counts": [int(n) for n in counts]} if counts is not None else {}


class BodyLimit:
    """ASGI middleware bounding request bodies: one larger than `max_bytes` gets a 413 before it is read
    whole, and bodies held at once across requests (from the first byte to the answer) may add up to
    `max_inflight_bytes`; a request beyond that gets a 503 with Retry-After before its body is read.

    A declared Content-Length is checked and reserved at once; a body without one (chunked) is counted
    as it arrives. Either way memory stays bounded, however many clients send at the same time.
    """

    def __init__(self, app, max_bytes: int, max_inflight_bytes: int | None = None, stats: dict | None = None):
        self.app, self.max_bytes = app, max_bytes
        self.max_inflight_bytes = max_bytes if max_inflight_bytes is None else max_inflight_bytes
        self.stats = {"body_bytes_in_flight": 0, "refused_inflight": 0} if stats is None else stats

    def too_large(self) -> str:
        return (
            f"request body larger than {self.max_bytes / 1e6:g} MB (this server's --max-body-mb); "
            "send fewer or shorter texts per request"
        )

    def too_busy(self) -> str:
        return (
            f"server busy: request bodies of {self.stats['body_bytes_in_flight'] / 1e6:g} MB are being "
            f"read or answered (at most {self.max_inflight_bytes / 1e6:g} MB, --max-inflight-mb); retry later"
        )

    def reserve(self, size: int) -> bool:
        """Count `size` more bytes as in flight, unless that passes the budget."""
        if self.stats["body_bytes_in_flight"] + size > self.max_inflight_bytes:
            self.stats["refused_inflight"] += 1
            return False
        self.stats["body_bytes_in_flight"] += size
        return True

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse

        declared = dict(scope.get("headers") or []).get(b"content-length")
        declared = int(declared) if declared is not None and declared.isdigit() else None
        if declared is not None and declared > self.max_bytes:
            return await JSONResponse({"detail": self.too_large()}, status_code=413)(scope, receive, send)
        if declared and not self.reserve(declared):
            return await JSONResponse({"detail": self.too_busy()}, status_code=503, headers={"Retry-After": "1"})(
                scope, receive, send
            )
        reserved, seen = declared or 0, 0

        async def counted():
            nonlocal seen, reserved
            message = await receive()
            seen += len(message.get("body", b""))
            # FastAPI answers an HTTPException raised while it reads the body
            if seen > self.max_bytes:
                raise HTTPException(413, self.too_large())
            if seen > reserved:  # chunked: reserve as it arrives
                if not self.reserve(seen - reserved):
                    raise HTTPException(503, self.too_busy(), headers={"Retry-After": "1"})
                reserved = seen
            return message

        try:
            await self.app(scope, counted, send)
        finally:  # answered, failed, or the client hung up: the body is no longer held
            self.stats["body_bytes_in_flight"] -= reserved


async def _validation_error(request, exc):
    """FastAPI's 422 without echoing the input back (a refused list of 100,000 texts would come back
    whole) and with ASCII-escaped JSON, so a lone surrogate in a key or value cannot turn it into a 500."""
    from fastapi.encoders import jsonable_encoder
    from starlette.responses import Response

    errors = [{k: v for k, v in error.items() if k in ("type", "loc", "msg", "ctx")} for error in exc.errors()]
    body = json.dumps({"detail": jsonable_encoder(errors)}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on host:port (port 0: any free one); a clear error when it is taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise DistilbenchError(f"cannot serve on host '{host}': {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hint = "; choose another with --port" if exc.errno == errno.EADDRINUSE else ""
        raise DistilbenchError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    sock.set_inheritable(True)
    return sock


def serve(
    model_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    backend: str = "auto",
    device: str = "auto",
    limits: ServeLimits | None = None,
    threads: int | None = None,
    access_log: bool = False,
    choice=None,
) -> None:
    """Load the model, then serve it until interrupted (Ctrl-C)."""
    import uvicorn

    limits = (limits or ServeLimits()).validate()
    if threads is not None and threads < 1:
        raise DistilbenchError("--threads must be at least 1")
    sock = bind_socket(host, port)  # before the model loads: a taken port fails in a moment
    try:
        start = time.perf_counter()
        app = create_app(model_dir, backend=backend, device=device, limits=limits, threads=threads, choice=choice)
        classifier, limits = app.state.classifier, app.state.limits
        sock.listen(2048)  # from here connections queue until uvicorn accepts them, so the URL below works
        bound_host, bound_port = sock.getsockname()[:2]
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        batching = (
            f"micro-batching up to {limits.max_batch_size} texts / {limits.max_wait_ms:g} ms"
            if limits.batching
            else "no batching (one request per forward pass)"
        )
        say(
            f"serving {classifier.model_dir} ({classifier.task}, {classifier.backend_name}, {batching}) "
            f"at http://{url_host}:{bound_port} (loaded in {time.perf_counter() - start:.1f} s; "
            f"API docs at /docs)"
        )
        config = uvicorn.Config(
            app, log_level="info" if access_log else "warning", access_log=access_log, timeout_graceful_shutdown=5
        )
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises Ctrl-C
            say("stopped")
    finally:
        sock.close()
