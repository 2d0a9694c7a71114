import os

from lokr_core.base.fingerprint import SAMPLE_BYTES, file_fingerprint


def _write(path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def test_unchanged_file_same_fingerprint(tmp_path):
    p = tmp_path / "a.safetensors"
    _write(p, b"x" * 1000)
    assert file_fingerprint(p) == file_fingerprint(str(p))


def test_in_place_rewrite_same_size_same_mtime_changes_fingerprint(tmp_path):
    p = tmp_path / "a.safetensors"
    data = bytearray(os.urandom(3 * SAMPLE_BYTES))
    _write(p, bytes(data))
    st = os.stat(p)
    before = file_fingerprint(p)
    data[-1] ^= 0xFF                      # last byte: inside the hashed tail
    with open(p, "r+b") as fh:            # same inode, same size
        fh.write(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))   # mtime restored
    assert file_fingerprint(p) != before


def test_atomic_replace_changes_fingerprint(tmp_path):
    p, q = tmp_path / "a.safetensors", tmp_path / "b.tmp"
    _write(p, b"same bytes")
    before = file_fingerprint(p)
    _write(q, b"same bytes")
    os.replace(q, p)
    assert file_fingerprint(p) != before


def test_missing_file_raises(tmp_path):
    import pytest
    with pytest.raises(FileNotFoundError):
        file_fingerprint(tmp_path / "missing.safetensors")
