"""Make LoKr test files with the real reference packages, plus their reference ΔW.

- :func:`make_lycoris_file`: one ``lycoris.modules.lokr.LokrModule`` per chosen layer of a tiny
  diffusers UNet (or transformers CLIP text model), factors filled with random non-zero values,
  saved with kohya names (``lora_unet_<path with _>``, ``lora_te_text_model_<path with _>``).
  Reference ΔW per module = ``LokrModule.get_weight(shape)`` (the scale applied once: docs/math.md, Scale);
  for DoRA modules also the merged weight at strength 1 (lycoris' ``weight_decompose`` on
  W + ΔW, again with the scale applied once).
- :func:`make_peft_dir`: ``peft.get_peft_model`` with a ``LoKrConfig`` on a tiny UNet, random
  factors, ``save_pretrained``; reference ΔW = each layer's ``get_delta_weight("default")``.
- :func:`make_mixed_file`: a LoKr file with LoRA / LoHa / diff / norm modules added.

Layouts available (``LAYOUTS`` keys): every one listed in docs/math.md (Shapes), on Linear, 1x1 and 3x3
conv layers, DoRA with ``wd_on_out`` True and False. Set LYCORIS_KERNEL_BACKEND=torch (conftest does).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

os.environ.setdefault("LYCORIS_KERNEL_BACKEND", "torch")

# name -> (model, module path, LokrModule kwargs, expected LoKrFactors.layout)
LAYOUTS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "full_linear": ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
                    dict(lora_dim=8, alpha=3.0), "full"),
    "split_w2_linear": ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj",
                        dict(lora_dim=2, alpha=1.0), "split-w2"),
    "split_both_linear": ("unet", "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj",
                          dict(lora_dim=2, alpha=3.0, decompose_both=True), "split-both"),
    "split_w1_linear": ("unet", "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj",
                        dict(lora_dim=8, alpha=4.0, decompose_both=True, unbalanced_factorization=True), "split-w1"),
    "split_w2_linear_rect": ("unet", "mid_block.attentions.0.transformer_blocks.0.ff.net.2",
                             dict(lora_dim=2, alpha=0.5), "split-w2"),
    "full_conv1x1": ("unet", "down_blocks.0.attentions.0.proj_in", dict(lora_dim=8, alpha=1.0), "full"),
    "split_conv1x1": ("unet", "mid_block.attentions.0.proj_out", dict(lora_dim=2, alpha=2.0), "split-w2"),
    "split_conv3x3": ("unet", "down_blocks.1.resnets.0.conv2", dict(lora_dim=2, alpha=1.5), "split-w2"),
    "tucker_conv3x3": ("unet", "mid_block.resnets.0.conv1", dict(lora_dim=2, alpha=2.5, use_tucker=True), "tucker"),
    "tucker_split_w1_conv3x3": ("unet", "mid_block.resnets.1.conv2",
                                dict(lora_dim=2, alpha=1.0, use_tucker=True, decompose_both=True,
                                     unbalanced_factorization=True, factor=4), "tucker-split-w1"),
    "full_conv3x3": ("unet", "down_blocks.0.downsamplers.0.conv", dict(lora_dim=8, alpha=8.0), "full"),
    "split_conv3x3_rect": ("unet", "up_blocks.0.resnets.0.conv1", dict(lora_dim=2, alpha=2.0), "split-w2"),
}

DORA_LAYOUTS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "dora_out_linear": ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2",
                        dict(lora_dim=2, alpha=1.0, weight_decompose=True, wd_on_out=True), "split-w2"),
    "dora_in_linear": ("unet", "up_blocks.1.attentions.1.transformer_blocks.0.ff.net.0.proj",
                       dict(lora_dim=2, alpha=2.0, weight_decompose=True, wd_on_out=False), "split-w2"),
    "dora_out_conv3x3": ("unet", "up_blocks.1.resnets.0.conv1",
                         dict(lora_dim=2, alpha=1.0, weight_decompose=True, wd_on_out=True, use_tucker=True), "tucker"),
    "dora_in_conv3x3": ("unet", "up_blocks.1.resnets.1.conv2",
                        dict(lora_dim=2, alpha=2.0, weight_decompose=True, wd_on_out=False), "split-w2"),
    "dora_full_linear": ("unet", "up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_k",
                         dict(lora_dim=8, alpha=8.0, weight_decompose=True), "full"),
}

CLIP_LAYOUTS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "te_split_q": ("clip", "encoder.layers.0.self_attn.q_proj", dict(lora_dim=2, alpha=1.0), "split-w2"),
    "te_full_fc1": ("clip", "encoder.layers.1.mlp.fc1", dict(lora_dim=16, alpha=16.0), "full"),
}


@dataclass
class LokrFile:
    """A LoKr file written by :func:`make_lycoris_file` and what the reference package says about it.

    ``reference``: file module name -> ΔW (fp32, scale applied once); ``weights``: name -> base
    weight (untouched original); ``merged``: DoRA module name -> lycoris merged weight at strength 1;
    ``paths``: file module name -> dotted module path in ``model``; ``layouts``: name -> layout;
    ``fixture``: name -> LAYOUTS key; ``modules``: name -> the LokrModule.
    """

    path: Path
    reference: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    merged: dict[str, torch.Tensor] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    layouts: dict[str, str] = field(default_factory=dict)
    fixture: dict[str, str] = field(default_factory=dict)
    modules: dict[str, Any] = field(default_factory=dict)
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    model: Any = None


def kohya_name(prefix: str, path: str) -> str:
    """kohya module name: ``prefix`` + dotted path with ``.`` -> ``_``."""
    return prefix + path.replace(".", "_")


def _randomize_(module: torch.nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("lokr_") or name.startswith("lora_") or name == "dora_scale":
                if name == "dora_scale":
                    p.mul_(1.0 + 0.2 * torch.rand(p.shape, generator=gen))
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def build_model(kind: str, seed: int = 0) -> torch.nn.Module:
    """The tiny model the fixtures adapt: ``"unet"`` (tests/support/models.py TINY_UNET) or ``"clip"`` (TINY_CLIP)."""
    from tests.support import models

    return models.tiny_unet(seed) if kind == "unet" else models.tiny_clip(seed)


def make_lokr_modules(model: torch.nn.Module, layouts: Mapping[str, tuple[str, str, dict, str]],
                      prefix: str, seed: int = 0) -> dict[str, tuple[str, Any, str, str]]:
    """One LokrModule per layout entry: kohya name -> (fixture key, LokrModule, module path, layout)."""
    from lycoris.modules.lokr import LokrModule

    gen = torch.Generator().manual_seed(seed)
    named = dict(model.named_modules())
    out = {}
    for key, (_, path, kwargs, layout) in layouts.items():
        name = kohya_name(prefix, path)
        mod = LokrModule(name, named[path], **kwargs)
        _randomize_(mod, gen)
        out[name] = (key, mod.eval(), path, layout)
    return out


def lycoris_reference(mod: Any) -> torch.Tensor:
    """ΔW of a LokrModule with its scale applied once: ``get_weight(shape)`` (docs/math.md, Scale)."""
    with torch.no_grad():
        return mod.get_weight(mod.shape).detach().float().clone()


def lycoris_dora_merged(mod: Any) -> torch.Tensor:
    """lycoris' DoRA merged weight at strength 1 with the scale applied once:
    ``weight_decompose(W + get_weight(shape), dora_scale, 1, wd_on_out)``."""
    from lycoris.functional.general import weight_decompose

    with torch.no_grad():
        w = mod.org_weight.detach().float()
        return weight_decompose(w + lycoris_reference(mod), mod.dora_scale.detach().float(), 1,
                                mod.wd_on_out).detach().clone()


def lokr_state_dict(mods: Mapping[str, tuple[str, Any, str, str]],
                    alpha_override: Mapping[str, float] | None = None,
                    dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The kohya-named state dict of ``mods`` (``<name>.<param>``) as lycoris writes it."""
    sd: dict[str, torch.Tensor] = {}
    for name, (key, mod, _, _) in mods.items():
        for param, t in mod.state_dict().items():
            if param == "scalar":
                continue
            t = t.detach().clone()
            if param == "alpha":
                if alpha_override and key in alpha_override:
                    t = torch.tensor(float(alpha_override[key]))
                sd[f"{name}.alpha"] = t.float()
            else:
                sd[f"{name}.{param}"] = t.to(dtype).contiguous()
    return sd


def make_lycoris_file(folder: str | os.PathLike, layouts: Mapping[str, tuple[str, str, dict, str]] | Iterable[str] | None = None,
                      *, filename: str = "lokr.safetensors", metadata: Mapping[str, str] | None = None,
                      alpha_override: Mapping[str, float] | None = None, dtype: torch.dtype = torch.float32,
                      seed: int = 0, unet_prefix: str = "lora_unet_", te_prefix: str = "lora_te_text_model_",
                      model: torch.nn.Module | None = None) -> LokrFile:
    """Write a kohya/LyCORIS LoKr safetensors file to ``folder`` and return it with its references.

    ``layouts``: LAYOUTS-style dict, or keys of LAYOUTS / DORA_LAYOUTS / CLIP_LAYOUTS (default: all
    of LAYOUTS and DORA_LAYOUTS). All entries must use one model kind. ``alpha_override``: fixture
    key -> alpha written to the file instead of lycoris' value (the reference is unchanged, which
    is right for full/full modules whose alpha LyCORIS ignores). ``dtype``: factor dtype in the file.
    """
    from safetensors.torch import save_file

    every = {**LAYOUTS, **DORA_LAYOUTS, **CLIP_LAYOUTS}
    if layouts is None:
        layouts = {**LAYOUTS, **DORA_LAYOUTS}
    elif not isinstance(layouts, Mapping):
        layouts = {k: every[k] for k in layouts}
    kinds = {v[0] for v in layouts.values()}
    assert len(kinds) == 1, f"one model kind per file, got {kinds}"
    kind = kinds.pop()
    model = model if model is not None else build_model(kind, seed)
    prefix = unet_prefix if kind == "unet" else te_prefix
    mods = make_lokr_modules(model, layouts, prefix, seed)
    sd = lokr_state_dict(mods, alpha_override, dtype)
    path = Path(folder) / filename
    meta = {"ss_network_module": "lycoris.kohya", "ss_network_args": '{"algo": "lokr"}'}
    meta.update(metadata or {})
    save_file(sd, str(path), metadata=meta)
    out = LokrFile(path=path, reference={}, state_dict=sd, model=model)
    for name, (key, mod, mpath, layout) in mods.items():
        if dtype != torch.float32:  # reference from the factors as stored
            with torch.no_grad():
                for p in mod.parameters():
                    if p.ndim:
                        p.copy_(p.to(dtype).float())
        out.reference[name] = lycoris_reference(mod)
        out.weights[name] = mod.org_weight.detach().clone()
        if getattr(mod, "wd", False):
            out.merged[name] = lycoris_dora_merged(mod)
        out.paths[name] = mpath
        out.layouts[name] = layout
        out.fixture[name] = key
        out.modules[name] = mod
    return out


# ------------------------------------------------------------------------------------------ PEFT
PEFT_TARGETS = ["to_q", "to_k", "ff.net.0.proj", "proj_in", "conv1", "conv_shortcut"]


@dataclass
class PeftDir:
    """A PEFT adapter dir written by :func:`make_peft_dir`: ``path`` (the dir), ``reference``: file
    module name (``base_model.model.<path>``) -> ΔW from peft's ``get_delta_weight``, ``model``:
    the PeftModel (a fresh base: ``build_model("unet", seed)``), ``config``: peft's LoKrConfig,
    ``r_alpha``: module name -> (r, alpha) peft used."""

    path: Path
    reference: dict[str, torch.Tensor]
    model: Any
    config: Any
    r_alpha: dict[str, tuple[int, float]] = field(default_factory=dict)


def make_peft_dir(folder: str | os.PathLike, *, r: int = 4, alpha: float = 8.0,
                  rank_pattern: Mapping[str, int] | None = None, alpha_pattern: Mapping[str, float] | None = None,
                  target_modules: list[str] | None = None, decompose_both: bool = False,
                  use_effective_conv2d: bool = True, seed: int = 0, subdir: str = "peft_adapter") -> PeftDir:
    """Make a PEFT LoKr adapter dir for a tiny UNet (random non-zero factors) and its reference ΔW.

    Defaults give split and full W2 on Linear, 1x1 and 3x3 conv (Tucker via use_effective_conv2d),
    with a rank_pattern and alpha_pattern entry so per-module r/alpha matter.
    """
    from peft import LoKrConfig, get_peft_model

    from lokr_core.commands.demo_run import randomize_adapters

    if rank_pattern is None:
        rank_pattern = {"down_blocks.1.resnets.0.conv1": 2, "to_k": 8}
    if alpha_pattern is None:
        alpha_pattern = {"down_blocks.1.resnets.0.conv1": 3.0, "proj_in": 2.0}
    config = LoKrConfig(r=r, alpha=alpha, target_modules=target_modules or PEFT_TARGETS,
                        rank_pattern=dict(rank_pattern), alpha_pattern=dict(alpha_pattern),
                        decompose_both=decompose_both, use_effective_conv2d=use_effective_conv2d,
                        init_weights=False)
    base = build_model("unet", seed)
    model = get_peft_model(base, config)
    randomize_adapters(model, seed + 1, std=0.5)
    model.eval()
    path = Path(folder) / subdir
    model.save_pretrained(str(path))
    ref, r_alpha = {}, {}
    for name, mod in model.named_modules():
        if hasattr(mod, "get_delta_weight") and ("default" in getattr(mod, "lokr_w1", {})
                                                 or "default" in getattr(mod, "lokr_w1_a", {})):
            with torch.no_grad():
                ref[name] = mod.get_delta_weight("default").detach().float().clone()
            r_alpha[name] = (int(mod.r["default"]), float(mod.alpha["default"]))
    return PeftDir(path=path, reference=ref, model=model, config=config, r_alpha=r_alpha)


# ------------------------------------------------------------------------------------------ mixed
def make_mixed_file(folder: str | os.PathLike, *, filename: str = "mixed.safetensors", seed: int = 0) -> tuple[LokrFile, dict[str, str]]:
    """A kohya file holding LoKr modules (split + full) and LoRA, LoHa, diff and norm modules.

    Returns (LokrFile with only the LoKr modules referenced, {other module name: kind}).
    """
    from safetensors.torch import save_file

    lf = make_lycoris_file(folder, ["split_w2_linear", "full_conv1x1"], filename=filename, seed=seed)
    sd = dict(lf.state_dict)
    g = torch.Generator().manual_seed(seed)
    others = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k": "lora",
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_v": "loha",
        "lora_unet_down_blocks_0_resnets_0_conv1": "diff",
        "lora_unet_down_blocks_0_resnets_0_norm1": "norm",
    }
    n = list(others)
    sd[f"{n[0]}.lora_up.weight"] = torch.randn(32, 4, generator=g)
    sd[f"{n[0]}.lora_down.weight"] = torch.randn(4, 32, generator=g)
    sd[f"{n[0]}.alpha"] = torch.tensor(4.0)
    for p in ("hada_w1_a", "hada_w2_a"):
        sd[f"{n[1]}.{p}"] = torch.randn(32, 2, generator=g)
    for p in ("hada_w1_b", "hada_w2_b"):
        sd[f"{n[1]}.{p}"] = torch.randn(2, 32, generator=g)
    sd[f"{n[1]}.alpha"] = torch.tensor(2.0)
    sd[f"{n[2]}.diff"] = torch.randn(32, 32, 3, 3, generator=g)
    sd[f"{n[2]}.diff_b"] = torch.randn(32, generator=g)
    sd[f"{n[3]}.w_norm"] = torch.randn(32, generator=g)
    sd[f"{n[3]}.b_norm"] = torch.randn(32, generator=g)
    save_file(sd, str(lf.path), metadata={"ss_network_module": "lycoris.kohya"})
    lf.state_dict = sd
    return lf, others
