"""comfyui-lokr ComfyUI nodes: thin wrappers over lokr_core (see docs/comfyui.md).

Inside ComfyUI this package is ``<pack folder>.nodes`` and reaches the library as
``<pack folder>.lokr_core`` (relative, so the pack loads under any folder name); in tests and
scripts it is the top-level ``nodes`` package next to a top-level ``lokr_core``. :func:`core`
hides the difference. :func:`node_mappings` builds the ComfyUI registration tables on demand.
"""
from __future__ import annotations

import importlib
import logging
from types import ModuleType

__all__ = ["core", "node_mappings"]

_NODE_MODULES = ("loaders", "block_weights", "stack", "info", "merge", "extract")
"""Modules whose ``NODES`` table ({class id: (class, display name)}) is registered; missing ones are skipped."""


def core(module: str) -> ModuleType:
    """``lokr_core.<module>`` (a dotted path such as ``"tensor.kron"``): relative to the pack inside ComfyUI, absolute otherwise."""
    pkg = __package__ or __name__
    if "." in pkg:
        return importlib.import_module(f"..lokr_core.{module}", pkg)
    return importlib.import_module(f"lokr_core.{module}")


def node_mappings() -> tuple[dict[str, type], dict[str, str]]:
    """(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS) over every node module that imports.

    A module that is absent (e.g. ``extract`` before it lands) or fails to import is logged and
    skipped, so one broken node never keeps the others from loading.
    """
    classes: dict[str, type] = {}
    names: dict[str, str] = {}
    log = logging.getLogger("comfyui-lokr")
    for mod_name in _NODE_MODULES:
        try:
            mod = importlib.import_module(f".{mod_name}", __name__)
        except ModuleNotFoundError as e:
            if e.name and e.name.endswith(f"nodes.{mod_name}"):
                continue
            log.exception("comfyui-lokr: node module %s failed to import", mod_name)
            continue
        except Exception:
            log.exception("comfyui-lokr: node module %s failed to import", mod_name)
            continue
        table = getattr(mod, "NODES", None)
        if table is None and hasattr(mod, "NODE_CLASS_MAPPINGS"):
            classes.update(mod.NODE_CLASS_MAPPINGS)
            names.update(getattr(mod, "NODE_DISPLAY_NAME_MAPPINGS", {}))
            continue
        for class_id, (cls, display) in (table or {}).items():
            classes[class_id] = cls
            names[class_id] = display
    return classes, names
