"""The project's temporary files: one name pattern, the writer's pid in it, and stale ones found.

Every write of the project goes to a temporary file (or, for a diffusers folder, a temporary
folder) beside its target, then is renamed onto it (:mod:`.atomic`). Its name is::

    .<target name>.lokr-<pid>-<8 hex>.tmp

``<pid>`` is the writing process, ``<8 hex>`` random. A writer killed mid-write (SIGKILL, power
loss, the OOM killer) leaves it behind; it is *stale* when no process with that pid runs any more,
or when the process with that pid started after the temp file was last written (the pid was
reused). :func:`stale_temps` finds them, :func:`remove_stale` removes them; the next write to the
same target does so itself, ``lokr info --stale DIR`` lists them. Nothing whose name does not
match the pattern exactly is ever touched, nor a symlink, nor a temp of a running writer.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

TEMP_RE = re.compile(r"^\.(?P<target>.+)\.lokr-(?P<pid>[1-9][0-9]{0,9})-(?P<tag>[0-9a-f]{8})\.tmp$")
"""A temp name: group ``target`` (the target's file name), ``pid``, ``tag`` (random)."""


@dataclass(frozen=True)
class TempFile:
    """One temp entry: ``path``, the ``target`` name it was written for, the writer ``pid``,
    ``size`` (bytes; a folder: its files' total), ``is_dir`` and ``stale`` (writer gone)."""

    path: Path
    target: str
    pid: int
    size: int
    is_dir: bool
    stale: bool


def temp_path(target: str | os.PathLike) -> Path:
    """A new temp path for ``target``, in its folder: ``.<name>.lokr-<pid>-<8 hex>.tmp`` (not created)."""
    t = Path(target)
    return t.parent / f".{t.name}.lokr-{os.getpid()}-{secrets.token_hex(4)}.tmp"


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def process_start(pid: int) -> float | None:
    """When process ``pid`` started (Unix seconds), from /proc; None where that is not known."""
    boot = _boot_time()
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK") if boot is not None else None
    except (OSError, ValueError, IndexError):
        return None


def _pid_running_windows(pid: int) -> bool:
    """Windows: OpenProcess + GetExitCodeProcess (``os.kill(pid, 0)`` would send Ctrl-C there)."""
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # ERROR_ACCESS_DENIED: it exists; else no such process
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def pid_running(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts as running; unknown: True)."""
    if os.name == "nt":
        try:
            return _pid_running_windows(pid)
        except Exception:  # noqa: BLE001 - cannot tell: keep the file
            return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:
        return True
    except OSError:
        return True  # unknown: keep the file
    return True


def writer_gone(pid: int, last_write: float) -> bool:
    """True when the temp file written last at ``last_write`` (Unix s) by ``pid`` has no live writer:
    no such process, or the process with that pid started after the file was last written."""
    if pid == os.getpid():
        return False
    if not pid_running(pid):
        return True
    started = process_start(pid)
    return started is not None and started > last_write + 1.0


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return path.lstat().st_size


def list_temps(folder: str | os.PathLike, target: str | None = None) -> list[TempFile]:
    """The project's temp entries in ``folder`` (only names matching :data:`TEMP_RE`, no symlinks),
    all targets or only ``target`` (a file name), stale or not, sorted by name."""
    out = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    for name in names:
        m = TEMP_RE.match(name)
        if m is None or (target is not None and m.group("target") != target):
            continue
        path = Path(folder) / name
        try:
            st = path.lstat()
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                continue
            out.append(TempFile(path, m.group("target"), int(m.group("pid")), _size(path), path.is_dir(),
                                writer_gone(int(m.group("pid")), st.st_mtime)))
        except OSError:
            continue
    return out


def stale_temps(folder: str | os.PathLike, target: str | None = None) -> list[TempFile]:
    """The stale entries of :func:`list_temps` (writer gone)."""
    return [t for t in list_temps(folder, target) if t.stale]


def remove_stale(target: str | os.PathLike) -> list[TempFile]:
    """Remove the stale temps left by earlier writes of ``target`` (same folder, same name); returns
    them. Entries that vanish or cannot be removed meanwhile are skipped."""
    t = Path(target)
    removed = []
    for tmp in stale_temps(t.parent if str(t.parent) else ".", t.name):
        if remove_temp(tmp):
            removed.append(tmp)
    return removed


def remove_temp(tmp: TempFile) -> bool:
    """Remove one temp entry (a file, or a folder tree); False when it could not be removed."""
    try:
        if tmp.is_dir:
            shutil.rmtree(tmp.path)
        else:
            tmp.path.unlink()
        return True
    except OSError:
        return False


def age_text(path: Path) -> str:
    """How long ago ``path`` was last written, as ``"3 min"`` / ``"2.5 h"``."""
    try:
        age = max(0.0, time.time() - path.lstat().st_mtime)
    except OSError:
        return "?"
    return f"{age / 60:.0f} min" if age < 7200 else f"{age / 3600:.1f} h"
