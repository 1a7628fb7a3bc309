"""SST-2 dev accuracy of a sentiment model through npformer (float32 and int8), and their agreement.

    python benchmarks/eval_sst2.py                       # the built-in INT8 model
    python benchmarks/eval_sst2.py --model DIR --dtype float32 int8

Writes a section to benchmarks/RESULTS.md (unless --no-write). Labels: 0 NEGATIVE, 1 POSITIVE.
"""

from __future__ import annotations

import argparse
import time

from common import SHARED, append_results

import npformer


def read_dev() -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for line in (SHARED / "data/sst2/dev.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        text, label = line.split("\t")
        texts.append(text)
        labels.append(int(label))
    return texts, labels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="checkpoint directory (default: the built-in model)")
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "int8"])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    texts, labels = read_dev()
    predictions, rows = {}, ["| model | dtype | accuracy % | correct / 872 | seconds |", "|---|---|---|---|---|"]
    for dtype in args.dtype:
        pipe = npformer.pipeline("sentiment-analysis", args.model, dtype=dtype, batch_size=32)
        t0 = time.perf_counter()
        out = pipe(texts)
        seconds = time.perf_counter() - t0
        pred = [1 if o["label"] in ("POSITIVE", "LABEL_1") else 0 for o in out]
        predictions[dtype] = pred
        correct = sum(p == y for p, y in zip(pred, labels))
        name = args.model or "built-in (npformer/builtin/sentiment)"
        rows.append(f"| {name} | {pipe.model.encoder.dtype} | {100 * correct / len(labels):.2f} | {correct} | {seconds:.1f} |")
    if len(predictions) == 2:
        a, b = predictions.values()
        rows.append(f"\nprediction agreement {' vs '.join(predictions)}: {100 * sum(x == y for x, y in zip(a, b)) / len(a):.2f}%")
    body = "\n".join(rows)
    print(body)
    if not args.no_write:
        append_results(
            "SST-2 dev accuracy",
            "python benchmarks/eval_sst2.py "
            + (f"--model {args.model} " if args.model else "")
            + "--dtype "
            + " ".join(args.dtype),
            body,
        )


if __name__ == "__main__":
    main()
