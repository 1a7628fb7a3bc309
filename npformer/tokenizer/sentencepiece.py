"""SentencePiece ``.model`` files (``sentencepiece.bpe.model``, ``spiece.model``, ``spm.model``) without a
``tokenizer.json``: the ModelProto is read with the ``protobuf`` package (the ``sentencepiece``
extra; its schema, the few fields used, is declared here), then turned into tokenizer components as
Transformers' converters do for the tokenizer class ``tokenizer_config.json`` names
(``convert_slow_tokenizer.py``: ``XLMRobertaConverter``, ``CamembertConverter``, ``AlbertConverter``,
``DebertaV2Converter``). Only Unigram models are read (``trainer_spec.model_type`` 1).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from npformer.extras import require_extra
from npformer.tokenizer import decoders, normalizer, pre_tokenizer
from npformer.tokenizer.added_tokens import AddedToken
from npformer.tokenizer.post_processor import TemplateProcessing
from npformer.tokenizer.precompiled import Precompiled
from npformer.tokenizer.unigram import Unigram

MODEL_FILES = ("sentencepiece.bpe.model", "spiece.model", "spm.model", "sentencepiece.model", "tokenizer.model")
CLASSES = ("XLMRoberta", "Camembert", "Albert", "DebertaV2")
CONTROL, USER_DEFINED = 3, 4  # SentencePiece piece types that become added tokens


@functools.cache
def _model_proto():
    """The ModelProto message class, for the fields read here (field numbers of sentencepiece's
    ``sentencepiece_model.proto``; enums read as their int32 wire values)."""
    require_extra("sentencepiece", "google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="npformer_sentencepiece.proto", package="npformer_spm", syntax="proto2")

    def message(name: str, fields: list[tuple]) -> None:
        m = file.message_type.add(name=name)
        for field_name, number, kind, extra in fields:
            field = m.field.add(name=field_name, number=number, type=kind, label=f.LABEL_OPTIONAL, **extra)
            if kind == f.TYPE_MESSAGE and field_name == "pieces":
                field.label = f.LABEL_REPEATED

    message(
        "SentencePiece",
        [("piece", 1, f.TYPE_STRING, {}), ("score", 2, f.TYPE_FLOAT, {}), ("type", 3, f.TYPE_INT32, {"default_value": "1"})],
    )
    message(
        "TrainerSpec",
        [
            ("model_type", 3, f.TYPE_INT32, {"default_value": "1"}),
            ("byte_fallback", 35, f.TYPE_BOOL, {}),
            ("unk_id", 40, f.TYPE_INT32, {"default_value": "0"}),
        ],
    )
    message("NormalizerSpec", [("precompiled_charsmap", 2, f.TYPE_BYTES, {})])
    message(
        "ModelProto",
        [
            ("pieces", 1, f.TYPE_MESSAGE, {"type_name": ".npformer_spm.SentencePiece"}),
            ("trainer_spec", 2, f.TYPE_MESSAGE, {"type_name": ".npformer_spm.TrainerSpec"}),
            ("normalizer_spec", 3, f.TYPE_MESSAGE, {"type_name": ".npformer_spm.NormalizerSpec"}),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("npformer_spm.ModelProto"))


def read_model(file: Path):
    """The ModelProto of ``file``. Raises ``ValueError`` naming the file when it is not one."""
    proto = _model_proto()()
    try:
        proto.ParseFromString(Path(file).read_bytes())
    except Exception as e:  # protobuf's DecodeError: not a SentencePiece model
        raise ValueError(f"{file}: not a SentencePiece model ({type(e).__name__}: {str(e)[:120]})") from None
    if not proto.pieces:
        raise ValueError(f"{file}: a SentencePiece model without pieces")
    return proto


def model_file(directory: Path) -> Path | None:
    """The SentencePiece model file in ``directory``, if any."""
    return next((directory / name for name in MODEL_FILES if (directory / name).is_file()), None)


def components(file: Path, config: dict) -> tuple[list[str], dict]:
    """``(tokens in id order, Tokenizer.from_components keyword arguments)`` for SentencePiece model
    ``file`` and ``tokenizer_config.json``'s object ``config``, as Transformers' converter for
    ``config["tokenizer_class"]`` builds the fast tokenizer; the config's ``added_tokens_decoder``
    gives the added tokens' ids and flags. Raises ``ValueError`` naming the file for another
    tokenizer class or model type."""
    kind = str(config.get("tokenizer_class") or "").removesuffix("Fast").removesuffix("Tokenizer")
    if kind not in CLASSES:
        raise ValueError(
            f"{file}: a SentencePiece model for tokenizer_class {config.get('tokenizer_class')!r}; "
            f"npformer converts those of {', '.join(c + 'Tokenizer' for c in CLASSES)} (or reads a "
            f"tokenizer.json)"
        )
    proto = read_model(file)
    if proto.trainer_spec.model_type != 1:
        raise ValueError(
            f"{file}: a SentencePiece model of type {proto.trainer_spec.model_type} (not Unigram); "
            f"npformer reads such models from their tokenizer.json"
        )
    vocab, unk_id = _vocab(kind, proto)
    ids: dict[str, int] = {}
    for i, (piece, _) in enumerate(vocab):
        ids.setdefault(piece, i)
    added = {
        p.piece: AddedToken(p.piece, ids[p.piece], special=p.type == CONTROL)
        for p in proto.pieces
        if p.type in (CONTROL, USER_DEFINED) and p.piece in ids
    }
    tokens = [piece for piece, _ in vocab]
    for key, spec in sorted((config.get("added_tokens_decoder") or {}).items(), key=lambda kv: int(kv[0])):
        token = AddedToken(
            str(spec["content"]),
            int(key),
            bool(spec.get("special", True)),
            bool(spec.get("lstrip")),
            bool(spec.get("rstrip")),
            bool(spec.get("single_word")),
            bool(spec.get("normalized")),
        )
        if token.id == len(tokens):
            tokens.append(token.content)
        elif token.id > len(tokens) or tokens[token.id] != token.content:
            raise ValueError(
                f"{file}: tokenizer_config.json's added token {token.content!r} has id {token.id}, "
                f"which the converted vocabulary of {len(tokens)} holds for another"
            )
        added[token.content] = token
    charsmap = proto.normalizer_spec.precompiled_charsmap
    scheme = "always" if config.get("add_prefix_space", True) else "never"
    if scheme == "always" and config.get("legacy", True) is False:
        scheme = "first"
    metaspace = pre_tokenizer.Metaspace("\u2581", scheme)
    if kind == "DebertaV2" and config.get("split_by_punct", False):
        metaspace = pre_tokenizer.SequencePreTokenizer([pre_tokenizer.punctuation(), metaspace])
    special = {key: _name(config.get(key)) for key in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")}
    defaults = {"unk_token": "<unk>", "pad_token": "<pad>", "sep_token": "</s>", "cls_token": "<s>", "mask_token": "<mask>"}
    if kind in ("Albert", "DebertaV2"):
        defaults.update(
            sep_token="[SEP]",
            cls_token="[CLS]",
            mask_token="[MASK]",
            pad_token="<pad>" if kind == "Albert" else "[PAD]",
            unk_token="<unk>" if kind == "Albert" else "[UNK]",
        )
    special = {k: v or defaults[k] for k, v in special.items()}
    where = {t: i for i, t in reversed(list(enumerate(tokens)))}
    cls, sep = special["cls_token"], special["sep_token"]
    for name in (cls, sep):
        if name not in where:
            raise ValueError(
                f"{file}: the special token {name!r} is neither a piece nor in tokenizer_config.json's added_tokens_decoder"
            )
    fairseq = kind in ("XLMRoberta", "Camembert")  # <s> A </s></s> B </s>, one type id
    a, b = ("A", 0), ("B", 0 if fairseq else 1)
    c, s, s_b = ((cls, where[cls]), 0), ((sep, where[sep]), 0), ((sep, where[sep]), b[1])
    pair = (c, a, s, s, b, s_b) if fairseq else (c, a, s, b, s_b)
    return tokens, dict(
        normalizer=normalizer.sequence(_normalizers(kind, config, charsmap)),
        pre_tokenizer=metaspace,
        model=Unigram(vocab, unk_id),
        post_processor=TemplateProcessing((c, a, s), pair),
        decoder=decoders.MetaspaceDecoder("\u2581", scheme),
        added_tokens=list(added.values()),
        special=special,
        clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        model_input_names=("input_ids", "attention_mask") if fairseq else ("input_ids", "token_type_ids", "attention_mask"),
    )


def _vocab(kind: str, proto) -> tuple[list[tuple[str, float]], int]:
    """The converted vocabulary and unknown id: XLM-R and CamemBERT put fairseq's special tokens
    first and ``<mask>`` last; ALBERT lowers pieces ending in a comma after a digit."""
    pieces = [(p.piece, float(p.score)) for p in proto.pieces]
    if kind == "XLMRoberta":
        return [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *pieces[3:], ("<mask>", 0.0)], 3
    if kind == "Camembert":
        return [
            ("<s>NOTUSED", 0.0),
            ("<pad>", 0.0),
            ("</s>NOTUSED", 0.0),
            ("<unk>", 0.0),
            ("<unk>NOTUSED", -100.0),
            *pieces[1:],
            ("<mask>", 0.0),
        ], 3
    vocab = [(p, s) if kind != "Albert" or len(p) < 2 or p[-1] != "," or not p[-2].isdigit() else (p, s - 100) for p, s in pieces]
    return vocab, proto.trainer_spec.unk_id


def _normalizers(kind: str, config: dict, charsmap: bytes) -> list:
    """The normalizer steps of ``kind``'s converter."""
    precompiled = [Precompiled(charsmap)] if charsmap else []
    if kind == "Albert":
        steps = [normalizer.replace(re.compile("``"), '"'), normalizer.replace(re.compile("''"), '"')]
        if not config.get("keep_accents", False):
            steps += [normalizer.unicode_form("NFKD"), normalizer.strip_accents]
        if config.get("do_lower_case", True):
            steps.append(normalizer.lowercase)
        return [*steps, *precompiled, normalizer.replace(re.compile(" {2,}"), " ")]
    if kind == "DebertaV2":
        steps = [normalizer.lowercase] if config.get("do_lower_case", False) else []
        return [*steps, normalizer.strip(True, True), *precompiled, normalizer.replace(re.compile(" {2,}"), " ")]
    return [*precompiled, normalizer.strip(False, True), normalizer.replace(re.compile(" {2,}"), "\u2581")]


def _name(value) -> str | None:
    value = value.get("content") if isinstance(value, dict) else value
    return value if isinstance(value, str) else None
