"""PEFT LoKr adapters: ``adapter_model.safetensors`` + ``adapter_config.json`` (docs/formats.md).

Keys are ``[<component>.]base_model.model.<dotted module path>.lokr_*`` (component: ``unet``,
``text_encoder``, ... from diffusers pipeline saves); with a config given, also bare module paths
(``down_blocks.0...to_q``) and component-prefixed ones (``unet.down_blocks.0...to_q``), as state
dicts stripped of ``base_model.model.`` have them. Module names are kept as in the file
(``base_model.model.down_blocks.0...to_q``). PEFT stores no alpha: scale = alpha / r from the
config, with rank_pattern / alpha_pattern applied per module (``LoKrConfig.r_alpha_for``) to the
module path without its component (PEFT's patterns are relative to the model the adapter wraps).
See docs/formats.md.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..base.peft_names import CONFIG_NAME, PEFT_COMPONENTS, PEFT_PREFIX, WEIGHTS_NAME  # noqa: F401 (WEIGHTS_NAME re-used by io)
from .weights import LoKrWeights
from ..tuner.config import LoKrConfig
from ..base.errors import LoKrFormatError, LoKrKeyError, where
from .sources import DictSource, SafetensorsSource
from .detect import is_kohya_name
from .lycoris import read_modules

PEFT_NAME = re.compile(r"^(?:(?P<component>[A-Za-z0-9_]+)\.)?" + re.escape(PEFT_PREFIX) + r"(?P<path>.+)$")


def module_path(name: str) -> tuple[str | None, str]:
    """(component or None, dotted module path) of a PEFT module name:
    ``unet.base_model.model.a.b`` -> ("unet", "a.b"); ``base_model.model.a.b`` -> (None, "a.b");
    without ``base_model.model.``: ``unet.a.b`` -> ("unet", "a.b") for the components of
    ``PEFT_COMPONENTS``, ``a.b`` -> (None, "a.b")."""
    m = PEFT_NAME.match(name)
    if m:
        return m.group("component"), m.group("path")
    head, _, rest = name.partition(".")
    if head in PEFT_COMPONENTS and rest:
        return head, rest
    return None, name


def kohya_name_of(peft_name: str) -> str:
    """The kohya / LyCORIS name of a PEFT module, as LyCORIS files name it: ``base_model.model.a.b``
    (or ``unet.base_model.model.a.b``) -> ``lora_unet_a_b``; ``text_encoder.`` / ``text_encoder_2.``
    modules -> ``lora_te1_...`` / ``lora_te2_...``."""
    comp, path = module_path(peft_name)
    prefix = {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}.get(comp or "", "lora_unet_")
    return prefix + path.replace(".", "_")


def as_config(config: Any, file: str | None = None) -> LoKrConfig | None:
    """A LoKrConfig from a LoKrConfig, a PEFT config dict, a path to adapter_config.json / its dir, or None."""
    if config is None or isinstance(config, LoKrConfig):
        return config
    if isinstance(config, Mapping):
        return LoKrConfig.from_peft_dict(config, file=file)
    if isinstance(config, (str, Path)):
        return LoKrConfig.from_pretrained(config)
    raise LoKrFormatError(f"{where(file, None)}config is a {type(config).__name__}; expected a LoKrConfig, a PEFT "
                          "config dict or the path of an adapter_config.json")


def read_config_file(path: Path) -> dict:
    """adapter_config.json as a dict; LoKrFormatError naming the file when it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoKrFormatError(f"{where(str(path), None)}cannot read it as JSON ({exc}); expected a PEFT "
                              f"{CONFIG_NAME}") from None


def _canonical(name: str) -> tuple[str, str]:
    comp, path = module_path(name)
    return (comp if comp not in (None, "unet") else "unet", path)


def as_configs(config: Any, file: str | None = None) -> LoKrConfig | dict[str, LoKrConfig] | None:
    """:func:`as_config`, or a ``{component: config}`` mapping (keys from ``PEFT_COMPONENTS``: one
    adapter config per part of a pipeline) made into ``{component: LoKrConfig}``."""
    if (isinstance(config, Mapping) and config and all(k in PEFT_COMPONENTS for k in config)):
        return {str(k): as_config(v, file) for k, v in config.items()}
    return as_config(config, file)


def config_for(config: LoKrConfig | Mapping[str, LoKrConfig] | None, component: str | None) -> LoKrConfig | None:
    """The config that applies to ``component``'s modules: the one config, or that component's
    entry of a ``{component: LoKrConfig}`` mapping (None when it has none)."""
    if isinstance(config, Mapping):
        return config.get(component or "unet")
    return config


def read_peft(source: SafetensorsSource | DictSource, config: Any = None) -> LoKrWeights:
    """Parse PEFT LoKr tensors; ``config`` (LoKrConfig / dict / path / ``{component: config}`` /
    None) gives r and alpha (``weights.peft_config`` keeps it, as a LoKrConfig or
    ``{component: LoKrConfig}``).

    Without a config the scale is 1 for every module, and ``scale_warnings()`` says so. A
    ``{component: config}`` mapping must hold a config for every component the modules name
    (no component: ``unet``); LoKrFormatError naming the module otherwise.
    """
    cfg = as_configs(config, source.name)
    warnings = []
    if cfg is None:
        warnings.append("PEFT LoKr weights without adapter_config.json: r and alpha are unknown, so every module "
                        "is applied at scale 1 (PEFT would use alpha / r); pass config= to fix this.")
    elif isinstance(cfg, Mapping):
        for name in source.keys:
            comp = module_path(name)[0] or "unet"
            if ".lokr_" in name and comp not in cfg:
                raise LoKrFormatError(f"{where(source.name, name.rsplit('.lokr_', 1)[0])}belongs to {comp!r}, which "
                                      f"has no config; expected a config for each of the components {sorted(cfg)}")

    def r_alpha(name: str) -> tuple[int, float]:
        comp, path = module_path(name)
        return config_for(cfg, comp).r_alpha_for(path)

    return read_modules(source, format="peft", name_filter=lambda n: not is_kohya_name(n),
                        canonical=_canonical, peft_config=cfg, peft_r_alpha=r_alpha if cfg is not None else None,
                        warnings=warnings)


# ------------------------------------------------------------------------------------ writing
def peft_modules(weights: LoKrWeights, name_map: Mapping[str, str] | None = None, *,
                 file: str | None = None) -> dict[str, tuple[str | None, str]]:
    """File module -> (component or None, dotted module path inside it) of every module, for a PEFT export.

    Modules of a PEFT source keep their path; others take ``name_map[name]``: a dotted module path,
    optionally prefixed with its component (``unet.`` / ``text_encoder.`` / ``text_encoder_2.`` /
    ``transformer.``). LoKrKeyError for a module with no path; LoKrFormatError for two modules on one.
    """
    out: dict[str, tuple[str | None, str]] = {}
    seen: dict[tuple[str | None, str], str] = {}
    for n in weights.module_names:
        if name_map is not None and n in name_map:
            where_to = module_path(name_map[n])
        elif weights.format == "peft" or PEFT_NAME.match(n):
            where_to = module_path(n)
        else:
            raise LoKrKeyError(f"{where(file, n)}no PEFT module path for this LyCORIS name; expected "
                               "name_map={file module name: dotted module path} or model= (the model it adapts)")
        if where_to in seen:
            raise LoKrFormatError(f"{where(file, n)}maps to the same PEFT module {where_to[1]!r} as {seen[where_to]!r}; "
                                  "expected distinct modules")
        seen[where_to] = n
        out[n] = where_to
    return out


def peft_parts(modules: Mapping[str, tuple[str | None, str]], file: str | None = None) -> dict[str | None, list[str]]:
    """{component or None: its file modules} of :func:`peft_modules`' answer: one PEFT adapter each.

    LoKrFormatError when modules with a component and modules without one are mixed (the second
    kind cannot be given a folder)."""
    parts: dict[str | None, list[str]] = {}
    for n, (comp, _) in modules.items():
        parts.setdefault(comp, []).append(n)
    if None in parts and len(parts) > 1:
        plain, other = parts[None][0], next(c for c in parts if c is not None)
        raise LoKrFormatError(f"{where(file, plain)}has no component while other modules belong to {other!r}; "
                              f"expected every module path prefixed with its component ({', '.join(PEFT_COMPONENTS)}) "
                              "or none")
    return parts


def peft_export(weights: LoKrWeights, name_map: Mapping[str, str] | None = None, *, only: list[str] | None = None,
                base_config: Any = None, shapes: Mapping[str, tuple[int, ...]] | None = None,
                file: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, adapter_config dict) of one PEFT adapter applying the same ΔW as ``weights``' modules
    (``only``: these modules, all of one component, see :func:`peft_parts`; default: all).

    Per module: r = the factor rank (for a full/full module: the largest factor side, which makes
    PEFT create whole W1 and W2), alpha = scale * r, written as rank_pattern / alpha_pattern
    entries keyed by the full module path. ``decompose_both`` / ``use_effective_conv2d`` are set
    from the layouts present, and every module's factor shapes are checked against what PEFT would
    create from that config (lokr_core.tensor.shapes.plan_factors); a file PEFT cannot express (DoRA,
    mixed Tucker / non-Tucker 3x3 convs, non-PEFT factorisations) raises LoKrFormatError naming
    the module. ``name_map``: LyCORIS name -> dotted module path (optionally ``unet.`` /
    ``text_encoder.`` prefixed, see :func:`peft_modules`). Keys are ``base_model.model.<path>``,
    without the component: each component is its own adapter, as PEFT saves and loads it.
    ``decompose_factor`` comes from ``base_config`` (the source's PEFT config) or is -1. ``shapes``: module name -> base weight shape, for modules whose
    factors do not say their kernel (see ``LoKrWeights.natural_shape``).
    """
    from ..tensor.shapes import plan_factors

    paths = {n: path for n, (_, path) in peft_modules(weights, name_map, file=file).items()}
    chosen = list(only) if only is not None else list(weights.module_names)
    facts = {n: weights.shapes(n) for n in chosen}
    for n, f in facts.items():
        if f.dora_scale is not None:
            raise LoKrFormatError(f"{where(file, n)}has dora_scale (DoRA); PEFT LoKr has no DoRA, expected "
                                  "format='lycoris' for this file")
    decompose_both = any(not f.w1_full for f in facts.values())
    tucker = any(f.tucker for f in facts.values())
    base = as_config(base_config, file)
    r_default = base.r if base is not None else 8
    factor = base.decompose_factor if base is not None else -1
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    targets: list[str] = []
    for n, f in facts.items():
        path = paths[n]
        shape = tuple(shapes[n]) if shapes and n in shapes else weights.natural_shape(n)
        out_l, in_m = f.w1_shape
        r = f.rank if f.rank is not None else max(out_l, in_m, shape[0] // out_l, shape[1] // in_m)
        plan = plan_factors(shape, r, decompose_both=decompose_both, decompose_factor=factor,
                            use_effective_conv2d=tucker, conv_dims=len(shape) - 2)
        have = {k: tuple(t.shape) for k, t in f.tensors() if k != "dora_scale"}
        want = {k: tuple(v) for k, v in plan.shapes.items()}
        if have != want:
            raise LoKrFormatError(f"{where(file, n)}factor shapes {have} are not what PEFT creates for this layer with "
                                  f"r={r}, decompose_both={decompose_both}, use_effective_conv2d={tucker}, "
                                  f"decompose_factor={factor} ({want}); "
                                  "expected a layout PEFT can express (keep format='lycoris' for this file)")
        scale = weights.scale(n, "file")
        rank_pattern[path] = int(r)
        alpha_pattern[path] = float(scale * r)
        targets.append(path)
    tensors: dict[str, torch.Tensor] = {}
    for n in chosen:
        f = weights.modules[n]
        for field, t in f.tensors():
            tensors[f"{PEFT_PREFIX}{paths[n]}.lokr_{field}"] = t
    cfg = LoKrConfig(r=r_default, alpha=float(base.alpha) if base is not None else float(r_default),
                     target_modules=targets, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern,
                     decompose_both=decompose_both, use_effective_conv2d=tucker, decompose_factor=factor,
                     init_weights=True)
    d = cfg.to_peft_dict()
    d["peft_type"] = "LOKR"
    return tensors, d

