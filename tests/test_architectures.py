"""The architectures beyond BERT and DistilBERT against Transformers 4.57.6, on random-init
checkpoints: RoBERTa (byte-level BPE: GPT-2's vocabulary, tests/data/vocab/gpt2), XLM-RoBERTa and
CamemBERT (a SentencePiece Unigram tokenizer trained here), ELECTRA (WordPiece; embeddings
narrower than the layers, so ``embeddings_project`` runs), MPNet, ALBERT and ModernBERT (rotary
positions, global and sliding-window layers, GeGLU; with and without biases, cls and mean pooling).

Bounds: hidden states and logits within 1e-4 of Transformers on both backends (measured ~1e-6);
pipelines as tests/test_pipelines.py holds BERT's (labels, words, spans, offsets identical, scores
within 1e-4); sentence-transformers embeddings and cross-encoder scores within 1e-4; LoRA logits
within 1e-4 of PEFT's; int8 within the bound of tests/test_quantization.py (cosine >= 0.99).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import read_squad, read_sst2, read_wikitext
from helpers import assert_close, make_checkpoint
from test_pipelines import NER_LABELS, assert_same, reference

import npformer
from npformer.models import auto

import torch
import transformers

TOL = 1e-4
SMALL = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, init_std=0.2)
# name -> (model_type, make_checkpoint arguments)
ARCHS = {
    "roberta": ("roberta", {}),
    "xlm-roberta": ("xlm-roberta", {}),  # SentencePiece Unigram tokenizer (helpers.unigram_tokenizer)
    "camembert": ("camembert", {}),
    "mpnet": ("mpnet", {}),  # WordPiece with MPNet's template; relative position bias in every layer
    "mpnet-64-buckets": ("mpnet", dict(relative_attention_num_buckets=64)),  # Transformers reads the first 32
    "bert-unigram": ("bert", dict(tokenizer_class="XLMRobertaTokenizerFast")),  # paraphrase-multilingual's layout
    "albert": ("albert", dict(embedding_size=16)),  # both layers run one shared block
    "albert-groups": (
        "albert",
        dict(embedding_size=16, num_hidden_layers=4, num_hidden_groups=2, inner_group_num=2),
    ),  # two groups of two blocks, each run twice
    "electra": ("electra", dict(vocab="bert-base-uncased", embedding_size=16)),
    "electra-same-width": ("electra", dict(vocab="bert-base-uncased", embedding_size=48)),
    # a global then a local layer (a 5-token window: the texts are longer)
    "modernbert": ("modernbert", dict(local_attention=4, global_attn_every_n_layers=2)),
    "modernbert-biases-mean": (
        "modernbert",
        dict(
            local_attention=6,
            global_attn_every_n_layers=3,
            num_hidden_layers=4,
            norm_bias=True,
            attention_bias=True,
            mlp_bias=True,
            classifier_bias=True,
            classifier_pooling="mean",
            decoder_bias=False,
        ),
    ),
    "modernbert-all-global": ("modernbert", dict(global_attn_every_n_layers=1, local_rope_theta=500.0)),
}
MAIN = ["roberta", "electra", "xlm-roberta", "mpnet", "albert", "modernbert"]
LOADERS = {
    None: auto.AutoModel,
    "sequence": auto.AutoModelForSequenceClassification,
    "token": auto.AutoModelForTokenClassification,
    "qa": auto.AutoModelForQuestionAnswering,
    "mlm": auto.AutoModelForMaskedLM,
}
TEXTS = ["Paris is the {mask} of France.", "a short one", "  Leading spaces,\ttabs and émigrés' café — ok?"]


def texts_for(directory) -> list[str]:
    """:data:`TEXTS` with the checkpoint's own mask token."""
    mask = transformers.AutoTokenizer.from_pretrained(directory).mask_token
    return [t.format(mask=mask) for t in TEXTS]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(arch, head) -> directory of a random-init checkpoint (each made once per module);
    ``checkpoints.torch_model(arch, head)`` also gives the torch model."""
    made = {}

    def make(arch, head, **extra):
        key = (arch, head, repr(sorted(extra.items())))
        if key not in made:
            directory = tmp_path_factory.mktemp(f"{arch}-{head}")
            model_type, kwargs = ARCHS[arch]
            made[key] = (directory, make_checkpoint(directory, model_type, head, seed=len(made), **{**SMALL, **kwargs, **extra}))
        return made[key]

    def get(arch, head, **extra):
        return make(arch, head, **extra)[0]

    get.torch_model = make
    return get


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("head", list(LOADERS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_heads_match_transformers(checkpoints, arch, head, backend):
    """Every head on a padded batch of single texts and of pairs (token types where the tokenizer
    makes them)."""
    directory, torch_model = checkpoints.torch_model(arch, head)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    texts = texts_for(directory)
    for enc in (
        tokenizer(texts, padding=True, return_tensors="np"),
        tokenizer(texts, texts[::-1], padding=True, return_tensors="np"),
    ):
        assert (enc["attention_mask"] == 0).any()  # padding in the batch
        feed = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.no_grad():
            ref = torch_model(**{k: torch.tensor(v) for k, v in feed.items()})
        out = LOADERS[head].from_pretrained(directory, backend=backend)(**feed)
        real = feed["attention_mask"].astype(bool)
        if head is None:
            assert_close(out.last_hidden_state[real], ref.last_hidden_state.numpy()[real], TOL, "last_hidden_state")
            if out.pooler_output is not None or getattr(ref, "pooler_output", None) is not None:
                assert_close(out.pooler_output, ref.pooler_output.numpy(), TOL, "pooler_output")
        elif head == "qa":
            assert_close(out.start_logits[real], ref.start_logits.numpy()[real], TOL, "start_logits")
            assert_close(out.end_logits[real], ref.end_logits.numpy()[real], TOL, "end_logits")
        elif head == "sequence":
            assert_close(out.logits, ref.logits.numpy(), TOL, "logits")
        else:
            assert_close(out.logits[real], ref.logits.numpy()[real], TOL, "logits")


def test_roberta_positions_skip_padding_and_the_table_holds_512_tokens(checkpoints):
    """Positions are ``pad + 1 + index`` over real tokens (so left padding changes nothing) and a
    514-row table takes 512 tokens; a 513th is refused in one line naming the limit."""
    directory, torch_model = checkpoints.torch_model("roberta", None)
    model = auto.AutoModel.from_pretrained(directory)
    ids = np.array([[0] + list(range(1000, 1510)) + [2]])
    with torch.no_grad():
        ref = torch_model(input_ids=torch.tensor(ids)).last_hidden_state.numpy()
    assert_close(model(ids).last_hidden_state, ref, TOL, "512 tokens")
    left = np.array([[1, 1, 0, 2000, 2001, 2], [0, 2000, 2001, 2, 1, 1]])
    mask = (left != 1).astype(np.int64)
    out = model(left, mask).last_hidden_state
    np.testing.assert_allclose(out[0, 2:], out[1, :4], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="512"):
        model(np.array([[0] + [1000] * 511 + [2]]))


def test_mpnet_relative_position_buckets_and_long_inputs(checkpoints):
    """T5 buckets equal Transformers' for distances up to +-600 (exact, logarithmic and clipped
    ranges), and a 400-token input with padding in the batch matches Transformers on both backends."""
    from npformer.models.mpnet import relative_position_bucket

    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    distances = np.arange(-600, 601)
    expected = MPNetEncoder.relative_position_bucket(torch.tensor(distances)).numpy()
    np.testing.assert_array_equal(relative_position_bucket(distances), expected)
    directory, torch_model = checkpoints.torch_model("mpnet", None)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 30000, size=(2, 400))
    ids[:, 0], ids[0, -1] = 30522, 30523
    mask = np.ones_like(ids)
    mask[1, 350:] = 0
    ids[1, 350:] = 30524  # <pad>
    with torch.no_grad():
        ref = torch_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    for backend in ("numba", "numpy"):
        out = auto.AutoModel.from_pretrained(directory, backend=backend)(ids, mask).last_hidden_state
        real = mask.astype(bool)
        assert_close(out[real], ref[real], TOL, f"mpnet 400 tokens ({backend})")


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("arch", MAIN)
def test_text_classification(checkpoints, arch, backend):
    directory = checkpoints(
        arch,
        "sequence",
        id2label={0: "NEGATIVE", 1: "POSITIVE", 2: "NEUTRAL"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1, "NEUTRAL": 2},
    )
    texts = read_sst2("dev")[0][:60]
    ours = npformer.pipeline("text-classification", directory, batch_size=7, backend=backend)
    theirs = reference("text-classification", directory)
    assert_same(ours(texts, top_k=None), theirs(texts, top_k=None))
    assert_same(ours(texts[3], function_to_apply="sigmoid"), theirs(texts[3], function_to_apply="sigmoid"))
    pair = {"text": texts[0], "text_pair": texts[1]}  # RoBERTa: <s> A </s></s> B </s>
    assert_same(ours(pair, top_k=None), theirs(pair, top_k=None))


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
@pytest.mark.parametrize("arch", MAIN)
def test_token_classification(checkpoints, arch, strategy):
    """Sub-words are decided as Transformers decides them: by the ``##`` prefix for WordPiece, by
    no space before the token in the text for byte-level BPE."""
    directory = checkpoints(arch, "token", id2label=NER_LABELS, label2id={v: k for k, v in NER_LABELS.items()})
    lines = [line for line in read_wikitext() if len(line.split()) > 3][:30]
    ours = npformer.pipeline("ner", directory, batch_size=5)
    theirs = reference("ner", directory)
    assert_same(ours(lines, aggregation_strategy=strategy), theirs(lines, aggregation_strategy=strategy))


@pytest.mark.parametrize("arch", MAIN)
def test_question_answering(checkpoints, arch):
    directory = checkpoints(arch, "qa")
    squad = read_squad()
    long_ones = sorted(squad, key=lambda p: len(p[1]))[-2:]  # contexts beyond max_seq_len: windows
    ours = npformer.pipeline("question-answering", directory, batch_size=4)
    theirs = reference("question-answering", directory)
    for question, context in squad[::500][:12] + long_ones:
        assert_same(ours(question=question, context=context, top_k=2), theirs(question=question, context=context, top_k=2))
    question, context = long_ones[0]
    kwargs = dict(max_seq_len=128, doc_stride=32, top_k=3, handle_impossible_answer=True)
    assert_same(ours(question=question, context=context, **kwargs), theirs(question=question, context=context, **kwargs))


@pytest.mark.parametrize("arch", MAIN)
def test_fill_mask(checkpoints, arch):
    """RoBERTa's ``<mask>`` strips the space before it (lstrip); predictions decode with their spaces."""
    directory = checkpoints(arch, "mlm")
    mask = transformers.AutoTokenizer.from_pretrained(directory).mask_token
    lines = [line for line in read_wikitext() if 8 < len(line.split()) < 60][:20]
    masked = [" ".join(words[:3] + [mask] + words[4:]) for words in (line.split() for line in lines)]
    ours = npformer.pipeline("fill-mask", directory, batch_size=6)
    theirs = reference("fill-mask", directory)
    assert_same(ours(masked), theirs(masked))
    text = texts_for(directory)[0]
    assert_same(ours(text, top_k=8), theirs(text, top_k=8))
    targets = [" capital", "city", "zzzqqq"]
    assert_same(ours(text, targets=targets), theirs(text, targets=targets))


@pytest.mark.parametrize("arch", [*MAIN, "bert-unigram"])
def test_feature_extraction_and_sentence_transformers(checkpoints, arch, tmp_path):
    """The bare encoder's states as Transformers' pipeline gives them; a sentence-transformers model
    on it (mean pooling, normalize) embeds as sentence-transformers does, also with
    ``do_lower_case`` and surrounding whitespace (sentence-transformers strips each text)."""
    import sentence_transformers as st

    directory = checkpoints(arch, None)
    texts = read_sst2("dev")[0][:12]
    ours = npformer.pipeline("feature-extraction", directory, batch_size=5)(texts)
    theirs = reference("feature-extraction", directory)(texts)
    for a, b in zip(ours, theirs, strict=True):
        assert_close(a, b, TOL, "feature-extraction")
    word = st.models.Transformer(str(directory))
    model = st.SentenceTransformer(
        modules=[word, st.models.Pooling(word.get_word_embedding_dimension(), "mean"), st.models.Normalize()], device="cpu"
    )
    model.save(str(tmp_path / "st"))
    expected = model.encode(texts, batch_size=5)
    got = npformer.pipeline("sentence-embeddings", tmp_path / "st").encode(texts, batch_size=5)
    assert_close(got, expected, TOL, "sentence embeddings")
    assert_close(np.linalg.norm(got, axis=1), np.ones(len(texts)), 1e-5, "norms")
    settings = tmp_path / "st" / "sentence_bert_config.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "do_lower_case": True}))
    texts = ["  Paris Is The Capital Of France.  ", "\tÉMIGRÉS' CAFÉ\n"]
    expected = st.SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(texts)
    assert_close(npformer.pipeline("sentence-embeddings", tmp_path / "st").encode(texts), expected, TOL, "do_lower_case")


@pytest.mark.parametrize("arch", MAIN)
def test_lora_adapter_matches_peft(checkpoints, arch, tmp_path):
    """PEFT's default targets for the architecture (``query``, ``value``; MPNet, ALBERT and ModernBERT,
    which PEFT has no defaults for, name theirs) and its classifier saved whole."""
    import peft

    directory = checkpoints(arch, "sequence", id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    torch.manual_seed(0)
    targets = {"mpnet": ["q", "v"], "albert": ["query", "value"], "modernbert": ["Wqkv", "Wo", "Wi"]}.get(arch)
    peft_model = peft.get_peft_model(
        transformers.AutoModelForSequenceClassification.from_pretrained(directory),
        peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, init_lora_weights=False, target_modules=targets),
    )
    assert set(peft_model.peft_config["default"].target_modules) == set(targets or ["query", "value"])
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "modules_to_save" in name:
                p.add_(0.05 * torch.randn(p.shape))
    peft_model.eval().save_pretrained(tmp_path / "adapter")
    enc = transformers.AutoTokenizer.from_pretrained(directory)(texts_for(directory), padding=True, return_tensors="np")
    with torch.no_grad():
        ref = peft_model(
            input_ids=torch.tensor(enc["input_ids"]), attention_mask=torch.tensor(enc["attention_mask"])
        ).logits.numpy()
    model = auto.AutoModelForSequenceClassification.from_pretrained(directory, adapter=tmp_path / "adapter")
    assert_close(model(enc["input_ids"], enc["attention_mask"]).logits, ref, TOL, "LoRA logits")


@pytest.mark.parametrize("arch", MAIN)
def test_int8_checkpoint_and_command_line(checkpoints, arch, tmp_path):
    """``npformer quantize`` writes what ``dtype="int8"`` computes; ``info`` and a task command run it."""
    directory = checkpoints(arch, "mlm")
    cli = [sys.executable, "-m", "npformer.cli"]
    done = subprocess.run([*cli, "quantize", str(directory), str(tmp_path / "i8")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = auto.AutoModelForMaskedLM.from_pretrained(tmp_path / "i8")
    at_load = auto.AutoModelForMaskedLM.from_pretrained(directory, dtype="int8")
    f32 = auto.AutoModelForMaskedLM.from_pretrained(directory)
    texts = texts_for(directory)
    enc = npformer.Tokenizer.from_pretrained(directory)(texts, padding=True)
    assert loaded.encoder.dtype == "int8"
    ids, mask = enc["input_ids"], enc["attention_mask"]
    np.testing.assert_allclose(loaded(ids, mask).logits, at_load(ids, mask).logits, rtol=0, atol=1e-5)
    a, b = f32(ids, mask).last_hidden_state[mask == 1], loaded(ids, mask).last_hidden_state[mask == 1]
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.min() >= 0.99, cos.min()  # the int8 bound of tests/test_quantization.py
    info = subprocess.run([*cli, "info", str(tmp_path / "i8")], capture_output=True, text=True, timeout=300)
    shown = json.loads(info.stdout)
    assert shown["model_type"] == ARCHS[arch][0] and shown["dtype"] == "int8"
    run = subprocess.run([*cli, "fill-mask", "--model", str(directory), texts[0]], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert_same(json.loads(run.stdout)["predictions"], reference("fill-mask", directory)(texts[0]))


@pytest.mark.parametrize("arch", MAIN)
def test_served_reranker_and_embedder(checkpoints, arch):
    """``serve``: ``/rerank`` scores as sentence-transformers' ``CrossEncoder`` (one label, sigmoid),
    ``/predict`` as Transformers' pipeline, ``/embed`` as sentence-transformers (mean pooling,
    normalized)."""
    import sentence_transformers as st
    from test_server import free_port, start, stop, Client

    rerank = checkpoints(arch, "sequence", num_labels=1)
    embed = checkpoints(arch, None)
    port = free_port()
    proc = start(["--model", f"rerank={rerank}", "--model", f"embed={embed}"], port)
    try:
        client = Client(port)
        query, texts = "what is the capital of france?", ["Paris is the capital of France.", "a cat sat", " Lyon "]
        out = client.ok("/rerank?model=rerank", {"query": query, "texts": texts})
        expected = st.CrossEncoder(str(rerank), device="cpu").predict([(query, t) for t in texts])
        assert [r["index"] for r in out] == list(np.argsort(-expected, kind="stable"))
        assert_close([r["score"] for r in sorted(out, key=lambda r: r["index"])], expected, TOL, "/rerank")
        predicted = client.ok("/predict?model=rerank", {"inputs": [query, texts[0]], "raw_scores": True})
        assert_same(
            predicted,
            reference("text-classification", rerank)(
                {"text": query, "text_pair": texts[0]}, top_k=None, function_to_apply="none"
            ),
        )
        word = st.models.Transformer(str(embed))
        model = st.SentenceTransformer(
            modules=[word, st.models.Pooling(word.get_word_embedding_dimension(), "mean")], device="cpu"
        )
        assert_close(
            client.ok("/embed?model=embed", {"inputs": texts}), model.encode(texts, normalize_embeddings=True), TOL, "/embed"
        )
    finally:
        assert stop(proc) == 0
