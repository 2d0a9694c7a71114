"""Helpers for tests and benchmarks that run inside a real ComfyUI (``COMFYUI_PATH``).

- :func:`setup_comfy`: put ComfyUI first on ``sys.path`` (``import nodes`` is ComfyUI's ``nodes.py``;
  this repository's ``nodes`` is only ever ``<pack>.nodes``), set ComfyUI's flags (:func:`main_args`: CPU unless
  ``LOKR_COMFY_DEVICE=cuda``, plus ``LOKR_COMFY_ARGS``) and fp32 text encoders, start dynamic VRAM
  where ``main.py`` would (ComfyUI 0.28.0 on NVIDIA), import ``comfy``.
- :func:`main_args`: the same flags for a ``main.py`` subprocess (``--cpu`` or nothing, then
  ``LOKR_COMFY_ARGS``, e.g. ``"--lowvram"`` or ``"--disable-dynamic-vram"``).
- :func:`load_pack` / :func:`pack_module`: import this repository the way ComfyUI imports a custom
  node folder (``tests.support.comfy_pack``), so the pack's nodes see the real ComfyUI.
- :func:`make_tiny_sd15`: a small SD1.5-shaped checkpoint (320 base channels, 2 levels, 1 block
  per level: ComfyUI detects it as SD15) with random weights: UNet, full CLIP-L, full VAE.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # imported by a script (benchmarks/, tools/): tests.support comes from this repository
    sys.path.append(str(ROOT))
from tests.support import comfy_pack  # noqa: E402  (before ComfyUI's folder, which has a ``tests`` package too)

PACK_NAME = "comfyui_lokr_pack"

TINY_UNET = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
                 adm_in_channels=None, in_channels=4, model_channels=320, num_res_blocks=[1, 1],
                 transformer_depth=[1, 1], channel_mult=[1, 2], transformer_depth_middle=1,
                 use_linear_in_transformer=False, context_dim=768, num_heads=8, transformer_depth_output=[1, 1, 1, 1],
                 use_temporal_attention=False, use_temporal_resblock=False, num_head_channels=-1)
VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def stop_process(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate ``proc`` (a ComfyUI server or a browser), killing it if it has not exited in ``timeout`` s."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def comfy_path() -> str | None:
    p = os.environ.get("COMFYUI_PATH")
    return p if p and os.path.isfile(os.path.join(p, "main.py")) else None


def comfy_device() -> str:
    """``LOKR_COMFY_DEVICE``: ``cpu`` (default) or ``cuda``, the device the real-ComfyUI tests run on."""
    dev = os.environ.get("LOKR_COMFY_DEVICE", "").strip().lower() or "cpu"
    if dev not in ("cpu", "cuda"):
        raise RuntimeError(f"LOKR_COMFY_DEVICE={dev!r}: expected cpu or cuda")
    return dev


def main_args() -> list[str]:
    """ComfyUI command-line flags for this run: ``--cpu`` unless on CUDA, then ``LOKR_COMFY_ARGS`` (split as a shell does)."""
    return (["--cpu"] if comfy_device() == "cpu" else []) + shlex.split(os.environ.get("LOKR_COMFY_ARGS", ""))


def _set_args(args: Any, parser: Any, flags: list[str]) -> None:
    """Set on ComfyUI's ``args`` every option ``flags`` give a non-default value (as if passed to main.py)."""
    parsed = parser.parse_args(flags)
    for name, value in vars(parsed).items():
        if value != parser.get_default(name):
            setattr(args, name, value)


def _start_dynamic_vram(args: Any) -> bool:
    """What ComfyUI 0.28.0's main.py does at start-up: dynamic VRAM on NVIDIA + torch >= 2.8 unless disabled.

    Call with ``args`` set and ``comfy.model_management`` not imported yet; False where this ComfyUI has
    no dynamic VRAM (before 0.28.0), the flags turn it off (``--cpu``, ``--disable-dynamic-vram``,
    ``--highvram``, ...), or comfy-aimdo does not start.
    """
    try:
        import comfy_aimdo.control  # type: ignore[import-not-found]
        from comfy.cli_args import enables_dynamic_vram  # type: ignore[import-not-found]
    except ImportError:
        return False
    if not enables_dynamic_vram():
        return False
    try:
        comfy_aimdo.control.init(simple_vram_headroom=None if args.reserve_vram is None
                                 else int(args.reserve_vram * 1024 ** 3))
    except TypeError:  # comfy-aimdo 0.4.9
        comfy_aimdo.control.init()
    import comfy.memory_management
    import comfy.model_management as mm
    import comfy.model_patcher

    if not (args.enable_dynamic_vram or (mm.is_nvidia() and not mm.is_wsl() and mm.torch_version_numeric >= (2, 8))):
        return False
    devices = mm.get_all_torch_devices()
    try:
        ok = comfy_aimdo.control.init_devices((d.index, int(args.vram_headroom * 1024 ** 3)) for d in devices)
    except TypeError:  # comfy-aimdo 0.4.9
        ok = comfy_aimdo.control.init_devices(d.index for d in devices)
    if ok:
        comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
        comfy.memory_management.aimdo_enabled = True
    return bool(ok)


def setup_comfy() -> Any:
    """Make ``comfy`` importable from COMFYUI_PATH (flags of :func:`main_args`, fp32 text encoder); returns ``comfy``."""
    path = comfy_path()
    if path is None:
        raise RuntimeError("COMFYUI_PATH is not set to a ComfyUI folder")
    mod = sys.modules.get("nodes")
    if mod is not None and not str(getattr(mod, "__file__", "")).startswith(path):
        for k in [k for k in sys.modules if k == "nodes" or k.startswith("nodes.")]:
            del sys.modules[k]
    if path not in sys.path[:1]:
        sys.path.insert(0, path)
    from comfy.cli_args import args, parser  # noqa: E402

    if "comfy.model_management" not in sys.modules:  # flags are read when model_management is imported
        _set_args(args, parser, main_args())
        args.fp32_text_enc = True
        _start_dynamic_vram(args)
    import comfy.model_management  # noqa: F401
    import comfy.sd  # noqa: F401
    import comfy.utils  # noqa: F401
    import comfy

    return comfy


def set_model_folders(kind: str, *paths: str | os.PathLike) -> None:
    """Make ``paths`` ComfyUI's only folders of model ``kind`` (``loras``, ``checkpoints``, ...).

    Each test module sets its own folders, replacing the previous module's: folders added on top of
    each other let an earlier module's file of the same name shadow a later one's.
    """
    import folder_paths

    for p in paths:
        os.makedirs(p, exist_ok=True)
    exts = folder_paths.folder_names_and_paths.get(kind, ([], {".safetensors"}))[1]
    folder_paths.folder_names_and_paths[kind] = ([str(p) for p in paths], exts)
    if hasattr(folder_paths, "filename_list_cache"):
        folder_paths.filename_list_cache.clear()


def load_pack() -> Any:
    """Import the repository as ComfyUI imports ``custom_nodes/<folder>/__init__.py`` (``tests.support.comfy_pack``).

    Under :data:`PACK_NAME`: a copy of its own, set up after ComfyUI (the CPU node tests load another).
    """
    return comfy_pack.load_pack(ROOT, PACK_NAME)


def pack_module(dotted: str) -> Any:
    """The module ``dotted`` of the pack :func:`load_pack` loads (e.g. ``"nodes.planning"``)."""
    return comfy_pack.pack_module(dotted, ROOT, PACK_NAME)


def _fill_(module: Any, seed: int) -> None:
    """Random weights scaled by fan-in; norm layers (GroupNorm / LayerNorm) get weight 1, bias 0; other 1-D
    parameters 0. (A zero norm weight, e.g. the UNet's ``out.0``, would make the model's output 0.)"""
    import torch

    g = torch.Generator().manual_seed(seed)
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    with torch.no_grad():
        for mod in module.modules():
            for name, p in mod.named_parameters(recurse=False):
                if not p.is_floating_point():
                    continue
                if isinstance(mod, norms):
                    p.fill_(1.0 if name == "weight" else 0.0)
                elif p.ndim <= 1:
                    p.zero_()
                else:
                    fan_in = max(1, p[0].numel())
                    p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def make_tiny_sd15(path: str | os.PathLike, dtype: Any = None, seed: int = 0) -> str:
    """Write a tiny SD1.5-shaped checkpoint (LDM keys, random weights) to ``path``; returns it."""
    import torch
    from safetensors.torch import save_file

    setup_comfy()
    import comfy.ops
    import comfy.sd1_clip
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    dtype = dtype or torch.float16
    unet = UNetModel(**TINY_UNET, operations=comfy.ops.manual_cast)
    _fill_(unet, seed)
    clip = comfy.sd1_clip.SDClipModel(device="cpu")
    _fill_(clip, seed + 1)
    vae = AutoencoderKL(ddconfig=VAE_DDCONFIG, embed_dim=4)
    _fill_(vae, seed + 2)
    sd = {}
    for prefix, m in (("model.diffusion_model.", unet), ("cond_stage_model.", clip), ("first_stage_model.", vae)):
        for k, v in m.state_dict().items():
            if k == "logit_scale" or "position_ids" in k:
                continue
            sd[prefix + k] = v.detach().to(dtype) if v.is_floating_point() else v.detach()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return str(path)


def cached_tiny_sd15(fallback_dir: str | os.PathLike) -> str:
    """The tiny checkpoint, made once per bench (``$COMFYUI_PATH/../ref/``) when that folder is writable."""
    ref = Path(comfy_path() or ".").parent / "ref"
    folder = ref if ref.is_dir() and os.access(ref, os.W_OK) else Path(fallback_dir)
    path = folder / "lokr_tiny_sd15_v2.safetensors"
    if not path.is_file():
        tmp = folder / f".lokr_tiny_sd15_{os.getpid()}.safetensors"
        make_tiny_sd15(tmp)
        os.replace(tmp, path)
    return str(path)


def load_checkpoint(path: str) -> tuple[Any, Any, Any]:
    """(MODEL, CLIP, VAE) through ComfyUI's own checkpoint loader."""
    import comfy.sd

    out = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True, embedding_directory=None)
    return out[0], out[1], out[2]


def patched_weights(patcher: Any, keys: list[str]) -> dict[str, Any]:
    """The weights ``keys`` of a ModelPatcher after ComfyUI patches them (patch_model), copied; then unpatched."""
    import comfy.model_management as mm

    mm.unload_all_models()
    patcher.patch_model()
    try:
        sd = patcher.model.state_dict()
        return {k: sd[k].detach().float().cpu().clone() for k in keys}
    finally:
        patcher.unpatch_model(patcher.offload_device)
