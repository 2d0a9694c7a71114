"""The embedded end-to-end demo behind ``lokr demo``: no downloads, a few seconds on a CPU.

Builds a tiny SD-shaped diffusers UNet and CLIP text encoder from configs with random weights,
injects LoKr (PEFT-style config, every layout: split, decompose_both, Tucker conv), saves the
adapters in both formats (PEFT dir, LyCORIS/kohya safetensors), reloads them, checks the two give
the same ΔW, applies the LyCORIS file to fresh copies of the base models (merge and bypass), merges
it into a diffusers-folder checkpoint, and reports what it measured.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..base.peft_names import strip_peft_prefix

TINY_UNET_CONFIG = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
)
"""An SD1.x-shaped UNet (cross-attention, resnets, up/down samplers) at 1/10 of the width."""

TINY_CLIP_CONFIG = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        projection_dim=32, vocab_size=1000, max_position_embeddings=77)

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                "conv1", "conv2", "conv_shortcut"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def build_models(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(UNet2DConditionModel, CLIPTextModel) with random weights from the tiny configs above."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET_CONFIG).eval()
    text = CLIPTextModel(CLIPTextConfig(**TINY_CLIP_CONFIG)).eval()
    return unet, text


def randomize_adapters(model: torch.nn.Module, seed: int, std: float = 0.2) -> None:
    """Give every LoKr factor (``*.lokr_*`` parameter: ours or PEFT's) N(0, std²) values from ``seed``,
    as a trained adapter would have; parameters are visited in ``named_parameters`` order."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lokr_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def run_demo(out_dir: str | Path, seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo, writing its files under ``out_dir``; returns the measured figures.

    Keys: ``files`` (paths written), ``unet_modules`` / ``text_modules`` (LoKr modules), ``layouts``,
    ``max_rel_delta_peft_vs_lycoris`` (ΔW of the PEFT dir vs the converted LyCORIS file),
    ``max_rel_merge_error`` (apply_lokr merge vs merge_and_unload weights),
    ``rel_output_error_bypass`` (UNet output, bypass vs merged), ``checkpoint_rel_error``
    (merged diffusers checkpoint vs merge_and_unload), ``seconds``.
    """
    from ..formats.io import load_lokr
    from ..ops.report import format_report, summarize
    from ..tuner.model import merge_and_unload

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    unet, text = build_models(seed)
    base_unet, base_text = copy.deepcopy(unet), copy.deepcopy(text)
    peft_unet, peft_text = _inject_and_save(unet, text, out, seed, log)
    w_unet, w_text = load_lokr(peft_unet), load_lokr(peft_text)
    combined = _convert_to_lycoris(w_unet, w_text, out, log)
    lyco = load_lokr(combined)
    worst = _compare_deltas(lyco, w_unet, w_text, log)
    reference_unet, reference_text = merge_and_unload(unet), merge_and_unload(text)
    merged_unet, merge_err = _check_merge(combined, base_unet, base_text, reference_unet, reference_text, log)
    bypass_err = _check_bypass(lyco, base_unet, merged_unet, seed, log)
    ckpt_err, merged_dir = _check_checkpoint(combined, base_unet, base_text, reference_unet, out, log)
    log("8. report")
    log(format_report(summarize(lyco)))
    return {
        "files": [str(p) for p in (peft_unet, peft_text, combined, merged_dir)],
        "unet_modules": len(w_unet.module_names), "text_modules": len(w_text.module_names),
        "layouts": sorted({lyco.modules[n].layout for n in lyco.module_names}),
        "max_rel_delta_peft_vs_lycoris": worst, "max_rel_merge_error": merge_err,
        "rel_output_error_bypass": bypass_err, "checkpoint_rel_error": ckpt_err,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _inject_and_save(unet: torch.nn.Module, text: torch.nn.Module, out: Path, seed: int,
                     log: Callable[[str], None]) -> tuple[Path, Path]:
    """Steps 1-2: inject LoKr (every layout) into both models, give it trained-like values, save as PEFT dirs."""
    from ..tuner.config import LoKrConfig
    from ..tuner.model import inject, save_peft_adapter

    log("1. inject LoKr (PEFT-style config) into a tiny SD-shaped UNet and CLIP text encoder")
    unet_cfg = LoKrConfig(r=4, alpha=2, target_modules=UNET_TARGETS, decompose_both=True, decompose_factor=8,
                          use_effective_conv2d=True, init_weights=False)
    text_cfg = LoKrConfig(r=4, alpha=4, target_modules=TEXT_TARGETS, init_weights=False)
    inject(unet, unet_cfg)
    inject(text, text_cfg)
    randomize_adapters(unet, seed + 1)
    randomize_adapters(text, seed + 2)

    log("2. save both adapters as PEFT directories")
    return save_peft_adapter(unet, out / "peft_unet", unet_cfg), save_peft_adapter(text, out / "peft_text_encoder", text_cfg)


def _convert_to_lycoris(w_unet: Any, w_text: Any, out: Path, log: Callable[[str], None]) -> Path:
    """Step 3: both PEFT adapters as one LyCORIS/kohya file (``lora_unet_*`` + ``lora_te_*``)."""
    from ..formats.io import save_lokr
    from ..keymap import kohya_name

    log("3. convert them to one LyCORIS/kohya safetensors file (lora_unet_* + lora_te_*)")
    lyco_unet = save_lokr(w_unet, out / "demo_unet_part.safetensors", "lycoris",
                          name_map={n: kohya_name("unet", strip_peft_prefix(n)) for n in w_unet.module_names})
    lyco_text = save_lokr(w_text, out / "demo_te_part.safetensors", "lycoris",
                          name_map={n: kohya_name("te", strip_peft_prefix(n)) for n in w_text.module_names})
    combined = _combine([lyco_unet, lyco_text], out / "demo_lokr.safetensors")
    for part in (lyco_unet, lyco_text):
        part.unlink()
    return combined


def _compare_deltas(lyco: Any, w_unet: Any, w_text: Any, log: Callable[[str], None]) -> float:
    """Step 4: the largest relative ΔW difference between the PEFT dirs and the LyCORIS file."""
    from ..keymap import kohya_name

    log("4. reload and compare ΔW: PEFT dir vs LyCORIS file (PEFT alpha/r vs LyCORIS rule)")
    worst = 0.0
    for src, comp in ((w_unet, "unet"), (w_text, "te")):
        for name in src.module_names:
            ours = lyco.delta(kohya_name(comp, strip_peft_prefix(name)))
            worst = max(worst, _rel(ours, src.delta(name)))
    log(f"   {len(lyco.module_names)} modules, max relative ΔW difference {worst:.2e}")
    return worst


def _check_merge(combined: Path, base_unet: torch.nn.Module, base_text: torch.nn.Module,
                 reference_unet: torch.nn.Module, reference_text: torch.nn.Module,
                 log: Callable[[str], None]) -> tuple[torch.nn.Module, float]:
    """Step 5: apply_lokr(merge) on fresh copies vs merge_and_unload; returns (merged UNet, max rel error)."""
    from ..ops.apply import apply_lokr

    log("5. apply the LyCORIS file to fresh base models (merge) and compare with merge_and_unload")
    merged_unet, merged_text = copy.deepcopy(base_unet), copy.deepcopy(base_text)
    apply_lokr({"unet": merged_unet, "text_encoder": merged_text}, combined, mode="merge")
    ref_params = dict(reference_unet.state_dict()) | {f"te.{k}": v for k, v in reference_text.state_dict().items()}
    got_params = dict(merged_unet.state_dict()) | {f"te.{k}": v for k, v in merged_text.state_dict().items()}
    merge_err = max(_rel(got_params[k], ref_params[k]) for k in ref_params if ref_params[k].is_floating_point())
    log(f"   max relative weight difference {merge_err:.2e}")
    return merged_unet, merge_err


def _check_bypass(lyco: Any, base_unet: torch.nn.Module, merged_unet: torch.nn.Module, seed: int,
                  log: Callable[[str], None]) -> float:
    """Step 6: UNet outputs in bypass mode vs the merged UNet (relative difference)."""
    from ..ops.apply import apply_lokr

    log("6. bypass mode (weights untouched, ΔW never built for Linear / 1x1 conv): UNet outputs vs merged")
    bypass_unet = copy.deepcopy(base_unet)
    handle = apply_lokr(bypass_unet, lyco, mode="bypass")  # the LoKrWeights itself, no re-read
    g = torch.Generator().manual_seed(seed + 3)
    sample = torch.randn(1, 4, 8, 8, generator=g)
    context = torch.randn(1, 7, 32, generator=g)
    with torch.no_grad():
        y_bypass = bypass_unet(sample, 10, context).sample
        y_merged = merged_unet(sample, 10, context).sample
    handle.remove()
    bypass_err = _rel(y_bypass, y_merged)
    log(f"   relative output difference {bypass_err:.2e}")
    return bypass_err


def _check_checkpoint(combined: Path, base_unet: torch.nn.Module, base_text: torch.nn.Module,
                      reference_unet: torch.nn.Module, out: Path, log: Callable[[str], None]) -> tuple[float, Path]:
    """Step 7: merge_checkpoint into a diffusers folder vs merge_and_unload; returns (max rel error, folder)."""
    from safetensors.torch import load_file

    from ..ops.merge import merge_checkpoint

    log("7. merge the file into a diffusers-folder checkpoint, streamed tensor by tensor")
    base_unet.save_pretrained(out / "base" / "unet")
    base_text.save_pretrained(out / "base" / "text_encoder")
    result = merge_checkpoint(out / "base", [(combined, 1.0)], out / "merged", device="cpu")
    merged_file = load_file(str(out / "merged" / "unet" / "diffusion_pytorch_model.safetensors"))
    ckpt_err = max(_rel(merged_file[k], reference_unet.state_dict()[k]) for k in merged_file)
    log(f"   {result.merged_tensors} of {result.tensors} tensors patched, max relative difference {ckpt_err:.2e}")
    return ckpt_err, out / "merged"


def _combine(parts: list[Path], path: Path) -> Path:
    """One safetensors file holding the tensors (and metadata) of ``parts``, written atomically."""
    from safetensors import safe_open

    from ..base.atomic import atomic_save_file

    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, str] = {}
    for part in parts:
        with safe_open(str(part), "pt") as f:
            metadata.update(f.metadata() or {})
            tensors.update({k: f.get_tensor(k) for k in f.keys()})
    atomic_save_file(tensors, path, metadata)
    return path
