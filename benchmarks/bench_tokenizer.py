"""Tokenizer throughput: npformer vs BertTokenizer (pure Python) vs BertTokenizerFast (Rust), one run.

Tokens per second on every SST-2 dev sentence and every WikiText-2 test line, encoded one text at a
time (``tok(text)``, as a service would), uncased BERT vocabulary; median of ``--runs`` passes.
Writes a section to benchmarks/RESULTS.md.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_tokenizer.py
"""

from __future__ import annotations

import argparse
import sys

from common import SHARED, append_results, median_ms, require_clean_blas_env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    require_clean_blas_env()
    from transformers import BertTokenizer, BertTokenizerFast

    from npformer import Tokenizer

    vocab = SHARED / "vocab" / "bert-base-uncased"
    sst2 = [line.split("\t")[0] for line in (SHARED / "data/sst2/dev.tsv").read_text().splitlines()[1:]]
    wiki = (SHARED / "data/wikitext2/wiki.test.raw").read_text().splitlines()
    engines = {"npformer": Tokenizer.from_pretrained(vocab),
               "BertTokenizer (Python)": BertTokenizer.from_pretrained(vocab),
               "BertTokenizerFast (Rust)": BertTokenizerFast.from_pretrained(vocab)}
    rows = ["| corpus | texts | tokens | engine | median s | tokens/s | npformer speed-up |", "|---|---|---|---|---|---|---|"]
    for corpus, texts in (("SST-2 dev", sst2), ("WikiText-2 test", wiki)):
        n_tokens = sum(len(engines["npformer"].tokenize(t)) + 2 for t in texts)
        times = {}
        for name, tok in engines.items():
            ms, _ = median_ms(lambda: [tok(t) for t in texts], args.runs, warmup=1)
            times[name] = ms / 1e3
            print(name, corpus, f"{ms:.0f} ms", file=sys.stderr)
        for name, seconds in times.items():
            ratio = seconds / times["npformer"]
            rows.append(f"| {corpus} | {len(texts)} | {n_tokens} | {name} | {seconds:.3f} | {n_tokens / seconds:,.0f} | "
                        f"{'—' if name == 'npformer' else f'{ratio:.2f}x'} |")
    append_results("Tokenizer throughput", "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python "
                   f"benchmarks/bench_tokenizer.py --runs {args.runs}",
                   "npformer speed-up = that engine's time / npformer's time (> 1: npformer is faster); "
                   f"median of {args.runs} passes, one text per call.\n\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
