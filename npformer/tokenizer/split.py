"""From text to tokens, steps 1-4 of :mod:`npformer.tokenizer` for one text: added tokens, the
normalizer, the pre-tokenizer and the model, giving each token's id, character offsets into the
original text and word index as compact arrays (:class:`~npformer.tokenizer.encoding.Pieces`).

Text that normalization keeps char for char and that a regex pre-tokenizer splits (BERT's,
byte-level BPE's on ASCII text, SentencePiece's Metaspace) takes a tight loop over the regex's matches, which remembers each
matched word's pieces (``Tokenizer.match_cache``); everything else takes the general loop, which
follows the normalizer's alignment and each word's character positions.
"""

from __future__ import annotations

import sys
from array import array

from npformer.tokenizer.encoding import Pieces
from npformer.tokenizer.unigram import Unigram

MATCH_CACHE = 200_000  # words whose pieces the fast loop remembers (keyed as matched, before any byte mapping)


def text_pieces(tok, text: str, max_tokens: int | None = None) -> Pieces:
    """The tokens of ``text`` by the components of ``tok`` (a :class:`~npformer.tokenizer.Tokenizer`),
    without the post-processor's special tokens; see :meth:`Tokenizer.pieces`. Raises
    ``ValueError`` when ``text`` is not a str."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    ids, starts, ends, words = array("i"), array("i"), array("i"), array("i")
    texts: dict[int, str] = {}  # tokens whose string is not the vocabulary's (an added token with its spaces)
    matches = getattr(tok.pre_tokenizer, "matches", None)  # a regex pre-tokenizer (BERT's, byte-level)
    limit = max_tokens if max_tokens is not None else sys.maxsize
    unknown_text = unknown_text_id(tok.model)
    model, add_id, add_start, add_end, add_word = tok.model, ids.append, starts.append, ends.append, words.append
    word = 0
    for seg_start, seg_end, added in tok.added_tokens(text):
        if len(ids) >= limit:
            break
        if added is not None:
            if seg_end - seg_start != len(added.content):
                texts[len(ids)] = text[seg_start:seg_end]
            ids.append(added.id)
            starts.append(seg_start)
            ends.append(seg_end)
            words.append(word)
            word += 1
            continue
        if seg_start == seg_end:
            continue
        normalized, align = (
            tok.normalizer(text[seg_start:seg_end]) if tok.normalizer is not None else (text[seg_start:seg_end], None)
        )
        for run_start, run_end, late in tok.added_tokens.in_normalized(normalized):
            if late is not None:  # an added token found in the normalized text
                a, b = (run_start, run_end - 1) if align is None else (align[run_start], align[run_end - 1])
                if run_end - run_start != len(late.content):
                    texts[len(ids)] = normalized[run_start:run_end]
                add_id(late.id)
                add_start(seg_start + a)
                add_end(seg_start + b + 1)
                add_word(word)
                word += 1
                continue
            run = normalized if run_end - run_start == len(normalized) else normalized[run_start:run_end]
            at_start = seg_start == 0 and run_start == 0
            # the fast loop needs text kept char for char (a stripped trailing space keeps it so)
            plan = matches(run, at_start) if matches is not None and _kept_char_for_char(align) else None
            if plan is not None:  # the common case, in its own tight loop
                columns = (ids, starts, ends, words)
                word = _add_matches(tok, *plan, run, seg_start + run_start, word, columns, texts, limit)
                continue
            words_of = tok.pre_tokenizer(run, at_start) if tok.pre_tokenizer is not None else [(0, run, None)]
            for s0, piece, chars in words_of:
                for piece_id, s, e in model(piece):
                    if piece_id == unknown_text:  # its token string is the text it stands for
                        texts[len(ids)] = piece[s:e]
                    add_id(piece_id)
                    a, b = (s0 + s, s0 + e - 1) if chars is None else (chars[s], chars[e - 1])
                    a, b = a + run_start, b + run_start
                    if align is not None:
                        a, b = align[a], align[b]
                    add_start(seg_start + a)
                    add_end(seg_start + b + 1)
                    add_word(word)
                word += 1
                if len(ids) >= limit:
                    break
    return _cut(Pieces(ids, starts, ends, words, texts), limit)


def _cut(pieces: Pieces, limit: int) -> Pieces:
    """``pieces`` without the tokens past ``limit`` (the last word's pieces may reach beyond it)."""
    if len(pieces) > limit:
        for column in (pieces.ids, pieces.starts, pieces.ends, pieces.word_ids):
            del column[limit:]
        pieces.texts = {k: v for k, v in pieces.texts.items() if k < limit}
    return pieces


def _kept_char_for_char(align) -> bool:
    """Whether a normalizer's ``align`` (None: one for one) maps each normalized char to the original
    char at the same index (as a normalizer that only removed trailing characters gives)."""
    if align is None:
        return True
    n = len(align)
    if n == 0 or align[0] != 0 or align[-1] != n - 1:
        return False
    return align == (list(range(n)) if isinstance(align, list) else array(align.typecode, range(n)))


def unknown_text_id(model) -> int:
    """The id whose token string is the text it stands for, or -1: Unigram's unknown pieces keep
    their text (tokenizers' Token value); other models' tokens are the vocabulary's strings."""
    return model.unk_id if isinstance(model, Unigram) and model.unk_id is not None else -1


def _add_matches(tok, pattern, table, prefix: str, run: str, base: int, word: int, out: tuple, texts: dict, limit: int) -> int:  # noqa: PLR0913
    """:func:`text_pieces`' loop for a regex pre-tokenizer on text that normalization kept char for
    char: the tokens of each match of ``pattern`` in ``run`` (which starts at ``base`` in the
    original text; its characters mapped one for one by ``table``, when not None; ``prefix``, when
    not empty, put before the first match, its characters standing on the match's first char)
    appended to ``out`` (ids, starts, ends, word ids), stopping once ``limit`` tokens are held.
    Returns the next word index."""
    ids, cached = out[0], tok.match_cache.get
    add_id, add_start, add_end, add_word = (column.append for column in out)
    unknown_text = unknown_text_id(tok.model)
    for m in pattern.finditer(run):
        s0, match = base + m.start(), m.group()
        low = -1  # with a prefix: the first offset the word's tokens may have
        if prefix:  # as the pre-tokenizer's words: the prefix and the match are one word
            low, s0, match, prefix = s0, s0 - len(prefix), prefix + match, ""
        pieces, spelled = cached(match), None
        if pieces is None:
            pieces, spelled = _match_pieces(tok, match, table, unknown_text)
        for piece_id, s, e in pieces:
            if piece_id == unknown_text:  # its token string is the text it stands for
                texts[len(ids)] = next(spelled) if spelled is not None else _spelling(match, table)[s:e]
            add_id(piece_id)
            if low < 0:
                add_start(s0 + s)
                add_end(s0 + e)
            else:
                add_start(max(s0 + s, low))
                add_end(max(s0 + e, low + 1))
            add_word(word)
        word += 1
        if len(ids) >= limit:
            break
    return word


def _match_pieces(tok, match: str, table, unknown_text: int) -> tuple[tuple, object]:
    """The model's pieces of one regex ``match`` as ``((id, start, end), ...)`` with offsets in the
    match's characters, and an iterator over the token strings of its unknown pieces (in the word's
    spelling) or None. The word is the match with its characters mapped by ``table``; where a
    character is spelled by several (byte-level UTF-8), each piece spans the characters its first
    and last spelled ones stand for. Remembered in ``tok.match_cache`` unless an unknown piece's
    string has to come from the spelled word."""
    word = _spelling(match, table)
    pieces, spelled = tok.model(word), None
    if len(word) != len(match):
        owner = [k for k, ch in enumerate(match) for _ in range(len(ch.translate(table)))]
        if any(piece_id == unknown_text for piece_id, _, _ in pieces):
            spelled = iter([word[s:e] for piece_id, s, e in pieces if piece_id == unknown_text])
        pieces = tuple((piece_id, owner[s], owner[e - 1] + 1) for piece_id, s, e in pieces)
    if spelled is None and len(tok.match_cache) < MATCH_CACHE:
        tok.match_cache[match] = pieces
    return pieces, spelled


def _spelling(match: str, table) -> str:
    """The word the model reads for a regex ``match``: its characters mapped by ``table`` (or as they are)."""
    return match if table is None else match.translate(table)
