"""``npformer serve``: an HTTP inference server (TEI's routes and the Hugging Face Inference API)
with dynamic batching. Needs the ``server`` extra: ``pip install ".[server]"`` in npformer's repository.

:mod:`.batcher` (no web framework) coalesces requests into forward passes; :mod:`.protocol`
checks request bodies; :mod:`.routes` computes each route's answer; :mod:`.app` is the Starlette
application and its metrics; :mod:`.server` loads models and runs uvicorn.
"""
