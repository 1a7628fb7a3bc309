"""What each route computes: a checked request body in, a JSON value out (run in a request thread).

TEI's routes (text-embeddings-inference ``router/src/http/server.rs``) and the Hugging Face
Inference API's ``POST /models/{name}``. Each function takes the :class:`Served` model, the
request body (already parsed JSON) and the server's :class:`Limits`, and raises
:class:`~npformer.serving.protocol.ApiError` (or ``ValueError``, answered 422) for bad input.
"""

from __future__ import annotations

from dataclasses import dataclass

from npformer.explain import explain_data
from npformer.output import to_json
from npformer.pipelines import Pipeline
from npformer.pipelines.base import InputTooLong
from npformer.pipelines.tasks import get_task
from npformer.search import similarity
from npformer.serving.protocol import (
    ApiError,
    base64_floats,
    check_batch_size,
    check_fields,
    embedding_inputs,
    floats,
    get,
    invalid,
    is_any,
    is_bool,
    is_int,
    is_list,
    is_str,
    parameters,
    predict_inputs,
    qa_inputs,
    texts,
    truncation,
)

EMBEDDING_TASKS = ("sentence-embeddings",)
SPARSE_TASKS = ("sparse-embeddings",)
CLASSIFIER_TASKS = ("text-classification",)


@dataclass
class Limits:
    """The server's limits (see ``npformer serve --help``): tokens and rows per forward pass,
    wait for a batch (ms), requests at once, inputs per request, request body (bytes), whether
    over-long inputs are cut, seconds to receive a request's headers and body, and the explain
    route's own limits (tokens of its text, requests at once): its answer grows with the square
    of the tokens (every head's attention matrix)."""

    max_batch_tokens: int = 16_384
    max_batch_size: int = 64
    max_wait_ms: float = 2.0
    max_concurrent_requests: int = 512
    max_client_batch_size: int = 32
    payload_limit: int = 2_000_000
    auto_truncate: bool = False
    read_timeout: float = 30.0
    explain_max_tokens: int = 256
    max_concurrent_explains: int = 2


@dataclass
class Served:
    """One served model: its ``name`` in URLs, its task, the pipeline answering it, where it was
    loaded from (``model_id``), ``dtype`` and the Hub commit when known."""

    name: str
    task: str
    pipe: Pipeline
    model_id: str
    dtype: str
    model_sha: str | None = None

    @property
    def is_reranker(self) -> bool:
        return self.task in CLASSIFIER_TASKS and self.pipe.config.num_labels == 1


# ---- TEI routes


def _too_long(e: InputTooLong):
    """TEI's wording for an over-long input: its ``truncate`` field and the server's flag."""
    return invalid(
        f"`inputs[{e.index}]` is longer than the model's maximum of {e.max_length} tokens; send "
        '"truncate": true to cut it, or start the server with --auto-truncate'
    )


def predict(model: Served, body, limits: Limits):
    """``/predict``: ``[{"score", "label"}]`` for every label, best first (a list of them for a batch)."""
    check_fields(body, {"inputs", "truncate", "truncation_direction", "raw_scores"})
    pairs, single = predict_inputs(get(body, "inputs", is_any), limits.max_client_batch_size)
    truncate, side = truncation(body, limits.auto_truncate)
    raw = get(body, "raw_scores", is_bool, False)
    items = [a if b is None else {"text": a, "text_pair": b} for a, b in pairs]
    try:
        out = model.pipe.with_truncation_side(side)(
            items, top_k=None, function_to_apply="none" if raw else None, truncation=truncate
        )
    except InputTooLong as e:
        raise _too_long(e) from None
    return out[0] if single else out


def rerank(model: Served, body, limits: Limits):
    """``/rerank``: ``[{"index", "score"(, "text")}]`` by decreasing relevance of each text to the query
    (a cross-encoder: a classifier with one label; sigmoid of its logit unless ``raw_scores``)."""
    check_fields(body, {"query", "texts", "truncate", "truncation_direction", "raw_scores", "return_text"})
    if not model.is_reranker:
        raise invalid(
            f"model {model.name!r} is a classifier with {model.pipe.config.num_labels} labels, not a "
            f"reranker (one label); /rerank needs a cross-encoder"
        )
    query, _ = texts(get(body, "query", is_str), "query", 1)
    docs, _ = texts(get(body, "texts", is_list), "texts", limits.max_client_batch_size)
    truncate, side = truncation(body, limits.auto_truncate)
    raw = get(body, "raw_scores", is_bool, False)
    try:
        out = model.pipe.with_truncation_side(side)(
            [{"text": query[0], "text_pair": t} for t in docs],
            top_k=None,
            function_to_apply="none" if raw else "sigmoid",
            truncation=truncate,
        )
    except InputTooLong as e:
        raise _too_long(e) from None
    ranks = [{"index": i, "score": scores[0]["score"]} for i, scores in enumerate(out)]
    if get(body, "return_text", is_bool, False):
        for rank in ranks:
            rank["text"] = docs[rank["index"]]
    return sorted(ranks, key=lambda r: -r["score"])


def _encode(model: Served, body, limits: Limits, fields: set[str], **kwargs):
    check_fields(body, fields)
    prompt_name = get(body, "prompt_name", is_str, None)
    if prompt_name is not None and prompt_name not in model.pipe.prompts:
        raise invalid(f"`prompt_name` {prompt_name!r} is not one of model {model.name!r}'s prompts {sorted(model.pipe.prompts)}")
    items, _ = embedding_inputs(get(body, "inputs", is_any), "inputs", limits.max_client_batch_size)
    return _embed_items(model, items, truncation(body, limits.auto_truncate), prompt_name, **kwargs)


def _embed_items(model: Served, items: list, truncate_side: tuple[bool, str], prompt_name: str | None = None, **kwargs):
    """Texts and token-id lists (:func:`embedding_inputs`) through the model's embedding pipeline."""
    truncate, side = truncate_side
    pipe = model.pipe.with_truncation_side(side)
    try:
        encodings = pipe.tokenize_inputs(items, truncate, prompt_name)
    except InputTooLong as e:
        raise _too_long(e) from None
    except ValueError as e:  # a token id outside the vocabulary
        raise invalid(f"`inputs`: {e}") from None
    return pipe.embed_encodings(encodings, **kwargs)


def embed(model: Served, body, limits: Limits):
    """``/embed``: one pooled vector per input, L2-normalized unless ``"normalize": false``."""
    fields = {"inputs", "truncate", "truncation_direction", "normalize", "prompt_name"}
    normalize = get(body, "normalize", is_bool, True) if isinstance(body, dict) else True
    return floats(_encode(model, body, limits, fields, normalize_embeddings=normalize))


def embed_sparse(model: Served, body, limits: Limits):
    """``/embed_sparse``: one SPLADE vector per input as TEI gives it, ``[{"index", "value"}, ...]``
    (its nonzero entries by ascending vocabulary index); always a list of them."""
    check_fields(body, {"inputs", "truncate", "truncation_direction"})
    items, _ = texts(get(body, "inputs", is_any), "inputs", limits.max_client_batch_size)
    truncate, side = truncation(body, limits.auto_truncate)
    try:
        return to_json(model.pipe.with_truncation_side(side)(items, truncation=truncate))
    except InputTooLong as e:
        raise _too_long(e) from None


def embed_all(model: Served, body, limits: Limits):
    """``/embed_all``: every token's last hidden state ``[input][token][hidden_size]`` (special tokens included)."""
    fields = {"inputs", "truncate", "truncation_direction", "prompt_name"}
    return [floats(s) for s in _encode(model, body, limits, fields, output_value="token_embeddings")]


def similarity_route(model: Served, body, limits: Limits):
    """``/similarity``: cosine similarity of ``source_sentence`` with each of ``sentences``."""
    check_fields(body, {"inputs", "parameters"})
    inputs = check_fields(get(body, "inputs", is_any), {"source_sentence", "sentences"}, "inputs.")
    params = check_fields(body.get("parameters") or {}, {"truncate", "truncation_direction", "prompt_name"}, "parameters.")
    source, _ = texts(get(inputs, "source_sentence", is_str, where="inputs."), "inputs.source_sentence", 1)
    sentences, _ = texts(get(inputs, "sentences", is_list, where="inputs."), "inputs.sentences", limits.max_client_batch_size)
    vectors = _embed_items(model, source + sentences, truncation(params, limits.auto_truncate, "parameters."))
    return similarity(vectors[:1], vectors[1:])[0].astype(float).tolist()


def openai_embeddings(model: Served, body, limits: Limits, timings):
    """``/v1/embeddings`` (OpenAI's embeddings API): normalized vectors, float or base64."""
    check_fields(body, {"input", "model", "user", "encoding_format", "dimensions"})
    items, _ = embedding_inputs(get(body, "input", is_any), "input", limits.max_client_batch_size)
    fmt = get(body, "encoding_format", is_str, "float")
    if fmt not in ("float", "base64"):
        raise invalid(f"`encoding_format` must be 'float' or 'base64', got {fmt!r}")
    full = model.pipe.get_sentence_embedding_dimension()
    dimensions = get(body, "dimensions", is_int, full)
    if not 1 <= dimensions <= full:
        raise invalid(f"`dimensions` must be from 1 to {full} (model {model.name!r}'s size), got {dimensions}")
    # fewer dimensions: the first ones, normalized again (Matryoshka, as OpenAI's text-embedding-3 models)
    vectors = _embed_items(
        model,
        items,
        (limits.auto_truncate, "right"),
        normalize_embeddings=True,
        truncate_dim=dimensions if dimensions < full else None,
    )
    data = [
        {"object": "embedding", "embedding": base64_floats(v) if fmt == "base64" else floats(v), "index": i}
        for i, v in enumerate(vectors)
    ]
    tokens = timings.tokens
    return {"object": "list", "data": data, "model": model.name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def tokenize(model: Served, body, limits: Limits):
    """``/tokenize``: per input, ``[{"id", "text", "special", "start", "stop"}]`` (character offsets;
    special tokens have null offsets and their own text)."""
    check_fields(body, {"inputs", "add_special_tokens", "prompt_name"})
    items, _ = texts(get(body, "inputs", is_any), "inputs", limits.max_client_batch_size)
    special = get(body, "add_special_tokens", is_bool, True)
    out = []
    for text in items:
        enc = model.pipe.tokenizer.encode(text, add_special_tokens=special)
        out.append(
            [
                {
                    "id": i,
                    "text": token if s else text[a:b],
                    "special": bool(s),
                    "start": None if s else a,
                    "stop": None if s else b,
                }
                for i, token, (a, b), s in zip(enc.ids, enc.tokens, enc.offsets, enc.special_tokens_mask or [0] * len(enc.ids))
            ]
        )
    return out


def decode(model: Served, body, limits: Limits):
    """``/decode``: the text of each id sequence (``skip_special_tokens`` true by default)."""
    check_fields(body, {"ids", "skip_special_tokens"})
    ids = get(body, "ids", is_list)
    batch = ids if ids and all(isinstance(row, list) for row in ids) else [ids]
    check_batch_size(len(batch), limits.max_client_batch_size)
    for i, row in enumerate(batch):
        if not row or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in row):
            raise invalid(f"`ids{'' if batch is not ids else f'[{i}]'}` must be a non-empty list of token ids (integers >= 0)")
    skip = get(body, "skip_special_tokens", is_bool, True)
    return [model.pipe.tokenizer.decode(row, skip_special_tokens=skip) for row in batch]


# ---- the Inference API: POST /models/{name}


def inference(model: Served, body, limits: Limits, client_shapes: bool = False):
    """``{"inputs", "parameters", "options"}`` -> the pipeline's own output for the model's task;
    zero-shot classification in the Inference API's shape, ``[{"label", "score"}]`` best first per
    input (with ``client_shapes``, Transformers' ``{"sequence", "labels", "scores"}``, which
    huggingface_hub's ``InferenceClient`` reads from ``POST /``)."""
    check_fields(body, {"inputs", "parameters", "options"})
    params = parameters(model.task, body.get("parameters"))
    inputs = get(body, "inputs", is_any)
    pipe, task, limit = model.pipe, model.task, limits.max_client_batch_size
    if task == "question-answering":
        pairs, single = qa_inputs(inputs, limit)
        if single:
            return to_json(pipe(question=pairs[0][0], context=pairs[0][1], **params))
        return to_json(pipe(question=[q for q, _ in pairs], context=[c for _, c in pairs], **params))
    if task == "sentence-embeddings" and isinstance(inputs, dict):  # the Inference API's sentence-similarity
        return similarity_route(model, {"inputs": inputs, "parameters": {"truncate": params.get("truncation", True)}}, limits)
    if task == "text-classification":
        items = _classification_inputs(inputs, limit)
        return to_json(pipe(items, **params))
    items, single = texts(inputs, "inputs", limit)
    if task == "zero-shot-classification" and "candidate_labels" not in params:
        raise invalid("missing field `parameters.candidate_labels`")
    if task == "sentence-embeddings":
        return floats(pipe.encode(items[0] if single else items, **params))
    out = to_json(pipe(items[0] if single else items, **params))
    if task == "zero-shot-classification" and not client_shapes:
        shaped = [
            [{"label": label, "score": score} for label, score in zip(o["labels"], o["scores"])]
            for o in (out if isinstance(out, list) else [out])
        ]
        return shaped[0] if single else shaped
    return out


def root(model: Served, body, limits: Limits):
    """``POST /``, the route Hugging Face's ``InferenceClient`` posts every task to (TEI answers it
    with its one model): the Inference API's ``{"inputs", "parameters"}``, with the client's
    habits. An embedding model answers as TEI's ``/embed`` (one vector per input, always a list of
    them; ``normalize``, ``truncate``, ``truncation_direction``, ``prompt_name`` at the top level or
    in ``parameters``), unless ``inputs`` is a sentence-similarity object; a classifier gives every
    label, best first, per input (a list of them even for one text), unless ``top_k`` says fewer;
    other tasks answer as ``POST /models/{name}``."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if model.task in EMBEDDING_TASKS and isinstance(body, dict) and not isinstance(inputs, dict):
        params = body.get("parameters") or {}
        check_fields(params, {"normalize", "truncate", "truncation_direction", "prompt_name"}, "parameters.")
        return embed(model, {**{k: v for k, v in body.items() if k != "parameters"}, **params}, limits)
    if model.task in CLASSIFIER_TASKS and isinstance(body, dict):
        check_fields(body, {"inputs", "parameters", "options"})
        params = {"top_k": None, **parameters(model.task, body.get("parameters"))}
        out = model.pipe(_classification_inputs(get(body, "inputs", is_any), limits.max_client_batch_size), **params)
        return to_json(out if isinstance(inputs, list) else [out])
    return inference(model, body, limits, client_shapes=True)


def _classification_inputs(inputs, limit: int):
    """Text classification's inputs: a str, ``{"text", "text_pair"}``, or a list of them."""
    items = inputs if isinstance(inputs, list) else [inputs]
    if not items:
        raise invalid("`inputs` cannot be empty")
    check_batch_size(len(items), limit)
    for i, item in enumerate(items):
        where = "inputs" if not isinstance(inputs, list) else f"inputs[{i}]"
        if isinstance(item, dict):
            check_fields(item, {"text", "text_pair"}, where + ".")
            texts(get(item, "text", is_str, where=where + "."), where + ".text", 1)
            if item.get("text_pair") is not None:
                texts(get(item, "text_pair", is_str, where=where + "."), where + ".text_pair", 1)
        else:
            texts(item, where, 1)
    return inputs


def explain_route(model: Served, body, limits: Limits) -> dict:
    """``POST /explain/{name}``: ``{"inputs": text, "context": text (QA)}`` -> the explain page's data."""
    check_fields(body, {"inputs", "context"})
    text, _ = texts(get(body, "inputs", is_str), "inputs", 1)
    context = get(body, "context", is_str, None)
    tokenizer = model.pipe.tokenizer
    tokens = len(tokenizer.encode(text[0], add_special_tokens=True)) + (len(tokenizer.encode(context)) + 1 if context else 0)
    if tokens > limits.explain_max_tokens:
        raise invalid(f"the text has {tokens} tokens; /explain shows at most {limits.explain_max_tokens} (--explain-max-tokens)")
    return explain_data(model.pipe, text[0], context=context, model_name=model.name)


def model_info(model: Served, limits: Limits, version: str) -> dict:
    """``/info`` for one model, in TEI's shape (``model_type`` is ``classifier``, ``reranker`` or
    ``embedding``; npformer adds ``task`` and what it outputs)."""
    config = model.pipe.config
    if model.task in CLASSIFIER_TASKS:
        labels = {
            "id2label": {str(i): model.pipe.label(i) for i in range(config.num_labels)},
            "label2id": {model.pipe.label(i): i for i in range(config.num_labels)},
        }
        model_type = {"reranker" if model.is_reranker else "classifier": labels}
    elif model.task in EMBEDDING_TASKS:
        model_type = {"embedding": {"pooling": "+".join(model.pipe.pooling.modes)}}
    elif model.task in SPARSE_TASKS:
        model_type = {"embedding": {"pooling": "splade"}}
    else:
        model_type = {model.task.replace("-", "_"): {}}
    return {
        "model_id": model.model_id,
        "model_sha": model.model_sha,
        "model_dtype": model.dtype,
        "model_type": model_type,
        "name": model.name,
        "task": model.task,
        "output": get_task(model.task).output,
        "max_concurrent_requests": limits.max_concurrent_requests,
        "max_input_length": model.pipe.max_length,
        "max_batch_tokens": limits.max_batch_tokens,
        "max_batch_requests": limits.max_batch_size,
        "max_client_batch_size": limits.max_client_batch_size,
        "auto_truncate": limits.auto_truncate,
        "tokenization_workers": 1,
        "version": version,
        "sha": None,
        "docker_label": None,
    }


def require(model: Served, tasks: tuple[str, ...], route: str) -> Served:
    if model.task not in tasks:
        raise ApiError(422, f"model {model.name!r} serves {model.task}; {route} needs a {' or '.join(tasks)} model")
    return model
