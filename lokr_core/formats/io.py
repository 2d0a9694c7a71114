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
from ..base.errors import LoKrFormatError, LoKrKeyError, where
from .sources import DictSource, SafetensorsSource
from .detect import format_of_keys, locate
from .lycoris import lycoris_tensors, read_lycoris
from ..base.peft_names import CONFIG_NAME, WEIGHTS_NAME
from .peft import kohya_name_of, peft_export, read_config_file, read_peft


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


def save_lokr(weights: LoKrWeights, path: str | os.PathLike, format: str = "lycoris", *,
              name_map: Mapping[str, str] | None = None, shapes: Mapping[str, tuple[int, ...]] | None = None,
              metadata: Mapping[str, str] | None = None, keep_other: bool = True,
              model: torch.nn.Module | None = None) -> Path:
    """Write ``weights`` to ``path`` as ``format`` and return the written path.

    - ``"lycoris"``: one safetensors file (module names kept; ``name_map`` renames: file name ->
      new name). PEFT sources: split modules get alpha = PEFT alpha (rank r), full/full modules get
      alpha / r folded into lokr_w1, so the applied ΔW stays the same under LyCORIS' rule.
      ``keep_other``: copy non-LoKr modules of a LyCORIS source too.
    - ``"peft"``: a directory with adapter_model.safetensors + adapter_config.json (r / alpha per
      module in rank_pattern / alpha_pattern so that PEFT's alpha / r reproduces ΔW). LyCORIS
      sources need ``name_map`` (file module name -> dotted module path in the model) or ``model``
      (the nn.Module the file adapts: names resolved with ``weights.resolve(model)``, which must
      match every module). ``shapes``: base weight shapes for modules whose factors do not say
      their kernel (taken from ``model`` when given).
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
               shapes: Mapping[str, tuple[int, ...]] | None, model: torch.nn.Module | None) -> Path:
    """``save_lokr(format="peft")``: an adapter folder (weights + config), removed again on failure
    when this call created it."""
    if target.suffix.lower() == ".safetensors" or target.is_file():
        raise LoKrFormatError(f"{where(str(target), None)}format='peft' writes a directory; expected a directory "
                              "path, not a file")
    meta.setdefault("format", "pt")
    if model is not None and weights.format != "peft":
        name_map, shapes = _names_from_model(weights, model, name_map, shapes)
    tensors, cfg = peft_export(weights, name_map, base_config=weights.peft_config, shapes=shapes,
                               file=weights.source)
    inputs = _inputs(weights)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        check_not_input(target / name, inputs + ([str(Path(weights.source).parent / name)] if weights.source else []))
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    try:
        atomic_save_file(tensors, target / WEIGHTS_NAME, meta or None, inputs=inputs)
        atomic_write_text(json.dumps(cfg, indent=2, sort_keys=True), target / CONFIG_NAME, inputs=inputs)
    except BaseException:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _names_from_model(weights: LoKrWeights, model: torch.nn.Module, name_map: Mapping[str, str] | None,
                      shapes: Mapping[str, tuple[int, ...]] | None) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """name_map and shapes for a PEFT export, from resolving ``weights`` against ``model``."""
    names = dict(name_map or {})
    todo = [n for n in weights.module_names if n not in names]
    if todo:
        report = weights.resolve(model)
        missing = [n for n in todo if n not in report.matched]
        if missing:
            raise LoKrKeyError(f"{where(weights.source, missing[0])}does not resolve to a module of the given model "
                               f"({len(missing)} such modules); expected name_map entries for them")
        names.update({n: report.matched[n] for n in todo})
    named = dict(model.named_modules())
    found = {n: tuple(named[p].weight.shape) for n, p in names.items() if p in named and hasattr(named[p], "weight")}
    found.update(shapes or {})
    return names, found
