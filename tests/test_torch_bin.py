"""``npformer convert``: PyTorch ``.bin`` checkpoints to safetensors without torch at run time and
without running code from the file (torch is the test-only reference that writes the files)."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import npformer
from helpers import make_checkpoint
from npformer.convert import convert_bin
from npformer.torch_bin import UnsafeCheckpointError, read_torch_bin

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("model_type, head, kwargs", [
    ("bert", "sequence", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40)),
    ("distilbert", "mlm", dict(dim=32, n_layers=2, n_heads=2, hidden_dim=40)),
])
def test_bin_converts_bit_exactly_and_loads(tmp_path, model_type, head, kwargs):
    model = make_checkpoint(tmp_path / "src", model_type, head, vocab="bert-base-uncased", **kwargs)
    (tmp_path / "src" / "model.safetensors").unlink()
    model.save_pretrained(tmp_path / "src", safe_serialization=False)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    tensors = read_torch_bin(tmp_path / "src" / "pytorch_model.bin")
    assert set(state) >= set(tensors) and len(tensors) > 10
    for name, value in tensors.items():
        assert value.dtype == state[name].dtype and np.array_equal(value, state[name]), name
    with pytest.raises(FileNotFoundError, match="npformer convert"):
        npformer.AutoModel.from_pretrained(tmp_path / "src")
    proc = subprocess.run([sys.executable, "-m", "npformer.cli", "convert", str(tmp_path / "src"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["out_dir"] == str(tmp_path / "out")
    ids = np.array([[101, 7592, 2088, 102]])
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids)).logits.numpy()
    loader = npformer.AutoModelForSequenceClassification if head == "sequence" else npformer.AutoModelForMaskedLM
    np.testing.assert_allclose(loader.from_pretrained(tmp_path / "out")(ids).logits, ref, atol=1e-4)
    from safetensors import safe_open
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "np") as f:
        assert f.metadata()["converted_from"] == "pytorch_model.bin"
    with pytest.raises(FileExistsError):
        convert_bin(tmp_path / "src", tmp_path / "out")
    shown = subprocess.run([sys.executable, "-m", "npformer.cli", "info", str(tmp_path / "out")], capture_output=True,
                           text=True, timeout=300)
    assert json.loads(shown.stdout)["converted_from"] == "pytorch_model.bin"


class Payload:
    """Unpickling this runs its __reduce__: the attack a safe reader must refuse."""

    def __init__(self, call, arg):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return self.call, (self.arg,)


def crafted(tmp_path, payload) -> str:
    path = tmp_path / "evil.bin"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": payload}, protocol=2))
        z.writestr("archive/version", "3\n")
    return str(path)


@pytest.mark.parametrize("make", [
    lambda marker: Payload(os.system, f"touch {marker}"),
    lambda marker: Payload(eval, f"open({str(marker)!r}, 'w')"),
    lambda marker: Payload(__import__("builtins").exec, f"open({str(marker)!r}, 'w')"),
    lambda marker: Payload(pickle.loads, pickle.dumps(Payload(os.system, f"touch {marker}"))),
])
def test_malicious_pickles_are_refused_and_never_run(tmp_path, make):
    marker = tmp_path / "pwned"
    path = crafted(tmp_path, make(marker))
    with pytest.raises(UnsafeCheckpointError, match="refused, nothing from the file was run"):
        read_torch_bin(path)
    assert not marker.exists()


def test_truncated_and_corrupted_archives(tmp_path):
    model = make_checkpoint(tmp_path / "src", "bert", None, vocab="bert-base-uncased", hidden_size=32,
                            num_hidden_layers=1, num_attention_heads=2, intermediate_size=40)
    torch.save(model.state_dict(), tmp_path / "good.bin")
    data = (tmp_path / "good.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable torch zip checkpoint"):
        read_torch_bin(tmp_path / "cut.bin")
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer, _use_new_zipfile_serialization=False)
    (tmp_path / "legacy.bin").write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="legacy"):
        read_torch_bin(tmp_path / "legacy.bin")
    with zipfile.ZipFile(tmp_path / "good.bin") as z, zipfile.ZipFile(tmp_path / "holes.bin", "w") as out:
        for item in z.infolist():
            if not item.filename.endswith("/data/0"):  # drop the first tensor storage
                out.writestr(item, z.read(item.filename))
    with pytest.raises(ValueError, match="storage .* is missing"):
        read_torch_bin(tmp_path / "holes.bin")
