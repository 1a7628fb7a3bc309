"""Where a model comes from and what it is: the model card's metadata, the Hub commit, the
sentence-transformers settings (what ``npformer info`` prints), and the card ``npformer quantize``
writes for its int8 copy.

Model cards are Hugging Face ``README.md`` files whose YAML front matter holds ``license``,
``language``, ``datasets``, ``base_model``, ``pipeline_tag``, ``metrics``...; they are read with
``huggingface_hub.repocard``.
"""

from __future__ import annotations

from pathlib import Path

from npformer.config import Config
from npformer.hub import BUILTIN, hub_commit
from npformer.models.encoder import Encoder
from npformer.models.pooling import Pooling
from npformer.pipelines.tasks import task_for_checkpoint
from npformer.quantization import SCALE_SUFFIX, is_quantized
from npformer.weights import Weights

CARD_FIELDS = ("license", "language", "datasets", "base_model", "pipeline_tag", "metrics", "library_name", "tags", "model-index")
NOTES = {
    "parameters": "every number stored in the checkpoint: encoder, pooler and task head",
    "encoder_parameters": "the encoder's share (embeddings, layers, pooler), what AutoModel loads",
}


def card_metadata(directory: Path) -> dict:
    """The model card's front-matter fields of :data:`CARD_FIELDS` (empty without a card).
    Raises ``ValueError`` naming the card when its front matter is not valid YAML."""
    card = Path(directory) / "README.md"
    if not card.is_file():
        return {}
    from huggingface_hub.repocard import metadata_load  # 0.15 s of imports: only when a card is read

    try:
        data = metadata_load(card) or {}
    except Exception as e:  # yaml errors: a broken card is a one-line error, not a traceback
        raise ValueError(f"{card}: the model card's front matter is not valid YAML ({str(e).splitlines()[0]})") from None
    return {k: data[k] for k in CARD_FIELDS if k in data}


def describe(directory: Path, config: Config, weights: Weights, encoder: Encoder) -> dict:
    """What ``npformer info`` prints: architecture, sizes, labels, dtype, the task the checkpoint
    serves unless told otherwise and what it outputs, provenance."""
    files = list(directory.glob("*.safetensors"))
    builtin = next((name for name, path in BUILTIN.items() if path == directory), None)
    task = task_for_checkpoint(directory)
    pooling = Pooling.from_pretrained(directory) if task.name == "sentence-embeddings" else None
    return {
        "path": str(directory),
        "name": builtin,
        "hub_commit": hub_commit(directory),
        "model_type": config.model_type,
        "architectures": config.architectures,
        "num_hidden_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embeddings,
        "parameters": int(
            sum(
                t.size
                for k, t in weights.tensors.items()
                if not k.endswith(SCALE_SUFFIX) and t.dtype.kind in "fi" and t.dtype != "int64"
            )
        ),
        "encoder_parameters": encoder.num_parameters,
        "notes": NOTES,
        "size_bytes": int(sum(f.stat().st_size for f in files)),
        "dtype": "int8" if is_quantized(weights) else "float32",
        "stored_dtypes": weights.stored_dtypes(),
        "id2label": {str(k): v for k, v in config.id2label.items()},
        "task": task.name,
        "output": task.output,
        "sentence_transformers": {
            "pooling": list(pooling.modes),
            "normalize": pooling.normalize,
            "max_seq_length": pooling.max_seq_length,
        }
        if pooling is not None and (directory / "modules.json").is_file()
        else None,
        "model_card": card_metadata(directory),
        "converted_from": weights.metadata.get("converted_from"),
    }


def quantized_card(source: Path, source_name: str, version: str, sizes: dict[str, int], dtype: str = "int8") -> str:
    """The ``README.md`` of an int8 (or bfloat16) copy: the source card's front matter (license,
    datasets... carry over), what was converted, from which source (path, or Hub id and commit), by
    which npformer, the file sizes (bytes), then the source card's text."""
    card = source / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    front, body = "", text
    if text.startswith("---\n") and "\n---" in text[4:]:
        end = text.index("\n---", 4) + len("\n---")
        front, body = text[:end].rstrip() + "\n\n", text[end:].lstrip("\n")
    commit = hub_commit(source)
    origin = f"`{source_name}`" + (f" at commit `{commit}`" if commit else "")
    what = {
        "int8": "- quantized: every encoder Linear weight and the word embeddings, symmetric int8 per output "
        "channel / row with float32 scales (`*_scale`); activations are quantized per token at run time",
        "bfloat16": "- bfloat16: every encoder Linear weight and the word embeddings, rounded to nearest even "
        '(load with `dtype="bfloat16"` to multiply in bfloat16; otherwise they are widened to float32)',
    }[dtype]
    lines = [
        f"# {'INT8' if dtype == 'int8' else 'bfloat16'} copy of {source_name}",
        "",
        f"Written by npformer {version} (`npformer quantize`) from {origin}.",
        "",
        what,
        "- kept in float32: biases, layer norms, position and token type embeddings, pooler, task head",
        *[f"- `{name}`: {size:,} bytes" for name, size in sizes.items()],
        "",
    ]
    if body.strip():
        lines += ["## The source model's card", "", body]
    return front + "\n".join(lines).rstrip() + "\n"
