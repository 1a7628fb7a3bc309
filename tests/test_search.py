"""sentence-transformers' surface: ``encode`` (normalize, precisions, token embeddings, progress bar),
``similarity``, ``semantic_search`` and ``quantize_embeddings`` against sentence-transformers itself
(5.1, the test-only reference) on the real all-MiniLM-L6-v2 and STS-B sentences; the CLI's
``npformer search`` and ``npformer embed --format npy``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import read_stsb
from helpers import assert_close
from npformer.cli import main

import npformer

import sentence_transformers as st

TOL = 1e-4


@pytest.fixture(scope="module")
def models(minilm_dir):
    return (
        npformer.pipeline("sentence-embeddings", minilm_dir, batch_size=32),
        st.SentenceTransformer(str(minilm_dir), device="cpu"),
    )


@pytest.fixture(scope="module")
def sentences():
    s1, s2, _ = read_stsb()
    return s1[:60] + s2[:60]


@pytest.mark.parametrize("normalize", [False, True])
def test_encode_matches_sentence_transformers(models, sentences, normalize):
    ours, ref = models
    got = ours.encode(sentences, normalize_embeddings=normalize, batch_size=16)
    expected = ref.encode(sentences, normalize_embeddings=normalize, batch_size=16)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert_close(got, expected, TOL, "encode")
    one = ours.encode(sentences[0])
    assert one.shape == (384,)
    assert_close(one, expected[0], TOL, "encode(str)")


def test_token_embeddings_match(models, sentences):
    ours, ref = models
    got = ours.encode(sentences[:8], output_value="token_embeddings")
    expected = ref.encode(sentences[:8], output_value="token_embeddings", convert_to_numpy=True)
    assert len(got) == 8
    for g, e in zip(got, expected, strict=True):
        assert_close(g, np.asarray(e), TOL, "token embeddings")


@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
def test_quantize_embeddings_matches(models, sentences, precision):
    """Same function on the same float embeddings: identical output; encode(precision=...) is that
    function applied to encode()'s floats."""
    ours, _ = models
    floats = ours.encode(sentences)
    from sentence_transformers.quantization import quantize_embeddings as reference

    got = npformer.quantize_embeddings(floats, precision)
    expected = reference(floats, precision)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(ours.encode(sentences, precision=precision), got)


def test_similarity_and_semantic_search_match(models, sentences):
    ours, ref = models
    queries, corpus = ours.encode(sentences[:5]), ours.encode(sentences[5:])
    assert_close(npformer.similarity(queries, corpus), st.util.cos_sim(queries, corpus).numpy(), 1e-6, "cos_sim")
    got = npformer.semantic_search(queries, corpus, top_k=7)
    expected = st.util.semantic_search(queries, corpus, top_k=7)
    reference_sims = st.util.cos_sim(queries, corpus).numpy()
    for q, (g, e) in enumerate(zip(got, expected, strict=True)):
        # the same scores, best first, each the reference similarity of the id it names; ids may
        # swap only between scores equal within 1e-6 (STS-B repeats sentences)
        assert_close([h["score"] for h in g], [h["score"] for h in e], 1e-6, "hit scores")
        assert_close([h["score"] for h in g], [reference_sims[q, h["corpus_id"]] for h in g], 1e-6, "id scores")
        for a, b in zip(g, e):
            assert a["corpus_id"] == b["corpus_id"] or abs(a["score"] - b["score"]) <= 1e-6
    assert npformer.semantic_search(queries[0], corpus, top_k=500)[0][-1]["corpus_id"] in range(len(corpus))
    with pytest.raises(ValueError, match="top_k"):
        npformer.semantic_search(queries, corpus, top_k=0)


def test_any_iterable_of_str(models, sentences):
    ours, _ = models
    expected = ours.encode(sentences[:6])

    class Column:  # what a pandas Series or a dataset column looks like to Python
        def __iter__(self):
            return iter(sentences[:6])

    makers = (lambda: np.array(sentences[:6]), lambda: (s for s in sentences[:6]), lambda: tuple(sentences[:6]), Column)
    for make in makers:
        np.testing.assert_array_equal(ours.encode(make()), expected)
        np.testing.assert_array_equal(ours(make()), expected)
    with pytest.raises(ValueError, match="text 1 must be a str"):
        ours.encode(["fine", 3])


def test_progress_bar_counts_every_text(models, sentences, capsys):
    ours, _ = models
    ours.encode(sentences[:40], show_progress_bar=True, batch_size=8)
    assert "40/40" in capsys.readouterr().err


def test_cli_search(minilm_dir, tmp_path, capsys, sentences):
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("sentence\tid\n" + "".join(f"{s}\t{i}\n" for i, s in enumerate(sentences[:40])))
    saved = tmp_path / "corpus.npy"
    query = sentences[3]
    assert (
        main(
            [
                "search",
                "--model",
                str(minilm_dir),
                "--corpus",
                str(corpus),
                "--column",
                "sentence",
                "--top-k",
                "3",
                "--save-embeddings",
                str(saved),
                query,
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1 and rows[0]["query"] == query
    hits = rows[0]["hits"]
    assert hits[0]["corpus_id"] == 3 and hits[0]["text"] == query and hits[0]["line"] == 5
    pipe = npformer.pipeline("sentence-embeddings", minilm_dir)
    expected = npformer.semantic_search(pipe.encode(query), pipe.encode(sentences[:40]), top_k=3)[0]
    assert [h["corpus_id"] for h in hits] == [h["corpus_id"] for h in expected]
    # the saved corpus embeddings are reused, and must match the corpus
    assert np.load(saved).shape == (40, 384)
    assert (
        main(
            [
                "search",
                "--model",
                str(minilm_dir),
                "--corpus",
                str(corpus),
                "--column",
                "sentence",
                "--embeddings",
                str(saved),
                query,
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["hits"][0]["corpus_id"] == 3
    np.save(tmp_path / "short.npy", np.zeros((5, 384), np.float32))
    assert (
        main(
            [
                "search",
                "--model",
                str(minilm_dir),
                "--corpus",
                str(corpus),
                "--column",
                "sentence",
                "--embeddings",
                str(tmp_path / "short.npy"),
                query,
            ]
        )
        == 2
    )
    assert "5 rows but the corpus has 40 records" in capsys.readouterr().err


def test_cli_embed_npy(minilm_dir, tmp_path, capsys, sentences):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(sentences[:10]) + "\n")
    out = tmp_path / "emb.npy"
    assert main(["embed", "--model", str(minilm_dir), "-i", str(src), "--format", "npy", "-o", str(out)]) == 0
    pipe = npformer.pipeline("sentence-embeddings", minilm_dir)
    np.testing.assert_allclose(np.load(out), pipe.encode(sentences[:10]), atol=1e-6)
    assert main(["embed", "--model", str(minilm_dir), "-i", str(src), "--format", "npy", "-o", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["embed", "--model", str(minilm_dir), "-i", str(src), "--format", "npy"]) == 2
    assert "--format npy needs --output" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 5}\n')
    assert main(["embed", "--model", str(minilm_dir), "-i", str(bad), "--format", "npy", "-o", str(tmp_path / "b.npy")]) == 1
    assert "line 2" in capsys.readouterr().err and not (tmp_path / "b.npy").exists()


# ---- Transformers habits (issue 12, part) ---------------------------------------------------------


def test_outputs_index_like_transformers(tmp_path):
    import torch

    from helpers import make_checkpoint, random_batch

    ref = make_checkpoint(
        tmp_path,
        "bert",
        "sequence",
        vocab="bert-base-uncased",
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=40,
    )
    ids, mask, types = random_batch(np.random.default_rng(0), ref.config.vocab_size, 2, 9)
    with torch.no_grad():
        expected = ref.bert(torch.tensor(ids), torch.tensor(mask), torch.tensor(types), output_hidden_states=True)
        expected_logits = ref(torch.tensor(ids), torch.tensor(mask), torch.tensor(types))
    encoder = npformer.AutoModel.from_pretrained(tmp_path)
    out = encoder(ids, mask, types, output_hidden_states=True)
    assert list(out.keys()) == list(expected.keys()) == list(out)
    assert_close(out[0], expected[0].numpy(), TOL, "out[0]")
    assert_close(out["pooler_output"], expected["pooler_output"].numpy(), TOL, "out['pooler_output']")
    assert len(out.to_tuple()) == len(expected.to_tuple())
    with pytest.raises(KeyError):
        out["attentions"]  # not requested: absent, as in Transformers
    task = npformer.AutoModelForSequenceClassification.from_pretrained(tmp_path)(ids, mask, types)
    assert_close(task[0], expected_logits[0].numpy(), TOL, "logits as out[0]")


def test_threads_device_and_version(tmp_path, capsys, monkeypatch):
    import numba

    from helpers import make_sentiment_checkpoint
    from npformer.kernels import ops

    d = make_sentiment_checkpoint(tmp_path)
    texts = ["a fine film", "an awful one", "so so"]
    seen = []
    attention = ops.attention
    monkeypatch.setattr(ops, "attention", lambda *a: seen.append(numba.get_num_threads()) or attention(*a))
    default = npformer.pipeline("sentiment-analysis", d, device="cpu")(texts)
    try:
        npformer.set_num_threads(1)
        assert npformer.get_num_threads() == 1
        assert npformer.pipeline("sentiment-analysis", d)(texts) == default
        assert seen[0] == numba.config.NUMBA_NUM_THREADS and seen[-1] == 1  # in force inside the pass
        with pytest.raises(ValueError, match="threads must be an integer from 1 to"):
            npformer.set_num_threads(0)
    finally:
        npformer.set_num_threads(__import__("numba").config.NUMBA_NUM_THREADS)
    with pytest.raises(ValueError, match="CPU only"):
        npformer.pipeline("sentiment-analysis", d, device="cuda:0")
    assert main(["sentiment", "-m", str(d), "--threads", "1", "a fine film"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"npformer {npformer.__version__}"


def test_cli_zero_shot_labels_and_template(minilm_dir, capsys):
    text = "the pasta needs more salt and garlic"
    argv = [
        "zero-shot",
        "--model",
        str(minilm_dir),
        "--label",
        "food, cooking",
        "--label",
        "sports",
        "--hypothesis-template",
        "This text is about {}.",
        "--multi-label",
        text,
    ]
    assert main(argv) == 0
    row = json.loads(capsys.readouterr().out)
    pipe = npformer.pipeline("zero-shot-classification", minilm_dir)
    expected = pipe(text, ["food, cooking", "sports"], hypothesis_template="This text is about {}.", multi_label=True)
    assert row["labels"] == expected["labels"] == ["food, cooking", "sports"]
    assert row["scores"] == pytest.approx(expected["scores"], abs=1e-6)
    assert -1 <= row["scores"][1] < row["scores"][0] <= 1
    assert main(["zero-shot", "--model", str(minilm_dir), "--label", "x", "--hypothesis-template", "no slot", text]) == 2
    assert "must contain {}" in capsys.readouterr().err


def test_task_names_and_revision(tmp_path, capsys, monkeypatch):
    """Pipeline task names and CLI command names are interchangeable; --revision reaches the Hub."""
    import huggingface_hub

    from helpers import make_sentiment_checkpoint

    d = make_sentiment_checkpoint(tmp_path / "m")
    expected = npformer.pipeline("sentiment-analysis", d, backend="numpy")("a fine film")  # the CLI's for one text
    assert npformer.pipeline("sentiment", d, backend="numpy")("a fine film") == expected
    outputs = []
    for command in ("sentiment", "text-classification", "sentiment-analysis"):
        assert main([command, "-m", str(d), "a fine film"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1] == outputs[2] == {"text": "a fine film", **expected[0]}
    asked = []

    def fake_download(repo_id, revision=None, **kwargs):
        asked.append((repo_id, revision))
        return str(d)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert main(["sentiment", "--model", "acme/tiny-sentiment", "--revision", "v1.2", "a fine film"]) == 0
    assert main(["info", "acme/tiny-sentiment", "--revision", "abc123"]) == 0
    assert asked == [("acme/tiny-sentiment", "v1.2"), ("acme/tiny-sentiment", "abc123")]


def test_pipeline_from_loaded_model_and_tokenizer(tmp_path):
    from helpers import make_sentiment_checkpoint

    d = make_sentiment_checkpoint(tmp_path)
    expected = npformer.pipeline("sentiment", d)(["a fine film", "awful"])
    model = npformer.AutoModelForSequenceClassification.from_pretrained(d)
    assert npformer.pipeline("sentiment", model=model, tokenizer=d)(["a fine film", "awful"]) == expected
    tok = npformer.Tokenizer.from_pretrained(d)
    assert npformer.pipeline("sentiment", model=model, tokenizer=tok)(["a fine film", "awful"]) == expected
    with pytest.raises(ValueError, match="needs tokenizer="):
        npformer.pipeline("sentiment", model=model)
    with pytest.raises(ValueError, match="needs a SequenceClassifier or FeatureHeadClassifier model"):
        npformer.pipeline("sentiment", model=npformer.AutoModel.from_pretrained(d), tokenizer=tok)
    short = npformer.pipeline("sentiment", d)(["a fine film " * 20], max_length=8)
    assert short == npformer.pipeline("sentiment", d)(["a fine film a fine film"])  # 6 tokens + [CLS] [SEP]
    with pytest.raises(ValueError, match="max_length must be an integer from 2 to"):
        npformer.pipeline("sentiment", d)("x", max_length=100_000)


def test_semantic_search_in_chunks_equals_one_matrix(models, sentences):
    """``query_chunk_size`` / ``corpus_chunk_size`` (sentence-transformers' arguments) bound the
    score matrix held at once; the hits are those of the whole matrix, and of sentence-transformers
    with the same chunks."""
    ours, _ = models
    queries, corpus = ours.encode(sentences[:13]), ours.encode(sentences[13:])
    whole = npformer.semantic_search(queries, corpus, top_k=9)
    for q_chunk, c_chunk in ((1, 1), (4, 10), (5, 7), (100, 500_000)):
        got = npformer.semantic_search(queries, corpus, top_k=9, query_chunk_size=q_chunk, corpus_chunk_size=c_chunk)
        for g, w in zip(got, whole, strict=True):  # BLAS rounds other shapes in the last bit: ties may swap
            assert_close([h["score"] for h in g], [h["score"] for h in w], 1e-6, "chunked scores")
            assert all(a["corpus_id"] == b["corpus_id"] or abs(a["score"] - b["score"]) <= 1e-6 for a, b in zip(g, w))
        expected = st.util.semantic_search(queries, corpus, top_k=9, query_chunk_size=q_chunk, corpus_chunk_size=c_chunk)
        for g, e in zip(got, expected, strict=True):
            assert_close([h["score"] for h in g], [h["score"] for h in e], 1e-6, "hit scores")
    dot = npformer.semantic_search(queries, corpus, top_k=3, score_function=lambda a, b: a @ b.T)
    assert dot[0][0]["corpus_id"] == int(np.argmax(queries[0] @ corpus.T))
    with pytest.raises(ValueError, match="corpus_chunk_size must be an integer >= 1"):
        npformer.semantic_search(queries, corpus, corpus_chunk_size=0)
