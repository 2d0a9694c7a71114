"""LyCORIS / kohya LoKr safetensors: read into LoKrWeights, write from LoKrWeights.

Keys are ``<module>.<param>`` with params ``lokr_w1 | lokr_w1_a | lokr_w1_b | lokr_w2 | lokr_w2_a |
lokr_w2_b | lokr_t2 | alpha | dora_scale`` (docs/formats.md). Module names are kept as in the file
(``lora_unet_...``, ``lora_te_...``, ``lora_te1_...``, ``lora_te2_...``, ``lycoris_...`` or any other).
Other algorithms in the same file (LoRA, LoHa, diff, norms, ...) are listed in ``other_modules``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch

from .weights import LoKrWeights
from ..base.errors import LoKrFormatError, where
from ..tensor.factors import LoKrFactors
from .keys import LOKR_PARAMS, group_keys, module_kind
from .sources import DictSource, SafetensorsSource

Source = SafetensorsSource | DictSource

KOHYA_GROUPS = (("lora_unet_", "unet"), ("lycoris_", "unet"), ("lora_te1_", "te1"), ("lora_te2_", "te2"),
                ("lora_te_", "te1"))
"""kohya prefix -> model part; ``lora_te_`` (SD1/2) and ``lora_te1_`` (SDXL) both mean CLIP-L."""


def canonical_name(name: str) -> tuple[str, str]:
    """(part, path) that identifies the module a kohya name means, for duplicate detection:
    ``lora_te_text_model_encoder_...``, ``lora_te_encoder_...`` and ``lora_te1_text_model_encoder_...``
    all map to ("te1", "encoder_...")."""
    for prefix, part in KOHYA_GROUPS:
        if name.startswith(prefix):
            path = name[len(prefix):]
            if part.startswith("te") and path.startswith("text_model_"):
                path = path[len("text_model_"):]
            return part, path
    return "", name


def read_alphas(source: Source, keys: Mapping[str, str]) -> dict[str, float]:
    """module -> its alpha scalar as a float, read in one pass (``keys``: module -> file key).

    LoKrFormatError naming the module unless each alpha has exactly one element.
    """
    for module, key in keys.items():
        if math.prod(source.shape(key)) != 1:
            raise LoKrFormatError(f"{where(source.name, module)}alpha has shape {source.shape(key)}; expected a scalar")
    tensors = source.get_many(list(keys.values())) if keys else {}
    for module, key in keys.items():
        if tensors[key].is_complex():  # found by the fuzz suite: float() of a complex alpha is a TypeError
            raise LoKrFormatError(f"{where(source.name, module)}alpha has dtype {tensors[key].dtype}; expected a real "
                                  "number")
    return {module: float(tensors[key].reshape(-1)[0].item()) for module, key in keys.items()}


def _factor_kwargs(params: Mapping[str, str], make: Callable[[str], torch.Tensor]) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    for param, key in params.items():
        if param in LOKR_PARAMS:
            kw[param[len("lokr_"):]] = make(key)
        elif param == "dora_scale":
            kw["dora_scale"] = make(key)
    return kw


def _check_float(source: Source, module: str, params: Mapping[str, str]) -> None:
    for param, key in params.items():
        if param in LOKR_PARAMS or param == "dora_scale":
            dt = source.dtype(key)
            if not dt.is_floating_point:
                raise LoKrFormatError(f"{where(source.name, module)}{param} has dtype {dt}; expected a floating-point tensor")


def read_modules(source: Source, *, format: str, name_filter: Callable[[str], bool] | None = None,
                 canonical: Callable[[str], tuple[str, str]] = canonical_name, peft_config: Any = None,
                 peft_r_alpha: Callable[[str], tuple[int, float]] | None = None,
                 warnings: list[str] | None = None) -> LoKrWeights:
    """Group ``source``'s keys into modules and make a lazy LoKrWeights.

    Every LoKr module's shapes and alpha are validated now (no factor data read: shapes come from
    the header); factor tensors are read, finite-checked and cached on first access. Raises
    LoKrFormatError naming the file and module for: no LoKr module at all, a module seen twice
    under different names (``canonical``), non-float factors, non-scalar / NaN alpha, non-finite
    alpha on a split module; LoKrShapeError for inner shapes that do not agree.
    """
    groups = group_keys(source.keys)
    lokr: dict[str, dict[str, str]] = {}
    other: dict[str, str] = {}
    seen: dict[tuple[str, str], str] = {}
    for module, params in groups.items():
        kind = module_kind(params)
        if name_filter is not None and not name_filter(module):
            other[module] = kind if kind != "lokr" else "lokr (unrecognised name)"
            continue
        if kind != "lokr":
            other[module] = kind
            continue
        key = canonical(module)
        if key in seen:
            raise LoKrFormatError(f"{where(source.name, module)}is the same module as {seen[key]!r} (names differ only "
                                  "by prefix or text_model_ level); expected each module once")
        seen[key] = module
        lokr[module] = params
    if not lokr:
        kinds = sorted(set(other.values()))
        raise LoKrFormatError(f"{where(source.name, None)}holds no LoKr modules (no lokr_w1/lokr_w2 keys; found "
                              f"{len(other)} other modules of kind {kinds}); expected a LoKr file")
    shapes: dict[str, LoKrFactors] = {}
    alphas = read_alphas(source, {m: p["alpha"] for m, p in lokr.items() if "alpha" in p})
    for module, params in lokr.items():
        _check_float(source, module, params)
        alpha = alphas.get(module)
        f = LoKrFactors(**_factor_kwargs(params, lambda k: torch.empty(source.shape(k), dtype=source.dtype(k),
                                                                       device="meta")), alpha=alpha)
        f.validate(source.name, module)
        shapes[module] = f

    def load_module(name: str) -> LoKrFactors:
        params = lokr[name]
        wanted = [k for p, k in params.items() if p != "alpha"]
        tensors = source.get_many(wanted)
        f = LoKrFactors(**_factor_kwargs(params, tensors.__getitem__), alpha=shapes[name].alpha)
        f.validate(source.name, name)
        return f

    def raw_keys(name: str) -> dict[str, torch.Tensor]:
        params = lokr.get(name) or groups.get(name)
        return source.get_many(list(params.values()))

    return LoKrWeights(shapes, load_module=load_module, raw_keys=raw_keys, metadata=source.metadata,
                       source=source.name, format=format, peft_config=peft_config, other_modules=other,
                       peft_r_alpha=peft_r_alpha, warnings=warnings, other_names=list(other))


def read_lycoris(source: Source) -> LoKrWeights:
    """Parse a LyCORIS / kohya LoKr file or state dict (see :func:`read_modules`)."""
    return read_modules(source, format="lycoris")


# ------------------------------------------------------------------------------------ writing
def lycoris_tensors(weights: LoKrWeights, *, names: Mapping[str, str] | None = None,
                    keep_other: bool = True) -> dict[str, torch.Tensor]:
    """The LyCORIS state dict for ``weights`` with the applied ΔW preserved.

    ``names``: module name -> name to write (default: unchanged). LyCORIS-format modules are
    written as stored (factors, alpha, dora_scale). Modules from PEFT files get their PEFT scale
    s = alpha / r re-expressed in LyCORIS' rule: split modules store alpha = s * rank; full/full
    modules (where LyCORIS ignores alpha) get s folded into ``lokr_w1`` (computed in fp32, written
    in the stored dtype) and alpha = their PEFT r. ``keep_other``: copy the file's non-LoKr modules
    (LyCORIS sources only) unchanged.
    """
    names = dict(names or {})
    out: dict[str, torch.Tensor] = {}
    for name in weights.module_names:
        f = weights.modules[name]
        new = names.get(name, name)
        s = weights.scale(name, "file")
        alpha = f.alpha
        w1 = f.w1
        if weights.format == "peft":
            ra = weights.peft_r_alpha(name)
            if f.full_full:
                if s != 1.0:
                    w1 = (f.w1.to(torch.float32) * s).to(f.w1.dtype)
                alpha = float(ra[0]) if ra is not None else None
            else:
                alpha = s * float(f.rank)
        for field, t in f.tensors():
            t = w1 if field == "w1" else t
            key = f"{new}.dora_scale" if field == "dora_scale" else f"{new}.lokr_{field}"
            out[key] = t
        if alpha is not None:
            out[f"{new}.alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
    if keep_other and weights.format == "lycoris":
        for other in weights.other_modules:
            for key, t in weights.raw_keys(other).items():
                out[key] = t
    return out
