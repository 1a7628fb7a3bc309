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
import importlib
import json
import logging
import os
import sys
from pathlib import Path

from npformer.commands import COMMANDS, ON_ERROR, Aborted, UserError, run_npy, run_task
from npformer.retrieval_commands import KINDS  # noqa: F401 - registers search, rerank, sparse-embed, colbert
from npformer.convert import COPY_DTYPES, convert, save_quantized
from npformer.models.auto import BACKENDS, DTYPES, build_encoder, open_checkpoint
from npformer.runtime import set_num_threads
from npformer.output import JsonLines, OutputError
from npformer.explain import explain_data, write_page
from npformer.serving import command as serve_command
from npformer.pipelines import ALIASES, pipeline
from npformer.pipelines.tasks import load_task_plugins
from npformer.provenance import describe
from npformer.records import InputError, Source
from npformer.version import __version__

# Up to this many texts given as arguments run on the NumPy backend by default: starting Numba costs
# more than its faster kernels save on so few (the break-even is in benchmarks/RESULTS.md,
# bench_cold_start.py and bench_backends.py).
ONE_OFF_TEXTS = 32


def info(model: str, revision: str | None = None) -> dict:
    """What ``npformer info`` prints (see :func:`npformer.provenance.describe`); loading the encoder
    validates the checkpoint."""
    directory, config, weights = open_checkpoint(model, revision)
    return describe(directory, config, weights, build_encoder(config, weights, backend="numpy"))  # nothing to run


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


def _verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="say more on stderr (-vv: debugging detail)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary unless records failed")


def _fit_head_parser(sub) -> None:
    p = sub.add_parser(
        "fit-head",
        help="fit a few-shot classifier head on a frozen encoder's features (needs pip "
        'install ".[train]" in npformer\'s repository)',
    )
    p.add_argument("--model", "-m", required=True, help="encoder checkpoint directory or Hub id")
    p.add_argument("--train", required=True, help="labelled examples: .csv, .tsv or .jsonl")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--delimiter", help="field separator of a CSV file")
    p.add_argument("--output", "-o", required=True, help="new checkpoint directory")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.add_argument(
        "--features",
        default="pooled",
        help="pooled (sentence-embedding pooling), cls, mean, or layers:LIST (e.g. layers:-1,-2,-3,-4: "
        "each layer's mean over tokens, concatenated)",
    )
    p.add_argument("--normalize", action="store_true", help="L2-normalize the features")
    p.add_argument("--C", type=float, default=1.0, help="inverse regularization strength")
    p.add_argument("--revision", help="Hub branch, tag or commit of --model")
    p.add_argument("--batch-size", type=_positive("--batch-size"), default=32)
    _verbosity(p)


def _fit_head(args) -> int:
    few_shot = importlib.import_module("npformer.few_shot")  # scikit-learn (the [train] extra) only here
    source = Source(args.train, [], args.text_column, args.delimiter, ())
    if source.kind not in ("table", "jsonl"):
        raise UserError(
            f"--train {args.train}: give a .csv, .tsv or .jsonl file with {args.text_column!r} and {args.label_column!r} columns"
        )
    texts, labels = [], []
    for record in source:
        if record.error is not None:
            raise UserError(record.error)
        if record.fields.get(args.label_column) in (None, ""):
            raise UserError(f"{source.where(record.line)}: no {args.label_column!r} value (--label-column)")
        texts.append(record.text)
        labels.append(record.fields[args.label_column])
    fitted = few_shot.fit_head(
        args.model,
        texts,
        labels,
        args.output,
        features=args.features,
        normalize=args.normalize,
        C=args.C,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        revision=args.revision,
    )
    accuracy = float(fitted.estimator.score(fitted.features.astype("float64"), [fitted.labels.index(str(v)) for v in labels]))
    print(
        json.dumps(
            {
                "output": str(fitted.directory),
                "labels": fitted.labels,
                "examples": len(texts),
                "train_accuracy": round(accuracy, 4),
            }
        )
    )
    return 0


def _batch_parser(sub) -> None:
    p = sub.add_parser(
        "batch",
        help="a corpus through a pipeline on Dask, one Parquet part per partition, resumable "
        '(needs pip install ".[distributed]" in npformer\'s repository)',
    )
    p.add_argument(
        "task",
        choices=["sentiment", "text-classification", "ner", "embed", "qa", "zero-shot", "rerank", "sparse-embed", "colbert"],
    )
    p.add_argument("--input", "-i", nargs="+", required=True, help="files or glob patterns: .parquet .csv .tsv .jsonl")
    p.add_argument("--output", "-o", required=True, help="directory of part files (resumed if it holds this run)")
    p.add_argument("--column", default="text", help="the text column (the question for qa)")
    p.add_argument("--context-column", default="context", help="qa: the context column; rerank: the document column")
    p.add_argument("--labels", default="", help="zero-shot: comma-separated candidate labels")
    p.add_argument("--id-column", help="a column identifying each row (default: FILE:ROW)")
    p.add_argument("--keep-columns", default="", help="comma-separated input columns copied as input_<name>")
    p.add_argument("--delimiter", help="field separator of a CSV file")
    p.add_argument("--model", "-m")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--batch-size", type=_positive("--batch-size"), default=32)
    p.add_argument("--scheduler", help="a running Dask scheduler, tcp://HOST:8786 (default: a local cluster)")
    p.add_argument("--workers", type=_positive("--workers"), default=2, help="local cluster: worker processes")
    p.add_argument(
        "--threads-per-worker",
        type=_positive("--threads-per-worker"),
        default=1,
        help="threads of each worker's forward passes (each worker runs one partition at a time)",
    )
    p.add_argument("--partition-rows", type=_positive("--partition-rows"), default=10_000)
    _verbosity(p)


def _batch(args) -> int:
    distributed = importlib.import_module("npformer.distributed")  # the [distributed] extra, imported only here
    if not args.verbose:
        logging.getLogger("distributed").setLevel(logging.WARNING)  # its lifecycle chatter only with -v
    keep = tuple(c.strip() for c in args.keep_columns.split(",") if c.strip())
    job = distributed.Job(
        args.task,
        args.input,
        args.output,
        partition_rows=args.partition_rows,
        column=args.column,
        context_column=args.context_column,
        id_column=args.id_column,
        keep_columns=keep,
        delimiter=args.delimiter,
        model=args.model,
        dtype=args.dtype,
        batch_size=args.batch_size,
        labels=tuple(x.strip() for x in args.labels.split(",") if x.strip()),
    )
    cluster = distributed.Cluster(args.scheduler, args.workers, args.threads_per_worker)
    summary = distributed.run(job, cluster, progress=not args.quiet and sys.stderr.isatty())
    print(json.dumps(vars(summary) | {"output": args.output}))
    return 1 if summary.errors else 0


def _explain_parser(sub) -> None:
    p = sub.add_parser("explain", help="one self-contained HTML page: tokens, prediction, attention heads, hidden-state norms")
    p.add_argument("task", choices=["sentiment", "text-classification", "ner", "qa", "fill-mask"])
    p.add_argument("text", help="the text (the question, for qa)")
    p.add_argument("--context", help="qa: the context")
    p.add_argument("--model", "-m", help="checkpoint directory or Hub id (default: the task's)")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--top-k", type=_positive("--top-k"), default=3, help="answers or candidates shown")
    p.add_argument("--output", "-o", help="the page (default: explain-TASK.html)")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    _verbosity(p)


def _explain(args) -> int:
    task = ALIASES.get(args.task, args.task)
    pipe = pipeline(task, args.model, dtype=args.dtype)
    data = explain_data(pipe, args.text, context=args.context, top_k=args.top_k, model_name=str(args.model or "default"))
    path = write_page(args.output or f"explain-{args.task}.html", data, overwrite=args.overwrite)
    print(json.dumps({"output": str(path), "task": task, "tokens": len(data["tokens"])}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npformer", description="BERT-family inference in NumPy + Numba.")
    parser.add_argument("--version", action="version", version=f"npformer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, aliases=list(command.aliases))
        p.set_defaults(command=name)
        p.add_argument("texts", nargs="*", help="texts (otherwise --input or stdin)")
        p.add_argument("--input", "-i", help="a .txt (one text per line), .jsonl, .csv or .tsv file")
        p.add_argument("--column", help="field / column holding the text (default: text)")
        p.add_argument("--delimiter", help="field separator of a CSV file (default: ',' for .csv, tab for .tsv)")
        p.add_argument(
            "--keep-columns",
            help='comma-separated input columns each result carries under "input" '
            "(default: every column of a .jsonl / .csv / .tsv input; '' for none)",
        )
        p.add_argument(
            "--stdin-format",
            choices=["txt", "jsonl"],
            default="txt",
            help="what stdin holds: a text per line (txt) or a JSON object per line (jsonl)",
        )
        p.add_argument("--output", "-o", help="write JSON lines to this file instead of stdout")
        p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
        p.add_argument(
            "--on-error",
            choices=ON_ERROR,
            default="record",
            help='a bad record is written with an "error" field (record, the default), left out '
            "(skip), or stops the run (abort); the exit status is 1 if any record failed",
        )
        p.add_argument("--model", "-m", help="checkpoint directory or Hub id (default: the task's default)")
        p.add_argument("--revision", help="Hub branch, tag or commit of --model (pins what is downloaded)")
        p.add_argument(
            "--adapter",
            help="a PEFT LoRA adapter directory merged into --model (or give the adapter "
            "as --model when its config names the base)",
        )
        p.add_argument("--dtype", choices=DTYPES, default="float32")
        p.add_argument(
            "--backend",
            choices=BACKENDS,
            default=None,
            help="kernels of the forward pass: numba (fast per text) or numpy (no Numba to load: the "
            f"fastest start); default numpy for up to {ONE_OFF_TEXTS} texts given as arguments, "
            "numba otherwise",
        )
        p.add_argument("--batch-size", type=_positive("--batch-size"), default=16)
        p.add_argument(
            "--max-length",
            type=_positive("--max-length"),
            default=None,
            help="tokens per window, special tokens included (default: the model's maximum)",
        )
        _verbosity(p)
        p.add_argument(
            "--threads",
            type=_positive("--threads"),
            default=None,
            help="threads per forward pass (default: every core Numba started with)",
        )
        if command.arguments is not None:
            command.arguments(p, _positive)
    serve_command.add_parser(sub, _positive, _verbosity)
    _fit_head_parser(sub)
    _batch_parser(sub)
    _explain_parser(sub)
    p = sub.add_parser(
        "convert",
        help="convert a PyTorch .bin checkpoint or an ONNX export (float32, int8, 4-bit) to "
        "safetensors, without torch or ONNX Runtime and without running code from the file",
    )
    p.add_argument(
        "src",
        help="a checkpoint directory with pytorch_model.bin (or its shards) or an ONNX export "
        "(model.onnx, onnx/model_quantized.onnx, ...), or the .bin / .onnx file itself",
    )
    p.add_argument("out_dir", help="the new checkpoint directory")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="int8: quantize the converted float32 weights npformer's way (per-channel int8); "
        "bfloat16: round the Linear weights and word embeddings to bfloat16",
    )
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty out_dir")
    _verbosity(p)
    p = sub.add_parser("info", help="architecture, parameters, size, labels and dtype of a checkpoint")
    _verbosity(p)
    p.add_argument("model")
    p.add_argument("--revision", help="Hub branch, tag or commit of the model")
    p = sub.add_parser("quantize", help="write an INT8 (or bfloat16) copy of a checkpoint")
    _verbosity(p)
    p.add_argument("model")
    p.add_argument("out_dir")
    p.add_argument(
        "--dtype",
        choices=COPY_DTYPES,
        default="int8",
        help="int8: per-channel int8 with float32 scales; bfloat16: Linear weights and word embeddings rounded to bfloat16",
    )
    p.add_argument("--revision", help="Hub branch, tag or commit of the model")
    p.add_argument("--overwrite", action="store_true", help="replace the weights in OUT_DIR if there are some")
    return parser


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    return set(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices)


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
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and not argv[0].startswith("-") and argv[0] not in _commands(parser):
        load_task_plugins()  # an installed plugin's task may add this command
        parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet or not args.verbose else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="npformer: %(message)s", stream=sys.stderr, force=True)
    output = JsonLines(getattr(args, "output", None), getattr(args, "overwrite", False))
    try:
        return _run(args, output)
    except Aborted as e:
        _error(f"{e} (--on-error abort){_kept(output)}")
        return 1
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except (UserError, InputError, OutputError, ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
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


def _run(args, output: JsonLines) -> int:
    """Run the parsed command; exceptions are :func:`main`'s to turn into exit statuses."""
    if args.command == "info":
        print(json.dumps(info(args.model, args.revision), indent=2))
        return 0
    if args.command == "serve":
        return serve_command.run(args)
    if args.command == "fit-head":
        return _fit_head(args)
    if args.command == "batch":
        return _batch(args)
    if args.command == "explain":
        return _explain(args)
    if args.command == "convert":
        out = convert(args.src, args.out_dir, dtype=args.dtype, overwrite=args.overwrite)
        print(json.dumps({"out_dir": str(out), "size_bytes": (out / "model.safetensors").stat().st_size}))
        return 0
    if args.command == "quantize":
        out = save_quantized(args.model, args.out_dir, overwrite=args.overwrite, revision=args.revision, dtype=args.dtype)
        print(json.dumps({"out_dir": str(out), "size_bytes": (out / "model.safetensors").stat().st_size}))
        return 0
    if args.command == "embed" and args.format == "npy" and not args.output:
        raise UserError("--format npy needs --output FILE.npy (a binary array is not written to a terminal)")
    if args.threads is not None:
        set_num_threads(args.threads)
    task, fn, extra_columns = COMMANDS[args.command].make(args)
    keep = None if args.keep_columns is None else tuple(c.strip() for c in args.keep_columns.split(",") if c.strip())
    source = Source(args.input, args.texts, args.column, args.delimiter, extra_columns, keep, args.stdin_format)
    if extra_columns and source.kind in ("args", "lines"):  # no fields to take the second text from
        raise UserError(
            "question answering needs a context: --context TEXT, --context-file FILE, or a "
            f"{args.context_column!r} field in each record of a .jsonl / .csv / .tsv input"
            if args.command == "qa"
            else "similarity takes exactly two texts, or a .jsonl / .csv / .tsv input with a "
            f"{args.pair_column!r} field (--pair-column)"
        )
    inputs = [source.path] if source.path is not None else []
    if args.command == "qa" and args.context_file:
        inputs.append(Path(args.context_file))
    output.check(inputs)
    one_off = source.kind == "args" and len(args.texts) <= ONE_OFF_TEXTS  # loading Numba would cost more than it saves
    backend = args.backend or ("numpy" if one_off else "numba")
    pipe = pipeline(
        task,
        args.model,
        dtype=args.dtype,
        batch_size=args.batch_size,
        revision=args.revision,
        adapter=args.adapter,
        backend=backend,
    )
    if args.command == "embed" and args.format == "npy":
        return run_npy(pipe, source, output, args.max_length)
    records, errors = run_task(args, pipe, fn, source, output)
    if errors or source.kind != "args" and not args.quiet:
        where = f"; results in {args.output}" if args.output else ""
        what = {"record": ' (written with an "error" field)', "skip": " (left out)"}[args.on_error] if errors else ""
        counts = f"{records} record{'s' * (records != 1)}, {errors} error{'s' * (errors != 1)}"
        print(f"npformer: {counts}{what}{where}", file=sys.stderr)
    return 1 if errors else 0


def _kept(output: JsonLines) -> str:
    return f"; the {output.written} records done are in {output.partial}" if output.partial else ""


if __name__ == "__main__":
    sys.exit(main())
