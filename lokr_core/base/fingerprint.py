"""A file's identity at one moment: what tells a rewritten file from an unchanged one.

:func:`file_fingerprint` is a short string built from the size, the modification time (ns), the
inode and a SHA-256 of the first and last 64 KiB. Two calls give the same string while the file is
unchanged; a rewrite changes it (a new inode from an atomic replace, a new mtime or size from an
in-place write, new bytes at either end from a same-size copy with a restored mtime). Cost: two
small reads, whatever the file's size, so it can run on every prompt (ComfyUI's ``IS_CHANGED``).

:func:`stat_token` / :func:`check_unchanged` are the readers' guard: the token taken when a file's
header is read must still hold when its tensors are read, else a clear error (never a mix of old
and new tensors).
"""
from __future__ import annotations

import hashlib
import os

from .errors import LoKrFormatError, where

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


StatToken = tuple[int, int, int, int]
"""(size, mtime_ns, inode, device) of a file: :func:`stat_token`."""


def stat_token(path: str | os.PathLike) -> StatToken:
    """(size, mtime_ns, inode, device) of ``path`` now: one ``stat``, cheap enough to take before
    and after every tensor read. Raises OSError when the file is gone."""
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def check_unchanged(path: str | os.PathLike, before: StatToken) -> None:
    """LoKrFormatError naming ``path`` when its :func:`stat_token` differs from ``before`` (taken when
    its header was read) or the file is gone: the file is being rewritten or was replaced while it
    was read, so what was read could mix old and new contents."""
    try:
        now = stat_token(path)
    except OSError:
        now = None
    if now != before:
        what = "is gone" if now is None else (
            f"changed (size {before[0]} -> {now[0]} bytes, modified time {before[1]} -> {now[1]} ns"
            + (", replaced by another file" if now[2:] != before[2:] else "") + ")")
        raise LoKrFormatError(f"{where(str(path), None)}{what} while it was being read; expected the file to stay "
                              "unchanged during the read (wait until whatever writes it has finished, then run "
                              "again); nothing was written")
