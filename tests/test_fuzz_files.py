"""Fuzzed checkpoint files: random ``config.json`` values, safetensors headers and metadata, ``.bin``
tensor layouts and ``tokenizer.json`` structures end in a one-line ``ValueError`` (or ``TypeError``,
``KeyError``, ``FileNotFoundError`` for what is missing) or load; never another exception, a crash,
a hang or a large allocation. Bounded in examples and time (hypothesis)."""

from __future__ import annotations

import json
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import npformer
from helpers import make_sentiment_checkpoint
from npformer.config import Config
from npformer.quantization import packed_shapes
from npformer.tokenizer import Tokenizer
from npformer.torch_bin import read_torch_bin
from npformer.weights import Weights
from test_torch_bin import tensor_pickle

EXPECTED = (ValueError, TypeError, KeyError, FileNotFoundError)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def one_line(error: BaseException) -> None:
    assert isinstance(error, EXPECTED), f"{type(error).__name__}: {error}"
    assert "\n" not in str(error), str(error)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return make_sentiment_checkpoint(tmp_path_factory.mktemp("good"), num_hidden_layers=1)


def copy_of(good: Path, tmp: Path) -> Path:
    target = tmp / "ckpt"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(good, target)
    return target


def deeply_nested(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


CONFIG_FIELDS = [
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "layer_norm_eps",
    "max_position_embeddings",
    "type_vocab_size",
    "pad_token_id",
    "id2label",
    "label2id",
    "problem_type",
    "architectures",
    "position_embedding_type",
]


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(CONFIG_FIELDS), json_values, max_size=4))
def test_random_config_fields(good, tmp_path_factory, changes):
    config = json.loads((good / "config.json").read_text())
    config.update(changes)
    tmp = tmp_path_factory.mktemp("config")
    (tmp / "config.json").write_text(json.dumps(config))
    try:
        Config.from_pretrained(tmp)
    except Exception as error:  # noqa: BLE001 (the point: which exceptions escape)
        one_line(error)


@FUZZ
@given(value=json_values)
def test_random_config_documents(tmp_path_factory, value):
    tmp = tmp_path_factory.mktemp("config")
    (tmp / "config.json").write_text(json.dumps(value))
    with pytest.raises(EXPECTED) as error:
        Config.from_pretrained(tmp)
    one_line(error.value)


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_config.json"])
def test_deeply_nested_json_is_one_line(good, tmp_path, name):
    """Once a RecursionError traceback from the JSON parser."""
    directory = copy_of(good, tmp_path)
    (directory / name).write_text('{"a": ' + deeply_nested() + "}")
    with pytest.raises(ValueError, match=f"{name} nests its JSON too deeply") as error:
        npformer.pipeline("sentiment", directory)
    one_line(error.value)


def write_safetensors(path: Path, header: dict, data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


DTYPES = st.sampled_from(["F32", "F16", "BF16", "I8", "U8", "I32", "I64", "F64", "BOOL", "F8_E4M3", "X"])
shapes = st.lists(st.integers(-3, 2**40), max_size=3) | json_values


@FUZZ
@given(
    entries=st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.fixed_dictionaries(
            {"dtype": DTYPES, "shape": shapes, "data_offsets": st.lists(st.integers(-8, 2**40), max_size=3) | json_values}
        )
        | json_values,
        max_size=3,
    ),
    metadata=st.dictionaries(st.text(max_size=8), st.text(max_size=16), max_size=3) | json_values,
    size=st.integers(0, 256),
)
def test_random_safetensors_headers(tmp_path_factory, entries, metadata, size):
    tmp = tmp_path_factory.mktemp("st")
    write_safetensors(tmp / "model.safetensors", {**entries, "__metadata__": metadata}, bytes(size))
    try:
        weights = Weights(tmp)
        for name in weights.tensors:
            weights.get(name)
    except Exception as error:  # noqa: BLE001
        one_line(error)


@FUZZ
@given(layout=json_values | st.just(deeply_nested(50_000)).map(lambda s: {"packed": s}))
def test_random_quantized_layout_metadata(good, tmp_path_factory, layout):
    tmp = tmp_path_factory.mktemp("layout")
    text = (
        layout["packed"]
        if isinstance(layout, dict) and isinstance(layout.get("packed"), str) and layout["packed"].startswith("[[[")
        else json.dumps(layout)
    )
    write_safetensors(
        tmp / "model.safetensors",
        {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "__metadata__": {"layout": text}},
        bytes(4),
    )
    try:
        shapes_ = packed_shapes(Weights(tmp))
        assert all(isinstance(s, list) and len(s) == 2 for s in shapes_.values())
    except Exception as error:  # noqa: BLE001
        one_line(error)


@FUZZ
@given(
    offset=st.integers(-(2**40), 2**40) | st.floats(allow_nan=False),
    size=st.lists(st.integers(-(2**40), 2**40), max_size=4),
    stride=st.lists(st.integers(-(2**40), 2**40), max_size=4),
    numel=st.integers(0, 64),
)
def test_random_bin_tensor_layouts(tmp_path_factory, offset, size, stride, numel):
    path = tmp_path_factory.mktemp("bin") / "w.bin"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", tensor_pickle(offset, tuple(size), tuple(stride), numel))
        z.writestr("archive/data/0", np.arange(numel, dtype=np.float32).tobytes())
    try:
        tensor = read_torch_bin(path)["w"]
    except Exception as error:  # noqa: BLE001
        one_line(error)
        return
    assert tensor.size <= numel  # nothing read beyond the storage, nothing blown up


@FUZZ
@given(
    field=st.sampled_from(
        [
            "model",
            "normalizer",
            "pre_tokenizer",
            "post_processor",
            "padding",
            "added_tokens",
            "model.vocab",
            "model.unk_token",
            "model.max_input_chars_per_word",
            "model.type",
            "post_processor.cls",
            "post_processor.single",
        ]
    ),
    value=json_values,
)
def test_random_tokenizer_json_fields(good, tmp_path_factory, field, value):
    import transformers

    tmp = tmp_path_factory.mktemp("tok")
    if not (good / "tokenizer.json").is_file():
        transformers.BertTokenizerFast.from_pretrained(good).save_pretrained(good)
    data = json.loads((good / "tokenizer.json").read_text())
    parent, _, key = field.rpartition(".")
    target = data
    if parent:
        target = data[parent] if isinstance(data.get(parent), dict) else data.setdefault(parent, {})
    target[key] = value
    (tmp / "tokenizer.json").write_text(json.dumps(data))
    try:
        Tokenizer.from_pretrained(tmp)
    except Exception as error:  # noqa: BLE001
        one_line(error)


def test_a_tokenizer_json_vocab_with_a_string_id(good, tmp_path):
    """Once ``TypeError: '<' not supported between instances of 'str' and 'int'``."""
    import transformers

    transformers.BertTokenizerFast.from_pretrained(good).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    data["model"]["vocab"]["[PAD]"] = "0"
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"maps '\[PAD\]' to '0'; ids must be integers"):
        Tokenizer.from_pretrained(tmp_path)
