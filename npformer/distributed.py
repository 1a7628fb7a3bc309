"""``npformer batch``: a corpus through a pipeline on Dask (``dask.distributed``), every row once.

The client plans partitions of at most ``partition_rows`` rows per input file (Parquet row counts
from metadata; CSV / TSV / JSONL counted by streaming, never loaded whole), and submits one task
per partition not yet done. Each worker loads the model once (:class:`ModelPlugin`, a
``WorkerPlugin``, also on workers that join later) and writes its partition as
``part-FFFFF-PPPPP.parquet`` under a temporary name, renamed into place when complete, so a part
file exists only whole. A run started again with the same arguments skips the parts on disk; a
task lost with its worker is run again by Dask and rewrites the same part, so no row is doubled.
At the end ``_SUCCESS`` lists every part with its row and error counts.

Each output row carries ``id`` (``FILE:ROW``, or the ``id_column`` value), ``source``, ``row``
(0-based within its file), the kept input columns, the task's outputs (``label``/``score``;
``entities``; ``embedding`` as a fixed-size list of float32; ``answer``/``score``/``start``/``end``;
sparse-embed: ``embedding`` as a list of ``{index, value}`` structs; colbert: ``embeddings``, a
document's per-token vectors as a list of fixed-size lists: :mod:`npformer.batch_tasks`) and
``error`` (null, or why the row could not be processed: such rows are kept, never dropped).
Needs the ``distributed`` extra: ``pip install ".[distributed]"`` in npformer's repository.
"""

from __future__ import annotations

import glob
import itertools
import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from npformer.extras import require_extra

require_extra("distributed", "dask", "distributed", "pyarrow")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker  # noqa: E402

from npformer.batch_tasks import TASKS  # noqa: E402
from npformer.runtime import set_num_threads  # noqa: E402
from npformer.pipelines import pipeline  # noqa: E402
from npformer.records import Source  # noqa: E402

PLUGIN = "npformer-model"
RUN_FILE, SUCCESS = "_RUN.json", "_SUCCESS"


@dataclass(frozen=True)
class Job:
    """What to run: ``task`` (a name of :data:`npformer.batch_tasks.TASKS`: ``sentiment``, ``ner``,
    ``embed``, ``qa``, ``zero-shot`` with ``labels``, ``rerank`` (query in ``column``, document in
    ``context_column``), ``sparse-embed``, ``colbert``) over ``inputs`` (paths or glob patterns of
    ``.parquet``, ``.csv``, ``.tsv`` or ``.jsonl`` files), parts written to the directory ``output``.

    Everything here shapes the output, so all of it is recorded in ``_RUN.json`` (the input files
    resolved, in order, with their sizes) and compared when resuming: a resume never mixes two
    plans. Raises ``ValueError`` for an unknown task, zero-shot without labels or a size below 1."""

    task: str
    inputs: tuple[str, ...]
    output: str
    partition_rows: int = 10_000
    column: str = "text"
    context_column: str = "context"
    id_column: str | None = None
    keep_columns: tuple[str, ...] = ()
    delimiter: str | None = None
    model: str | None = None  # a path every worker can read, or a Hub id; None: the task's default
    dtype: str = "float32"
    batch_size: int = 32
    labels: tuple[str, ...] = ()  # zero-shot's candidate labels

    def __post_init__(self):
        inputs = (self.inputs,) if isinstance(self.inputs, (str, Path)) else self.inputs
        object.__setattr__(self, "inputs", tuple(str(i) for i in inputs))
        object.__setattr__(self, "output", str(self.output))
        object.__setattr__(self, "keep_columns", tuple(self.keep_columns))
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; use one of {sorted(TASKS)}")
        if self.task == "zero-shot" and not self.labels:
            raise ValueError("zero-shot needs candidate labels: --labels a,b,c")
        _check_sizes(partition_rows=self.partition_rows, batch_size=self.batch_size)


@dataclass(frozen=True)
class Cluster:
    """Where a :class:`Job` runs: ``scheduler``, a running Dask scheduler's address
    (``tcp://HOST:8786``; start its workers with ``--nthreads 1``), or None for a ``LocalCluster`` of
    ``workers`` single-task processes on the loopback; ``threads_per_worker`` is the threads each
    worker's forward passes use. Raises ``ValueError`` for a count below 1."""

    scheduler: str | None = None
    workers: int = 2
    threads_per_worker: int = 1

    def __post_init__(self):
        _check_sizes(workers=self.workers, threads_per_worker=self.threads_per_worker)


def _check_sizes(**sizes) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class Partition:
    """Rows ``[start, start + rows)`` of input file ``path`` (the ``file_index``-th input)."""

    path: str
    file_index: int
    index: int
    start: int
    rows: int

    @property
    def name(self) -> str:
        return f"part-{self.file_index:05d}-{self.index:05d}.parquet"


@dataclass
class Summary:
    """A finished run: rows and error rows written, parts (new and already done), seconds, rows per
    second of each worker (its rows over its busy time) and the span of the partitions' work."""

    rows: int = 0
    errors: int = 0
    parts: int = 0
    skipped_parts: int = 0
    seconds: float = 0.0
    rows_per_second_by_worker: dict = field(default_factory=dict)
    task_seconds: float = 0.0  # from the first partition's start to the last one's end (no start-up)


class ModelPlugin(WorkerPlugin):
    """Loads the job's pipeline once per worker (``setup``), with ``threads`` per forward pass."""

    name = PLUGIN

    def __init__(self, job: Job, threads: int):
        self.job, self.threads = job, threads
        self.pipe = None

    def setup(self, worker) -> None:
        set_num_threads(self.threads)
        self.pipe = pipeline(TASKS[self.job.task].task, self.job.model, dtype=self.job.dtype, batch_size=self.job.batch_size)
        # one short call compiles or loads the kernels here, not inside the first partition
        text = "The worker warms up."
        TASKS[self.job.task].columns(self.pipe, [text], [{self.job.column: text, self.job.context_column: text}], self.job)


def input_files(inputs: list[str] | str) -> list[Path]:
    """Files named by ``inputs`` (paths or glob patterns), sorted within each pattern. Raises
    ``FileNotFoundError`` for a pattern that matches nothing and ``ValueError`` for an unknown format."""
    files = []
    for item in [inputs] if isinstance(inputs, str) else inputs:
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches or not all(Path(m).is_file() for m in matches):
            raise FileNotFoundError(f"no input file matches {item!r}")
        files += [Path(m) for m in matches]
    for f in files:
        if f.suffix.lower() not in (".parquet", ".csv", ".tsv", ".jsonl"):
            raise ValueError(f"{f}: npformer batch reads .parquet, .csv, .tsv or .jsonl files")
    return files


def parquet_file(path: Path) -> pq.ParquetFile:
    """Open a Parquet input; ``ValueError`` naming the file when it is not readable Parquet."""
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None


def scan(path: Path, job: Job) -> tuple[int, dict[str, set]]:
    """Rows of one input file (Parquet metadata, or a streaming count of the records) and, for each
    kept column, the types its values have: a Parquet column's Arrow type, ``str`` for CSV / TSV,
    the Python types of the JSON values for JSONL."""
    if path.suffix.lower() == ".parquet":
        f = parquet_file(path)
        schema = f.schema_arrow
        types = {c: {schema.field(c).type} if c in schema.names else set() for c in job.keep_columns}
        return f.metadata.num_rows, types
    types: dict[str, set] = {c: set() for c in job.keep_columns}
    n = 0
    for record in Source(str(path), [], job.column, job.delimiter, ()):
        n += 1
        for c in job.keep_columns:
            value = record.fields.get(c) if isinstance(record.fields, dict) else None
            if value is not None:
                types[c].add(type(value))
    return n, types


def kept_type(types: set) -> pa.DataType:
    """The output type of a kept column whose values have ``types`` (Arrow types or Python types):
    one Arrow type is kept as it is; JSON integers stay int64, numbers float64, booleans bool;
    anything else (text, mixed, nested) is a string (JSON for non-text values)."""
    if len(types) == 1 and isinstance(next(iter(types)), pa.DataType):
        return next(iter(types))
    if types and types <= {int}:
        return pa.int64()
    if types and types <= {int, float}:
        return pa.float64()
    if types == {bool}:
        return pa.bool_()
    return pa.string()


def plan(files: list[Path], job: Job) -> tuple[list[Partition], dict[str, pa.DataType]]:
    """The partitions of every input file, in order, and the output type of each kept column."""
    parts, types = [], {c: set() for c in job.keep_columns}
    for i, path in enumerate(files):
        n, file_types = scan(path, job)
        for c, t in file_types.items():
            types[c] |= t
        parts += [
            Partition(str(path), i, k, start, min(job.partition_rows, n - start))
            for k, start in enumerate(range(0, n, job.partition_rows))
        ]
    return parts, {c: kept_type(t) for c, t in types.items()}


def read_rows(part: Partition, job: Job) -> list[tuple[dict, str | None]]:
    """``(fields, error)`` for each row of the partition."""
    path = Path(part.path)
    if path.suffix.lower() == ".parquet":
        table = _parquet_slice(path, part.start, part.rows)
        out = []
        for fields in table.to_pylist():
            text = fields.get(job.column)
            error = None if job.column in fields else f"no {job.column!r} column"
            if error is None and (not isinstance(text, str) or not text.strip()):
                error = f"{job.column!r} is empty or not text ({type(text).__name__})"
            out.append((fields, error))
        return out
    extra = (job.context_column,) if TASKS[job.task].pair else ()
    source = Source(part.path, [], job.column, job.delimiter, extra)
    return [(r.fields, r.error) for r in itertools.islice(source, part.start, part.start + part.rows)]


def _parquet_slice(path: Path, start: int, rows: int) -> pa.Table:
    """Rows ``[start, start + rows)`` of a Parquet file, reading only the row groups that hold them."""
    f = parquet_file(path)
    tables, first = [], 0
    for g in range(f.num_row_groups):
        n = f.metadata.row_group(g).num_rows
        if first + n > start and first < start + rows:
            tables.append(f.read_row_group(g))
        elif first >= start + rows:
            break
        if not tables:
            first += n
    table = pa.concat_tables(tables) if tables else f.schema_arrow.empty_table()
    return table.slice(start - first, rows)


class PartitionError(ValueError):
    """A partition's input could not be read (a corrupt file): one line naming the file and part."""


def process_partition(part: Partition, job: Job, kept: dict[str, pa.DataType]) -> dict:
    """Run one partition on this worker and write its part file (atomically). Returns counts.
    Raises :class:`PartitionError` naming the file when its rows cannot be read."""
    started, wall = time.perf_counter(), time.time()
    target = Path(job.output) / part.name
    worker = get_worker()
    pipe = worker.plugins[PLUGIN].pipe
    try:
        rows = read_rows(part, job)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise PartitionError(
            f"{part.path}: rows {part.start}-{part.start + part.rows - 1} cannot be read "
            f"({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    good = [i for i, (_, error) in enumerate(rows) if error is None]
    valid = [rows[i][0] for i in good]
    outputs = TASKS[job.task].columns(pipe, [r[job.column] for r in valid], valid, job) if good else {}
    table = build_table(part, job, rows, good, outputs, output_schema(job, pipe, kept))
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, temp)
    os.replace(temp, target)
    return {
        "part": part.name,
        "rows": len(rows),
        "errors": len(rows) - len(good),
        "seconds": time.perf_counter() - started,
        "worker": worker.address,
        "began": wall,
        "ended": time.time(),
    }


def _kept_value(value, type_: pa.DataType):
    if value is None or not pa.types.is_string(type_) or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def build_table(part: Partition, job: Job, rows, good: list[int], outputs: dict, schema: pa.Schema) -> pa.Table:
    name = Path(part.path).name
    columns = {
        "id": [str(f.get(job.id_column)) if job.id_column else f"{name}:{part.start + i}" for i, (f, _) in enumerate(rows)],
        "source": [name] * len(rows),
        "row": [part.start + i for i in range(len(rows))],
    }
    for c in job.keep_columns:
        type_ = schema.field(f"input_{c}").type
        columns[f"input_{c}"] = [_kept_value(f.get(c), type_) for f, _ in rows]
    for key, values in outputs.items():
        full = [None] * len(rows)
        for i, v in zip(good, values):
            full[i] = v
        columns[key] = full
    columns["error"] = [error for _, error in rows]
    return pa.table(
        {k: pa.array(columns.get(k, [None] * len(rows)), type=schema.field(k).type) for k in schema.names}, schema=schema
    )


def output_schema(job: Job, pipe, kept: dict[str, pa.DataType]) -> pa.Schema:
    """The columns of every part: id, source, row, the kept input columns (``input_NAME``, with the
    types :func:`plan` found), the task's outputs and ``error``."""
    fields = [("id", pa.string()), ("source", pa.string()), ("row", pa.int64())]
    fields += [(f"input_{c}", kept[c]) for c in job.keep_columns]
    return pa.schema(fields + TASKS[job.task].fields(pipe) + [("error", pa.string())])


def check_run(output: Path, job: Job, sizes: list[int]) -> None:
    """Write ``_RUN.json`` for a new output directory (the job, each input file with its size in
    bytes); refuse one holding another job's parts."""
    record = output / RUN_FILE
    mine = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(job).items()}
    mine["inputs"] = [[path, size] for path, size in zip(job.inputs, sizes)]
    if record.exists():
        previous = json.loads(record.read_text(encoding="utf-8"))
        mine = json.loads(json.dumps(mine))  # tuples as JSON lists, as they were recorded
        changed = sorted(k for k in mine if previous.get(k) != mine[k])
        if changed:
            names = ", ".join("inputs (files, their order or sizes)" if k == "inputs" else k for k in changed)
            raise ValueError(
                f"{output} holds parts of a run with other arguments ({names}); "
                f"resume with the same arguments or choose a new --output"
            )
        return
    if any(output.glob("part-*.parquet")):
        raise ValueError(f"{output} holds part files but no {RUN_FILE}; choose a new --output")
    record.write_text(json.dumps(mine, indent=2), encoding="utf-8")


def run(job: Job, cluster: Cluster = Cluster(), *, progress: bool = True) -> Summary:
    """Run ``job`` (:class:`Job`) on Dask, ``cluster`` (:class:`Cluster`) saying where; a progress bar
    on stderr when ``progress``. The model loads once per worker. Returns a :class:`Summary`.

    Raises ``ImportError`` without the ``distributed`` extra, ``FileNotFoundError`` /
    ``ValueError`` for bad inputs, and ``ValueError`` when ``job.output`` holds another run's parts.
    """
    started = time.perf_counter()
    output = Path(job.output)
    files = input_files(list(job.inputs))
    job = replace(job, inputs=tuple(str(f.resolve()) for f in files), output=str(output.resolve()))
    partitions, kept = plan(files, job)
    output.mkdir(parents=True, exist_ok=True)
    check_run(output, job, [f.stat().st_size for f in files])
    todo = [p for p in partitions if not (output / p.name).exists()]
    summary = Summary(skipped_parts=len(partitions) - len(todo))
    # one partition at a time per worker, its forward passes on threads_per_worker cores: two partitions in
    # one process would hand the GIL back and forth between kernel calls
    # a local cluster listens on the loopback only (its HTTP server on any free port); its workers'
    # logs are silenced, since a failed partition reaches the caller as one exception anyway
    local = (
        None
        if cluster.scheduler
        else LocalCluster(
            n_workers=cluster.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.CRITICAL,
        )
    )
    client = Client(cluster.scheduler or local)
    busy: dict[str, list[float]] = {}
    spans: list[tuple[float, float]] = []
    try:
        client.register_plugin(ModelPlugin(job, cluster.threads_per_worker), name=PLUGIN)
        futures = client.map(process_partition, todo, job=job, kept=kept, pure=False, retries=3)
        bar = _bar(sum(p.rows for p in todo), progress)
        for future in as_completed(futures):
            try:
                result = future.result()
            except PartitionError as e:  # a corrupt input: one line, not the workers' tracebacks
                raise ValueError(str(e)) from None
            summary.parts += 1
            summary.rows += result["rows"]
            summary.errors += result["errors"]
            spans.append((result["began"], result["ended"]))
            rows, seconds = busy.setdefault(result["worker"], [0, 0.0])
            busy[result["worker"]] = [rows + result["rows"], seconds + result["seconds"]]
            if bar is not None:
                bar.update(result["rows"])
        if bar is not None:
            bar.close()
    finally:
        client.close()
        if local is not None:
            local.close()
    write_success(output, partitions)
    summary.seconds = time.perf_counter() - started
    summary.task_seconds = max(e for _, e in spans) - min(b for b, _ in spans) if spans else 0.0
    summary.rows_per_second_by_worker = {w: r / s if s else 0.0 for w, (r, s) in busy.items()}
    return summary


def _bar(total: int, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="row", desc="npformer batch")


def write_success(output: Path, partitions: list[Partition]) -> None:
    """``_SUCCESS``: every part with its row and error counts (read from the part files)."""
    parts = []
    for p in partitions:
        f = pq.ParquetFile(output / p.name)
        errors = f.read(columns=["error"]).column("error").null_count
        parts.append(
            {
                "part": p.name,
                "source": p.path,
                "start": p.start,
                "rows": f.metadata.num_rows,
                "errors": f.metadata.num_rows - errors,
            }
        )
    (output / SUCCESS).write_text(
        json.dumps({"parts": parts, "rows": sum(p["rows"] for p in parts), "errors": sum(p["errors"] for p in parts)}, indent=2),
        encoding="utf-8",
    )
