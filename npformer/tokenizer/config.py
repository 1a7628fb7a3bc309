"""``tokenizer_config.json``: the settings Transformers keeps beside the tokenizer's files."""

from __future__ import annotations

from pathlib import Path

from npformer.files import read_json

SPECIAL_TOKEN_KEYS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def read_config(config_file: Path) -> tuple[dict, dict]:
    """``tokenizer_config.json`` (``{}`` when absent) and the WordPiece keyword arguments it gives
    (``do_lower_case``, ``strip_accents``, ``tokenize_chinese_chars``, ``truncation_side``, the
    special tokens, a sensible ``model_max_length``). Raises ``ValueError`` naming the file and
    field for a value of the wrong type."""
    if not config_file.is_file():
        return {}, {}
    config = read_json(config_file)
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} holds a JSON {type(config).__name__}, expected an object of fields")
    kwargs: dict = {}
    for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "truncation_side", *SPECIAL_TOKEN_KEYS):
        value = config.get(key)
        if isinstance(value, dict):  # serialized AddedToken
            value = value.get("content")
        expected = str if key in SPECIAL_TOKEN_KEYS or key == "truncation_side" else bool
        if value is not None and not isinstance(value, expected):
            raise ValueError(f"{config_file}: field {key!r} must be a {expected.__name__}, got {value!r}")
        if key == "truncation_side" and value not in (None, "right", "left"):
            raise ValueError(f"{config_file}: field 'truncation_side' must be 'right' or 'left', got {value!r}")
        if value is not None or key == "strip_accents":
            kwargs[key] = value
    max_len = config.get("model_max_length")
    if isinstance(max_len, int) and not isinstance(max_len, bool) and 0 < max_len < 1_000_000:
        kwargs["model_max_length"] = max_len
    return config, kwargs
