"""An index of a target's weights under every name a LoKr file may use for them.

A target is an ``nn.Module`` (diffusers UNet2DConditionModel, transformers CLIPTextModel /
CLIPTextModelWithProjection, any other module), a dict ``{"unet": m, "text_encoder": m,
"text_encoder_2": m}``, or a state dict / ``{key: shape}`` in LDM checkpoint, ComfyUI or diffusers
layout. :func:`build_index` lists the target's real weights once (:class:`TargetEntry`: the key the
caller uses, the weight shape, the component, the LDM UNet path) and files every one under the
underscore form of each of its names (diffusers path, LDM path, transformers path with and without
``text_model.``, OpenCLIP path, language-model encoder paths with and without their wrapper levels
(:mod:`lokr_core.keymap.te_names`); for DiT models both the diffusers and the original / ComfyUI path,
:mod:`lokr_core.keymap.dit_names`, with q / k / v row blocks of fused original weights). File names
are looked up in that index; nothing is guessed from string shapes alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch

from ..base.errors import LoKrKeyError
from . import clip_text, dit_names, ldm_unet, te_names
from .kohya import underscore

STATE_PREFIXES: dict[str, tuple[str, str]] = {
    "model.diffusion_model.": ("unet", "ldm"), "diffusion_model.": ("unet", "ldm"),
    "cond_stage_model.transformer.": ("te1", "hf"), "cond_stage_model.model.": ("te1", "openclip"),
    "conditioner.embedders.0.transformer.": ("te1", "hf"), "conditioner.embedders.1.model.": ("te2", "openclip"),
    "clip_l.transformer.": ("te1", "hf"), "clip_h.transformer.": ("te1", "hf"), "clip_g.transformer.": ("te2", "hf"),
    "unet.": ("unet", "diffusers"), "text_encoder.": ("te1", "hf"), "text_encoder_2.": ("te2", "hf"),
    "text_encoder_3.": ("t5", "hf"), "text_encoder_4.": ("llm", "hf"), "transformer.": ("unet", "dit"),
    **{p: (c, "hf") for p, c in te_names.state_prefixes().items()},
}
"""State-dict key prefix -> (component, layout). Layouts: ``ldm`` / ``diffusers`` UNet, ``dit`` (a
diffusers pipeline's ``transformer.``: names as they are), ``hf`` / ``openclip`` text. Text encoders
as ComfyUI saves DiT checkpoints: ``text_encoders.<encoder>.transformer.`` (:mod:`.te_names`)."""

DICT_COMPONENTS = {"unet": "unet", "transformer": "unet", "text_encoder": "te1", "text_encoder_2": "te2",
                   "text_encoder_3": "t5", "text_encoder_4": "llm", "te1": "te1", "te2": "te2", "t5": "t5",
                   "llm": "llm"}
"""Keys accepted in a ``{name: nn.Module}`` target -> component."""

_LDM_HEADS = ("input_blocks.", "middle_block.", "output_blocks.", "time_embed.", "label_emb.", "out.")
_DIFFUSERS_HEADS = ("down_blocks.", "mid_block.", "up_blocks.", "conv_in.", "time_embedding.", "add_embedding.",
                    "class_embedding.", "conv_out.", "conv_norm_out.")
_HF_HEADS = ("text_model.", "encoder.layers.", "final_layer_norm.", "embeddings.", "text_projection.")


@dataclass(frozen=True)
class TargetEntry:
    """One weight of the target.

    ``key``: what callers use (module path for module targets, full ``.weight`` key for state dicts);
    ``shape``: the weight's shape (of the row block when ``rows`` is set); ``rows``: (start, stop) row
    slice of ``key``'s tensor for OpenCLIP's fused q/k/v ``in_proj_weight``, else None; ``path``: the
    diffusers UNet path or the canonical transformers text path; ``ldm_path``: LDM UNet module path
    (no prefix) for UNet weights, else None.
    """

    component: str
    key: str
    shape: tuple[int, ...]
    path: str
    aliases: tuple[str, ...]
    rows: tuple[int, int] | None = None
    ldm_path: str | None = None


@dataclass
class TargetIndex:
    """Entries of a target plus ``by_alias[component][underscore name] -> entries``."""

    entries: list[TargetEntry] = field(default_factory=list)
    by_alias: dict[str, dict[str, list[TargetEntry]]] = field(default_factory=dict)
    unet_layout: ldm_unet.UNetLayout | None = None
    unsupported: dict[str, dict[str, str]] = field(default_factory=dict)
    """component -> underscore name -> why a module of that name cannot be targeted here (DiT names
    no single weight holds: placed by ``resolve.layout_moves`` when the row operation fits)."""
    dit: dict[str, dit_names.Translation] = field(default_factory=dict)
    """component -> the DiT name table used for it (``family``, ``side``), for parts a table fits."""

    @property
    def components(self) -> frozenset[str]:
        return frozenset(self.by_alias)

    def add(self, entry: TargetEntry) -> None:
        self.entries.append(entry)
        table = self.by_alias.setdefault(entry.component, {})
        for alias in dict.fromkeys(entry.aliases):
            bucket = table.setdefault(alias, [])
            if entry not in bucket:
                bucket.append(entry)

    def file(self, entry: TargetEntry, alias: str) -> None:
        """File an existing ``entry`` under one more underscore ``alias``."""
        bucket = self.by_alias.setdefault(entry.component, {}).setdefault(alias, [])
        if entry not in bucket:
            bucket.append(entry)

    def lookup(self, components: Iterable[str], alias: str) -> list[TargetEntry]:
        """Entries filed under ``alias`` in any of ``components`` (each weight once)."""
        found: dict[tuple[str, tuple[int, int] | None], TargetEntry] = {}
        for comp in components:
            for e in self.by_alias.get(comp, {}).get(alias, ()):
                found.setdefault((e.key, e.rows), e)
        return list(found.values())


# ------------------------------------------------------------------ entry makers
def _unet_entry(path: str, ldm: str | None, key: str, shape: tuple[int, ...]) -> TargetEntry:
    aliases = tuple(underscore(p) for p in (path, ldm) if p)
    return TargetEntry("unet", key, shape, path or ldm or key, aliases, ldm_path=ldm)


def _text_entry(component: str, path: str, key: str, shape: tuple[int, ...],
                rows: tuple[int, int] | None = None, openclip: str | None = None) -> TargetEntry:
    canon = clip_text.canonical_text_path(path)
    aliases = [underscore(canon), "text_model_" + underscore(canon), *te_names.text_aliases(canon)]
    if openclip is None and rows is None:
        oc = clip_text.hf_to_openclip(canon)
        if oc is not None and oc[1] is None:
            openclip = oc[0]
    if openclip:
        aliases.append(underscore(openclip))
    return TargetEntry(component, key, shape, canon, tuple(aliases), rows=rows)


def _shape_of(value: Any, key: str) -> tuple[int, ...]:
    if isinstance(value, torch.Tensor):
        return tuple(int(s) for s in value.shape)
    if isinstance(value, (torch.Size, tuple, list)) and all(isinstance(s, int) for s in value):
        return tuple(int(s) for s in value)
    if hasattr(value, "shape"):  # numpy arrays, safetensors slices
        return tuple(int(s) for s in value.shape)
    raise LoKrKeyError(f"target state dict, key {key!r}: expected a tensor or a shape tuple, got {type(value).__name__}")


def _weight_modules(module: torch.nn.Module) -> Iterable[tuple[str, str, tuple[int, ...]]]:
    """(module name, path without wrapper levels, weight shape) of every sub-module holding a ``weight`` parameter.

    Wrapper levels named ``base_layer`` (PEFT, lokr_core.tuner.layers) are dropped from the path.
    """
    for name, mod in module.named_modules():
        w = mod._parameters.get("weight") if hasattr(mod, "_parameters") else None
        if w is None:
            continue
        path = ".".join(p for p in name.split(".") if p != "base_layer")
        yield name, path, tuple(int(s) for s in w.shape)


def _is_unet(module: Any) -> bool:
    cfg = getattr(module, "config", None)
    return cfg is not None and ldm_unet._get(cfg, "down_block_types") is not None


def _is_text(module: Any) -> bool:
    cfg = getattr(module, "config", None)
    return cfg is not None and getattr(cfg, "hidden_size", None) is not None and "Text" in type(module).__name__


def _encoder_kind(module: Any) -> str | None:
    """``t5`` / ``llm`` for a transformers T5-style or language-model encoder (by ``config.model_type``)."""
    kind = getattr(getattr(module, "config", None), "model_type", None)
    return "t5" if kind in te_names.T5_TYPES else "llm" if kind in te_names.LLM_TYPES else None


def _text_component(hidden: int | None) -> str:
    """A lone text encoder is SDXL's te2 when it is OpenCLIP-G sized (1280), else te1."""
    return "te2" if hidden == 1280 else "te1"


def add_module(index: TargetIndex, module: torch.nn.Module, prefix: str = "", component: str | None = None) -> None:
    """File every weight of ``module`` in ``index``; keys are ``prefix + module path``."""
    if _is_unet(module):
        layout = ldm_unet.layout_from_config(module.config)
        index.unet_layout = layout
        rules = ldm_unet.unet_rules(layout)
        for name, path, shape in _weight_modules(module):
            index.add(_unet_entry(path, ldm_unet.diffusers_to_ldm(path, rules), prefix + name, shape))
    elif _is_text(module) or _encoder_kind(module):
        # a T5 / language model is its own component, whichever pipeline part holds it (Flux's text_encoder_2)
        comp = _encoder_kind(module) or component or _text_component(getattr(module.config, "hidden_size", None))
        for name, path, shape in _weight_modules(module):
            index.add(_text_entry(comp, path, prefix + name, shape))
    else:
        comp = component or "other"
        for name, path, shape in _weight_modules(module):
            index.add(TargetEntry(comp, prefix + name, shape, path, (underscore(path),)))


def _classify(key: str, bare_unet: str | None) -> tuple[str, str, str] | None:
    """(component, layout, prefix) of a state-dict key, or None for keys of no known part."""
    if key.startswith("transformer.resblocks."):  # bare OpenCLIP, not a pipeline's transformer.
        return ("te1", "openclip", "")
    best = None
    for prefix, (comp, layout) in STATE_PREFIXES.items():
        if key.startswith(prefix) and (best is None or len(prefix) > len(best[2])):
            best = (comp, layout, prefix)
    if best is not None:
        return best
    if key.startswith(_HF_HEADS):
        return ("te1", "hf", "")
    if key.startswith("transformer.resblocks."):
        return ("te1", "openclip", "")
    if bare_unet is not None:
        return ("unet", bare_unet, "")
    return None


def add_state_dict(index: TargetIndex, state: Mapping[str, Any]) -> None:
    """File every ``.weight`` (and OpenCLIP ``in_proj_weight``) of a state dict / {key: shape} in ``index``."""
    keys = list(state.keys())
    bare = [k for k in keys if not any(k.startswith(p) for p in STATE_PREFIXES)]
    bare_unet = ("ldm" if any(k.startswith(_LDM_HEADS[:3]) for k in bare) else
                 "diffusers" if any(k.startswith(_DIFFUSERS_HEADS) for k in bare) else None)
    groups: dict[tuple[str, str, str], list[str]] = {}
    other: list[str] = []
    for k in keys:
        c = _classify(k, bare_unet)
        if c is None:
            other.append(k)
        else:
            groups.setdefault(c, []).append(k)
    for (comp, layout, prefix), gkeys in groups.items():
        rests = [k[len(prefix):] for k in gkeys]
        if layout == "dit":
            for k, rest in zip(gkeys, rests):
                if rest.endswith(".weight"):
                    index.add(_unet_entry(rest[: -len(".weight")], None, k, _shape_of(state[k], k)))
        elif layout in ("ldm", "diffusers"):
            try:
                lay = (ldm_unet.layout_from_ldm_keys(rests) if layout == "ldm"
                       else ldm_unet.layout_from_diffusers_keys(rests))
                rules = ldm_unet.unet_rules(lay)
                index.unet_layout = lay
            except LoKrKeyError:
                rules = ()
            for k, rest in zip(gkeys, rests):
                if not rest.endswith(".weight"):
                    continue
                p = rest[: -len(".weight")]
                if layout == "ldm":
                    index.add(_unet_entry(ldm_unet.ldm_to_diffusers(p, rules) or "", p, k, _shape_of(state[k], k)))
                else:
                    index.add(_unet_entry(p, ldm_unet.diffusers_to_ldm(p, rules), k, _shape_of(state[k], k)))
        elif layout == "hf":
            if prefix == "":
                fln = [state[k] for k, r in zip(gkeys, rests) if r.endswith("final_layer_norm.weight")]
                comp = _text_component(_shape_of(fln[0], "final_layer_norm.weight")[0] if fln else None)
            for k, rest in zip(gkeys, rests):
                if rest.endswith(".weight"):
                    index.add(_text_entry(comp, rest[: -len(".weight")], k, _shape_of(state[k], k)))
        else:  # openclip
            for k, rest in zip(gkeys, rests):
                if rest == "text_projection":
                    why = (f"the checkpoint stores it as the bare transposed parameter {k!r} (OpenCLIP layout); "
                           "a LoKr on text_projection is not applied there")
                    table = index.unsupported.setdefault(comp, {})
                    table["text_projection"] = table["text_model_text_projection"] = why
                    continue
                shape = _shape_of(state[k], k)
                for path, block in clip_text.openclip_weight_to_hf(rest):
                    if block is None:
                        index.add(_text_entry(comp, path, k, shape, openclip=rest[: -len(".weight")]))
                    else:
                        d = shape[0] // 3
                        index.add(_text_entry(comp, path, k, (d,) + shape[1:], rows=(block * d, (block + 1) * d)))
    for k in other:
        if k.endswith(".weight"):
            p = k[: -len(".weight")]
            index.add(TargetEntry("other", k, _shape_of(state[k], k), p, (underscore(p),)))


DIT_COMPONENTS = ("unet", "other")
"""Components whose weights may be a DiT model (diffusion model under a known prefix, or unnamed)."""

MIN_DIT_HITS = 3
"""A DiT name table is used for a component only when it names at least this many of its weights."""


def add_dit_names(index: TargetIndex) -> None:
    """File every DiT weight under its other-layout name too (:func:`lokr_core.keymap.dit_names.translate`).

    diffusers-named targets get the original names of their one-to-one weights; original-layout
    targets get the diffusers names, as row blocks (``rows``) of fused q / k / v (+ MLP) weights.
    Names that no single weight holds (a fused original module onto separate diffusers weights, a
    modulation whose halves are swapped between layouts) go to ``index.unsupported`` with a note:
    :func:`lokr_core.keymap.resolve.layout_moves` places them by rows (split / swapped halves), and
    the note is the reason given when that does not fit.
    """
    for comp in DIT_COMPONENTS:
        entries = [e for e in index.entries if e.component == comp and e.rows is None]
        by_path = {e.path: e for e in entries}
        if len(by_path) < MIN_DIT_HITS:
            continue
        tr = dit_names.translate({p: e.shape for p, e in by_path.items()})
        if tr.family is None or len(tr.aliases) + len(tr.unsupported) < MIN_DIT_HITS:
            continue
        index.dit[comp] = tr
        for path, alias, rows in tr.aliases:
            e = by_path[path]
            if rows is None:
                index.file(e, underscore(alias))
            else:
                index.add(TargetEntry(comp, e.key, (rows[1] - rows[0],) + tuple(e.shape[1:]), alias,
                                      (underscore(alias),), rows=rows, ldm_path=e.ldm_path))
        table = index.unsupported.setdefault(comp, {})
        for alias, why in tr.unsupported.items():
            table.setdefault(underscore(alias), why)


def build_index(target: Any) -> TargetIndex:
    """Index any supported target (see the module docstring).

    Raises LoKrKeyError for a target of another kind (naming the type found and the kinds expected).
    """
    index = TargetIndex()
    if isinstance(target, torch.nn.Module):
        add_module(index, target)
    elif isinstance(target, Mapping) and target and all(isinstance(v, torch.nn.Module) for v in target.values()):
        for name, mod in target.items():
            comp = DICT_COMPONENTS.get(name)
            if comp is None:
                raise LoKrKeyError(f"target dict, key {name!r}: expected one of {sorted(DICT_COMPONENTS)}")
            add_module(index, mod, prefix=f"{name}.", component=comp)
    elif isinstance(target, Mapping):
        add_state_dict(index, target)
    else:
        raise LoKrKeyError(f"target: expected an nn.Module, a dict of modules ({sorted(DICT_COMPONENTS)}) or a state "
                           f"dict / {{key: shape}}; got {type(target).__name__}")
    add_dit_names(index)
    return index
