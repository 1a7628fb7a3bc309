"""The documentation is tested: the learners' walkthrough runs and its numbers equal Transformers',
the site builds with `mkdocs build --strict` (API reference from docstrings, CLI reference from the
parser), and every public name has a docstring."""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import re
import subprocess
import sys

import numpy as np

from conftest import ROOT
from helpers import assert_close

import npformer

import torch
import transformers


def code_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / page).read_text(encoding="utf-8"), re.S)


def test_walkthrough_runs_and_matches_transformers(minilm_dir):
    assert npformer.hub.cache_dir() / "all-MiniLM-L6-v2" == minilm_dir  # the page's model
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in code_blocks("walkthrough.md"):
            exec(compile(block, "walkthrough.md", "exec"), namespace)
    lines = printed.getvalue().splitlines()
    assert lines[-2:] == ["(384,) " + str(namespace["embedding"][:4].round(4)), "True"] and "True True" in lines
    # every value the page computes, against Transformers
    fast = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    ref_enc = fast(namespace["sentence"], return_tensors="pt")
    assert namespace["enc"].tokens(0) == ref_enc.tokens()
    model = transformers.BertModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        ref = model(**ref_enc, output_attentions=True, output_hidden_states=True)
    assert_close(namespace["probs"], ref.attentions[0][0].numpy(), 1e-4, "layer 0 attention probabilities")
    assert_close(namespace["x"], ref.hidden_states[1][0].numpy(), 1e-4, "layer 0 output")
    pooled = ref.last_hidden_state[0].mean(0).numpy()
    assert_close(namespace["embedding"], pooled / np.linalg.norm(pooled), 1e-4, "sentence embedding")
    # the printed values shown in the page's comments are the ones computed
    page = (ROOT / "docs" / "walkthrough.md").read_text(encoding="utf-8")
    for shown in (
        "['[CLS]', 'a', 'man', 'is', 'eating', 'food', '.', '[SEP]']",
        "[101, 1037, 2158, 2003, 5983, 2833, 1012, 102]",
    ):
        assert shown in page and shown in lines


def test_site_builds_strict(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "npformer search" in cli and "--on-error" in cli  # generated from the parser
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    assert "semantic_search" in api and "quantize_embeddings" in api


def test_public_names_have_docstrings():
    missing = []
    for name in npformer.__all__:
        obj = getattr(npformer, name)
        if name.startswith("__"):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for member, value in vars(obj).items():
                if not member.startswith("_") and callable(value) and not inspect.getdoc(value):
                    missing.append(f"{name}.{member}")
    assert missing == [], f"public names without a docstring: {missing}"


def test_security_promises_name_tests_that_exist():
    """SECURITY.md names the test that holds each promise: every one it names must exist."""
    text = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    sources = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py")}
    every = "\n".join(sources.values())
    named = re.findall(r"`(?:tests/(test_\w+\.py)(?:::(test_\w+))?|(test_\w+))`", text)
    assert len(named) > 15
    for file, function, bare in named:
        if file:
            assert file in sources, file
            if function:
                assert f"def {function}(" in sources[file], f"{file}::{function}"
        else:
            assert f"def {bare}(" in every, bare
    deploying = (ROOT / "docs" / "guides" / "deploying.md").read_text(encoding="utf-8")
    for flag in (
        "--api-key",
        "--allowed-hosts",
        "--cors-allow-origin",
        "--read-timeout",
        "--explain-max-tokens",
        "--max-concurrent-explains",
    ):
        assert flag in deploying
        assert (
            flag
            in subprocess.run(
                [sys.executable, "-m", "npformer.cli", "serve", "--help"], capture_output=True, text=True, timeout=120
            ).stdout
        )


def test_the_retrieval_guide_runs(tmp_path, monkeypatch):
    """docs/guides/retrieval.md with small random models in place of its four Hub checkpoints."""
    from helpers import make_checkpoint

    small = dict(vocab="bert-base-uncased", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=40)
    make_checkpoint(tmp_path / "dense", "bert", None, **small)
    make_checkpoint(tmp_path / "sparse", "bert", "mlm", **small)
    make_checkpoint(tmp_path / "reranker", "bert", "sequence", num_labels=1, **small)
    from pylate import models

    models.ColBERT(str(tmp_path / "dense"), device="cpu", embedding_size=16).save(str(tmp_path / "colbert"))
    source = "\n".join(code_blocks("guides/retrieval.md"))
    for name in ("DENSE", "SPARSE", "COLBERT", "RERANKER"):
        source = re.sub(rf'^{name} = ".*"$', f"{name} = {str(tmp_path / name.lower())!r}", source, flags=re.M)
    monkeypatch.chdir(ROOT)
    printed = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(source, "retrieval.md", "exec"), namespace)
    lines = printed.getvalue().splitlines()
    assert len(namespace["corpus"]) == 500 and len(namespace["candidates"]) == 20
    assert lines[0].startswith("[(") and len(lines) == 7  # decode, the ColBERT order, then five reranked hits
    shown = ast.literal_eval(lines[1])
    assert len(set(shown)) == 5 and set(shown) <= set(namespace["candidates"])
