"""``npformer serve``'s command-line flags and their wiring into :func:`npformer.serving.server.serve`.
Importing this module needs no web framework: the ``server`` extra is imported when the command runs."""

from __future__ import annotations

import importlib
import os

from npformer.models.auto import DTYPES


def add_parser(sub, positive, verbosity) -> None:
    """``npformer serve``'s flags, on the CLI's subparsers (``positive`` and ``verbosity`` are its helpers)."""
    p = sub.add_parser(
        "serve",
        help="an HTTP server: TEI's routes and the Hugging Face Inference API, with dynamic "
        'batching (needs pip install ".[server]" in npformer\'s repository)',
    )
    p.add_argument(
        "--model",
        "-m",
        action="append",
        default=[],
        metavar="NAME=PATH_OR_ID[@task]",
        help="a model to serve (repeat for several); default: the built-in sentiment model as 'sentiment'",
    )
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--revision", help="Hub branch, tag or commit of the models")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--max-batch-tokens", type=positive("--max-batch-tokens"), default=16384, help="most padded tokens in one forward pass"
    )
    p.add_argument(
        "--max-batch-size", type=positive("--max-batch-size"), default=64, help="most rows (texts or windows) in one forward pass"
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=2.0,
        help="longest wait for more requests to join a forward pass, while others are being read",
    )
    p.add_argument(
        "--max-concurrent-requests",
        type=positive("--max-concurrent-requests"),
        default=512,
        help="requests answered at once; more get 429 at once",
    )
    p.add_argument(
        "--max-client-batch-size", type=positive("--max-client-batch-size"), default=32, help="most inputs in one request"
    )
    p.add_argument("--payload-limit", type=positive("--payload-limit"), default=2_000_000, help="largest request body, in bytes")
    p.add_argument(
        "--auto-truncate",
        action="store_true",
        help='cut over-long inputs on TEI\'s routes unless a request says "truncate": false',
    )
    p.add_argument(
        "--read-timeout",
        type=float,
        default=30.0,
        help="seconds a client has to send a request's headers (else the connection is closed) and its body (else 408)",
    )
    p.add_argument(
        "--explain-max-tokens",
        type=positive("--explain-max-tokens"),
        default=256,
        help="longest text POST /explain takes, in tokens (its answer grows with the square)",
    )
    p.add_argument(
        "--max-concurrent-explains",
        type=positive("--max-concurrent-explains"),
        default=2,
        help="explain requests answered at once; more get 429 at once",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("NPFORMER_API_KEY"),
        help="every route but /health needs 'Authorization: Bearer KEY' (default: $NPFORMER_API_KEY; none: no key)",
    )
    p.add_argument(
        "--allowed-hosts",
        default=None,
        help="comma-separated Host names answered, '*' for any (default: the loopback names when "
        "bound to the loopback, else any)",
    )
    p.add_argument(
        "--cors-allow-origin",
        default="",
        help="comma-separated origins whose web pages may read the answers, '*' for all (default: none)",
    )
    p.add_argument("--no-batching", action="store_true", help="one request per forward pass (for comparison)")
    p.add_argument("--threads", type=positive("--threads"), default=None, help="threads per forward pass")
    verbosity(p)


def run(args) -> int:
    """Run ``npformer serve`` with the parsed ``args``; returns the exit status."""
    server = importlib.import_module("npformer.serving.server")  # the [server] extra, imported only here
    limits = server.Limits(
        max_batch_tokens=args.max_batch_tokens,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_concurrent_requests=args.max_concurrent_requests,
        max_client_batch_size=args.max_client_batch_size,
        payload_limit=args.payload_limit,
        auto_truncate=args.auto_truncate,
        read_timeout=args.read_timeout,
        explain_max_tokens=args.explain_max_tokens,
        max_concurrent_explains=args.max_concurrent_explains,
    )
    names = [h.strip() for h in (args.allowed_hosts or "").split(",") if h.strip()]
    hosts = None if names == ["*"] else tuple(names) if names else server.loopback_hosts(args.host)
    origins = tuple(o.strip() for o in args.cors_allow_origin.split(",") if o.strip())
    access = server.Access(api_key=args.api_key or None, allowed_hosts=hosts, cors_allow_origin=origins)
    return server.serve(
        args.model,
        dtype=args.dtype,
        host=args.host,
        port=args.port,
        limits=limits,
        threads=args.threads,
        batching=not args.no_batching,
        revision=args.revision,
        log_level="warning" if args.quiet else "info",
        access=access,
    )
