"""The server's batcher without a server: requests' rows coalesced into shared passes, each
request getting exactly its own rows back; no wait when nobody else is coming; errors contained.
And the property batching relies on: a row's result does not depend on its batch-mates."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import npformer
from conftest import read_sst2
from npformer.serving.batcher import Batcher
from npformer.tokenizer import Encoding


def encoding(ids: list[int]) -> Encoding:
    n = len(ids)
    return Encoding(ids, ["t"] * n, [(0, 0)] * n, [None] * n, [None] * n, [0] * n, [0] * n, [1] * n)


class Recorder:
    """A ``run`` that returns each row's ids sum (per row) and its ids (per token), recording pass sizes."""

    def __init__(self, delay: float = 0.0):
        self.passes: list[int] = []
        self.delay = delay

    def sums(self, ids, mask, types):
        self.passes.append(len(ids))
        time.sleep(self.delay)
        return (ids * mask).sum(axis=1)

    def tokens(self, ids, mask, types):
        self.passes.append(len(ids))
        return ids * 10


def test_concurrent_requests_share_passes_and_get_their_own_rows():
    rec = Recorder(delay=0.02)
    batcher = Batcher(max_batch_tokens=10_000, max_batch_size=64, max_wait_ms=50)
    rng = np.random.default_rng(0)
    requests = [[list(rng.integers(1, 100, rng.integers(1, 30))) for _ in range(rng.integers(1, 5))] for _ in range(40)]

    def one(rows):
        with batcher.request():
            time.sleep(0.001)
            return batcher.submit([encoding(r) for r in rows], rec.sums, False, 0)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, requests))
    batcher.close()
    for rows, got in zip(requests, answers):
        assert [int(g) for g in got] == [sum(r) for r in rows]
    assert sum(rec.passes) == sum(len(r) for r in requests)
    assert max(rec.passes) > 5, rec.passes  # rows of several requests shared a pass


def test_per_token_rows_are_cut_to_their_length_and_limits_hold():
    rec = Recorder()
    batcher = Batcher(max_batch_tokens=40, max_batch_size=3, max_wait_ms=0)
    rows = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [15, 16]] * 3
    got = batcher.submit([encoding(r) for r in rows], rec.tokens, True, 0)
    batcher.close()
    assert [g.tolist() for g in got] == [[10 * i for i in r] for r in rows]
    assert max(rec.passes) <= 3 and sum(rec.passes) == len(rows)


def test_a_request_alone_is_not_held_back():
    batcher = Batcher(max_batch_tokens=10_000, max_batch_size=64, max_wait_ms=5_000)
    start = time.perf_counter()
    with batcher.request():
        out = batcher.submit([encoding([1, 2])], Recorder().sums, False, 0)
    assert int(out[0]) == 3
    assert time.perf_counter() - start < 2.5, "a lone request waited for a batch that could not come"
    batcher.close()


def test_a_failing_pass_fails_its_requests_and_the_thread_goes_on():
    batcher = Batcher(max_batch_tokens=10_000, max_batch_size=64, max_wait_ms=0)

    def broken(ids, mask, types):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        batcher.submit([encoding([1])], broken, False, 0)
    assert batcher.alive
    assert int(batcher.submit([encoding([2, 3])], Recorder().sums, False, 0)[0]) == 5
    batcher.close()
    assert not batcher.alive
    with pytest.raises(RuntimeError, match="shutting down"):
        batcher.submit([encoding([1])], Recorder().sums, False, 0)


def test_without_batching_each_submission_has_its_own_passes():
    rec = Recorder(delay=0.01)
    batcher = Batcher(max_batch_tokens=10_000, max_batch_size=64, max_wait_ms=50, enabled=False)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: batcher.submit([encoding([i + 1])] * 2, rec.sums, False, 0), range(16)))
    batcher.close()
    assert rec.passes == [2] * 16


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_a_rows_result_does_not_depend_on_its_batch_mates(minilm_dir, dtype):
    """Padding a row to a longer batch leaves its result bit for bit the same (the attention softmax
    stops at the last real key), so the server's batching cannot change an answer."""
    pipe = npformer.pipeline("sentence-embeddings", minilm_dir, dtype=dtype, batch_size=32)
    texts, _ = read_sst2("dev")
    texts = texts[:40]
    together = pipe.encode(texts)
    alone = np.stack([pipe.encode(t) for t in texts])
    assert np.array_equal(together, alone), float(np.abs(together - alone).max())
    clf = npformer.pipeline("sentiment", batch_size=32)
    assert clf(texts, top_k=None) == [clf(t, top_k=None) for t in texts]


def test_request_counts_stay_balanced_under_threads():
    batcher = Batcher(max_batch_tokens=10_000, max_batch_size=8, max_wait_ms=1)
    errors = []

    def one(i):
        try:
            with batcher.request():
                batcher.submit([encoding([i])], Recorder().sums, False, 0)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    batcher.close()
    assert not errors and batcher._preparing == 0


def test_a_pipeline_hands_its_passes_to_its_runner_keyed_by_pipeline_and_output():
    """``run_on`` is the seam: the runner gets each forward pass as a Step keyed ``(id(pipeline),
    output)``; two pipelines never share a key, one pipeline's two outputs neither; the results
    through a batcher equal the pipeline's own."""
    from npformer.runner import Step

    texts = read_sst2("dev")[0][:6]
    pipe = npformer.pipeline("sentiment")
    expected = pipe(texts)
    steps = []
    batcher = Batcher(max_batch_tokens=10_000, max_batch_size=64, max_wait_ms=0)

    def runner(encodings, step, per_token, pad_id):
        steps.append(step)
        return batcher.submit(encodings, step, per_token, pad_id)

    try:
        pipe.run_on(runner)
        assert pipe(texts) == expected
    finally:
        pipe.run_on(None)
        batcher.close()
    assert steps and all(isinstance(s, Step) and s.key == (id(pipe), "logits") for s in steps)
    other = npformer.pipeline("sentiment")
    assert Step(other.logits, (id(other), "logits")) != steps[0]
    assert Step(pipe.hidden_states, (id(pipe), "hidden_states")) != steps[0]
    assert pipe(texts) == expected  # in process again
