"""The npformer command line: inputs, JSON lines out, one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import make_checkpoint
from npformer.cli import main

import npformer

LABELS = {0: "NEGATIVE", 1: "POSITIVE"}


@pytest.fixture(scope="module")
def sentiment_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cls")
    make_checkpoint(
        d,
        "bert",
        "sequence",
        vocab="bert-base-uncased",
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=40,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    return d


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_sentiment_args_file_and_output(sentiment_dir, tmp_path, capsys):
    assert main(["sentiment", "--model", str(sentiment_dir), "good movie", "bad movie"]) == 0
    out = lines(capsys.readouterr().out)
    assert [r["text"] for r in out] == ["good movie", "bad movie"]
    # texts given as arguments: a one-off call, on the NumPy backend (nothing else differs)
    expected = npformer.pipeline("sentiment-analysis", sentiment_dir, backend="numpy")(["good movie", "bad movie"])
    assert [{"label": r["label"], "score": r["score"]} for r in out] == expected
    # .tsv with --column, --output
    tsv = tmp_path / "in.tsv"
    tsv.write_text("id\tsentence\n1\tfine film\n2\tawful plot\n3\tquite nice\n")
    dest = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "sentiment",
                "-m",
                str(sentiment_dir),
                "--input",
                str(tsv),
                "--column",
                "sentence",
                "--output",
                str(dest),
                "--top-k",
                "2",
            ]
        )
        == 0
    )
    rows = lines(dest.read_text())
    assert len(rows) == 3 and all(len(r["labels"]) == 2 for r in rows)
    # .jsonl and .txt
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "a"}\n{"text": "b"}\n')
    assert main(["sentiment", "-m", str(sentiment_dir), "-i", str(jsonl)]) == 0
    txt = tmp_path / "in.txt"
    txt.write_text("first line\nsecond line\n")
    assert main(["sentiment", "-m", str(sentiment_dir), "-i", str(txt)]) == 0
    assert len(lines(capsys.readouterr().out)) == 4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["qa", "Who?"], "needs a context"),
        (["sentiment", "--input", "missing.tsv"], "input file not found"),
        (["zero-shot", "text"], "--labels"),
        (["similarity", "only one"], "exactly two texts"),
        (["sentiment", "--batch-size", "0", "x"], "--batch-size must be >= 1"),
    ],
)
def test_user_errors_are_one_line(sentiment_dir, capsys, argv, message, tmp_path):
    model = {"sentiment": sentiment_dir}.get(argv[0])
    if argv[0] in ("qa", "zero-shot", "similarity"):
        model = tmp_path / "m"
        head = {"qa": "qa", "zero-shot": None, "similarity": None}[argv[0]]
        make_checkpoint(
            model,
            "bert",
            head,
            vocab="bert-base-uncased",
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=40,
        )
    if argv[1] == "--batch-size":
        with pytest.raises(SystemExit) as e:
            main(argv + ["--model", str(model)])
        assert e.value.code == 2
    else:
        assert main(argv + ["--model", str(model)]) == 2
    err = capsys.readouterr().err
    if argv[1] == "--batch-size":  # argparse: usage line, then one error line
        err = err.splitlines()[-1] + "\n"
    prefix = "npformer sentiment: error:" if argv[1] == "--batch-size" else "npformer: error:"
    assert err.startswith(prefix) and message in err and err.count("\n") == 1


def test_column_that_does_not_exist(sentiment_dir, tmp_path, capsys):
    csv_file = tmp_path / "in.csv"
    csv_file.write_text("a,b\nx,y\n")
    assert main(["sentiment", "-m", str(sentiment_dir), "-i", str(csv_file), "--column", "text"]) == 2
    assert "column 'text' not in in.csv" in capsys.readouterr().err


def test_not_a_checkpoint(tmp_path, capsys):
    assert main(["sentiment", "--model", str(tmp_path), "hello"]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nope")]) == 2


def test_info_quantize_and_int8_model(sentiment_dir, tmp_path, capsys):
    assert main(["info", str(sentiment_dir)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model_type"] == "bert" and data["dtype"] == "float32" and data["id2label"]["1"] == "POSITIVE"
    out_dir = tmp_path / "q"
    assert main(["quantize", str(sentiment_dir), str(out_dir)]) == 0
    capsys.readouterr()
    assert main(["info", str(out_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "int8"
    assert main(["sentiment", "-m", str(out_dir), "nice"]) == 0
    assert lines(capsys.readouterr().out)[0]["label"] in LABELS.values()


def test_console_script_stdin(sentiment_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "npformer.cli", "sentiment", "-m", str(sentiment_dir)],
        input="one\ntwo\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(lines(proc.stdout)) == 2


def test_ner_min_score_and_probabilities(tmp_path, capsys):
    labels = {0: "O", 1: "B-PER", 2: "I-PER"}
    make_checkpoint(
        tmp_path,
        "bert",
        "token",
        vocab="bert-base-uncased",
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=40,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        init_std=0.5,
    )
    text = "ada lovelace met charles babbage in london in eighteen thirty three"
    assert main(["ner", "-m", str(tmp_path), "--aggregation-strategy", "none", "--probabilities", text]) == 0
    every = lines(capsys.readouterr().out)[0]["entities"]
    assert every and all(set(e["probabilities"]) <= set(labels.values()) and e["entropy"] >= 0 for e in every)
    cut = sorted(e["score"] for e in every)[len(every) // 2]
    assert main(["ner", "-m", str(tmp_path), "--aggregation-strategy", "none", "--min-score", str(cut), text]) == 0
    kept = lines(capsys.readouterr().out)[0]["entities"]
    assert [e["index"] for e in kept] == [e["index"] for e in every if e["score"] >= cut] and len(kept) < len(every)


def test_verbose_quiet_and_max_length(sentiment_dir, tmp_path, capsys):
    txt = tmp_path / "in.txt"
    txt.write_text("a fine film " * 30 + "\nshort\n")
    assert main(["sentiment", "-m", str(sentiment_dir), "-i", str(txt), "-v"]) == 0
    err = capsys.readouterr().err
    assert "npformer: loaded a bert encoder" in err and "2 records, 0 errors" in err
    assert main(["sentiment", "-m", str(sentiment_dir), "-i", str(txt), "-q", "--max-length", "8"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    rows = lines(captured.out)
    expected = npformer.pipeline("sentiment", sentiment_dir)("a fine film " * 30, max_length=8)[0]
    assert {"label": rows[0]["label"], "score": rows[0]["score"]} == expected


def test_every_pipeline_name_is_a_command(tmp_path, capsys):
    """feature-extraction too: per-token hidden states, equal to the pipeline's."""
    make_checkpoint(
        tmp_path,
        "bert",
        None,
        vocab="bert-base-uncased",
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=40,
    )
    assert main(["feature-extraction", "-m", str(tmp_path), "a short text"]) == 0
    row = lines(capsys.readouterr().out)[0]
    expected = npformer.pipeline("feature-extraction", tmp_path)("a short text", return_tensors=True)[0]
    assert len(row["features"]) == expected.shape[0] and len(row["features"][0]) == 32
    import numpy as np

    np.testing.assert_allclose(np.array(row["features"]), expected, atol=1e-6)
    from npformer.cli import build_parser
    from npformer.pipelines import ALIASES, TASKS

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert (set(TASKS) | set(ALIASES)) - commands == set()
