"""Request and response shapes of ``npformer serve``, checked field by field.

Two protocols, both answered by the same pipelines:

* Hugging Face text-embeddings-inference (TEI, ``router/src/http/types.rs`` and ``server.rs``):
  ``/embed``, ``/embed_all``, ``/predict``, ``/rerank``, ``/similarity``, ``/tokenize``,
  ``/decode`` and the OpenAI-compatible ``/v1/embeddings``, with TEI's field names, defaults and
  error body ``{"error": str, "error_type": str}``.
* The Hugging Face Inference API (``POST /models/{name}``): ``{"inputs": ..., "parameters": {...}}``
  with each pipeline's own parameters and outputs (as Transformers' pipelines, see
  :func:`npformer.pipeline`).

Every check raises :class:`ApiError` with the status and a message naming the field.
"""

from __future__ import annotations

import base64
import math
from typing import Callable

import numpy as np

from npformer.pipelines.tasks import get_task

REQUIRED = object()


class ApiError(Exception):
    """An error answered as ``{"error": message, "error_type": error_type}`` with HTTP ``status``
    (422 ``Validation``, 404 ``NotFound``, 408 ``Timeout``, 413 ``PayloadTooLarge`` or ``Validation``
    for too many inputs, 429 ``Overloaded``, 503 ``Unhealthy``) and any extra response ``headers``."""

    def __init__(self, status: int, message: str, error_type: str = "Validation", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.error_type, self.headers = status, message, error_type, headers or {}


def invalid(message: str) -> ApiError:
    return ApiError(422, message)


def _field(name: str) -> str:
    """A client's field name as it can be shown on one line (control characters escaped)."""
    return name if name.isprintable() else repr(name)[1:-1]


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- field checks: (test, what the field must be)


def is_bool(v) -> bool:
    return isinstance(v, bool)


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_str(v) -> bool:
    return isinstance(v, str)


def is_str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) for s in v)


def is_str_or_list(v) -> bool:
    return isinstance(v, str) or is_str_list(v)


def is_list(v) -> bool:
    return isinstance(v, list)


def is_any(v) -> bool:
    """Any JSON value: the route checks its shape itself."""
    return True


KINDS: dict[Callable, str] = {
    is_bool: "a boolean",
    is_int: "an integer",
    is_number: "a number",
    is_str: "a string",
    is_str_list: "a list of strings",
    is_str_or_list: "a string or a list of strings",
    is_list: "a list",
    is_any: "a JSON value",
}
MAX_DEPTH = 32  # JSON nesting accepted in a request body (every route's shape is at most 5 deep)


def check_depth(value, limit: int = MAX_DEPTH) -> None:
    """:class:`ApiError` 422 when ``value`` (parsed JSON) nests lists and objects deeper than
    ``limit``; walked without recursion, so any depth is safe to check."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                raise invalid(f"the request body nests JSON deeper than {limit} levels")
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))


def get(body: dict, name: str, test: Callable, default=REQUIRED, where: str = ""):
    """``body[name]`` if it passes ``test`` (one of the ``is_*`` checks); ``default`` when absent or
    null; :class:`ApiError` 422 when required and absent, or of the wrong kind."""
    value = body.get(name)
    if value is None:
        if default is REQUIRED:
            raise invalid(f"missing field `{where}{name}`")
        return default
    if not test(value):
        raise invalid(f"`{where}{name}` must be {KINDS[test]}, got {_show(value)}")
    return value


def check_fields(body, allowed: set[str], where: str = "") -> dict:
    """``body`` if it is a JSON object whose keys are all in ``allowed``; else :class:`ApiError` 422."""
    if not isinstance(body, dict):
        raise invalid(
            f"the {'request body' if not where else '`' + where.rstrip('.') + '`'} must be a JSON object, "
            f"got {type(body).__name__ if body is not None else 'null'}"
        )
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid(f"unknown field `{where}{_field(unknown[0])}`; expected one of {sorted(allowed)}")
    return body


def texts(value, name: str, limit: int) -> tuple[list[str], bool]:
    """``(texts, was_single)`` from a str or a non-empty list of at most ``limit`` str; each text must
    hold more than whitespace (TEI: "`inputs` cannot be empty")."""
    if isinstance(value, str):
        items, single = [value], True
    elif isinstance(value, list):
        items, single = value, False
        if not items:
            raise invalid(f"`{name}` cannot be empty")
    else:
        raise invalid(f"`{name}` must be a string or a list of strings, got {_show(value)}")
    check_batch_size(len(items), limit)
    for i, t in enumerate(items):
        where = name if single else f"{name}[{i}]"
        if not isinstance(t, str):
            what = "token ids (send text)" if isinstance(t, (int, list)) else type(t).__name__
            raise invalid(f"`{where}` must be a string, got {what}")
        if not t.strip():
            raise invalid(f"`{where}` cannot be empty")
    return list(items), single


def check_batch_size(n: int, limit: int) -> None:
    """:class:`ApiError` 413 (as TEI) when a request holds more than ``limit`` inputs."""
    if n > limit:
        raise ApiError(413, f"batch size {n} > maximum allowed batch size {limit} (--max-client-batch-size)")


def predict_inputs(value, limit: int) -> tuple[list[tuple[str, str | None]], bool]:
    """TEI's ``/predict`` inputs: a string, a pair ``[a, b]``, or a batch ``[[a], [a, b], ...]``;
    returns ``(pairs, was_single)``."""
    if isinstance(value, str):
        return [(texts(value, "inputs", limit)[0][0], None)], True
    if isinstance(value, list):
        check_batch_size(len(value), limit)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if len(value) > 2:
            raise invalid(
                "`inputs` must be a string, a pair of strings [string, string] or a batch "
                f"[[string], [string, string], ...]; got a list of {len(value)} strings"
            )
        items, single = [value], True
    elif isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        items, single = value, False
    else:
        raise invalid(
            "`inputs` must be a string, a pair of strings [string, string] or a batch "
            f"[[string], [string, string], ...]; got {_show(value)}"
        )
    check_batch_size(len(items), limit)
    pairs = []
    for i, item in enumerate(items):
        where = "inputs" if single else f"inputs[{i}]"
        if not 1 <= len(item) <= 2 or not all(isinstance(s, str) for s in item):
            raise invalid(f"`{where}` must be [string] or [string, string], got {_show(item)}")
        for j, s in enumerate(item):
            if not s.strip():
                raise invalid(f"`{where}[{j}]` cannot be empty")
        pairs.append((item[0], item[1] if len(item) == 2 else None))
    return pairs, single


def truncation(body: dict, auto_truncate: bool, where: str = "") -> tuple[bool, str]:
    """TEI's ``truncate`` (default ``--auto-truncate``) and ``truncation_direction`` (``"Right"``,
    the default, keeps the start of a text; ``"Left"`` its end) as ``(truncate, side)``."""
    direction = get(body, "truncation_direction", is_str, "Right", where)
    if direction not in ("Right", "Left", "right", "left"):
        raise invalid(f'`{where}truncation_direction` must be "Right" or "Left", got {_show(direction)}')
    return get(body, "truncate", is_bool, auto_truncate, where), direction.lower()


def is_token_ids(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(t, int) and not isinstance(t, bool) for t in v)


def embedding_inputs(value, name: str, limit: int) -> tuple[list, bool]:
    """TEI's and OpenAI's embedding inputs: a string, a list of token ids, or a non-empty batch of
    at most ``limit`` of them (strings and id lists may mix); returns ``(items, was_single)``."""
    if isinstance(value, str) or is_token_ids(value):
        items, single = [value], True
    elif value == []:
        raise invalid(f"`{name}` cannot be empty")
    elif isinstance(value, list):
        items, single = value, False
    else:
        raise invalid(f"`{name}` must be a string, a list of token ids or a non-empty list of them, got {_show(value)}")
    check_batch_size(len(items), limit)
    for i, item in enumerate(items):
        where = name if single else f"{name}[{i}]"
        if is_token_ids(item):
            if min(item) < 0:
                raise invalid(f"`{where}` holds token id {min(item)}; token ids are integers >= 0")
        elif not isinstance(item, str):
            raise invalid(f"`{where}` must be a string or a non-empty list of token ids, got {_show(item)}")
        elif not item.strip():
            raise invalid(f"`{where}` cannot be empty")
    return list(items), single


def floats(array) -> list:
    """Nested lists of Python floats from an array (what JSON carries)."""
    return np.asarray(array, dtype=np.float32).tolist()


def base64_floats(vector) -> str:
    """OpenAI's ``encoding_format: "base64"``: the little-endian float32 bytes, base64-encoded."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


# ---- the Inference API's parameters per task: name -> check


def _is_top_k(v) -> bool:
    return is_int(v) and v >= 1


KINDS[_is_top_k] = "an integer >= 1"
# a task record's parameter kinds (npformer.pipelines.tasks) -> their checks
CHECKS = {
    "bool": is_bool,
    "int": is_int,
    "positive_int": _is_top_k,
    "number": is_number,
    "str": is_str,
    "str_list": is_str_list,
    "str_or_list": is_str_or_list,
}


def parameters(task: str, value) -> dict:
    """The ``parameters`` object of an Inference API request, checked against the task record's."""
    if value is None:
        return {}
    table = {name: CHECKS[kind] for name, kind in get_task(task).parameters.items()}
    check_fields(value, set(table), "parameters.")
    return {name: get(value, name, test, None, "parameters.") for name, test in table.items() if value.get(name) is not None}


def qa_inputs(value, limit: int) -> tuple[list[tuple[str, str]], bool]:
    """Question answering's ``inputs``: ``{"question", "context"}`` or a list of them."""
    single = isinstance(value, dict)
    items = [value] if single else value
    if not isinstance(items, list) or not items:
        raise invalid(
            f'`inputs` must be {{"question": string, "context": string}} or a non-empty list of them, got {_show(value)}'
        )
    check_batch_size(len(items), limit)
    pairs = []
    for i, item in enumerate(items):
        where = "inputs." if single else f"inputs[{i}]."
        check_fields(item, {"question", "context"}, where)
        question, context = get(item, "question", is_str, where=where), get(item, "context", is_str, where=where)
        for name, text in (("question", question), ("context", context)):
            if not text.strip():
                raise invalid(f"`{where}{name}` cannot be empty")
        pairs.append((question, context))
    return pairs, single
