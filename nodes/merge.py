"""LoKr Merge Checkpoint: MODEL + CLIP + VAE with their patches baked in -> one .safetensors.

Every patched weight (LoKr patches from the loaders, and any other patch on the MODEL / CLIP)
is computed with ComfyUI's own ``comfy.lora.calculate_weight`` in fp32, one weight at a time,
cast to the chosen dtype, named as ComfyUI's CheckpointSave names it
(``model_config.state_dict_for_saving`` / ``process_*_state_dict_for_saving``), and written
atomically (temp file + rename, ``lokr_core.atomic``) into the output folder with metadata saying
which LoKr files, strengths and modules were merged. A ComfyUI ProgressBar advances per weight.
The input models are never changed.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import torch

from . import core
from .loaders import CATEGORY, LoKrFormatError
from .patch import LoKrPatchMixin

DTYPES = {"keep": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _calculate(patches: list, weight: torch.Tensor, key: str) -> torch.Tensor:
    """ComfyUI's calculate_weight when available; else the same loop for our own patch objects."""
    try:
        import comfy.lora  # type: ignore[import-not-found]
    except Exception:
        comfy = None
    if comfy is not None:
        return comfy.lora.calculate_weight(patches, weight, key)
    for strength, v, strength_model, offset, function in patches:
        if not isinstance(v, LoKrPatchMixin):
            raise LoKrFormatError(f"weight {key!r}: a non-LoKr patch needs ComfyUI to be merged")
        target = weight.narrow(offset[0], offset[1], offset[2]) if offset is not None else weight
        if strength_model != 1.0:
            target *= strength_model
        out = v.calculate_weight(target, key, strength, strength_model, offset, function)
        if offset is None:
            weight = out
    return weight


def patched_state_dict(patcher: Any, owner: Any, dtype: torch.dtype | None,
                       step: Callable[[], None] | None = None) -> dict[str, torch.Tensor]:
    """``owner.state_dict()`` with ``patcher.patches`` applied (fp32 math), cast to ``dtype`` (None: keep)."""
    sd = owner.state_dict()
    patches = getattr(patcher, "patches", {}) if patcher is not None else {}
    out = {}
    for key, w in sd.items():
        if key in patches and patches[key]:
            res = _calculate(patches[key], w.detach().to(torch.float32, copy=True), key)
            res = res.to(w.dtype if dtype is None else dtype)
            if step is not None:
                step()
        else:
            res = w.detach()
            if dtype is not None and res.is_floating_point():
                res = res.to(dtype)
        out[key] = res
    return out


def merged_lokr_sources(*patchers: Any) -> list[dict]:
    """[{file, strength, modules}] of the LoKr patches the patchers carry (for the file metadata)."""
    seen: dict[tuple, dict] = {}
    for p in patchers:
        for plist in (getattr(p, "patches", {}) or {}).values():
            for strength, v, *_ in plist:
                if isinstance(v, LoKrPatchMixin):
                    rec = seen.setdefault((v.source, float(strength)), {"file": v.source, "strength": float(strength),
                                                                         "modules": 0})
                    rec["modules"] += 1
    return list(seen.values())


def checkpoint_state_dict(model: Any, clip: Any, vae: Any, dtype: torch.dtype | None,
                          step: Callable[[], None] | None = None) -> dict[str, torch.Tensor]:
    """The merged checkpoint's tensors, with CheckpointSave's key names where ComfyUI provides them."""
    base = model.model
    unet_full = patched_state_dict(model, base, dtype, step)
    unet = {k[len("diffusion_model."):]: v for k, v in unet_full.items() if k.startswith("diffusion_model.")}
    clip_sd = patched_state_dict(getattr(clip, "patcher", None), clip.cond_stage_model, dtype, step) if clip else None
    if clip is not None and hasattr(clip, "tokenizer") and hasattr(clip.tokenizer, "state_dict"):
        clip_sd.update(clip.tokenizer.state_dict())
    vae_sd = None
    if vae is not None:
        vae_sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
                  for k, v in (vae.get_sd() if hasattr(vae, "get_sd") else vae.first_stage_model.state_dict()).items()}
    cfg = getattr(base, "model_config", None)
    if cfg is not None and hasattr(base, "state_dict_for_saving"):
        sd = base.state_dict_for_saving(clip_sd, vae_sd, None)  # names + extra keys (v_pred, ...) as CheckpointSave
        sd.update(cfg.process_unet_state_dict_for_saving(dict(unet)))
        return sd
    sd = {"model.diffusion_model." + k: v for k, v in unet.items()}
    sd.update({"cond_stage_model." + k: v for k, v in (clip_sd or {}).items()})
    sd.update({"first_stage_model." + k: v for k, v in (vae_sd or {}).items()})
    return sd


def output_path(filename_prefix: str) -> str:
    """Next free ``<output>/<prefix>_00001_.safetensors`` (ComfyUI's own numbering when available)."""
    import folder_paths  # type: ignore[import-not-found]
    out_dir = folder_paths.get_output_directory()
    if getattr(folder_paths, "get_save_image_path", None):
        folder, name, counter, _sub, _ = folder_paths.get_save_image_path(filename_prefix, out_dir)
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, f"{name}_{counter:05}_.safetensors")
    real_out = os.path.realpath(out_dir)
    path = os.path.realpath(os.path.join(out_dir, filename_prefix))
    if not path.startswith(real_out + os.sep):
        raise LoKrFormatError(f"filename_prefix {filename_prefix!r} leaves the output folder; expected a name inside it")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    counter = 1
    while os.path.exists(f"{path}_{counter:05}_.safetensors"):
        counter += 1
    return f"{path}_{counter:05}_.safetensors"


def _unpatch_loaded_models() -> None:
    """Let ComfyUI restore every loaded model's original weights, so patches are not applied twice.

    A ModelPatcher that sampled has its patches baked into the shared model's weights (originals in
    its backup); unloading restores them. Outside ComfyUI there is nothing to do.
    """
    try:
        import comfy.model_management  # type: ignore[import-not-found]
    except Exception:
        return
    comfy.model_management.unload_all_models()


def _progress(total: int) -> Callable[[], None] | None:
    try:
        import comfy.utils  # type: ignore[import-not-found]
        bar = comfy.utils.ProgressBar(total)
    except Exception:
        return None
    return lambda: bar.update(1)


class LoKrMergeCheckpoint:
    """LoKr Merge Checkpoint node: writes the merged checkpoint, returns its path."""

    CATEGORY = CATEGORY
    DESCRIPTION = ("Bakes the LoKr (and any other) patches on MODEL and CLIP into a new .safetensors checkpoint with "
                   "the VAE, in the output folder: fp32 math, dtype of your choice, atomic write, metadata naming "
                   "the merged LoKr files and strengths.")
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the written checkpoint.",)
    OUTPUT_NODE = True
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "model": ("MODEL", {"tooltip": "Diffusion model with LoKr patches (from a LoKr loader)."}),
            "clip": ("CLIP", {"tooltip": "Text encoder with LoKr patches (from a LoKr loader)."}),
            "vae": ("VAE", {"tooltip": "VAE saved into the checkpoint unchanged."}),
            "filename_prefix": ("STRING", {"default": "checkpoints/lokr_merged",
                                           "tooltip": "Name (and sub-folder) inside ComfyUI's output folder."}),
            "dtype": (list(DTYPES), {"default": "fp16", "tooltip": "Storage dtype of the merged weights; 'keep' keeps "
                                     "each weight's current dtype. The merge itself is always computed in fp32."}),
        }}

    def merge(self, model: Any, clip: Any, vae: Any, filename_prefix: str = "checkpoints/lokr_merged",
              dtype: str = "fp16") -> dict:
        if dtype not in DTYPES:
            raise LoKrFormatError(f"dtype {dtype!r}; expected one of {list(DTYPES)}")
        _unpatch_loaded_models()
        path = output_path(filename_prefix)
        n = sum(1 for p in (model, getattr(clip, "patcher", None)) if p is not None for v in p.patches.values() if v)
        sd = checkpoint_state_dict(model, clip, vae, DTYPES[dtype], _progress(max(n, 1)))
        meta = {"lokr_merged": json.dumps(merged_lokr_sources(model, getattr(clip, "patcher", None))),
                "lokr_merge_dtype": dtype, "lokr_merge_tool": "comfyui-lokr LoKr Merge Checkpoint"}
        core("base.atomic").atomic_save_file(sd, path, meta)
        return {"ui": {"text": [path]}, "result": (path,)}


NODES = {"LoKrMergeCheckpoint": (LoKrMergeCheckpoint, "LoKr Merge Checkpoint")}
