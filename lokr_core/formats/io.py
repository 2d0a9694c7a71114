"""load_lokr / save_lokr: the one entry point for reading and writing LoKr files.

``load_lokr(path_or_state_dict, config=None) -> LoKrWeights`` reads LyCORIS / kohya safetensors,
PEFT adapter dirs (or their adapter_model.safetensors) and state dicts; ``save_lokr`` writes
LyCORIS safetensors or PEFT dirs, atomically, preserving the applied ΔW. See docs/formats.md.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from .weights import LoKrWeights
from ..base.atomic import atomic_save_file, atomic_write_text, check_not_input
from ..base.errors import LoKrFormatError, where
from .sources import DictSource, PartsSource, SafetensorsSource
from .detect import FileInfo, format_of_keys, locate
from .lycoris import lycoris_tensors, read_lycoris
from ..base.peft_names import CONFIG_NAME, PEFT_COMPONENTS, WEIGHTS_NAME
from .peft import config_for, kohya_name_of, peft_export, peft_modules, peft_parts, read_config_file, read_peft
from .peft_paths import peft_module_paths


def load_lokr(path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor], config: Any = None,
              *, metadata: Mapping[str, str] | None = None) -> LoKrWeights:
    """Read a LoKr file, PEFT adapter dir or state dict into a lazy :class:`LoKrWeights`.

    ``config``: PEFT config (LoKrConfig, dict or path) for PEFT weights; default: the
    adapter_config.json in / beside the path. A given config means PEFT rules: the modules are read
    as PEFT modules (r / alpha from the config, rank_pattern / alpha_pattern applied) whether their
    names carry ``base_model.model.``, a component prefix (``unet.``) or neither; LyCORIS / kohya
    names with a config are a LoKrFormatError. ``metadata``: metadata for a state dict. Every module
    is validated (shapes, alpha) now; factor tensors are read on first access. Raises
    LoKrFormatError naming the file (and module) for pickle files, truncated / corrupt files, no
    LoKr modules, duplicate modules, NaN alpha, non-finite alpha on split modules.
    """
    if isinstance(path_or_state_dict, Mapping):
        source = DictSource(path_or_state_dict, metadata=metadata)
        fmt = format_of_keys(source.keys, peft_config=config is not None)
        return read_peft(source, config) if fmt == "peft" else read_lycoris(source)
    info = locate(path_or_state_dict)
    if info.parts:
        return _load_parts(info, config)
    if info.weights.suffix.lower() != ".safetensors":
        raise LoKrFormatError(f"{where(str(info.weights), None)}unknown file type {info.weights.suffix!r}; expected "
                              ".safetensors or a PEFT adapter directory")
    source = SafetensorsSource(info.weights)
    fmt = info.format or format_of_keys(source.keys, source.name, peft_config=config is not None)
    if fmt == "peft":
        if config is None and info.config is not None:
            config = read_config_file(info.config)
        return read_peft(source, config)
    return read_lycoris(source)


def _load_parts(info: FileInfo, config: Any) -> LoKrWeights:
    """A folder of per-part PEFT adapters as one LoKrWeights: module names ``<part>.base_model.model.*``,
    each part's modules scaled by its own config (``config``: ``{part: config}``, default: each
    part's adapter_config.json)."""
    if config is None:
        config = {part: read_config_file(p.config) for part, p in info.parts.items() if p.config is not None} or None
    source = PartsSource({part: SafetensorsSource(p.weights) for part, p in info.parts.items()}, name=str(info.weights))
    return read_peft(source, config)


def save_lokr(weights: LoKrWeights, path: str | os.PathLike, format: str = "lycoris", *,
              name_map: Mapping[str, str] | None = None, shapes: Mapping[str, tuple[int, ...]] | None = None,
              metadata: Mapping[str, str] | None = None, keep_other: bool = True,
              model: Any = None) -> Path:
    """Write ``weights`` to ``path`` as ``format`` and return the written path.

    - ``"lycoris"``: one safetensors file (module names kept; ``name_map`` renames: file name ->
      new name). PEFT sources: split modules get alpha = PEFT alpha (rank r), full/full modules get
      alpha / r folded into lokr_w1, so the applied ΔW stays the same under LyCORIS' rule.
      ``keep_other``: copy non-LoKr modules of a LyCORIS source too.
    - ``"peft"``: a directory with adapter_model.safetensors + adapter_config.json (r / alpha per
      module in rank_pattern / alpha_pattern so that PEFT's alpha / r reproduces ΔW); for modules
      of several pipeline parts, one such adapter folder per part (``path/unet/``,
      ``path/text_encoder/``, ...), each loadable by ``PeftModel.from_pretrained(part, path/part)``.
      LyCORIS sources need ``name_map`` (file module name -> dotted module path, optionally
      prefixed ``unet.`` / ``text_encoder.`` / ...) or ``model``: what the file adapts, in the forms
      ``apply_lokr`` takes (an nn.Module, or ``{"unet": unet, "text_encoder": te, ...}``); names are
      resolved with ``weights.resolve(model)``, which must match every module
      (:func:`lokr_core.formats.peft_paths.peft_module_paths`). ``shapes``: base weight shapes for
      modules whose factors do not say their kernel (taken from ``model`` when given).
    Metadata of the source is kept (``metadata`` entries added / overriding). Writes are atomic;
    the source file is never overwritten. Nothing is written when any module cannot be converted.
    """
    meta = {k: str(v) for k, v in weights.metadata.items()}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    target = Path(path)
    if format == "lycoris":
        return _save_lycoris(weights, target, meta, name_map=name_map, keep_other=keep_other)
    if format == "peft":
        return _save_peft(weights, target, meta, name_map=name_map, shapes=shapes, model=model)
    raise LoKrFormatError(f"{where(str(target), None)}unknown format {format!r}; expected 'lycoris' or 'peft'")


def _inputs(weights: LoKrWeights) -> list[str]:
    """The files a save must not overwrite: the weights' own source."""
    return [weights.source] if weights.source else []


def _source_adapter_files(weights: LoKrWeights) -> list[str]:
    """The adapter files of the weights' own PEFT folder(s), which a PEFT save must not overwrite."""
    if not weights.source:
        return []
    src = Path(weights.source)
    folders = [src, *(src / part for part in PEFT_COMPONENTS)] if src.is_dir() else [src.parent]
    return [str(f / name) for f in folders for name in (WEIGHTS_NAME, CONFIG_NAME)]


def _save_lycoris(weights: LoKrWeights, target: Path, meta: dict[str, str], *,
                  name_map: Mapping[str, str] | None, keep_other: bool) -> Path:
    """``save_lokr(format="lycoris")``: one safetensors file; PEFT names become kohya names."""
    if target.is_dir():
        raise LoKrFormatError(f"{where(str(target), None)}is a directory; expected a .safetensors file path for "
                              "format='lycoris'")
    renames = {}
    if weights.format == "peft":
        renames = {n: kohya_name_of(n) for n in weights.module_names}
        meta.setdefault("ss_network_module", "lycoris.kohya")
        meta.setdefault("ss_network_args", json.dumps({"algo": "lokr"}))
    renames.update(name_map or {})
    tensors = lycoris_tensors(weights, names=renames, keep_other=keep_other)
    return atomic_save_file(tensors, target, meta, inputs=_inputs(weights))


def _save_peft(weights: LoKrWeights, target: Path, meta: dict[str, str], *, name_map: Mapping[str, str] | None,
               shapes: Mapping[str, tuple[int, ...]] | None, model: Any) -> Path:
    """``save_lokr(format="peft")``: one adapter folder (weights + config), or one per pipeline part
    under ``target``; every part is converted before anything is written, and folders this call
    created are removed again on failure."""
    if target.suffix.lower() == ".safetensors" or target.is_file():
        raise LoKrFormatError(f"{where(str(target), None)}format='peft' writes a directory; expected a directory "
                              "path, not a file")
    meta.setdefault("format", "pt")
    if model is not None and weights.format != "peft":
        name_map, shapes = peft_module_paths(weights, model, name_map=name_map, shapes=shapes)
    parts = peft_parts(peft_modules(weights, name_map, file=weights.source), weights.source)
    exports = {target if part is None else target / part:
               peft_export(weights, name_map, only=mods, base_config=config_for(weights.peft_config, part),
                           shapes=shapes, file=weights.source)
               for part, mods in parts.items()}
    inputs = _inputs(weights)
    for folder in exports:
        for name in (WEIGHTS_NAME, CONFIG_NAME):
            check_not_input(folder / name, inputs + _source_adapter_files(weights))
    created = [f for f in (target, *exports) if not f.exists()]
    try:
        for folder, (tensors, cfg) in exports.items():
            folder.mkdir(parents=True, exist_ok=True)
            atomic_save_file(tensors, folder / WEIGHTS_NAME, meta or None, inputs=inputs)
            atomic_write_text(json.dumps(cfg, indent=2, sort_keys=True), folder / CONFIG_NAME, inputs=inputs)
    except BaseException:
        for folder in created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return target
