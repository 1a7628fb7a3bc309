"""The shared transformer encoder: embeddings, blocks (BERT's post-layer-norm block is in
:mod:`npformer.models.block`), and the driver.

BERT (Devlin et al. 2019; also TinyBERT and MiniLM checkpoints) and DistilBERT (Sanh et al. 2019)
run the same block (Vaswani et al. 2017), and differ only in checkpoint names, token type
embeddings and the pooler (see :mod:`npformer.models.bert`, :mod:`npformer.models.distilbert`):

    E   = LayerNorm(W_word[input_ids] + W_pos[0..S) (+ W_type[token_type_ids]))
    for each layer:
        A = softmax(Q K^T / sqrt(d_head) + mask) V            per head, Q = x W_q + b_q ...
        x = LayerNorm(x + A W_o + b_o)
        x = LayerNorm(x + act(x W_1 + b_1) W_2 + b_2)
    pooler_output = tanh(x[:, 0] W_p + b_p)                  (BERT)
"""

from __future__ import annotations

import threading
from dataclasses import fields
from typing import Callable

import numpy as np

from npformer import kernels
from npformer.adapters import Adaptable
from npformer.config import Config
from npformer.kernels import numpy_ops
from npformer.models.block import LayerWeights, RunState, module_names, transformer_layer
from npformer.models.embeddings import EMBEDDING_FIELDS, WORD_EMBEDDINGS, Embeddings
from npformer.models.inputs import check_inputs
from npformer.models.outputs import EncoderOutput
from npformer.kernels.bfloat16 import BFloat16Tensor
from npformer.quantization import QuantizedTensor
from npformer.runtime import one_parallel_runtime
from npformer.weights import Weights


def converted(current, value: np.ndarray, name: str):
    """``value`` (float32) stored as ``current`` is: quantized, packed or a plain array. Raises
    ``ValueError`` when the shapes differ."""
    value = np.ascontiguousarray(value, dtype=np.float32)
    if tuple(value.shape) != tuple(current.shape):
        raise ValueError(f"tensor {name!r}: the new value has shape {tuple(value.shape)}, the model's {tuple(current.shape)}")
    if isinstance(current, (QuantizedTensor, BFloat16Tensor)):
        return type(current).from_float(value)
    if isinstance(current, np.ndarray):
        return value
    return kernels.gemm_f32.PackedMatrix(value)


class Encoder(Adaptable):
    """Shared driver of BERT-like encoders: embeddings -> layers -> (pooler).

    An architecture is a subclass registered with :func:`npformer.architectures.register`. It names:

    - ``model_type`` (``config.json``'s), ``description`` (for messages) and ``prefix``, under
      which its task checkpoints nest the encoder (``bert.``);
    - how its config is read: ``config_names`` (our field -> its ``config.json`` key) and
      :meth:`config_fields` (its own fields, validated);
    - its checkpoint keys: ``layer_names(i)`` (field of :class:`LayerWeights` -> key),
      ``namespaces`` (its key prefixes), whether it has token type embeddings and a pooler;
    - its heads' names: ``pre_classifier`` (a dense + ``pre_classifier_act`` before the classifier
      ``classifier_name``, else the pooler feeds it), ``mlm_names`` (transform dense, layer norm,
      decoder, decoder bias) and ``mlm_act``;
    - :meth:`position_ids` when positions do not run ``0 .. seq - 1``; ``embedding_projection``,
      the Linear layer from ``embedding_size`` to ``hidden_size`` of factorized embeddings (ELECTRA,
      ALBERT), if any;
    - its block, :meth:`layer` (the post-LN block of :func:`transformer_layer` unless overridden)
      with its weights class ``layer_class`` (whose ``LINEARS`` name the Linear layers), and
      :meth:`finish` (after the last layer; nothing unless overridden);
    - ``word_embeddings_name`` and ``embedding_fields`` when its embedding tensors are named
      otherwise, and ``heads`` (task -> head class) where its task heads differ from BERT's.

    Call the encoder with ``(batch, seq_len)`` integer arrays (a 1-D array is one sequence).
    Raises ``KeyError``/``ValueError`` naming a missing or mis-shaped tensor, and ``ValueError`` for
    an activation the kernels do not implement.
    """

    model_type: str = ""
    description: str = ""
    prefix: str = ""
    config_names: dict[str, str] = {}
    pre_classifier: str | None = None
    pre_classifier_act: str = "relu"  # after pre_classifier: DistilBERT's ReLU, RoBERTa's tanh
    classifier_name: str = "classifier"  # the sequence classifier's output layer
    mlm_act: str | None = None  # the masked-LM transform's activation (None: hidden_act)
    mlm_names: tuple[str, str, str, str] = (
        "cls.predictions.transform.dense",
        "cls.predictions.transform.LayerNorm",
        "cls.predictions.decoder",
        "cls.predictions.bias",
    )
    namespaces: tuple[str, ...] = ()
    token_types: bool = True  # token type (segment) embeddings
    pooler_name: str | None = None  # the pooler's dense layer, if the architecture has one
    pooler_activation: str | None = None  # the pooler's tanh module, when it is not inside pooler_name's parent
    embedding_projection: str | None = None  # embedding_size -> hidden_size Linear layer, if any
    dtype: str = "float32"  # "int8" once the Linear weights are QuantizedTensor, "bfloat16" BFloat16Tensor
    backend: str = "numba"  # whose kernels run the pass: "numba" or "numpy" (see ``ops``)
    layer_class: type = LayerWeights  # one block's weights (its ``LINEARS`` are the Linear layers)
    word_embeddings_name: str = WORD_EMBEDDINGS  # the token embedding table (int8 with the Linear layers)
    embedding_fields: dict[str, str] = EMBEDDING_FIELDS  # embedding tensor name -> Embeddings attribute
    heads: dict[str, type] = {}  # task -> head class, where the architecture's heads differ from BERT's

    @staticmethod
    def layer_names(i: int) -> dict[str, str]:
        raise NotImplementedError

    @classmethod
    def config_fields(cls, d: dict, source: str) -> dict:
        """This architecture's own config fields (``hidden_act``, ``layer_norm_eps``,
        ``type_vocab_size``...) from the ``config.json`` dict ``d``, validated; each architecture says."""
        raise NotImplementedError

    def layer(self, x: np.ndarray, weights: "LayerWeights", mask: np.ndarray, run: RunState):
        """One block: ``x (batch, seq, hidden) float32`` -> ``(x, probs or None)``; see
        :func:`transformer_layer` (BERT's post-LN block), whose arguments these are."""
        return transformer_layer(x, weights, mask, self.config, run)

    def layer_output_name(self, i: int) -> str:
        """The traced name of block ``i``'s output (:mod:`npformer.tracing`): BERT's last LayerNorm."""
        return module_names(self.layer_names(i))["ln2"]

    def layer_output_names(self) -> list[str]:
        """The traced names of the layers' outputs, in order (``@call`` as in :meth:`traced_names`)."""
        return [self.layer_output_name(i) + (f"@{call}" if call else "") for i, call, ends in self.schedule() if ends]

    @property
    def num_blocks(self) -> int:
        """Blocks of weights in ``self.layers``: one per layer, unless layers share them (ALBERT)."""
        return self.config.num_hidden_layers

    def schedule(self) -> list[tuple[int, int, bool]]:
        """The blocks in the order a pass runs them: ``(block index, how many times it ran before,
        whether it ends a layer)``, each ending layer giving one of ``hidden_states``."""
        return [(i, 0, True) for i in range(len(self.layers))]

    def traced_names(self, i: int, call: int) -> dict[str, str]:
        """:func:`module_names` of block ``i``, ``@call`` appended from its second run on (a module
        that runs several times is traced once per run)."""
        names = module_names(self.layer_names(i))
        return names if call == 0 else {k: f"{v}@{call}" for k, v in names.items()}

    def finish(self, x: np.ndarray, run: RunState) -> np.ndarray:
        """After the last layer (a final norm in pre-LN encoders): ``x`` unchanged here."""
        return x

    def __init__(self, config: Config, weights: Weights):
        if config.hidden_act not in numpy_ops.ACTIVATIONS:
            raise ValueError(
                f"{config.source}: activation {config.hidden_act!r} is not supported; use one of {sorted(numpy_ops.ACTIVATIONS)}"
            )
        self.config = c = config
        width = c.extra.get("embedding_size", c.hidden_size)
        self.embeddings = Embeddings.load(weights, c, self.token_types, width)
        # (weight (hidden_size, embedding_size), bias (hidden_size,)) or None
        self.projection = self.embedding_projection and (
            weights.get(f"{self.embedding_projection}.weight", (c.hidden_size, width)),
            weights.get(f"{self.embedding_projection}.bias", (c.hidden_size,)),
        )
        self.layers = [self.layer_class.load(weights, self.layer_names(i), c) for i in range(self.num_blocks)]
        h = c.hidden_size
        self.pooler = None  # (weight (hidden_size, hidden_size), bias (hidden_size,))
        if self.pooler_name is not None and weights.has(f"{self.pooler_name}.weight"):
            self.pooler = (weights.get(f"{self.pooler_name}.weight", (h, h)), weights.get(f"{self.pooler_name}.bias", (h,)))

    def embed(self, input_ids: np.ndarray, token_type_ids: np.ndarray, record=None) -> np.ndarray:
        """``(batch, seq)`` ids -> ``(batch, seq, hidden_size)`` float32 embeddings after layer norm
        (and the ``embedding_projection``), handing ``record(name, array)``, when given, each under
        its module name."""
        x = self.embeddings(
            input_ids, token_type_ids, self.config.layer_norm_eps, self.ops.layer_norm, self.position_ids(input_ids)
        )
        if record:
            record("embeddings", x)
        if self.projection is not None:
            x = self.ops.linear(x.reshape(-1, x.shape[-1]), *self.projection).reshape(*x.shape[:2], -1)
            if record:
                record(self.embedding_output_name, x)
        return x

    @property
    def embedding_output_name(self) -> str:
        """The traced name of what the first layer reads (Transformers' ``hidden_states[0]``)."""
        return "embeddings" if self.embedding_projection is None else self.embedding_projection

    def position_ids(self, input_ids: np.ndarray) -> np.ndarray | None:
        """Each token's row of the position table, ``(batch, seq)`` int; None: ``0 .. seq - 1``
        (BERT's absolute positions). An architecture that counts otherwise overrides it."""
        return None

    @property
    def ops(self):
        """The kernels of ``backend``: :mod:`npformer.kernels.ops` (Numba, imported on first use) or
        :mod:`npformer.kernels.numpy_ops` (NumPy, no Numba: the fastest start for a one-off call)."""
        return numpy_ops if self.backend == "numpy" else kernels.ops

    def packed(self, w: np.ndarray):
        """A float32 ``(out, in)`` Linear weight as this backend multiplies it: a
        :class:`npformer.kernels.gemm_f32.PackedMatrix` on the Numba backend where the CPU has its
        micro-kernel (each row computed alike whatever the batch, which BLAS does not promise), else ``w``."""
        if self.backend == "numpy" or not kernels.llvm_ir.PACKED_F32:
            return w
        return kernels.gemm_f32.PackedMatrix(w)

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        *,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        record: Callable[[str, np.ndarray], None] | None = None,
    ) -> EncoderOutput:
        """Run the encoder; see :class:`EncoderOutput` for shapes. ``record(name, array)`` receives
        every named intermediate (see :func:`npformer.tracing.trace`). Raises ``ValueError`` on bad inputs."""
        if not self.token_types:  # no token type embeddings: the ids mean nothing (as Transformers' MPNet takes none)
            token_type_ids = None
        input_ids, attention_mask, token_type_ids = check_inputs(self.config, input_ids, attention_mask, token_type_ids)
        blas = self.blas_linears
        run = RunState(self.ops, input_ids.shape, output_attentions, record)
        if not blas:  # the Numba GEMMs' feed-forward buffer
            run.scratch = self.scratch(input_ids.size)
        with one_parallel_runtime(self.ops, blas):
            x = self.embed(input_ids, token_type_ids, record)  # [B, S, H]
            hidden_states, attentions = [x] if output_hidden_states else [], []  # on request only: 12 MB each at b=32
            schedule = self.schedule()
            for step, (i, call, ends_layer) in enumerate(schedule):
                if record:
                    run.names = self.traced_names(i, call)
                following = schedule[step + 1][0] if step + 1 < len(schedule) else None
                run.next_weight = None if following is None else getattr(self.layers[following], "q_w", None)
                x, probs = self.layer(x, self.layers[i], attention_mask, run)
                if output_hidden_states and ends_layer:
                    hidden_states.append(x)
                if output_attentions:
                    attentions.append(probs)
            x = self.finish(x, run)
            pooled = None
            if self.pooler is not None:
                dense = self.ops.linear(np.ascontiguousarray(x[:, 0]), *self.pooler)
                pooled = np.tanh(dense)
                if record and self.pooler_activation:  # the Linear and the tanh are two modules (ALBERT)
                    record(self.pooler_name, dense)
                    record(self.pooler_activation, pooled)
                elif record:
                    record(self.pooler_name.rsplit(".", 1)[0], pooled)
        return EncoderOutput(
            last_hidden_state=x,
            pooler_output=pooled,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )

    @property
    def blas_linears(self) -> bool:
        """True when the Linear layers are products on NumPy's BLAS: the NumPy backend, or plain float32
        weights (a CPU without AVX2); False for packed float32 and int8 weights on Numba's GEMMs."""
        return (
            self.backend == "numpy"
            or bool(self.layers)
            and isinstance(getattr(self.layers[0], self.layer_class.LINEARS[0]), np.ndarray)
        )

    def scratch(self, rows: int, width: int | None = None) -> np.ndarray:
        """This thread's reusable buffer for ``(rows, width)`` float32 activations (``width``:
        ``intermediate_size`` unless given; rows and channels padded as the GEMMs write them), for
        a product whose result dies within its block; grown on demand, never shared between
        threads, so one model can serve several threads. Reusing it spares the page faults of a
        fresh multi-megabyte array per product."""
        local = self.__dict__.setdefault("_scratch", threading.local())
        ir = kernels.llvm_ir
        size = ir.round_up(rows, ir.MR) * ir.round_up(width or self.config.intermediate_size, ir.NR)
        buffer = getattr(local, "buffer", None)
        if buffer is None or buffer.size < size:
            local.buffer = buffer = np.empty(size, np.float32)
        return buffer

    def pack_linears_(self, weights: Weights, layers: bool = True) -> None:
        """Hold every float32 Linear weight of the layers (unless ``layers`` is False) and the pooler
        as :meth:`packed` makes it, releasing each memory-mapped original as soon as a packed copy
        exists so that the model holds its weights once."""

        def pack(w, name):
            if not isinstance(w, np.ndarray):
                return w
            packed = self.packed(w)
            if packed is not w:
                weights.release(name)
            return packed

        for i, layer in enumerate(self.layers if layers else ()):
            names = self.layer_names(i)
            for f in self.layer_class.LINEARS:
                setattr(layer, f, pack(getattr(layer, f), names[f]))
        if self.pooler is not None:
            self.pooler = (pack(self.pooler[0], f"{self.pooler_name}.weight"), self.pooler[1])
        if self.projection is not None:
            self.projection = (pack(self.projection[0], f"{self.embedding_projection}.weight"), self.projection[1])

    def replace_tensor(self, name: str, value: np.ndarray) -> None:
        """Set checkpoint tensor ``name`` (without the architecture prefix, e.g.
        ``encoder.layer.0.attention.self.query.weight``) to ``value``, stored as loading stored it.
        Raises ``KeyError`` for a name the encoder does not have, ``ValueError`` for a wrong shape."""
        for i, layer in enumerate(self.layers):
            for f, key in self.layer_names(i).items():
                if key == name:
                    setattr(layer, f, converted(getattr(layer, f), value, name))
                    return
        for attribute, module in (("pooler", self.pooler_name), ("projection", self.embedding_projection)):
            if getattr(self, attribute) is not None and name in (f"{module}.weight", f"{module}.bias"):
                w, b = getattr(self, attribute)
                setattr(
                    self, attribute, (converted(w, value, name), b) if name.endswith("weight") else (w, converted(b, value, name))
                )
                return
        field = self.embedding_fields.get(name)
        if field is not None and getattr(self.embeddings, field, None) is not None:
            setattr(self.embeddings, field, converted(getattr(self.embeddings, field), value, name))
            return
        raise KeyError(f"the model has no tensor {name!r}")

    def quantize_(self, weights: Weights | None = None) -> "Encoder":
        """In place: every Linear weight of the layers, and the word embeddings, to int8 per output
        channel / per row (:class:`QuantizedTensor`); returns the encoder. With ``weights`` (the
        checkpoint being loaded) each float original's pages are released once its int8 copy exists,
        so the model holds its weights once (int8), not twice."""
        return self._convert_matrices_(QuantizedTensor.from_float, "int8", weights)

    def to_bfloat16_(self, weights: Weights | None = None) -> "Encoder":
        """In place: every Linear weight of the layers, and the word embeddings, rounded to bfloat16
        (:class:`~npformer.kernels.bfloat16.BFloat16Tensor`); returns the encoder. Releases the float
        originals as :meth:`quantize_` does."""
        return self._convert_matrices_(BFloat16Tensor.from_float, "bfloat16", weights)

    def _convert_matrices_(self, make, dtype: str, weights: Weights | None) -> "Encoder":
        """Each float Linear weight of the layers and the word embeddings to ``make(float32 matrix)``."""
        for i, layer in enumerate(self.layers):
            names = self.layer_names(i)
            for name in self.layer_class.LINEARS:
                w = getattr(layer, name)
                if isinstance(w, kernels.gemm_f32.PackedMatrix):
                    w = w.dense()
                if isinstance(w, np.ndarray):
                    setattr(layer, name, make(w))
                    if weights is not None:
                        weights.release(names[name])
        if isinstance(self.embeddings.word, np.ndarray):
            self.embeddings.word = make(self.embeddings.word)
            if weights is not None:
                weights.release(self.word_embeddings_name)
        self.dtype = dtype
        return self

    def quantized_names(self) -> list[str]:
        """Checkpoint names (before prefixes) of what :meth:`quantize_` makes int8: each layer's
        Linear weights, then the word embeddings."""
        names = [self.layer_names(i)[f] for i in range(len(self.layers)) for f in self.layer_class.LINEARS]
        return names + [self.word_embeddings_name]

    def check_unused(self, weights: Weights) -> None:
        """Raise ``ValueError`` if the checkpoint has encoder tensors this config does not use."""
        extra = weights.unused(self.namespaces)
        if extra:
            raise ValueError(
                f"unexpected tensors in the checkpoint (does config.json match the weights?): "
                f"{extra[:5]}{' ...' if len(extra) > 5 else ''}"
            )

    @property
    def num_parameters(self) -> int:
        """Number of parameters of the encoder (embeddings, layers, pooler)."""
        arrays = [*vars(self.embeddings).values()] if hasattr(self, "embeddings") else []
        arrays += [getattr(layer, f.name) for layer in self.layers for f in fields(layer)]
        arrays += list(self.pooler or ()) + list(self.projection or ())
        return int(sum(getattr(a, "size", 0) for a in arrays))
