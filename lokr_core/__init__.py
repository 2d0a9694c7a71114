"""lokr_core: LoKr (low-rank Kronecker product adapters) for Stable Diffusion in pure PyTorch.

The public names below are imported lazily on first use, so ``import lokr_core`` does no work.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "LoKrError": "errors", "LoKrConfigError": "errors", "LoKrFormatError": "errors",
    "LoKrShapeError": "errors", "LoKrKeyError": "errors",
    "factorization": "factorization",
    "LoKrFactors": "factors",
    "LoKrConfig": "config",
    "plan_factors": "shapes", "FactorPlan": "shapes",
    "find_targets": "targeting", "Target": "targeting",
    "model_family": "resolve",
    "parse_block_weights": "block_weights", "block_multiplier": "block_weights",
    "summarize": "report", "format_report": "report",
    "inject": "model", "merge_and_unload": "model", "unload": "model", "set_adapter_scale": "model",
    "lokr_state_dict": "model", "load_lokr_state_dict": "model", "set_adapter": "model",
    "save_peft_adapter": "model", "enable_adapters": "model",
    "LoKrLayer": "layers", "wrap_layer": "layers",
    "LoKrWeights": "adapter",
    "load_lokr": "io", "save_lokr": "io",
    "ResolveReport": "resolve", "resolve": "resolve",
    "apply_lokr": "apply",
    "merge_checkpoint": "merge", "merge_into_state_dict": "merge", "MergeResult": "merge",
    "ApplyResult": "apply",
    "extract_lokr": "extract", "resize_lokr": "extract",
}

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
