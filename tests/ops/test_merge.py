"""Tests for lokr_core.ops.merge: the streamed merge engine and checkpoint / state-dict merges.

Reference ΔW comes from lycoris-lora's ``LokrModule.get_weight`` (scale applied once: docs/math.md, Scale)
and from PEFT's ``merge_and_unload``; never from lokr_core itself.
"""
from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from tests.support import lokr_fixtures as FX
from tests.support import models
from lokr_core.ops import merge as M
from lokr_core.base.errors import LoKrConfigError, LoKrError, LoKrFormatError, LoKrKeyError, LoKrShapeError
from lokr_core.tensor.factors import LoKrFactors


# ------------------------------------------------------------------------------------------ helpers
def lycoris_module(layer: nn.Module, seed: int = 0, **kw):
    """A lycoris-lora LokrModule on ``layer`` with every factor random; returns (module, factors, ΔW ref)."""
    from lycoris.modules.lokr import LokrModule

    torch.manual_seed(seed)
    mod = LokrModule("m", layer, **kw)
    with torch.no_grad():
        for name, p in mod.named_parameters():
            if name.startswith("lokr_"):
                p.normal_(0, 0.3)
    sd = mod.custom_state_dict()
    factors = LoKrFactors(**{k[len("lokr_"):] if k.startswith("lokr_") else k: v.detach().clone()
                             for k, v in sd.items() if k not in ("alpha",)},
                          alpha=float(sd["alpha"]))
    with torch.no_grad():
        ref = mod.get_weight(layer.weight.shape).detach().clone()
    return mod, factors, ref


def lycoris_scale(f: LoKrFactors) -> float:
    """The LyCORIS file rule, written out here (independent of lokr_core.tensor.scale) for the plans."""
    if f.full_full or not f.alpha:
        return 1.0
    return f.alpha / f.rank


CASES = [
    ("linear-split", lambda: nn.Linear(64, 48), dict(lora_dim=4, alpha=2)),
    ("linear-full", lambda: nn.Linear(16, 12), dict(lora_dim=16, alpha=8)),
    ("linear-both", lambda: nn.Linear(64, 64), dict(lora_dim=2, alpha=1, decompose_both=True, factor=4)),
    ("conv3x3", lambda: nn.Conv2d(32, 16, 3, padding=1), dict(lora_dim=4, alpha=4)),
    ("conv-tucker", lambda: nn.Conv2d(32, 32, 3, padding=1), dict(lora_dim=2, alpha=1, use_tucker=True)),
    ("conv1x1", lambda: nn.Conv2d(32, 64, 1), dict(lora_dim=4, alpha=2)),
]


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> None:
    a, b = a.double(), b.double()
    err = (a - b).abs().max().item()
    assert err <= rtol * max(b.abs().max().item(), 1e-12), f"max abs error {err}"


# --------------------------------------------------------------------------------- merged_weight
@pytest.mark.parametrize("name,make,kw", CASES, ids=[c[0] for c in CASES])
def test_merged_weight_matches_lycoris(name, make, kw):
    layer = make()
    _, f, ref = lycoris_module(layer, **kw)
    w = layer.weight.detach().clone()
    before = w.clone()
    out = M.merged_weight(w, [M.KronUpdate(f, lycoris_scale(f), 0.7)])
    _close(out, before + 0.7 * ref)
    assert torch.equal(w, before)  # input not modified


def test_merged_weight_two_lokrs_and_fp16_rounds_once():
    layer = nn.Linear(64, 48)
    _, f1, r1 = lycoris_module(layer, seed=1, lora_dim=4, alpha=2)
    _, f2, r2 = lycoris_module(layer, seed=2, lora_dim=8, alpha=8)
    w16 = layer.weight.detach().half()
    out = M.merged_weight(w16, [M.KronUpdate(f1, lycoris_scale(f1), 1.0), M.KronUpdate(f2, lycoris_scale(f2), -0.5)])
    assert out.dtype == torch.float16
    exact = (w16.float() + r1 - 0.5 * r2).half()  # fp32 math, one rounding
    assert torch.equal(out, exact)
    out32 = M.merged_weight(w16, [M.KronUpdate(f1, lycoris_scale(f1), 1.0)], dtype=torch.float32)
    assert out32.dtype == torch.float32
    _close(out32, w16.float() + r1)


def test_merged_weight_inplace_only_for_fp32_on_device():
    layer = nn.Linear(64, 48)
    _, f, ref = lycoris_module(layer, lora_dim=4, alpha=2)
    w = layer.weight.detach().clone()
    base = w.clone()
    out = M.merged_weight(w, [M.KronUpdate(f, lycoris_scale(f), 1.0)], inplace=True)
    assert out is w
    _close(w, base + ref)
    w16 = base.half()
    before = w16.clone()
    out16 = M.merged_weight(w16, [M.KronUpdate(f, lycoris_scale(f), 1.0)], inplace=True)
    assert out16 is not w16 and torch.equal(w16, before)


@pytest.mark.parametrize("wd_on_out", [True, False])
def test_merged_weight_dora_matches_lycoris(wd_on_out):
    layer = nn.Linear(32, 24)
    mod, f, _ = lycoris_module(layer, lora_dim=4, alpha=2, weight_decompose=True, wd_on_out=wd_on_out)
    with torch.no_grad():
        mod.dora_scale.mul_(1.3)
        f.dora_scale = mod.dora_scale.detach().clone()
        ref, _ = mod.get_merged_weight(multiplier=1.0)
    out = M.merged_weight(layer.weight.detach(), [M.KronUpdate(f, lycoris_scale(f), 1.0)])
    _close(out, ref)
    zero = M.merged_weight(layer.weight.detach(), [M.KronUpdate(f, lycoris_scale(f), 0.0)])
    assert torch.equal(zero, layer.weight.detach())


# ------------------------------------------------------------------------------ streamed file merge
def _write_ckpt(path, dtype=torch.float16):
    """A small safetensors 'checkpoint': two adaptable weights, a bias, an int tensor."""
    torch.manual_seed(3)
    lin, conv = nn.Linear(64, 48), nn.Conv2d(32, 16, 3)
    sd = {"a.lin.weight": lin.weight.detach().to(dtype), "a.lin.bias": lin.bias.detach().to(dtype),
          "b.conv.weight": conv.weight.detach().to(dtype), "pos_ids": torch.arange(7, dtype=torch.int64)}
    save_file(sd, str(path), metadata={"modelspec.title": "tiny"})
    return sd, lin, conv


def test_merge_plan_into_file_matches_lycoris(tmp_path):
    src, out = tmp_path / "m.safetensors", tmp_path / "out.safetensors"
    sd, lin, conv = _write_ckpt(src)
    _, f1, r1 = lycoris_module(lin, seed=1, lora_dim=4, alpha=2)
    _, f2, r2 = lycoris_module(conv, seed=2, lora_dim=4, alpha=4, use_tucker=True)
    plan = {"a.lin.weight": [M.KronUpdate(f1, lycoris_scale(f1), 0.8)],
            "b.conv.weight": [M.KronUpdate(f2, lycoris_scale(f2), 1.0)]}
    calls = []
    n = M.merge_plan_into_file(src, out, plan, device="cpu", progress=lambda d, t: calls.append((d, t)))
    assert n == 2
    got = load_file(str(out))
    assert set(got) == set(sd)
    assert got["a.lin.weight"].dtype == torch.float16
    assert torch.equal(got["a.lin.weight"], (sd["a.lin.weight"].float() + 0.8 * r1).half())
    assert torch.equal(got["b.conv.weight"], (sd["b.conv.weight"].float() + r2).half())
    assert torch.equal(got["a.lin.bias"], sd["a.lin.bias"]) and torch.equal(got["pos_ids"], sd["pos_ids"])
    assert calls[-1] == (4, 4) and len(calls) == 4
    with safe_open(str(out), "pt") as fh:
        assert fh.metadata() == {"modelspec.title": "tiny"}
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "out.safetensors"]


def test_merge_plan_into_file_dtype_cast_keeps_ints(tmp_path):
    src, out = tmp_path / "m.safetensors", tmp_path / "o.safetensors"
    sd, lin, _ = _write_ckpt(src, dtype=torch.float32)
    _, f1, r1 = lycoris_module(lin, seed=1, lora_dim=4, alpha=2)
    M.merge_plan_into_file(src, out, {"a.lin.weight": [M.KronUpdate(f1, lycoris_scale(f1), 1.0)]},
                           dtype="bf16", device="cpu", metadata={"x": "y"})
    got = load_file(str(out))
    assert got["a.lin.weight"].dtype == torch.bfloat16 and got["b.conv.weight"].dtype == torch.bfloat16
    assert got["pos_ids"].dtype == torch.int64
    assert torch.equal(got["a.lin.weight"], (sd["a.lin.weight"] + r1).bfloat16())
    with safe_open(str(out), "pt") as fh:
        assert fh.metadata() == {"x": "y"}


def test_merge_plan_into_file_bad_inputs_leave_nothing(tmp_path):
    src = tmp_path / "m.safetensors"
    sd, lin, conv = _write_ckpt(src)
    before = src.read_bytes()
    _, f1, _ = lycoris_module(lin, seed=1, lora_dim=4, alpha=2)
    up = [M.KronUpdate(f1, 1.0, 1.0, "x.safetensors", "lin_mod")]
    with pytest.raises(LoKrFormatError, match="output path is also an input"):
        M.merge_plan_into_file(src, src, {"a.lin.weight": up})
    link = tmp_path / "link.safetensors"
    link.symlink_to(src)
    with pytest.raises(LoKrFormatError, match="output path is also an input"):
        M.merge_plan_into_file(src, link, {"a.lin.weight": up})
    with pytest.raises(LoKrShapeError, match="'lin_mod'.*target weight has shape"):
        M.merge_plan_into_file(src, tmp_path / "o.safetensors", {"b.conv.weight": up})
    with pytest.raises(LoKrKeyError, match="'nope.weight' is not in the checkpoint"):
        M.merge_plan_into_file(src, tmp_path / "o.safetensors", {"nope.weight": up})
    with pytest.raises(LoKrConfigError, match="dtype 'fp8'"):
        M.merge_plan_into_file(src, tmp_path / "o.safetensors", {"a.lin.weight": up}, dtype="fp8")
    assert src.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["link.safetensors", "m.safetensors"]


def test_merge_plan_into_file_error_midway_removes_temp(tmp_path):
    src, out = tmp_path / "m.safetensors", tmp_path / "o.safetensors"
    _, lin, _ = _write_ckpt(src)
    _, f1, _ = lycoris_module(lin, seed=1, lora_dim=4, alpha=2)

    def boom(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        M.merge_plan_into_file(src, out, {"a.lin.weight": [M.KronUpdate(f1, 1.0, 1.0)]}, progress=boom)
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]


# ------------------------------------------------------------------------------ checkpoint merges
def _ldm_unet_sd(unet) -> dict[str, torch.Tensor]:
    """The diffusers UNet's state dict under LDM keys (model.diffusion_model.*), via lokr_core.keymap."""
    from lokr_core.keymap import ldm_unet

    rules = ldm_unet.unet_rules(ldm_unet.layout_from_config(unet.config))
    out = {}
    for k, v in unet.state_dict().items():
        ldm = ldm_unet.diffusers_to_ldm(k, rules)
        assert ldm is not None, k
        out["model.diffusion_model." + ldm] = v.detach().clone()
    return out


def _openclip_sd(clip, prefix: str) -> dict[str, torch.Tensor]:
    """A transformers CLIP text model's weights as OpenCLIP keys (fused q/k/v in_proj_weight)."""
    from lokr_core.keymap import clip_text

    sd = clip.state_dict()
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[int, torch.Tensor]] = {}
    for k, v in sd.items():
        path, _, param = k.rpartition(".")
        oc = clip_text.hf_to_openclip(clip_text.canonical_text_path(path))
        if oc is None:
            continue
        mpath, block = oc
        if block is None:
            out[f"{prefix}{mpath}.{param}"] = v.detach().clone()
        else:
            fused.setdefault(f"{prefix}{mpath}_{param}", {})[block] = v.detach().clone()
    for key, parts in fused.items():
        out[key] = torch.cat([parts[0], parts[1], parts[2]], 0)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lokrs")
    return {"unet": FX.make_lycoris_file(d, filename="unet.safetensors"),
            "clip": FX.make_lycoris_file(d, FX.CLIP_LAYOUTS, filename="clip.safetensors"),
            "te2": FX.make_lycoris_file(d, FX.CLIP_LAYOUTS, filename="te2.safetensors", te_prefix="lora_te2_text_model_",
                                        seed=3)}


def _ldm_ckpt(path, dtype=torch.float16):
    """A tiny SD-style LDM single-file checkpoint: UNet + CLIP text encoder + a VAE tensor."""
    sd = _ldm_unet_sd(models.tiny_unet(0))
    sd.update({"cond_stage_model.transformer.text_model." + k: v.detach().clone()
               for k, v in models.tiny_clip(0).state_dict().items()})
    sd["first_stage_model.encoder.conv_in.weight"] = torch.randn(8, 3, 3, 3)
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    save_file(sd, str(path), metadata={"format": "pt"})
    return sd


def _fp16_close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert torch.allclose(got.float(), want, rtol=2 ** -10, atol=2 ** -20), (got.float() - want).abs().max()


def _ldm_key_of(sd: dict, lf, name: str) -> str:
    from lokr_core.keymap import ldm_unet

    rules = ldm_unet.unet_rules(ldm_unet.layout_from_config(models.tiny_unet(0).config))
    return "model.diffusion_model." + ldm_unet.diffusers_to_ldm(lf.paths[name], rules) + ".weight"


def test_merge_checkpoint_ldm_matches_lycoris(tmp_path, files):
    ckpt, out = tmp_path / "sd.safetensors", tmp_path / "merged.safetensors"
    base = _ldm_ckpt(ckpt)
    before = ckpt.read_bytes()
    calls = []
    res = M.merge_checkpoint(ckpt, [(files["unet"].path, 0.8), (str(files["clip"].path) , -1.0)], out, device="cpu",
                             progress=lambda d, t: calls.append((d, t)))
    got = load_file(str(out))
    assert set(got) == set(base) and ckpt.read_bytes() == before
    uf, cf = files["unet"], files["clip"]
    changed = set()
    for name in uf.reference:
        key = _ldm_key_of(base, uf, name)
        changed.add(key)
        assert res.matched[str(uf.path)][name] == key
        if name in uf.merged:  # DoRA of an fp16 base: compare against lycoris' merged weight with slack
            want = base[key].float() + 0.8 * (uf.merged[name] - uf.weights[name])
            assert torch.allclose(got[key].float(), want, rtol=1e-2, atol=1e-3)
        else:
            _fp16_close(got[key], base[key].float() + 0.8 * uf.reference[name])
    for name, path in cf.paths.items():
        key = f"cond_stage_model.transformer.text_model.{path}.weight"
        changed.add(key)
        _fp16_close(got[key], base[key].float() - cf.reference[name])
    assert res.merged_tensors == len(changed) and res.tensors == len(base)
    for k in set(base) - changed:
        assert torch.equal(got[k], base[k]), k
    assert got["model.diffusion_model.input_blocks.0.0.weight"].dtype == torch.float16
    assert calls[-1] == (len(base), len(base))
    with safe_open(str(out), "pt") as fh:
        meta = fh.metadata()
    rec = json.loads(meta["lokr_merge"])[-1]
    assert meta["format"] == "pt" and rec["scale_rule"] == "file" and rec["dtype"] == "unchanged"
    assert [(x["file"], x["strength"]) for x in rec["lokrs"]] == [("unet.safetensors", 0.8), ("clip.safetensors", -1.0)]
    assert rec["lokrs"][0]["sha256"] == hashlib.sha256(uf.path.read_bytes()).hexdigest()
    assert rec["tool"].startswith("comfyui-lokr ")
    assert sorted(os.listdir(tmp_path)) == ["merged.safetensors", "sd.safetensors"]


def test_merge_checkpoint_dtype_and_state_dict(tmp_path, files):
    ckpt, out = tmp_path / "sd.safetensors", tmp_path / "m32.safetensors"
    base = _ldm_ckpt(ckpt, dtype=torch.float32)
    M.merge_checkpoint(ckpt, [(files["clip"].path, 0.5)], out, dtype="bf16", device="cpu")
    got = load_file(str(out))
    cf = files["clip"]
    name, path = next(iter(cf.paths.items()))
    key = f"cond_stage_model.transformer.text_model.{path}.weight"
    assert got[key].dtype == torch.bfloat16
    assert torch.equal(got[key], (base[key] + 0.5 * cf.reference[name]).bfloat16()) or torch.allclose(
        got[key].float(), base[key] + 0.5 * cf.reference[name], rtol=2 ** -7)
    # in memory: same numbers, the caller's dict untouched
    snap = {k: v.clone() for k, v in base.items()}
    res = M.merge_into_state_dict(base, [(cf.path, 0.5)])
    _close(res.state_dict[key], base[key] + 0.5 * cf.reference[name])
    assert all(torch.equal(base[k], snap[k]) for k in base)
    assert res.state_dict["first_stage_model.encoder.conv_in.weight"] is base["first_stage_model.encoder.conv_in.weight"]
    assert res.merged_tensors == len(cf.reference) and res.out is None


def test_merge_checkpoint_sdxl_fused_openclip_rows(tmp_path, files):
    """lora_te2 q_proj lands in rows [0:d] of OpenCLIP's fused in_proj_weight (SDXL LDM checkpoints)."""
    ckpt, out = tmp_path / "xl.safetensors", tmp_path / "o.safetensors"
    clip = models.tiny_clip(0)
    base = _openclip_sd(clip, "conditioner.embedders.1.model.")
    base.update({"conditioner.embedders.0.transformer.text_model." + k: v.detach().clone()
                 for k, v in clip.state_dict().items()})
    save_file(base, str(ckpt))
    tf = files["te2"]
    res = M.merge_checkpoint(ckpt, [(tf.path, 1.0)], out, device="cpu")
    got = load_file(str(out))
    d = 32
    q = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"
    fused = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
    assert res.matched[str(tf.path)][q] == fused
    _close(got[fused][:d], base[fused][:d] + tf.reference[q])
    assert torch.equal(got[fused][d:], base[fused][d:])
    fc1 = "lora_te2_text_model_encoder_layers_1_mlp_fc1"
    key = "conditioner.embedders.1.model.transformer.resblocks.1.mlp.c_fc.weight"
    _close(got[key], base[key] + tf.reference[fc1])
    te1 = "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
    assert torch.equal(got[te1], base[te1])  # te2 modules never touch te1


def test_merge_checkpoint_diffusers_folder(tmp_path, files):
    src, out = tmp_path / "pipe", tmp_path / "pipe_merged"
    unet, clip = models.tiny_unet(0), models.tiny_clip(0)
    (src / "unet").mkdir(parents=True)
    (src / "text_encoder").mkdir()
    (src / "vae").mkdir()
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(src / "unet" / "diffusion_pytorch_model.safetensors"))
    save_file(dict(clip.state_dict()), str(src / "text_encoder" / "model.safetensors"))
    save_file({"encoder.conv_in.weight": torch.randn(8, 3, 3, 3)}, str(src / "vae" / "diffusion_pytorch_model.safetensors"))
    (src / "unet" / "config.json").write_text('{"x": 1}')
    (src / "model_index.json").write_text("{}")
    uf, cf = files["unet"], files["clip"]
    res = M.merge_checkpoint(src, [(uf.path, 1.0), (cf.path, 1.0)], out, device="cpu")
    assert (out / "unet" / "config.json").read_text() == '{"x": 1}' and (out / "model_index.json").exists()
    gu = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    gt = load_file(str(out / "text_encoder" / "model.safetensors"))
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    key = uf.paths[name] + ".weight"
    _close(gu[key], unet.state_dict()[key] + uf.reference[name])
    for name, path in cf.paths.items():
        _close(gt[path + ".weight"], clip.state_dict()[path + ".weight"] + cf.reference[name])
    assert torch.equal(load_file(str(out / "vae" / "diffusion_pytorch_model.safetensors"))["encoder.conv_in.weight"],
                       load_file(str(src / "vae" / "diffusion_pytorch_model.safetensors"))["encoder.conv_in.weight"])
    assert res.matched[str(cf.path)][next(iter(cf.paths))].startswith("text_encoder.")
    assert sorted(os.listdir(tmp_path)) == ["pipe", "pipe_merged"]
    with pytest.raises(LoKrFormatError, match="already exists and is not an empty folder"):
        M.merge_checkpoint(src, [(uf.path, 1.0)], out)
    with pytest.raises(LoKrFormatError, match="overlaps the input folder"):
        M.merge_checkpoint(src, [(uf.path, 1.0)], src / "sub")


def test_merge_checkpoint_bad_inputs_write_nothing(tmp_path, files):
    ckpt = tmp_path / "sd.safetensors"
    _ldm_ckpt(ckpt)
    before = ckpt.read_bytes()
    out = tmp_path / "o.safetensors"
    good = [(files["unet"].path, 1.0)]
    link, hard = tmp_path / "link.safetensors", tmp_path / "hard.safetensors"
    link.symlink_to(ckpt)
    os.link(ckpt, hard)
    for target in (ckpt, link, hard):
        with pytest.raises(LoKrFormatError, match="output path is also an input"):
            M.merge_checkpoint(ckpt, good, target)
    unet_only = tmp_path / "unet_only.safetensors"
    save_file({k: v.half() for k, v in _ldm_unet_sd(models.tiny_unet(0)).items()}, str(unet_only))
    with pytest.raises(LoKrKeyError, match=r"clip\.safetensors'?: none of its 2 modules matches.*Nothing was written"):
        M.merge_checkpoint(unet_only, [(files["clip"].path, 1.0)], out)
    big = tmp_path / "big.safetensors"
    save_file(_ldm_unet_sd(models.unet(dict(models.TINY_UNET, block_out_channels=(64, 128), cross_attention_dim=48))),
              str(big))
    with pytest.raises(LoKrShapeError, match=r"unet\.safetensors', module 'lora_unet_.*Nothing was written"):
        M.merge_checkpoint(big, good, out)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(LoKrError, match="corrupt.safetensors"):
        M.merge_checkpoint(ckpt, [(corrupt, 1.0)], out)
    with pytest.raises(LoKrConfigError, match="strength is nan"):
        M.merge_checkpoint(ckpt, [(files["unet"].path, float("nan"))], out)
    with pytest.raises(LoKrFormatError, match="missing.safetensors'?: file does not exist"):
        M.merge_checkpoint(ckpt, [(tmp_path / "missing.safetensors", 1.0)], out)
    pickled = tmp_path / "model.ckpt"
    pickled.write_bytes(b"PK")
    with pytest.raises(LoKrFormatError, match="is not a .safetensors file"):
        M.merge_checkpoint(pickled, good, out)
    with pytest.raises(LoKrFormatError, match="folder .* does not exist; expected an existing folder"):
        M.merge_checkpoint(ckpt, good, tmp_path / "x" / "o.safetensors")
    with pytest.raises(LoKrFormatError, match="does not exist; expected a checkpoint"):
        M.merge_checkpoint(tmp_path / "nope.safetensors", good, out)
    with pytest.raises(LoKrConfigError, match="no LoKr files given"):
        M.merge_checkpoint(ckpt, [], out)
    assert ckpt.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == sorted(["sd.safetensors", "link.safetensors", "hard.safetensors",
                                                   "unet_only.safetensors", "big.safetensors", "corrupt.safetensors",
                                                   "model.ckpt"])


def test_merge_checkpoint_peft_dir_matches_peft(tmp_path):
    """A PEFT adapter dir (diffusers names) merged into an LDM checkpoint == base + peft's get_delta_weight."""
    from lokr_core.keymap import ldm_unet

    pd = FX.make_peft_dir(tmp_path)
    ckpt, out = tmp_path / "sd.safetensors", tmp_path / "o.safetensors"
    base = _ldm_ckpt(ckpt, dtype=torch.float32)
    res = M.merge_checkpoint(ckpt, [(pd.path, 0.7)], out, device="cpu")
    got = load_file(str(out))
    rules = ldm_unet.unet_rules(ldm_unet.layout_from_config(models.tiny_unet(0).config))
    assert res.merged_tensors == len(pd.reference)
    for path, delta in pd.reference.items():
        key = "model.diffusion_model." + ldm_unet.diffusers_to_ldm(path.replace("base_model.model.", ""), rules) + ".weight"
        _close(got[key], base[key] + 0.7 * delta.reshape(base[key].shape))


def test_merge_into_full_size_sdxl_on_meta():
    """Full-size SDXL LDM keys (meta tensors, no memory): UNet, te1 and te2 modules resolve, te2 q_proj
    lands in rows [0:1280] of the fused in_proj_weight, shapes check out."""
    from lokr_core.formats.weights import LoKrWeights
    from lokr_core.keymap.families import family_target

    state = {k: torch.empty(s, device="meta") for k, s in family_target("sdxl").items()}
    g = torch.Generator().manual_seed(0)
    mods = {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q":
            LoKrFactors(w1=torch.randn(16, 16, generator=g), w2_a=torch.randn(40, 2, generator=g),
                        w2_b=torch.randn(2, 40, generator=g), alpha=1.0),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1":
            LoKrFactors(w1=torch.randn(48, 24, generator=g), w2=torch.randn(64, 32, generator=g), alpha=1.0),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj":
            LoKrFactors(w1=torch.randn(32, 32, generator=g), w2_a=torch.randn(40, 4, generator=g),
                        w2_b=torch.randn(4, 40, generator=g), alpha=2.0),
    }
    res = M.merge_into_state_dict(state, [(LoKrWeights.from_factors(mods, source="xl.safetensors"), 1.0)])
    m = res.matched["xl.safetensors"]
    assert m["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"] == \
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"
    assert m["lora_te1_text_model_encoder_layers_0_mlp_fc1"] == \
        "conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc1.weight"
    assert m["lora_te2_text_model_encoder_layers_0_self_attn_q_proj"] == \
        "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
    assert res.merged_tensors == 3 and res.state_dict[m["lora_te2_text_model_encoder_layers_0_self_attn_q_proj"]].shape == (3840, 1280)


def test_check_strength_accepts_finite_and_names_the_culprit():
    assert M.check_strength("0.5") == 0.5 and M.check_strength(-2) == -2.0
    with pytest.raises(LoKrConfigError, match=r"file 'a\.safetensors': strength is inf"):
        M.check_strength(float("inf"), "a.safetensors")
    with pytest.raises(LoKrConfigError, match=r"^my_fn: strength 'x' is not a number"):
        M.check_strength("x", caller="my_fn")
