"""fp8, scaled-fp8 / QuantizedTensor, bf16 and fp16 diffusion models inside a real ComfyUI (COMFYUI_PATH).

The tiny SD1.5 checkpoint is rewritten with its UNet stored as:
- ``fp8``: every UNet weight float8_e4m3fn, loaded with ``model_options={"dtype": float8_e4m3fn}``
  (what UNETLoader's fp8 weight_dtype does; ``comfy.ops.manual_cast`` casts on the fly);
- ``scaled_fp8``: Linear weights fp8 with a per-layer ``scale_weight`` and the ``scaled_fp8`` marker
  key (0.3.64: ``scaled_fp8_ops``; 0.8.0 / 0.28.0 turn it into ``QuantizedTensor`` layers);
- ``comfy_quant`` (0.8.0 / 0.28.0): Linear weights fp8 + ``weight_scale`` + per-layer ``comfy_quant``
  metadata (``mixed_precision_ops``, ``comfy.quant_ops.QuantizedTensor`` weights);
- ``bf16`` / ``fp16``: loaded with ``model_options={"dtype": ...}``.

Patch mode: the weights ComfyUI writes for our LoKr are bit-identical to what it writes for core's
own additive patch ``("diff", (ΔW_fp32,))`` with ΔW from lycoris-lora (same dequantize -> fp32 add ->
requantize / stochastic-rounding path); for fp8 / bf16 / fp16 also equal to
``comfy.float.stochastic_rounding(W_fp32 + ΔW, dtype, seed(key))`` (the fp32 reference rounded
once). The LoKr factors are dyadic (k / 64, k / 16) so ΔW is exact in fp32 whatever the summation
order: any difference is a different rounding path, not float noise.
Bypass: the stored (quantized) weights are bit-identical after sampling, each layer adds exactly
``layer(x; ΔW)`` to the base output (float tolerance), and is close to patch mode.
Run: ``COMFYUI_PATH=$BENCH/ComfyUI $BENCH/venv/bin/python -m pytest -q tests/comfyui/test_comfyui_fp8.py``.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

import comfy_env
from tests.support.lokr_node_fixtures import lycoris_module, state_dict_of

U = "diffusion_model."
P = "model." + U
FP8 = torch.float8_e4m3fn
TARGETS = {  # kohya name -> (ComfyUI module, LokrModule options); alpha = dim: scale 1
    "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q":
        (U + "input_blocks.1.1.transformer_blocks.0.attn1.to_q", dict(dim=4, alpha=4.0, factor=8, decompose_both=True)),
    "lora_unet_middle_block_1_transformer_blocks_0_ff_net_2":
        (U + "middle_block.1.transformer_blocks.0.ff.net.2", dict(dim=4, alpha=4.0, factor=8)),
    "lora_unet_input_blocks_1_1_proj_in": (U + "input_blocks.1.1.proj_in", dict(dim=4, alpha=4.0, factor=8)),
    "lora_unet_input_blocks_2_0_op": (U + "input_blocks.2.0.op", dict(dim=4, alpha=4.0, factor=8)),
}
VARIANTS = ["fp8", "scaled_fp8", "comfy_quant", "bf16", "fp16"]
STRENGTH = 0.5


def _has_quant_ops() -> bool:
    try:
        import comfy.quant_ops  # noqa: F401
    except Exception:
        return False
    return True


def _linear_weight_keys(sd):
    """UNet Linear weights (2-D, transformer blocks): the layers ComfyUI's scaled forms quantize."""
    return [k for k, v in sd.items() if k.startswith(P) and k.endswith(".weight") and v.ndim == 2
            and "transformer_blocks" in k]


def _variant_sd(base, variant):
    sd = dict(base)
    if variant == "fp8":
        return {k: (v.to(FP8) if k.startswith(P) and v.is_floating_point() and v.ndim >= 2 else v) for k, v in sd.items()}
    if variant in ("bf16", "fp16"):
        return sd
    for k in _linear_weight_keys(sd):
        w = sd[k].float()
        scale = (w.abs().amax() / 448.0).clamp_min(1e-8)
        layer = k[:-len(".weight")]
        sd[k] = (w / scale).to(FP8)
        if variant == "scaled_fp8":
            sd[layer + ".scale_weight"] = scale.reshape(())
        else:
            sd[layer + ".weight_scale"] = scale.reshape(())
            sd[layer + ".comfy_quant"] = torch.tensor(list(json.dumps({"format": "float8_e4m3fn"}).encode()), dtype=torch.uint8)
    if variant == "scaled_fp8":
        sd[P + "scaled_fp8"] = torch.empty((), dtype=FP8)
    return sd


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    comfy = comfy_env.setup_comfy()
    import comfy.utils

    tmp = tmp_path_factory.mktemp("fp8")
    base = comfy.utils.load_torch_file(comfy_env.cached_tiny_sd15(tmp))
    pack = comfy_env.load_pack()
    return dict(comfy=comfy, tmp=tmp, base=base, pack=pack, models={},
                planning=comfy_env.pack_module("nodes.planning"))


def _model(env, variant):
    """(MODEL, CLIP) of the tiny checkpoint in ``variant`` (loaded once per module)."""
    if variant == "comfy_quant" and not _has_quant_ops():
        pytest.skip("comfy_quant / QuantizedTensor needs ComfyUI 0.8.0 or later (no comfy.quant_ops here)")
    if variant not in env["models"]:
        import comfy.sd

        path = env["tmp"] / f"{variant}.safetensors"
        save_file({k: v.contiguous() for k, v in _variant_sd(env["base"], variant).items()}, str(path))
        dtype = {"fp8": FP8, "bf16": torch.bfloat16, "fp16": torch.float16}.get(variant)
        out = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=False, output_clip=True,
                                                    model_options={"dtype": dtype} if dtype else {})
        env["models"][variant] = (out[0], out[1])
        os.remove(path)
    return env["models"][variant]


def _module(model, key):
    return model.model.get_submodule(key)


def _is_quantized(w) -> bool:
    return type(w).__name__ == "QuantizedTensor"


def _bits(w) -> list[torch.Tensor]:
    """The stored bits of a weight: the raw tensor (as integers), or a QuantizedTensor's data and scale."""
    def as_int(t):
        t = t.detach()
        return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()]).clone()
    if _is_quantized(w):
        return [as_int(w._qdata), as_int(w._params.scale.reshape(-1))]
    return [as_int(w)]


def _dequantized(w) -> torch.Tensor:
    return (w.dequantize() if _is_quantized(w) else w.detach()).float()


def _load(patcher) -> None:
    """Load ``patcher`` (no autograd, as when ComfyUI samples), after unloading everything."""
    import comfy.model_management as mm

    mm.unload_all_models()
    with torch.no_grad():
        mm.load_models_gpu([patcher])


def _is_linear(layer) -> bool:
    return hasattr(layer, "in_features")  # ComfyUI's mixed-precision Linear is no nn.Linear


def _stored(env, patcher, keys):
    """{key: (stored bits, dequantized fp32)} of the weights while ComfyUI has ``patcher`` loaded."""
    import comfy.model_management as mm

    _load(patcher)
    try:
        out = {}
        for k in keys:
            layer = _module(patcher, k)
            w = layer.weight
            deq = _dequantized(w)
            if hasattr(layer, "scale_weight") and not _is_quantized(w):  # 0.3.64 scaled_fp8_ops
                deq = deq * layer.scale_weight.float()
            out[k] = (_bits(w), deq.clone())
        return out
    finally:
        mm.unload_all_models()


def _dyadic_lokr(env, model, fname):
    """A LoKr file over TARGETS with dyadic factors; returns (file path, {key: ΔW from lycoris-lora})."""
    g = torch.Generator().manual_seed(11)
    mods, deltas = {}, {}
    for name, (key, kw) in TARGETS.items():
        layer = _module(model, key)
        plain = (nn.Linear(layer.in_features, layer.out_features) if _is_linear(layer)
                 else nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding))
        mod = lycoris_module(name, plain, seed=0, **kw)
        with torch.no_grad():
            for pname, p in mod.named_parameters():
                if pname.startswith("lokr_"):
                    den = 64.0 if pname.startswith("lokr_w1") else 16.0
                    p.copy_(torch.randint(-3, 4, p.shape, generator=g).float() / den)
            deltas[key] = mod.get_weight(tuple(plain.weight.shape)).detach().float()
        mods[name] = mod
    path = env["tmp"] / fname
    save_file(state_dict_of(mods), str(path))
    return str(path), deltas


def _ours(env, path, model, clip, apply):
    L = env["planning"]
    weights = comfy_env.pack_module("lokr_core.formats.io").load_lokr(path)
    plan = L.plan_patches(weights, model, clip)
    return L.apply_plan(plan, model, clip, STRENGTH, 0.0, apply)[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_patch_mode_is_core_rounding_path(env, variant):
    import comfy.float
    import comfy.model_patcher

    model, clip = _model(env, variant)
    path, deltas = _dyadic_lokr(env, model, f"dyadic_{variant}.safetensors")
    keys = list(deltas)
    ours = _ours(env, path, model, clip, "patch weights")
    core = model.clone()
    assert set(core.add_patches({k + ".weight": ("diff", (d,)) for k, d in deltas.items()}, STRENGTH)) == {k + ".weight" for k in keys}
    base, got, ref = (_stored(env, p, keys) for p in (model, ours, core))
    for k in keys:
        assert all(torch.equal(a, b) for a, b in zip(got[k][0], ref[k][0])), k  # same stored bits as core's patch
        assert not all(torch.equal(a, b) for a, b in zip(got[k][0], base[k][0])), k  # and the LoKr changed them
        exact = base[k][1] + STRENGTH * deltas[k]
        w = _module(model, k).weight
        if not _is_quantized(w) and not hasattr(_module(model, k), "scale_weight"):  # fp32 reference rounded once
            rounded = comfy.float.stochastic_rounding(exact, w.dtype, seed=comfy.model_patcher.string_to_seed(k + ".weight"))
            assert torch.equal(_bits(rounded)[0], got[k][0][0]), k
        else:  # requantized: within fp8 steps of the exact sum
            tol = exact.abs().amax() / 448.0 * 64 if _is_quantized(w) else _module(model, k).scale_weight.float() * 64
            assert (got[k][1] - exact).abs().max() <= tol, k
    assert not model.patches and not getattr(model, "injections", {})


@pytest.mark.parametrize("variant", VARIANTS)
def test_bypass_keeps_stored_weights_and_adds_exact_term(env, variant):
    import comfy.sample

    model, clip = _model(env, variant)
    path, deltas = _dyadic_lokr(env, model, f"dyadic_b_{variant}.safetensors")
    keys = list(deltas)
    byp = _ours(env, path, model, clip, "bypass")
    patched = _ours(env, path, model, clip, "patch weights")
    before = {k: [t.clone() for t in v] for k, v in ((k, _bits(_module(model, k).weight)) for k in keys)}
    import comfy.model_management as mm

    outs = {}
    for label, p in (("base", model), ("bypass", byp), ("patch", patched)):
        _load(p)
        with torch.no_grad():
            for k in keys:
                layer = _module(p, k)
                g = torch.Generator().manual_seed(3)
                x = (torch.randn(2, 5, layer.in_features, generator=g) if _is_linear(layer)
                     else torch.randn(2, layer.in_channels, 9, 9, generator=g))
                outs[(label, k)] = (x, layer(x).float().clone())
        mm.unload_all_models()
    for k in keys:
        x, base_out = outs[("base", k)]
        layer = _module(model, k)
        term = (F.linear(x, deltas[k]) if _is_linear(layer)
                else F.conv2d(x, deltas[k], None, layer.stride, layer.padding))
        got = outs[("bypass", k)][1]
        torch.testing.assert_close(got - base_out, STRENGTH * term, rtol=1e-4, atol=1e-4)
        effect = (got - base_out).abs().max()
        assert effect > 1e-2, k
        # patch mode: the same output up to rounding the patched weight to the stored precision
        rel = ((outs[("patch", k)][1] - got).norm() / got.norm()).item()
        assert rel < (0.1 if variant in ("fp8", "scaled_fp8", "comfy_quant") else 0.01), (k, rel)
    latent = torch.zeros(1, 4, 8, 8)
    cond = [[torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(5)), {}]]
    with torch.no_grad():
        comfy.sample.sample(byp, comfy.sample.prepare_noise(latent, 1), 2, 3.0, "euler", "normal", cond, cond, latent,
                            denoise=1.0, disable_pbar=True, seed=1)
    mm.unload_all_models()
    for k in keys:
        w = _module(model, k).weight
        assert all(torch.equal(a, b) for a, b in zip(_bits(w), before[k])), k  # bit-identical after sampling
    assert variant not in ("fp8",) or _module(model, keys[0]).weight.dtype == FP8
    assert variant != "comfy_quant" or _is_quantized(_module(model, keys[0]).weight)
    assert not model.patches and not getattr(model, "injections", {})
