"""Random-init Transformers checkpoints for cross-checking (the tinygrad test_bert.py pattern)."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from numba import njit

from conftest import ROOT, VOCABS, read_wikitext, require
from safetensors.numpy import save_file

import npformer
from npformer.pipelines import BUILTIN_SENTIMENT
from npformer.quantization import SCALE_SUFFIX, read_matrix
from npformer.weights import Weights

FP32_EXPORT = Path(os.environ.get("NPFORMER_SENTIMENT_FP32", ROOT / "exports" / "sentiment-fp32"))

# Transformers class names per (model_type, head)
_FAMILIES = {
    "bert": "Bert",
    "distilbert": "DistilBert",
    "roberta": "Roberta",
    "electra": "Electra",
    "xlm-roberta": "XLMRoberta",
    "camembert": "Camembert",
    "mpnet": "MPNet",
    "albert": "Albert",
    "modernbert": "ModernBert",
}
_HEADS = {
    None: "Model",
    "sequence": "ForSequenceClassification",
    "token": "ForTokenClassification",
    "qa": "ForQuestionAnswering",
    "mlm": "ForMaskedLM",
}
CLASSES = {(model_type, head): family + suffix for model_type, family in _FAMILIES.items() for head, suffix in _HEADS.items()}


def roberta_tokenizer(directory: Path):
    """RoBERTa's tokenizer files in ``directory``: GPT-2's byte-level BPE (tests/data/vocab/gpt2)
    with RoBERTa's special tokens first (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3) and
    ``<mask>`` last, as roberta-base orders the same vocabulary; saved by Transformers'
    ``RobertaTokenizerFast``, which is returned."""
    import transformers

    src = require(VOCABS / "gpt2")
    gpt2 = json.loads((src / "vocab.json").read_text(encoding="utf-8"))
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for token, i in sorted(gpt2.items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    vocab["<mask>"] = len(vocab)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    shutil.copy(src / "merges.txt", directory / "merges.txt")
    tokenizer = transformers.RobertaTokenizerFast(
        str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=512
    )
    tokenizer.save_pretrained(directory)
    return tokenizer


SENTENCEPIECE_EXTRA = [
    "Café déjà vu, naïve façade — ½ ﬁne ＦＵＬＬ width",
    "日本語のテキストです。中文文本。",
    "Ελληνικά κείμενα και Русский текст",
    "emoji 👍🏽 👨‍👩‍👧 🇫🇷",
    "Ärger über Öl, straße",
]


def sentencepiece_model(directory: Path, vocab_size: int = 2000) -> Path:
    """A SentencePiece Unigram model (``nmt_nfkc`` normalization, the precompiled charsmap real
    checkpoints carry) trained here on the first 2,500 WikiText-2 lines and a few lines of other
    scripts; returns the ``.model`` file (written once per directory)."""
    import sentencepiece

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / "spiece.model"
    if not out.is_file():
        lines = [line for line in read_wikitext()[:2500] if line.strip()] + SENTENCEPIECE_EXTRA * 20
        model = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            vocab_size=vocab_size,
            model_type="unigram",
            character_coverage=1.0,
            normalization_rule_name="nmt_nfkc",
            minloglevel=2,
        )
        out.write_bytes(model.getvalue())
    return out


def unigram_tokenizer(directory: Path, tokenizer_class: str = "XLMRobertaTokenizerFast"):
    """The files Transformers' ``tokenizer_class`` (``XLMRobertaTokenizerFast``,
    ``CamembertTokenizerFast``, ``AlbertTokenizerFast``, ``DebertaV2TokenizerFast``) saves for
    :func:`sentencepiece_model`'s model, written to ``directory``; returns that fast tokenizer."""
    import transformers

    directory = Path(directory)
    model = sentencepiece_model(directory.parent / "sentencepiece")
    tokenizer = getattr(transformers, tokenizer_class)(vocab_file=str(model), model_max_length=512)
    tokenizer.save_pretrained(directory)
    return tokenizer


def make_checkpoint(
    directory: Path,
    model_type: str,
    head: str | None = None,
    *,
    seed: int = 0,  # noqa: PLR0913
    vocab: str | None = None,
    init_std: float = 0.1,
    tokenizer_class: str | None = None,
    **config_kwargs,
):
    """Save a random-init Transformers model (safetensors) to ``directory``; returns the torch model.

    ``vocab`` names a folder of tests/data/vocab whose vocab.txt and tokenizer_config.json are copied
    (then vocab_size follows it); ``tokenizer_class`` (``XLMRobertaTokenizerFast``...) gives the
    checkpoint :func:`unigram_tokenizer`'s files instead (paraphrase-multilingual-MiniLM's layout:
    BERT weights with an XLM-R tokenizer). Weights get a larger spread than Transformers' default (0.02) so
    that activations exercise the kernels' ranges; layer norm weights are randomized too.
    """
    import torch
    import transformers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if tokenizer_class is not None:
        config_kwargs.setdefault("vocab_size", len(unigram_tokenizer(directory, tokenizer_class)))
    elif model_type == "modernbert":  # byte-level BPE (GPT-2's vocabulary with RoBERTa's special tokens)
        tokenizer = roberta_tokenizer(directory)
        config_kwargs = {
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 512,
            "attn_implementation": "eager",
            **{f"{t}_token_id": getattr(tokenizer, f"{t}_token_id") for t in ("pad", "bos", "eos", "cls", "sep")},
            **config_kwargs,
        }
    elif model_type in ("roberta", "xlm-roberta", "camembert", "mpnet", "albert"):
        if model_type == "roberta":
            tokenizer = roberta_tokenizer(directory)
        elif model_type == "mpnet":  # WordPiece (bert-base-uncased's) with MPNet's <s> </s> template
            tokenizer = transformers.MPNetTokenizerFast(
                str(require(VOCABS / "bert-base-uncased") / "vocab.txt"), model_max_length=512
            )
            tokenizer.save_pretrained(directory)
        else:
            tokenizer = unigram_tokenizer(directory, CLASSES[(model_type, None)][:-5] + "TokenizerFast")
        config_kwargs.setdefault("vocab_size", len(tokenizer))
        if model_type != "albert":  # ALBERT: BERT's positions and two token types
            config_kwargs.setdefault("max_position_embeddings", 514)
            config_kwargs.setdefault("type_vocab_size", 1)
            config_kwargs.setdefault("layer_norm_eps", 1e-5)
    elif vocab is not None:
        src = require(VOCABS / vocab)
        shutil.copy(src / "vocab.txt", directory / "vocab.txt")
        tok_config = json.loads((src / "tokenizer_config.json").read_text())
        if model_type in ("distilbert", "electra"):  # DistilBERT's tokenizer returns no token_type_ids
            tok_config["tokenizer_class"] = f"{CLASSES[(model_type, None)][:-5]}Tokenizer"
        (directory / "tokenizer_config.json").write_text(json.dumps(tok_config))
        config_kwargs["vocab_size"] = sum(1 for _ in open(src / "vocab.txt", encoding="utf-8"))
    config_cls = {
        "bert": transformers.BertConfig,
        "distilbert": transformers.DistilBertConfig,
        "roberta": transformers.RobertaConfig,
        "electra": transformers.ElectraConfig,
        "xlm-roberta": transformers.XLMRobertaConfig,
        "camembert": transformers.CamembertConfig,
        "mpnet": transformers.MPNetConfig,
        "albert": transformers.AlbertConfig,
        "modernbert": transformers.ModernBertConfig,
    }[model_type]
    config = config_cls(**config_kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, CLASSES[(model_type, head)])(config)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith(("norm.weight", "norm.bias")):
                p.copy_(
                    (1.0 + 0.2 * torch.randn(p.shape, generator=gen))
                    if name.endswith("weight")
                    else 0.1 * torch.randn(p.shape, generator=gen)
                )
            elif p.ndim >= 1 and "position_embeddings" not in name or not getattr(config, "sinusoidal_pos_embds", False):
                p.copy_(init_std * torch.randn(p.shape, generator=gen))
    model.eval()
    model.save_pretrained(directory, safe_serialization=True)
    return model


SENTIMENT_LABELS = {0: "NEGATIVE", 1: "POSITIVE"}


def make_sentiment_checkpoint(directory: Path, num_hidden_layers: int = 1) -> Path:
    """A tiny random-init BERT sequence classifier with NEGATIVE / POSITIVE labels and the uncased vocab."""
    make_checkpoint(
        directory,
        "bert",
        "sequence",
        vocab="bert-base-uncased",
        hidden_size=32,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        intermediate_size=40,
        id2label=SENTIMENT_LABELS,
        label2id={v: k for k, v in SENTIMENT_LABELS.items()},
    )
    return Path(directory)


def random_batch(rng: np.random.Generator, vocab_size: int, batch: int, seq: int, type_vocab: int = 2):
    """``(input_ids, attention_mask, token_type_ids)`` int64 ``(batch, seq)`` with ragged padding."""
    ids = rng.integers(5, vocab_size, size=(batch, seq))
    lengths = rng.integers(max(1, seq // 3), seq + 1, size=batch)
    lengths[0] = seq
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, 0)
    types = np.zeros((batch, seq), dtype=np.int64)
    if type_vocab > 1:
        for b, n in enumerate(lengths):
            types[b, n // 2 : n] = 1
    return ids, mask, types


def max_abs_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def assert_close(ours, reference, tol: float, what: str = "result") -> float:
    """Parity check that says what it saw: fails with the max abs diff, where it is and both values;
    returns the max abs diff (printed, so a passing run shows the margin too)."""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} vs reference {b.shape}"
    diff = np.abs(a - b)
    worst = float(diff.max()) if diff.size else 0.0
    print(f"{what}: max abs diff {worst:.2e} (tolerance {tol:.0e})")
    if not worst <= tol:
        at = np.unravel_index(int(np.nanargmax(diff)), diff.shape)
        raise AssertionError(
            f"{what}: max abs diff {worst:.3e} > {tol:.0e} at {tuple(int(i) for i in at)} "
            f"(ours {a[at]:.6g}, reference {b[at]:.6g})"
        )
    return worst


def fresh_asm(kernel, *args) -> str:
    """Assembly of ``kernel``'s source compiled anew (a cache-loaded dispatcher keeps no assembly)."""
    fresh = njit(fastmath=True)(kernel.py_func)  # serial: the parallel launcher hides the loop body
    fresh(*args)
    return "".join(fresh.inspect_asm(sig) for sig in fresh.signatures)


def float32_checkpoint(directory: Path) -> Path:
    """The float32 export of the built-in model when it is present (made by scripts/train_sst2.py,
    kept out of git), else a float32 checkpoint written to ``directory`` from the built-in INT8
    weights, dequantized (every other tensor as stored)."""
    if (FP32_EXPORT / "model.safetensors").is_file():
        return FP32_EXPORT
    weights = Weights(BUILTIN_SENTIMENT)
    tensors = {}
    for key in weights.tensors:
        if not key.endswith(SCALE_SUFFIX):
            t = read_matrix(weights, key) if weights.stored(key)[1] == "I8" else weights.get(key)
            tensors[key] = t.dequantize() if isinstance(t, npformer.QuantizedTensor) else np.ascontiguousarray(t)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    for item in BUILTIN_SENTIMENT.iterdir():
        if item.suffix in (".json", ".txt"):
            (directory / item.name).write_bytes(item.read_bytes())
    return directory


def export_onnx(model, directory: Path, opset: int = 14, dynamo: bool = False) -> Path:
    """``torch.onnx.export`` of a Transformers model to ``directory/onnx/model.onnx``, with dynamic
    batch and sequence axes: the TorchScript exporter (as Optimum and transformers.js use), or with
    ``dynamo`` torch's newer exporter (opset 18+; its weights go to ``model.onnx.data`` beside)."""
    import torch

    types = model.config.model_type in ("bert", "electra", "albert")
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if types else [])
    ids = torch.tensor([[101, 7592, 2088, 102]]) % model.config.vocab_size
    args = tuple(
        ids if n == "input_ids" else torch.ones_like(ids) if n == "attention_mask" else torch.zeros_like(ids) for n in names
    )
    file = Path(directory) / "onnx" / "model.onnx"
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model.eval(),
        args,
        str(file),
        input_names=names,
        opset_version=max(opset, 18) if dynamo else opset,
        dynamo=dynamo,
        dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names},
    )
    return file


def quantize_onnx(file: Path, kind: str) -> Path:
    """ONNX Runtime's copies of an export, named as transformers.js names them: ``int8`` /
    ``int8-channel`` (``quantize_dynamic``, int8 weights, per tensor / per channel) -> ``model_quantized.onnx``;
    ``q4`` / ``q4-asym``
    (``MatMulNBitsQuantizer``, 4 bits, block 32, symmetric or with zero points) -> ``model_q4.onnx``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    if kind.startswith("int8"):  # "int8-channel": one scale and zero point per output channel
        out = file.with_name("model_quantized.onnx")
        quantize_dynamic(str(file), str(out), weight_type=QuantType.QInt8, per_channel=kind == "int8-channel")
        return out
    out = file.with_name("model_q4.onnx")
    quantizer = MatMulNBitsQuantizer(onnx.load(str(file)), block_size=32, is_symmetric=kind == "q4")
    quantizer.process()
    quantizer.model.save_model_to_file(str(out), False)
    return out


@contextlib.contextmanager
def install_plugin(root: Path, module: str, group: str, name: str):
    """Install ``tests/plugins/<module>.py`` into ``root`` as a package would: the module and a
    ``.dist-info`` naming it as entry point ``name`` of ``group``; ``root`` is on ``sys.path`` while
    the context lasts (and another process finds it with ``root`` on its ``PYTHONPATH``)."""
    shutil.copy(ROOT / "tests" / "plugins" / f"{module}.py", root)
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {module}\n")
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield root
    finally:
        sys.path.remove(str(root))
