"""The command line never loses a file and never lets one bad record sink a run.

Output: checked before anything is written, replaced only with --overwrite and only when the run
completes, ``OUT.partial`` (valid JSON lines) after a failure or Ctrl-C. Input: per-record errors
with file and line, ``--on-error record|skip|abort``, a summary on stderr and exit status 1.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import SENTIMENT_LABELS, make_checkpoint, make_sentiment_checkpoint
from npformer.cli import main

LABELS = SENTIMENT_LABELS


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(make_sentiment_checkpoint(tmp_path_factory.mktemp("cls")))


def strict_lines(path_or_text) -> list[dict]:
    """Parse JSON lines, refusing NaN / Infinity (not standard JSON)."""
    text = path_or_text.read_text(encoding="utf-8") if isinstance(path_or_text, Path) else path_or_text

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return [json.loads(line, parse_constant=refuse) for line in text.splitlines() if line.strip()]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "npformer.cli", *argv],
        capture_output=True,
        timeout=300,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )


# ---- 5. lost files -------------------------------------------------------------------------------


def test_output_equal_to_input_is_refused(model, tmp_path, capsys):
    src = tmp_path / "a.txt"
    src.write_text("good film\nbad film\n")
    before = digest(src)
    for target in (src, tmp_path / "." / "a.txt"):
        assert main(["sentiment", "-m", model, "-i", str(src), "-o", str(target), "--overwrite"]) == 2
        assert "is the input file" in capsys.readouterr().err
    os.link(src, tmp_path / "hard.txt")
    assert main(["sentiment", "-m", model, "-i", str(src), "-o", str(tmp_path / "hard.txt"), "--overwrite"]) == 2
    assert digest(src) == before


@pytest.mark.parametrize("mistake", ["missing-input", "missing-column", "existing-output", "bad-model"])
def test_a_mistake_never_touches_existing_results(model, tmp_path, capsys, mistake):
    results = tmp_path / "results.jsonl"
    results.write_text('{"text": "precious", "label": "POSITIVE"}\n')
    before = digest(results)
    tsv = tmp_path / "in.tsv"
    tsv.write_text("sentence\tlabel\nfine\t1\n")
    argv = {
        "missing-input": ["-i", str(tmp_path / "typo.tsv"), "--column", "sentence", "--overwrite"],
        "missing-column": ["-i", str(tsv), "--column", "sentense", "--overwrite"],
        "existing-output": ["-i", str(tsv), "--column", "sentence"],
        "bad-model": ["-i", str(tsv), "--column", "sentence", "--overwrite"],
    }[mistake]
    m = str(tmp_path / "no-model") if mistake == "bad-model" else model
    assert main(["sentiment", "-m", m, *argv, "-o", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("npformer: error:")
    if mistake == "existing-output":
        assert "exists; pass --overwrite" in err
    assert digest(results) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tsv", "results.jsonl"]  # no temporary left


def test_overwrite_replaces_when_the_run_completes(model, tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    results.write_text("old\n")
    txt = tmp_path / "in.txt"
    txt.write_text("a fine film\nan awful film\n")
    assert main(["sentiment", "-m", model, "-i", str(txt), "-o", str(results), "--overwrite"]) == 0
    rows = strict_lines(results)
    assert [r["line"] for r in rows] == [1, 2] and all(r["label"] in LABELS.values() for r in rows)
    assert oct(results.stat().st_mode & 0o777) != oct(0o600)  # as open() makes files, not mkstemp
    assert "2 records, 0 errors" in capsys.readouterr().err


def test_failure_mid_run_keeps_a_partial_file(model, tmp_path, capsys, monkeypatch):
    from npformer import commands as cli

    txt = tmp_path / "in.txt"
    txt.write_text("".join(f"text number {i}\n" for i in range(600)))
    results = tmp_path / "results.jsonl"
    results.write_text("previous results\n")
    calls = []
    original = cli._sentiment

    def failing(args):
        task, fn, extra = original(args)

        def fn2(pipe, records):
            calls.append(len(records))
            if len(calls) == 3:
                raise RuntimeError("disk controller on fire")
            return fn(pipe, records)

        return task, fn2, extra

    import dataclasses

    monkeypatch.setitem(cli.COMMANDS, "sentiment", dataclasses.replace(cli.COMMANDS["sentiment"], make=failing))
    with pytest.raises(RuntimeError):
        main(["sentiment", "-m", model, "-i", str(txt), "-o", str(results), "--overwrite"])
    assert results.read_text() == "previous results\n"
    partial = strict_lines(tmp_path / "results.jsonl.partial")
    assert [r["line"] for r in partial] == list(range(1, 2 * 256 + 1))


def test_quantize_refuses_its_source(model, tmp_path, capsys):
    weights = Path(model) / "model.safetensors"
    before = digest(weights)
    assert main(["quantize", model, model]) == 2
    assert "is the source checkpoint" in capsys.readouterr().err
    assert main(["quantize", model, str(Path(model) / ".." / Path(model).name)]) == 2
    assert digest(weights) == before
    out = tmp_path / "q"
    assert main(["quantize", model, str(out)]) == 0
    assert main(["quantize", model, str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["quantize", model, str(out), "--overwrite"]) == 0


# ---- 6. one bad record ---------------------------------------------------------------------------


def thousand_lines(tmp_path: Path) -> Path:
    lines = [json.dumps({"text": f"review {i}: a fine film", "id": i}) for i in range(1, 1001)]
    lines[599] = json.dumps({"text": 12345, "id": 600})
    lines[699] = '{"text": "unterminated'
    lines[799] = json.dumps({"text": "   ", "id": 800})
    f = tmp_path / "reviews.jsonl"
    f.write_text("\n".join(lines) + "\n")
    return f


def test_bad_records_are_reported_and_the_run_goes_on(model, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    assert main(["sentiment", "-m", model, "-i", str(thousand_lines(tmp_path)), "-o", str(out)]) == 1
    rows = strict_lines(out)
    assert len(rows) == 1000 and [r["line"] for r in rows] == list(range(1, 1001))
    errors = {r["line"]: r["error"] for r in rows if "error" in r}
    assert set(errors) == {600, 700, 800}
    assert "reviews.jsonl line 600: field 'text' is a number (12345), expected a string" in errors[600]
    assert "line 700: not JSON" in errors[700]
    assert "line 800: field 'text' is empty" in errors[800]
    assert all("label" in r for r in rows if "error" not in r)
    err = capsys.readouterr().err
    assert "1000 records, 3 errors" in err and err.count("\n") == 1


def test_on_error_skip_and_abort(model, tmp_path, capsys):
    src = thousand_lines(tmp_path)
    out = tmp_path / "skip.jsonl"
    assert main(["sentiment", "-m", model, "-i", str(src), "-o", str(out), "--on-error", "skip"]) == 1
    assert len(strict_lines(out)) == 997
    capsys.readouterr()
    out = tmp_path / "abort.jsonl"
    assert main(["sentiment", "-m", model, "-i", str(src), "-o", str(out), "--on-error", "abort"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 600" in err and "abort.jsonl.partial" in err
    assert not out.exists()
    assert len(strict_lines(tmp_path / "abort.jsonl.partial")) == 599


def test_task_errors_are_per_record(tmp_path, capsys):
    d = tmp_path / "mlm"
    make_checkpoint(
        d,
        "bert",
        "mlm",
        vocab="bert-base-uncased",
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=40,
    )
    assert main(["fill-mask", "-m", str(d), "a [MASK] film", "no mask here", "the [MASK] was fine"]) == 1
    rows = strict_lines(capsys.readouterr().out)
    assert "predictions" in rows[0] and "predictions" in rows[2]
    assert rows[1]["text"] == "no mask here" and "argument 2: no mask token" in rows[1]["error"]


# ---- 3. content-free texts, 4. standard JSON -----------------------------------------------------


def test_content_free_texts_are_marked(model, capsys):
    assert main(["sentiment", "-m", model, "a fine film", "\x00\x00", "\u200b"]) == 0
    rows = strict_lines(capsys.readouterr().out)
    assert "warning" not in rows[0]
    assert all("no tokens after normalization" in r["warning"] and "label" in r for r in rows[1:])


def test_non_finite_results_become_errors(model, tmp_path, capsys, monkeypatch):
    from npformer.pipelines.text_classification import TextClassificationPipeline

    original = TextClassificationPipeline._postprocess

    def nan_for_bad(self, logits, fn, top_k, legacy):
        result = original(self, logits, fn, top_k, legacy)
        return {**result, "score": math.nan} if self._nan_next.pop(0) else result

    monkeypatch.setattr(TextClassificationPipeline, "_postprocess", nan_for_bad)
    monkeypatch.setattr(TextClassificationPipeline, "_nan_next", [False, True, False], raising=False)
    out = tmp_path / "o.jsonl"
    assert main(["sentiment", "-m", model, "one", "two", "three", "-o", str(out)]) == 1
    rows = strict_lines(out)
    assert "label" in rows[0] and "label" in rows[2]
    assert rows[1]["text"] == "two" and "NaN or infinity" in rows[1]["error"]


# ---- 7. input formats ----------------------------------------------------------------------------


def test_bom_delimiter_and_huge_fields(model, tmp_path, capsys):
    f = tmp_path / "excel.csv"
    f.write_bytes('\ufeffsentence;label\n"a fine; film";1\nbad;0\n'.encode("utf-8"))
    assert main(["sentiment", "-m", model, "-i", str(f), "--column", "sentence", "--delimiter", ";"]) == 0
    rows = strict_lines(capsys.readouterr().out)
    assert [r["text"] for r in rows] == ["a fine; film", "bad"] and [r["line"] for r in rows] == [2, 3]
    big = tmp_path / "big.csv"
    big.write_text("text,id\n" + '"' + "word " * 40_000 + '",1\nshort,2\n')
    assert main(["sentiment", "-m", model, "-i", str(big)]) == 0
    assert len(strict_lines(capsys.readouterr().out)) == 2


def test_invalid_utf8_in_a_file_names_the_line(model, tmp_path, capsys):
    f = tmp_path / "in.tsv"
    f.write_bytes(b"sentence\tlabel\ngood\t1\nbad \xff byte\t0\nfine\t1\n")
    assert main(["sentiment", "-m", model, "-i", str(f), "--column", "sentence"]) == 1
    rows = strict_lines(capsys.readouterr().out)
    assert [r["line"] for r in rows] == [2, 3, 4]
    assert "in.tsv line 3: field 'sentence' has invalid UTF-8 (byte 0xff at character 4)" in rows[1]["error"]
    assert "text" not in rows[1]


def test_invalid_utf8_on_stdin_is_an_error_not_copied(model):
    proc = subprocess.run(
        [sys.executable, "-m", "npformer.cli", "sentiment", "-m", model],
        input=b"good film\nbad \xfe\xff film\n",
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    proc.stdout.decode("utf-8")  # valid UTF-8 out
    rows = strict_lines(proc.stdout.decode("utf-8"))
    assert "label" in rows[0]
    assert rows[1] == {"line": 2, "error": "stdin line 2: field 'text' has invalid UTF-8 (byte 0xfe at character 4)"}


# ---- 8. errors that were tracebacks --------------------------------------------------------------


@pytest.mark.parametrize(
    "target, message",
    [("dir", "is a directory"), ("/dev/full", "No space left on device"), ("missing-dir/out.jsonl", "does not exist")],
)
def test_unwritable_outputs_are_one_line(model, tmp_path, capsys, target, message):
    path = tmp_path if target == "dir" else Path(target) if target.startswith("/") else tmp_path / target
    if target == "/dev/full" and not Path("/dev/full").exists():
        pytest.skip("/dev/full is absent")
    assert main(["sentiment", "-m", model, "fine", "-o", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npformer: error:") and message in err and err.count("\n") == 1


def test_read_only_directory(model, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: answer as the kernel answers other users
        import npformer.output

        real = os.access
        monkeypatch.setattr(
            npformer.output.os, "access", lambda p, mode: False if Path(p) == ro and mode & os.W_OK else real(p, mode)
        )
    try:
        assert main(["sentiment", "-m", model, "fine", "-o", str(ro / "out.jsonl")]) == 2
        err = capsys.readouterr().err
        assert "directory" in err and "is not writable" in err and err.count("\n") == 1
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_ctrl_c_exits_130_with_one_line_and_keeps_the_partial_file(model, tmp_path):
    txt = tmp_path / "in.txt"
    txt.write_text("".join(f"a long enough review number {i} " * 20 + "\n" for i in range(200_000)))
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "npformer.cli", "sentiment", "-m", model, "-i", str(txt), "-o", str(out)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(tmp_path.glob(".out.jsonl.*.tmp")):
        time.sleep(0.05)
    while time.monotonic() < deadline and not any(p.stat().st_size for p in tmp_path.glob(".out.jsonl.*.tmp")):
        time.sleep(0.05)  # first records written: the model is loaded and computing
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and err.startswith("npformer: interrupted; the ") and "out.jsonl.partial" in err
    assert not out.exists() and len(strict_lines(tmp_path / "out.jsonl.partial")) >= 256


# ---- the user's data: columns kept, lines in place (issue 12) ------------------------------------


def test_input_columns_are_kept_under_input(model, tmp_path, capsys):
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("id\tsentence\tlabel\n7\ta fine film\t1\n8\tan awful film\t0\n")
    assert main(["sentiment", "-m", model, "-i", str(tsv), "--column", "sentence"]) == 0
    rows = strict_lines(capsys.readouterr().out)
    assert [r["input"] for r in rows] == [{"id": "7", "label": "1"}, {"id": "8", "label": "0"}]
    assert all(r["label"] in LABELS.values() for r in rows)  # the prediction, beside the gold label
    assert main(["sentiment", "-m", model, "-i", str(tsv), "--column", "sentence", "--keep-columns", "id"]) == 0
    assert [r["input"] for r in strict_lines(capsys.readouterr().out)] == [{"id": "7"}, {"id": "8"}]
    assert main(["sentiment", "-m", model, "-i", str(tsv), "--column", "sentence", "--keep-columns", ""]) == 0
    assert all("input" not in r for r in strict_lines(capsys.readouterr().out))


def test_blank_lines_keep_their_place(model, tmp_path, capsys):
    txt = tmp_path / "in.txt"
    txt.write_text("a fine film\n\n   \nan awful film\n")
    assert main(["sentiment", "-m", model, "-i", str(txt)]) == 1
    rows = strict_lines(capsys.readouterr().out)
    assert [r["line"] for r in rows] == [1, 2, 3, 4]
    assert rows[1]["error"] == f"{txt} line 2: the line is empty" and "label" in rows[3]


def test_jsonl_on_stdin(model):
    proc = subprocess.run(
        [sys.executable, "-m", "npformer.cli", "sentiment", "-m", model, "--stdin-format", "jsonl"],
        input=b'{"text": "a fine film", "id": 1}\n{"text": 2}\n',
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    rows = strict_lines(proc.stdout.decode())
    assert rows[0]["text"] == "a fine film" and rows[0]["input"] == {"id": 1}
    assert "stdin line 2: field 'text' is a number (2)" in rows[1]["error"]


def test_progress_total_counts_records(tmp_path):
    from npformer.records import Source

    txt = tmp_path / "a.txt"
    txt.write_text("one\ntwo\n\nfour\n")
    tsv = tmp_path / "a.tsv"
    tsv.write_text("text\tid\nx\t1\ny\t2\n")
    assert Source(str(txt), []).count() == 4 == len(list(Source(str(txt), [])))
    assert Source(str(tsv), []).count() == 2 == len(list(Source(str(tsv), [])))
    assert Source(None, ["a", "b"]).count() is None
