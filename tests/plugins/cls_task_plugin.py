"""A task registered from outside npformer (issue "Open the joints"): ``cls-embedding``, the last
layer's ``[CLS]`` vector of each text, optionally L2-normalized. Installed for the tests as the
entry point ``cls = cls_task_plugin`` of the group ``npformer.tasks`` (see
``tests/test_external_task.py``): it gets a CLI command (``npformer cls``) and is served by
``npformer serve --model NAME=PATH@cls-embedding`` at ``POST /models/NAME``."""

from __future__ import annotations

import numpy as np

from npformer.commands import Command, register_command
from npformer.models.auto import AutoModel
from npformer.pipelines import Task, register_task
from npformer.pipelines.embeddings import FeatureExtractionPipeline


class CLSEmbeddingPipeline(FeatureExtractionPipeline):
    """``pipe(text)`` -> the ``[CLS]`` vector as a list of ``hidden_size`` floats (a list of them for
    a list of texts); ``normalize=True`` divides each by its L2 norm."""

    task = "cls-embedding"

    def __call__(self, inputs, *, normalize: bool = False, truncation: bool = True, max_length: int | None = None):
        single = isinstance(inputs, str)
        states = super().__call__(
            [inputs] if single else inputs, return_tensors=True, truncation=truncation, max_length=max_length
        )
        vectors = [s[0, 0] / (np.linalg.norm(s[0, 0]) if normalize else 1.0) for s in states]
        out = [v.astype(float).tolist() for v in vectors]
        return out[0] if single else out


register_task(
    Task(
        "cls-embedding",
        CLSEmbeddingPipeline,
        AutoModel,
        "sentence-transformers/all-MiniLM-L6-v2",
        aliases=("cls",),
        parameters={"normalize": "bool", "truncation": "bool", "max_length": "int"},
    )
)


def _cls(args):
    def fn(pipe, records):
        texts = [r.text for r in records]
        return [{"text": t, "cls": v} for t, v in zip(texts, pipe(texts, normalize=args.normalize), strict=True)]

    return "cls-embedding", fn, ()


register_command(
    Command(
        "cls",
        "cls-embedding",
        "the [CLS] vector of each text",
        _cls,
        lambda p, positive: p.add_argument("--normalize", action="store_true", help="divide each vector by its L2 norm"),
        aliases=("cls-embedding",),
    )
)
