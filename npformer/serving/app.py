"""The ASGI application of ``npformer serve`` (Starlette), its metrics (prometheus_client) and errors.

Each POST request: body read within ``read_timeout`` seconds (else 408), up to ``payload_limit``
bytes (else 413), parsed as JSON (else 422); then refused at once with 429 (and ``Retry-After``)
when ``max_concurrent_requests`` are in flight; then the route's work
(:mod:`npformer.serving.routes`) and the JSON of its answer run in a worker thread, whose forward
passes go to the shared :class:`~npformer.serving.batcher.Batcher`. Host, API key, content type
and CORS are checked before any of this (:mod:`npformer.serving.guard`). Responses carry TEI's timing headers (ms):
``x-compute-time``, ``x-tokenization-time``, ``x-queue-time``, ``x-inference-time``, plus
``x-compute-tokens``. Errors are ``{"error": str, "error_type": str}`` (TEI's body).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Callable

from npformer.extras import require_extra

require_extra("server", "starlette", "uvicorn", "prometheus_client")

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.applications import Starlette  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.requests import ClientDisconnect, Request  # noqa: E402
from starlette.responses import HTMLResponse, JSONResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from npformer.explain import explainable  # noqa: E402
from npformer.explain import render_page  # noqa: E402
from npformer.serving import routes  # noqa: E402
from npformer.serving.batcher import Batcher, BatchStats  # noqa: E402
from npformer.serving.guard import Access  # noqa: E402
from npformer.serving.openapi import docs_page, openapi  # noqa: E402
from npformer.serving.protocol import ApiError, check_depth, invalid  # noqa: E402
from npformer.serving.routes import CLASSIFIER_TASKS, EMBEDDING_TASKS, SPARSE_TASKS, Limits, Served  # noqa: E402
from npformer.version import __version__  # noqa: E402

log = logging.getLogger("npformer.serve")
DRAIN = 16 * 2**20  # bytes of an over-limit body read and dropped before answering 413
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The server's Prometheus metrics, in their own registry (``/metrics``)."""

    def __init__(self):
        disable_created_metrics()  # no *_created series: they double /metrics for nothing a dashboard reads
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "npformer_requests", "Requests answered, by route, model and status", ["route", "model", "status"], registry=r
        )
        self.errors = Counter(
            "npformer_request_errors", "Requests that failed, by route and error type", ["route", "error_type"], registry=r
        )
        self.in_flight = Gauge("npformer_requests_in_flight", "Requests being answered", registry=r)
        self.duration = Histogram(
            "npformer_request_duration_seconds", "Time from request to response", ["route"], buckets=SECONDS, registry=r
        )
        self.queue = Histogram(
            "npformer_request_queue_duration_seconds",
            "Time a request's rows waited for a forward pass",
            buckets=SECONDS,
            registry=r,
        )
        self.inference = Histogram(
            "npformer_request_inference_duration_seconds",
            "Time of the forward passes a request's rows ran in",
            buckets=SECONDS,
            registry=r,
        )
        self.batch_size = Histogram("npformer_batch_size", "Rows per forward pass", buckets=SIZES, registry=r)
        self.batch_requests = Histogram(
            "npformer_batch_requests", "Requests whose rows shared one forward pass", buckets=SIZES, registry=r
        )
        self.batch_tokens = Histogram(
            "npformer_batch_tokens", "Padded tokens per forward pass", buckets=tuple(64 * s for s in SIZES), registry=r
        )
        self.batch_duration = Histogram(
            "npformer_batch_duration_seconds", "Time of one forward pass", buckets=SECONDS, registry=r
        )

    def on_batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.rows)
        self.batch_requests.observe(stats.requests)
        self.batch_tokens.observe(stats.tokens)
        self.batch_duration.observe(stats.seconds)


def json_bytes(value, depth: int = 3) -> bytes:
    """``value`` as compact JSON (what Starlette's ``JSONResponse`` writes: UTF-8, no NaN), with the
    items of lists and objects down to ``depth`` levels serialized one call each. The C encoder
    holds the GIL for a whole call; between calls the thread that builds a large answer (100 MB of
    token embeddings) hands it to the event loop, which keeps answering other connections."""
    parts: list[str] = []

    def large(v) -> bool:  # worth one call per item: items that are containers (a list of numbers is one call)
        return isinstance(next(iter(v.values() if isinstance(v, dict) else v), None), (list, dict))

    def write(v, levels: int) -> None:
        if levels and isinstance(v, list) and len(v) > 1 and large(v):
            parts.append("[")
            for i, item in enumerate(v):
                parts.append("," if i else "")
                write(item, levels - 1)
            parts.append("]")
        elif levels and isinstance(v, dict) and len(v) > 1 and large(v):
            parts.append("{")
            for i, (key, item) in enumerate(v.items()):
                parts.append(("," if i else "") + json.dumps(str(key), ensure_ascii=False) + ":")
                write(item, levels - 1)
            parts.append("}")
        else:
            parts.append(json.dumps(v, ensure_ascii=False, allow_nan=False, separators=(",", ":")))

    write(value, depth)
    return "".join(parts).encode("utf-8")


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse({"error": e.message, "error_type": e.error_type}, status_code=e.status, headers=e.headers)


def openai_error(e: ApiError) -> JSONResponse:
    """An error in OpenAI's shape (what its client parses): ``{"error": {"message", "type", "param", "code"}}``."""
    kind = {404: ("invalid_request_error", "model_not_found"), 429: ("rate_limit_error", "rate_limit_exceeded")}
    error_type, code = kind.get(e.status, ("invalid_request_error" if e.status < 500 else "server_error", None))
    return JSONResponse(
        {"error": {"message": e.message, "type": error_type, "param": "model" if e.status == 404 else None, "code": code}},
        status_code=e.status,
        headers=e.headers,
    )


def overloaded(limit: int, flag: str, what: str = "requests") -> ApiError:
    return ApiError(429, f"Model is overloaded: {limit} {what} in flight ({flag})", "Overloaded", {"Retry-After": "1"})


class Server:
    """The application: served ``models`` (the first of each kind answers TEI's routes unless a
    ``?model=NAME`` query names another), ``limits`` and the ``batcher`` their pipelines share.
    ``app`` is the ASGI application: the Starlette routes behind ``access``'s checks
    (:mod:`npformer.serving.guard`)."""

    def __init__(self, models: list[Served], limits: Limits, batcher: Batcher, metrics: Metrics, access: Access | None = None):
        self.models = {m.name: m for m in models}
        self.limits, self.batcher, self.metrics = limits, batcher, metrics
        self.in_flight = 0
        self.explains = 0
        for m in models:
            m.pipe.run_on(batcher.submit)
        post = [
            ("/predict", routes.predict, CLASSIFIER_TASKS),
            ("/rerank", routes.rerank, CLASSIFIER_TASKS),
            ("/embed", routes.embed, EMBEDDING_TASKS),
            ("/embed_all", routes.embed_all, EMBEDDING_TASKS),
            ("/embed_sparse", routes.embed_sparse, SPARSE_TASKS),
            ("/similarity", routes.similarity_route, EMBEDDING_TASKS),
            ("/tokenize", routes.tokenize, None),
            ("/decode", routes.decode, None),
        ]
        self.routes = Starlette(
            routes=[
                *[Route(path, self._tei(path, fn, tasks), methods=["POST"]) for path, fn, tasks in post],
                Route("/v1/embeddings", self._openai, methods=["POST"]),
                Route("/v1/models", self._openai_models, methods=["GET"]),
                Route("/models/{name}", self._inference, methods=["POST"]),
                Route("/models", self._list, methods=["GET"]),
                Route("/", self._page, methods=["GET"]),
                Route("/", self._root, methods=["POST"]),
                Route("/explain/{name}", self._explain, methods=["POST"]),
                Route("/info", self._info, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
                Route("/openapi.json", self._openapi, methods=["GET"]),
                Route("/docs", self._docs, methods=["GET"]),
            ],
            exception_handlers={404: self._not_found, 405: self._not_allowed},
            lifespan=self._lifespan,
        )
        self.app = (access or Access()).wrap(self.routes)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        yield
        self.close()

    def close(self) -> None:
        """Finish queued forward passes and stop the inference thread (at shutdown)."""
        self.batcher.close(timeout=60)

    # ---- models

    def pick(self, request: Request, tasks: tuple[str, ...] | None, route: str, name: str | None = None) -> Served:
        """The model a request names (``?model=NAME``), else the first one serving ``tasks``."""
        name = name or request.query_params.get("model")
        if name is not None:
            if name not in self.models:
                raise ApiError(404, f"model {name!r} is not served; served: {sorted(self.models)}", "NotFound")
            return routes.require(self.models[name], tasks, route) if tasks else self.models[name]
        fits = [m for m in self.models.values() if tasks is None or m.task in tasks]
        # /rerank: the first cross-encoder (one label), else the first classifier (which then explains)
        found = next((m for m in fits if m.is_reranker or route != "/rerank"), fits[0] if fits else None)
        if found is None:
            raise ApiError(
                404,
                f"no {' or '.join(tasks)} model is served; {route} needs one (npformer serve --model NAME=PATH@{tasks[0]})",
                "NotFound",
            )
        return found

    # ---- handlers

    def _tei(self, route: str, fn: Callable, tasks):
        async def handler(request: Request):
            return await self.answer(
                request,
                route,
                lambda body: (self.pick(request, tasks, route), body),
                lambda model, body, timings: fn(model, body, self.limits),
            )

        return handler

    async def _openai(self, request: Request):
        """``POST /v1/embeddings``: the body's ``model`` names a served model (404 otherwise, as
        OpenAI answers an unknown model); without one, the first embedding model. Errors in
        OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``."""

        def choose(body):
            name = body.get("model") if isinstance(body, dict) else None
            if name is not None and not isinstance(name, str):
                raise invalid(f"`model` must be a string, got {type(name).__name__}")
            return self.pick(request, EMBEDDING_TASKS, "/v1/embeddings", name), body

        return await self.answer(
            request,
            "/v1/embeddings",
            choose,
            lambda model, body, timings: routes.openai_embeddings(model, body, self.limits, timings),
            openai=True,
        )

    async def _openai_models(self, request: Request):
        """``GET /v1/models``: the served models as OpenAI lists them."""
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": name, "object": "model", "created": 0, "owned_by": "npformer"} for name in self.models],
            }
        )

    async def _root(self, request: Request):
        """``POST /``, where Hugging Face's ``InferenceClient(model=URL)`` / ``(base_url=URL)`` posts
        every task: the Inference API's ``{"inputs", "parameters"}`` for the first served model (or
        ``?model=NAME``), as TEI answers ``/`` with its one model."""
        return await self.answer(
            request,
            "/",
            lambda body: (self.pick(request, None, "/"), body),
            lambda model, body, timings: routes.root(model, body, self.limits),
        )

    async def _inference(self, request: Request):
        name = request.path_params["name"]
        return await self.answer(
            request,
            "/models",
            lambda body: (self.pick(request, None, "/models", name), body),
            lambda model, body, timings: routes.inference(model, body, self.limits),
        )

    async def answer(
        self,
        request: Request,
        route: str,
        choose: Callable,
        work: Callable,  # noqa: PLR0913
        explain: bool = False,
        openai: bool = False,
    ) -> Response:
        """Run one POST request: body (within ``read_timeout``), backpressure, model, work in a
        thread (the JSON of the answer too, so that a large answer never stalls the event loop),
        headers, metrics. The concurrency slot is taken once the body is in, so slow clients hold
        none."""
        start = time.perf_counter()
        model_name = ""
        try:
            body = await self._body(request)
            if self.in_flight >= self.limits.max_concurrent_requests:
                raise overloaded(self.limits.max_concurrent_requests, "--max-concurrent-requests")
            if explain and self.explains >= self.limits.max_concurrent_explains:
                raise overloaded(self.limits.max_concurrent_explains, "--max-concurrent-explains", "explain requests")
        except ApiError as e:
            return self._failed(route, "", e, start, openai)
        except ClientDisconnect:  # the client left mid-body: nothing to answer, and not a server error
            return self._gone(route, start)
        self.in_flight += 1
        self.explains += explain
        self.metrics.in_flight.inc()
        try:
            model, body = choose(body)
            model_name = model.name

            def run():
                with self.batcher.request() as timings:
                    started = time.perf_counter()
                    result = work(model, body, timings)
                    return Response(json_bytes(result), media_type="application/json"), timings, started

            response, timings, started = await run_in_threadpool(run)
            self.metrics.queue.observe(timings.queue)
            self.metrics.inference.observe(timings.inference)
            ms = lambda s: str(int(round(s * 1000)))  # noqa: E731
            response.headers.update(
                {
                    "x-compute-time": ms(time.perf_counter() - start),
                    "x-queue-time": ms(timings.queue),
                    "x-inference-time": ms(timings.inference),
                    "x-compute-tokens": str(timings.tokens),
                    "x-tokenization-time": ms(max(0.0, time.perf_counter() - started - timings.queue - timings.inference)),
                }
            )
        except ApiError as e:
            return self._failed(route, model_name, e, start, openai)
        except ValueError as e:  # a pipeline's own check of the input: over-long text, bad parameter value
            return self._failed(route, model_name, invalid(str(e)), start, openai)
        except Exception as e:  # noqa: BLE001 - answered, logged, and the server goes on
            log.exception("%s failed", route)
            return self._failed(route, model_name, ApiError(500, f"{type(e).__name__}: {e}", "Backend"), start, openai)
        finally:
            self.in_flight -= 1
            self.explains -= explain
            self.metrics.in_flight.dec()
        self.metrics.requests.labels(route, model_name, "200").inc()
        self.metrics.duration.labels(route).observe(time.perf_counter() - start)
        return response

    def _gone(self, route: str, start: float) -> Response:
        """A request whose client disconnected: counted with nginx's 499, never logged as an error."""
        self.metrics.requests.labels(route, "", "499").inc()
        self.metrics.duration.labels(route).observe(time.perf_counter() - start)
        return Response(status_code=499)

    def _failed(self, route: str, model: str, e: ApiError, start: float, openai: bool = False) -> JSONResponse:
        self.metrics.requests.labels(route, model, str(e.status)).inc()
        self.metrics.errors.labels(route, e.error_type).inc()
        self.metrics.duration.labels(route).observe(time.perf_counter() - start)
        return openai_error(e) if openai else error_response(e)

    async def _body(self, request: Request):
        """The request's JSON body: received within ``read_timeout`` seconds (408 after), at most
        ``payload_limit`` bytes (413 above), JSON (422 if not, or nested deeper than
        :data:`~npformer.serving.protocol.MAX_DEPTH`)."""
        try:
            if hasattr(asyncio, "timeout"):  # Python 3.11+: a deadline on this task, no new task
                async with asyncio.timeout(self.limits.read_timeout):
                    return await self._read_json(request)
            return await asyncio.wait_for(self._read_json(request), self.limits.read_timeout)
        except asyncio.TimeoutError:
            raise ApiError(
                408, f"the request body did not arrive within {self.limits.read_timeout:g} s (--read-timeout)", "Timeout"
            ) from None

    async def _read_json(self, request: Request):
        """An over-limit body is read on (and dropped) up to :data:`DRAIN` more bytes, so that the
        client, still sending, receives the 413 rather than a broken connection."""
        limit = self.limits.payload_limit
        size, chunks = 0, []
        async for chunk in request.stream():
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            elif size > limit + DRAIN:
                break
        if size > limit:
            raise ApiError(
                413,
                f"request body of {size}{'+' if size > limit + DRAIN else ''} bytes is over the payload "
                f"limit of {limit} bytes (--payload-limit)",
                "PayloadTooLarge",
            )
        try:
            body = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError) as e:
            raise invalid(f"the request body is not valid JSON: {e}") from None
        except RecursionError:
            raise invalid("the request body nests JSON too deeply") from None
        check_depth(body)
        return body

    async def _page(self, request: Request):
        """The explain page (:mod:`npformer.explain`) for the models it can show."""
        models = [{"name": m.name, "task": m.task} for m in self.models.values() if m.task in explainable()]
        return HTMLResponse(render_page(None, "npformer serve", models))

    async def _explain(self, request: Request):
        """``POST /explain/{name}``, at most ``max_concurrent_explains`` at once (429 beyond)."""
        name = request.path_params["name"]
        return await self.answer(
            request,
            "/explain",
            lambda body: (self.pick(request, explainable(), "/explain", name), body),
            lambda model, body, timings: routes.explain_route(model, body, self.limits),
            explain=True,
        )

    async def _info(self, request: Request):
        try:
            model = self.pick(request, None, "/info")
        except ApiError as e:
            return error_response(e)
        info = routes.model_info(model, self.limits, __version__)
        info["models"] = [{"name": m.name, "task": m.task, "model_id": m.model_id} for m in self.models.values()]
        return JSONResponse(info)

    async def _list(self, request: Request):
        return JSONResponse([routes.model_info(m, self.limits, __version__) for m in self.models.values()])

    async def _health(self, request: Request):
        if not self.batcher.alive:
            return error_response(ApiError(503, "the inference thread has stopped", "Unhealthy"))
        return Response(status_code=200)

    async def _metrics(self, request: Request):
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi(self) -> dict:
        """The OpenAPI description of the routes (:mod:`npformer.serving.openapi`)."""
        return openapi(__version__, [{"name": m.name, "task": m.task} for m in self.models.values()])

    async def _openapi(self, request: Request):
        return JSONResponse(self.openapi())

    async def _docs(self, request: Request):
        return HTMLResponse(docs_page(self.openapi()))

    async def _not_found(self, request: Request, exc):
        return error_response(ApiError(404, f"no route {request.url.path}; see GET /info", "NotFound"))

    async def _not_allowed(self, request: Request, exc):
        return error_response(ApiError(405, f"{request.method} is not allowed on {request.url.path}", "Validation"))
