"""``"question-answering"``: extractive QA as Transformers' QuestionAnsweringPipeline (4.57).

The context is split into windows of ``max_seq_len`` tokens (question + context + 3 special
tokens) that overlap by ``doc_stride`` tokens. In each window, start and end logits are turned
into probabilities over the context tokens (and [CLS]); a span's score is
``p_start(s) * p_end(e)`` for ``s <= e < s + max_answer_len``. Spans are mapped back to
characters of the context, aligned to whole words, and the same answer text found in several
windows adds up its scores. Transformers 5 dropped this pipeline; npformer keeps 4.57's behaviour.
"""

from __future__ import annotations

import numpy as np

from npformer.pipelines.base import Pipeline, check_texts
from npformer.tokenizer.encoding import padding_strategy


class QuestionAnsweringPipeline(Pipeline):
    """``pipe(question=..., context=...)`` -> ``{"score", "start", "end", "answer"}`` (or a list of
    the ``top_k`` best). Lists of questions and contexts (or one question for several contexts)
    give one result per pair.

    Call arguments:
        top_k: answers per question (default 1).
        doc_stride: tokens shared by consecutive windows (default ``min(max_seq_len // 2, 128)``).
        max_answer_len: longest answer, in tokens (default 15).
        max_seq_len: tokens per window (default ``min(model_max_length, 384)``).
        max_question_len: questions longer than this many tokens are cut to it (default 64;
            Transformers' fast path ignores this setting and fails on over-long questions instead).
        handle_impossible_answer: also offer the empty answer, scored by its [CLS] probability.
        align_to_words: widen the span to whole words (default True).

    Raises ``ValueError`` for an empty question or context, ``doc_stride > max_seq_len``, or a
    question too long to leave room for the context with that ``doc_stride``.
    """

    task = "question-answering"
    accepts = (
        'question= and context= strings (or lists of them), a {"question": ..., "context": ...} dict, or a '
        "list or generator of such dicts"
    )

    def __call__(  # noqa: PLR0913
        self,
        question=None,
        context=None,
        *,
        top_k: int = 1,
        doc_stride: int | None = None,
        max_answer_len: int = 15,
        max_seq_len: int | None = None,
        max_question_len: int = 64,
        handle_impossible_answer: bool = False,
        align_to_words: bool = True,
        padding: bool | str = False,
    ):
        """Answer each question from its context (see the class docstring for the arguments).

        ``question`` and ``context`` are a str each, or lists of equal length (one question for
        several contexts is repeated). Returns ``{"score": float, "start": int, "end": int,
        "answer": str}`` per pair (``start``/``end`` are character offsets into the context; with
        ``top_k > 1`` a list of such dicts, best first), as Transformers 4.57's pipeline. Windows of
        ``max_seq_len`` tokens overlapping by ``doc_stride`` cover a context of any length, so the
        cost grows linearly with it. ``padding`` is checked as Transformers' and changes no answer
        (padded positions are masked). Raises ``ValueError`` as the class docstring says.
        """
        padding_strategy(padding)
        if context is None and (
            isinstance(question, dict)
            or isinstance(question, (list, tuple))
            and question
            and all(isinstance(q, dict) for q in question)
        ):  # SQuAD-style dicts, as Transformers
            single = isinstance(question, dict)
            items = [question] if single else list(question)
            for i, item in enumerate(items):
                if not isinstance(item.get("question"), str) or not isinstance(item.get("context"), str):
                    raise ValueError(f"input {i} must be a dict with 'question' and 'context' strings, got {sorted(item)}")
            question = items[0]["question"] if single else [item["question"] for item in items]
            context = items[0]["context"] if single else [item["context"] for item in items]
        pairs, single = _pairs(question, context)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if max_answer_len < 1:
            raise ValueError(f"max_answer_len must be >= 1, got {max_answer_len}")
        if max_seq_len is None:
            max_seq_len = min(self.max_length, 384)
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, 128)
        if not isinstance(max_seq_len, int) or not 4 <= max_seq_len <= self.max_length:
            raise ValueError(
                f"max_seq_len must be an integer in [4, {self.max_length}] (the model's maximum), got {max_seq_len!r}"
            )
        if not isinstance(doc_stride, int) or isinstance(doc_stride, bool) or doc_stride < 0:
            raise ValueError(f"doc_stride must be an integer >= 0, got {doc_stride!r}")
        if doc_stride > max_seq_len:
            raise ValueError(f"doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len})")
        pairs = [(self._cut_question(q, max_question_len), c) for q, c in pairs]
        try:
            encodings = self.tokenizer.encode_batch(pairs, truncation="only_second", max_length=max_seq_len, stride=doc_stride)
        except ValueError as e:
            raise ValueError(f"question too long for max_seq_len={max_seq_len} and doc_stride={doc_stride}: {e}") from None
        logits = self.forward(encodings, self.logits, per_token=True)
        per_sample = [[] for _ in pairs]
        for enc, row in zip(encodings, logits, strict=True):
            per_sample[enc.overflow_to_sample].append((enc, row))
        results = [
            self._answers(context, windows, top_k, max_answer_len, handle_impossible_answer, align_to_words)
            for (_, context), windows in zip(pairs, per_sample, strict=True)
        ]
        return results[0] if single else results

    def _cut_question(self, question: str, max_question_len: int) -> str:
        pieces = self.tokenizer.pieces(question, max_tokens=max_question_len + 1)
        return question if len(pieces) <= max_question_len else question[: int(pieces.ends[max_question_len - 1])]

    def _answers(self, context: str, windows, top_k, max_answer_len, handle_impossible, align_to_words):
        min_null_score = 1000000.0
        answers: dict[str, dict] = {}  # lower-cased answer text -> its first span, scores summed
        pre_top_k = top_k * 2 + 10 if align_to_words else top_k  # alignment may merge candidates
        for enc, logits in windows:
            # tokens that may be part of an answer: the context, and [CLS] (for "no answer")
            allowed = np.array([s == 1 or t == self.tokenizer.cls_token_id for s, t in zip(enc.sequence_ids, enc.ids)])
            start = _masked_softmax(logits[:, 0], allowed)
            end = _masked_softmax(logits[:, 1], allowed)
            if handle_impossible:
                min_null_score = min(min_null_score, float(start[0] * end[0]))
            start[0] = end[0] = 0.0
            for s, e, score in _best_spans(start, end, pre_top_k, max_answer_len, allowed):
                lo, hi = _char_span(enc, s, e, align_to_words)
                text = context[lo:hi]
                same = answers.get(text.lower())
                if same is not None:
                    same["score"] += score
                else:
                    answers[text.lower()] = {"score": score, "start": lo, "end": hi, "answer": text}
        ranked = list(answers.values())
        if handle_impossible:
            ranked.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(ranked, key=lambda a: a["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers


def _pairs(question, context) -> tuple[list[tuple[str, str]], bool]:
    if question is None or context is None:
        raise ValueError("question answering needs both a question and a context")
    single = isinstance(question, str) and isinstance(context, str)
    questions, _ = check_texts(question, "question")
    contexts, _ = check_texts(context, "context")
    if len(questions) == 1 and len(contexts) > 1:
        questions = questions * len(contexts)
    if len(questions) != len(contexts):
        raise ValueError(f"got {len(questions)} questions but {len(contexts)} contexts")
    return list(zip(questions, contexts)), single


def _masked_softmax(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    x = np.where(allowed, logits, np.float32(-10000.0)).astype(np.float32)
    e = np.exp(x - x.max())
    return e / e.sum()


def _best_spans(start: np.ndarray, end: np.ndarray, top_k: int, max_answer_len: int, allowed: np.ndarray):
    """``(s, e, score)`` of the ``top_k`` best spans with ``s <= e < s + max_answer_len``, both allowed.

    Reference: transformers.pipelines.question_answering.decode_spans (same selection and order).
    """
    candidates = np.tril(np.triu(np.outer(start, end)), max_answer_len - 1)  # [S, S]
    flat = candidates.ravel()
    if top_k == 1:
        order = np.array([np.argmax(flat)])
    elif len(flat) < top_k:
        order = np.argsort(-flat)
    else:
        idx = np.argpartition(-flat, top_k)[:top_k]
        order = idx[np.argsort(-flat[idx])]
    starts, ends = np.unravel_index(order, candidates.shape)
    keep = allowed[starts] & allowed[ends]
    return [(int(s), int(e), float(candidates[s, e])) for s, e in zip(starts[keep], ends[keep])]


def _char_span(enc, s: int, e: int, align_to_words: bool) -> tuple[int, int]:
    """Character span of tokens ``s..e`` in the context; widened to whole words if asked."""
    if align_to_words and enc.word_ids[s] is not None and enc.word_ids[e] is not None:
        return _word_chars(enc, enc.word_ids[s])[0], _word_chars(enc, enc.word_ids[e])[1]
    return enc.offsets[s][0], enc.offsets[e][1]


def _word_chars(enc, word: int) -> tuple[int, int]:
    """Characters of context word ``word`` as far as this window holds it (tokenizers' word_to_chars)."""
    tokens = [i for i, (w, seq) in enumerate(zip(enc.word_ids, enc.sequence_ids)) if w == word and seq == 1]
    return enc.offsets[tokens[0]][0], enc.offsets[tokens[-1]][1]
