"""The path checks every HTTP route of the pack runs before it touches a file (see nodes/routes.py).

A route serves only a name that ``folder_paths.get_filename_list("loras")`` lists (this alone stops
``..``, absolute paths and encoded separators, which never appear in the list) whose real path
(symlinks followed) lies inside one of the ``loras`` roots. A refusal is a :class:`RouteError`
(4xx / 5xx) whose message names the requested file, never a server path.
"""
from __future__ import annotations

import os
from typing import Any, Iterable

FOLDER = "loras"
MAX_NAME_CHARS = 1024


class RouteError(Exception):
    """A refused request: ``status`` is the HTTP status (4xx/5xx), ``message`` what to show the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _shown(name: str) -> str:
    """The requested name as quoted in messages: repr, cut to 200 characters."""
    text = repr(name)
    return text if len(text) <= 200 else text[:197] + "..."


def listed_names(folder_paths: Any) -> list[str]:
    """The names ``folder_paths`` lists for the ``loras`` folder; 500 when the folder type is unknown."""
    try:
        return list(folder_paths.get_filename_list(FOLDER))
    except Exception as exc:  # folder_paths raises KeyError when the folder type is unknown
        raise RouteError(500, f"the '{FOLDER}' folder is not configured ({type(exc).__name__})") from None


def roots_of(folder_paths: Any) -> list[str]:
    """The real paths of the ``loras`` roots."""
    return [os.path.realpath(root) for root in folder_paths.get_folder_paths(FOLDER)]


def checked_paths(name: str | None, folder_paths: Any, suffixes: Iterable[str] | None = (".safetensors",),
                  listed: Iterable[str] | None = None) -> tuple[str, str]:
    """(full path as ``folder_paths`` gives it, real path) of ``name``, a file the ``loras`` folder
    lists; raise :class:`RouteError`.

    Refuses (400) an empty / over-long name or one with a NUL byte, (404) a name the folder does not
    list, (415) a name not ending in one of ``suffixes`` (None: any), and (403) a listed name whose
    real path (symlinks followed) is outside every ``loras`` root. ``listed``: the folder's names
    when the caller already has them.
    """
    if not isinstance(name, str) or not name.strip():
        raise RouteError(400, "missing query parameter 'file' (a file name from the loras folder)")
    if "\x00" in name or len(name) > MAX_NAME_CHARS:
        raise RouteError(400, f"file {_shown(name)}: not a valid file name")
    names = listed if listed is not None else listed_names(folder_paths)
    if name not in (names if isinstance(names, (set, frozenset)) else set(names)):
        raise RouteError(404, f"file {_shown(name)}: not in the '{FOLDER}' folder list")
    if suffixes is not None and not name.lower().endswith(tuple(suffixes)):
        raise RouteError(415, f"file {_shown(name)}: only .safetensors LoKr files can be inspected")
    full = folder_paths.get_full_path(FOLDER, name)
    if not full:
        raise RouteError(404, f"file {_shown(name)}: no longer on disk")
    real = os.path.realpath(full)
    if not any(inside(real, root) for root in roots_of(folder_paths)):
        raise RouteError(403, f"file {_shown(name)}: resolves outside the '{FOLDER}' folders (symlink?)")
    if not os.path.isfile(real):
        raise RouteError(404, f"file {_shown(name)}: not a regular file")
    return full, real


def lora_path(name: str | None, folder_paths: Any) -> str:
    """Return the real path of ``name``, a ``.safetensors`` file the ``loras`` folder lists (see
    :func:`checked_paths`); raise :class:`RouteError`."""
    return checked_paths(name, folder_paths)[1]


def inside(path: str, root: str) -> bool:
    """True when real path ``path`` is ``root`` itself or below it (both already realpath'ed)."""
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives on Windows
        return False
