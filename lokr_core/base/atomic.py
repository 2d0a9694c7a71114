"""Atomic file writes (a temp file in the target's folder, fsync, then ``os.replace``) and the
checks that an output path is safe to write (:func:`check_not_input`, :func:`check_output`).

A reader never sees a half-written file, and a failed write leaves nothing behind: the temp file
is removed on any error (including KeyboardInterrupt and a cancelled ComfyUI prompt) and the
target keeps its old content. :func:`writing` is the one entry every writer of the project goes
through (files: :func:`atomic_write`; diffusers folders: ``ops.merge``); it

- removes stale temps of earlier, killed writes of the same target (:mod:`.tempfiles`: names
  ``.<target name>.lokr-<pid>-<8 hex>.tmp``, nothing else is touched);
- refuses before writing when the target's file system has less free room than the estimated
  size (:func:`check_room`: LoKrWriteError naming the path, bytes needed, bytes free);
- turns an OSError of the write (ENOSPC, EFBIG, EACCES, EROFS, EIO, ...) into one LoKrWriteError
  naming the path, after removing the temp.

:func:`interruptible` sets, for the writes made inside it, a check called between tensors
(:func:`check_interrupt`): the nodes pass ComfyUI's "prompt cancelled" check.
"""
from __future__ import annotations

import errno as errno_codes
import os
import shutil
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import torch

from .dtypes import ST_CODES
from .errors import LoKrFormatError, LoKrWriteError, where
from .st_writer import safetensors_size, write_safetensors
from .tempfiles import TEMP_RE, remove_stale, temp_path

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


_INTERRUPT: ContextVar[Callable[[], None] | None] = ContextVar("lokr_write_interrupt", default=None)


@contextmanager
def interruptible(check: Callable[[], None] | None) -> Iterator[None]:
    """Within the block, writes call ``check()`` between tensors (:func:`check_interrupt`); ``check``
    raises to stop the write (ComfyUI: ``throw_exception_if_processing_interrupted``). None: no check."""
    token = _INTERRUPT.set(check)
    try:
        yield
    finally:
        _INTERRUPT.reset(token)


def check_interrupt() -> None:
    """Call the check :func:`interruptible` set (nothing outside such a block); writers call it
    between tensors, so a cancelled prompt stops the write there."""
    check = _INTERRUPT.get()
    if check is not None:
        check()


def _bytes_text(n: int) -> str:
    return f"{n} bytes ({n / 2**30:.2f} GiB)" if n >= 2**30 else f"{n} bytes ({n / 2**20:.1f} MiB)"


def check_room(path: PathLike, needed: int) -> None:
    """LoKrWriteError naming ``path``, the bytes needed and the bytes free when the file system of
    ``path``'s folder has less than ``needed`` bytes free for this user (``shutil.disk_usage``).

    An old file at ``path`` is not counted as room: it stays until the new one is complete.
    """
    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    while not folder.is_dir() and folder != folder.parent:  # a sub-folder the writer will create
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell (e.g. an unusual file system): the write itself will say
    if needed > free:
        raise LoKrWriteError(f"{where(str(path), None)}not enough free space: the output needs about "
                             f"{_bytes_text(needed)}, the file system of {str(folder)!r} has {_bytes_text(free)} "
                             "free; expected at least that much free space (free some space or choose another "
                             "output folder); nothing was written")


_WHY = {errno_codes.ENOSPC: "no space left on the device", errno_codes.EFBIG: "file too large (a file-size limit)",
        errno_codes.EACCES: "permission denied", errno_codes.EPERM: "operation not permitted",
        errno_codes.EROFS: "read-only file system", errno_codes.EIO: "input/output error (a failing disk?)",
        errno_codes.EDQUOT: "disk quota exceeded"}


def write_error(path: PathLike, exc: OSError) -> LoKrWriteError:
    """The LoKrWriteError for an OSError ``exc`` raised while writing ``path`` (its errno kept)."""
    code = exc.errno
    why = _WHY.get(code) or exc.strerror or str(exc)
    name = errno_codes.errorcode.get(code, "") if code is not None else ""
    other = exc.filename if exc.filename and TEMP_RE.match(os.path.basename(str(exc.filename))) is None \
        and os.path.abspath(str(exc.filename)) != os.path.abspath(str(path)) else None
    on = f" on {str(other)!r}" if other else ""
    err = LoKrWriteError(f"{where(str(path), None)}cannot be written: {why}{f' ({name})' if name else ''}{on}; expected a "
                         "writable folder with enough free space and no file-size limit below the output's size; "
                         "nothing was written (the temporary file was removed)")
    err.errno = code
    return err


def _remove(tmp: Path) -> None:
    try:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp)
        else:
            tmp.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass  # e.g. a folder turned read-only meanwhile; the next write of the target removes it


@contextmanager
def writing(path: PathLike, size: int | None, *, folder: bool = False) -> Iterator[Path]:
    """Prepare a write of ``path`` and yield its temp path (created: an empty file, or a folder when
    ``folder``); the caller fills it and renames it onto ``path`` inside the block.

    First the stale temps of ``path`` are removed and ``size`` (estimated bytes; None: unknown) is
    checked against the free space (:func:`check_room`). On any error in the block the temp is
    removed; an OSError becomes :func:`write_error` (a LoKrWriteError naming ``path``).
    """
    target = Path(path)
    remove_stale(target)
    if size is not None:
        check_room(target, int(size))
    tmp = temp_path(target)
    try:
        if folder:
            os.mkdir(tmp, 0o700)
        else:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield tmp
    except OSError as exc:
        _remove(tmp)
        if isinstance(exc, LoKrWriteError):
            raise
        raise write_error(path, exc) from None
    except BaseException:
        _remove(tmp)
        raise
    if os.path.lexists(tmp):  # the block did not rename it: not a finished write
        _remove(tmp)


def atomic_write(path: PathLike, write: Callable[[str], None], inputs: Iterable[PathLike] | None,
                 *, size: int | None = None) -> Path:
    """Call ``write(tmp_path)`` for a temp file beside ``path``, fsync it, and rename it onto ``path``.

    ``size``: the estimated output bytes, checked against the free space first (None: not checked).
    Goes through :func:`writing` (stale temps removed, OSError -> LoKrWriteError naming ``path``).
    """
    target = Path(path)
    check_not_input(target, inputs)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise LoKrFormatError(f"{where(str(path), None)}folder {str(folder)!r} does not exist; expected an existing folder")
    with writing(target, size) as tmp_path:
        tmp = str(tmp_path)
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
    sync_folder(folder)
    return target


def sync_folder(folder: PathLike) -> None:
    """fsync a folder, making a rename in it durable; silently skipped where not possible."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_write_bytes(data: bytes, path: PathLike, *, inputs: Iterable[PathLike] | None = None) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path. Refuses a path listed in ``inputs``."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return atomic_write(path, write, inputs, size=len(data))


def atomic_write_text(text: str, path: PathLike, *, encoding: str = "utf-8",
                      inputs: Iterable[PathLike] | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8 by default); returns the path."""
    return atomic_write_bytes(text.encode(encoding), path, inputs=inputs)


def atomic_save_file(tensors: Mapping[str, torch.Tensor], path: PathLike, metadata: Mapping[str, str] | None = None,
                     *, inputs: Iterable[PathLike] | None = None) -> Path:
    """Save ``tensors`` as safetensors at ``path`` atomically; returns the path.

    ``metadata`` values must be strings (safetensors' rule; checked before anything is written).
    Tensors are made contiguous (shared-memory ones cloned) and written one at a time
    (:func:`~.st_writer.write_safetensors`, :func:`check_interrupt` before each); the free space is
    checked first against the file's exact size.
    Refuses to write over any path in ``inputs``.
    """
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
    bad = [k for k in tensors if not isinstance(k, str)]
    if bad:
        raise LoKrFormatError(f"{where(str(path), None)}tensor names {bad[:5]} are not strings; expected str keys")
    bad = [k for k, v in tensors.items() if v.dtype not in ST_CODES]
    if bad:
        raise LoKrFormatError(f"{where(str(path), None)}tensors {bad[:5]} have a dtype safetensors cannot store; "
                              f"expected one of {sorted(str(d).replace('torch.', '') for d in ST_CODES)}")
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
        with open(tmp, "wb") as fh:
            write_safetensors(fh, prepared, meta, before_tensor=check_interrupt)
    return atomic_write(path, write, inputs, size=safetensors_size(prepared, meta))
