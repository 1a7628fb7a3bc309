"""sentence-transformers' habits on npformer's sentence-embedding pipeline, each compared with
sentence-transformers 5.1 loading the same all-MiniLM-L6-v2 folder (embeddings within 1e-5):
prompts from ``config_sentence_transformers.json`` (``prompt_name``, ``default_prompt_name``,
``encode_query`` / ``encode_document``), ``truncate_dim`` at load and per call,
``get_sentence_embedding_dimension``, a settable ``max_seq_length``, the configured
``similarity_fn_name`` and ``similarity_pairwise``, ``convert_to_numpy`` / ``convert_to_tensor`` /
``device`` (issue "Every habit"). Modules npformer does not run are refused by name."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import npformer
from conftest import read_stsb

import sentence_transformers as st

TOL = 1e-5


@pytest.fixture(scope="module")
def prompted(minilm_dir, tmp_path_factory):
    directory = tmp_path_factory.mktemp("prompted") / "minilm"
    shutil.copytree(minilm_dir, directory)
    config = json.loads((directory / "config_sentence_transformers.json").read_text())
    config.update(
        prompts={"query": "query: ", "passage": "passage: ", "topic": "topic of this text: "},
        default_prompt_name="topic",
        similarity_fn_name="dot",
    )
    (directory / "config_sentence_transformers.json").write_text(json.dumps(config))
    return directory


def sentences(n: int = 12) -> list[str]:
    return read_stsb()[0][:n]


def test_prompts(prompted):
    ours, theirs = npformer.pipeline("sentence-embeddings", prompted), st.SentenceTransformer(str(prompted), device="cpu")
    for kwargs in ({}, {"prompt_name": "query"}, {"prompt": "search_query: "}, {"prompt_name": "passage"}):
        np.testing.assert_allclose(ours.encode(sentences(), **kwargs), theirs.encode(sentences(), **kwargs), atol=TOL)
    np.testing.assert_allclose(ours.encode_query(sentences()), theirs.encode_query(sentences()), atol=TOL)
    np.testing.assert_allclose(ours.encode_document(sentences()), theirs.encode_document(sentences()), atol=TOL)
    with pytest.raises(ValueError, match="prompt name 'nope' is not one of the model's prompts"):
        ours.encode("x", prompt_name="nope")


def test_truncate_dim_and_dimension(minilm_dir):
    ours = npformer.pipeline("sentence-embeddings", minilm_dir, truncate_dim=128)
    theirs = st.SentenceTransformer(str(minilm_dir), device="cpu", truncate_dim=128)
    assert ours.get_sentence_embedding_dimension() == theirs.get_sentence_embedding_dimension() == 128
    for kwargs in ({}, {"normalize_embeddings": True}, {"truncate_dim": 64}, {"truncate_dim": 64, "precision": "int8"}):
        got, want = ours.encode(sentences(), **kwargs), theirs.encode(sentences(), **kwargs)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, atol=TOL if got.dtype == np.float32 else 1)
    full = npformer.pipeline("sentence-embeddings", minilm_dir)
    assert full.get_sentence_embedding_dimension() == 384


def test_max_seq_length_is_settable(minilm_dir):
    ours, theirs = npformer.pipeline("sentence-embeddings", minilm_dir), st.SentenceTransformer(str(minilm_dir), device="cpu")
    assert ours.max_seq_length == theirs.max_seq_length == 256
    ours.max_seq_length = theirs.max_seq_length = 16
    long = [" ".join(sentences(8))]
    np.testing.assert_allclose(ours.encode(long), theirs.encode(long), atol=TOL)
    with pytest.raises(ValueError, match="max_length must be an integer from 2 to 512"):
        ours.max_seq_length = 100_000


def test_similarity_function_and_pairwise(prompted, minilm_dir):
    ours, theirs = npformer.pipeline("sentence-embeddings", prompted), st.SentenceTransformer(str(prompted), device="cpu")
    assert ours.similarity_fn_name == theirs.similarity_fn_name == "dot"
    a, b = theirs.encode(sentences(6)), theirs.encode(sentences(12)[6:])
    np.testing.assert_allclose(ours.similarity(a, b), theirs.similarity(a, b).numpy(), atol=TOL)
    np.testing.assert_allclose(ours.similarity_pairwise(a, b), theirs.similarity_pairwise(a, b).numpy(), atol=TOL)
    for name in ("euclidean", "manhattan", "cosine"):
        theirs.similarity_fn_name = ours.similarity_fn_name = name
        np.testing.assert_allclose(ours.similarity(a, b), theirs.similarity(a, b).numpy(), atol=1e-4)
        np.testing.assert_allclose(ours.similarity_pairwise(a, b), theirs.similarity_pairwise(a, b).numpy(), atol=1e-4)


def test_numpy_tensor_and_device_arguments(minilm_dir):
    ours, theirs = npformer.pipeline("sentence-embeddings", minilm_dir), st.SentenceTransformer(str(minilm_dir), device="cpu")
    got, want = ours.encode(sentences(3), convert_to_numpy=False), theirs.encode(sentences(3), convert_to_numpy=False)
    assert isinstance(got, list) and len(got) == len(want) == 3
    np.testing.assert_allclose(np.stack(got), np.stack([w.numpy() for w in want]), atol=TOL)
    np.testing.assert_allclose(ours.encode(sentences(3), device="cpu"), theirs.encode(sentences(3), device="cpu"), atol=TOL)
    with pytest.raises(ValueError, match="convert_to_tensor=True needs torch"):
        ours.encode("x", convert_to_tensor=True)
    with pytest.raises(ValueError, match="device 'cuda' is not available"):
        ours.encode("x", device="cuda")


@pytest.mark.parametrize(
    "module", ["sentence_transformers.sparse_encoder.models.SpladePooling", "sentence_transformers.models.Dense"]
)
def test_modules_npformer_does_not_run_are_refused_by_name(minilm_dir, tmp_path, module):
    """Issue: a SpladePooling model loaded silently as a mean-pooled dense embedder."""
    shutil.copytree(minilm_dir, tmp_path / "m")
    modules = json.loads((tmp_path / "m" / "modules.json").read_text())
    modules[1]["type"] = module
    (tmp_path / "m" / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match=rf"module '{module}' is not one npformer runs"):
        npformer.pipeline("sentence-embeddings", tmp_path / "m")


def test_int8_precision_differs_by_at_most_one_step_and_only_through_the_floats(minilm_dir):
    """``encode(precision="int8")`` is sentence-transformers' quantization exactly: on the same float32
    embeddings the bytes are identical. Through each library's own forward pass the float embeddings
    differ by ~1e-7, and a value that sits on a bucket boundary (a step is range/255 of six
    sentences' spread) lands one step apart: at most one step, on a few per cent of the bytes."""
    ours, theirs = npformer.pipeline("sentence-embeddings", minilm_dir), st.SentenceTransformer(str(minilm_dir), device="cpu")
    got, want = ours.encode(sentences(6), precision="int8"), theirs.encode(sentences(6), precision="int8")
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1 and (got != want).mean() < 0.05
    floats = theirs.encode(sentences(6))
    np.testing.assert_array_equal(
        npformer.quantize_embeddings(floats, "int8"), st.quantization.quantize_embeddings(floats, "int8")
    )
