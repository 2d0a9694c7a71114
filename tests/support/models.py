"""Model builders for tests: tiny random diffusers UNets / CLIP text encoders, and full-size SD
configs built on the ``meta`` device (no memory, no download)."""
from __future__ import annotations

import torch

from lokr_core.commands.demo_run import TINY_CLIP_CONFIG, TINY_UNET_CONFIG
from lokr_core.keymap.families import CLIP_L, OPENCLIP_G, OPENCLIP_H, SD15_UNET, SD21_UNET, SDXL_UNET  # noqa: F401

# the full-size SD configs are the library's own reference configs (one copy)
TINY_UNET = TINY_UNET_CONFIG
TINY_CLIP = TINY_CLIP_CONFIG


def unet(config: dict, device: str = "cpu", seed: int = 0):
    """A diffusers UNet2DConditionModel from ``config``; on ``meta`` it costs no memory."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    with torch.device(device):
        return UNet2DConditionModel(**config).eval()


def clip_text(config: dict, device: str = "cpu", seed: int = 0, with_projection: bool = False):
    """A transformers CLIPTextModel (or ...WithProjection) from ``config``."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    with torch.device(device):
        return cls(CLIPTextConfig(**config)).eval()


def tiny_unet(seed: int = 0):
    return unet(TINY_UNET, seed=seed)


def tiny_clip(seed: int = 0):
    return clip_text(TINY_CLIP, seed=seed)


def unet_inputs(batch: int = 2, seed: int = 1, cross_dim: int = 32, size: int = 8):
    """(sample, timestep, encoder_hidden_states) for a tiny UNet forward."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, size, size, generator=g), torch.tensor([10] * batch),
            torch.randn(batch, 7, cross_dim, generator=g))
