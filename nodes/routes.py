"""HTTP routes for the comfyui-lokr web extension.

Six GET routes, registered on ComfyUI's ``PromptServer.instance.routes`` by :func:`register`:

- ``/lokr/info?file=<name>``: JSON summary of one LoKr file of the ``loras`` folder
  (``lokr_core.ops.report.summarize``: family guess, modules per block, layouts, ranks, scale rule and
  scales, training metadata, trigger words).
- ``/lokr/report?file=<name>&family=<id>``: the file against a model family (any id lokr_core
  names: sd1, sd2, sdxl, flux, sd3, zimage, wan, ...). SD families: the match against that family's
  full key list; transformer families (no full-size key list here): the file's family against the
  asked one (``family_mismatch``), ``key_list: false``; the exact match needs the model (LoKr Info).
- ``/lokr/presets``: the block-weight presets (``lokr_core.keymap.block_weights``).
- ``/lokr/files``: every file of the ``loras`` list with its kind (lokr / lora / unknown), family
  and whether it has a preview image; the sub folders (header reads only; :mod:`.file_routes`).
- ``/lokr/sidecar?file=<name>``: what the files beside it and its header say (trigger words, base
  model, title, source link, ...), the preview as a ``/lokr/preview`` URL (:mod:`.file_routes`).
- ``/lokr/preview?file=<name>``: the preview image beside the file (png / jpg / jpeg / webp / gif).

Security (:mod:`.route_checks`): only names that ``folder_paths.get_filename_list("loras")`` lists
are served, only ``.safetensors`` files are opened, and the resolved real path (symlinks followed)
must lie inside one of the ``loras`` roots. Every refusal is a 4xx JSON ``{"error": message}``; no
response carries bytes of a LoKr file (``/lokr/preview`` sends only a checked image beside one),
and error texts name the requested file, never its server path.

The handlers are plain closures over a ``folder_paths``-like object and a :class:`Backend`
(the lokr_core functions they call), so tests drive them with aiohttp's test client and stand-ins,
without ComfyUI.
"""
from __future__ import annotations

import asyncio
import importlib
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..lokr_core.base.errors import LoKrError
from ..lokr_core.base.jsonable import jsonable
from ..lokr_core.formats.io import load_lokr
from ..lokr_core.keymap.block_weights import PRESETS
from ..lokr_core.keymap.family import (FAMILY_LABELS, SD_FAMILIES, families_conflict, family_signals,
                                       pick_family)
from ..lokr_core.ops.report import family_report, summarize
from .file_routes import OverviewCache, files_payload, preview_bytes, sidecar_payload
from .route_checks import FOLDER, MAX_NAME_CHARS, RouteError, _shown, inside, lora_path  # noqa: F401 (re-exported)

FAMILIES = tuple(k for k in FAMILY_LABELS if "/" not in k)
"""Model families ``/lokr/report`` accepts: every single family id lokr_core names (SD and DiT)."""


# ---------------------------------------------------------------------------------------------
# what the routes compute


@dataclass(frozen=True)
class Backend:
    """The lokr_core functions the routes call; tests may pass stand-ins.

    ``load(path) -> weights``; ``summarize(weights) -> dict``; ``report(weights, family) -> dict``;
    ``presets() -> dict``. ``None`` means lokr_core's own (``load_lokr``, ``summarize``,
    :func:`any_family_report`, the block-weight ``PRESETS``).
    """

    load: Callable[[str], Any] | None = None
    summarize: Callable[[Any], Mapping[str, Any]] | None = None
    report: Callable[[Any, str], Mapping[str, Any]] | None = None
    presets: Callable[[], Mapping[str, Any]] | None = None

    def get(self, what: str) -> Callable[..., Any]:
        """The callable for ``what`` (load / summarize / report / presets)."""
        fn = getattr(self, what)
        return fn if fn is not None else _DEFAULTS[what]


def _presets() -> Mapping[str, Any]:
    return dict(PRESETS)


def any_family_report(weights: Any, family: str) -> Mapping[str, Any]:
    """``family_report`` for an SD family; for a transformer family (no full-size key list) the file's
    family verdict against ``family``: {family, family_label, family_mismatch, total, key_list: False}."""
    if family in SD_FAMILIES:
        return dict(family_report(weights, family), key_list=True)
    names = list(getattr(weights, "module_names", None) or list(weights.modules))
    shapes = getattr(weights, "shapes", None)
    fam = pick_family(family_signals(names, {n: shapes(n) for n in names} if callable(shapes) else None))
    mismatch = (f"this file is for {FAMILY_LABELS[fam]}, the model is {FAMILY_LABELS[family]}"
                if families_conflict(fam, family) else None)
    return {"family": fam, "family_label": FAMILY_LABELS.get(fam) if fam else None, "family_mismatch": mismatch,
            "total": len(names), "key_list": False}


_DEFAULTS: Mapping[str, Callable[..., Any]] = {
    "load": load_lokr, "summarize": summarize, "report": any_family_report, "presets": _presets,
}


def _load_lokr(path: str, name: str, backend: Backend) -> Any:
    """Load the file with the backend's loader; 422 when it is not a LoKr file (message: no content)."""
    load = backend.get("load")
    try:
        weights = load(path)
    except LoKrError as exc:
        text = str(exc).replace(path, name)
        if len(text) > 400:
            text = text[:397] + "..."
        raise RouteError(422, f"file {_shown(name)}: not a usable LoKr file: {text}") from None
    except Exception as exc:  # safetensors / OS errors: give the class only, never the text
        raise RouteError(422, f"file {_shown(name)}: not a readable safetensors file "
                              f"({type(exc).__name__})") from None
    if not getattr(weights, "modules", None):
        kinds = sorted(set(getattr(weights, "other_modules", {}).values()))
        found = f" (it holds {', '.join(kinds)} modules)" if kinds else ""
        raise RouteError(422, f"file {_shown(name)}: holds no LoKr modules{found}")
    return weights


def info_payload(name: str | None, folder_paths: Any, backend: Backend) -> dict:
    """JSON-able summary of the LoKr file ``name`` of the loras folder (``{"file": name, ...summary}``)."""
    path = lora_path(name, folder_paths)
    weights = _load_lokr(path, name, backend)
    summary = dict(backend.get("summarize")(weights))
    summary.pop("path", None)  # the server-side path is nobody's business
    summary["file"] = name
    return jsonable(summary)


def report_payload(name: str | None, family: str | None, folder_paths: Any, backend: Backend) -> dict:
    """JSON-able match report of file ``name`` against ``family`` (one of :data:`FAMILIES`)."""
    if family not in FAMILIES:
        raise RouteError(400, f"query parameter 'family' is {family!r}; expected one of {', '.join(FAMILIES)}")
    path = lora_path(name, folder_paths)
    weights = _load_lokr(path, name, backend)
    try:
        report = dict(backend.get("report")(weights, family))
    except ImportError as exc:  # the family key lists are built with diffusers / transformers
        raise RouteError(501, f"the match report needs diffusers and transformers here ({exc})") from None
    report.pop("path", None)
    report["file"], report["target_family"] = name, family
    report["target_family_label"] = FAMILY_LABELS[family]
    return jsonable(report)


def presets_payload(backend: Backend) -> dict:
    """JSON-able block-weight presets: ``{"presets": {name: vector string}}``."""
    return jsonable({"presets": dict(backend.get("presets")())})


class SummaryCache:
    """The last ``size`` /lokr/info answers, keyed by (name, real path, mtime, size); thread-safe.

    The path checks run on every request; only the file reading and summary are saved.
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._items: OrderedDict[tuple, dict] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str | None, folder_paths: Any, backend: Backend) -> dict:
        path = lora_path(name, folder_paths)
        st = os.stat(path)
        key = (name, path, st.st_mtime_ns, st.st_size)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        body = info_payload(name, folder_paths, backend)
        with self._lock:
            self._items[key] = body
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return body


# ---------------------------------------------------------------------------------------------
# aiohttp glue


def make_handlers(folder_paths: Any, backend: Backend | None = None) -> dict[str, Callable[..., Any]]:
    """aiohttp handlers ``{route path: async handler}`` over ``folder_paths`` and ``backend``.

    File work runs in the default executor, so the ComfyUI server loop is not blocked.
    """
    from aiohttp import web

    backend = backend or Backend()
    dumps = lambda obj: json.dumps(obj, allow_nan=False)  # noqa: E731
    info_cache = SummaryCache()
    overviews = OverviewCache()

    async def respond(fn: Callable[[], dict]) -> web.Response:
        try:
            body = await asyncio.get_running_loop().run_in_executor(None, fn)
        except RouteError as exc:
            return web.json_response({"error": exc.message}, status=exc.status, dumps=dumps)
        return web.json_response(body, dumps=dumps, headers={"Cache-Control": "no-store"})

    async def info(request: web.Request) -> web.Response:
        name = request.query.get("file")
        return await respond(lambda: info_cache.get(name, folder_paths, backend))

    async def report(request: web.Request) -> web.Response:
        name, family = request.query.get("file"), request.query.get("family")
        return await respond(lambda: report_payload(name, family, folder_paths, backend))

    async def presets(request: web.Request) -> web.Response:
        return await respond(lambda: presets_payload(backend))

    async def files(request: web.Request) -> web.Response:
        return await respond(lambda: files_payload(folder_paths, overviews))

    async def sidecar(request: web.Request) -> web.Response:
        name = request.query.get("file")
        return await respond(lambda: sidecar_payload(name, folder_paths, overviews))

    async def preview(request: web.Request) -> web.Response:
        name = request.query.get("file")
        try:
            data, ctype = await asyncio.get_running_loop().run_in_executor(None, preview_bytes, name, folder_paths)
        except RouteError as exc:
            return web.json_response({"error": exc.message}, status=exc.status, dumps=dumps)
        return web.Response(body=data, content_type=ctype, headers={
            "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'"})

    return {"/lokr/info": info, "/lokr/report": report, "/lokr/presets": presets, "/lokr/files": files,
            "/lokr/sidecar": sidecar, "/lokr/preview": preview}


def add_routes(routes: Any, folder_paths: Any, backend: Backend | None = None) -> list[str]:
    """Add the GET routes to an aiohttp ``RouteTableDef`` or ``UrlDispatcher``; return their paths."""
    handlers = make_handlers(folder_paths, backend)
    for path, handler in handlers.items():
        if hasattr(routes, "add_get"):
            routes.add_get(path, handler)
        else:
            routes.get(path)(handler)
    return list(handlers)


def register(server: Any = None, folder_paths: Any = None) -> bool:
    """Register the routes on ComfyUI's PromptServer; False (nothing done) outside ComfyUI.

    Call once from the pack's ``__init__.py`` (``routes.register()`` inside ``try``).
    """
    try:
        if server is None:
            from server import PromptServer  # ComfyUI's module

            server = PromptServer.instance
        if folder_paths is None:
            folder_paths = importlib.import_module("folder_paths")
    except (ImportError, AttributeError):
        return False
    if server is None or not hasattr(server, "routes"):
        return False
    add_routes(server.routes, folder_paths)
    return True
