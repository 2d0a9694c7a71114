"""Tiny DiT models built with the running ComfyUI's own classes (CPU, fp32, random weights).

``build(family)`` returns a ``comfy.model_patcher.ModelPatcher`` over a ``comfy.model_base`` model of
that family with a config small enough for a test (hidden sizes 32..64, one or two blocks), or
raises ``pytest.skip`` naming the ComfyUI version when the running ComfyUI has no such class.
Weights are random (std 0.02, norms 1) so every weight takes part in the output.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

FAMILIES = ("flux", "sd3", "lumina2", "qwen_image", "wan21")
"""Families this module can build (ComfyUI names of their ``image_model`` / class)."""


def _flux() -> tuple[str, str, dict]:
    import comfy.ldm.flux.model as flux_model
    uc = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=32, hidden_size=64,
              mlp_ratio=4.0, num_heads=2, depth=2, depth_single_blocks=2, axes_dim=[8, 12, 12], theta=10000,
              patch_size=2, qkv_bias=True, guidance_embed=True)
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(flux_model.FluxParams)}:
        uc["txt_ids_dims"] = []
    return "Flux", "Flux", uc


def _sd3() -> tuple[str, str, dict]:
    uc = dict(in_channels=16, out_channels=16, pos_embed_scaling_factor=None, patch_size=2, depth=2,
              num_patches=64, pos_embed_max_size=8, adm_in_channels=32, context_embedder_config={
                  "target": "torch.nn.Linear", "params": {"in_features": 32, "out_features": 128}},
              x_block_self_attn_layers=[], qk_norm=None)
    return "SD3", "SD3", uc


def _lumina2() -> tuple[str, str, dict]:
    uc = dict(image_model="lumina2", patch_size=2, in_channels=16, dim=64, cap_feat_dim=32, n_layers=2,
              n_refiner_layers=1, n_heads=2, n_kv_heads=2, qk_norm=True, axes_dims=[8, 12, 12], axes_lens=[8, 8, 8],
              multiple_of=16, ffn_dim_multiplier=1.0)
    return "Lumina2", "Lumina2", uc


def _qwen_image() -> tuple[str, str, dict]:
    uc = dict(image_model="qwen_image", patch_size=2, in_channels=64, out_channels=16, num_layers=2,
              attention_head_dim=32, num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=[8, 12, 12])
    return "QwenImage", "QwenImage", uc


def _wan21() -> tuple[str, str, dict]:
    uc = dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), in_dim=16, dim=64, ffn_dim=128,
              freq_dim=32, text_dim=32, out_dim=16, num_heads=2, num_layers=2)
    return "WAN21_T2V", "WAN21", uc


_CONFIGS: dict[str, Callable[[], tuple[str, str, dict]]] = {
    "flux": _flux, "sd3": _sd3, "lumina2": _lumina2, "qwen_image": _qwen_image, "wan21": _wan21}


def _fill(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in name or name.endswith(".scale")):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


def build(family: str, seed: int = 3) -> Any:
    """A ModelPatcher over a tiny ``family`` model (one of FAMILIES) on the CPU in fp32."""
    import pytest
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    cfg_name, base_name, uc = _CONFIGS[family]()
    cfg_cls = getattr(comfy.supported_models, cfg_name, None)
    base_cls = getattr(comfy.model_base, base_name, None)
    if cfg_cls is None or base_cls is None:
        import comfyui_version  # type: ignore[import-not-found]
        pytest.skip(f"ComfyUI {comfyui_version.__version__} has no {cfg_name} model class")
    cfg = cfg_cls(uc)
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({}, device="cpu")
    _fill(model, seed)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
