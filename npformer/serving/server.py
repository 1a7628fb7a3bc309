"""``npformer serve``: load the named models, check the limits, and run the HTTP server (uvicorn).

Models are given as ``NAME=PATH_OR_ID[@task]`` (repeatable); without any, the built-in INT8
sentiment model is served as ``sentiment``, so the server works offline with no configuration.
A model's task, when not given, comes from its checkpoint
(:func:`~npformer.pipelines.tasks.task_for_checkpoint`): its sentence-transformers modules (SPLADE:
sparse embeddings, PyLate: late interaction, others: sentence embeddings), else the head named in
``architectures``.

Limits that contradict each other are refused before anything is loaded or bound, with a message
naming the flags (a forward pass must hold the longest input a model takes, for instance), so a
server never starts that could hang on a request.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

from npformer.hub import hub_commit, resolve
from npformer.runtime import set_num_threads
from npformer.pipelines import get_task, pipeline
from npformer.pipelines.tasks import task_for_checkpoint
from npformer.serving.app import Metrics, Server
from npformer.serving.batcher import Batcher
from npformer.serving.guard import Access, header_deadline_protocol, loopback_hosts
from npformer.serving.routes import Limits, Served

import uvicorn  # noqa: E402 - checked by npformer.serving.app's require_extra

log = logging.getLogger("npformer.serve")


def parse_model(spec: str) -> tuple[str, str, str | None]:
    """``NAME=PATH_OR_ID[@task]`` (or just ``PATH_OR_ID[@task]``, named after its last path part)
    -> ``(name, path_or_id, task or None)``. Raises ``ValueError`` for an empty name or unknown task."""
    name, sep, rest = spec.partition("=")
    if not sep:
        name, rest = "", spec
    source, at, task = rest.rpartition("@")
    if not at:
        source, task = rest, None
    else:
        try:
            task = get_task(task).name
        except ValueError as e:
            raise ValueError(f"--model {spec!r}: {e}") from None
    if not source:
        raise ValueError(f"--model {spec!r}: no checkpoint; use NAME=PATH_OR_ID[@task]")
    name = name or Path(source.rstrip("/")).name.replace("builtin:", "")
    if not name or "/" in name:
        raise ValueError(f"--model {spec!r}: a model name must be non-empty and hold no '/'")
    return name, source, task


def infer_task(directory: Path) -> str:
    """The task a checkpoint serves when none is given (see the module docstring)."""
    return task_for_checkpoint(directory).name


def check_limits(limits: Limits, models: list[Served]) -> None:
    """Refuse limits that contradict each other or the models (``ValueError`` naming the flags)."""
    for flag, value in (
        ("--max-batch-tokens", limits.max_batch_tokens),
        ("--max-batch-size", limits.max_batch_size),
        ("--max-concurrent-requests", limits.max_concurrent_requests),
        ("--max-client-batch-size", limits.max_client_batch_size),
        ("--payload-limit", limits.payload_limit),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{flag} must be an integer >= 1, got {value!r}")
    if not 0 <= limits.max_wait_ms <= 10_000:
        raise ValueError(f"--max-wait-ms must be from 0 to 10000, got {limits.max_wait_ms!r}")
    if not 0 < limits.read_timeout <= 3600:
        raise ValueError(f"--read-timeout must be more than 0 and at most 3600 seconds, got {limits.read_timeout!r}")
    for flag, value in (
        ("--explain-max-tokens", limits.explain_max_tokens),
        ("--max-concurrent-explains", limits.max_concurrent_explains),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{flag} must be an integer >= 1, got {value!r}")
    for m in models:
        if m.pipe.max_length > limits.max_batch_tokens:
            raise ValueError(
                f"--max-batch-tokens {limits.max_batch_tokens} is less than model {m.name!r}'s longest "
                f"input ({m.pipe.max_length} tokens): such a request could never run; raise "
                f"--max-batch-tokens to at least {m.pipe.max_length}"
            )
    if limits.payload_limit < 64:
        raise ValueError(f"--payload-limit {limits.payload_limit} bytes cannot hold any request; use at least 64")


def load_models(specs: list[str], dtype: str, revision: str | None = None) -> list[Served]:
    """One :class:`Served` per ``--model`` spec (the built-in sentiment model when there are none)."""
    specs = specs or ["sentiment=builtin:sentiment@text-classification"]
    served, names = [], set()
    for spec in specs:
        name, source, task = parse_model(spec)
        if name in names:
            raise ValueError(f"--model {spec!r}: the name {name!r} is taken; give each model its own NAME=")
        names.add(name)
        directory = resolve(source, revision)
        task = task or infer_task(directory)
        log.info("loading %s (%s) from %s", name, task, directory)
        pipe = pipeline(task, str(directory), dtype=dtype)
        encoder = getattr(pipe.model, "encoder", pipe.model)  # a head model holds its encoder
        served.append(Served(name, task, pipe, source, getattr(encoder, "dtype", dtype), hub_commit(directory)))
    return served


def warm_up(model: Served) -> None:
    """Answer one short request (the task's ``warm_up``), so that compiling and first-touch costs are
    paid before the port opens."""
    get_task(model.task).warm_up(model.pipe)


def serve(  # noqa: PLR0913 - serve's flags
    specs: list[str],
    *,
    dtype: str = "float32",
    host: str = "127.0.0.1",
    port: int = 8080,
    limits: Limits | None = None,
    threads: int | None = None,
    batching: bool = True,
    revision: str | None = None,
    log_level: str = "info",
    access: Access | None = None,
) -> int:
    """Load the models, check the limits, then answer HTTP on ``host:port`` until SIGTERM or Ctrl-C.

    ``access`` says who may call (API key, ``Host`` names, CORS origins; see
    :mod:`npformer.serving.guard`); by default no key, the loopback names when bound to the loopback.

    SIGTERM stops accepting connections, lets in-flight requests finish (up to 60 s), drains
    the batcher and returns 0. ``batching=False`` runs each request's rows in their own forward
    passes (for comparison). Raises ``ValueError`` / ``FileNotFoundError`` before binding for a bad
    model or limit. Returns the exit status.
    """
    limits = limits or Limits()
    if threads is not None:
        set_num_threads(threads)
    models = load_models(specs, dtype, revision)
    check_limits(limits, models)
    metrics = Metrics()
    batcher = Batcher(limits.max_batch_tokens, limits.max_batch_size, limits.max_wait_ms, metrics.on_batch, enabled=batching)
    server = Server(models, limits, batcher, metrics, access or Access(allowed_hosts=loopback_hosts(host)))
    for model in models:  # through the batcher: its inference thread is the one that runs passes later
        warm_up(model)
    config = uvicorn.Config(
        server.app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=60,
        lifespan="on",
        http=header_deadline_protocol(limits.read_timeout),
    )
    # uvicorn re-raises the signal it stopped on once it is done; a SIGTERM that ended a graceful
    # shutdown is then ignored, so the process exits 0
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        log.warning("serving %s on http://%s:%d", ", ".join(f"{m.name} ({m.task})" for m in models), host, port)
        uvicorn.Server(config).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        batcher.close(timeout=60)
    return 0
