"""Fine-tune all-MiniLM-L6-v2 on GLUE SST-2 as BertForSequenceClassification (dev-only job).

torch and transformers are allowed here (a maintenance script), never in ``npformer/``.

Recipe: labels NEGATIVE/POSITIVE (as distilbert-base-uncased-finetuned-sst-2-english names them),
AdamW with linear warm-up and decay, fixed seed, dynamic padding with length-bucketed batches
(shuffle, cut into pools of 50 batches, sort each pool by length, split, shuffle the batches).
Model selection on SST-2 dev every ``--eval-every`` steps; the best float32 checkpoint is saved
with ``save_pretrained(safe_serialization=True)`` to ``--out``. Every evaluation is logged as a
JSON line to ``--out/train_log.jsonl``.

Usage: python scripts/train_sst2.py --base ~/.cache/npformer/all-MiniLM-L6-v2 --out OUT
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from transformers import BertForSequenceClassification, BertTokenizerFast, get_linear_schedule_with_warmup

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2"


def read_tsv(path: Path) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            text, label = line.rstrip("\n").split("\t")
            texts.append(text.strip())
            labels.append(int(label))
    return texts, labels


def bucketed_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for i in range(0, len(order), pool):
        chunk = sorted(order[i : i + pool], key=lambda j: lengths[j])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(enc: list[list[int]], idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(enc[i]) for i in idx)
    ids = torch.zeros((len(idx), width), dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for r, i in enumerate(idx):
        ids[r, : len(enc[i])] = torch.tensor(enc[i])
        mask[r, : len(enc[i])] = 1
    return ids, mask


@torch.no_grad()
def accuracy(model, enc, labels, batch_size=128) -> float:
    model.eval()
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    correct = 0
    for k in range(0, len(order), batch_size):
        idx = order[k : k + batch_size]
        ids, mask = collate(enc, idx)
        pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
        correct += int((pred == torch.tensor([labels[i] for i in idx])).sum())
    model.train()
    return correct / len(enc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="directory of all-MiniLM-L6-v2")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=float, default=0.06)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    rng = random.Random(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "train_log.jsonl", "a")

    tok = BertTokenizerFast.from_pretrained(args.base)
    model = BertForSequenceClassification.from_pretrained(
        args.base, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1}
    )
    tr_x, tr_y = read_tsv(SHARED / "train.tsv")
    dv_x, dv_y = read_tsv(SHARED / "dev.tsv")
    tr_enc = tok(tr_x, truncation=True, max_length=args.max_length)["input_ids"]
    dv_enc = tok(dv_x, truncation=True, max_length=args.max_length)["input_ids"]
    lengths = [len(e) for e in tr_enc]

    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=args.lr)
    steps_per_epoch = (len(tr_enc) + args.batch_size - 1) // args.batch_size
    total = int(steps_per_epoch * args.epochs)
    sched = get_linear_schedule_with_warmup(opt, int(args.warmup * total), total)
    model.train()
    best, step, t0 = -1.0, 0, time.time()
    while step < total:
        for idx in bucketed_batches(lengths, args.batch_size, rng):
            ids, mask = collate(tr_enc, idx)
            loss = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([tr_y[i] for i in idx])).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if step % args.eval_every == 0 or step == total:
                acc = accuracy(model, dv_enc, dv_y)
                rec = {
                    "step": step,
                    "epoch": step / steps_per_epoch,
                    "loss": float(loss),
                    "dev_acc": acc,
                    "elapsed_s": round(time.time() - t0),
                    "lr": args.lr,
                    "seed": args.seed,
                }
                if acc > best:
                    best = acc
                    model.save_pretrained(out, safe_serialization=True)
                    tok.save_pretrained(out)
                    rec["saved"] = True
                print(json.dumps(rec), flush=True)
                log.write(json.dumps(rec) + "\n")
                log.flush()
            if step >= total:
                break
    print(json.dumps({"best_dev_acc": best}), flush=True)


if __name__ == "__main__":
    main()
