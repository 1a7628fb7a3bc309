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

import torch


@pytest.mark.parametrize(
    "model_type, head, kwargs",
    [
        ("bert", "sequence", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40)),
        ("distilbert", "mlm", dict(dim=32, n_layers=2, n_heads=2, hidden_dim=40)),
    ],
)
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
    proc = subprocess.run(
        [sys.executable, "-m", "npformer.cli", "convert", str(tmp_path / "src"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
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
    shown = subprocess.run(
        [sys.executable, "-m", "npformer.cli", "info", str(tmp_path / "out")], capture_output=True, text=True, timeout=300
    )
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


@pytest.mark.parametrize(
    "make",
    [
        lambda marker: Payload(os.system, f"touch {marker}"),
        lambda marker: Payload(eval, f"open({str(marker)!r}, 'w')"),
        lambda marker: Payload(__import__("builtins").exec, f"open({str(marker)!r}, 'w')"),
        lambda marker: Payload(pickle.loads, pickle.dumps(Payload(os.system, f"touch {marker}"))),
    ],
)
def test_malicious_pickles_are_refused_and_never_run(tmp_path, make):
    marker = tmp_path / "pwned"
    path = crafted(tmp_path, make(marker))
    with pytest.raises(UnsafeCheckpointError, match="refused, nothing from the file was run"):
        read_torch_bin(path)
    assert not marker.exists()


def test_truncated_and_corrupted_archives(tmp_path):
    model = make_checkpoint(
        tmp_path / "src",
        "bert",
        None,
        vocab="bert-base-uncased",
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=40,
    )
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


def tensor_pickle(offset, size, stride, numel: int) -> bytes:
    """A state-dict pickle {"w": _rebuild_tensor_v2(FloatStorage of numel values, offset, size, stride)},
    written opcode by opcode so that any layout can be stated (torch refuses to save a bad one)."""

    def integer(v) -> bytes:
        if isinstance(v, float):
            return b"G" + __import__("struct").pack(">d", v)  # BINFLOAT
        raw = v.to_bytes((v.bit_length() + 8) // 8 or 1, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw  # LONG1

    def ints(values) -> bytes:
        return b"(" + b"".join(integer(v) for v in values) + b"t"  # MARK ... TUPLE

    def text(s: str) -> bytes:
        return b"X" + len(s).to_bytes(4, "little") + s.encode()  # BINUNICODE

    pid = b"(" + text("storage") + b"ctorch\nFloatStorage\n" + text("0") + text("cpu") + integer(numel) + b"tQ"
    args = b"(" + pid + integer(offset) + ints(size) + ints(stride) + b"\x89" + b"}" + b"t"  # ..., False, {}
    return b"\x80\x02}" + text("w") + b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"Rs."


@pytest.mark.parametrize(
    "offset, size, stride",
    [
        (0, (4096,), (1,)),  # 4,096 values from a storage of 4: once read 2,700 values of other memory
        (0, (4,), (-1000,)),  # once a segmentation fault
        (0, (2**28,), (1,)),  # once a segmentation fault
        (3, (2,), (1,)),  # the offset pushes the last element out
        (0, (2, 2), (3, 1)),  # the outer stride pushes it out
        (0, (2**40, 2**40), (0, 0)),  # in bounds, but 2^80 elements broadcast from 4 values
        (-1, (2,), (1,)),
        (0, (2,), (1, 1)),  # one stride per dimension
        (0, (2.5,), (1,)),
    ],
)
def test_tensor_layouts_are_checked_against_their_storage(tmp_path, offset, size, stride):
    path = tmp_path / "layout.bin"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", tensor_pickle(offset, size, stride, numel=4))
        z.writestr("archive/data/0", np.arange(4, dtype=np.float32).tobytes())
        z.writestr("archive/version", "3\n")
    with pytest.raises(ValueError, match=r"tensor 'w' .*(reads past its storage of 4 values|invalid layout)") as err:
        read_torch_bin(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "offset, size, stride, expected",
    [
        (0, (4,), (1,), [0, 1, 2, 3]),
        (1, (3,), (1,), [1, 2, 3]),
        (0, (2, 2), (1, 2), [[0, 2], [1, 3]]),  # a transposed view
        (0, (0, 5), (5, 1), np.zeros((0, 5))),
        (2, (), (), 2.0),
    ],
)
def test_tensor_layouts_inside_their_storage_read_as_torch_reads_them(tmp_path, offset, size, stride, expected):
    path = tmp_path / "layout.bin"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", tensor_pickle(offset, size, stride, numel=4))
        z.writestr("archive/data/0", np.arange(4, dtype=np.float32).tobytes())
        z.writestr("archive/version", "3\n")
    got = read_torch_bin(path)["w"]
    reference = torch.load(path, weights_only=True)["w"].numpy()
    np.testing.assert_array_equal(got, reference)
    np.testing.assert_array_equal(got, np.asarray(expected, dtype=np.float32))
