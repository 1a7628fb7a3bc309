"""The seam between pipelines and whoever runs their forward passes.

A pipeline describes one kind of forward pass as a :class:`Step` (its function and the key that
says which passes may share rows) and hands encodings to a :class:`Runner`. In-process, the
pipeline runs them itself, in length-sorted batches; ``npformer serve`` gives its pipelines the
server's batcher (:class:`npformer.serving.batcher.Batcher`) with :meth:`Pipeline.run_on`, which
coalesces rows of concurrent requests whose steps have equal keys into shared passes (as TEI's
``Backend`` trait sits between its router and its models).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Protocol, Sequence

import numpy as np

from npformer.tokenizer import Encoding


@dataclass(frozen=True)
class Step:
    """One kind of forward pass: ``run(input_ids, attention_mask, token_type_ids) -> array (batch,
    ...)`` on ``(batch, seq_len)`` int64 arrays, each row computed independently of the others.
    Rows of two submissions share a pass only when their steps' ``key`` are equal (a pipeline uses
    ``(id(pipeline), output name)``: the same model, pooling and head)."""

    run: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] = field(compare=False)
    key: Hashable

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        return self.run(input_ids, attention_mask, token_type_ids)

    @classmethod
    def of(cls, run: "Step | Callable") -> "Step":
        """``run`` as a step; a plain callable is its own key (equal bound methods share passes)."""
        return run if isinstance(run, Step) else cls(run, run)


class Runner(Protocol):
    """Runs a step on encodings: one result row per encoding, in order (cut to its length when
    ``per_token``), each row as if computed alone; ``pad_id`` pads the batches it forms."""

    def __call__(self, encodings: Sequence[Encoding], step: Step, per_token: bool, pad_id: int) -> list: ...
