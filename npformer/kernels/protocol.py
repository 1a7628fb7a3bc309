"""The kernel interface both backends implement: what a block may call on ``run.ops``.

:mod:`npformer.kernels.ops` (Numba) and :mod:`npformer.kernels.numpy_ops` (NumPy) are modules with
these functions, the same names, arguments and results (``tests/test_layout.py`` checks the
signatures; ``tests/test_numpy_backend.py`` the values). Every array is float32 and C-contiguous
unless said; ``rows`` is ``batch * seq`` (or the real tokens of an unpadded batch).
"""

from __future__ import annotations

from typing import ContextManager, Protocol

import numpy as np


class Ops(Protocol):
    """A backend's kernels (a module; a block reaches it as ``run.ops``)."""

    def linear(self, x: np.ndarray, weight, bias: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
        """``x (rows, in)`` -> ``x @ W.T + bias`` ``(rows, out)``; ``weight`` a float32 ``(out, in)``
        array, a ``PackedMatrix`` or a ``QuantizedTensor`` (:mod:`npformer.kernels.linear`); ``x`` as
        it is or as :meth:`prepared` made it; the result may be a view into ``scratch``."""

    def linears(self, x: np.ndarray, weights: tuple, biases: tuple) -> tuple[np.ndarray, ...]:
        """:meth:`linear` of the same ``x`` by each of ``weights`` with its bias of ``biases``; the
        results may be column views of one array (the Numba backend stacks int8 weights)."""

    def prepared(self, x: np.ndarray, weight):
        """``x (rows, in)`` as :meth:`linear` with ``weight`` reads it; hand it to every product of the
        same activations (the Numba backend quantizes them once for an int8 weight)."""

    def attention(
        self, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray, num_heads: int, probs: np.ndarray, bias=None
    ) -> np.ndarray:
        """``softmax(q k^T / sqrt(d) + bias + mask) v`` per (sequence, head): ``q, k, v (rows,
        hidden)``, ``mask (batch, seq)`` (1 = token), ``bias`` ``(heads, seq, seq)`` or None; writes the
        probabilities into ``probs (batch, heads, seq, seq)`` unless it is empty; returns ``(rows, hidden)``."""

    def varlen_attention(
        self,
        q: np.ndarray,
        k: np.ndarray,
        v: np.ndarray,
        offsets: np.ndarray,
        num_heads: int,
        window: int,
        block: int,
        cos: np.ndarray | None = None,
        sin: np.ndarray | None = None,
    ) -> np.ndarray:
        """Attention over sequences packed without padding (``offsets (batch + 1,)`` int64), by key
        blocks with an online softmax, within ``window`` tokens (-1: all), the rotary embedding
        ``cos, sin (rows, head_dim)`` applied to ``q`` and ``k`` when given; returns ``(rows, hidden)``."""

    def rotary(self, x: np.ndarray, cos: np.ndarray, sin: np.ndarray, num_heads: int) -> np.ndarray:
        """The rotary position embedding of ``x (rows, hidden)`` (``cos, sin (rows, head_dim)``)."""

    def layer_norm(self, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
        """Layer norm of each row of ``x (rows, n)``: a new array."""

    def bias_residual_layer_norm_(
        self, x: np.ndarray, bias: np.ndarray, residual: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float
    ) -> np.ndarray:
        """``LayerNorm(x + bias + residual)``, written into ``x`` and returned."""

    def bias_residual_layer_norm_for_(
        self, x: np.ndarray, bias: np.ndarray, residual: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, weight
    ):
        """:meth:`bias_residual_layer_norm_` -> ``(x, ready)``: ``x`` for the residual, ``ready`` as
        :meth:`prepared` gives it for ``weight`` (the Numba backend quantizes each row as it is normalized)."""

    def residual_layer_norm_for_(
        self, x: np.ndarray, residual: np.ndarray | None, gamma: np.ndarray, beta: np.ndarray, eps: float, weight
    ):
        """A pre-LN "Add & Norm": ``x += residual`` in place (unless None) -> ``(x, ready)``,
        ``ready`` being ``LayerNorm(x)`` as :meth:`prepared` gives it for ``weight`` (the Numba
        backend quantizes each row for an int8 weight as it is normalized)."""

    def bias_activation_(self, x: np.ndarray, bias: np.ndarray, hidden_act: str) -> np.ndarray:
        """``act(x + bias)`` in place for a ``hidden_act`` of :data:`npformer.kernels.numpy_ops.ACTIVATIONS`."""

    def bias_activation_for_(self, x: np.ndarray, bias: np.ndarray, hidden_act: str, weight):
        """:meth:`bias_activation_`, the result as :meth:`prepared` gives it for ``weight`` (the next
        Linear layer): the Numba backend quantizes each row for an int8 weight as it is finished."""

    def gated_activation_for_(self, x: np.ndarray, hidden_act: str, weight):
        """A GLU layer's ``act(x[:, :n]) * x[:, n:]`` for ``x (rows, 2n)``: a new ``(rows, n)`` result
        as :meth:`prepared` gives it for ``weight`` (quantized as each row is finished, Numba, int8)."""

    def threads(self, n: int) -> ContextManager:
        """A context in which the kernels run on ``n`` threads."""


OPS_FUNCTIONS = tuple(name for name in vars(Ops) if not name.startswith("_"))
