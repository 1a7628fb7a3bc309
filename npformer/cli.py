"""The ``npformer`` command line: one subcommand per task, JSON lines out.

    npformer sentiment "a gorgeous, witty, seductive movie."
    npformer ner --input news.txt --output entities.jsonl
    npformer qa --context "npformer runs BERT in NumPy." "What does npformer run?"
    npformer fill-mask "paris is the [MASK] of france."
    npformer embed --input sentences.csv --column sentence
    npformer similarity "a man is eating" "someone eats food"
    npformer zero-shot --labels sports,politics,cooking "the match went to extra time"
    npformer info MODEL
    npformer quantize MODEL OUT_DIR

Texts come from the arguments, from ``--input FILE`` (``.txt`` one text per line, ``.jsonl``,
``.csv`` / ``.tsv`` with ``--column``), or from stdin (one per line); see :mod:`npformer.records`.
Results go to stdout or ``--output FILE`` (see :mod:`npformer.output`: an existing file is kept
unless ``--overwrite``, and is only replaced when the run completes).

Exit status: 0 when every record was processed; 1 when some records failed (each is written with
an ``"error"`` field, or skipped, as ``--on-error`` says; a summary line goes to stderr); 2 for a
problem with the command itself (bad option, missing file, unreadable checkpoint), printed as one
line ``npformer: error: ...`` with no traceback; 130 when interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from npformer.convert import save_quantized
from npformer.models.auto import build_encoder, open_checkpoint
from npformer.models.pooling import cosine_similarity
from npformer.output import JsonLines, NonFiniteError, OutputError
from npformer.pipelines import pipeline
from npformer.quantization import is_quantized
from npformer.records import InputError, Record, Source

CHUNK = 256  # records handed to a pipeline at a time (it batches them by --batch-size)
ON_ERROR = ("record", "skip", "abort")
EMPTY_WARNING = ("the text has no tokens after normalization (only whitespace, control or format characters): "
                 "the result is the model's output for an empty input")


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
        if "error" in result and record.text is not None:
            result.setdefault("text", record.text)
        out.append(result)
    return out


def run_task(args, pipe, fn: Callable, source: Source, output: JsonLines) -> tuple[int, int]:
    """Process every record of ``source``, writing one JSON line per record (or skipping bad ones);
    returns ``(records, errors)``. On any failure the records done are kept as ``OUT.partial``."""
    progress = None
    if source.kind != "args" and sys.stderr.isatty():
        from tqdm import tqdm

        progress = tqdm(unit="text", file=sys.stderr)
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
            return [{"text": t, **r} for t, r in zip(texts, pipe(texts), strict=True)]
        return [{"text": t, "labels": r} for t, r in zip(texts, pipe(texts, top_k=args.top_k), strict=True)]
    return "sentiment-analysis", fn, ()


def _ner(args):
    def fn(pipe, records):
        texts = _texts(records)
        found = pipe(texts, aggregation_strategy=args.aggregation_strategy, stride=args.stride)
        return [{"text": t, "entities": e} for t, e in zip(texts, found, strict=True)]
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
                raise ValueError("question answering needs a context: --context TEXT, --context-file FILE, or a "
                                 f"{args.context_column!r} field in each input record")
            answer = pipe(question=record.text, context=ctx, top_k=args.top_k or 1)
            out.append({"question": record.text, **answer} if isinstance(answer, dict)
                       else {"question": record.text, "answers": answer})
        return out
    return "question-answering", fn, () if context is not None else (args.context_column,)


def _fill_mask(args):
    def fn(pipe, records):
        texts = _texts(records)
        return [{"text": t, "predictions": p} for t, p in zip(texts, pipe(texts, top_k=args.top_k or 5), strict=True)]
    return "fill-mask", fn, ()


def _embed(args):
    def fn(pipe, records):
        texts = _texts(records)
        return [{"text": t, "embedding": v} for t, v in zip(texts, pipe(texts), strict=True)]
    return "sentence-embeddings", fn, ()


def _similarity(args):
    if args.texts and len(args.texts) != 2:
        raise UserError("similarity takes exactly two texts (or --input FILE with --column and --pair-column)")
    pair_given = args.texts[1] if args.texts else None
    args.texts = args.texts[:1]

    def fn(pipe, records):
        pairs = [pair_given if pair_given is not None else r.fields.get(args.pair_column) for r in records]
        if any(not isinstance(p, str) or not p.strip() for p in pairs):
            raise ValueError(f"every input record needs a non-empty {args.pair_column!r} field (--pair-column)")
        scores = np.diagonal(cosine_similarity(pipe(_texts(records)), pipe(pairs)))  # pair i: row i with row i
        return [{"text": r.text, "text_pair": p, "score": float(s)} for r, p, s in zip(records, pairs, scores,
                                                                                       strict=True)]
    return "sentence-embeddings", fn, () if pair_given is not None else (args.pair_column,)


def _zero_shot(args):
    labels = [s.strip() for s in (args.labels or "").split(",") if s.strip()]
    if not labels:
        raise UserError("zero-shot needs --labels, e.g. --labels sports,politics,cooking")

    def fn(pipe, records):
        return pipe(_texts(records), labels, multi_label=args.multi_label)
    return "zero-shot-classification", fn, ()


TASKS = {"sentiment": _sentiment, "ner": _ner, "qa": _qa, "fill-mask": _fill_mask, "embed": _embed,
         "similarity": _similarity, "zero-shot": _zero_shot}


def info(model: str) -> dict:
    """Architecture, size, labels and dtype of a checkpoint (loading, and so validating, its encoder)."""
    directory, config, weights = open_checkpoint(model)
    encoder = build_encoder(config, weights)
    files = list(directory.glob("*.safetensors"))
    return {"path": str(directory), "model_type": config.model_type, "architectures": config.architectures,
            "num_hidden_layers": config.num_hidden_layers, "hidden_size": config.hidden_size,
            "num_attention_heads": config.num_attention_heads, "intermediate_size": config.intermediate_size,
            "vocab_size": config.vocab_size, "max_position_embeddings": config.max_position_embeddings,
            "parameters": int(sum(t.size for k, t in weights.tensors.items()
                                  if not k.endswith("_scale") and t.dtype.kind in "fi" and t.dtype != "int64")),
            "encoder_parameters": encoder.num_parameters,
            "size_bytes": int(sum(f.stat().st_size for f in files)),
            "dtype": "int8" if is_quantized(weights) else "float32",
            "stored_dtypes": sorted({str(t.dtype) for t in weights.tensors.values()}),
            "id2label": {str(k): v for k, v in config.id2label.items()}}


def _positive(name: str):
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {value!r}") from None
        if n < (0 if name == "--stride" else 1):
            raise argparse.ArgumentTypeError(f"{name} must be {'>= 0' if name == '--stride' else '>= 1'}, got {n}")
        return n
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npformer", description="BERT-family inference in NumPy + Numba.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in [("sentiment", "classify the sentiment of texts (default: the built-in INT8 model)"),
                            ("ner", "named entities"), ("qa", "answer questions about a context"),
                            ("fill-mask", "fill the [MASK] token"), ("embed", "sentence embeddings"),
                            ("similarity", "cosine similarity of two texts"),
                            ("zero-shot", "classify against your labels by embedding similarity")]:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("texts", nargs="*", help="texts (otherwise --input or stdin)")
        p.add_argument("--input", "-i", help="a .txt (one text per line), .jsonl, .csv or .tsv file")
        p.add_argument("--column", help="field / column holding the text (default: text)")
        p.add_argument("--delimiter", help="field separator of a CSV file (default: ',' for .csv, tab for .tsv)")
        p.add_argument("--output", "-o", help="write JSON lines to this file instead of stdout")
        p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
        p.add_argument("--on-error", choices=ON_ERROR, default="record",
                       help="a bad record is written with an \"error\" field (record, the default), left out "
                            "(skip), or stops the run (abort); the exit status is 1 if any record failed")
        p.add_argument("--model", "-m", help="checkpoint directory or Hub id (default: the task's default)")
        p.add_argument("--dtype", choices=["float32", "int8"], default="float32")
        p.add_argument("--batch-size", type=_positive("--batch-size"), default=16)
        if name in ("sentiment", "qa", "fill-mask"):
            p.add_argument("--top-k", type=_positive("--top-k"), default=None)
        if name == "ner":
            p.add_argument("--aggregation-strategy", default="simple",
                           choices=["none", "simple", "first", "average", "max"])
            p.add_argument("--stride", type=_positive("--stride"), default=None,
                           help="cover long texts with windows overlapping by this many tokens")
        if name == "qa":
            p.add_argument("--context", help="the context text")
            p.add_argument("--context-file", help="a file holding the context")
            p.add_argument("--context-column", default="context", help="field holding a per-record context")
        if name == "similarity":
            p.add_argument("--pair-column", default="text_pair", help="field holding the second text")
        if name == "zero-shot":
            p.add_argument("--labels", help="comma-separated candidate labels")
            p.add_argument("--multi-label", action="store_true")
    p = sub.add_parser("info", help="architecture, parameters, size, labels and dtype of a checkpoint")
    p.add_argument("model")
    p = sub.add_parser("quantize", help="write an INT8 copy of a checkpoint")
    p.add_argument("model")
    p.add_argument("out_dir")
    p.add_argument("--overwrite", action="store_true", help="replace the weights in OUT_DIR if there are some")
    return parser


def _error(message: str) -> None:
    print(f"npformer: error: {message.splitlines()[0] if message.strip() else 'failed'}", file=sys.stderr)


def _interrupted(e: BaseException) -> bool:
    """Ctrl-C, also when it surfaces as the SystemError of a Numba parallel region it interrupted."""
    while e is not None:
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__cause__ or e.__context__
    return False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    output = JsonLines(getattr(args, "output", None), getattr(args, "overwrite", False))
    try:
        if args.command == "info":
            print(json.dumps(info(args.model), indent=2))
            return 0
        if args.command == "quantize":
            out = save_quantized(args.model, args.out_dir, overwrite=args.overwrite)
            print(json.dumps({"out_dir": str(out), "size_bytes": (out / "model.safetensors").stat().st_size}))
            return 0
        task, fn, extra_columns = TASKS[args.command](args)
        source = Source(args.input, args.texts, args.column, args.delimiter, extra_columns)
        if extra_columns and source.kind in ("args", "lines"):  # no fields to take the second text from
            raise UserError("question answering needs a context: --context TEXT, --context-file FILE, or a "
                            f"{args.context_column!r} field in each record of a .jsonl / .csv / .tsv input"
                            if args.command == "qa" else
                            "similarity takes exactly two texts, or a .jsonl / .csv / .tsv input with a "
                            f"{args.pair_column!r} field (--pair-column)")
        inputs = [source.path] if source.path is not None else []
        if args.command == "qa" and args.context_file:
            inputs.append(Path(args.context_file))
        output.check(inputs)
        pipe = pipeline(task, args.model, dtype=args.dtype, batch_size=args.batch_size)
        records, errors = run_task(args, pipe, fn, source, output)
        if errors or source.kind != "args":
            where = f"; results in {args.output}" if args.output else ""
            what = {"record": "written with an \"error\" field", "skip": "left out"}[args.on_error]
            print(f"npformer: {records} records, {errors} errors ({what}){where}", file=sys.stderr)
        return 1 if errors else 0
    except Aborted as e:
        _error(f"{e} (--on-error abort){_kept(output)}")
        return 1
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except (UserError, InputError, OutputError, ValueError, FileNotFoundError) as e:
        _error(f"{e}{_kept(output)}")
        return 2
    except OSError as e:  # writing the output: a full disk, a read-only file system...
        target = getattr(args, "output", None) or "stdout"
        _error(f"cannot write {target}: {e.strerror or e}{_kept(output)}")
        return 2
    except (KeyboardInterrupt, SystemError) as e:
        if not _interrupted(e):
            raise
        print(f"npformer: interrupted{_kept(output)}", file=sys.stderr)
        return 130


def _kept(output: JsonLines) -> str:
    return f"; the {output.written} records done are in {output.partial}" if output.partial else ""


if __name__ == "__main__":
    sys.exit(main())
