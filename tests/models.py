"""Model builders for tests: tiny random diffusers UNets / CLIP text encoders, and full-size SD
configs built on the ``meta`` device (no memory, no download)."""
from __future__ import annotations

import torch

from lokr_core.demo import TINY_CLIP_CONFIG, TINY_UNET_CONFIG

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8,
)
SD21_UNET = dict(SD15_UNET, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              projection_dim=768, vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu")
OPENCLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                  projection_dim=1280, vocab_size=49408, max_position_embeddings=77, hidden_act="gelu")
OPENCLIP_H = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                  projection_dim=1024, vocab_size=49408, max_position_embeddings=77, hidden_act="gelu")
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
