"""Small stand-ins for the parts of ComfyUI the nodes touch, for CI tests without ComfyUI.

- :class:`ModelPatcher`: ``model`` (an nn.Module whose state-dict keys look like ComfyUI's,
  ``diffusion_model.*``), ``patches``, ``injections`` (``set_injections`` / ``get_injections`` /
  ``remove_injections``; ``inject_model`` / ``eject_model`` call every injection's ``inject`` /
  ``eject`` as ComfyUI does when it loads / unloads), ``clone()``, ``add_patches()`` with ComfyUI's exact
  semantics (keys filtered by the model's state dict, ``(strength, patch, strength_model, offset,
  function)`` tuples), ``model_state_dict()``, and :meth:`patched_state_dict` which runs every patch
  the way ``comfy.lora.calculate_weight`` does (fp32 copy, ``strength_model`` first, the adapter's
  ``calculate_weight``, cast back) without changing the model.
- :class:`CLIP`: ``cond_stage_model`` + ``patcher``, ``clone()``, ``add_patches()``.
- :func:`folder_paths_module`: a module object with ``get_filename_list`` / ``get_full_path`` /
  ``get_folder_paths`` / ``get_output_directory`` over real temporary folders.
- :func:`tiny_unet` / :func:`tiny_clip`: nn.Modules with SD1.5-style ComfyUI key names.
"""
from __future__ import annotations

import copy
import os
import types
from typing import Any

import torch
from torch import nn


def module_tree(layers: dict[str, nn.Module]) -> nn.Module:
    """An nn.Module holding ``layers`` at their dotted paths (parents created as needed)."""
    root = nn.Module()
    for path, layer in layers.items():
        parent = root
        parts = path.split(".")
        for p in parts[:-1]:
            if not hasattr(parent, p):
                parent.add_module(p, nn.Module())
            parent = getattr(parent, p)
        parent.add_module(parts[-1], layer)
    return root


UNET_LAYERS = {
    "diffusion_model.time_embed.0": lambda: nn.Linear(32, 64),
    "diffusion_model.input_blocks.0.0": lambda: nn.Conv2d(4, 32, 3, padding=1),
    "diffusion_model.input_blocks.1.1.proj_in": lambda: nn.Conv2d(32, 32, 1),
    "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q": lambda: nn.Linear(32, 32, bias=False),
    "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k": lambda: nn.Linear(24, 32, bias=False),
    "diffusion_model.middle_block.1.proj_out": lambda: nn.Linear(64, 64),
    "diffusion_model.output_blocks.3.0.in_layers.2": lambda: nn.Conv2d(64, 32, 3, padding=1),
    "diffusion_model.output_blocks.5.1.transformer_blocks.0.ff.net.2": lambda: nn.Linear(128, 32),
}
CLIP_LAYERS = {
    "clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj": lambda: nn.Linear(32, 32),
    "clip_l.transformer.text_model.encoder.layers.0.mlp.fc1": lambda: nn.Linear(32, 64),
}


def tiny_unet(dtype: torch.dtype = torch.float32) -> nn.Module:
    """A ComfyUI-keyed stand-in diffusion model (random weights)."""
    return module_tree({k: f() for k, f in UNET_LAYERS.items()}).to(dtype)


def tiny_clip(dtype: torch.dtype = torch.float32) -> nn.Module:
    """A ComfyUI-keyed stand-in CLIP-L text encoder (random weights)."""
    return module_tree({k: f() for k, f in CLIP_LAYERS.items()}).to(dtype)


def _identity(a: torch.Tensor) -> torch.Tensor:
    return a


class ModelPatcher:
    """ComfyUI ModelPatcher stand-in: same ``add_patches`` / ``clone`` contract, no device logic."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.patches: dict[str, list] = {}
        self.injections: dict[str, list] = {}
        self.is_injected = False

    def clone(self) -> "ModelPatcher":
        n = ModelPatcher(self.model)
        n.patches = {k: list(v) for k, v in self.patches.items()}
        n.injections = {k: list(v) for k, v in self.injections.items()}  # ComfyUI: i.copy() per key
        return n

    def set_injections(self, key: str, injections: list) -> None:
        self.injections[key] = injections

    def get_injections(self, key: str) -> list | None:
        return self.injections.get(key)

    def remove_injections(self, key: str) -> None:
        self.injections.pop(key, None)

    def inject_model(self) -> None:
        """Call every injection's ``inject(self)`` once (ComfyUI does this when it loads the model)."""
        if self.is_injected:
            return
        for injections in self.injections.values():
            for inj in injections:
                inj.inject(self)
                self.is_injected = True

    def eject_model(self) -> None:
        """Call every injection's ``eject(self)`` (ComfyUI does this when it unloads the model)."""
        if not self.is_injected:
            return
        for injections in self.injections.values():
            for inj in injections:
                inj.eject(self)
        self.is_injected = False

    def model_state_dict(self, filter_prefix: str | None = None) -> dict[str, torch.Tensor]:
        sd = self.model.state_dict()
        return {k: v for k, v in sd.items() if filter_prefix is None or k.startswith(filter_prefix)}

    def add_patches(self, patches: dict, strength_patch: float = 1.0, strength_model: float = 1.0) -> list:
        p = set()
        model_sd = self.model.state_dict()
        for k in patches:
            offset = function = None
            if isinstance(k, str):
                key = k
            else:
                key, offset = k[0], k[1]
                if len(k) > 2:
                    function = k[2]
            if key in model_sd:
                p.add(k)
                self.patches.setdefault(key, []).append((strength_patch, patches[k], strength_model, offset, function))
        return list(p)

    def patched_state_dict(self, compute_dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Every weight with its patches applied (new tensors, the model is untouched).

        ``compute_dtype``: the dtype of the copy handed to the patches (ComfyUI 0.3.64: fp32;
        0.8.0: ``lora_compute_dtype``, fp16 on recent GPUs). The result is cast to the weight's dtype.
        """
        out = {}
        for key, w in self.model.state_dict().items():
            if key not in self.patches:
                out[key] = w.clone()
                continue
            temp = w.to(compute_dtype, copy=True)
            for strength, v, strength_model, offset, function in self.patches[key]:
                target = temp.narrow(offset[0], offset[1], offset[2]) if offset is not None else temp
                if strength_model != 1.0:
                    target *= strength_model
                res = v.calculate_weight(target, key, strength, strength_model, offset, function or _identity,
                                         torch.float32, None)
                if offset is None:
                    temp = res
            out[key] = temp.to(w.dtype)
        return out


class CLIP:
    """ComfyUI CLIP stand-in: ``cond_stage_model``, ``patcher``, ``clone()``, ``add_patches()``."""

    def __init__(self, cond_stage_model: nn.Module, patcher: ModelPatcher | None = None) -> None:
        self.cond_stage_model = cond_stage_model
        self.patcher = patcher or ModelPatcher(cond_stage_model)

    def clone(self) -> "CLIP":
        return CLIP(self.cond_stage_model, self.patcher.clone())

    def add_patches(self, patches: dict, strength_patch: float = 1.0, strength_model: float = 1.0) -> list:
        return self.patcher.add_patches(patches, strength_patch, strength_model)


def snapshot(patcher: ModelPatcher) -> tuple[dict[str, torch.Tensor], dict[str, list], dict[str, list]]:
    """(weights, patch lists, injection lists) of a patcher, copied: compare before/after to prove nothing changed."""
    return ({k: v.clone() for k, v in patcher.model.state_dict().items()},
            {k: list(v) for k, v in patcher.patches.items()},
            {k: list(v) for k, v in getattr(patcher, "injections", {}).items()})


def unchanged(patcher: ModelPatcher, snap: tuple[dict, dict, dict]) -> bool:
    weights, patches, injections = snap
    now = patcher.model.state_dict()
    return (set(now) == set(weights) and all(torch.equal(now[k], weights[k]) for k in now)
            and {k: list(v) for k, v in patcher.patches.items()} == patches
            and {k: list(v) for k, v in getattr(patcher, "injections", {}).items()} == injections)


def folder_paths_module(loras: str, output: str) -> types.ModuleType:
    """A ``folder_paths`` stand-in over the real folders ``loras`` and ``output``."""
    mod = types.ModuleType("folder_paths")

    def get_folder_paths(name: str) -> list[str]:
        return [loras] if name == "loras" else []

    def get_filename_list(name: str) -> list[str]:
        out = []
        for root in get_folder_paths(name):
            for dirpath, _, files in os.walk(root):
                for f in files:
                    out.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
        return sorted(out)

    def get_full_path(name: str, filename: str) -> str | None:
        for root in get_folder_paths(name):
            p = os.path.join(root, filename)
            if os.path.isfile(p):
                return p
        return None

    def get_full_path_or_raise(name: str, filename: str) -> str:
        p = get_full_path(name, filename)
        if p is None:
            raise FileNotFoundError(f"Model in folder '{name}' with filename '{filename}' not found.")
        return p

    mod.get_folder_paths = get_folder_paths
    mod.get_filename_list = get_filename_list
    mod.get_full_path = get_full_path
    mod.get_full_path_or_raise = get_full_path_or_raise
    mod.get_output_directory = lambda: output
    mod.get_save_image_path = None
    return mod


class WeightAdapterBase:
    """Stand-in of ``comfy.weight_adapter.base.WeightAdapterBase`` (interface only)."""

    name: str
    loaded_keys: set
    weights: list

    def calculate_weight(self, weight, key, strength, strength_model, offset, function,
                         intermediate_dtype=torch.float32, original_weight=None):
        raise NotImplementedError


def fake_comfy_weight_adapter() -> dict[str, types.ModuleType]:
    """sys.modules entries making ``from comfy.weight_adapter.base import WeightAdapterBase`` work."""
    comfy = types.ModuleType("comfy")
    wa = types.ModuleType("comfy.weight_adapter")
    base = types.ModuleType("comfy.weight_adapter.base")
    base.WeightAdapterBase = WeightAdapterBase
    comfy.weight_adapter = wa
    wa.base = base
    return {"comfy": comfy, "comfy.weight_adapter": wa, "comfy.weight_adapter.base": base}


def deep(obj: Any) -> Any:
    return copy.deepcopy(obj)
