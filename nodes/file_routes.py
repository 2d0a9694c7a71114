"""What the file routes answer: the ``loras`` file list, a file's sidecar metadata, its preview image.

- :func:`files_payload` (``/lokr/files``): every listed file with its adapter kind and model family
  (:func:`lokr_core.ops.overview.file_overview`, header only, kept per file until its fingerprint
  changes: :class:`OverviewCache`) and whether it has a preview image; the sub folders.
- :func:`sidecar_payload` (``/lokr/sidecar``): ``read_sidecar(...).as_dict()`` without server paths:
  ``preview`` becomes the ``/lokr/preview`` URL of the file (or None), ``problems`` name files, never
  their folders; plus ``file``, ``kind``, ``family``, ``family_label``.
- :func:`preview_bytes` (``/lokr/preview``): the bytes and content type of the preview image
  ``read_sidecar`` found beside a listed file: png / jpg / jpeg / webp / gif only (the bytes must
  start as that type does), inside a ``loras`` root, at most :data:`MAX_PREVIEW_BYTES`.

Everything is read from disk; nothing is fetched. Path checks: :mod:`.route_checks`.
"""
from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

from ..lokr_core.base.errors import LoKrError
from ..lokr_core.base.fingerprint import file_fingerprint
from ..lokr_core.base.jsonable import jsonable
from ..lokr_core.formats.sidecar import read_sidecar
from ..lokr_core.formats.sidecar.files import find_preview, folder_of
from ..lokr_core.ops.overview import file_overview
from .route_checks import FOLDER, RouteError, _shown, checked_paths, inside, listed_names, roots_of

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".gif": "image/gif"}
"""Preview suffixes served, and their Content-Type."""

MAX_PREVIEW_BYTES = 16 * 1024 * 1024
"""Largest preview image served, in bytes (16 MiB); a larger one is refused (413)."""

UNKNOWN = {"kind": "unknown", "family": None, "family_label": None}


def _magic_ok(head: bytes, suffix: str) -> bool:
    """Whether the first bytes of a file are those of an image of type ``suffix``."""
    if suffix == ".png":
        return head.startswith(b"\x89PNG\r\n\x1a\n")
    if suffix in (".jpg", ".jpeg"):
        return head.startswith(b"\xff\xd8\xff")
    if suffix == ".gif":
        return head.startswith((b"GIF87a", b"GIF89a"))
    if suffix == ".webp":
        return head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    return False


def preview_path(name: str, preview: str | None, folder_paths: Any) -> tuple[str, str]:
    """(real path, content type) of ``preview``, the preview ``read_sidecar`` found for listed file
    ``name``; RouteError: 404 none, 415 not one of :data:`IMAGE_TYPES` (or bytes that are not that
    image type), 403 outside the ``loras`` roots, 413 over :data:`MAX_PREVIEW_BYTES`."""
    if not preview:
        raise RouteError(404, f"file {_shown(name)}: has no preview image beside it")
    suffix = os.path.splitext(preview)[1].lower()
    if suffix not in IMAGE_TYPES:
        raise RouteError(415, f"file {_shown(name)}: its preview is a {suffix or 'typeless'} file; "
                              f"expected one of {', '.join(IMAGE_TYPES)}")
    real = os.path.realpath(preview)
    if not any(inside(real, root) for root in roots_of(folder_paths)):
        raise RouteError(403, f"file {_shown(name)}: its preview resolves outside the '{FOLDER}' folders")
    try:
        size = os.path.getsize(real)
        with open(real, "rb") as fh:
            head = fh.read(12)
    except OSError:
        raise RouteError(404, f"file {_shown(name)}: its preview cannot be read") from None
    if size > MAX_PREVIEW_BYTES:
        raise RouteError(413, f"file {_shown(name)}: its preview is {size} bytes; at most "
                              f"{MAX_PREVIEW_BYTES} are served")
    if not _magic_ok(head, suffix):
        raise RouteError(415, f"file {_shown(name)}: its preview is not a {suffix[1:]} image")
    return real, IMAGE_TYPES[suffix]


def preview_bytes(name: str | None, folder_paths: Any) -> tuple[bytes, str]:
    """(bytes, content type) of the preview image of listed file ``name`` (see :func:`preview_path`)."""
    full, _ = checked_paths(name, folder_paths)
    real, ctype = preview_path(name, read_sidecar(full).preview, folder_paths)
    try:
        with open(real, "rb") as fh:
            data = fh.read(MAX_PREVIEW_BYTES + 1)
    except OSError:
        raise RouteError(404, f"file {_shown(name)}: its preview cannot be read") from None
    if len(data) > MAX_PREVIEW_BYTES:  # grew since the check
        raise RouteError(413, f"file {_shown(name)}: its preview is over {MAX_PREVIEW_BYTES} bytes")
    return data, ctype


def preview_url(name: str) -> str:
    """The ``/lokr/preview`` address of listed file ``name``."""
    return "/lokr/preview?file=" + quote(name, safe="")


_ABS_PATH = re.compile(r"(?<![\w.])(?:/|[A-Za-z]:[\\/])[^\s()'\",;]*")


def scrub_paths(text: str, name: str, full: str, real: str) -> str:
    """``text`` with the server paths of file ``name`` replaced by its name and any other absolute
    path by ``<path>`` (sidecar problems name the real path a link points to)."""
    for path in sorted({full, real}, key=len, reverse=True):
        text = text.replace(path, name)
    return _ABS_PATH.sub("<path>", text)


class OverviewCache:
    """:func:`file_overview` per real path, kept until the file's fingerprint changes; thread-safe.

    Holds at most ``size`` files (the least recently asked go first).
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[str, dict]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, real: str) -> dict:
        """{kind, family, family_label} of the ``.safetensors`` file at ``real``; unknown when unreadable."""
        try:
            token = file_fingerprint(real)
        except OSError:
            return dict(UNKNOWN)
        with self._lock:
            hit = self._items.get(real)
            if hit is not None and hit[0] == token:
                self._items.move_to_end(real)
                return dict(hit[1])
        try:
            found = dict(file_overview(real))
        except LoKrError:
            found = dict(UNKNOWN)
        with self._lock:
            self._items[real] = (token, found)
            self._items.move_to_end(real)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return dict(found)


def _has_preview_image(name: str, full: str, folder_paths: Any) -> bool:
    """Whether ``/lokr/preview`` serves an image beside ``full`` (the ``<name>.preview.png`` ... files;
    Lora-Manager's ``preview_url`` is looked at only by ``/lokr/sidecar``)."""
    try:
        preview_path(name, find_preview(full, folder_of(full), []), folder_paths)
    except RouteError:
        return False
    return True


def files_payload(folder_paths: Any, cache: OverviewCache) -> dict:
    """``{"files": [{name, kind, family, family_label, has_preview}], "folders": [sub folders]}`` of
    the ``loras`` folder list. A file that fails the path checks (a link out of the roots) is listed
    as ``kind: "unknown"`` and never opened; only ``.safetensors`` headers are read. ``has_preview``:
    the preview image ``/lokr/preview`` would serve (type, bytes and size checked)."""
    names = listed_names(folder_paths)
    known = set(names)
    files, folders = [], set()
    for name in names:
        entry = {"name": name, **UNKNOWN, "has_preview": False}
        parts = name.replace("\\", "/").split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        try:
            full, real = checked_paths(name, folder_paths, suffixes=None, listed=known)
        except RouteError:
            files.append(entry)
            continue
        if name.lower().endswith(".safetensors"):
            entry.update(cache.get(real))
            entry["has_preview"] = _has_preview_image(name, full, folder_paths)
        files.append(entry)
    return jsonable({"files": files, "folders": sorted(folders)})


def sidecar_payload(name: str | None, folder_paths: Any, cache: OverviewCache) -> dict:
    """The sidecar metadata of listed ``.safetensors`` file ``name`` as JSON (see the module docstring)."""
    full, real = checked_paths(name, folder_paths)
    info = read_sidecar(full)
    out = info.as_dict()
    try:
        preview_path(name, info.preview, folder_paths)
        out["preview"] = preview_url(name)
    except RouteError:
        out["preview"] = None
    out["problems"] = [scrub_paths(p, name, full, real) for p in out["problems"]]
    out.update(cache.get(real), file=name)
    return jsonable(out)
