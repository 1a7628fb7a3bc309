"""What every pipeline shares: loading, and batched forward passes in the caller's order.

Batching (as the issue asks): inputs are sorted by token length, cut into batches of
``batch_size``, each batch padded to its own longest sequence (dynamic padding), and the results
put back in the caller's order. Padding never changes a result: padded keys are masked out.
"""

from __future__ import annotations

import copy
import functools
import inspect
import numbers
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from npformer.convert import copy_checkpoint, save_quantized
from npformer.hub import resolve
from npformer.quantization import is_quantized
from npformer.runner import Runner, Step
from npformer.tokenizer import Encoding, Tokenizer, sentencepiece
from npformer.tokenizer.encoding import pad, padding_strategy, truncation_side, truncation_strategy
from npformer.weights import Weights

DEFAULT_BATCH_SIZE = 16


def run_batched(
    encodings: Sequence[Encoding],
    run: Callable,
    batch_size: int,
    pad_id: int,
    per_token: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list:
    """Call ``run(input_ids, attention_mask, token_type_ids) -> array (batch, ...)`` on length-sorted,
    dynamically padded batches; returns one result per encoding, in the order given.

    With ``per_token`` the result has a sequence axis (``(batch, seq_len, ...)``) and each row is
    cut back to its own length. ``progress(n)`` is called after each batch of ``n`` encodings.
    """
    order = sorted(range(len(encodings)), key=lambda i: len(encodings[i]))
    results: list = [None] * len(encodings)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = [encodings[i] for i in chunk]
        arrays = pad(batch, pad_id)  # (batch, longest) int64 each
        out = run(arrays["input_ids"], arrays["attention_mask"], arrays["token_type_ids"])
        for row, i in enumerate(chunk):
            results[i] = out[row, : len(encodings[i])] if per_token else out[row]
        if progress is not None:
            progress(len(chunk))
    return results


class InputTooLong(ValueError):
    """Input ``index`` is longer than ``max_length`` tokens and truncation is off (a ``ValueError``;
    the server words it with its own ``truncate`` field)."""

    def __init__(self, index: int, max_length: int, source: str = "text"):
        super().__init__(
            f"input {index} is longer than the model's maximum of {max_length} tokens; "
            f"pass truncation=True to cut it to that length"
        )
        self.index, self.max_length, self.source = index, max_length, source


class Pipeline:
    """Base class: a tokenizer, a model and ``batch_size``. Subclasses implement ``__call__``.

    Every subclass's ``__call__`` gets Transformers' pipeline habits (see :meth:`_dispatch`):
    keyword arguments given at construction (``pipeline("ner", m, aggregation_strategy="simple")``)
    are the call's defaults, ``batch_size=`` applies to one call, a generator or iterator of inputs
    gives a lazy iterator of results (one batch in memory, as ``PipelineIterator``), and an input
    that is not text (None, a number, bytes) is a ``TypeError`` saying what the task takes."""

    task = ""
    lazy = True  # a generator in gives an iterator out (Transformers' PipelineIterator)
    device = "cpu"  # as Transformers' pipeline.device; npformer runs on the CPU only
    runner: Runner | None = None  # who runs the forward passes (None: the pipeline, see run_on)

    def __init__(
        self, model, tokenizer: Tokenizer, *, batch_size: int = DEFAULT_BATCH_SIZE, model_dir: Path | None = None, **call_defaults
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.model_dir = model_dir
        accepted = self.call_parameters()
        unknown = sorted(set(call_defaults) - accepted)
        if unknown:
            raise TypeError(f"the {self.task} pipeline takes no argument {unknown[0]!r}; its call takes {sorted(accepted)}")
        self.call_defaults = call_defaults

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        call = cls.__dict__.get("__call__")
        if call is not None and not getattr(call, "dispatched", False):

            @functools.wraps(call)
            def __call__(self, *args, **kw):
                return self._dispatch(call, args, kw)

            __call__.dispatched = True
            cls.__call__ = __call__

    @classmethod
    def call_parameters(cls) -> set[str]:
        """The keyword arguments this pipeline's call takes (construction may give them defaults)."""
        return _keywords(inspect.unwrap(cls.__call__)) - {"inputs"}

    def _dispatch(self, call: Callable, args: tuple, kwargs: dict):
        """Transformers' call habits around a subclass's ``call`` (see the class docstring)."""
        own = _keywords(call)
        kwargs = {**{k: v for k, v in self.call_defaults.items() if k in own}, **kwargs}
        batch_size = kwargs.pop("batch_size", None)
        target = self
        if batch_size is not None and batch_size != self.batch_size:
            if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
                raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
            target = copy.copy(self)  # the model and tokenizer are shared; this call's batch size is its own
            target.batch_size = batch_size
        if args:
            inputs = args[0]
            if inputs is None or isinstance(inputs, (bytes, bytearray, numbers.Number)):
                raise TypeError(f"the {self.task} pipeline takes {self.accepts}; got {type(inputs).__name__}")
            if self.lazy and isinstance(inputs, Iterator):  # a generator: results as they come, a batch at a time
                return target._lazy(call, inputs, args[1:], kwargs)
        return call(target, *args, **kwargs)

    accepts = "a string, a list of strings or a generator of strings"

    def _lazy(self, call: Callable, inputs: Iterator, rest: tuple, kwargs: dict) -> Iterator:
        while True:
            chunk = [item for _, item in zip(range(self.batch_size), inputs)]
            if not chunk:
                return
            yield from call(self, chunk, *rest, **kwargs)

    @property
    def config(self):
        return self.model.config

    checkpoint: Path | None = None  # the directory the model was loaded from (set by npformer.pipeline)

    def save_pretrained(self, save_directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write the checkpoint this pipeline runs to ``save_directory`` (Transformers'
        ``pipe.save_pretrained``): ``npformer.pipeline(task, save_directory)`` loads the same model
        and tokenizer again. A model quantized at load (``dtype="int8"``) is written as npformer's
        int8 checkpoint, one loaded with ``dtype="bfloat16"`` as a bfloat16 one
        (:func:`~npformer.convert.save_quantized`, bit for bit the same weights);
        otherwise the checkpoint's files are copied. Returns the directory.

        Raises ``ValueError`` for a pipeline built on a model loaded by the caller or running a
        LoRA adapter (save the base checkpoint and keep the adapter's directory beside it), and
        ``FileExistsError`` when a file would be replaced and ``overwrite`` is not set.
        """
        encoder = getattr(self.model, "encoder", self.model)
        if self.checkpoint is None:
            raise ValueError(
                "this pipeline runs a model you loaded yourself; save_pretrained copies the checkpoint "
                "a pipeline was loaded from: build it with npformer.pipeline(task, directory)"
            )
        if getattr(encoder, "active_adapter", None) is not None:
            raise ValueError(
                f"this pipeline runs LoRA adapter {encoder.active_adapter!r} merged at load; keep the "
                f"adapter's directory and the base checkpoint ({self.checkpoint}) instead"
            )
        if encoder.dtype == "bfloat16" or encoder.dtype == "int8" and not is_quantized(Weights(self.checkpoint)):
            return save_quantized(self.checkpoint, save_directory, overwrite=overwrite, dtype=encoder.dtype)
        return copy_checkpoint(self.checkpoint, save_directory, overwrite=overwrite)

    @property
    def max_length(self) -> int:
        """Most tokens one forward pass takes: the tokenizer's ``model_max_length``, at most the
        model's ``max_position_embeddings``."""
        return min(self.tokenizer.model_max_length, self.config.max_length)

    def encode_one_window(
        self, pairs: Sequence[tuple[str, str | None]], truncation: bool, max_length: int | None = None
    ) -> list[Encoding]:
        """Exactly one :class:`Encoding` per ``(text, text_pair)``, in order, for the tasks that read
        one window. Over-long inputs are cut to ``max_length`` (default :attr:`max_length`) tokens
        with ``truncation``; without it they raise ``ValueError`` naming the input's index. A
        ``max_length`` outside ``[2, model maximum]`` raises ``ValueError``."""
        max_length = self.check_max_length(max_length)
        encodings = self.tokenizer.encode_batch(pairs, truncation="longest_first", max_length=max_length, overflow=False)
        if not truncation:
            for i, enc in enumerate(encodings):
                if enc.truncated:
                    raise InputTooLong(i, max_length)
        return encodings

    def encode_ids(self, rows: Sequence[Sequence[int]], truncation: bool, max_length: int | None = None) -> list[Encoding]:
        """One :class:`Encoding` per row of token ids, taken as the whole input (no special tokens
        added, as TEI's and OpenAI's token-id inputs). A row longer than ``max_length`` (default
        :attr:`max_length`) is cut on the tokenizer's ``truncation_side`` with ``truncation``, else
        it raises :class:`InputTooLong`; an id outside the model's vocabulary raises ``ValueError``
        naming it."""
        limit = self.check_max_length(max_length)
        vocab_size = min(self.config.vocab_size, len(self.tokenizer))
        out = []
        for i, row in enumerate(rows):
            bad = next((t for t in row if not 0 <= t < vocab_size), None)
            if bad is not None:
                raise ValueError(f"input {i}: token id {bad} is outside the model's vocabulary (0 to {vocab_size - 1})")
            if len(row) > limit:
                if not truncation:
                    raise InputTooLong(i, limit, "ids")
                row = row[-limit:] if self.tokenizer.truncation_side == "left" else row[:limit]
            out.append(self.tokenizer.encoding_from_ids(row))
        return out

    def with_truncation_side(self, side: str) -> "Pipeline":
        """This pipeline with its tokenizer cutting over-long texts on ``side`` (``"right"`` or
        ``"left"``, TEI's ``truncation_direction``): itself when it already does, else a shallow
        copy sharing the model. Raises ``ValueError`` for another side."""
        side = truncation_side(side)
        if side == self.tokenizer.truncation_side:
            return self
        other = copy.copy(self)
        other.tokenizer = copy.copy(self.tokenizer)
        other.tokenizer.truncation_side = side
        return other

    def check_max_length(self, max_length: int | None) -> int:
        """``max_length`` (tokens, special tokens included) if it is an integer in ``[2, max_length]``;
        None gives the model's maximum. Raises ``ValueError`` otherwise."""
        if max_length is None:
            return self.max_length
        if not isinstance(max_length, int) or isinstance(max_length, bool) or not 2 <= max_length <= self.max_length:
            raise ValueError(
                f"max_length must be an integer from 2 to {self.max_length} (the model's maximum), got {max_length!r}"
            )
        return max_length

    def label(self, index: int) -> str:
        """``id2label`` name of class ``index`` (``LABEL_{index}`` when the config has none)."""
        return self.config.id2label.get(int(index), f"LABEL_{int(index)}")

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        """The model's ``logits`` for one padded batch (a ``run`` for :meth:`forward`)."""
        return self.model(input_ids, attention_mask, token_type_ids).logits

    def hidden_states(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        """The last layer's hidden states ``(batch, seq_len, hidden_size) float32`` for one padded batch."""
        return self.model(input_ids, attention_mask, token_type_ids).last_hidden_state

    def run_on(self, runner: Runner | None) -> None:
        """Hand this pipeline's forward passes to ``runner`` (``npformer serve`` gives its batcher,
        which may run them with other requests' rows of the same step); None: run them here."""
        self.runner = runner

    def forward(
        self,
        encodings: Sequence[Encoding],
        run: Callable,
        per_token: bool = False,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list:
        """:func:`run_batched` with this pipeline's batch size (unless given) and padding id, or
        the :attr:`runner`'s run.

        ``run(input_ids, attention_mask, token_type_ids)`` must compute each row independently of
        the others. A method of this pipeline (:meth:`logits`, :meth:`hidden_states`...) becomes
        the :class:`~npformer.runner.Step` keyed ``(id(self), its name)``: rows of two requests
        share a pass when they come from the same pipeline and output."""
        if getattr(run, "__self__", None) is self:
            run = Step(run, (id(self), run.__name__))
        if self.runner is not None:
            return self.runner(encodings, Step.of(run), per_token, self.tokenizer.pad_token_id)
        return run_batched(encodings, run, batch_size or self.batch_size, self.tokenizer.pad_token_id, per_token, progress)


@functools.lru_cache(maxsize=None)
def _keywords(call: Callable) -> frozenset[str]:
    return frozenset(
        name
        for name, p in inspect.signature(call).parameters.items()
        if name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    )


def check_texts(inputs, what: str = "text", allow_empty: bool = False) -> tuple[list[str], bool]:
    """``(list of texts, was_single)`` from a str or any iterable of str (a list, a tuple, a NumPy
    array, a pandas Series, a generator).

    ``allow_empty`` accepts texts that are empty or hold only whitespace (Transformers' text
    classification and feature extraction accept ``""``; it encodes as ``[CLS] [SEP]``).
    Raises ``ValueError`` naming the index of a non-str (or, without ``allow_empty``, empty) text.
    """
    single = isinstance(inputs, str)
    if single:
        texts = [inputs]
    elif isinstance(inputs, (bytes, dict)) or not hasattr(inputs, "__iter__"):
        raise ValueError(f"{what} must be a str or an iterable of str, got {type(inputs).__name__}")
    else:
        texts = list(inputs)
    for i, t in enumerate(texts):
        where = what if single else f"{what} {i}"
        if not isinstance(t, str):
            raise ValueError(f"{where} must be a str, got {type(t).__name__}")
        if not allow_empty and not t.strip():
            raise ValueError(f"{where} is empty")
    return list(texts), single


TOKENIZER_KWARGS = ("truncation", "max_length", "padding")


def tokenizer_kwargs(given, name: str, **direct) -> dict:
    """A pipeline's ``tokenizer_kwargs`` (Transformers' fill-mask) or ``tokenize_kwargs``
    (feature extraction) merged with the same options given directly: ``truncation``,
    ``max_length`` and ``padding`` (``True`` / ``"longest"`` / ``"max_length"`` / ``False``).

    Returns the dict of those given. Raises ``TypeError`` for another key or a non-dict, and
    ``ValueError`` for an option given both ways (as Transformers) or an unknown strategy.
    """
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise TypeError(f"{name} must be a dict of tokenizer options, got {type(given).__name__}")
    unknown = sorted(set(given) - set(TOKENIZER_KWARGS))
    if unknown:
        raise TypeError(f"{name}: npformer's pipelines take the tokenizer options {list(TOKENIZER_KWARGS)}, not {unknown[0]!r}")
    options = dict(given)
    for key, value in direct.items():
        if value is not None:
            if key in given:
                raise ValueError(f"{key} given twice (as a keyword argument and in {name})")
            options[key] = value
    if "padding" in options:
        options["padding"] = padding_strategy(options["padding"])
    if "truncation" in options:
        options["truncation"] = truncation_strategy(options["truncation"]) != "do_not_truncate"
    return options


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """The checkpoint's tokenizer (``tokenizer.json``, ``vocab.json`` + ``merges.txt``, a SentencePiece
    model or ``vocab.txt``, + ``tokenizer_config.json``)."""
    directory = resolve(directory)
    if (
        not any((directory / name).is_file() for name in ("tokenizer.json", "vocab.txt", "vocab.json"))
        and sentencepiece.model_file(directory) is None
    ):
        raise FileNotFoundError(
            f"no tokenizer.json, vocab.txt, vocab.json + merges.txt or SentencePiece model in "
            f"{directory}: npformer needs the tokenizer beside the weights"
        )
    return Tokenizer.from_pretrained(directory)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (float64 inside, as the reference pipelines' NumPy code)."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))
