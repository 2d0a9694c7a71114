"""lokr_core: LoKr (low-rank Kronecker product adapters) for Stable Diffusion and transformer (DiT)
image / video models in pure PyTorch.

The package is built in layers, each importing only from the ones below it (docs/architecture.md):
``base`` (errors, files, dtypes, devices) < ``tensor`` (the math) < ``tuner`` (PEFT-style layers)
< ``keymap`` (names and resolving) < ``formats`` (files) < ``ops`` (apply, merge, extract,
report) < ``commands`` (the ``lokr`` command line). This module is the public surface above them:
the names below are imported lazily on first use, so ``import lokr_core`` does no work.
"""
from __future__ import annotations

import importlib
from typing import Any

from .base.version import __version__

_EXPORTS = {
    "LoKrError": "base.errors", "LoKrConfigError": "base.errors", "LoKrFormatError": "base.errors",
    "LoKrShapeError": "base.errors", "LoKrKeyError": "base.errors", "LoKrWriteError": "base.errors",
    "factorization": "tensor.factorization",
    "LoKrFactors": "tensor.factors",
    "plan_factors": "tensor.shapes", "FactorPlan": "tensor.shapes",
    "LoKrConfig": "tuner.config",
    "find_targets": "tuner.targeting", "Target": "tuner.targeting",
    "inject": "tuner.model", "merge_and_unload": "tuner.model", "unload": "tuner.model",
    "set_adapter_scale": "tuner.model", "lokr_state_dict": "tuner.model", "load_lokr_state_dict": "tuner.model",
    "set_adapter": "tuner.model", "save_peft_adapter": "tuner.model", "enable_adapters": "tuner.model",
    "LoKrLayer": "tuner.layers", "wrap_layer": "tuner.layers",
    "model_family": "keymap.resolve", "ResolveReport": "keymap.resolve", "resolve": "keymap.resolve",
    "target_family": "keymap.resolve", "target_dit_family": "keymap.family", "block_id": "keymap.blocks",
    "parse_block_weights": "keymap.block_weights", "block_multiplier": "keymap.block_weights",
    "DIT_PRESETS": "keymap.block_weights",
    "LoKrWeights": "formats.weights",
    "load_lokr": "formats.io", "save_lokr": "formats.io",
    "apply_lokr": "ops.apply", "ApplyResult": "ops.apply",
    "merge_checkpoint": "ops.merge", "merge_into_state_dict": "ops.merge", "MergeResult": "ops.merge",
    "extract_lokr": "ops.extract", "resize_lokr": "ops.extract",
    "summarize": "ops.report", "format_report": "ops.report", "dit_block_of": "ops.report",
}
"""Public name -> the module (relative to this package) that defines it."""

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lokr_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
