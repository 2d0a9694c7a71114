"""Time to patch every weight of an SD1.5-size UNet in a real ComfyUI: our LoKr loader vs core's LoraLoader.

Both read the same LoKr file (kohya names, one split-W2 module per Linear / conv weight of the UNet:
attention, feed-forward, proj, resnet 3x3 and 1x1 convs, ~260 modules) and patch the same
ModelPatcher through ComfyUI's own ``patch_model`` (what happens when a sampler loads the model).
Reported per side: ``prepare`` (read file + build patches: ``load_lokr`` + ``plan_patches`` +
``add_patches`` vs ``load_torch_file`` + ``load_lora_for_models``) and ``patch`` (``patch_model``),
best of ``--repeat`` runs, and the ratio core / ours (> 1: ours faster). The patched weights of the
two sides are compared too (max relative difference).

Needs ``COMFYUI_PATH`` (see ../shared/tools/README.md); runs on CUDA when available (``--device``).
    COMFYUI_PATH=$BENCH/ComfyUI $BENCH/venv/bin/python benchmarks/bench_comfyui.py [--dtype fp16] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SD15_UNET = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
                 adm_in_channels=None, in_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
                 transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
                 use_linear_in_transformer=False, context_dim=768, num_heads=8,
                 transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], use_temporal_attention=False,
                 use_temporal_resblock=False, num_head_channels=-1)


def build_patcher(dtype, device):
    """A ModelPatcher holding an SD1.5-size UNet (ComfyUI's own classes) with random weights."""
    import torch
    import comfy.model_patcher
    import comfy.supported_models

    cfg = comfy.supported_models.SD15(dict(SD15_UNET))
    cfg.set_inference_dtype(dtype, None)
    model = cfg.get_model({}, "model.diffusion_model.", device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            p.copy_((torch.randn(p.shape, generator=g) * 0.02).to(p.dtype))
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


def lokr_file(patcher, path: str, factor: int = 8, rank: int = 8) -> int:
    """Write a LoKr for every 2-D / 4-D UNet weight (W1 full (f, f), W2 split rank ``rank``); returns the count."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    sd = {}
    for key, w in patcher.model.state_dict().items():
        if not key.startswith("diffusion_model.") or not key.endswith(".weight") or w.ndim not in (2, 4):
            continue
        out, inp = int(w.shape[0]), int(w.shape[1])
        if out % factor or inp % factor or min(out, inp) < 64:
            continue
        k = int(w.shape[2] * w.shape[3]) if w.ndim == 4 else 1
        name = "lora_unet_" + key[len("diffusion_model."):-len(".weight")].replace(".", "_")
        sd[f"{name}.lokr_w1"] = torch.randn(factor, factor, generator=g) * 0.05
        sd[f"{name}.lokr_w2_a"] = torch.randn(out // factor, rank, generator=g) * 0.05
        sd[f"{name}.lokr_w2_b"] = torch.randn(rank, inp // factor * k, generator=g) * 0.05
        sd[f"{name}.alpha"] = torch.tensor(float(rank) / 2)
    save_file(sd, path)
    return len([k for k in sd if k.endswith(".alpha")])


def timed_patch(patcher, device):
    """Seconds for ComfyUI's patch_model on ``patcher`` (all models unloaded first), and the patched weights."""
    import torch
    import comfy.model_management as mm

    mm.unload_all_models()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    patcher.patch_model(device_to=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    keys = sorted(patcher.patches)
    sd = patcher.model.state_dict()
    sample = {k: sd[k].detach().float().cpu().clone() for k in keys[:: max(1, len(keys) // 24)]}
    patcher.unpatch_model(torch.device("cpu"))
    return dt, sample


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", choices=["fp16", "fp32", "bf16"], default="fp16", help="UNet weight dtype")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    a = ap.parse_args(argv)
    if not os.environ.get("COMFYUI_PATH"):
        print("bench_comfyui.py: set COMFYUI_PATH to a ComfyUI folder (see ../shared/tools/README.md)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "tests" / "comfyui"))
    import comfy_env

    comfy_env.setup_comfy()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cuda" if (a.device == "auto" and torch.cuda.is_available()) or a.device == "cuda" else "cpu")
    if device.type == "cuda":
        from comfy.cli_args import args as cargs
        cargs.cpu = False
    import comfy.sd
    import comfy.utils

    comfy_env.load_pack()
    import importlib
    io = importlib.import_module(comfy_env.PACK_NAME + ".lokr_core.io")
    loaders = importlib.import_module(comfy_env.PACK_NAME + ".nodes.loaders")
    dtype = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    base = build_patcher(dtype, device)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench_lokr.safetensors")
        n = lokr_file(base, path)
        res = {"ours": [], "core": []}
        samples = {}
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            w = io.load_lokr(path)
            plan = loaders.plan_patches(w, base, None)
            m, _ = loaders.apply_plan(plan, base, None, 1.0, 0.0)
            prep = time.perf_counter() - t0
            dt, samples["ours"] = timed_patch(m, device)
            res["ours"].append((prep, dt))
            del m, plan, w
            t0 = time.perf_counter()
            sd = comfy.utils.load_torch_file(path, safe_load=True)
            m, _ = comfy.sd.load_lora_for_models(base, None, sd, 1.0, 0.0)
            prep = time.perf_counter() - t0
            dt, samples["core"] = timed_patch(m, device)
            res["core"].append((prep, dt))
            del m, sd
    diff = max(float(((samples["ours"][k] - samples["core"][k]).abs().max() /
                      samples["core"][k].abs().max().clamp_min(1e-12))) for k in samples["core"])
    best = {s: (min(p for p, _ in v), min(d for _, d in v)) for s, v in res.items()}
    print(f"bench_comfyui: SD1.5-size UNet ({sum(p.numel() for p in base.model.diffusion_model.parameters()) / 1e6:.0f} M "
          f"params, {a.dtype}), {n} LoKr modules (split W2, rank 8), device {device}, torch threads "
          f"{torch.get_num_threads()}, best of {a.repeat}")
    print(f"{'':8}{'prepare s':>12}{'patch s':>12}{'total s':>12}")
    for s in ("ours", "core"):
        p, d = best[s]
        print(f"{s:8}{p:12.3f}{d:12.3f}{p + d:12.3f}")
    (po, do), (pc, dc) = best["ours"], best["core"]
    print(f"{'core/ours':8}{pc / po:12.2f}{dc / do:12.2f}{(pc + dc) / (po + do):12.2f}")
    print(f"max relative difference of patched weights (ours vs core, {len(samples['core'])} sampled weights): {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
