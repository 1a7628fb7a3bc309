"""Corrupted checkpoints: every entry point ends in one line naming the file and the problem.

Each case starts from a good random-init checkpoint (BERT + sequence-classification head) and breaks
one thing. Through ``AutoModel.from_pretrained``, ``npformer.pipeline``, ``npformer info`` and
``npformer sentiment`` each must fail with that one line (exit status 2 for the CLI) within 2 s,
never load and compute garbage.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import npformer
from helpers import SENTIMENT_LABELS, make_sentiment_checkpoint
from npformer.cli import main
from npformer.models.auto import AutoModel
from npformer.convert import save_quantized

LABELS = SENTIMENT_LABELS


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return make_sentiment_checkpoint(tmp_path_factory.mktemp("good"), num_hidden_layers=2)


@pytest.fixture(scope="module")
def good_int8(good, tmp_path_factory) -> Path:
    return save_quantized(good, tmp_path_factory.mktemp("int8") / "q")


def edit_config(d: Path, **changes):
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, **changes}))


def edit_tensors(d: Path, fn):
    file = d / "model.safetensors"
    from safetensors import safe_open

    with safe_open(file, framework="numpy") as f:
        metadata = f.metadata()
    tensors = {k: v.copy() for k, v in load_file(file).items()}
    fn(tensors)
    save_file(tensors, file, metadata=metadata)


def poke(key: str, value: float):
    def fn(tensors):
        tensors[key].reshape(-1)[3] = value

    return fn


def truncate_file(d: Path):
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


def bad_header_length(d: Path):
    data = bytearray((d / "model.safetensors").read_bytes())
    data[:8] = (10**12).to_bytes(8, "little")
    (d / "model.safetensors").write_bytes(bytes(data))


def offsets_out_of_range(d: Path):
    data = (d / "model.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    key = next(k for k in header if k != "__metadata__")
    header[key]["data_offsets"][1] += 10**9
    raw = json.dumps(header).encode().ljust(n)
    (d / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])


def shard_index(target: str, link: bool = False):
    def make(d: Path):
        outside = d.parent / f"{d.name}-elsewhere"
        outside.mkdir(exist_ok=True)
        (d / "model.safetensors").rename(outside / "model.safetensors")
        name = target
        if link:
            (d / "shard.safetensors").symlink_to(outside / "model.safetensors")
        weight_map = {k: name for k in load_file(outside / "model.safetensors")}
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    return make


def drop_scale(d: Path):
    edit_tensors(d, lambda t: t.pop("bert.encoder.layer.0.attention.self.query.weight_scale"))


# name -> (make the damage, the file named in the error, regex of the problem, checkpoint, whether the
# encoder alone (AutoModel, `npformer info`) meets it; otherwise only the head or tokenizer does)
CASES = {
    "truncated-safetensors": (truncate_file, "model.safetensors", "not a readable safetensors file", "fp32", True),
    "safetensors-header-length": (bad_header_length, "model.safetensors", "not a readable safetensors", "fp32", True),
    "safetensors-offsets-out-of-range": (offsets_out_of_range, "model.safetensors", "not a readable", "fp32", True),
    "config-empty": (lambda d: (d / "config.json").write_text(""), "config.json", "is empty", "fp32", True),
    "config-not-json": (
        lambda d: (d / "config.json").write_text("{model_type: bert"),
        "config.json",
        "not valid JSON",
        "fp32",
        True,
    ),
    "config-a-list": (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json", "holds a JSON list", "fp32", True),
    "config-zero-heads": (
        lambda d: edit_config(d, num_attention_heads=0),
        "config.json",
        "'num_attention_heads' must be a positive integer, got 0",
        "fp32",
        True,
    ),
    "config-hidden-size-string": (
        lambda d: edit_config(d, hidden_size="32"),
        "config.json",
        "'hidden_size' must be a positive integer, got '32'",
        "fp32",
        True,
    ),
    "config-layer-norm-eps-string": (
        lambda d: edit_config(d, layer_norm_eps="1e-12"),
        "config.json",
        "'layer_norm_eps' must be a finite number",
        "fp32",
        True,
    ),
    "config-layer-norm-eps-nan": (
        lambda d: edit_config(d, layer_norm_eps=math.nan),
        "config.json",
        "'layer_norm_eps' must be a finite number.*nan",
        "fp32",
        True,
    ),
    "config-three-labels-two-logits": (
        lambda d: edit_config(d, id2label={"0": "a", "1": "b", "2": "c"}),
        "config.json",
        "id2label names 3 labels.*'classifier.weight' has 2 rows",
        "fp32",
        False,
    ),
    "classifier-stored-as-int32": (
        lambda d: edit_tensors(d, lambda t: t.update({"classifier.weight": (t["classifier.weight"] * 100).astype(np.int32)})),
        "model.safetensors",
        "'classifier.weight' is stored as I32; expected a float type",
        "fp32",
        False,
    ),
    "nan-weight": (
        lambda d: edit_tensors(d, poke("bert.encoder.layer.1.output.dense.weight", math.nan)),
        "model.safetensors",
        "'bert.encoder.layer.1.output.dense.weight' holds nan at flat index 3",
        "fp32",
        True,
    ),
    "inf-bias": (
        lambda d: edit_tensors(d, poke("bert.pooler.dense.bias", math.inf)),
        "model.safetensors",
        "'bert.pooler.dense.bias' holds inf",
        "fp32",
        True,
    ),
    "int8-missing-scale": (
        drop_scale,
        "model.safetensors",
        "int8 tensor 'bert.encoder.layer.0.attention.self.query.weight' has no .*_scale",
        "int8",
        True,
    ),
    "int8-nan-scale": (
        lambda d: edit_tensors(d, poke("bert.encoder.layer.1.intermediate.dense.weight_scale", math.nan)),
        "model.safetensors",
        "weight_scale' holds nan",
        "int8",
        True,
    ),
    "int8-zero-scale": (
        lambda d: edit_tensors(d, poke("bert.encoder.layer.1.intermediate.dense.weight_scale", 0.0)),
        "model.safetensors",
        "scale <= 0",
        "int8",
        True,
    ),
    "shard-outside-by-dotdot": (
        shard_index("../elsewhere/model.safetensors"),
        "model.safetensors.index.json",
        "lies outside the checkpoint directory",
        "fp32",
        True,
    ),
    "shard-outside-by-symlink": (
        shard_index("shard.safetensors", link=True),
        "model.safetensors.index.json",
        "lies outside the checkpoint directory",
        "fp32",
        True,
    ),
    "shard-index-not-json": (
        lambda d: (d / "model.safetensors.index.json").write_text("{"),
        "model.safetensors.index.json",
        "not valid JSON",
        "fp32",
        True,
    ),
    "tokenizer-config-a-list": (
        lambda d: (d / "tokenizer_config.json").write_text("[]"),
        "tokenizer_config.json",
        "holds a JSON list",
        "fp32",
        False,
    ),
    "tokenizer-config-not-json": (
        lambda d: (d / "tokenizer_config.json").write_text("do_lower_case: true"),
        "tokenizer_config.json",
        "not valid JSON",
        "fp32",
        False,
    ),
    "vocab-binary": (
        lambda d: (d / "vocab.txt").write_bytes(bytes(range(256)) * 4),
        "vocab.txt",
        r"line \d+ is not UTF-8 text \(byte \d+: 0x",
        "fp32",
        False,
    ),
}


@pytest.fixture(params=sorted(CASES))
def broken(request, good, good_int8, tmp_path):
    damage, file, problem, source, reaches_model = CASES[request.param]
    d = tmp_path / "ckpt"
    shutil.copytree(good if source == "fp32" else good_int8, d)
    damage(d)
    return d, file, problem, reaches_model


def one_line(message: str, file: str, problem: str):
    assert "\n" not in message.strip(), message
    assert file in message, message
    assert re.search(problem, message), message


def timed(fn):
    start = time.perf_counter()
    result = fn()
    assert time.perf_counter() - start < 2.0
    return result


def test_python_api(broken):
    d, file, problem, reaches_model = broken
    if reaches_model:
        with pytest.raises((ValueError, FileNotFoundError)) as e:
            timed(lambda: AutoModel.from_pretrained(d))
        one_line(str(e.value), file, problem)
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        timed(lambda: npformer.pipeline("sentiment-analysis", d))
    one_line(str(e.value), file, problem)


def test_cli(broken, capsys):
    d, file, problem, reaches_model = broken
    commands = [["sentiment", "--model", str(d), "a fine film"]]
    if reaches_model:
        commands.append(["info", str(d)])
    for argv in commands:
        assert timed(lambda: main(argv)) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith("npformer: error: ")
        one_line(captured.err, file, problem)


def test_good_checkpoints_load(good, good_int8):
    """The damage above is what fails: the untouched checkpoints load and classify."""
    for d in (good, good_int8):
        assert npformer.pipeline("sentiment-analysis", d)("a fine film")[0]["label"] in LABELS.values()
