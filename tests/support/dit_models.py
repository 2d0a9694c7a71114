"""Tiny diffusers DiT models (CPU, fp32, random weights) for tests that need no ComfyUI.

``build(family)`` returns a diffusers transformer of that family with hidden size 64..128 and one or
two blocks per numbered group, or calls ``pytest.skip`` when the installed diffusers lacks the class.
The sizes match :data:`COMFY_CONFIGS` (the same model built with ComfyUI's classes, used by
tools/comfy_dit_keylists.py (part ``tiny``) to write tests/support/dit_tiny_keys.json), so a ComfyUI-layout state dict
of that key list converts to this model with diffusers' single-file converters.

Families: ``flux``, ``sd3``, ``lumina2`` (grouped-query attention: 2 query heads, 1 key/value
head), ``zimage``, ``qwen_image``, ``wan21``.
"""
from __future__ import annotations

from typing import Any

import torch

DIFFUSERS: dict[str, tuple[str, dict[str, Any]]] = {
    "flux": ("FluxTransformer2DModel", dict(
        patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=32, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(8, 12, 12))),
    "sd3": ("SD3Transformer2DModel", dict(
        sample_size=8, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=64, num_attention_heads=2,
        joint_attention_dim=32, caption_projection_dim=128, pooled_projection_dim=32, out_channels=16,
        pos_embed_max_size=8)),
    "lumina2": ("Lumina2Transformer2DModel", dict(
        sample_size=8, patch_size=2, in_channels=16, hidden_size=64, num_layers=2, num_refiner_layers=1,
        num_attention_heads=2, num_kv_heads=1, multiple_of=16, ffn_dim_multiplier=None, axes_dim_rope=(8, 12, 12),
        axes_lens=(8, 8, 8), cap_feat_dim=32)),
    "zimage": ("ZImageTransformer2DModel", dict(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=64, n_layers=2, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, qk_norm=True, cap_feat_dim=32, axes_dims=[8, 12, 12], axes_lens=[8, 8, 8])),
    "qwen_image": ("QwenImageTransformer2DModel", dict(
        patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=32, num_attention_heads=2,
        joint_attention_dim=32, axes_dims_rope=(8, 12, 12))),
    "wan21": ("WanTransformer3DModel", dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=128, num_layers=2, rope_max_seq_len=32)),
}
"""family -> (diffusers class name, constructor kwargs)."""

COMFY_CONFIGS: dict[str, dict[str, Any]] = {
    "flux": dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=32,
                 hidden_size=64, mlp_ratio=4.0, num_heads=2, depth=2, depth_single_blocks=2, axes_dim=[8, 12, 12],
                 theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True, txt_ids_dims=[]),
    "sd3": dict(in_channels=16, out_channels=16, pos_embed_scaling_factor=None, patch_size=2, depth=2,
                num_patches=64, pos_embed_max_size=8, adm_in_channels=32, x_block_self_attn_layers=[], qk_norm=None,
                context_embedder_config={"target": "torch.nn.Linear",
                                         "params": {"in_features": 32, "out_features": 128}}),
    "lumina2": dict(image_model="lumina2", patch_size=2, in_channels=16, dim=64, cap_feat_dim=32, n_layers=2,
                    n_refiner_layers=1, n_heads=2, n_kv_heads=1, qk_norm=True, axes_dims=[8, 12, 12],
                    axes_lens=[8, 8, 8], multiple_of=16, ffn_dim_multiplier=4.0),
    "zimage": dict(image_model="lumina2", patch_size=2, in_channels=16, dim=64, cap_feat_dim=32, n_layers=2,
                   n_refiner_layers=1, n_heads=2, n_kv_heads=2, qk_norm=True, axes_dims=[8, 12, 12],
                   axes_lens=[8, 8, 8], z_image_modulation=True, ffn_dim_multiplier=8.0 / 3.0, multiple_of=2,
                   time_scale=1000.0, pad_tokens_multiple=32),
    "qwen_image": dict(image_model="qwen_image", patch_size=2, in_channels=64, out_channels=16, num_layers=2,
                       attention_head_dim=32, num_attention_heads=2, joint_attention_dim=32,
                       axes_dims_rope=[8, 12, 12]),
    "wan21": dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), in_dim=16, dim=64, ffn_dim=128,
                  freq_dim=32, text_dim=32, out_dim=16, num_heads=2, num_layers=2),
}
"""family -> ComfyUI unet_config of the same tiny model (read by tools/comfy_dit_keylists.py only)."""

FAMILIES = tuple(DIFFUSERS)


def build(family: str, seed: int = 0) -> torch.nn.Module:
    """A tiny diffusers model of ``family`` (one of FAMILIES), random weights from ``seed``, eval mode."""
    import diffusers

    cls_name, kwargs = DIFFUSERS[family]
    cls = getattr(diffusers, cls_name, None)
    if cls is None:
        import pytest
        pytest.skip(f"diffusers {diffusers.__version__} has no {cls_name}")
    torch.manual_seed(seed)
    return cls(**kwargs).eval()
