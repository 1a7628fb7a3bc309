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
``.csv`` / ``.tsv`` with ``--column``), or from stdin (one per line). User errors print one line
``npformer: error: ...`` and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Iterable, Iterator

CHUNK = 256  # texts handed to a pipeline at a time (it batches them by --batch-size)


class UserError(Exception):
    """A problem with what the user asked for; printed as one line."""


def read_records(path: str | None, texts: list[str], column: str | None) -> Iterator[dict]:
    """Records ``{"text": ...}`` (plus every column of the file) from args, a file or stdin."""
    if texts:
        yield from ({"text": t} for t in texts)
        return
    if path is None:
        if sys.stdin.isatty():
            raise UserError("no input: give texts as arguments, --input FILE, or pipe lines to stdin")
        yield from ({"text": line.rstrip("\n")} for line in sys.stdin if line.strip())
        return
    file = Path(path)
    if not file.is_file():
        raise UserError(f"input file not found: {file}")
    suffix = file.suffix.lower()
    with open(file, encoding="utf-8", newline="") as f:
        if suffix in (".csv", ".tsv"):
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",",
                                    quoting=csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL)
            name = column or "text"
            if name not in (reader.fieldnames or []):
                raise UserError(f"column {name!r} not in {file.name} (columns: {', '.join(reader.fieldnames or [])}); "
                                f"choose one with --column")
            for row in reader:
                yield {**row, "text": row[name]}
        elif suffix == ".jsonl":
            name = column or "text"
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{file.name} line {n} is not JSON: {e}") from None
                if not isinstance(row, dict) or name not in row:
                    raise UserError(f"{file.name} line {n} has no field {name!r}; choose one with --column")
                yield {**row, "text": row[name]}
        else:
            yield from ({"text": line.rstrip("\n")} for line in f if line.strip())


def chunks(records: Iterable[dict], size: int) -> Iterator[list[dict]]:
    chunk = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def to_json(value):
    """JSON-ready copy: NumPy scalars and arrays become Python numbers and lists."""
    import numpy as np

    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def run_task(args, pipe, fn) -> None:
    """Feed records to ``fn(pipe, records) -> list of dicts`` chunk by chunk, writing JSON lines."""
    records = read_records(args.input, args.texts, args.column)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    progress = None
    if args.input and sys.stderr.isatty():
        from tqdm import tqdm

        progress = tqdm(unit="text", file=sys.stderr)
    try:
        for chunk in chunks(records, CHUNK):
            for record in chunk:
                if not isinstance(record["text"], str) or not record["text"].strip():
                    raise UserError(f"empty text in the input ({len(chunk)} texts in this chunk)")
            for result in fn(pipe, chunk):
                out.write(json.dumps(to_json(result), ensure_ascii=False) + "\n")
            if progress is not None:
                progress.update(len(chunk))
    finally:
        if progress is not None:
            progress.close()
        if out is not sys.stdout:
            out.close()


def _sentiment(args):
    def fn(pipe, chunk):
        texts = [r["text"] for r in chunk]
        if args.top_k is None:
            return [{"text": t, **r} for t, r in zip(texts, pipe(texts))]
        return [{"text": t, "labels": r} for t, r in zip(texts, pipe(texts, top_k=args.top_k))]
    return "sentiment-analysis", fn


def _ner(args):
    def fn(pipe, chunk):
        texts = [r["text"] for r in chunk]
        found = pipe(texts, aggregation_strategy=args.aggregation_strategy, stride=args.stride)
        return [{"text": t, "entities": e} for t, e in zip(texts, found)]
    return "ner", fn


def _qa(args):
    context = args.context
    if args.context_file:
        path = Path(args.context_file)
        if not path.is_file():
            raise UserError(f"context file not found: {path}")
        context = path.read_text(encoding="utf-8")

    def fn(pipe, chunk):
        out = []
        for record in chunk:
            ctx = context if context is not None else record.get(args.context_column)
            if not isinstance(ctx, str) or not ctx.strip():
                raise UserError("question answering needs a context: --context TEXT, --context-file FILE, or a "
                                f"{args.context_column!r} field in each input record")
            answer = pipe(question=record["text"], context=ctx, top_k=args.top_k or 1)
            out.append({"question": record["text"], **answer} if isinstance(answer, dict)
                       else {"question": record["text"], "answers": answer})
        return out
    return "question-answering", fn


def _fill_mask(args):
    def fn(pipe, chunk):
        texts = [r["text"] for r in chunk]
        missing = [t for t in texts if pipe.tokenizer.mask_token not in t]
        if missing:
            raise UserError(f"no {pipe.tokenizer.mask_token} in the text: {missing[0][:80]!r}")
        return [{"text": t, "predictions": p} for t, p in zip(texts, pipe(texts, top_k=args.top_k or 5))]
    return "fill-mask", fn


def _embed(args):
    def fn(pipe, chunk):
        texts = [r["text"] for r in chunk]
        return [{"text": t, "embedding": v} for t, v in zip(texts, pipe(texts))]
    return "sentence-embeddings", fn


def _similarity(args):
    import numpy as np

    if args.texts and len(args.texts) != 2:
        raise UserError("similarity takes exactly two texts (or --input FILE with --column and --pair-column)")
    texts = args.texts
    args.texts = [texts[0]] if texts else []

    def fn(pipe, chunk):
        if texts:
            return [{"text": texts[0], "text_pair": texts[1], "score": pipe.similarity(texts[0], texts[1])}]
        pairs = [r.get(args.pair_column) for r in chunk]
        if any(not isinstance(p, str) or not p.strip() for p in pairs):
            raise UserError(f"every input record needs a non-empty {args.pair_column!r} field (--pair-column)")
        a = pipe([r["text"] for r in chunk])
        b = pipe(pairs)
        scores = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        return [{"text": r["text"], "text_pair": p, "score": float(s)} for r, p, s in zip(chunk, pairs, scores)]
    return "sentence-embeddings", fn


def _zero_shot(args):
    labels = [s.strip() for s in (args.labels or "").split(",") if s.strip()]
    if not labels:
        raise UserError("zero-shot needs --labels, e.g. --labels sports,politics,cooking")

    def fn(pipe, chunk):
        return pipe([r["text"] for r in chunk], labels, multi_label=args.multi_label)
    return "zero-shot-classification", fn


TASKS = {"sentiment": _sentiment, "ner": _ner, "qa": _qa, "fill-mask": _fill_mask, "embed": _embed,
         "similarity": _similarity, "zero-shot": _zero_shot}


def info(model: str) -> dict:
    """Architecture, size, labels and dtype of a checkpoint."""
    from npformer.models.auto import build_encoder, open_checkpoint
    from npformer.quantization import is_quantized

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
        p.add_argument("--output", "-o", help="write JSON lines here instead of stdout")
        p.add_argument("--model", "-m", help="checkpoint directory or Hub id (default: the task's default)")
        p.add_argument("--dtype", choices=["float32", "int8"], default="float32")
        p.add_argument("--batch-size", type=int, default=16)
        if name in ("sentiment", "qa", "fill-mask"):
            p.add_argument("--top-k", type=int, default=None)
        if name == "ner":
            p.add_argument("--aggregation-strategy", default="simple",
                           choices=["none", "simple", "first", "average", "max"])
            p.add_argument("--stride", type=int, default=None, help="cover long texts with overlapping windows")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            print(json.dumps(info(args.model), indent=2))
            return 0
        if args.command == "quantize":
            from npformer.quantization import save_quantized

            out = save_quantized(args.model, args.out_dir)
            print(json.dumps({"out_dir": str(out), "size_bytes": (out / "model.safetensors").stat().st_size}))
            return 0
        if args.batch_size < 1:
            raise UserError("--batch-size must be at least 1")
        task, fn = TASKS[args.command](args)
        from npformer.pipelines import pipeline

        pipe = pipeline(task, args.model, dtype=args.dtype, batch_size=args.batch_size)
        run_task(args, pipe, fn)
        return 0
    except (UserError, ValueError, FileNotFoundError, KeyError) as e:
        message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"npformer: error: {message.splitlines()[0] if message else type(e).__name__}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
