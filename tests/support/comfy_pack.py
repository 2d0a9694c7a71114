"""The node pack loaded the one way ComfyUI loads a custom-node folder.

ComfyUI (``nodes.load_custom_node``, 0.3.64 to 0.28.0) imports ``custom_nodes/<folder>/__init__.py``
with ``importlib.util.spec_from_file_location(name, <folder>/__init__.py)`` under the module name
``name = <folder path>.replace(".", "_x_")``, registers it in ``sys.modules`` and executes it. The
pack's ``nodes`` and ``lokr_core`` are then ``<name>.nodes`` / ``<name>.lokr_core``: a module tree
apart from a top-level ``lokr_core``, so tests take error classes and helpers from the pack
(``load_pack().lokr_core.base.errors``) when they check what the nodes raise.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def comfy_module_name(folder: str | Path) -> str:
    """The ``sys.modules`` name ComfyUI gives the custom-node folder ``folder``."""
    return str(folder).replace(".", "_x_")


PACK_NAME = comfy_module_name(ROOT)
"""This repository's name as a loaded pack."""


def load_pack(folder: str | Path = ROOT, name: str | None = None) -> ModuleType:
    """Import ``folder`` (default: this repository) as ComfyUI does; once per process and name.

    ``name``: the module name, ComfyUI's (:func:`comfy_module_name`) by default; another name gives
    a second, separate copy of the pack (the real-ComfyUI tests use one of their own).
    """
    name = name or comfy_module_name(folder)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, str(Path(folder) / "__init__.py"))
    pack = importlib.util.module_from_spec(spec)
    sys.modules[name] = pack
    try:
        spec.loader.exec_module(pack)
    except BaseException:
        del sys.modules[name]
        raise
    return pack


def pack_module(dotted: str, folder: str | Path = ROOT, name: str | None = None) -> ModuleType:
    """The pack's module ``dotted`` (e.g. ``"nodes.loaders"``, ``"lokr_core.base.errors"``), the pack loaded first."""
    pack = load_pack(folder, name)
    return importlib.import_module(f"{pack.__name__}.{dotted}")
