"""The real clients, unmodified, against ``npformer serve`` on 127.0.0.1: huggingface_hub's
``InferenceClient`` (``model=URL`` and ``base_url=URL`` post every task to ``/``) and OpenAI's client
(``/v1/embeddings`` with ``dimensions``, ``/v1/models``, an unknown model). References:
sentence-transformers and the in-process pipelines (issue "Every habit")."""

from __future__ import annotations

import json

import numpy as np
import pytest

import npformer
from helpers import make_checkpoint
from test_server import NER_LABELS, Client, free_port, start, stop

import huggingface_hub
import openai
import sentence_transformers as st

TEXTS = ["a man is eating food.", "the plane takes off at noon", "a gorgeous, witty film"]


@pytest.fixture(scope="module")
def served(minilm_dir, tmp_path_factory):
    ner = tmp_path_factory.mktemp("ner")
    make_checkpoint(
        ner,
        "bert",
        "token",
        vocab="bert-base-cased",
        id2label=NER_LABELS,
        label2id={v: k for k, v in NER_LABELS.items()},
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=40,
    )
    nli = tmp_path_factory.mktemp("nli")
    labels = {0: "contradiction", 1: "neutral", 2: "entailment"}
    make_checkpoint(
        nli,
        "bert",
        "sequence",
        vocab="bert-base-uncased",
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=40,
    )
    port = free_port()
    proc = start(
        [
            "--model",
            "sentiment=builtin:sentiment",
            "--model",
            f"minilm={minilm_dir}",
            "--model",
            f"ner={ner}",
            "--model",
            f"zeroshot={minilm_dir}@zero-shot",
            "--model",
            f"nli={nli}@zero-shot",
        ],
        port,
    )
    yield f"http://127.0.0.1:{port}", {"minilm": minilm_dir, "ner": ner, "nli": nli}
    assert stop(proc) == 0


@pytest.fixture
def online(monkeypatch):
    """The tests run with HF_HUB_OFFLINE=1, under which huggingface_hub's client refuses every URL,
    even 127.0.0.1; the server here is local, so the client may talk to it."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    huggingface_hub.utils.reset_sessions()
    yield
    huggingface_hub.utils.reset_sessions()


def test_inference_client_posts_to_root(served, online):
    base, _ = served
    sentiment = npformer.pipeline("sentiment")
    for client in (huggingface_hub.InferenceClient(model=base), huggingface_hub.InferenceClient(base_url=base)):
        got = client.text_classification(TEXTS[2])
        expected = sentiment(TEXTS[2], top_k=None)
        assert [g.label for g in got] == [e["label"] for e in expected]
        np.testing.assert_allclose([g.score for g in got], [e["score"] for e in expected], atol=1e-6)
        top = client.text_classification(TEXTS[2], top_k=1)
        assert [t.label for t in top] == [expected[0]["label"]]


def test_inference_client_embeddings_and_similarity(served, online, minilm_dir):
    base, _ = served
    client = huggingface_hub.InferenceClient(model=f"{base}/?model=minilm")
    reference = st.SentenceTransformer(str(minilm_dir), device="cpu")
    vectors = client.feature_extraction(TEXTS[0], normalize=True, truncate=True)
    assert vectors.shape == (1, 384)  # TEI's /embed: a list of vectors, also for one text
    np.testing.assert_allclose(vectors[0], reference.encode(TEXTS[0], normalize_embeddings=True), atol=1e-5)
    scores = client.sentence_similarity(TEXTS[0], other_sentences=TEXTS[1:])
    np.testing.assert_allclose(
        scores, reference.similarity(reference.encode(TEXTS[:1]), reference.encode(TEXTS[1:])).numpy()[0], atol=1e-5
    )


def test_inference_client_token_classification(served, online):
    base, dirs = served
    client = huggingface_hub.InferenceClient(model=f"{base}/?model=ner")
    text = "George Washington went to Washington ."
    got = client.token_classification(text, aggregation_strategy="simple")
    expected = npformer.pipeline("ner", dirs["ner"])(text, aggregation_strategy="simple")
    assert [(g.entity_group, g.start, g.end) for g in got] == [(e["entity_group"], e["start"], e["end"]) for e in expected]


def test_inference_client_zero_shot_classification(served, online, minilm_dir):
    base, _ = served
    client = huggingface_hub.InferenceClient(model=f"{base}/?model=zeroshot")
    labels = ["food", "travel", "cinema"]
    expected = npformer.pipeline("zero-shot", minilm_dir)(TEXTS[0], labels)
    for multi_label in (False, True):
        got = client.zero_shot_classification(TEXTS[0], labels, multi_label=multi_label)
        ours = npformer.pipeline("zero-shot", minilm_dir)(TEXTS[0], labels, multi_label=multi_label)
        assert [g.label for g in got] == ours["labels"]
        np.testing.assert_allclose([g.score for g in got], ours["scores"], atol=1e-6)
    assert expected["labels"][0] == "food"


def test_inference_client_zero_shot_on_an_nli_model(served, online):
    """An NLI model served for zero-shot: the client's labels and scores equal Transformers'
    zero-shot-classification pipeline (NLI over the hypothesis template)."""
    import transformers

    base, paths = served
    client = huggingface_hub.InferenceClient(model=f"{base}/?model=nli")
    reference = transformers.pipeline("zero-shot-classification", model=str(paths["nli"]), device="cpu")
    labels = ["food", "travel", "cinema"]
    for multi_label in (False, True):
        got = client.zero_shot_classification(
            TEXTS[0], labels, multi_label=multi_label, hypothesis_template="This text is about {}."
        )
        expected = reference(TEXTS[0], labels, multi_label=multi_label, hypothesis_template="This text is about {}.")
        assert [g.label for g in got] == expected["labels"]
        np.testing.assert_allclose([g.score for g in got], expected["scores"], rtol=0, atol=1e-4)


def test_openai_client(served, minilm_dir):
    base, _ = served
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
    reference = st.SentenceTransformer(str(minilm_dir), device="cpu")
    out = client.embeddings.create(input=TEXTS, model="minilm")
    np.testing.assert_allclose([d.embedding for d in out.data], reference.encode(TEXTS, normalize_embeddings=True), atol=1e-5)
    short = client.embeddings.create(input=TEXTS, model="minilm", dimensions=64)
    small = st.SentenceTransformer(str(minilm_dir), device="cpu", truncate_dim=64)
    np.testing.assert_allclose([d.embedding for d in short.data], small.encode(TEXTS, normalize_embeddings=True), atol=1e-5)
    assert {m.id for m in client.models.list()} == {"sentiment", "minilm", "ner", "zeroshot", "nli"}
    with pytest.raises(openai.NotFoundError, match="model 'text-embedding-3-small' is not served"):
        client.embeddings.create(input=TEXTS, model="text-embedding-3-small")
    with pytest.raises(openai.UnprocessableEntityError, match="needs a sentence-embeddings model"):
        client.embeddings.create(input=TEXTS, model="sentiment")


def test_truncation_direction_left_and_token_id_inputs(served, online, minilm_dir):
    """TEI's truncation_direction "Left" keeps the end of an over-long text (sentence-transformers
    with its tokenizer's truncation_side "left" is the reference); token ids are taken as the whole
    input (TEI's and OpenAI's id inputs), so the reference tokenizer's ids give its embeddings."""
    base, _ = served
    reference = st.SentenceTransformer(str(minilm_dir), device="cpu")
    long_text = "the start is dull . " * 80 + "but the ending of this film is wonderful"
    client = huggingface_hub.InferenceClient(model=f"{base}/?model=minilm")
    for side in ("Left", "Right"):
        got = client.feature_extraction(long_text, truncate=True, truncation_direction=side)
        reference.tokenizer.truncation_side = side.lower()
        np.testing.assert_allclose(got[0], reference.encode(long_text, normalize_embeddings=True), atol=1e-5)
    reference.tokenizer.truncation_side = "right"
    ids = [reference.tokenizer(t)["input_ids"] for t in TEXTS]
    expected = reference.encode(TEXTS, normalize_embeddings=True)
    tei = Client(int(base.rsplit(":", 1)[1]))
    np.testing.assert_allclose(tei.ok("/embed?model=minilm", {"inputs": ids}), expected, atol=1e-5)
    mixed = tei.ok("/embed?model=minilm", {"inputs": [TEXTS[0], ids[1]]})  # a batch may mix texts and ids
    np.testing.assert_allclose(mixed, expected[:2], atol=1e-5)
    np.testing.assert_allclose(tei.ok("/embed?model=minilm", {"inputs": ids[2]})[0], expected[2], atol=1e-5)
    status, body, _ = tei.call("/embed?model=minilm", {"inputs": [[101, 10**6, 102]]})
    assert status == 422 and "token id 1000000 is outside the model's vocabulary" in body["error"]
    status, body, _ = tei.call("/embed?model=minilm", {"inputs": [101] * 600})
    assert status == 422 and "`inputs[0]` is longer than the model's maximum of 256 tokens" in body["error"]
    status, body, _ = tei.call("/embed?model=minilm", {"inputs": "a", "truncation_direction": "Up"})
    assert status == 422 and 'truncation_direction` must be "Right" or "Left"' in body["error"]
    openai_client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
    out = openai_client.embeddings.create(input=ids, model="minilm")
    np.testing.assert_allclose([d.embedding for d in out.data], expected, atol=1e-5)
    one = openai_client.embeddings.create(input=ids[0], model="minilm")
    np.testing.assert_allclose(one.data[0].embedding, expected[0], atol=1e-5)


def test_openapi_describes_every_route_and_field(served):
    """GET /openapi.json lists every route the server answers, each POST body's properties are
    exactly the fields the route accepts (its "unknown field" answer lists them), and GET /docs
    shows them."""
    base, _ = served
    tei = Client(int(base.rsplit(":", 1)[1]))
    document = tei.ok("/openapi.json")
    assert document["openapi"] == "3.1.0"
    served_routes = {(m, r.path) for r in tei_routes() for m in r.methods - {"HEAD"}}
    described = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert described == served_routes
    checked = 0
    for path, ops in document["paths"].items():
        schema = ops.get("post", {}).get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        if schema is None or path == "/embed_sparse":  # no SPLADE model here: tests/test_retrieval_surfaces.py
            continue
        url = path.replace("{name}", "sentiment" if path.startswith("/explain") else "minilm") + (
            "?model=sentiment" if path in ("/predict", "/") else ""
        )
        status, body, _ = tei.call(url, {"no_such_field": 1})
        assert status == 422, (path, body)
        message = body["error"]["message"] if path == "/v1/embeddings" else body["error"]  # OpenAI's error shape
        assert "expected one of " in message, (path, body)
        listed = message.split("expected one of ", 1)[1]
        accepted = set(json.loads(listed.replace("'", '"')))
        assert accepted <= set(schema["properties"]), (path, accepted - set(schema["properties"]))
        if path != "/":  # POST / accepts, per model, a subset of what it describes
            assert accepted == set(schema["properties"]), path
        checked += 1
    assert checked >= 11
    page = tei.call("/docs")[1]
    assert "/v1/embeddings" in page and "truncation_direction" in page and "<script" not in page


def tei_routes():
    """The routes of an in-process server (no model needed to list them)."""
    from npformer.serving.app import Metrics, Server
    from npformer.serving.batcher import Batcher
    from npformer.serving.routes import Limits

    batcher = Batcher(16_384, 64, 2.0)
    try:
        return list(Server([], Limits(), batcher, Metrics()).routes.routes)
    finally:
        batcher.close(timeout=5)
