"""Errors raised by lokr_core.

Every message names the file (when there is one), the module and what was expected, so a user
can act on it without reading code. All errors derive from :class:`LoKrError`.
"""
from __future__ import annotations


class LoKrError(Exception):
    """Base class of every error lokr_core raises on purpose."""


class LoKrConfigError(LoKrError, ValueError):
    """A LoKrConfig field holds a value PEFT would refuse (names the field)."""


class LoKrFormatError(LoKrError, ValueError):
    """A file or state dict is not a readable LoKr file, or a factor is missing / not finite."""


class LoKrShapeError(LoKrError, ValueError):
    """Factor shapes do not multiply to the target weight's shape."""


class LoKrWriteError(LoKrError, OSError):
    """An output cannot be written: too little free space, a file-size limit, no permission, a
    read-only or failing disk (names the path; ``errno`` is the system's, None for a refusal made
    before writing). Nothing was written: the temporary file is gone and the target unchanged."""


class LoKrKeyError(LoKrError, KeyError):
    """A module name or target does not resolve (nothing matched, unknown adapter, ...)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


def where(file: str | None, module: str | None) -> str:
    """Return the "file 'x', module 'y'" prefix used in error messages (parts that are None dropped)."""
    parts = []
    if file:
        parts.append(f"file {file!r}")
    if module:
        parts.append(f"module {module!r}")
    return ", ".join(parts) + ": " if parts else ""
