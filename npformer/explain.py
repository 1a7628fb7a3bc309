"""``npformer explain``: one self-contained HTML page showing what a model did with one text.

The page shows three things:

* the WordPiece tokens, with their character offsets;
* the prediction: label scores, entities highlighted in the text (score, per-token entropy), the
  QA answer highlighted in its context (top-k spans), or the fill-mask candidates;
* the attention: a layers x heads grid of small heatmaps, where a click opens that head's
  token-to-token view (as bertviz's head view draws it), and the norm of every token's hidden
  state after each layer.

The page is one file, with inline CSS and JS and no network. :func:`explain_data` builds its data
(JSON) from :func:`npformer.tracing.trace` and the pipeline's own output. The server
(``npformer serve``) serves the same page at ``GET /``; there the page fetches the data from
``POST /explain/{model}``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from npformer.pipelines.tasks import TASKS as REGISTRY
from npformer.tracing import trace

PAGE = Path(__file__).with_name("explain.html")


def explainable() -> tuple[str, ...]:
    """The tasks the page can show: those whose record has an ``explain`` view."""
    return tuple(name for name, task in REGISTRY.items() if task.explain is not None)


def explain_data(pipe, text: str, *, context: str | None = None, top_k: int = 3, model_name: str = "") -> dict:
    """The page's data for ``text`` (the question, for QA, with ``context``): tokens, prediction,
    attention ``[layer][head][query][key]`` (3 decimals) and hidden-state norms ``[layer][token]``.
    Raises ``ValueError`` for a task the page does not show, an empty text, or QA without context."""
    task = type(pipe).task  # the canonical name (pipe.task is the name the pipeline was asked by)
    view = REGISTRY[task].explain if task in REGISTRY else None
    if view is None:
        raise ValueError(f"explain shows {', '.join(explainable())}; this pipeline is {task!r}")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the text is empty")
    if view.needs_context and not (isinstance(context, str) and context.strip()):
        raise ValueError(f"{task} needs a context")
    pair = context if view.needs_context else None
    enc = pipe.tokenizer.encode_batch(
        [(text, pair)], truncation="only_second" if pair else "longest_first", max_length=pipe.max_length, overflow=False
    )[0]
    t = trace(pipe.model, text, pair, tokenizer=pipe.tokenizer, max_length=pipe.max_length)
    if len(t.tokens) != len(enc.ids):
        raise ValueError(f"the text and question do not fit one window of {pipe.max_length} tokens")
    tokens = [
        {"token": tok, "start": a, "end": b, "special": s is None, "segment": s}
        for tok, (a, b), s in zip(enc.tokens, enc.offsets, enc.sequence_ids)
    ]
    attentions = [np.round(a[0], 3).tolist() for a in t.attentions()]
    norms = [np.round(np.linalg.norm(h[0], axis=-1), 3).tolist() for h in t.hidden_states()]
    return {
        "task": task,
        "model": model_name,
        "text": text,
        "context": context,
        "tokens": tokens,
        "prediction": view.prediction(pipe, text, context, top_k),
        "layers": len(attentions),
        "heads": len(attentions[0]) if attentions else 0,
        "attentions": attentions,
        "norms": norms,
    }


def render_page(data: dict | None, title: str = "npformer explain", models: list[dict] | None = None) -> str:
    """The HTML page: with ``data``, a static page for one text; with ``models`` (the server's
    served models, ``[{"name", "task"}]``) a form that asks ``POST /explain/{name}`` instead."""
    template = PAGE.read_text(encoding="utf-8")
    # inside <script>, "<!--" followed by "<script" changes how the HTML parser finds the closing tag
    # (the page went blank); JSON escapes keep every <, > and & out of the markup
    payload = json.dumps({"data": data, "models": models})
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return template.replace("__TITLE__", html.escape(title)).replace("__PAYLOAD__", payload)


def write_page(path: str | Path, data: dict, overwrite: bool = False) -> Path:
    """Write the static page to ``path`` (refusing to replace a file unless ``overwrite``)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another --output or pass --overwrite")
    path.write_text(render_page(data, f"npformer explain: {data['task']}"), encoding="utf-8")
    return path
