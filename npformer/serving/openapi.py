"""``GET /openapi.json`` and ``GET /docs``: the OpenAPI 3.1 description of every route of
``npformer serve``, and a page that shows it (self-contained: no script or style from elsewhere,
so it works on a box without internet).

The request bodies are those :mod:`npformer.serving.routes` checks field by field (TEI's names
and defaults, ``router/src/http/types.rs``); ``tests/test_openapi.py`` holds the two together:
every route the server answers is described, and every described field is accepted.
"""

from __future__ import annotations

import html

STRING = {"type": "string"}
BOOL = {"type": "boolean"}
IDS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
TEXTS = {"oneOf": [STRING, {"type": "array", "items": STRING, "minItems": 1}]}
EMBED_INPUTS = {
    "oneOf": [STRING, IDS, {"type": "array", "items": {"oneOf": [STRING, IDS]}, "minItems": 1}],
    "description": "a text, token ids (the whole input, special tokens included), or a batch of them",
}
TRUNCATION = {
    "truncate": {**BOOL, "description": "cut inputs longer than the model's maximum (default: --auto-truncate)"},
    "truncation_direction": {
        "type": "string",
        "enum": ["Right", "Left"],
        "default": "Right",
        "description": "Right keeps the start of a text, Left its end",
    },
}
PAIR = {"type": "array", "items": STRING, "minItems": 1, "maxItems": 2}
ERROR = {"type": "object", "required": ["error", "error_type"], "properties": {"error": STRING, "error_type": STRING}}


def _body(required: list[str], **properties) -> dict:
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": False}


# (method, path) -> (summary, request body schema or None, answer)
ROUTES = {
    ("POST", "/embed"): (
        "One pooled vector per input (TEI)",
        _body(["inputs"], inputs=EMBED_INPUTS, normalize={**BOOL, "default": True}, prompt_name=STRING, **TRUNCATION),
        "[[float]]: one vector per input",
    ),
    ("POST", "/embed_all"): (
        "Every token's last hidden state per input (TEI)",
        _body(["inputs"], inputs=EMBED_INPUTS, prompt_name=STRING, **TRUNCATION),
        "[[[float]]]: tokens x hidden_size per input",
    ),
    ("POST", "/embed_sparse"): (
        "One SPLADE vector per input: its nonzero entries (TEI)",
        _body(["inputs"], inputs=TEXTS, **TRUNCATION),
        '[[{"index", "value"}]]: per input, by ascending index',
    ),
    ("POST", "/predict"): (
        "Every label's score, best first, per text or text pair (TEI)",
        _body(
            ["inputs"],
            inputs={"oneOf": [STRING, PAIR, {"type": "array", "items": PAIR, "minItems": 1}]},
            raw_scores={**BOOL, "default": False},
            **TRUNCATION,
        ),
        '[{"label", "score"}] (a list of them for a batch)',
    ),
    ("POST", "/rerank"): (
        "Texts by decreasing relevance to a query: a cross-encoder (TEI)",
        _body(
            ["query", "texts"],
            query=STRING,
            texts={"type": "array", "items": STRING, "minItems": 1},
            raw_scores={**BOOL, "default": False},
            return_text={**BOOL, "default": False},
            **TRUNCATION,
        ),
        '[{"index", "score", "text"?}]',
    ),
    ("POST", "/similarity"): (
        "Cosine similarity of a sentence with each of others (TEI)",
        _body(
            ["inputs"],
            inputs=_body(
                ["source_sentence", "sentences"],
                source_sentence=STRING,
                sentences={"type": "array", "items": STRING, "minItems": 1},
            ),
            parameters=_body([], prompt_name=STRING, **TRUNCATION),
        ),
        "[float]: one score per sentence",
    ),
    ("POST", "/tokenize"): (
        "Tokens of each text with character offsets (TEI)",
        _body(["inputs"], inputs=TEXTS, add_special_tokens={**BOOL, "default": True}, prompt_name=STRING),
        '[[{"id", "text", "special", "start", "stop"}]]',
    ),
    ("POST", "/decode"): (
        "Text of token ids (TEI)",
        _body(
            ["ids"],
            ids={"oneOf": [IDS, {"type": "array", "items": IDS, "minItems": 1}]},
            skip_special_tokens={**BOOL, "default": True},
        ),
        "[string]",
    ),
    ("POST", "/v1/embeddings"): (
        "OpenAI's embeddings API",
        _body(
            ["input"],
            input=EMBED_INPUTS,
            model=STRING,
            user=STRING,
            encoding_format={"type": "string", "enum": ["float", "base64"], "default": "float"},
            dimensions={"type": "integer", "minimum": 1},
        ),
        '{"object": "list", "data": [{"embedding", "index"}], "model", "usage"}',
    ),
    ("GET", "/v1/models"): ("The served models, as OpenAI lists them", None, '{"object": "list", "data": [{"id"}]}'),
    ("POST", "/models/{name}"): (
        "The Hugging Face Inference API: the named model's pipeline",
        _body(["inputs"], inputs={"description": "the task's inputs"}, parameters={"type": "object"}, options={"type": "object"}),
        "the pipeline's own output",
    ),
    ("GET", "/models"): ("/info of every served model", None, "[object]"),
    ("GET", "/"): ("The explain page", None, "text/html"),
    ("POST", "/"): (
        "Where Hugging Face's InferenceClient posts every task: the first model (or ?model=NAME)",
        _body(
            ["inputs"],
            inputs={"description": "the task's inputs"},
            parameters={"type": "object"},
            options={"type": "object"},
            normalize=BOOL,
            prompt_name=STRING,
            **TRUNCATION,
        ),
        "as /embed for an embedding model, else as /models/{name}",
    ),
    ("POST", "/explain/{name}"): (
        "Attention, attributions and predictions for one text",
        _body(["inputs"], inputs=STRING, context=STRING),
        "the explain page's data",
    ),
    ("GET", "/info"): ("The model (?model=NAME, else the first) and the server's limits, in TEI's shape", None, "object"),
    ("GET", "/health"): ("200 while the inference thread runs, 503 otherwise", None, "empty"),
    ("GET", "/metrics"): ("Prometheus metrics", None, "text/plain"),
    ("GET", "/docs"): ("This description as a page", None, "text/html"),
    ("GET", "/openapi.json"): ("This description (OpenAPI 3.1)", None, "object"),
}


def openapi(version: str, models: list[dict]) -> dict:
    """The OpenAPI 3.1 document of the server: ``version`` is npformer's, ``models`` the served
    models' ``{"name", "task"}`` (listed in the description)."""
    paths: dict = {}
    for (method, path), (summary, body, answer) in ROUTES.items():
        operation: dict = {
            "summary": summary,
            "responses": {
                "200": {"description": answer},
                "4XX": {
                    "description": "the request's error, naming the field",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
        }
        if body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        if "{name}" in path:
            operation["parameters"] = [{"name": "name", "in": "path", "required": True, "schema": STRING}]
        elif method == "POST" or path == "/info":
            operation["parameters"] = [
                {
                    "name": "model",
                    "in": "query",
                    "required": False,
                    "schema": STRING,
                    "description": "the served model to use (default: the first that fits)",
                }
            ]
        paths.setdefault(path, {})[method.lower()] = operation
    served = ", ".join(f"{m['name']} ({m['task']})" for m in models)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "npformer serve",
            "version": version,
            "description": f"Text Embeddings Inference's routes, OpenAI's embeddings and the Hugging Face "
            f"Inference API on npformer. Served: {served}.",
        },
        "paths": paths,
        "components": {"schemas": {"Error": ERROR}},
    }


def docs_page(document: dict) -> str:
    """``GET /docs``: the routes of ``document`` (:func:`openapi`) with their request fields."""
    rows = []
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            fields = ""
            if body is not None:
                required = set(body.get("required", []))
                fields = (
                    "<ul>"
                    + "".join(
                        f"<li><code>{html.escape(name)}</code>{' (required)' if name in required else ''}"
                        f"{': ' + html.escape(spec['description']) if 'description' in spec else ''}</li>"
                        for name, spec in body["properties"].items()
                    )
                    + "</ul>"
                )
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op['summary'])}{fields}</td>"
                f"<td>{html.escape(op['responses']['200']['description'])}</td></tr>"
            )
    info = document["info"]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(info['title'])}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{vertical-align:top;padding:.3em .8em;"
        "border-bottom:1px solid #ddd}</style></head><body>"
        f"<h1>{html.escape(info['title'])} {html.escape(info['version'])}</h1>"
        f"<p>{html.escape(info['description'])} The machine-readable description is "
        "<a href='/openapi.json'>/openapi.json</a>.</p>"
        "<table><tr><th>Method</th><th>Path</th><th>What</th><th>Answer</th></tr>" + "".join(rows) + "</table></body></html>"
    )
