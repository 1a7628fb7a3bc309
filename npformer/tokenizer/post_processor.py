"""Post-processors: where special tokens go around one text or a pair, and how many they are.

As Hugging Face tokenizers' ``processors`` (``BertProcessing``: ``[CLS] A [SEP]`` and
``[CLS] A [SEP] B [SEP]``, type ids 0 for the first part and 1 for the second). Truncation asks
:meth:`BertProcessing.added_tokens` how much room the special tokens take, so that a template
with another shape (RoBERTa's ``<s> A </s></s> B </s>``) is one more class here.
Reference: tokenizers ``processors/bert.rs``.
"""

from __future__ import annotations

from dataclasses import dataclass

from npformer.tokenizer.encoding import Encoding


@dataclass(frozen=True)
class BertProcessing:
    """``cls`` and ``sep``: ``(token, id)`` each."""

    cls: tuple[str, int]
    sep: tuple[str, int]

    def added_tokens(self, is_pair: bool) -> int:
        """How many special tokens :meth:`process` adds (tokenizers' ``added_tokens``)."""
        return 3 if is_pair else 2

    def process(self, a: Encoding, b: Encoding | None) -> Encoding:
        """``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]``: ids, tokens, offsets ``(0, 0)`` and word /
        sequence ids None for the special tokens, type ids 0 then 1, the special-tokens mask."""
        (cls_token, cls_id), (sep_token, sep_id) = self.cls, self.sep
        ids = [cls_id] + a.ids + [sep_id]
        tokens = [cls_token] + a.tokens + [sep_token]
        offsets = [(0, 0)] + a.offsets + [(0, 0)]
        word_ids = [None] + a.word_ids + [None]
        seq_ids = [None] + [0] * len(a) + [None]
        type_ids = [0] * (len(a) + 2)
        special = [1] + [0] * len(a) + [1]
        if b is not None:
            ids += b.ids + [sep_id]
            tokens += b.tokens + [sep_token]
            offsets += b.offsets + [(0, 0)]
            word_ids += b.word_ids + [None]
            seq_ids += [1] * len(b) + [None]
            type_ids += [1] * (len(b) + 1)
            special += [0] * len(b) + [1]
        return Encoding(ids, tokens, offsets, word_ids, seq_ids, type_ids, special, [1] * len(ids))
