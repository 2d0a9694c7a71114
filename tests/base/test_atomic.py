"""lokr_core.base.atomic: temp file + rename, nothing left behind on failure, inputs never overwritten."""
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lokr_core.base.atomic import atomic_save_file, atomic_write_bytes, atomic_write_text, check_not_input, interruptible
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


def test_atomic_save_file_failure_in_writer_removes_temp_and_keeps_old(tmp_path):
    path = tmp_path / "x.safetensors"
    atomic_save_file({"old": torch.zeros(2)}, path)
    calls = []

    def boom():  # fails after the header and the first tensor went to the temp file
        calls.append(1)
        if len(calls) == 2:
            assert [n for n in _listing(tmp_path) if n.startswith(f".x.safetensors.lokr-{os.getpid()}-")]
            raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"), interruptible(boom):
        atomic_save_file({"new": torch.ones(2), "new2": torch.ones(3)}, path)
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


# ------------------------------------------------------------------ faults: space, OSError, stale temps
def test_refuses_before_writing_when_the_file_system_lacks_room(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from lokr_core.base.errors import LoKrWriteError

    usage = namedtuple("usage", "total used free")
    calls = []

    def small_disk(folder):
        calls.append(str(folder))
        return usage(10**9, 10**9 - 1000, 1000)
    monkeypatch.setattr(shutil, "disk_usage", small_disk)
    path = tmp_path / "x.safetensors"
    with pytest.raises(LoKrWriteError, match=r"x\.safetensors.*needs about 4\d\d\d bytes.*has 1000 bytes .*free"):
        atomic_save_file({"a": torch.zeros(1000)}, path)
    assert calls == [str(tmp_path)] and _listing(tmp_path) == []
    atomic_save_file({"a": torch.zeros(10)}, path)  # 40 bytes + header fit
    assert list(load_file(path)) == ["a"]


@pytest.mark.parametrize("code", ["ENOSPC", "EFBIG", "EACCES", "EROFS", "EIO"])
def test_oserror_while_writing_is_one_clear_error_and_removes_the_temp(tmp_path, code):
    import errno

    from lokr_core.base.atomic import atomic_write
    from lokr_core.base.errors import LoKrError, LoKrWriteError

    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def failing(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"partial")
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))
    with pytest.raises(LoKrWriteError) as ei:
        atomic_write(target, failing, inputs=None)
    assert isinstance(ei.value, LoKrError) and ei.value.errno == getattr(errno, code)
    assert str(target) in str(ei.value) and code in str(ei.value) and "nothing was written" in str(ei.value)
    assert _listing(tmp_path) == ["out.bin"] and target.read_bytes() == b"old"


def test_next_write_removes_stale_temps_of_the_same_target_only(tmp_path):
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    stale = tmp_path / f".x.safetensors.lokr-{p.pid}-0123abcd.tmp"
    other = tmp_path / f".y.safetensors.lokr-{p.pid}-0123abcd.tmp"
    alike = tmp_path / ".x.safetensors.0123abcd.tmp"  # the old mkstemp-style name: not ours to judge
    for f in (stale, other, alike):
        f.write_bytes(b"partial")
    atomic_save_file({"a": torch.zeros(2)}, tmp_path / "x.safetensors")
    assert _listing(tmp_path) == sorted([other.name, alike.name, "x.safetensors"])


def test_interruptible_check_runs_between_tensors_only_inside_the_block(tmp_path):
    seen = []
    with interruptible(lambda: seen.append(len(os.listdir(tmp_path)))):
        atomic_save_file({"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1)}, tmp_path / "x.safetensors")
    assert seen == [1, 1, 1]  # once per tensor, with the temp file present and the target not yet
    atomic_save_file({"a": torch.zeros(2)}, tmp_path / "y.safetensors")
    assert seen == [1, 1, 1]
