"""What is this file? Decide the LoKr format from a path or from tensor keys.

- a directory holding ``adapter_model.safetensors`` (+ ``adapter_config.json``): PEFT;
- a ``.safetensors`` file: PEFT when its keys are ``[component.]base_model.model.*`` (config taken
  from an ``adapter_config.json`` beside it when present), else LyCORIS / kohya;
- pickle files (``.ckpt .pt .pth .bin``): refused, they can run code when loaded; load them with
  ``torch.load(path, weights_only=True)`` and pass the state dict instead.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..base.errors import LoKrFormatError, where
from ..base.peft_names import PEFT_PREFIX, WEIGHTS_NAME
from .keys import group_keys, module_kind

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


@dataclass(frozen=True)
class FileInfo:
    """Where to read: ``weights`` (the safetensors file), ``config`` (adapter_config.json or None),
    ``format`` ("lycoris" | "peft" | None when only the keys can tell)."""

    weights: Path
    config: Path | None
    format: str | None


def format_of_keys(keys: Iterable[str], file: str | None = None) -> str:
    """``"peft"`` when the LoKr modules are named ``[component.]base_model.model.*``, else ``"lycoris"``.

    Raises LoKrFormatError when LoKr modules of both naming styles are present.
    """
    groups = group_keys(list(keys))
    peft = [m for m, p in groups.items() if module_kind(p) == "lokr" and (m.startswith(PEFT_PREFIX) or f".{PEFT_PREFIX}" in m)]
    other = [m for m, p in groups.items() if module_kind(p) == "lokr" and m not in set(peft)]
    if peft and other:
        raise LoKrFormatError(f"{where(file, other[0])}file mixes PEFT names ({peft[0]!r}) and LyCORIS/kohya names; "
                              "expected one naming style per file")
    return "peft" if peft else "lycoris"


def locate(path: str | os.PathLike) -> FileInfo:
    """Find the weights file (and PEFT config) for ``path``; LoKrFormatError naming it when unusable."""
    p = Path(path)
    if p.is_dir():
        weights = p / WEIGHTS_NAME
        config = p / "adapter_config.json"
        if not weights.is_file():
            pickled = p / "adapter_model.bin"
            if pickled.is_file():
                raise LoKrFormatError(f"{where(str(pickled), None)}PEFT adapter saved as a pickle (.bin), which can run "
                                      "code when loaded; expected adapter_model.safetensors (load the .bin with "
                                      "torch.load(path, weights_only=True) and pass the state dict with config=)")
            raise LoKrFormatError(f"{where(str(p), None)}directory has no adapter_model.safetensors; expected a PEFT "
                                  "adapter directory")
        return FileInfo(weights, config if config.is_file() else None, "peft")
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise LoKrFormatError(f"{where(str(p), None)}is a pickle file ({p.suffix}), which can run code when loaded; "
                              "expected .safetensors (or load it yourself with torch.load(path, weights_only=True) "
                              "and pass the state dict)")
    if not p.exists():
        raise LoKrFormatError(f"{where(str(p), None)}no such file; expected a .safetensors LoKr file or a PEFT "
                              "adapter directory")
    config = p.parent / "adapter_config.json"
    return FileInfo(p, config if config.is_file() else None, None)
