"""Tokenizer throughput: npformer against Hugging Face's Rust tokenizers (and the pure-Python
BertTokenizer for WordPiece), one run, for each tokenizer model npformer implements:

- WordPiece: the uncased BERT vocabulary (../shared/vocab/bert-base-uncased);
- byte-level BPE: GPT-2's vocabulary as RoBERTa's tokenizer (tests/data/vocab/gpt2);
- SentencePiece Unigram: the sentencepiece sdist's test model as XLM-R's tokenizer converts it
  (tests/data/sentencepiece/test_model.model: precompiled normalizer, Metaspace).

Tokens per second on every SST-2 dev sentence and every WikiText-2 test line, one text per call
(``tok(text)``, as a service would) and in batches of 32 (``tok(texts)``); the Rust tokenizer on one
thread (``RAYON_NUM_THREADS=1``, set here). Median of ``--runs`` passes, the engines taking turns. Writes a section to
benchmarks/RESULTS.md. Also measures peak memory of npformer's batch encode of WikiText-2 above the
loaded tokenizer (tracemalloc), against the text's size.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_tokenizer.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path

from common import ROOT, SHARED, append_results, interleaved_ms, median_ms, require_clean_blas_env

os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers is imported: its batch encode on one thread
os.environ["TOKENIZERS_PARALLELISM"] = "false"


def references(workdir: Path) -> dict:
    """model -> (directory for npformer, {engine name: reference tokenizer})."""
    from transformers import BertTokenizer, BertTokenizerFast, RobertaTokenizerFast, XLMRobertaTokenizerFast

    bert = SHARED / "vocab" / "bert-base-uncased"
    gpt2 = ROOT / "tests" / "data" / "vocab" / "gpt2"
    roberta = RobertaTokenizerFast(str(gpt2 / "vocab.json"), str(gpt2 / "merges.txt"))
    roberta.save_pretrained(workdir / "bpe")
    unigram = XLMRobertaTokenizerFast(vocab_file=str(ROOT / "tests/data/sentencepiece/test_model.model"))
    unigram.save_pretrained(workdir / "unigram")
    return {
        "WordPiece": (
            bert,
            {
                "BertTokenizerFast (Rust)": BertTokenizerFast.from_pretrained(bert),
                "BertTokenizer (Python)": BertTokenizer.from_pretrained(bert),
            },
        ),
        "BPE": (workdir / "bpe", {"RobertaTokenizerFast (Rust)": roberta}),
        "Unigram": (workdir / "unigram", {"XLMRobertaTokenizerFast (Rust)": unigram}),
    }


def batches(texts: list[str], size: int = 32) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    require_clean_blas_env()
    from npformer import Tokenizer

    sst2 = [line.split("\t")[0] for line in (SHARED / "data/sst2/dev.tsv").read_text().splitlines()[1:]]
    wiki = [line for line in (SHARED / "data/wikitext2/wiki.test.raw").read_text().splitlines() if line.strip()]
    rows = [
        "| model | corpus | texts | tokens | engine | one text per call: tokens/s | npformer speed-up "
        "| batches of 32: tokens/s | npformer speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    memory = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, (directory, refs) in references(Path(tmp)).items():
            engines = {"npformer": Tokenizer.from_pretrained(directory), **refs}
            for corpus, texts in (("SST-2 dev", sst2), ("WikiText-2 test", wiki)):
                n_tokens = sum(int(engines["npformer"](t)["attention_mask"].sum()) for t in texts)
                groups = batches(texts)
                fast = {name: tok for name, tok in engines.items() if "Python" not in name}  # Python: minutes per pass
                one = interleaved_ms({name: lambda tok=tok: [tok(t) for t in texts] for name, tok in fast.items()}, args.runs)
                batched = interleaved_ms(
                    {name: lambda tok=tok: [tok(g, padding=True) for g in groups] for name, tok in fast.items()}, args.runs
                )
                for name, tok in engines.items():
                    if name not in fast:
                        one[name] = median_ms(lambda tok=tok: [tok(t) for t in texts], 3, warmup=1)[0]
                one = {name: ms / 1e3 for name, ms in one.items()}
                batched = {name: ms / 1e3 for name, ms in batched.items()}
                for name in fast:
                    print(model, corpus, name, f"{one[name]:.3f} s", f"{batched[name]:.3f} s", file=sys.stderr)
                for name in engines:
                    cells = []
                    for times in (one, batched):
                        if name not in times:
                            cells += ["-", "-"]
                            continue
                        ratio = times[name] / times["npformer"]
                        cells += [f"{n_tokens / times[name]:,.0f}", "—" if name == "npformer" else f"{ratio:.2f}x"]
                    rows.append(f"| {model} | {corpus} | {len(texts)} | {n_tokens} | {name} | " + " | ".join(cells) + " |")
            tok = engines["npformer"]
            tracemalloc.start()
            for group in batches(wiki):
                tok(group, padding=True)  # each batch's arrays dropped before the next, as a service does
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            size = sum(len(t.encode("utf-8")) for t in wiki)
            memory.append(
                f"{model}: peak {peak / 2**20:.1f} MB while encoding WikiText-2 in batches of 32, word caches "
                f"warm "
                f"({size / 2**20:.1f} MB of text; {peak / size:.1f}x)"
            )
    append_results(
        "Tokenizer throughput: WordPiece, BPE, Unigram",
        f"env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_tokenizer.py --runs {args.runs}",
        "npformer speed-up = that engine's time / npformer's time (> 1: npformer is faster); median of "
        f"{args.runs} passes, the engines taking turns pass by pass (the pure-Python tokenizer: 3 passes "
        "of its own); the Rust tokenizers on one thread (RAYON_NUM_THREADS=1). Tokens counted "
        "with the special tokens.\n\n"
        + "\n".join(rows)
        + "\n\nMemory (tracemalloc, npformer):\n\n"
        + "\n".join(f"- {m}" for m in memory),
    )


if __name__ == "__main__":
    main()
