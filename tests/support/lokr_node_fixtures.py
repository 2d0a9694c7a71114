"""LoKr fixtures for the node tests, made with the real lycoris-lora ``LokrModule`` per layer
(and :func:`peft_lokr_adapter`: a PEFT LoKr adapter made by peft for given layers).

The oracle is ``LokrModule.get_weight(shape)`` (the LyCORIS scale applied once; lycoris' own
``get_diff_weight`` / ``get_merged_weight`` apply it twice; docs/math.md, Scale) and, for DoRA modules,
lycoris' ``apply_weight_decompose`` on W + ΔW.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from tests.support.comfy_standins import module_tree

os.environ.setdefault("LYCORIS_KERNEL_BACKEND", "torch")


def lycoris_module(name: str, layer: nn.Module, *, dim: int = 4, alpha: float = 3.0, factor: int = 4,
                   seed: int = 0, **kw) -> nn.Module:
    """A LokrModule for ``layer`` with every factor filled with N(0, 0.1) (its init zeroes W2)."""
    from lycoris.modules.lokr import LokrModule

    mod = LokrModule(name, layer, lora_dim=dim, alpha=alpha, factor=factor, **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in mod.named_parameters():
            if pname.startswith("lokr_"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif pname == "dora_scale":
                p.mul_(1.0 + 0.1 * torch.randn(p.shape, generator=g).abs())
    return mod


def state_dict_of(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """kohya/LyCORIS file layout: ``<name>.lokr_w1`` ... ``<name>.alpha`` for every module."""
    out = {}
    for name, mod in modules.items():
        for k, v in mod.custom_state_dict().items():
            out[f"{name}.{k}"] = v.detach().clone().contiguous().float()
    return out


def merged_reference(mod: nn.Module, weight: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """W + strength * ΔW with ΔW = lycoris' ``get_weight`` (fp32).

    DoRA modules: lycoris' ``apply_weight_decompose(W + ΔW)`` at strength 1, W at 0, and the
    interpolation W + m * (W_dora - W) in between (the default; docs/math.md, DoRA).
    """
    w = weight.detach().float().clone()
    with torch.no_grad():
        delta = mod.get_weight(tuple(w.shape)).detach().float()
        if getattr(mod, "wd", False):
            w_dora = mod.apply_weight_decompose(w + delta, 1.0).detach().float()
            return w + strength * (w_dora - w)
    return w + strength * delta


def peft_lokr_adapter(layers: dict[str, nn.Module], folder: str, *, r: int = 4, alpha: float = 6.0,
                      seed: int = 5, std: float = 0.05) -> nn.Module:
    """A PEFT LoKr adapter saved by peft to ``folder`` (``adapter_model.safetensors``); returns the PeftModel.

    ``layers``: {diffusers module path: a layer whose weight the adapter targets} (Linear, or Conv2d
    as 3x3 with padding 1 / 1x1); copies of them (no bias) are adapted, factors filled with
    N(0, std). The reference ΔW of a path: ``model.base_model.model.get_submodule(path).get_delta_weight("default")``.
    """
    from peft import LoKrConfig, get_peft_model

    copies = {}
    for path, src in layers.items():
        layer = (nn.Linear(src.in_features, src.out_features, bias=False) if isinstance(src, nn.Linear)
                 else nn.Conv2d(src.in_channels, src.out_channels, src.kernel_size, padding=src.padding, bias=False))
        layer.weight.data.copy_(src.weight.detach().float())
        copies[path] = layer
    root = module_tree(copies)
    pm = get_peft_model(root, LoKrConfig(r=r, alpha=alpha, target_modules=list(layers), init_weights=False,
                                         use_effective_conv2d=True))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if ".lokr_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    pm.save_pretrained(str(folder))
    return pm
