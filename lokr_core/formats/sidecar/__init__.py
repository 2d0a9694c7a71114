"""Sidecar metadata of a LoKr file, read from disk only: previews, trigger words, base model, links.

Other tools write what they know about ``<dir>/<name>.safetensors`` into files beside it
(sd-webui, Civitai Helper, ComfyUI-Lora-Manager, rgthree-comfy); the file's own safetensors header
holds kohya / modelspec metadata. :func:`read_sidecar` reads them all and returns one frozen
:class:`SidecarInfo`; nothing here raises on a bad sidecar (it is skipped and named in
``problems``), and nothing touches the network. What is read, in which order, and the caps:
docs/sidecar.md.

Modules: :mod:`.info` (the record), :mod:`.files` (which files, size cap, links, JSON decoding),
:mod:`.words` (trigger words, tag frequencies), :mod:`.parsers` (one function per tool's format),
:mod:`.read` (the entry point that merges them in priority order).
"""
from __future__ import annotations

from .info import SidecarInfo
from .read import read_sidecar

__all__ = ["SidecarInfo", "read_sidecar"]
