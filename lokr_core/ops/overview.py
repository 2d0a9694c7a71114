"""What kind of adapter a file is and which model family it is for, from its safetensors header only.

:func:`shapes_overview` works on a file's ``{key: shape}`` (no tensor data): ``kind`` is ``"lokr"``
when any module holds ``lokr_*`` factors, ``"lora"`` when the modules are another adapter kind
ComfyUI's own loader reads (LoRA, LoHa, ...), else ``"unknown"``; ``family`` is lokr_core's family
verdict (:func:`lokr_core.keymap.family.family_signals`) from the adapter module names and the
weight shape each module gives. :func:`file_overview` reads the header of a ``.safetensors`` file
for it. Used by the web extension's file list (``/lokr/files``), where hundreds of files are listed.
"""
from __future__ import annotations

import os
from typing import Mapping

from ..formats.keys import group_keys, module_kind

ADAPTER_KINDS = ("lora", "loha", "ia3", "oft", "boft", "glora", "diff", "norm")
"""Non-LoKr module kinds a file may hold for it to count as ``"lora"`` (ComfyUI's loader reads them)."""


def module_dims(params: Mapping[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    """(out, in) of the weight one adapter module changes, from its parameter shapes; None when unknown.

    LoKr: (w1 rows x w2 rows, w1 cols x w2 cols), w1 / w2 full or split (``_a`` (rows, r), ``_b``
    (r, cols)); a Tucker module (``lokr_t2``) stores ``w2_a`` as (r, out_k), ``w2_b`` as (r, in_n). A conv
    whose W2 is split gives (out, in x kernel), as ``keymap.family.factor_dims`` does.
    LoRA: (``lora_up`` rows, ``lora_down`` cols) or PEFT's (``lora_B`` rows, ``lora_A`` cols).
    """
    def get(*names: str) -> tuple[int, ...] | None:
        for n in names:
            if n in params and len(params[n]) >= 2:
                return tuple(params[n])
        return None

    w1, w1a, w1b = get("lokr_w1"), get("lokr_w1_a"), get("lokr_w1_b")
    w2, w2a, w2b = get("lokr_w2"), get("lokr_w2_a"), get("lokr_w2_b")
    if w1 is None and w1a and w1b:
        w1 = (w1a[0], w1b[1])
    if w1 is not None:
        if w2 is not None:
            return (w1[0] * w2[0], w1[1] * w2[1])
        if w2a and w2b:
            tucker = "lokr_t2" in params
            return (w1[0] * (w2a[1] if tucker else w2a[0]), w1[1] * w2b[1])
        return None
    up, down = get("lora_up.weight", "lora_B.weight"), get("lora_down.weight", "lora_A.weight")
    if up and down:
        return (up[0], down[1])
    return None


def shapes_overview(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, str | None]:
    """``{"kind": "lokr" | "lora" | "unknown", "family": id or None, "family_label": text or None}``
    of a file's ``{key: shape}`` (see the module docstring)."""
    from ..keymap.family import FAMILY_LABELS, family_signals, pick_family

    groups = group_keys(list(shapes))
    kinds = {m: module_kind(p) for m, p in groups.items()}
    lokr = [m for m, k in kinds.items() if k == "lokr"]
    adapters = lokr or [m for m, k in kinds.items() if k in ADAPTER_KINDS]
    kind = "lokr" if lokr else ("lora" if adapters else "unknown")
    family = None
    if adapters:
        dims = {}
        for m in adapters:
            d = module_dims({p: shapes[k] for p, k in groups[m].items()})
            if d is not None:
                dims[m] = d
        try:
            family = pick_family(family_signals(adapters, dims))
        except Exception:  # a guess only: never fail a listing on it
            family = None
    return {"kind": kind, "family": family, "family_label": FAMILY_LABELS.get(family) if family else None}


def file_overview(path: str | os.PathLike) -> dict[str, str | None]:
    """:func:`shapes_overview` of a ``.safetensors`` file, read from its header only.

    Raises :class:`lokr_core.base.errors.LoKrFormatError` naming the file when it is not safetensors.
    """
    from pathlib import Path

    from ..formats.checkpoint import read_keys_shapes

    return shapes_overview(read_keys_shapes(Path(path))[0])
