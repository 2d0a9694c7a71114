"""Write ComfyUI's own weight names and LoRA key maps of DiT models for the CPU suite (no ComfyUI there).

Run once in a ComfyUI venv (not part of the test suite):
``python tools/comfy_dit_keylists.py COMFY_DIR [full|tiny|text-encoders|all]`` (default all), each
part to its file in tests/support:

- ``full`` -> comfy_dit_keys.json (:func:`main`): every family's model built full size on the
  ``meta`` device with ComfyUI's model classes (no memory, no download); for each the family's block
  counts, the 2-D+ weights (``diffusion_model.<path>`` -> shape) of blocks 0 and 1 of every numbered
  group (first number in the key) (the rest is the same names with other numbers), and ComfyUI's
  LoRA key map (file name -> weight key, or [key, [dim, start, length]] for a row block) for the
  block-0 weights, less the names anyone can derive from the key (``diffusion_model.<path>``,
  ``lora_unet_<path with _>``);
- ``tiny`` -> dit_tiny_keys.json (:func:`tiny`): the tiny models of
  ``tests/support/dit_models.COMFY_CONFIGS`` (the same sizes as the tiny diffusers models of
  ``dit_models.build``) built with ComfyUI's classes: every state-dict key of the diffusion model
  (bare path) with its shape, and ComfyUI's LoRA key map for diffusers module paths (its
  ``transformer.<diffusers path>`` entries: diffusers path -> [ComfyUI weight key, [dim, start,
  length] or null, whether a function such as the scale/shift swap applies]);
- ``text-encoders`` -> comfy_te_keys.json (:func:`text_encoders`).
"""
from __future__ import annotations

import json
import os
import re
import sys

CONFIGS: dict[str, dict] = {
    "sd3": {"in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 24, "adm_in_channels": 2048,
            "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 1536}},
            "num_patches": 36864, "pos_embed_max_size": 192, "pos_embed_scaling_factor": None,
            "x_block_self_attn_layers": [], "qk_norm": None, "input_size": None},
    "sd35": {"in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 38, "adm_in_channels": 2048,
             "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 2432}},
             "num_patches": 36864, "pos_embed_max_size": 192, "pos_embed_scaling_factor": None,
             "x_block_self_attn_layers": [], "qk_norm": "rms", "input_size": None},
    "flux": {"image_model": "flux", "guidance_embed": True, "in_channels": 16, "out_channels": 16, "vec_in_dim": 768,
             "context_in_dim": 4096, "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 19,
             "depth_single_blocks": 38, "axes_dim": [16, 56, 56], "theta": 10000, "qkv_bias": True, "patch_size": 2,
             "txt_ids_dims": []},
    "flux2": {"image_model": "flux2", "in_channels": 128, "out_channels": 128, "vec_in_dim": None,
              "context_in_dim": 15360, "hidden_size": 6144, "mlp_ratio": 3.0, "num_heads": 48, "depth": 8,
              "depth_single_blocks": 48, "axes_dim": [32, 32, 32, 32], "theta": 2000, "qkv_bias": False,
              "patch_size": 1, "global_modulation": True, "mlp_silu_act": True, "ops_bias": False,
              "default_ref_method": "index", "ref_index_scale": 10.0, "txt_ids_dims": [3], "guidance_embed": True},
    "chroma": {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "in_dim": 64, "out_dim": 3072,
               "hidden_dim": 5120, "n_layers": 5, "context_in_dim": 4096, "hidden_size": 3072, "mlp_ratio": 4.0,
               "num_heads": 24, "depth": 19, "depth_single_blocks": 38, "axes_dim": [16, 56, 56], "theta": 10000,
               "qkv_bias": True, "patch_size": 1, "txt_ids_dims": [], "vec_in_dim": None},
    "auraflow": {"max_seq": 4096, "cond_seq_dim": 2048, "n_double_layers": 4, "n_layers": 36},
    "pixart_sigma": {"image_model": "pixart_sigma", "num_heads": 16, "patch_size": 2, "hidden_size": 1152,
                     "in_channels": 4, "depth": 28, "model_max_length": 300, "input_size": 128,
                     "pe_interpolation": 2, "micro_condition": False},
    "hunyuan_dit": {"image_model": "hydit1", "depth": 40, "hidden_size": 1408, "mlp_ratio": 4.3637,
                    "size_cond": True, "use_style_cond": True},
    "hunyuan_video": {"image_model": "hunyuan_video", "in_channels": 16, "patch_size": [1, 2, 2], "out_channels": 16,
                      "vec_in_dim": 768, "axes_dim": [16, 56, 56], "meanflow": False, "context_in_dim": 4096,
                      "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 20,
                      "depth_single_blocks": 40, "theta": 256, "qkv_bias": True, "byt5": False,
                      "guidance_embed": True, "use_cond_type_embedding": False, "vision_in_dim": None,
                      "meanflow_sum": False},
    "hidream": {"image_model": "hidream", "attention_head_dim": 128, "axes_dims_rope": [64, 32, 32],
                "caption_channels": [4096, 4096], "max_resolution": [128, 128], "in_channels": 16,
                "llama_layers": list(range(32)) + [31] * 16, "num_attention_heads": 20, "num_routed_experts": 4,
                "num_activated_experts": 2, "num_layers": 16, "num_single_layers": 32, "out_channels": 16,
                "patch_size": 2, "text_emb_dim": 2048},
    "lumina2": {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 2304, "cap_feat_dim": 2304,
                "n_layers": 26, "qk_norm": True, "n_heads": 24, "n_kv_heads": 8, "axes_dims": [32, 32, 32],
                "axes_lens": [300, 512, 512], "rope_theta": 10000.0, "ffn_dim_multiplier": 4.0},
    "zimage": {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 3840, "cap_feat_dim": 2560,
               "n_layers": 30, "qk_norm": True, "n_heads": 30, "n_kv_heads": 30, "axes_dims": [32, 48, 48],
               "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0,
               "z_image_modulation": True, "time_scale": 1000.0, "pad_tokens_multiple": 32},
    "qwen_image": {"image_model": "qwen_image", "in_channels": 64, "num_layers": 60},
    "wan21": {"image_model": "wan2.1", "dim": 5120, "out_dim": 16, "num_heads": 40, "ffn_dim": 13824,
              "num_layers": 40, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True,
              "cross_attn_norm": True, "eps": 1e-6, "in_dim": 16, "model_type": "t2v"},
    "wan22_5b": {"image_model": "wan2.1", "dim": 3072, "out_dim": 48, "num_heads": 24, "ffn_dim": 14336,
                 "num_layers": 30, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True,
                 "cross_attn_norm": True, "eps": 1e-6, "in_dim": 48, "model_type": "t2v"},
    "ltxv": {"image_model": "ltxv", "num_layers": 28, "attention_head_dim": 64, "cross_attention_dim": 2048},
    "ace": {"audio_model": "ace", "attention_head_dim": 128, "in_channels": 8, "inner_dim": 2560, "max_height": 16,
            "max_position": 32768, "max_width": 32768, "mlp_ratio": 2.5, "num_attention_heads": 20, "num_layers": 24,
            "out_channels": 8, "patch_size": [16, 1], "rope_theta": 1000000.0, "speaker_embedding_dim": 512,
            "text_embedding_dim": 768, "ssl_encoder_depths": [8, 8], "ssl_latent_dims": [1024, 768],
            "ssl_names": ["mert", "m-hubert"], "lyric_encoder_vocab_size": 6693, "lyric_hidden_size": 1024},
    "mochi": {"image_model": "mochi_preview", "depth": 48, "patch_size": 2, "num_heads": 24, "hidden_size_x": 3072,
              "hidden_size_y": 1536, "mlp_ratio_x": 4.0, "mlp_ratio_y": 4.0, "learn_sigma": False, "in_channels": 12,
              "qk_norm": True, "qkv_bias": False, "out_bias": True, "attn_drop": 0.0, "patch_embed_bias": True,
              "posenc_preserve_area": True, "timestep_mlp_bias": True, "attend_to_padding": False,
              "timestep_scale": 1000.0, "use_t5": True, "t5_feat_dim": 4096, "t5_token_length": 256,
              "rope_theta": 10000.0},
    "kandinsky5": {"image_model": "kandinsky5", "model_dim": 2560, "axes_dims": (32, 48, 48),
                   "rope_scale_factor": (1.0, 1.0, 1.0), "time_dim": 512, "ff_dim": 10240, "visual_embed_dim": 64,
                   "num_text_blocks": 2, "num_visual_blocks": 50},
    "omnigen2": {"image_model": "omnigen2", "axes_dim_rope": [40, 40, 40], "axes_lens": [1024, 1664, 1664],
                 "ffn_dim_multiplier": None, "hidden_size": 2520, "in_channels": 16, "multiple_of": 256,
                 "norm_eps": 1e-05, "num_attention_heads": 21, "num_kv_heads": 7, "num_layers": 32,
                 "num_refiner_layers": 2, "out_channels": None, "patch_size": 2, "text_feat_dim": 2048,
                 "timestep_scale": 1000.0},
    "krea2": {"image_model": "krea2", "features": 6144, "channels": 16, "patch": 2, "layers": 28, "heads": 48,
              "kvheads": 12, "txtlayers": 12, "txtdim": 2560},
    "ernie": {"image_model": "ernie"},
    "cosmos_predict2": {"image_model": "cosmos_predict2", "max_img_h": 240, "max_img_w": 240, "max_frames": 128,
                        "in_channels": 16, "out_channels": 16, "patch_spatial": 2, "patch_temporal": 1,
                        "model_channels": 2048, "concat_padding_mask": True, "crossattn_emb_channels": 1024,
                        "pos_emb_cls": "rope3d", "pos_emb_learnable": True, "pos_emb_interpolation": "crop",
                        "min_fps": 1, "max_fps": 30, "use_adaln_lora": True, "adaln_lora_dim": 256,
                        "num_blocks": 28, "num_heads": 16, "extra_per_block_abs_pos_emb": False,
                        "rope_h_extrapolation_ratio": 4.0, "rope_w_extrapolation_ratio": 4.0,
                        "rope_t_extrapolation_ratio": 1.0, "extra_h_extrapolation_ratio": 1.0,
                        "extra_w_extrapolation_ratio": 1.0, "extra_t_extrapolation_ratio": 1.0,
                        "rope_enable_fps_modulation": False},
}
"""family -> ComfyUI unet_config (what ComfyUI's detection gives for the released full-size model)."""

HERE = os.path.dirname(os.path.abspath(__file__))

KEEP = re.compile(r"\.(\d+)\.")


def _short(key: str) -> bool:
    """True for keys whose first number (block index) is 0 or 1, or that have none (the stored sample)."""
    m = KEEP.search(key + ".")
    return m is None or int(m.group(1)) < 2


def _first_block(key: str) -> bool:
    """True when the first number in ``key`` (its block index) is 0, or it has none."""
    m = KEEP.search(key + ".")
    return m is None or m.group(1) == "0"


def _groups(keys) -> dict[str, int]:
    """{numbered group path: count}, e.g. {"double_blocks": 19}."""
    out: dict[str, int] = {}
    for k in keys:
        m = re.match(r"^diffusion_model\.((?:[a-z_0-9]+\.)*?[a-z_]+)\.(\d+)\.", k)
        if m:
            out[m.group(1)] = max(out.get(m.group(1), 0), int(m.group(2)) + 1)
    return out


def _comfy(comfy_dir: str):
    """Import ComfyUI from ``comfy_dir`` on the CPU; returns torch."""
    if comfy_dir not in sys.path:
        sys.path.insert(0, comfy_dir)
    import torch
    from comfy.cli_args import args
    args.cpu = True  # read when comfy.model_management is imported
    return torch


def _write(result: dict, out_path: str, **fmt) -> None:
    with open(out_path, "w") as f:
        json.dump(result, f, indent=0, sort_keys=True, **fmt)
    print(f"wrote {out_path} ({os.path.getsize(out_path)} bytes)")


def _build(torch, fam: str, cfg: dict, device: str):
    """(ComfyUI model config, model) for a unet_config; (config or None, None) with the reason on
    stderr when ComfyUI has no config for it or cannot build it. ``meta``: no memory; ``cpu``: fp32."""
    import comfy.model_detection

    mc = comfy.model_detection.model_config_from_unet_config(dict(cfg))
    if mc is None:
        print(f"{fam}: no ComfyUI model config matches", file=sys.stderr)
        return None, None
    if device == "cpu":
        mc.set_inference_dtype(torch.float32, None)
    try:
        return mc, mc.get_model({}, device=device)
    except Exception as e:
        if device != "meta":
            print(f"{fam}: {type(e).__name__}: {e}", file=sys.stderr)
            return mc, None
    try:  # some classes make helper tensors that need the default device to be meta
        with torch.device("meta"):
            return mc, mc.get_model({})
    except Exception as e:  # report, go on
        print(f"{fam}: {type(e).__name__}: {e}", file=sys.stderr)
        return mc, None


def main(comfy_dir: str, out_path: str) -> None:
    torch = _comfy(comfy_dir)
    import comfy.lora

    result = {}
    for fam, cfg in CONFIGS.items():
        mc, model = _build(torch, fam, cfg, "meta")
        if model is None:
            continue
        sd = model.state_dict()
        weights = {k: list(v.shape) for k, v in sd.items() if k.endswith(".weight") and v.ndim >= 2}
        kmap = comfy.lora.model_lora_keys_unet(model, {})
        derived = lambda n, k: n in (k[:-len(".weight")], "lora_unet_" + k[len("diffusion_model."):-len(".weight")].replace(".", "_"))
        sample = {n: (t if isinstance(t, str) else [t[0], list(t[1]) if t[1] is not None else None])
                  for n, t in kmap.items() if (t if isinstance(t, str) else t[0]) in weights
                  and not (isinstance(t, str) and derived(n, t))
                  and _first_block(t if isinstance(t, str) else t[0]) and _short(t if isinstance(t, str) else t[0])}
        result[fam] = {"model_class": type(model).__name__, "config_class": type(mc).__name__,
                       "groups": _groups(weights), "weights": {k: s for k, s in weights.items() if _short(k)},
                       "lora_keys": dict(sorted(sample.items()))}
        print(f"{fam}: {type(model).__name__} {len(weights)} weights, {len(result[fam]['weights'])} kept, "
              f"{len(sample)} lora names, groups {result[fam]['groups']}")
    _write(result, out_path, separators=(",", ":"))


def tiny(comfy_dir: str, out_path: str) -> None:
    """dit_tiny_keys.json: ComfyUI's keys and diffusers-name map of the tiny DiT models (module docstring)."""
    torch = _comfy(comfy_dir)
    sys.path.insert(0, os.path.join(HERE, ".."))
    import comfy.lora
    from tests.support.dit_models import COMFY_CONFIGS

    result = {}
    for fam, cfg in COMFY_CONFIGS.items():
        mc, model = _build(torch, fam, cfg, "cpu")
        if model is None:
            continue
        sd = model.diffusion_model.state_dict()
        kmap = comfy.lora.model_lora_keys_unet(model, {})
        diffusers_map = {}
        for name, t in kmap.items():
            if not name.startswith("transformer."):
                continue
            key, offset, fn = (t, None, None) if isinstance(t, str) else (tuple(t) + (None,))[:3]
            diffusers_map[name[len("transformer."):]] = [key[len("diffusion_model."):],
                                                          list(offset) if offset else None, fn is not None]
        result[fam] = {"model_class": type(model.diffusion_model).__name__,
                       "keys": {k: list(v.shape) for k, v in sd.items()}, "diffusers_map": diffusers_map}
        print(f"{fam}: {type(mc).__name__} {len(sd)} keys")
    _write(result, out_path)


TEXT_ENCODERS = {"sd3": ("sd3_clip", "SD3ClipModel"), "flux": ("flux", "FluxClipModel"),
                 "hidream": ("hidream", "HiDreamTEModel"), "qwen_image": ("qwen_image", "QwenImageTEModel"),
                 "zimage": ("z_image", "ZImageTEModel"), "lumina2": ("lumina2", "LuminaModel"),
                 "wan": ("wan", "WanT5Model")}
"""family -> (comfy.text_encoders module, class) of the text-encoder model ComfyUI builds for it."""


def text_encoders(comfy_dir: str, out_path: str) -> None:
    """Write ComfyUI's text-encoder weights of each DiT family (as its CLIP object holds them:
    ``<encoder name>.transformer.<path>``, blocks 0 and 1 only, 2-D+ weights with shapes; a
    checkpoint ComfyUI saves has them under ``text_encoders.``) and ComfyUI's LoRA key map for them
    (file name -> weight key), from full-size models built on the ``meta`` device."""
    import importlib

    torch = _comfy(comfy_dir)
    import comfy.lora

    result = {}
    for fam, (mod, cls) in TEXT_ENCODERS.items():
        with torch.device("meta"):
            model = getattr(importlib.import_module(f"comfy.text_encoders.{mod}"), cls)(device="meta")
        sd = {k: list(v.shape) for k, v in model.state_dict().items()}

        class Keys:  # the key map reads only the state dict's keys
            def state_dict(self):
                return sd

        kmap = comfy.lora.model_lora_keys_clip(Keys(), {})
        weights = {k: s for k, s in sd.items() if k.endswith(".weight") and len(s) >= 2 and _short(k)}
        result[fam] = {"model_class": cls, "weights": weights,
                       "lora_keys": {n: k for n, k in sorted(kmap.items()) if k in weights}}
        print(f"{fam}: {cls} {len(sd)} keys, {len(weights)} kept, {len(result[fam]['lora_keys'])} LoRA names")
    _write(result, out_path, separators=(",", ":"))


PARTS = {"full": (main, "comfy_dit_keys.json"), "tiny": (tiny, "dit_tiny_keys.json"),
         "text-encoders": (text_encoders, "comfy_te_keys.json")}

if __name__ == "__main__":
    part = sys.argv[2] if len(sys.argv) > 2 else "all"
    for name, (fn, file) in PARTS.items():
        if part in (name, "all"):
            fn(sys.argv[1], os.path.join(HERE, "..", "tests", "support", file))
