"""Atomic file writes (a temp file in the target's folder, fsync, then ``os.replace``) and the
checks that an output path is safe to write (:func:`check_not_input`, :func:`check_output`).

A reader never sees a half-written file, and a failed write leaves nothing behind: the temp file
is removed on any error (including KeyboardInterrupt) and the target keeps its old content.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

from .errors import LoKrFormatError, where

PathLike = str | os.PathLike


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name the same file (resolved paths, or same inode when both exist)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_not_input(path: PathLike, inputs: Iterable[PathLike] | None) -> None:
    """Raise LoKrFormatError when ``path`` is one of ``inputs`` (writing would destroy an input).

    ``inputs`` entries that are None are ignored.
    """
    target = Path(path)
    for src in inputs or ():
        if src is None:
            continue
        if _same_file(target, Path(src)):
            raise LoKrFormatError(
                f"{where(str(path), None)}output path is also an input; expected a different output "
                "file (writing over an input while reading it would destroy it)")


def check_output(out: PathLike, inputs: Iterable[object], *, new_folder: bool = False) -> None:
    """Refuse an output path that would clobber or overlap the inputs, before any work is done.

    ``inputs``: paths being read (other values, e.g. in-memory state dicts, are ignored). ``out``
    may not be an input (also via symlink / hard link), nor overlap an input folder (inside it, or
    holding it). ``new_folder``: ``out`` is a folder to create (absent or empty); else a file path,
    not a folder. Its parent folder must exist. LoKrFormatError naming ``out`` otherwise.
    """
    paths = [Path(p) for p in inputs if isinstance(p, (str, os.PathLike))]
    out = Path(out)
    check_not_input(out, paths)
    o = out.resolve()
    for p in paths:
        if p.is_dir():
            c = p.resolve()
            if o == c or c in o.parents or o in c.parents:
                raise LoKrFormatError(f"{where(str(out), None)}output overlaps the input folder {str(p)!r}; expected "
                                      "a path outside the inputs" + (" (a separate new folder)" if new_folder else ""))
    if new_folder:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise LoKrFormatError(f"{where(str(out), None)}already exists and is not an empty folder; expected a "
                                  "new folder")
    elif out.is_dir():
        raise LoKrFormatError(f"{where(str(out), None)}is a folder; expected a .safetensors file path")
    if not o.parent.is_dir():
        raise LoKrFormatError(f"{where(str(out), None)}folder {str(out.parent)!r} does not exist; expected an existing folder")


def atomic_write(path: PathLike, write: Callable[[str], None], inputs: Iterable[PathLike] | None) -> Path:
    """Call ``write(tmp_path)`` for a temp file beside ``path``, fsync it, and rename it onto ``path``."""
    target = Path(path)
    check_not_input(target, inputs)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise LoKrFormatError(f"{where(str(path), None)}folder {str(folder)!r} does not exist; expected an existing folder")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        if target.exists():
            try:  # keep the old file's permission bits
                os.chmod(tmp, target.stat().st_mode & 0o7777)
            except OSError:
                pass
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename durable; not possible on every platform
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return target


def atomic_write_bytes(data: bytes, path: PathLike, *, inputs: Iterable[PathLike] | None = None) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path. Refuses a path listed in ``inputs``."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return atomic_write(path, write, inputs)


def atomic_write_text(text: str, path: PathLike, *, encoding: str = "utf-8",
                      inputs: Iterable[PathLike] | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8 by default); returns the path."""
    return atomic_write_bytes(text.encode(encoding), path, inputs=inputs)


def atomic_save_file(tensors: Mapping[str, torch.Tensor], path: PathLike, metadata: Mapping[str, str] | None = None,
                     *, inputs: Iterable[PathLike] | None = None) -> Path:
    """Save ``tensors`` as safetensors at ``path`` atomically; returns the path.

    ``metadata`` values must be strings (safetensors' rule; checked before anything is written).
    Tensors are made contiguous; shared-memory tensors are cloned so safetensors accepts them.
    Refuses to write over any path in ``inputs``.
    """
    from safetensors.torch import save_file

    meta = None
    if metadata is not None:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise LoKrFormatError(f"{where(str(path), None)}metadata entries {bad[:5]} are not str -> str; "
                                  "expected string keys and string values")
        meta = dict(metadata)
    bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise LoKrFormatError(f"{where(str(path), None)}entries {bad[:5]} are not tensors; expected torch.Tensor values")
    seen: set[int] = set()
    prepared: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        storage = t.untyped_storage()
        shared = storage.data_ptr() in seen or storage.nbytes() != t.numel() * t.element_size()
        if shared or not t.is_contiguous():
            t = t.contiguous().clone()
        seen.add(t.untyped_storage().data_ptr())
        prepared[key] = t

    def write(tmp: str) -> None:
        save_file(prepared, tmp, metadata=meta)
    return atomic_write(path, write, inputs)
