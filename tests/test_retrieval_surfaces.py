"""The retrieval tasks through every surface, each equal to the Python classes (which
tests/test_sparse_encoder.py, tests/test_colbert.py and tests/test_cross_encoder.py hold to
sentence-transformers and PyLate): the CLI (``sparse-embed``, ``colbert``, ``search`` over sparse
and per-token corpora with their vectors saved and read back, ``rerank``, ``info``), ``npformer
serve`` (TEI's ``/embed_sparse``, ``POST /models/{name}``, ``/info``, the task read from the
checkpoint) and ``npformer batch`` on Dask (Parquet list-of-struct and nested-list columns; NLI
zero-shot and cross-encoder scores)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import read_sst2
from helpers import make_checkpoint
from test_server import Client, free_port, start, stop

import npformer
from npformer.cli import main
from npformer.colbert import colbert_scores

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, init_std=0.05)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from pylate import models as pylate_models
    from sentence_transformers.sparse_encoder import SparseEncoder, models as sparse_models

    root = tmp_path_factory.mktemp("retrieval")
    make_checkpoint(root / "mlm", "bert", "mlm", vocab="bert-base-uncased", **SMALL)
    SparseEncoder(modules=[sparse_models.MLMTransformer(str(root / "mlm")), sparse_models.SpladePooling()], device="cpu").save(
        str(root / "splade")
    )
    make_checkpoint(root / "base", "bert", vocab="bert-base-uncased", **SMALL)
    pylate_models.ColBERT(str(root / "base"), device="cpu", embedding_size=16).save(str(root / "colbert"))
    make_checkpoint(root / "rerank", "bert", "sequence", vocab="bert-base-uncased", num_labels=1, **SMALL)
    nli = {0: "contradiction", 1: "neutral", 2: "entailment"}
    make_checkpoint(
        root / "nli",
        "bert",
        "sequence",
        vocab="bert-base-uncased",
        id2label=nli,
        label2id={v: k for k, v in nli.items()},
        **SMALL,
    )
    return {name: root / name for name in ("splade", "colbert", "rerank", "nli")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    texts = read_sst2("dev")[0][:40]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path, texts


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_cli_sparse_and_per_token_vectors(models, corpus, capsys):
    texts = corpus[1][:3]
    assert main(["sparse-embed", "-m", str(models["splade"]), "--max-active-dims", "8", *texts]) == 0
    expected = npformer.SparseEncoder(models["splade"]).encode(texts, max_active_dims=8)
    for row, vector in zip(lines(capsys.readouterr().out), expected, strict=True):
        assert [e["index"] for e in row["embedding"]] == vector.indices.tolist()
        np.testing.assert_allclose([e["value"] for e in row["embedding"]], vector.values, rtol=0, atol=1e-6)
    colbert = npformer.ColBERT(models["colbert"])
    for flag, is_query in (([], False), (["--queries"], True)):
        assert main(["colbert", "-m", str(models["colbert"]), *flag, *texts]) == 0
        for row, vectors in zip(lines(capsys.readouterr().out), colbert.encode(texts, is_query=is_query), strict=True):
            np.testing.assert_allclose(np.array(row["embeddings"]), vectors, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["splade", "colbert"])
def test_cli_search_over_sparse_and_per_token_corpora(models, corpus, tmp_path, capsys, name):
    path, texts = corpus
    queries = texts[:2]
    if name == "splade":
        encoder = npformer.SparseEncoder(models[name])
        scores = encoder.similarity(encoder.encode(queries), encoder.encode(texts))
    else:
        encoder = npformer.ColBERT(models[name])
        scores = colbert_scores(encoder.encode(queries, is_query=True), encoder.encode(texts, is_query=False))
    saved = tmp_path / "corpus.npz"
    args = ["search", "-m", str(models[name]), "--corpus", str(path), "--top-k", "3", *queries]
    assert main([*args, "--save-embeddings", str(saved)]) == 0
    first = lines(capsys.readouterr().out)
    for row, expected in zip(first, scores, strict=True):
        assert [h["corpus_id"] for h in row["hits"]] == list(np.argsort(-expected, kind="stable")[:3])
        np.testing.assert_allclose([h["score"] for h in row["hits"]], np.sort(expected)[::-1][:3], rtol=1e-5, atol=1e-4)
        assert all(h["text"] == texts[h["corpus_id"]] and h["line"] == h["corpus_id"] + 1 for h in row["hits"])
    assert main([*args, "--embeddings", str(saved)]) == 0
    assert lines(capsys.readouterr().out) == first  # the saved vectors give the same hits
    other = {"splade": "colbert", "colbert": "splade"}[name]
    assert main(["search", "-m", str(models[other]), "--corpus", str(path), "--embeddings", str(saved), "q"]) == 2
    assert "does not hold" in capsys.readouterr().err


def test_cli_rerank_and_info(models, corpus, capsys):
    path, texts = corpus
    assert main(["rerank", "-m", str(models["rerank"]), "--corpus", str(path), "--top-k", "4", texts[5]]) == 0
    row = lines(capsys.readouterr().out)[0]
    expected = npformer.CrossEncoder(models["rerank"]).rank(texts[5], texts, top_k=4)
    assert [h["corpus_id"] for h in row["hits"]] == [e["corpus_id"] for e in expected]
    np.testing.assert_allclose([h["score"] for h in row["hits"]], [e["score"] for e in expected], rtol=0, atol=1e-6)
    for name, task in (("splade", "sparse-embeddings"), ("colbert", "late-interaction"), ("rerank", "text-classification")):
        assert main(["info", str(models[name])]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["task"] == task and info["output"] == npformer.pipelines.get_task(task).output


def test_served_sparse_and_per_token_vectors(models, corpus):
    texts = corpus[1][:4]
    port = free_port()
    proc = start(["--model", f"splade={models['splade']}", "--model", f"colbert={models['colbert']}"], port)
    try:
        client = Client(port)
        vectors = npformer.SparseEncoder(models["splade"]).encode(texts)
        answer = client.ok("/embed_sparse?model=splade", {"inputs": texts})
        for got, vector in zip(answer, vectors, strict=True):
            assert [e["index"] for e in got] == vector.indices.tolist()
            np.testing.assert_allclose([e["value"] for e in got], vector.values, rtol=0, atol=1e-6)
        assert len(client.ok("/embed_sparse?model=splade", {"inputs": texts[0]})) == 1  # always a list of vectors
        status, error, _ = client.call("/embed_sparse?model=splade", {"no_such_field": 1})
        described = client.ok("/openapi.json")["paths"]["/embed_sparse"]["post"]["requestBody"]
        fields = set(described["content"]["application/json"]["schema"]["properties"])
        assert status == 422 and set(json.loads(error["error"].split("expected one of ", 1)[1].replace("'", '"'))) == fields
        status, error, _ = client.call("/embed_sparse?model=colbert", {"inputs": texts[0]})
        assert status == 422 and "sparse-embeddings" in error["error"]
        queries = npformer.ColBERT(models["colbert"]).encode(texts, is_query=True)
        got = client.ok("/models/colbert", {"inputs": texts, "parameters": {"is_query": True}})
        for row, expected in zip(got, queries, strict=True):
            np.testing.assert_allclose(np.array(row), expected, rtol=0, atol=1e-6)
        info = client.ok("/info?model=splade")
        assert info["task"] == "sparse-embeddings" and info["model_type"] == {"embedding": {"pooling": "splade"}}
        assert client.ok("/info?model=colbert")["task"] == "late-interaction"
    finally:
        assert stop(proc) == 0


def test_batch_zero_shot_and_rerank(models, corpus, tmp_path):
    """``npformer batch zero-shot`` on an NLI model and ``rerank`` (query and document columns) on a
    cross-encoder: every row as the in-process classes give it."""
    from npformer import distributed

    texts = corpus[1][:20]
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        "".join(json.dumps({"text": t, "context": texts[-1 - i]}) + "\n" for i, t in enumerate(texts)), encoding="utf-8"
    )
    labels = ("film", "food", "travel")
    summary = distributed.run(
        distributed.Job("zero-shot", [str(path)], tmp_path / "zs", model=str(models["nli"]), labels=labels),
        distributed.Cluster(workers=1),
        progress=False,
    )
    assert summary.rows == len(texts) and summary.errors == 0
    rows = sorted(read_parts(tmp_path / "zs"), key=lambda r: r["row"])
    expected = npformer.pipeline("zero-shot-classification", models["nli"])(texts, list(labels))
    assert [r["labels"] for r in rows] == [e["labels"] for e in expected]
    np.testing.assert_allclose([r["scores"] for r in rows], [e["scores"] for e in expected], rtol=0, atol=1e-6)
    summary = distributed.run(
        distributed.Job("rerank", [str(path)], tmp_path / "rr", model=str(models["rerank"])),
        distributed.Cluster(workers=1),
        progress=False,
    )
    rows = sorted(read_parts(tmp_path / "rr"), key=lambda r: r["row"])
    scores = npformer.CrossEncoder(models["rerank"]).predict([(t, texts[-1 - i]) for i, t in enumerate(texts)])
    np.testing.assert_allclose([r["score"] for r in rows], scores, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="zero-shot needs candidate labels"):
        distributed.run(distributed.Job("zero-shot", [str(path)], tmp_path / "none", model=str(models["nli"])), progress=False)


def read_parts(directory):
    import pyarrow.parquet as pq

    return pq.read_table(directory).to_pylist()


def test_batch_writes_sparse_and_per_token_columns(models, corpus, tmp_path):
    from npformer import distributed

    texts = corpus[1]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    expected = {
        "sparse-embed": npformer.SparseEncoder(models["splade"]).encode(texts),
        "colbert": npformer.ColBERT(models["colbert"]).encode(texts, is_query=False),
    }
    for task, name, column in (("sparse-embed", "splade", "embedding"), ("colbert", "colbert", "embeddings")):
        summary = distributed.run(
            distributed.Job(task, [str(path)], tmp_path / task, model=str(models[name]), partition_rows=15),
            distributed.Cluster(workers=1),
            progress=False,
        )
        assert summary.rows == len(texts) and summary.errors == 0
        rows = sorted(read_parts(tmp_path / task), key=lambda r: r["row"])
        for row, vector in zip(rows, expected[task], strict=True):
            if task == "sparse-embed":
                assert [e["index"] for e in row[column]] == vector.indices.tolist()
                np.testing.assert_allclose([e["value"] for e in row[column]], vector.values, rtol=0, atol=1e-6)
            else:
                np.testing.assert_allclose(np.array(row[column]), vector, rtol=0, atol=1e-6)
