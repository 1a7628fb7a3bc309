"""``"ner"`` / ``"token-classification"``, as Transformers' TokenClassificationPipeline (4.57).

Aggregation strategies (Transformers' names): ``none`` (every token), ``simple`` (adjacent tokens
with the same entity type grouped, B-/I- aware), and the word-level ``first`` / ``average`` /
``max`` (a word's sub-tokens forced to agree: its first token's label, the label of the averaged
scores, or the label of its most confident token), then grouped as ``simple``.
With ``stride``, texts longer than the model's maximum are covered by overlapping windows and
the entities of all windows are merged (overlaps resolved as Transformers does: the longer
entity, then the higher score).
"""

from __future__ import annotations

import warnings

import numpy as np

from npformer.pipelines.base import Pipeline, check_texts, softmax

STRATEGIES = ("none", "simple", "first", "average", "max")


class TokenClassificationPipeline(Pipeline):
    """Label tokens (named entities). ``pipe(text)`` -> list of entity dicts; a list -> list of lists.

    Entity keys: ``entity``, ``score``, ``index``, ``word``, ``start``, ``end`` (strategy ``none``)
    or ``entity_group``, ``score``, ``word``, ``start``, ``end`` (other strategies); ``start`` /
    ``end`` are character offsets into the text. One list per input (empty for an empty text).
    Without ``stride`` a text longer than the model's maximum is read up to that maximum, as
    Transformers does; with ``stride`` (an integer >= 0) overlapping windows cover all of it.
    """

    task = "token-classification"

    def __call__(
        self,
        inputs,
        *,
        aggregation_strategy: str = "none",
        ignore_labels=None,  # noqa: PLR0913
        stride: int | None = None,
        return_probabilities: bool = False,
        max_length: int | None = None,
        grouped_entities: bool | None = None,
        ignore_subwords: bool | None = None,
    ):
        """Entities of each text (see the class docstring), as Transformers' TokenClassificationPipeline.

        Args:
            inputs: a str or an iterable of str.
            aggregation_strategy: ``"none"``, ``"simple"``, ``"first"``, ``"average"`` or ``"max"``.
            ignore_labels: labels left out (default ``["O"]``).
            stride: tokens shared by consecutive windows of a long text (an integer >= 0, smaller
                than the model's maximum); None reads the first window only, as Transformers.
            return_probabilities: also give each entity ``"probabilities"`` (label -> softmax
                probability of its token, or the mean over a group's tokens / words) and their
                ``"entropy"`` in nats (0 = certain, ``ln(num_labels)`` = uniform), to flag ambiguous
                tokens and boundaries. npformer's addition; Transformers has no such output.
            max_length: tokens per window (default: the model's maximum).
            grouped_entities: Transformers' deprecated spelling of the strategy (``True`` is
                ``"simple"``), accepted with a warning as Transformers 4.57 does.
            ignore_subwords: with ``grouped_entities=True``, ``"first"`` (deprecated as well).

        Raises ``ValueError`` for an unknown strategy, a bad stride, or a non-str input.
        """
        texts, single = check_texts(inputs, allow_empty=True)
        if grouped_entities is not None or ignore_subwords is not None:
            aggregation_strategy = ("first" if ignore_subwords else "simple") if grouped_entities else "none"
            warnings.warn(
                f"grouped_entities / ignore_subwords are deprecated: use aggregation_strategy={aggregation_strategy!r}",
                FutureWarning,
                stacklevel=3,
            )
        strategy = str(aggregation_strategy).lower()
        if strategy not in STRATEGIES:
            raise ValueError(f"aggregation_strategy must be one of {STRATEGIES}, got {aggregation_strategy!r}")
        ignore = ["O"] if ignore_labels is None else list(ignore_labels)
        max_length = self.check_max_length(max_length)
        if stride is not None:
            if not isinstance(stride, int) or isinstance(stride, bool) or stride < 0:
                raise ValueError(f"stride must be an integer >= 0, got {stride!r}")
            if stride >= max_length:
                raise ValueError(f"stride ({stride}) must be smaller than the model's max length ({max_length})")
            if strategy == "none":
                raise ValueError(
                    "stride covers long texts with several windows, which needs an aggregation_strategy other than 'none'"
                )
        # without a stride Transformers keeps only the first window of a long text
        encodings = self.tokenizer.encode_batch(
            [(t, None) for t in texts],
            truncation="longest_first",
            max_length=max_length,
            stride=stride or 0,
            overflow=stride is not None,
        )
        logits = self.forward(encodings, self.logits, per_token=True)
        results = [[] for _ in texts]
        windows = [0] * len(texts)
        for enc, row in zip(encodings, logits, strict=True):
            sample = enc.overflow_to_sample
            windows[sample] += 1
            entities = self._aggregate(self._pre_entities(texts[sample], enc, softmax(row)), strategy)
            results[sample] += [e for e in entities if e.get("entity", e.get("entity_group")) not in ignore]
        results = [_merge_overlapping(r) if n > 1 else r for r, n in zip(results, windows)]
        for entity in (e for r in results for e in r):
            probs = entity.pop("_probs")
            if return_probabilities:
                entity["probabilities"] = {self.label(i): float(p) for i, p in enumerate(probs)}
                entity["entropy"] = entropy(probs)
        return results[0] if single else results

    def _pre_entities(self, text: str, enc, scores: np.ndarray) -> list[dict]:
        # As Transformers: a model with a continuing-subword prefix (WordPiece's ##) marks sub-words by
        # token length; otherwise (byte-level BPE) a token is a sub-word unless a space precedes it.
        word_aware = bool(getattr(self.tokenizer.model, "continuing_subword_prefix", None))
        out = []
        for idx, (token_id, (start, end)) in enumerate(zip(enc.ids, enc.offsets)):
            if enc.special_tokens_mask[idx]:
                continue
            word = self.tokenizer.ids_to_tokens[token_id]
            word_ref = text[start:end]
            is_subword = len(word) != len(word_ref) if word_aware else start > 0 and " " not in text[start - 1 : start + 1]
            if token_id == self.tokenizer.unk_token_id:
                word, is_subword = word_ref, False
            out.append({"word": word, "scores": scores[idx], "start": start, "end": end, "index": idx, "is_subword": is_subword})
        return out

    def _aggregate(self, pre: list[dict], strategy: str) -> list[dict]:
        if strategy in ("none", "simple"):
            entities = []
            for p in pre:
                best = int(p["scores"].argmax())
                entities.append(
                    {
                        "entity": self.label(best),
                        "score": float(p["scores"][best]),
                        "index": p["index"],
                        "word": p["word"],
                        "start": p["start"],
                        "end": p["end"],
                        "_probs": p["scores"],
                    }
                )
        else:
            entities, group = [], []
            for p in pre:
                if group and not p["is_subword"]:
                    entities.append(self._aggregate_word(group, strategy))
                    group = []
                group.append(p)
            if group:
                entities.append(self._aggregate_word(group, strategy))
        return entities if strategy == "none" else self._group(entities)

    def _aggregate_word(self, tokens: list[dict], strategy: str) -> dict:
        if strategy == "first":
            scores = tokens[0]["scores"]
        elif strategy == "max":
            scores = max(tokens, key=lambda t: t["scores"].max())["scores"]
        else:  # average
            scores = np.nanmean(np.stack([t["scores"] for t in tokens]), axis=0)
        best = int(scores.argmax())
        return {
            "entity": self.label(best),
            "score": float(scores[best]),
            "word": self.tokenizer.convert_tokens_to_string([t["word"] for t in tokens]),
            "start": tokens[0]["start"],
            "end": tokens[-1]["end"],
            "_probs": scores,
        }

    def _group(self, entities: list[dict]) -> list[dict]:
        groups, current = [], []
        for entity in entities:
            if current:
                bi, tag = _tag(entity["entity"])
                _, last_tag = _tag(current[-1]["entity"])
                if not (tag == last_tag and bi != "B"):
                    groups.append(self._group_one(current))
                    current = []
            current.append(entity)
        if current:
            groups.append(self._group_one(current))
        return groups

    def _group_one(self, entities: list[dict]) -> dict:
        return {
            "entity_group": entities[0]["entity"].split("-", 1)[-1],
            "score": float(np.nanmean([e["score"] for e in entities])),
            "word": self.tokenizer.convert_tokens_to_string([e["word"] for e in entities]),
            "start": entities[0]["start"],
            "end": entities[-1]["end"],
            "_probs": np.mean([e["_probs"] for e in entities], axis=0),
        }


def entropy(probs: np.ndarray) -> float:
    """Shannon entropy ``-sum p ln p`` of a probability vector, in nats (``0 ln 0 = 0``)."""
    p = np.asarray(probs, dtype=np.float64)
    nonzero = p[p > 0]
    return float(-(nonzero * np.log(nonzero)).sum())


def _tag(name: str) -> tuple[str, str]:
    if name.startswith("B-"):
        return "B", name[2:]
    if name.startswith("I-"):
        return "I", name[2:]
    return "I", name


def _merge_overlapping(entities: list[dict]) -> list[dict]:
    """Entities from overlapping windows: keep the longer (then the more confident) of overlaps."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda e: e["start"])
    merged, previous = [], entities[0]
    for entity in entities:
        if previous["start"] <= entity["start"] < previous["end"]:
            length, previous_length = entity["end"] - entity["start"], previous["end"] - previous["start"]
            if length > previous_length or length == previous_length and entity["score"] > previous["score"]:
                previous = entity
        else:
            merged.append(previous)
            previous = entity
    merged.append(previous)
    return merged
