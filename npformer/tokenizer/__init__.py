"""Tokenizers with exact parity with Hugging Face's fast tokenizers: WordPiece (BERT) and
byte-level BPE (GPT-2, RoBERTa), each built from its components as ``tokenizers`` runs them:

  1. added tokens (:mod:`.added_tokens`): special tokens written in the text (``[MASK]``,
     ``<mask>``...) are split out first and matched verbatim;
  2. a normalizer (:mod:`.normalizer`, ``BertNormalizer``): the text as the model reads it,
     remembering which original character each output character came from;
  3. a pre-tokenizer (:mod:`.pre_tokenizer` ``BertPreTokenizer``, :mod:`.byte_level` ``ByteLevel``):
     words, each with the positions of its characters;
  4. a model (:mod:`.wordpiece`, :mod:`.bpe`): each word's pieces and their vocabulary ids;
  5. a post-processor (:mod:`.post_processor`) and :mod:`.encoding`: special tokens around one
     text or a pair, truncation with stride windows, padding; a decoder (:mod:`.decoders`) back.

:mod:`.split` runs steps 1-4 for one text. Offsets are character offsets into the original text.
:meth:`Tokenizer.from_pretrained` reads ``tokenizer.json`` (:mod:`.fast_json`), ``vocab.json`` +
``merges.txt`` or ``vocab.txt``. Where the slow ``BertTokenizer`` disagrees with the fast one we
follow the fast one (see ``tests/test_tokenizer.py::test_fast_and_slow_disagree``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from npformer.files import read_vocab
from npformer.tokenizer import fast_json, sentencepiece
from npformer.tokenizer.added_tokens import AddedToken, AddedTokens
from npformer.tokenizer.config import SPECIAL_TOKEN_KEYS, read_config
from npformer.tokenizer.decoders import WordPieceDecoder, clean_up
from npformer.tokenizer.encoding import (
    BatchEncoding,
    Encoding,
    Pieces,
    as_pairs,
    pad,
    padding_strategy,
    truncate,
    truncation_side as check_side,
    truncation_strategy,
)
from npformer.tokenizer.normalizer import BertNormalizer
from npformer.tokenizer.post_processor import BertProcessing
from npformer.tokenizer.pre_tokenizer import BertPreTokenizer
from npformer.tokenizer.split import text_pieces
from npformer.tokenizer.wordpiece import WordPiece

BERT_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


class Tokenizer:
    """A tokenizer: BERT's WordPiece when built from a vocabulary, any supported pipeline of
    components through :meth:`from_components` / :meth:`from_pretrained`.

    Args:
        vocab_file: path to ``vocab.txt`` (one token per line; the line number is the id).
        do_lower_case: lowercase the text (and strip accents unless ``strip_accents`` says otherwise).
        strip_accents: None follows ``do_lower_case``, as in Transformers.
        tokenize_chinese_chars: isolate each CJK ideograph as its own word.
        model_max_length: the default ``max_length`` for truncation and ``padding="max_length"``.
        unk_token: the unknown token.
        sep_token: the separator token.
        pad_token: the padding token.
        cls_token: the classification token.
        mask_token: the mask token.
        max_input_chars_per_word: longer words become one unknown token (100, as BERT).
        truncation_side: ``"right"`` (keep the start of a text) or ``"left"`` (keep its end), as
            Transformers' attribute of that name; settable.

    Raises:
        FileNotFoundError: ``vocab_file`` does not exist.
        ValueError: a special token is missing from the vocabulary.
    """

    def __init__(  # noqa: PLR0913 - as BertTokenizer
        self,
        vocab_file: str | Path | list[str],
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        model_max_length: int = 512,
        unk_token: str = "[UNK]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        cls_token: str = "[CLS]",
        mask_token: str = "[MASK]",
        max_input_chars_per_word: int = 100,
        truncation_side: str = "right",
    ):
        if isinstance(vocab_file, list):  # tokens in id order, e.g. from tokenizer.json
            tokens, vocab_file = vocab_file, "the vocabulary"
        else:
            vocab_file = Path(vocab_file)
            if not vocab_file.is_file():
                raise FileNotFoundError(f"vocabulary file not found: {vocab_file}")
            tokens = read_vocab(vocab_file)
        vocab: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            vocab.setdefault(tok, i)
        special = dict(unk_token=unk_token, sep_token=sep_token, pad_token=pad_token, cls_token=cls_token, mask_token=mask_token)
        for name, token in special.items():
            if token not in vocab:
                raise ValueError(f"{name} {token!r} is not in {vocab_file}")
        self.do_lower_case = do_lower_case
        self.strip_accents = do_lower_case if strip_accents is None else strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.max_input_chars_per_word = max_input_chars_per_word
        self._setup(
            tokens,
            normalizer=BertNormalizer(do_lower_case, self.strip_accents),
            pre_tokenizer=BertPreTokenizer(tokenize_chinese_chars),
            model=WordPiece(vocab, vocab[unk_token], max_input_chars_per_word),
            post_processor=BertProcessing((cls_token, vocab[cls_token]), (sep_token, vocab[sep_token])),
            decoder=WordPieceDecoder(),
            added_tokens=[AddedToken(t, vocab[t]) for t in dict.fromkeys(special.values())],
            special=special,
            model_max_length=model_max_length,
            truncation_side=truncation_side,
            clean_up_tokenization_spaces=True,
            model_input_names=BERT_INPUTS,
        )

    @classmethod
    def from_components(cls, tokens: list[str], **components) -> "Tokenizer":
        """A tokenizer from its parts (what :mod:`.fast_json` builds from ``tokenizer.json``).

        ``tokens`` are the vocabulary in id order, added tokens included; ``components`` are
        :meth:`_setup`'s keyword arguments: ``normalizer`` (or None), ``pre_tokenizer`` (or None),
        ``model``, ``post_processor``, ``decoder``, ``added_tokens`` (:class:`AddedToken` list),
        ``special`` (``unk_token``... -> token or None), ``model_max_length``, ``truncation_side``,
        ``clean_up_tokenization_spaces``, ``model_input_names``.
        """
        self = cls.__new__(cls)
        self._setup(tokens, **components)
        return self

    def _setup(  # noqa: PLR0913
        self,
        tokens: list[str],
        *,
        normalizer,
        pre_tokenizer,
        model,
        post_processor,
        decoder,
        added_tokens: list[AddedToken],
        special: dict,
        model_max_length: int = 512,
        truncation_side: str = "right",
        clean_up_tokenization_spaces: bool = False,
        model_input_names: tuple[str, ...] = BERT_INPUTS,
    ) -> None:
        self.vocab: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            self.vocab.setdefault(tok, i)
        self.ids_to_tokens = dict(enumerate(tokens))
        self.normalizer, self.pre_tokenizer, self.model = normalizer, pre_tokenizer, model
        self.post_processor, self.decoder = post_processor, decoder
        self.added_tokens = AddedTokens(added_tokens, normalizer)
        self.model_max_length = model_max_length
        self.match_cache: dict[str, tuple] = {}  # a word as the pre-tokenizer's regex matched it -> its pieces (split.py)
        self.truncation_side = check_side(truncation_side)
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.model_input_names = tuple(model_input_names)
        for key in SPECIAL_TOKEN_KEYS:
            token = special.get(key)
            setattr(self, key, token)
            setattr(self, key + "_id", self.vocab.get(token) if token is not None else None)
        self.special_tokens = [t for t in (special.get(k) for k in SPECIAL_TOKEN_KEYS) if t is not None]
        self.all_special_ids = sorted(
            {t.id for t in added_tokens if t.special} | {self.vocab[t] for t in self.special_tokens if t in self.vocab}
        )

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides) -> "Tokenizer":
        """Build from a directory with ``tokenizer.json`` (see :mod:`.fast_json`; its vocabulary
        and components win, as in Transformers' fast tokenizer), ``vocab.json`` + ``merges.txt``
        (byte-level BPE, RoBERTa's layout), a SentencePiece ``.model`` (:mod:`.sentencepiece`; the
        ``sentencepiece`` extra) or ``vocab.txt`` (WordPiece), and optionally ``tokenizer_config.json``.

        Reads ``do_lower_case``, ``strip_accents``, ``tokenize_chinese_chars``, ``model_max_length``,
        ``truncation_side`` and the special tokens from the config; keyword ``overrides`` win over
        the file. Raises ``FileNotFoundError`` when the directory or its vocabulary is missing, and
        ``ValueError`` naming the file when ``tokenizer_config.json`` is not a JSON object of the
        right field types, a vocabulary is malformed, or a component is one npformer does not implement.
        """
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"tokenizer directory not found: {path}")
        config, kwargs = read_config(path / "tokenizer_config.json")
        common = {k: kwargs[k] for k in ("model_max_length", "truncation_side") if k in kwargs}
        if (path / "tokenizer.json").is_file() and (
            fast_json.model_type(path / "tokenizer.json") != "WordPiece" or not fast_json.bert_template(path / "tokenizer.json")
        ):
            tokens, parts = fast_json.components(path / "tokenizer.json", config)
            return cls.from_components(tokens, **{**parts, **common, **overrides})
        if not (path / "tokenizer.json").is_file() and (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            tokens, parts = fast_json.gpt2_files(path, config)
            return cls.from_components(tokens, **{**parts, **common, **overrides})
        spm = sentencepiece.model_file(path)
        if not (path / "tokenizer.json").is_file() and spm is not None:
            tokens, parts = sentencepiece.components(spm, config)
            return cls.from_components(tokens, **{**parts, **common, **overrides})
        vocab: Path | list[str] = path / "vocab.txt"
        if (path / "tokenizer.json").is_file():  # what the fast tokenizer reads: its vocabulary and flags win
            vocab, fast = fast_json.read_tokenizer_json(path / "tokenizer.json")
            kwargs.update(fast)
        elif not vocab.is_file():
            raise FileNotFoundError(f"no tokenizer.json, vocab.json + merges.txt, SentencePiece model or vocab.txt in {path}")
        kwargs.update(overrides)
        return cls(vocab, **kwargs)

    def __len__(self) -> int:
        return len(self.ids_to_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.ids_to_tokens)

    def pieces(self, text: str, max_tokens: int | None = None) -> Pieces:
        """The tokens of ``text`` without the post-processor's special tokens, as compact arrays.

        With ``max_tokens`` tokenizing stops once that many tokens are found (what a truncating
        caller keeps), so a 10 MB text costs no more than its first window. Memory: the normalized
        text plus 16 bytes per token (and 4 bytes per character when normalization changes lengths).
        Raises ``ValueError`` when ``text`` is not a str.
        """
        return text_pieces(self, text, max_tokens)

    def encode(self, text: str, add_special_tokens: bool = False) -> Encoding:
        """One text as an :class:`Encoding` (ids, tokens, offsets, word ids), without truncation;
        ``add_special_tokens`` wraps it in ``[CLS] ... [SEP]``. Raises ``ValueError`` for a non-str."""
        pieces = self.pieces(text)
        enc = pieces.window(0, len(pieces), self.ids_to_tokens, 0)
        return self._add_special_tokens(enc, None) if add_special_tokens else enc

    def encoding_from_ids(self, ids) -> Encoding:
        """An :class:`Encoding` of token ids taken as the whole input (special tokens are not
        added: put them in ``ids``), with their tokens, the special-tokens mask, offsets ``(0, 0)``
        and type ids 0. Raises ``ValueError`` for an id outside the vocabulary."""
        ids = [int(i) for i in ids]
        tokens = self.convert_ids_to_tokens(ids)
        special = set(self.all_special_ids)
        n = len(ids)
        return Encoding(ids, tokens, [(0, 0)] * n, [None] * n, [0] * n, [0] * n, [int(i in special) for i in ids], [1] * n)

    def is_empty(self, text: str) -> bool:
        """True when ``text`` gives no token at all (it held only whitespace, control or format
        characters such as ``\\x00`` or ``\\u200b``, or accents that are stripped). Such a text
        encodes as the post-processor's special tokens alone (``[CLS] [SEP]``)."""
        if isinstance(self.normalizer, BertNormalizer) and isinstance(self.pre_tokenizer, BertPreTokenizer):
            # stops at the first character that survives normalization: every such character starts a word
            return all(not out.strip(" ") for out in map(self.normalizer.char, text))
        return len(self.pieces(text, 1)) == 0

    def tokenize(self, text: str) -> list[str]:
        """Token strings of ``text`` without special tokens, e.g. ``["un", "##aff", "##able"]``."""
        return self.encode(text).tokens

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        """Vocabulary id of each token; unknown strings map to the unknown token's id."""
        if isinstance(tokens, str):
            return self.vocab.get(tokens, self.unk_token_id)
        return [self.vocab.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | list[int]) -> str | list[str]:
        """Token string of each id. Raises ``ValueError`` for an id outside the vocabulary."""
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token(int(ids))
        return [self._id_to_token(int(i)) for i in ids]

    def _id_to_token(self, i: int) -> str:
        if i not in self.ids_to_tokens:
            raise ValueError(f"token id {i} is outside the vocabulary (size {len(self)})")
        return self.ids_to_tokens[i]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Token strings joined by the tokenizer's decoder (WordPiece: ``##`` pieces glued to the
        previous token, others spaced; byte-level: the bytes they stand for, as UTF-8)."""
        return self.decoder(tokens)

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of a sequence of ids, as the fast tokenizer's ``decode`` (its decoder, then
        Transformers' ``clean_up_tokenization`` when ``clean_up_tokenization_spaces``). Raises
        ``ValueError`` for an id outside the vocabulary."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.all_special_ids]
        text = self.decoder(self.convert_ids_to_tokens(ids))
        return clean_up(text) if self.clean_up_tokenization_spaces else text

    # ---- special tokens, truncation, padding (see .encoding)

    def encode_batch(
        self,
        pairs: list[tuple[str, str | None]],
        *,
        truncation: bool | str = "do_not_truncate",  # noqa: PLR0913
        max_length: int | None = None,
        stride: int = 0,
        overflow: bool = True,
        side: str | None = None,
    ) -> list[Encoding]:
        """Encode ``(text, text_pair or None)`` pairs.

        With ``overflow`` (the default) every truncation window is returned, in Transformers'
        order; with ``overflow=False`` exactly one ``Encoding`` per pair (the first window), and a
        lone text cut on the right is tokenized only as far as that window reaches. ``side``
        overrides :attr:`truncation_side` for this call. Each ``Encoding`` has
        ``overflow_to_sample`` set to the index of its pair and ``truncated`` set when tokens of
        the pair are not in it. Raises ``ValueError`` as ``__call__`` does, and for a negative stride.
        """
        truncation = truncation_strategy(truncation)
        side = check_side(side or self.truncation_side)
        if not isinstance(stride, (int, np.integer)) or isinstance(stride, bool) or stride < 0:
            raise ValueError(f"stride must be an integer >= 0, got {stride!r}")
        truncating = truncation != "do_not_truncate" and max_length is not None
        out = []
        for sample, (text, pair) in enumerate(pairs):
            # one window of a lone text never holds more than max_length - (special tokens): stop one after
            cap = (
                max(max_length - self.post_processor.added_tokens(False) + 1, 0)
                if truncating and not overflow and pair is None and side == "right"
                else None
            )
            first = self.pieces(text, cap)
            second = self.pieces(pair) if pair is not None else None
            n_b = len(second) if second is not None else None
            added = self.post_processor.added_tokens(pair is not None)
            spans = (
                truncate(len(first), n_b, truncation, max_length, stride, added, side)
                if truncating
                else [((0, len(first)), None if n_b is None else (0, n_b))]
            )
            whole = len(first) + (n_b or 0)
            for a_span, b_span in spans[: None if overflow else 1]:
                a = first.window(*a_span, self.ids_to_tokens, 0)
                b = second.window(*b_span, self.ids_to_tokens, 1) if second is not None else None
                enc = self._add_special_tokens(a, b)
                enc.overflow_to_sample = sample
                enc.truncated = len(a) + (len(b) if b is not None else 0) < whole
                out.append(enc)
        return out

    def _add_special_tokens(self, a: Encoding, b: Encoding | None) -> Encoding:
        return self.post_processor.process(a, b)

    def __call__(  # noqa: PLR0913 - Transformers' call
        self,
        text,
        text_pair=None,
        *,
        truncation: bool | str = False,
        max_length: int | None = None,
        padding: bool | str = False,
        stride: int = 0,
        return_overflowing_tokens: bool = False,
        return_offsets_mapping: bool = False,
        return_special_tokens_mask: bool = False,
        return_attention_mask: bool = True,
        return_token_type_ids: bool | None = None,
        return_tensors: str | None = "np",
    ) -> BatchEncoding:
        """Encode a text, a pair, or a batch of texts/pairs into ``(batch, seq_len)`` int64 arrays.

        Args:
            text: a str, a list of str, or a list of ``(text, text_pair)`` tuples.
            text_pair: a str (with a str ``text``) or a list of str (with a list ``text``).
            truncation: True/``"longest_first"``, ``"only_first"``, ``"only_second"`` or False.
            max_length: total length with special tokens; defaults to ``model_max_length``.
            padding: True/``"longest"``, ``"max_length"`` or False.
            stride: tokens shared by consecutive overflowing windows.
            return_overflowing_tokens: return every window, and ``overflow_to_sample_mapping``.
            return_attention_mask: leave ``attention_mask`` out when False.
            return_token_type_ids: include ``token_type_ids`` (default: when the tokenizer's
                ``model_input_names`` has them, as BERT's do and RoBERTa's do not).
            return_tensors: ``"np"`` (or None): NumPy arrays are what npformer returns; ``"pt"``,
                ``"tf"`` and ``"jax"`` are refused with a ValueError.

        Returns a ``BatchEncoding`` with the keys and values of
        ``BertTokenizerFast(..., return_tensors="np")``.

        Raises:
            ValueError: text is not a str (or list of them); unknown strategy; rows of different
                lengths without padding; stride not smaller than the room left by truncation;
                a pair whose truncated text cannot be shortened enough.
        """
        if return_tensors not in (None, "np"):
            raise ValueError(
                f"return_tensors={return_tensors!r}: npformer returns NumPy arrays only "
                f"(return_tensors='np'); convert them yourself if you need another framework"
            )
        pairs = as_pairs(text, text_pair)
        strategy = truncation_strategy(truncation)
        padding = padding_strategy(padding)
        if max_length is None and (strategy != "do_not_truncate" or padding == "max_length"):
            max_length = self.model_max_length
        encodings = self.encode_batch(
            pairs, truncation=strategy, max_length=max_length, stride=stride, overflow=return_overflowing_tokens
        )
        width = max(len(e) for e in encodings)
        if padding == "max_length":
            width = max(width, max_length)
        if padding == "do_not_pad" and len({len(e) for e in encodings}) > 1:
            raise ValueError("the encoded texts have different lengths; pass padding=True (or 'max_length') to get arrays")
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        keys = (
            ("input_ids",)
            + ("token_type_ids",) * return_token_type_ids
            + ("attention_mask",) * return_attention_mask
            + ("special_tokens_mask",) * return_special_tokens_mask
            + ("offset_mapping",) * return_offsets_mapping
        )
        data = pad(encodings, self.pad_token_id, width, keys)
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = np.array([e.overflow_to_sample for e in encodings], dtype=np.int64)
        return BatchEncoding(data, encodings, self.pad_token)


__all__ = ["BatchEncoding", "Encoding", "Pieces", "Tokenizer"]
