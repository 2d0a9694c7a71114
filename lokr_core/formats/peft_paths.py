"""PEFT module paths for a LyCORIS / kohya file's modules, found in the model the file adapts.

PEFT names a module by its dotted path inside the model an adapter wraps (``down_blocks.0...to_q``);
kohya names (``lora_unet_down_blocks_0_..._to_q``) have lost the dots, so the paths come from
resolving the file against a target (:func:`lokr_core.keymap.resolve.resolve_for`). One rule for
every caller (``save_lokr(format="peft", model=...)`` and ``lokr convert --to peft``):

- a ``{component: nn.Module}`` target (``{"unet": unet, "text_encoder": te}``, the forms
  ``apply_lokr`` takes) or a pipeline's state dict (``unet.*`` / ``text_encoder.*`` keys) gives
  paths prefixed with their component (``unet.down_blocks...``, ``text_encoder.text_model...``;
  the keys ``te1`` / ``te2`` become ``text_encoder`` / ``text_encoder_2``); ``save_lokr`` writes one
  PEFT adapter per component from them;
- a file that adapts only the UNet gets plain UNet paths (one adapter, what
  ``PeftModel.from_pretrained(unet, folder)`` loads); a single ``nn.Module`` target gives plain paths.

See docs/formats.md.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..base.errors import LoKrKeyError, where
from ..keymap.resolve import resolve_for

COMPONENT_NAMES = {"te1": "text_encoder", "te2": "text_encoder_2"}
"""Keys of a target dict that PEFT / diffusers spell otherwise (``apply_lokr`` accepts both)."""

NAME_MAP_HINT = "expected name_map entries for them, or the model this LoKr was made for"


def _weight_shape(target: Any, path: str) -> tuple[int, ...] | None:
    """The shape of ``path``'s weight in ``target`` (an nn.Module, a dict of them, a state dict /
    {key: shape}); None when it has none."""
    if isinstance(target, torch.nn.Module) or (isinstance(target, Mapping) and target
                                               and all(isinstance(m, torch.nn.Module) for m in target.values())):
        if isinstance(target, torch.nn.Module):
            comp, rest = target, path
        else:
            head, _, rest = path.partition(".")
            comp = target.get(head)
        try:
            w = getattr(comp.get_submodule(rest), "weight", None) if comp is not None else None
        except AttributeError:
            return None
        return tuple(w.shape) if isinstance(w, torch.Tensor) else None
    value = target.get(path + ".weight") if isinstance(target, Mapping) else None
    if value is None:
        return None
    return tuple(int(d) for d in (value.shape if isinstance(value, torch.Tensor) else value))


def _component_path(path: str) -> str:
    head, dot, rest = path.partition(".")
    return COMPONENT_NAMES.get(head, head) + dot + rest


def peft_module_paths(weights: Any, target: Any, *, name_map: Mapping[str, str] | None = None,
                      shapes: Mapping[str, tuple[int, ...]] | None = None, what: str = "the given model",
                      hint: str = NAME_MAP_HINT) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """({file module: dotted module path}, {file module: base weight shape}) for a PEFT export.

    ``target``: an nn.Module, a ``{component: nn.Module}`` dict or a state dict / ``{key: shape}``
    (see the module docstring for the paths each gives). ``name_map`` entries are kept as given
    and not resolved; ``shapes`` entries win over the target's. ``what`` / ``hint`` word the error:
    LoKrKeyError naming the first module that does not resolve to one whole module as it is: no match,
    rows of a fused weight (``report.rows``), a fused module split over several (``report.split``) or
    a modulation with its halves swapped (``report.row_order``): a PEFT adapter adds its ΔW to one
    whole module, so it could not place any of those.
    """
    paths = dict(name_map or {})
    todo = [n for n in weights.module_names if n not in paths]
    if todo:
        report = resolve_for(weights, target)
        moved = set(report.rows) | set(report.row_order) | set(report.split)
        missing = [n for n in todo if n not in report.matched or n in moved]
        if missing:
            raise LoKrKeyError(f"{where(weights.source, missing[0])}does not resolve to a module of {what} "
                               f"({len(missing)} such modules, first: {missing[:3]}); {hint}")
        for n in todo:
            key = report.matched[n]
            paths[n] = key[: -len(".weight")] if key.endswith(".weight") else key
    found = {n: s for n, s in ((n, _weight_shape(target, p)) for n, p in paths.items()) if s is not None}
    found.update(shapes or {})
    if isinstance(target, torch.nn.Module):  # PEFT wraps this one model: paths relative to it
        return paths, found
    paths = {n: _component_path(p) for n, p in paths.items()}
    if paths and all(p.startswith("unet.") for p in paths.values()):
        paths = {n: p[len("unet."):] for n, p in paths.items()}
    return paths, found
