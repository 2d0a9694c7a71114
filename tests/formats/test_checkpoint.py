"""lokr_core.formats.checkpoint: checkpoint headers and fingerprints."""
import hashlib

from lokr_core.formats.checkpoint import file_sha256


def test_file_sha256(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc" * 1000)
    assert file_sha256(p) == hashlib.sha256(b"abc" * 1000).hexdigest()
