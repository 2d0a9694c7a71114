"""Tests for lokr_core.ops.apply: merge / bypass on tiny diffusers UNets and transformers CLIP models.

References: lycoris-lora (``LokrModule.get_weight`` ΔW, its DoRA merged weight) through
tests/support/lokr_fixtures.py, and PEFT's ``merge_and_unload`` for PEFT adapter dirs.
"""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file

from tests.support import lokr_fixtures as FX
from tests.support import models
from lokr_core.ops.apply import apply_lokr
from lokr_core.base.errors import LoKrConfigError, LoKrKeyError, LoKrShapeError


def load(path):
    from lokr_core.formats.io import load_lokr

    return load_lokr(path)


def _close(a, b, rtol=1e-5):
    a, b = a.double(), b.double()
    err = (a - b).abs().max().item()
    assert err <= rtol * max(b.abs().max().item(), 1e-12), f"max abs error {err}"


def _weight(model, path):
    return model.get_submodule(path).weight.detach()


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _unchanged(model, snap):
    now = model.state_dict()
    return all(torch.equal(now[k], v) for k, v in snap.items())


@pytest.fixture(scope="module")
def lyco(tmp_path_factory):
    return FX.make_lycoris_file(tmp_path_factory.mktemp("lyco"))


@pytest.fixture(scope="module")
def lyco_clip(tmp_path_factory):
    return FX.make_lycoris_file(tmp_path_factory.mktemp("clip"), FX.CLIP_LAYOUTS)


def test_merge_unet_matches_lycoris(lyco):
    unet = models.tiny_unet(0)
    snap = _snapshot(unet)
    res = apply_lokr(unet, load(lyco.path), strength=0.6, mode="merge")
    assert sorted(res.matched) == sorted(lyco.reference) and res.unmatched == []
    for name, path in lyco.paths.items():
        assert res.matched[name] == path + ".weight"
        if name in lyco.merged:  # DoRA: interpolate between W and lycoris' W_dora
            _close(_weight(unet, path), lyco.weights[name] + 0.6 * (lyco.merged[name] - lyco.weights[name]))
        else:
            _close(_weight(unet, path), lyco.weights[name] + 0.6 * lyco.reference[name])
    touched = {p + ".weight" for p in lyco.paths.values()}
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in snap.items() if k not in touched)


def test_merge_dora_strength_one_equals_lycoris_merged(lyco):
    unet = models.tiny_unet(0)
    apply_lokr(unet, load(lyco.path), strength=1.0)
    assert lyco.merged
    for name, ref in lyco.merged.items():
        _close(_weight(unet, lyco.paths[name]), ref)


def test_merge_clip_and_dict_target(lyco, lyco_clip, tmp_path):
    clip = models.tiny_clip(0)
    res = apply_lokr(clip, load(lyco_clip.path), strength=1.0)
    for name, path in lyco_clip.paths.items():
        _close(_weight(clip, path), lyco_clip.weights[name] + lyco_clip.reference[name])
    assert set(res.matched) == set(lyco_clip.reference)
    # one file holding UNet and text-encoder modules, applied to {"unet", "text_encoder"}
    both = tmp_path / "both.safetensors"
    save_file({**lyco.state_dict, **lyco_clip.state_dict}, str(both))
    unet, clip = models.tiny_unet(0), models.tiny_clip(0)
    res = apply_lokr({"unet": unet, "text_encoder": clip}, load(both), strength=-0.5)
    assert len(res.matched) == len(lyco.reference) + len(lyco_clip.reference) and not res.unmatched
    for name, path in lyco_clip.paths.items():
        assert res.matched[name] == f"text_encoder:{path}.weight"
        _close(_weight(clip, path), lyco_clip.weights[name] - 0.5 * lyco_clip.reference[name])
    name = next(n for n in lyco.reference if n not in lyco.merged)
    _close(_weight(unet, lyco.paths[name]), lyco.weights[name] - 0.5 * lyco.reference[name])


def test_merge_peft_dir_matches_peft_merge_and_unload(tmp_path):
    pd = FX.make_peft_dir(tmp_path)
    unet = models.tiny_unet(0)
    res = apply_lokr(unet, load(pd.path))
    assert len(res.matched) == len(pd.reference)
    merged = pd.model.merge_and_unload()
    ref = merged.state_dict()
    for key, value in unet.state_dict().items():
        _close(value, ref[key])


def test_merge_fp16_model_rounds_once(lyco):
    unet = models.tiny_unet(0).half()
    apply_lokr(unet, load(lyco.path), strength=1.0)
    for name, path in lyco.paths.items():
        if name in lyco.merged:
            continue
        expected = (lyco.weights[name].half().float() + lyco.reference[name]).half()
        assert _weight(unet, path).dtype == torch.float16
        # fp32 math, one rounding: at most one fp16 ulp from the reference (the fp32 sums differ in the last bits)
        got = _weight(unet, path).float()
        assert torch.allclose(got, expected.float(), rtol=2 ** -10, atol=2 ** -24), name


def test_bypass_forward_equals_merged_forward_and_removes(lyco):
    base = models.tiny_unet(0)
    merged, bypass = copy.deepcopy(base), copy.deepcopy(base)
    w = load(lyco.path)
    apply_lokr(merged, w, strength=0.7, mode="merge")
    snap = _snapshot(bypass)
    res = apply_lokr(bypass, w, strength=0.7, mode="bypass")
    assert len(res.hooks) == len(lyco.reference) and _unchanged(bypass, snap)
    x = models.unet_inputs()
    with torch.no_grad():
        y_base = base(*x).sample
        y_merged = merged(*x).sample
        y_bypass = bypass(*x).sample
    _close(y_bypass, y_merged, rtol=1e-4)
    assert (y_merged - y_base).abs().max() > 1e-3  # the adapter does change the output
    res.remove()
    with torch.no_grad():
        assert torch.equal(bypass(*x).sample, y_base)


def test_bypass_clip_linear_only(lyco_clip):
    base = models.clip_text(models.TINY_CLIP)
    merged, bypass = copy.deepcopy(base), copy.deepcopy(base)
    w = load(lyco_clip.path)
    apply_lokr(merged, w, strength=1.3)
    res = apply_lokr(bypass, w, strength=1.3, mode="bypass")
    ids = torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _close(bypass(ids).last_hidden_state, merged(ids).last_hidden_state, rtol=1e-4)
    res.remove()


def test_wrong_model_file_leaves_model_unchanged(lyco, lyco_clip):
    unet = models.tiny_unet(0)
    snap = _snapshot(unet)
    with pytest.raises(LoKrKeyError, match=r"none of its 2 modules matches a layer of the model.*Model unchanged"):
        apply_lokr(unet, load(lyco_clip.path))
    assert _unchanged(unet, snap)
    other = models.unet(dict(models.TINY_UNET, block_out_channels=(64, 128), cross_attention_dim=48))
    snap = _snapshot(other)
    with pytest.raises(LoKrShapeError, match=r"lokr\.safetensors.*module 'lora_unet_.*do not fit.*Model unchanged"):
        apply_lokr(other, load(lyco.path))
    assert _unchanged(other, snap)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(strength=float("nan")), "strength is nan; expected a finite number"),
    (dict(strength="x"), "strength 'x' is not a number"),
    (dict(mode="add"), "mode 'add' is not known"),
    (dict(dora_mode="x"), "dora_mode 'x' is not known"),
])
def test_bad_arguments_leave_model_unchanged(lyco, kwargs, msg):
    unet = models.tiny_unet(0)
    snap = _snapshot(unet)
    with pytest.raises(LoKrConfigError, match=msg):
        apply_lokr(unet, load(lyco.path), **kwargs)
    assert _unchanged(unet, snap)


def test_bad_model_type():
    with pytest.raises(LoKrConfigError, match="model must be an nn.Module"):
        apply_lokr([1, 2], object())
