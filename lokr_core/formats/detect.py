"""What is this file? Decide the LoKr format from a path or from tensor keys.

- a directory holding ``adapter_model.safetensors`` (+ ``adapter_config.json``): PEFT;
- a directory holding such adapter folders named after pipeline parts (``unet/``, ``text_encoder/``,
  ``text_encoder_2/``, ``transformer/``): PEFT, one adapter per part (how PEFT's and diffusers'
  training scripts save a pipeline's adapters, and what ``save_lokr`` writes for several parts);
- a ``.safetensors`` file: PEFT when its keys are ``[component.]base_model.model.*`` (config taken
  from an ``adapter_config.json`` beside it when present), else LyCORIS / kohya;
- a PEFT config given by the caller means PEFT: then any module name that is not a LyCORIS / kohya
  name (``lora_unet_*``, ``lora_te*``, ``lycoris_*``) is a PEFT module path, with or without
  ``base_model.model.`` and a component prefix (``unet.``, ``text_encoder.``, ...);
- pickle files (``.ckpt .pt .pth .bin``): refused, they can run code when loaded; load them with
  ``torch.load(path, weights_only=True)`` and pass the state dict instead.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..base.errors import LoKrFormatError, where
from ..base.peft_names import CONFIG_NAME, PEFT_COMPONENTS, PEFT_PREFIX, WEIGHTS_NAME
from .keys import group_keys, module_kind

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


@dataclass(frozen=True)
class FileInfo:
    """Where to read: ``weights`` (the safetensors file), ``config`` (adapter_config.json or None),
    ``format`` ("lycoris" | "peft" | None when only the keys can tell); ``parts``: for a folder of
    per-part PEFT adapters, {part: its FileInfo} (``weights`` is then the folder)."""

    weights: Path
    config: Path | None
    format: str | None
    parts: dict[str, "FileInfo"] = field(default_factory=dict)


KOHYA_HEADS = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lycoris_")
"""How LyCORIS / kohya module names begin (they hold no dots)."""


def is_kohya_name(name: str) -> bool:
    """True for a LyCORIS / kohya module name (``lora_unet_down_blocks_0_...``), never for a dotted
    PEFT / diffusers module path."""
    return name.startswith(KOHYA_HEADS) and "." not in name


def format_of_keys(keys: Iterable[str], file: str | None = None, *, peft_config: bool = False) -> str:
    """``"peft"`` when the LoKr modules are named ``[component.]base_model.model.*``, else ``"lycoris"``.

    ``peft_config``: the caller gave a PEFT config, so the modules are PEFT modules whatever their
    prefix (bare diffusers paths, ``unet.`` paths): ``"peft"``, and a LyCORIS / kohya name is a
    LoKrFormatError naming it. Raises LoKrFormatError when LoKr modules of both naming styles are present.
    """
    groups = group_keys(list(keys))
    lokr = [m for m, p in groups.items() if module_kind(p) == "lokr"]
    if peft_config:
        kohya = [m for m in lokr if is_kohya_name(m)]
        if kohya:
            raise LoKrFormatError(f"{where(file, kohya[0])}is a LyCORIS/kohya name ({len(kohya)} such modules), but a "
                                  "PEFT config was given; expected PEFT module paths with a config, or no config "
                                  "for a LyCORIS file")
        return "peft"
    peft = [m for m in lokr if m.startswith(PEFT_PREFIX) or f".{PEFT_PREFIX}" in m]
    other = [m for m in lokr if m not in set(peft)]
    if peft and other:
        raise LoKrFormatError(f"{where(file, other[0])}file mixes PEFT names ({peft[0]!r}) and LyCORIS/kohya names; "
                              "expected one naming style per file")
    return "peft" if peft else "lycoris"


def locate(path: str | os.PathLike) -> FileInfo:
    """Find the weights file (and PEFT config) for ``path``; LoKrFormatError naming it when unusable."""
    p = Path(path)
    if p.is_dir():
        weights = p / WEIGHTS_NAME
        config = p / CONFIG_NAME
        parts = {c: locate(p / c) for c in PEFT_COMPONENTS if (p / c / WEIGHTS_NAME).is_file()}
        if not weights.is_file() and parts:
            return FileInfo(p, None, "peft", parts)
        if not weights.is_file():
            pickled = p / "adapter_model.bin"
            if pickled.is_file():
                raise LoKrFormatError(f"{where(str(pickled), None)}PEFT adapter saved as a pickle (.bin), which can run "
                                      "code when loaded; expected adapter_model.safetensors (load the .bin with "
                                      "torch.load(path, weights_only=True) and pass the state dict with config=)")
            raise LoKrFormatError(f"{where(str(p), None)}directory has no adapter_model.safetensors; expected a PEFT "
                                  f"adapter directory (or one with adapter folders named {', '.join(PEFT_COMPONENTS)})")
        return FileInfo(weights, config if config.is_file() else None, "peft")
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise LoKrFormatError(f"{where(str(p), None)}is a pickle file ({p.suffix}), which can run code when loaded; "
                              "expected .safetensors (or load it yourself with torch.load(path, weights_only=True) "
                              "and pass the state dict)")
    if not p.exists():
        raise LoKrFormatError(f"{where(str(p), None)}no such file; expected a .safetensors LoKr file or a PEFT "
                              "adapter directory")
    config = p.parent / CONFIG_NAME
    return FileInfo(p, config if config.is_file() else None, None)
