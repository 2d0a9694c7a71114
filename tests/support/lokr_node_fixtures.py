"""LoKr fixtures for the node tests, made with the real lycoris-lora ``LokrModule`` per layer.

The oracle is ``LokrModule.get_weight(shape)`` (the LyCORIS scale applied once; lycoris' own
``get_diff_weight`` / ``get_merged_weight`` apply it twice; docs/math.md, Scale) and, for DoRA modules,
lycoris' ``apply_weight_decompose`` on W + ΔW.
"""
from __future__ import annotations

import os

import torch
from torch import nn

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
