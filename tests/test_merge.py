"""Tests for lokr_core.merge: the streamed merge engine and checkpoint / state-dict merges.

Reference ΔW comes from lycoris-lora's ``LokrModule.get_weight`` (scale applied once, LOKR_SPEC 3)
and from PEFT's ``merge_and_unload``; never from lokr_core itself.
"""
from __future__ import annotations

import json
import math
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from lokr_core import merge as M
from lokr_core.errors import LoKrConfigError, LoKrError, LoKrFormatError, LoKrKeyError, LoKrShapeError
from lokr_core.factors import LoKrFactors


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
    """The LyCORIS file rule, written out here (independent of lokr_core.scale) for the plans."""
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


def test_parse_dtype_and_default_device():
    assert M.parse_dtype("fp16") is torch.float16 and M.parse_dtype(None) is None
    assert M.parse_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(LoKrConfigError, match="floating"):
        M.parse_dtype(torch.int8)
    assert M.default_device("cpu").type == "cpu"
    assert M.default_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(LoKrConfigError, match="not a torch device"):
        M.default_device("gpu0")


def test_file_sha256(tmp_path):
    import hashlib

    p = tmp_path / "f.bin"
    p.write_bytes(b"abc" * 1000)
    assert M.file_sha256(p) == hashlib.sha256(b"abc" * 1000).hexdigest()
