"""A file's identity at one moment: what tells a rewritten file from an unchanged one.

:func:`file_fingerprint` is a short string built from the size, the modification time (ns), the
inode and a SHA-256 of the first and last 64 KiB. Two calls give the same string while the file is
unchanged; a rewrite changes it (a new inode from an atomic replace, a new mtime or size from an
in-place write, new bytes at either end from a same-size copy with a restored mtime). Cost: two
small reads, whatever the file's size, so it can run on every prompt (ComfyUI's ``IS_CHANGED``).
"""
from __future__ import annotations

import hashlib
import os

SAMPLE_BYTES = 64 * 1024
"""Bytes hashed at each end of the file."""


def file_fingerprint(path: str | os.PathLike) -> str:
    """``"<size>:<mtime_ns>:<inode>:<sha256 of head + tail, 16 hex>"`` of the file at ``path``.

    Raises OSError (FileNotFoundError, ...) when the file cannot be read.
    """
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        digest = hashlib.sha256()
        digest.update(fh.read(SAMPLE_BYTES))
        if st.st_size > SAMPLE_BYTES:
            fh.seek(max(SAMPLE_BYTES, st.st_size - SAMPLE_BYTES))
            digest.update(fh.read(SAMPLE_BYTES))
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{digest.hexdigest()[:16]}"
