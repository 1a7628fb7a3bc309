"""``"feature-extraction"``, ``"sentence-embeddings"`` and similarity-based ``"zero-shot-classification"``."""

from __future__ import annotations

import numpy as np

from npformer.models.pooling import Pooling, SentenceSettings, l2_normalize
from npformer.pipelines.base import InputTooLong, Pipeline, check_texts, softmax, tokenizer_kwargs
from npformer.search import PRECISIONS, quantize_embeddings, similarity_function
from npformer.tokenizer.encoding import pad_encoding


class FeatureExtractionPipeline(Pipeline):
    """Hidden states of the last layer, as Transformers' FeatureExtractionPipeline.

    ``pipe(text)`` -> nested lists ``[1][seq_len][hidden_size]`` (``return_tensors=True``: a
    ``(1, seq_len, hidden_size) float32`` array); a list of texts -> one such value per text.
    One result per input. ``truncation=True`` cuts texts to the model's maximum; by default (as in
    Transformers) an over-long text is a ``ValueError`` naming its index. An empty text gives the
    states of ``[CLS] [SEP]``. ``tokenize_kwargs`` (as Transformers) may hold ``truncation``,
    ``max_length`` and ``padding``; ``padding="max_length"`` gives ``max_length`` states per text,
    the padding's included (``True`` / ``"longest"`` change nothing: each text is its own result).
    """

    task = "feature-extraction"

    def __call__(
        self,
        inputs,
        *,
        return_tensors: bool = False,
        truncation: bool | None = None,
        max_length: int | None = None,
        tokenize_kwargs: dict | None = None,
    ):
        options = tokenizer_kwargs(tokenize_kwargs, "tokenize_kwargs", truncation=truncation, max_length=max_length)
        texts, single = check_texts(inputs, allow_empty=True)
        encodings = self.encode_one_window(
            [(t, None) for t in texts], options.get("truncation", False), options.get("max_length")
        )
        if options.get("padding") == "max_length":
            width = self.check_max_length(options.get("max_length"))
            tok = self.tokenizer
            encodings = [pad_encoding(e, width, tok.pad_token_id, tok.pad_token) for e in encodings]
        states = self.forward(encodings, self.hidden_states, per_token=True)
        out = [s[None] if return_tensors else s[None].tolist() for s in states]
        return out[0] if single else out


class SentenceEmbeddingPipeline(Pipeline):
    """Pooled sentence vectors (sentence-transformers' ``encode``).

    ``pipe(text)`` -> ``(dim,) float32``; ``pipe(list)`` -> ``(n, dim) float32``. Pooling, L2
    normalization and ``max_seq_length`` come from the checkpoint (see :class:`Pooling`).

    One vector per input. Texts longer than ``max_seq_length`` (else the model's maximum) are cut
    to it, as sentence-transformers does; ``truncation=False`` makes an over-long text a
    ``ValueError`` naming its index. An empty text (or one with nothing left after
    normalization) is embedded as ``[CLS] [SEP]``, as sentence-transformers does.
    """

    task = "sentence-embeddings"
    lazy = False  # sentence-transformers' encode: any iterable in, one array out

    def __init__(self, *args, truncate_dim: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.pooling = Pooling.from_pretrained(self.model_dir) if self.model_dir else Pooling()
        settings = SentenceSettings.from_pretrained(self.model_dir)
        self.prompts, self.default_prompt_name = settings.prompts, settings.default_prompt_name
        self.similarity_fn_name = settings.similarity_fn_name
        self.truncate_dim = self._check_dim(truncate_dim)

    def __call__(self, inputs, *, truncation: bool = True, max_length: int | None = None) -> np.ndarray:
        return self.encode(inputs, truncation=truncation, max_length=max_length)

    @property
    def max_seq_length(self) -> int:
        """Tokens a text is cut to (sentence-transformers' ``max_seq_length``); settable, at most the model's."""
        return min(self.pooling.max_seq_length or self.max_length, self.max_length)

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.pooling.max_seq_length = self.check_max_length(value)

    def get_sentence_embedding_dimension(self) -> int:
        """The size of the vectors :meth:`encode` returns (``truncate_dim`` when set)."""
        full = self.config.hidden_size * len(self.pooling.modes)
        return min(self.truncate_dim, full) if self.truncate_dim else full

    def _check_dim(self, dim):
        if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
            raise ValueError(f"truncate_dim must be a positive integer, got {dim!r}")
        return dim

    def tokenize_inputs(self, items, truncation: bool, prompt_name: str | None = None) -> list:
        """One :class:`~npformer.tokenizer.Encoding` per item, in order: a str is tokenized with the
        prompt :meth:`prompt_for` chooses, prepared as sentence-transformers does (stripped, and
        lowercased when ``sentence_bert_config.json`` says ``do_lower_case``), and cut to
        :attr:`max_seq_length` (with ``truncation``);
        a list of token ids is taken as the whole input (:meth:`encode_ids`). Raises
        :class:`~npformer.pipelines.base.InputTooLong` with the item's index, ``ValueError`` as
        :meth:`encode_ids`."""
        out: list = [None] * len(items)
        prompt = self.prompt_for(None, prompt_name) or ""
        texts = [i for i, item in enumerate(items) if isinstance(item, str)]
        ids = [i for i, item in enumerate(items) if not isinstance(item, str)]
        try:
            prepared = [(self.pooling.prepare(prompt + items[i]), None) for i in texts]
            for index, enc in zip(texts, self.encode_one_window(prepared, truncation, self.max_seq_length)):
                out[index] = enc
            for index, enc in zip(ids, self.encode_ids([items[i] for i in ids], truncation, self.max_seq_length)):
                out[index] = enc
        except InputTooLong as e:
            raise InputTooLong((texts if e.source == "text" else ids)[e.index], e.max_length) from None
        return out

    def prompt_for(self, prompt: str | None, prompt_name: str | None) -> str | None:
        """The prompt put before each sentence, as sentence-transformers chooses it: ``prompt``, else
        the named one, else the default one."""
        if prompt is not None:
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise ValueError(f"prompt name {prompt_name!r} is not one of the model's prompts {sorted(self.prompts)}")
            return self.prompts[prompt_name]
        return self.prompts.get(self.default_prompt_name) if self.default_prompt_name else None

    def encode_query(self, sentences, prompt_name: str | None = None, prompt: str | None = None, **kwargs):
        """:meth:`encode` with the model's ``query`` prompt when it has one (sentence-transformers 5)."""
        if prompt_name is None and prompt is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(sentences, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def encode_document(self, sentences, prompt_name: str | None = None, prompt: str | None = None, **kwargs):
        """:meth:`encode` with the model's ``document`` (or ``passage``, ``corpus``) prompt when it has one."""
        if prompt_name is None and prompt is None:
            prompt_name = next((n for n in ("document", "passage", "corpus") if n in self.prompts), None)
        return self.encode(sentences, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def encode(  # noqa: PLR0913, C901
        self,
        sentences,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        output_value: str = "sentence_embedding",
        precision: str = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        truncation: bool = True,
        max_length: int | None = None,
    ):
        """sentence-transformers' ``SentenceTransformer.encode``, with its arguments' meanings.

        Args:
            sentences: a str or any iterable of str.
            prompt_name: the name of the model's prompt (``config_sentence_transformers.json``) put
                before each sentence; without it (and without ``prompt``), its ``default_prompt_name``'s.
            prompt: a prompt put before each sentence (wins over ``prompt_name``).
            convert_to_numpy: True (arrays); False gives a list of one array per sentence.
            convert_to_tensor: must stay False (npformer returns NumPy arrays, never torch tensors).
            device: ``"cpu"`` or None.
            truncate_dim: keep the first ``truncate_dim`` dimensions (Matryoshka models), before
                ``normalize_embeddings``; default the pipeline's (``pipeline(..., truncate_dim=)``).
            batch_size: texts per forward pass (default: the pipeline's).
            show_progress_bar: a tqdm bar over the texts on stderr (default: off).
            output_value: ``"sentence_embedding"`` (pooled, ``(n, dim)``) or ``"token_embeddings"``
                (a list of ``(tokens_i, hidden_size)`` arrays, ``[CLS]`` and ``[SEP]`` included).
            precision: ``"float32"``, ``"int8"``, ``"uint8"``, ``"binary"`` or ``"ubinary"`` (see
                :func:`npformer.search.quantize_embeddings`; int8 ranges come from these embeddings).
            normalize_embeddings: L2-normalize sentence embeddings (after the model's own modules).
            truncation: cut texts longer than ``max_seq_length`` (else ``ValueError`` naming the input).
            max_length: a shorter window than ``max_seq_length``, in tokens.

        Returns ``(dim,)`` for one str, ``(n, dim)`` for several (float32 or the precision's dtype),
        or the token embeddings as described. Raises ``ValueError`` for a bad argument or text.
        """
        if convert_to_tensor:
            raise ValueError("convert_to_tensor=True needs torch; npformer returns NumPy arrays (convert_to_numpy)")
        if device not in (None, "cpu"):
            raise ValueError(f"device {device!r} is not available: npformer runs on the CPU only (device='cpu')")
        texts, single = check_texts(sentences, allow_empty=True)
        prompt = self.prompt_for(prompt, prompt_name) or ""
        texts = [self.pooling.prepare(prompt + t) for t in texts]  # as sentence-transformers' Transformer module
        encodings = self.encode_one_window([(t, None) for t in texts], truncation, max_length or self.max_seq_length)
        vectors = self.embed_encodings(
            encodings,
            output_value=output_value,
            precision=precision,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            normalize_embeddings=normalize_embeddings,
            truncate_dim=truncate_dim,
        )
        if not convert_to_numpy and not single and output_value == "sentence_embedding":
            return list(vectors)
        return vectors[0] if single else vectors

    def embed_encodings(
        self,
        encodings,
        *,
        output_value: str = "sentence_embedding",  # noqa: PLR0913
        precision: str = "float32",
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
    ):
        """:meth:`encode` on inputs already tokenized: a list of
        :class:`~npformer.tokenizer.Encoding` (special tokens included; e.g. the server's token-id
        inputs). Returns ``(n, dim)`` (or a list of ``(tokens_i, hidden_size)`` arrays for
        ``output_value="token_embeddings"``); the arguments are :meth:`encode`'s."""
        if output_value not in ("sentence_embedding", "token_embeddings"):
            raise ValueError(f"output_value must be 'sentence_embedding' or 'token_embeddings', got {output_value!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        truncate_dim = self._check_dim(truncate_dim) or self.truncate_dim
        tokens = output_value == "token_embeddings"
        run = self.hidden_states if tokens else self.pooled
        bar = None
        if show_progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=len(encodings), unit="text", desc="encode")
        try:
            rows = self.forward(
                encodings, run, per_token=tokens, batch_size=batch_size, progress=bar.update if bar is not None else None
            )
        finally:
            if bar is not None:
                bar.close()
        if tokens:
            return quantize_embeddings(rows, precision) if rows and precision != "float32" else rows
        vectors = np.stack(rows) if rows else np.zeros((0, self.config.hidden_size), np.float32)
        if truncate_dim:
            vectors = np.ascontiguousarray(vectors[:, :truncate_dim])
        if normalize_embeddings:
            vectors = l2_normalize(vectors)
        if precision != "float32":
            vectors = quantize_embeddings(vectors, precision)
        return vectors

    def pooled(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        """Pooled sentence vectors ``(batch, dim) float32`` of one padded batch (before
        ``normalize_embeddings``; the checkpoint's own Normalize module included)."""
        return self.pooling(self.hidden_states(input_ids, attention_mask, token_type_ids), attention_mask)

    def similarity(self, a, b) -> np.ndarray:
        """The model's similarity (``similarity_fn_name``: cosine unless its config says ``dot``,
        ``euclidean`` or ``manhattan``) of every text (or vector) of ``a`` with every one of ``b``:
        ``(len(a), len(b)) float32`` (a float for two single texts)."""
        single = isinstance(a, str) and isinstance(b, str)
        function = similarity_function(self.similarity_fn_name)
        sims = function(a if isinstance(a, np.ndarray) else self(a), b if isinstance(b, np.ndarray) else self(b))
        return float(sims[0, 0]) if single else sims

    def similarity_pairwise(self, a, b) -> np.ndarray:
        """The model's similarity of row ``i`` of ``a`` with row ``i`` of ``b`` (vectors or texts):
        ``(n,) float32``, as sentence-transformers' ``similarity_pairwise``."""
        a = a if isinstance(a, np.ndarray) else self(a)
        b = b if isinstance(b, np.ndarray) else self(b)
        a, b = np.atleast_2d(a), np.atleast_2d(b)
        if a.shape != b.shape:
            raise ValueError(f"similarity_pairwise needs as many rows on each side, got {a.shape} and {b.shape}")
        function = similarity_function(self.similarity_fn_name)
        return np.array([function(x, y)[0, 0] for x, y in zip(a, b)], dtype=np.float32)


class ZeroShotClassificationPipeline(SentenceEmbeddingPipeline):
    """Zero-shot classification by **embedding similarity**, not by NLI.

    Transformers' zero-shot pipeline asks an NLI model whether the text entails
    ``hypothesis_template.format(label)``. npformer instead embeds the text and each hypothesis with a
    sentence-embedding model and scores labels by cosine similarity:

    * ``multi_label=False``: ``softmax(cos / temperature)`` over the labels, which sum to 1
      (``temperature`` 0.05 by default, as in SimCSE);
    * ``multi_label=True``: each label's **raw cosine similarity** in [-1, 1], independently. It is not
      a probability: choose a threshold for your model and labels (for all-MiniLM-L6-v2, related
      texts typically score above 0.3 and unrelated ones near 0).

    Output keys as Transformers: ``{"sequence", "labels", "scores"}``, labels by decreasing score.
    One result per input; texts are truncated as in :class:`SentenceEmbeddingPipeline`.
    """

    task = "zero-shot-classification"
    lazy = True
    temperature = 0.05

    def __call__(
        self,
        inputs,
        candidate_labels=None,
        *,
        hypothesis_template: str = "This example is {}.",
        multi_label: bool = False,
        truncation: bool = True,
        temperature: float | None = None,
        max_length: int | None = None,
    ):
        texts, single = check_texts(inputs, allow_empty=True)
        if isinstance(candidate_labels, str):
            candidate_labels = [s.strip() for s in candidate_labels.split(",") if s.strip()]
        if not candidate_labels:
            raise ValueError("zero-shot classification needs at least one candidate label")
        if "{}" not in hypothesis_template:
            raise ValueError(f"hypothesis_template must contain '{{}}' for the label, got {hypothesis_template!r}")
        temperature = self.temperature if temperature is None else temperature
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        hypotheses = [hypothesis_template.format(label) for label in candidate_labels]
        sims = self.similarity(
            super().__call__(texts, truncation=truncation, max_length=max_length), super().__call__(hypotheses)
        )
        results = []
        for text, row in zip(texts, sims):
            scores = row.astype(np.float64) if multi_label else softmax(row / temperature)
            order = np.argsort(-scores, kind="stable")
            results.append(
                {"sequence": text, "labels": [candidate_labels[i] for i in order], "scores": [float(scores[i]) for i in order]}
            )
        return results[0] if single else results
