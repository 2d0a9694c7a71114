"""lokr_core.base.atomic: temp file + rename, nothing left behind on failure, inputs never overwritten."""
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lokr_core.base.atomic import atomic_save_file, atomic_write_bytes, atomic_write_text, check_not_input
from lokr_core.base.errors import LoKrFormatError


def _listing(folder):
    return sorted(os.listdir(folder))


def test_atomic_save_file_writes_tensors_and_metadata(tmp_path):
    base = torch.randn(4, 6)
    tensors = {"a": torch.randn(3, 2), "view": base[:, :3], "t": base.t(), "same": base, "same2": base}
    out = atomic_save_file(tensors, tmp_path / "x.safetensors", {"k": "v"})
    assert out == tmp_path / "x.safetensors"
    loaded = load_file(out)
    for k, v in tensors.items():
        torch.testing.assert_close(loaded[k], v, rtol=0, atol=0)
    with safe_open(str(out), "pt") as fh:
        assert fh.metadata() == {"k": "v"}
    assert _listing(tmp_path) == ["x.safetensors"]


def test_atomic_save_file_replaces_existing(tmp_path):
    path = tmp_path / "x.safetensors"
    atomic_save_file({"a": torch.zeros(2)}, path)
    atomic_save_file({"b": torch.ones(3)}, path)
    assert list(load_file(path)) == ["b"]
    assert _listing(tmp_path) == ["x.safetensors"]


def test_atomic_save_file_bad_metadata_leaves_nothing(tmp_path):
    with pytest.raises(LoKrFormatError, match=r"x\.safetensors.*metadata.*'n'.*string"):
        atomic_save_file({"a": torch.zeros(2)}, tmp_path / "x.safetensors", {"n": 3})
    assert _listing(tmp_path) == []


def test_atomic_save_file_failure_in_writer_removes_temp_and_keeps_old(tmp_path, monkeypatch):
    path = tmp_path / "x.safetensors"
    atomic_save_file({"old": torch.zeros(2)}, path)
    import safetensors.torch as st

    def boom(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("disk full")
    monkeypatch.setattr(st, "save_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save_file({"new": torch.ones(2)}, path)
    assert _listing(tmp_path) == ["x.safetensors"]
    assert list(load_file(path)) == ["old"]


def test_atomic_save_file_non_tensor_value(tmp_path):
    with pytest.raises(LoKrFormatError, match=r"\['a'\].*torch.Tensor"):
        atomic_save_file({"a": [1, 2]}, tmp_path / "x.safetensors")
    assert _listing(tmp_path) == []


def test_refuses_to_overwrite_an_input(tmp_path):
    path = tmp_path / "in.safetensors"
    atomic_save_file({"a": torch.zeros(2)}, path)
    before = path.read_bytes()
    same = tmp_path / "sub" / ".." / "in.safetensors"
    (tmp_path / "sub").mkdir()
    with pytest.raises(LoKrFormatError, match=r"in\.safetensors.*also an input"):
        atomic_save_file({"b": torch.ones(2)}, same, inputs=[path])
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["in.safetensors", "sub"]
    check_not_input(tmp_path / "other.safetensors", [path, None])  # no error


def test_atomic_write_bytes_and_text(tmp_path):
    p = atomic_write_bytes(b"\x00\x01", tmp_path / "b.bin")
    assert p.read_bytes() == b"\x00\x01"
    t = atomic_write_text("héllo", tmp_path / "t.json")
    assert t.read_text(encoding="utf-8") == "héllo"
    with pytest.raises(LoKrFormatError, match="also an input"):
        atomic_write_text("x", t, inputs=[str(t)])
    assert t.read_text(encoding="utf-8") == "héllo"
    assert _listing(tmp_path) == ["b.bin", "t.json"]


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(LoKrFormatError, match="does not exist"):
        atomic_write_text("x", tmp_path / "nope" / "f.txt")
    assert _listing(tmp_path) == []


def test_atomic_write_streams_through_a_callback_and_cleans_up(tmp_path):
    from lokr_core.base.atomic import atomic_write

    target = tmp_path / "out.bin"
    atomic_write(target, lambda tmp: open(tmp, "wb").write(b"abc"), inputs=None)
    assert target.read_bytes() == b"abc"

    def broken(tmp):
        open(tmp, "wb").write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken, inputs=None)
    assert target.read_bytes() == b"abc" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
