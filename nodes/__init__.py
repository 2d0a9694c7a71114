"""comfyui-lokr ComfyUI nodes: thin wrappers over lokr_core (see docs/comfyui.md).

This package is ``<pack>.nodes`` (the pack: the folder ComfyUI loads from ``custom_nodes/``) and
imports the library relatively, as ``<pack>.lokr_core``, so it loads under any folder name; it is
not importable as a top-level ``nodes`` (ComfyUI's own ``nodes.py`` has that name).

Modules: ``common`` (category, widgets, tooltips, files, input checks), ``planning`` (file ->
checked patch plan -> patched clones), ``keys`` (ComfyUI key maps), ``patch`` (the LoKr weight
adapter), ``bypass`` (forward-pass mode), ``progress`` (ComfyUI's progress bar), ``routes`` (the
web panel's HTTP routes), and one module per node family, each with a ``NODES`` table
({class id: (class, display name)}): ``loaders``, ``block_weights``, ``stack``, ``info``,
``merge``, ``extract``, ``power_loader`` (its ``rows`` value: ``rows``), ``prompt_loader``
(LoKr from Prompt), ``hook`` (LoKr Hook).
"""
from __future__ import annotations

from . import block_weights, extract, hook, info, loaders, merge, power_loader, prompt_loader, stack

__all__ = ["node_mappings"]

_NODE_MODULES = (loaders, block_weights, stack, power_loader, prompt_loader, hook, info, merge, extract)


def node_mappings() -> tuple[dict[str, type], dict[str, str]]:
    """(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS) over every node module's ``NODES`` table."""
    classes: dict[str, type] = {}
    names: dict[str, str] = {}
    for mod in _NODE_MODULES:
        for class_id, (cls, display) in mod.NODES.items():
            classes[class_id] = cls
            names[class_id] = display
    return classes, names
