"""``npformer batch`` on a real Dask ``LocalCluster``: every row exactly once, equal to the
in-process pipeline, through a killed worker and an interrupted client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import npformer
from conftest import DATA, read_sst2

import distributed as dask_distributed  # noqa: F401 (the test extra: a missing one fails)
import pyarrow.parquet as pq

from npformer import distributed  # noqa: E402


def write_tsv(path: Path, texts: list[str], labels: list) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in zip(texts, labels)), encoding="utf-8")
    return path


def read_output(directory: Path):
    table = pq.read_table(directory, columns=["id", "source", "row", "label", "score", "error"])
    return table.to_pylist()


def test_sst2_train_every_row_once_equal_to_the_pipeline(tmp_path):
    train = DATA / "sst2" / "train.tsv"
    texts, _ = read_sst2("train")
    summary = distributed.run(
        distributed.Job(
            "sentiment", [str(train)], tmp_path / "out", column="sentence", partition_rows=8_000, keep_columns=("label",)
        ),
        distributed.Cluster(workers=2, threads_per_worker=1),
        progress=False,
    )
    assert summary.rows == len(texts) == 67_349 and summary.errors == 0 and len(summary.rows_per_second_by_worker) == 2
    rows = read_output(tmp_path / "out")
    assert len(rows) == len(texts) and sorted(r["row"] for r in rows) == list(range(len(texts)))
    assert len({r["id"] for r in rows}) == len(texts)
    manifest = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert manifest["rows"] == len(texts) and len(manifest["parts"]) == 9
    by_row = {r["row"]: r for r in rows}
    sample = sorted(np.random.default_rng(0).choice(len(texts), 3_000, replace=False))
    reference = npformer.pipeline("sentiment", batch_size=32)([texts[i] for i in sample])
    assert [by_row[i]["label"] for i in sample] == [r["label"] for r in reference]
    # the workers' processes may have compiled the kernels or loaded them from the cache, and run one
    # thread where this process runs two: the same bits either way (the kernels sum in a fixed order)
    np.testing.assert_array_equal([by_row[i]["score"] for i in sample], [r["score"] for r in reference])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    texts, labels = read_sst2("train")
    write_tsv(root / "a.tsv", texts[:4000], labels[:4000])
    bad = ["fine", "", "good again", "   "]
    write_tsv(root / "b.tsv", bad, [1, 0, 1, 0])
    return root, texts[:4000] + bad


def test_bad_rows_are_kept_with_their_id(corpus, tmp_path):
    root, _ = corpus
    summary = distributed.run(
        distributed.Job("sentiment", [str(root / "b.tsv")], tmp_path / "out", column="sentence", partition_rows=3),
        distributed.Cluster(workers=1),
        progress=False,
    )
    rows = sorted(read_output(tmp_path / "out"), key=lambda r: r["row"])
    assert summary.errors == 2 and [r["id"] for r in rows] == [f"b.tsv:{i}" for i in range(4)]
    assert rows[1]["label"] is None and "is empty" in rows[1]["error"] and rows[0]["error"] is None
    assert "line 5" in rows[3]["error"]


def test_a_killed_worker_loses_no_row_and_doubles_none(corpus, tmp_path):
    from distributed import Client, LocalCluster

    root, texts = corpus
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        pids = list(client.run(os.getpid).values())
        result = {}
        runner = threading.Thread(
            target=lambda: result.update(
                summary=distributed.run(
                    distributed.Job("sentiment", [str(root / "*.tsv")], tmp_path / "out", column="sentence", partition_rows=250),
                    distributed.Cluster(scheduler=cluster.scheduler_address, threads_per_worker=1),
                    progress=False,
                )
            )
        )
        runner.start()
        deadline = time.monotonic() + 120
        while len(list((tmp_path / "out").glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(pids[0], signal.SIGKILL)
        runner.join(300)
    assert "summary" in result, "the run did not finish after a worker was killed"
    rows = read_output(tmp_path / "out")
    assert len(rows) == len(texts) and len({r["id"] for r in rows}) == len(texts)
    assert sum(r["error"] is not None for r in rows) == 2


def test_an_interrupted_client_resumes_without_rewriting_done_parts(corpus, tmp_path):
    root, texts = corpus
    args = [
        sys.executable,
        "-m",
        "npformer.cli",
        "batch",
        "sentiment",
        "--input",
        str(root / "a.tsv"),
        "--column",
        "sentence",
        "--output",
        str(tmp_path / "out"),
        "--partition-rows",
        "250",
        "--workers",
        "2",
        "-q",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "out").glob("part-*.parquet"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(120)
    done = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("part-*.parquet")}
    assert 4 <= len(done) < 16, f"interrupt came too late or too early: {len(done)} parts"
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["skipped_parts"] == len(done) and summary["rows"] == 4000 - 250 * len(done)
    assert all((tmp_path / "out" / name).stat().st_mtime_ns == mtime for name, mtime in done.items())
    resumed = sorted(read_output(tmp_path / "out"), key=lambda r: r["row"])
    whole = distributed.run(
        distributed.Job("sentiment", [str(root / "a.tsv")], tmp_path / "whole", column="sentence", partition_rows=250),
        progress=False,
    )
    assert whole.rows == 4000
    assert resumed == sorted(read_output(tmp_path / "whole"), key=lambda r: r["row"])
    changed = subprocess.run(args[:-1] + ["--dtype", "int8", "-q"], env=env, capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2 and "other arguments (dtype)" in changed.stderr


def test_a_resume_with_another_plan_is_refused_by_name(corpus, tmp_path):
    """Issue: 6,000 rows at --partition-rows 500, stopped after 6 parts, resumed at 700: 1,200 rows
    were silently missing. Every argument that shapes the output is now part of the recorded run."""
    root, _ = corpus
    first = [str(root / "a.tsv"), str(root / "b.tsv")]
    summary = distributed.run(
        distributed.Job("sentiment", first, tmp_path / "out", column="sentence", partition_rows=500),
        distributed.Cluster(workers=1),
        progress=False,
    )
    assert summary.rows == 4004
    for part in sorted((tmp_path / "out").glob("part-00000-*.parquet"))[6:]:
        part.unlink()  # as if stopped after six parts
    (tmp_path / "out" / "_SUCCESS").unlink()
    for changed, kwargs in [
        ("partition_rows", dict(inputs=first, partition_rows=700)),
        ("inputs", dict(inputs=first[::-1], partition_rows=500)),
        ("inputs", dict(inputs=first[:1], partition_rows=500)),
        ("keep_columns", dict(inputs=first, partition_rows=500, keep_columns=("label",))),
    ]:
        with pytest.raises(ValueError, match=rf"other arguments \({changed}"):
            distributed.run(
                distributed.Job("sentiment", kwargs.pop("inputs"), tmp_path / "out", column="sentence", **kwargs),
                distributed.Cluster(workers=1),
                progress=False,
            )
    resumed = distributed.run(
        distributed.Job("sentiment", first, tmp_path / "out", column="sentence", partition_rows=500),
        distributed.Cluster(workers=1),
        progress=False,
    )
    assert resumed.skipped_parts == 6 + 1 and resumed.rows == 4000 - 6 * 500
    rows = read_output(tmp_path / "out")
    assert len(rows) == 4004 and len({r["id"] for r in rows}) == 4004


def test_kept_columns_keep_their_types(tmp_path):
    import pyarrow as pa

    table = pa.table(
        {
            "id": pa.array([7, 8, 9], pa.int64()),
            "text": ["good", "", "bad"],
            "weight": pa.array([0.5, None, 2.0]),
            "flag": [True, False, True],
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    (tmp_path / "in.jsonl").write_text(
        '{"id": 1, "text": "fine", "meta": {"a": 1}, "n": 1}\n{"id": 2, "text": "poor", "meta": "x", "n": 2.5}\n',
        encoding="utf-8",
    )
    keep = ("id", "weight", "flag")
    distributed.run(
        distributed.Job("sentiment", [str(tmp_path / "in.parquet")], tmp_path / "p", partition_rows=2, keep_columns=keep),
        distributed.Cluster(workers=1),
        progress=False,
    )
    out = pq.read_table(tmp_path / "p")
    assert out.schema.field("input_id").type == pa.int64() and out.schema.field("input_flag").type == pa.bool_()
    assert out.schema.field("input_weight").type == pa.float64()
    rows = sorted(out.to_pylist(), key=lambda r: r["row"])
    assert [r["input_id"] for r in rows] == [7, 8, 9] and [r["input_weight"] for r in rows] == [0.5, None, 2.0]
    distributed.run(
        distributed.Job(
            "sentiment", [str(tmp_path / "in.jsonl")], tmp_path / "j", partition_rows=1, keep_columns=("id", "meta", "n")
        ),
        distributed.Cluster(workers=1),
        progress=False,
    )
    out = pq.read_table(tmp_path / "j")
    assert out.schema.field("input_id").type == pa.int64() and out.schema.field("input_n").type == pa.float64()
    rows = sorted(out.to_pylist(), key=lambda r: r["row"])
    assert [r["input_id"] for r in rows] == [1, 2] and [r["input_n"] for r in rows] == [1.0, 2.5]
    assert [r["input_meta"] for r in rows] == ['{"a": 1}', "x"]  # mixed values: text, JSON for the object


def test_a_corrupt_parquet_input_is_one_line_naming_the_file(tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({"text": ["good"] * 50}), tmp_path / "good.parquet")
    (tmp_path / "garbage.parquet").write_bytes(b"PAR1" + os.urandom(200) + b"PAR1")
    data = bytearray((tmp_path / "good.parquet").read_bytes())
    data[8:60] = os.urandom(52)  # the column chunk, not the footer: fails on the worker
    (tmp_path / "hurt.parquet").write_bytes(bytes(data))
    for name in ("garbage.parquet", "hurt.parquet"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "npformer.cli",
                "batch",
                "sentiment",
                "--input",
                str(tmp_path / name),
                "--output",
                str(tmp_path / f"out-{name}"),
                "--workers",
                "1",
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, HF_HUB_OFFLINE="1"),
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and name in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("model_type", ["xlm-roberta", "mpnet", "modernbert"])
def test_the_new_architectures_run_in_batch(tmp_path, model_type):
    """A SentencePiece XLM-R classifier and an MPNet classifier through ``npformer batch``: every
    row once, labels and scores as the in-process pipeline gives them."""
    from helpers import make_checkpoint

    make_checkpoint(
        tmp_path / "model",
        model_type,
        "sequence",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    texts, labels = read_sst2("dev")
    source = write_tsv(tmp_path / "dev.tsv", texts[:300], labels[:300])
    summary = distributed.run(
        distributed.Job(
            "sentiment", [str(source)], tmp_path / "out", column="sentence", model=str(tmp_path / "model"), partition_rows=100
        ),
        distributed.Cluster(workers=1),
        progress=False,
    )
    assert summary.rows == 300 and summary.errors == 0
    rows = sorted(read_output(tmp_path / "out"), key=lambda r: r["row"])
    reference = npformer.pipeline("sentiment", tmp_path / "model")(texts[:300])
    assert [r["label"] for r in rows] == [r["label"] for r in reference]
    np.testing.assert_allclose([r["score"] for r in rows], [r["score"] for r in reference], atol=1e-5)
