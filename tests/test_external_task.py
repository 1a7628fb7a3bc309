"""A task added from outside ``npformer/``: ``tests/plugins/cls_task_plugin.py`` registers the
``cls-embedding`` task and its ``npformer cls`` command through the ``npformer.tasks`` entry point;
the CLI and ``serve`` pick it up with no other file touched. Reference: Transformers' ``BertModel``
on all-MiniLM-L6-v2, the last layer's first token, within 1e-4."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import npformer
from helpers import install_plugin
from npformer.cli import main
from test_server import Client, free_port, start, stop

import torch
import transformers

TEXTS = ["a man is eating food.", "the plane takes off at noon"]


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    with install_plugin(tmp_path_factory.mktemp("task-plugin"), "cls_task_plugin", "npformer.tasks", "cls") as root:
        yield root


@pytest.fixture(scope="module")
def expected(minilm_dir) -> np.ndarray:
    tok = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    model = transformers.BertModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        out = model(**tok(TEXTS, padding=True, return_tensors="pt")).last_hidden_state[:, 0].numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_the_cli_finds_the_plugin_command(plugin, minilm_dir, expected, capsys):
    assert main(["cls", "--model", str(minilm_dir), "--normalize", *TEXTS]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    np.testing.assert_allclose([r["cls"] for r in rows], expected, atol=1e-4)
    vectors = npformer.pipeline("cls", minilm_dir)(TEXTS, normalize=True)  # the task's alias
    np.testing.assert_allclose(vectors, expected, atol=1e-4)


def test_serve_answers_the_plugin_task(plugin, minilm_dir, expected):
    port = free_port()
    proc = start(["--model", f"cls={minilm_dir}@cls-embedding"], port, pythonpath=plugin)
    try:
        client = Client(port)
        got = client.ok("/models/cls", {"inputs": TEXTS, "parameters": {"normalize": True}})
        np.testing.assert_allclose(got, expected, atol=1e-4)
        code, payload, _ = client.call("/models/cls", {"inputs": TEXTS, "parameters": {"normalize": "yes"}})
        assert code == 422 and "`parameters.normalize` must be a boolean" in payload["error"]
        assert {"name": "cls", "task": "cls-embedding"}.items() <= client.ok("/models")[0].items()
    finally:
        assert stop(proc) == 0
