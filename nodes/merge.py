"""LoKr Merge Checkpoint: MODEL + CLIP + VAE with their patches baked in -> one .safetensors.

The file holds what ComfyUI's CheckpointSave would write for the same inputs (same keys, names and
extra keys such as ``v_pred``), with the patched weights computed here instead:

- every patched weight (LoKr patches from the loaders, and any other patch on the MODEL / CLIP) is
  computed with ComfyUI's own ``comfy.lora.calculate_weight`` in fp32, one weight at a time, and
  cast to the chosen dtype (``keep``: the weight's own dtype, as CheckpointSave stores it);
- names come from the model's ``state_dict_for_saving`` in the form this ComfyUI offers (its
  parameters are read: the UNet is passed first where it takes one), extra keys as CheckpointSave
  adds them;
- the file is written atomically (temp file + rename, ``lokr_core.base.atomic``) into the output folder,
  with metadata naming the merged LoKr files, strengths and module counts; the free space is
  checked against the estimated size before the merge starts. ComfyUI's progress bar advances per
  weight (``progress.comfy_progress``); Cancel stops the merge, also while the file is written
  (between tensors: the temporary file is removed). The inputs are never changed.
"""
from __future__ import annotations

import inspect
import json
import os
from typing import Any, Callable

import torch

from ..lokr_core.base.atomic import atomic_save_file, check_room, interruptible, write_error
from ..lokr_core.base.errors import LoKrFormatError
from ..lokr_core.base.progress import StepCounter
from .bypass import bypass_set_of
from .common import CATEGORY
from .patch import LoKrPatchMixin
from .progress import comfy_interrupt, comfy_progress

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


def merge_patches(patcher: Any) -> dict[str, list]:
    """{weight key: ComfyUI patch tuples} to bake in: ``patcher.patches``, then its bypass entries.

    A LoKr loaded with ``apply = bypass`` is added in the forward pass (``nodes.bypass``), never to
    the weights, so ComfyUI's CheckpointSave would drop it; here each bypass entry becomes the patch
    ``(strength, adapter, 1.0, offset, function)`` after the weight's regular patches (bypass adds
    its term to the output of the patched layer, which is that order). The patcher is not changed.
    """
    if patcher is None:
        return {}
    out = {k: list(v) for k, v in (getattr(patcher, "patches", None) or {}).items() if v}
    for e in bypass_set_of(patcher).entries:
        out.setdefault(e.key, []).append((e.strength, e.adapter, 1.0, e.offset, e.function))
    return out


_PLAIN_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def check_mergeable(patcher: Any, owner: Any) -> None:
    """LoKrFormatError naming the weight when a patched weight is not a plain fp32 / fp16 / bf16 tensor.

    fp8 weights (ComfyUI rounds them stochastically when it saves), scaled-fp8 weights (a
    ``scale_weight`` / ``weight_scale`` beside them) and ``QuantizedTensor`` weights are refused
    before any work: merging them tensor by tensor would not give what ComfyUI's CheckpointSave writes.
    """
    patches = merge_patches(patcher)
    if not patches:
        return
    sd = owner.state_dict()
    for key in patches:
        w = sd.get(key)
        if w is None:
            continue
        module = key.rsplit(".", 1)[0]
        scaled = any(f"{module}.{s}" in sd for s in ("scale_weight", "weight_scale"))
        if type(w).__name__ == "QuantizedTensor" or w.dtype not in _PLAIN_FLOATS or scaled:
            raise LoKrFormatError(f"weight {key!r} is stored as {type(w).__name__} {w.dtype}"
                                  f"{' with a scale' if scaled else ''}; LoKr Merge Checkpoint merges fp32 / fp16 / "
                                  "bf16 models (load the checkpoint with weight_dtype 'default'); nothing was written")


def patched_state_dict(patcher: Any, owner: Any, dtype: torch.dtype | None,
                       step: Callable[[], None] | None = None) -> dict[str, torch.Tensor]:
    """``owner.state_dict()`` with :func:`merge_patches` applied (fp32 math), cast to ``dtype`` (None: keep)."""
    sd = owner.state_dict()
    patches = merge_patches(patcher)
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
        for plist in merge_patches(p).values():
            for strength, v, *_ in plist:
                if isinstance(v, LoKrPatchMixin):
                    rec = seen.setdefault((v.source, float(strength)), {"file": v.source, "strength": float(strength),
                                                                         "modules": 0})
                    rec["modules"] += 1
    return list(seen.values())


def saving_takes_unet(base: Any) -> bool:
    """Whether ``base.state_dict_for_saving`` takes the UNet state dict as its first argument.

    Read from the method's parameters, not from a version number: ComfyUI 0.3.64 / 0.8.0 have
    ``(clip_state_dict, vae_state_dict, clip_vision_state_dict)`` and read the UNet from the model;
    newer ComfyUI (0.28.0) has ``(unet_state_dict, clip_state_dict, ...)``. Anything else is refused.
    """
    params = list(inspect.signature(base.state_dict_for_saving).parameters)
    if params[:1] == ["unet_state_dict"]:
        return True
    if params[:1] == ["clip_state_dict"]:
        return False
    raise LoKrFormatError(f"ComfyUI's {type(base).__name__}.state_dict_for_saving{tuple(params)}: unknown signature; "
                          "expected (clip_state_dict, vae_state_dict, ...) or (unet_state_dict, clip_state_dict, ...)")


def checkpoint_extra_keys(model: Any) -> dict[str, torch.Tensor]:
    """The extra tensors ComfyUI's CheckpointSave writes for ``model`` (a ModelPatcher).

    As ``comfy_extras/nodes_model_merging.py: save_checkpoint``: ``edm_vpred.sigma_max`` /
    ``sigma_min`` for a v-prediction EDM ``model_sampling`` (also one set by a ModelSampling node),
    ``v_pred`` for a v-prediction model, and ``ztsnr`` when its ``model_sampling`` has zero terminal SNR.
    These keys are how ComfyUI's CheckpointLoader recognises such a model again.
    """
    try:
        import comfy.model_base  # type: ignore[import-not-found]
        import comfy.model_sampling  # type: ignore[import-not-found]
    except Exception:
        return {}
    extra = {}
    sampling = model.get_model_object("model_sampling")
    if isinstance(sampling, comfy.model_sampling.ModelSamplingContinuousEDM) and \
            isinstance(sampling, comfy.model_sampling.V_PREDICTION):
        extra["edm_vpred.sigma_max"] = torch.tensor(float(sampling.sigma_max), dtype=torch.float32)
        extra["edm_vpred.sigma_min"] = torch.tensor(float(sampling.sigma_min), dtype=torch.float32)
    if model.model.model_type == comfy.model_base.ModelType.V_PREDICTION:
        extra["v_pred"] = torch.tensor([])
        if getattr(sampling, "zsnr", False):
            extra["ztsnr"] = torch.tensor([])
    return extra


def checkpoint_state_dict(model: Any, clip: Any, vae: Any, dtype: torch.dtype | None,
                          step: Callable[[], None] | None = None) -> dict[str, torch.Tensor]:
    """The merged checkpoint's tensors: the keys and names ComfyUI's CheckpointSave writes.

    ``model``: a ModelPatcher; ``clip`` / ``vae``: ComfyUI's CLIP / VAE (or None). Patched weights
    come from :func:`patched_state_dict`; naming and extra keys (``v_pred``, ...) from the model's
    ``state_dict_for_saving`` in whichever form this ComfyUI offers (:func:`saving_takes_unet`) and
    :func:`checkpoint_extra_keys`. Without ComfyUI's model config, plain LDM prefixes are used.
    """
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
    if cfg is None or not hasattr(base, "state_dict_for_saving"):
        sd = {"model.diffusion_model." + k: v for k, v in unet.items()}
        sd.update({"cond_stage_model." + k: v for k, v in (clip_sd or {}).items()})
        sd.update({"first_stage_model." + k: v for k, v in (vae_sd or {}).items()})
        return sd
    if saving_takes_unet(base):
        sd = base.state_dict_for_saving(unet, clip_state_dict=clip_sd, vae_state_dict=vae_sd, clip_vision_state_dict=None)
    else:  # the model's own (unpatched) UNet is named there; the merged one replaces it under the same names
        sd = base.state_dict_for_saving(clip_state_dict=clip_sd, vae_state_dict=vae_sd, clip_vision_state_dict=None)
        sd.update(cfg.process_unet_state_dict_for_saving(dict(unet)))
    sd.update(checkpoint_extra_keys(model))
    return sd


def estimated_size(model: Any, clip: Any, vae: Any, dtype: torch.dtype | None) -> int:
    """Bytes of the checkpoint :func:`checkpoint_state_dict` would give (tensor data; the header is
    small): every float weight of the model, CLIP and VAE in ``dtype`` (None: its own)."""
    owners = [model.model, getattr(clip, "cond_stage_model", None),
              getattr(vae, "first_stage_model", None) if vae is not None else None]
    total = 0
    for owner in owners:
        for t in (owner.state_dict().values() if owner is not None else ()):
            size = torch.empty((), dtype=dtype).element_size() if dtype is not None and t.is_floating_point() \
                else t.element_size()
            total += t.numel() * size
    return total


def prefix_path(filename_prefix: str) -> str:
    """``<output>/<filename_prefix>`` resolved; LoKrFormatError when it leads outside the output folder."""
    import folder_paths  # type: ignore[import-not-found]
    real_out = os.path.realpath(folder_paths.get_output_directory())
    path = os.path.realpath(os.path.join(real_out, filename_prefix))
    if not path.startswith(real_out + os.sep):
        raise LoKrFormatError(f"filename_prefix {filename_prefix!r} leaves the output folder; expected a name inside it")
    return path


def output_path(filename_prefix: str) -> str:
    """Next free ``<output>/<prefix>_00001_.safetensors`` (ComfyUI's own numbering when available).

    ComfyUI's ``get_save_image_path`` creates a missing sub-folder, so this is called only when the
    merged tensors are ready to be written.
    """
    import folder_paths  # type: ignore[import-not-found]
    path = prefix_path(filename_prefix)
    if getattr(folder_paths, "get_save_image_path", None):
        folder, name, counter, _sub, _ = folder_paths.get_save_image_path(filename_prefix,
                                                                          folder_paths.get_output_directory())
        return os.path.join(folder, f"{name}_{counter:05}_.safetensors")
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


class LoKrMergeCheckpoint:
    """LoKr Merge Checkpoint node: writes the merged checkpoint, returns its path."""

    CATEGORY = CATEGORY
    DESCRIPTION = ("Bakes the LoKr (and any other) patches on MODEL and CLIP, bypass-mode LoKrs included, into a new "
                   ".safetensors checkpoint with the VAE, in the output folder: the keys ComfyUI's Save Checkpoint "
                   "writes, fp32 math, dtype of your choice, atomic write, metadata naming the merged LoKr files and "
                   "strengths.")
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
        check_room(prefix_path(filename_prefix), estimated_size(model, clip, vae, DTYPES[dtype]))  # before the merge
        check_mergeable(model, model.model)
        if clip is not None:
            check_mergeable(getattr(clip, "patcher", None), clip.cond_stage_model)
        _unpatch_loaded_models()
        n = sum(len(merge_patches(p)) for p in (model, getattr(clip, "patcher", None)))
        sd = checkpoint_state_dict(model, clip, vae, DTYPES[dtype], StepCounter(comfy_progress(), max(n, 1)).step)
        meta = {"lokr_merged": json.dumps(merged_lokr_sources(model, getattr(clip, "patcher", None))),
                "lokr_merge_dtype": dtype, "lokr_merge_tool": "comfyui-lokr LoKr Merge Checkpoint"}
        try:  # ComfyUI's numbering creates a missing sub-folder
            path = output_path(filename_prefix)
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except OSError as exc:
            raise write_error(prefix_path(filename_prefix), exc) from None
        with interruptible(comfy_interrupt()):
            atomic_save_file(sd, path, meta)
        return {"ui": {"text": [path]}, "result": (path,)}


NODES = {"LoKrMergeCheckpoint": (LoKrMergeCheckpoint, "LoKr Merge Checkpoint")}
