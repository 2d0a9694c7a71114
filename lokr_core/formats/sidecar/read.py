"""``read_sidecar(path)``: every sidecar of a LoKr file and its header, merged in priority order."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

from ...base.errors import LoKrError
from .files import find_preview, folder_of, read_json_object, stem_of, usable_file
from .info import SidecarInfo
from .parsers import civitai_facts, header_facts, lora_manager_facts, rgthree_facts, webui_facts
from .words import top_tags

Parser = Callable[[dict[str, Any], str, list[str]], dict[str, Any]]

SIDECARS: tuple[tuple[str, bool, Parser], ...] = (
    (".json", False, webui_facts),
    (".metadata.json", False, lora_manager_facts),
    (".rgthree-info.json", True, rgthree_facts),
    (".civitai.info", False, civitai_facts),
)
"""(suffix, after the full file name (else after the stem), parser), highest priority first; the
header comes last. The user's own sd-webui edits lead, then the managers' records, then Civitai's."""

_SCALARS = ("base_model", "title", "notes", "preferred_weight", "source_url")


def sidecar_files(path: str | os.PathLike) -> list[tuple[str, Parser]]:
    """[(sidecar path, parser)] that a LoKr file at ``path`` may have, in priority order."""
    p, stem = os.fspath(path), stem_of(path)
    return [((p if full else stem) + suffix, parser) for suffix, full, parser in SIDECARS]


def _header_metadata(path: str, problems: list[str]) -> dict[str, str]:
    """The metadata of a ``.safetensors`` file's header (header only; no tensor is read)."""
    from ..checkpoint import read_keys_shapes

    if not (path.lower().endswith(".safetensors") and os.path.isfile(path)):
        return {}
    try:
        return read_keys_shapes(Path(path))[1]
    except LoKrError as exc:
        problems.append(f"header: {exc}")
        return {}


def _local_preview(value: str, path: str, folder: str, problems: list[str]) -> str | None:
    """A Lora-Manager ``preview_url`` as a usable local file inside the folder, else None."""
    if value.startswith(("http://", "https://", "data:", "/api/", "/loras_static/")):
        return None  # a web address: nothing is fetched
    candidate = value if os.path.isabs(value) else os.path.join(os.path.dirname(os.path.abspath(path)), value)
    return candidate if usable_file(candidate, folder, problems) else None


def read_sidecar(path: str | os.PathLike, metadata: Mapping[str, str] | None = None, *,
                 top_n: int = 20) -> SidecarInfo:
    """What the files beside ``path`` and its safetensors header say about it (docs/sidecar.md).

    ``path``: a LoKr ``.safetensors`` file (or a PEFT folder: sidecars named after the folder, no
    header). ``metadata``: the header's metadata when the caller already has it (``LoKrWeights.metadata``),
    else it is read from the header alone. ``top_n``: how many training tags to keep. Never raises
    for a bad, missing or hostile sidecar: such files are skipped and named in ``problems``.
    """
    p = os.fspath(path)
    folder = folder_of(p)
    problems: list[str] = []
    found: list[tuple[str, dict[str, Any]]] = []
    for candidate, parser in sidecar_files(p):
        data = read_json_object(candidate, folder, problems)
        if data is not None:
            name = os.path.basename(candidate)
            found.append((name, parser(data, name, problems)))
    meta = dict(metadata) if metadata is not None else _header_metadata(p, problems)
    found.append(("header", header_facts(meta, problems)))

    values: dict[str, Any] = {}
    sources: list[tuple[str, str]] = []
    words: list[str] = []
    seen: set[str] = set()
    for origin, facts in found:
        added = False
        for w in facts.get("trigger_words", []):
            if w.casefold() not in seen:
                seen.add(w.casefold())
                words.append(w)
                added = True
        if added:
            sources.append(("trigger_words", origin))
        for key in _SCALARS + ("thumbnail",):
            if key in facts and key not in values:
                values[key] = facts[key]
                sources.append((key, origin))

    preview = find_preview(p, folder, problems)
    if preview is not None:
        sources.append(("preview", os.path.basename(preview)))
    else:
        for origin, facts in found:
            if facts.get("preview"):
                preview = _local_preview(facts["preview"], p, folder, problems)
                if preview is not None:
                    sources.append(("preview", origin))
                    break
    tags = top_tags(meta.get("ss_tag_frequency"), top_n, problems)
    if tags:
        sources.append(("top_tags", "header"))
    return SidecarInfo(path=p, trigger_words=tuple(words), top_tags=tuple(tags), preview=preview,
                       sources=tuple(sources), problems=tuple(problems), **values)
