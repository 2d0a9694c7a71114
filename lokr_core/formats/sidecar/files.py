"""Which sidecar files a LoKr file has, and reading one safely (size cap, links, JSON decoding).

A LoKr file ``<dir>/<name>.safetensors`` has the *stem* ``<dir>/<name>``; sidecars are
``<stem><suffix>`` (``.civitai.info``, ``.metadata.json``, ``.json``, ``.preview.png``, ...) or,
for rgthree-comfy, ``<dir>/<name>.safetensors.rgthree-info.json``. A sidecar is read only when it
is a regular file of at most :data:`MAX_SIDECAR_BYTES` whose real path (links followed) lies in
the LoKr file's own folder (its real path) or below: a link pointing elsewhere is skipped and named.
"""
from __future__ import annotations

import json
import os
from typing import Any

MAX_SIDECAR_BYTES = 5 * 1024 * 1024
"""Largest sidecar JSON file read, in bytes (5 MiB); a larger one is skipped and named in problems."""

PREVIEW_SUFFIXES = (
    ".preview.png", ".preview.jpg", ".preview.jpeg", ".preview.webp",
    ".png", ".jpg", ".jpeg", ".webp",
    ".preview.gif", ".preview.mp4", ".preview.webm",
    ".gif", ".mp4", ".webm",
)
"""Preview names beside ``<stem>``, first found wins: still images before animations and videos,
``.preview.*`` (Civitai Helper, Lora-Manager) before the bare name (sd-webui, rgthree)."""

VIDEO_SUFFIXES = (".mp4", ".webm")
"""Preview suffixes that are videos, not images (for a consumer choosing ``<img>`` or ``<video>``)."""


def stem_of(path: str | os.PathLike) -> str:
    """``<dir>/<name>`` of a LoKr path: the path without a ``.safetensors`` suffix (any case);
    other paths (a PEFT folder) are their own stem."""
    p = os.fspath(path)
    return p[: -len(".safetensors")] if p.lower().endswith(".safetensors") else p


def folder_of(path: str | os.PathLike) -> str:
    """The real path (links followed) of the folder holding ``path``."""
    return os.path.realpath(os.path.dirname(os.path.abspath(os.fspath(path))))


def inside(candidate: str, folder: str) -> bool:
    """Whether ``candidate``'s real path (links followed) is ``folder`` or below it."""
    real = os.path.realpath(candidate)
    try:
        return os.path.commonpath([real, folder]) == folder
    except ValueError:  # different drives on Windows
        return False


def usable_file(candidate: str, folder: str, problems: list[str]) -> bool:
    """Whether ``candidate`` exists as a regular file inside ``folder``; a link out of the folder
    is recorded in ``problems``, a missing file is not."""
    if not os.path.lexists(candidate):
        return False
    if not inside(candidate, folder):
        problems.append(f"{os.path.basename(candidate)}: links outside the LoKr file's folder "
                        f"({os.path.realpath(candidate)}); not read")
        return False
    if not os.path.isfile(candidate):
        problems.append(f"{os.path.basename(candidate)}: not a regular file; not read")
        return False
    return True


def find_preview(path: str | os.PathLike, folder: str, problems: list[str]) -> str | None:
    """The first ``<stem><suffix>`` of :data:`PREVIEW_SUFFIXES` that is a usable file, else None."""
    stem = stem_of(path)
    for suffix in PREVIEW_SUFFIXES:
        candidate = stem + suffix
        if usable_file(candidate, folder, problems):
            return candidate
    return None


def read_json_object(candidate: str, folder: str, problems: list[str]) -> dict[str, Any] | None:
    """The JSON object in sidecar ``candidate``, or None when it is absent or unusable.

    Unusable (recorded in ``problems`` with the file's name): a link outside ``folder``, not a
    regular file, larger than :data:`MAX_SIDECAR_BYTES`, unreadable, not UTF-8, not JSON, nested
    too deep, or JSON that is not an object. A UTF-8 byte-order mark is accepted.
    """
    if not usable_file(candidate, folder, problems):
        return None
    name = os.path.basename(candidate)
    try:
        with open(candidate, "rb") as fh:
            raw = fh.read(MAX_SIDECAR_BYTES + 1)
    except OSError as exc:
        problems.append(f"{name}: cannot be read ({exc.strerror or exc}); skipped")
        return None
    if len(raw) > MAX_SIDECAR_BYTES:
        problems.append(f"{name}: larger than {MAX_SIDECAR_BYTES // (1024 * 1024)} MB; skipped")
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problems.append(f"{name}: not UTF-8 text (byte {exc.start}); skipped")
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        problems.append(f"{name}: not valid JSON ({str(exc)[:120]}); skipped")
        return None
    if not isinstance(data, dict):
        problems.append(f"{name}: holds a JSON {type(data).__name__}; expected an object; skipped")
        return None
    return data
