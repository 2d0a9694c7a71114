"""The text outputs the multi-file nodes share: ``trigger_words`` and ``loaded``.

``trigger_words`` joins the trigger words that the files' sidecars and headers name
(``lokr_core.formats.sidecar.read_sidecar``, read from disk only), file by file in the order given,
each word once (compared case-insensitively). ``loaded`` lists what was applied, one
``file:strength`` line per file (``file:model:clip`` when the two strengths differ).
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from ..lokr_core.formats.sidecar import read_sidecar
from .common import lokr_path


def file_trigger_words(name: str) -> list[str]:
    """Trigger words of the ``loras`` file ``name`` (sidecars first, then the header); [] when none."""
    return list(read_sidecar(lokr_path(name)).trigger_words)


def trigger_words_text(names: Iterable[str]) -> str:
    """``"word a, word b, ..."``: every file's trigger words in order, each once (case-insensitive)."""
    seen: set[str] = set()
    out: list[str] = []
    for name in names:
        for word in file_trigger_words(name):
            if word.casefold() not in seen:
                seen.add(word.casefold())
                out.append(word)
    return ", ".join(out)


def _number(x: float) -> str:
    return f"{float(x):g}"


def loaded_text(entries: Iterable[Sequence[Any]]) -> str:
    """One ``file:strength`` line per ``(file, strength_model, strength_clip, ...)`` entry
    (``file:model:clip`` when the clip strength differs)."""
    lines = []
    for name, sm, sc, *_ in entries:
        tail = _number(sm) if float(sm) == float(sc) else f"{_number(sm)}:{_number(sc)}"
        lines.append(f"{name}:{tail}")
    return "\n".join(lines)
