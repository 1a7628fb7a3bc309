"""What each ``npformer`` command does with the records it reads: the task functions (records ->
one result dict per record) and the loop that feeds them chunk by chunk, turns a record the task
cannot take into an error record, and writes every result (see :mod:`npformer.output`). The
retrieval commands (search, rerank, sparse and multi-vector embeddings) are in
:mod:`npformer.retrieval_commands`.
The argument parser and the exit statuses are in :mod:`npformer.cli`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from npformer.output import JsonLines, NonFiniteError, save_array
from npformer.records import Record, Source
from npformer.search import similarity

CHUNK = 256  # records handed to a pipeline at a time (it batches them by --batch-size)
ON_ERROR = ("record", "skip", "abort")
EMPTY_WARNING = (
    "the text has no tokens after normalization (only whitespace, control or format characters): "
    "the result is the model's output for an empty input"
)


class UserError(Exception):
    """A problem with what the user asked for; printed as one line."""


class Aborted(Exception):
    """``--on-error abort`` met a bad record."""


def chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    chunk = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def process(pipe, fn: Callable, chunk: list[Record], source: Source) -> list[dict]:
    """One output dict per record of ``chunk``, in order: ``fn``'s result, or ``{"error": ...}``.

    ``fn(pipe, records) -> list of dicts`` runs on the chunk's good records at once; when it
    raises ``ValueError`` (a record the task cannot take), each record is run alone so that only
    the bad one gets the error.
    """
    good = [r for r in chunk if r.error is None]
    try:
        results = fn(pipe, good) if good else []
    except ValueError:
        results = []
        for record in good:
            try:
                results.append(fn(pipe, [record])[0])
            except ValueError as e:
                results.append({"error": f"{source.where(record.line)}: {str(e).splitlines()[0]}"})
    if len(results) != len(good):
        raise RuntimeError(f"{len(results)} results for {len(good)} records")  # never: one result per input
    by_record = iter(results)
    out = []
    for record in chunk:
        result = {"error": record.error} if record.error else dict(next(by_record))
        if "error" not in result and record.text is not None and pipe.tokenizer.is_empty(record.text):
            result["warning"] = EMPTY_WARNING
        if source.kind != "args":
            result = {"line": record.line, **result}
        kept = source.kept(record)
        if kept:
            result["input"] = kept
        if "error" in result and record.text is not None:
            result.setdefault("text", record.text)
        out.append(result)
    return out


def run_task(args, pipe, fn: Callable, source: Source, output: JsonLines) -> tuple[int, int]:
    """Process every record of ``source``, writing one JSON line per record (or skipping bad ones);
    returns ``(records, errors)``. On any failure the records done are kept as ``OUT.partial``."""
    progress = None
    if source.kind != "args" and sys.stderr.isatty() and not getattr(args, "quiet", False):
        from tqdm import tqdm

        progress = tqdm(unit="text", file=sys.stderr, total=source.count())
    records = errors = 0
    output.open()
    try:
        for chunk in chunks(source, CHUNK):
            for result in process(pipe, fn, chunk, source):
                records += 1
                if "error" not in result:
                    try:
                        output.write(result)
                        continue
                    except NonFiniteError as e:
                        where = source.where(result.get("line", records))
                        result = {k: result[k] for k in ("line", "text") if k in result} | {"error": f"{where}: {e}"}
                errors += 1
                if args.on_error == "abort":
                    raise Aborted(result["error"])
                if args.on_error == "record":
                    output.write(result)
            if progress is not None:
                progress.update(len(chunk))
        output.commit()
    except BaseException:
        output.abandon()
        raise
    finally:
        if progress is not None:
            progress.close()
    return records, errors


def _texts(records: list[Record]) -> list[str]:
    return [r.text for r in records]


def _sentiment(args):
    def fn(pipe, records):
        texts = _texts(records)
        if args.top_k is None:
            return [{"text": t, **r} for t, r in zip(texts, pipe(texts, max_length=args.max_length), strict=True)]
        return [
            {"text": t, "labels": r}
            for t, r in zip(texts, pipe(texts, top_k=args.top_k, max_length=args.max_length), strict=True)
        ]

    return "sentiment-analysis", fn, ()


def _ner(args):
    def fn(pipe, records):
        texts = _texts(records)
        found = pipe(
            texts,
            aggregation_strategy=args.aggregation_strategy,
            stride=args.stride,
            return_probabilities=args.probabilities,
            max_length=args.max_length,
        )
        return [
            {"text": t, "entities": [x for x in e if x["score"] >= args.min_score]} for t, e in zip(texts, found, strict=True)
        ]

    return "ner", fn, ()


def _qa(args):
    context = args.context
    if args.context_file:
        path = Path(args.context_file)
        if not path.is_file():
            raise UserError(f"context file not found: {path}")
        try:
            context = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    if context is not None and not context.strip():
        raise UserError("the context is empty")

    def fn(pipe, records):
        out = []
        for record in records:
            ctx = context if context is not None else record.fields.get(args.context_column)
            if not isinstance(ctx, str) or not ctx.strip():
                raise ValueError(
                    "question answering needs a context: --context TEXT, --context-file FILE, or a "
                    f"{args.context_column!r} field in each input record"
                )
            answer = pipe(question=record.text, context=ctx, top_k=args.top_k or 1, max_seq_len=args.max_length)
            out.append(
                {"question": record.text, **answer} if isinstance(answer, dict) else {"question": record.text, "answers": answer}
            )
        return out

    return "question-answering", fn, () if context is not None else (args.context_column,)


def _fill_mask(args):
    def fn(pipe, records):
        texts = _texts(records)
        found = pipe(texts, top_k=args.top_k or 5, max_length=args.max_length)
        return [{"text": t, "predictions": p} for t, p in zip(texts, found, strict=True)]

    return "fill-mask", fn, ()


def _embed(args):
    def fn(pipe, records):
        texts = _texts(records)
        return [{"text": t, "embedding": v} for t, v in zip(texts, pipe(texts, max_length=args.max_length), strict=True)]

    return "sentence-embeddings", fn, ()


def _features(args):
    def fn(pipe, records):
        texts = _texts(records)
        states = pipe(texts, return_tensors=True, truncation=args.truncation, max_length=args.max_length)
        return [{"text": t, "features": s[0]} for t, s in zip(texts, states, strict=True)]

    return "feature-extraction", fn, ()


def _similarity(args):
    if args.texts and len(args.texts) != 2:
        raise UserError("similarity takes exactly two texts (or --input FILE with --column and --pair-column)")
    pair_given = args.texts[1] if args.texts else None
    args.texts = args.texts[:1]

    def fn(pipe, records):
        pairs = [pair_given if pair_given is not None else r.fields.get(args.pair_column) for r in records]
        if any(not isinstance(p, str) or not p.strip() for p in pairs):
            raise ValueError(f"every input record needs a non-empty {args.pair_column!r} field (--pair-column)")
        scores = np.diagonal(
            similarity(pipe(_texts(records), max_length=args.max_length), pipe(pairs, max_length=args.max_length))
        )  # pair i: row i with row i
        return [{"text": r.text, "text_pair": p, "score": float(s)} for r, p, s in zip(records, pairs, scores, strict=True)]

    return "sentence-embeddings", fn, () if pair_given is not None else (args.pair_column,)


def _zero_shot(args, task: str = "zero-shot-classification"):
    labels = [s.strip() for s in (args.labels or "").split(",") if s.strip()] + [s for s in args.label if s.strip()]
    if not labels:
        raise UserError("zero-shot needs --labels, e.g. --labels sports,politics,cooking (or --label repeated)")
    if "{}" not in args.hypothesis_template:
        raise UserError(f"--hypothesis-template must contain {{}} for the label, got {args.hypothesis_template!r}")

    def fn(pipe, records):
        return pipe(
            _texts(records),
            labels,
            multi_label=args.multi_label,
            hypothesis_template=args.hypothesis_template,
            max_length=args.max_length,
        )

    return task, fn, ()


@dataclass(frozen=True)
class Command:
    """One task command of the ``npformer`` CLI: its ``name`` (and ``aliases``), the pipeline ``task``
    it loads, its ``help``, its own options (``arguments(parser, positive)``, where ``positive(flag)``
    is the CLI's integer-option type) and ``make(args) -> (task, fn, extra_columns)``: ``fn(pipe,
    records) -> one result dict per record`` (see :func:`process`), and the input fields it needs
    beside the text. The options every command shares (input, output, model...) are the CLI's."""

    name: str
    task: str
    help: str
    make: Callable
    arguments: Callable | None = None
    aliases: tuple[str, ...] = ()


COMMANDS: dict[str, Command] = {}


def register_command(command: Command) -> Command:
    """Add a CLI command (a task registered from a plugin gets one this way). Raises ``ValueError``
    when the name or an alias is taken."""
    taken = {n for c in COMMANDS.values() if c.name != command.name for n in (c.name, *c.aliases)}
    clash = taken & {command.name, *command.aliases}
    if clash:
        raise ValueError(f"the command name {sorted(clash)[0]!r} is taken")
    COMMANDS[command.name] = command
    return command


def _top_k(p, positive, default=None) -> None:
    p.add_argument("--top-k", type=positive("--top-k"), default=default)


def _ner_arguments(p, positive) -> None:
    p.add_argument("--aggregation-strategy", default="simple", choices=["none", "simple", "first", "average", "max"])
    p.add_argument(
        "--stride", type=positive("--stride"), default=None, help="cover long texts with windows overlapping by this many tokens"
    )
    p.add_argument("--min-score", type=float, default=0.0, help="leave out entities scoring below this")
    p.add_argument(
        "--probabilities", action="store_true", help="give each entity its label probabilities and their entropy (nats)"
    )


def _qa_arguments(p, positive) -> None:
    _top_k(p, positive)
    p.add_argument("--context", help="the context text")
    p.add_argument("--context-file", help="a file holding the context")
    p.add_argument("--context-column", default="context", help="field holding a per-record context")


def _zero_shot_arguments(p, positive) -> None:
    p.add_argument("--labels", help="comma-separated candidate labels")
    p.add_argument("--label", action="append", default=[], help="one candidate label (repeat it; a label may hold commas)")
    p.add_argument(
        "--hypothesis-template", default="This example is {}.", help="the sentence each label is put in ({} is the label)"
    )
    p.add_argument(
        "--multi-label",
        action="store_true",
        help="score each label alone (an NLI model: its entailment probability; an embedding model: "
        "raw cosine similarity, -1..1), not a softmax over the labels",
    )


for _command in (
    Command(
        "sentiment",
        "text-classification",
        "classify the sentiment of texts (default: the built-in INT8 model)",
        _sentiment,
        _top_k,
        ("sentiment-analysis", "text-classification"),
    ),
    Command("ner", "token-classification", "named entities", _ner, _ner_arguments, ("token-classification",)),
    Command("qa", "question-answering", "answer questions about a context", _qa, _qa_arguments, ("question-answering",)),
    Command("fill-mask", "fill-mask", "fill the [MASK] token", _fill_mask, _top_k),
    Command(
        "embed",
        "sentence-embeddings",
        "sentence embeddings",
        _embed,
        lambda p, positive: p.add_argument(
            "--format",
            choices=["jsonl", "npy"],
            default="jsonl",
            help="npy: one (n, dim) float32 array in --output, rows in input order",
        ),
        ("sentence-embeddings", "embeddings"),
    ),
    Command(
        "feature-extraction",
        "feature-extraction",
        "the last layer's hidden states of every token",
        _features,
        lambda p, positive: p.add_argument("--truncation", action="store_true", help="cut texts longer than the model's maximum"),
    ),
    Command(
        "similarity",
        "sentence-embeddings",
        "cosine similarity of two texts",
        _similarity,
        lambda p, positive: p.add_argument("--pair-column", default="text_pair", help="field holding the second text"),
        ("sentence-similarity",),
    ),
    Command(
        "zero-shot",
        "zero-shot-classification",
        "classify against your labels (NLI model: entailment; embedding model: similarity)",
        _zero_shot,
        _zero_shot_arguments,
        ("zero-shot-classification",),
    ),
    Command(
        "zero-shot-similarity",
        "zero-shot-similarity",
        "classify against your labels by embedding similarity",
        lambda args: _zero_shot(args, "zero-shot-similarity"),
        _zero_shot_arguments,
    ),
):
    register_command(_command)


def run_npy(pipe, source: Source, target: JsonLines, max_length: int | None = None) -> int:
    """``embed --format npy``: every record's embedding as one ``(n, dim) float32`` array, rows in
    input order. A bad record stops the run before anything is written (rows must align)."""
    records = list(source)
    bad = next((r for r in records if r.error), None)
    if bad is not None:
        raise Aborted(f"{bad.error}; --format npy needs every record (rows align with the input)")
    save_array(target, pipe.encode(_texts(records), max_length=max_length, show_progress_bar=sys.stderr.isatty()))
    print(f"npformer: {len(records)} records, 0 errors; embeddings in {target.path}", file=sys.stderr)
    return 0
