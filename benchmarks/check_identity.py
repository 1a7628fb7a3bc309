"""Are two revisions' outputs bit-identical? A refactor of the forward pass must not change a bit.

    python benchmarks/check_identity.py BASE [NEW]

Each revision is checked out into a git worktree and runs, in a fresh process importing npformer
from there: the built-in INT8 sentiment model (logits of 64 SST-2 dev sentences through the
pipeline's own batching) and a random-init DistilBERT-base in float32 and int8 (last hidden state of
a ragged batch of 8 x 128 ids), each on both backends. The arrays are compared with
``np.array_equal``; the script prints one line per output and exits 1 if any differs.
NEW defaults to the working tree.

Each revision runs twice and the second run is compared: in revisions before the kernels dropped
``fastmath``'s reassociation (``npformer.kernels.jit.FASTMATH``), kernels compiled in the process and
the same kernels loaded from its cache could round differently (RESULTS.md, "Reproducibility across
processes"), so a first run that compiles was not comparable with one that loads.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench_revisions import MODEL, checkout, prepare_model
from common import SHARED

WORKER = """
import sys
import numpy as np
import npformer
assert npformer.__file__.startswith(sys.argv[1]), npformer.__file__
texts = [line.split("\\t")[0] for line in open(sys.argv[3], encoding="utf-8").read().splitlines()[1:65]]
out = {}
for backend in ("numba", "numpy"):
    clf = npformer.pipeline("sentiment", backend=backend, batch_size=16)
    out[f"sentiment-int8-{backend}"] = np.stack(clf.forward(clf.encode_one_window([(t, None) for t in texts], True),
                                                            clf.logits))
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(8, 128))
    mask = (np.arange(128)[None, :] < rng.integers(20, 129, size=8)[:, None]).astype(np.int64)
    for dtype in ("float32", "int8"):
        model = npformer.AutoModel.from_pretrained(sys.argv[2], dtype=dtype, backend=backend)
        out[f"distilbert-{dtype}-{backend}"] = model(ids, mask).last_hidden_state
np.savez(sys.argv[4], **out)
"""


def outputs(tree: Path, target: Path) -> dict[str, np.ndarray]:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            WORKER,
            str(tree / "npformer"),
            str(MODEL),
            str(SHARED / "data" / "sst2" / "dev.tsv"),
            str(target),
        ],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        cwd=tempfile.gettempdir(),
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-2000:])
    return dict(np.load(target))


def main() -> int:
    base, new = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None
    prepare_model()
    work = Path(tempfile.mkdtemp(prefix="check_identity_"))
    trees = [checkout(base, work / "base"), checkout(new, work / "new")]
    try:
        for i, tree in enumerate(trees):  # the first run compiles and caches the kernels
            outputs(tree, work / f"warm{i}.npz")
        a, b = (outputs(tree, work / f"{i}.npz") for i, tree in enumerate(trees))
    finally:
        for tree in trees[:1] + trees[1:] * (new is not None):
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], capture_output=True)
    differ = 0
    for name in sorted(a):
        same = a[name].shape == b[name].shape and np.array_equal(a[name], b[name])
        differ += not same
        print(f"{name}: {'bit-identical' if same else 'DIFFERS, max abs ' + str(np.abs(a[name] - b[name]).max())}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
