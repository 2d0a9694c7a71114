"""Model patching (inject / merge_and_unload / unload / state dicts / PEFT dirs) against real peft 0.21.2
on the tiny diffusers UNet and tiny CLIP text model of tests/support/models.py.

PEFT and our injection are run from the same RNG state, so both models start with identical factors
(checked); outputs, ΔW, trainable counts and saved files are then compared with PEFT's own.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch
from peft import LoKrConfig as PeftLoKrConfig
from peft import PeftModel, get_peft_model, get_peft_model_state_dict
from peft.tuners.lokr.layer import LoKrLayer as PeftLoKrLayer
from safetensors.torch import load_file

from tests.support import models
from lokr_core.tuner import model as M
from lokr_core.tuner.config import LoKrConfig
from lokr_core.base.errors import LoKrConfigError, LoKrFormatError, LoKrKeyError, LoKrShapeError
from lokr_core.tuner.layers import LoKrConv2d, LoKrLayer, LoKrLinear

UNET_CFG = dict(r=2, alpha=6, target_modules=["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "proj_in",
                                             "conv1", "conv_shortcut"],
                rank_pattern={"to_k": 4}, alpha_pattern={"ff.net.0.proj": 3}, modules_to_save=["conv_out"],
                use_effective_conv2d=True, decompose_both=True, init_weights=False)
CLIP_CFG = dict(r=2, alpha=4, target_modules=["q_proj", "v_proj", "fc1", "fc2"], rank_pattern={"fc1": 4},
                layers_to_transform=[1], layers_pattern="layers", init_weights=False,
                modules_to_save=["final_layer_norm"])


@pytest.fixture(scope="module")
def base_unet():
    return models.tiny_unet()


@pytest.fixture(scope="module")
def base_clip():
    return models.tiny_clip()


@pytest.fixture(scope="module")
def unet_pair(base_unet):
    """(peft, ours) with UNET_CFG, shared by tests that leave it as they found it."""
    return _both(base_unet, UNET_CFG)


def _both(base, cfg: dict, seed: int = 3):
    """(peft model, our model) from copies of ``base``, injected from the same RNG state."""
    torch.manual_seed(seed)
    pm = get_peft_model(copy.deepcopy(base), PeftLoKrConfig(**cfg))
    torch.manual_seed(seed)
    om = M.inject(copy.deepcopy(base), LoKrConfig(**cfg))
    return pm, om


def _unet_out(m):
    with torch.no_grad():
        return m(*models.unet_inputs(batch=1)).sample


def _clip_out(m):
    ids = torch.tensor([[1, 5, 9, 33, 2], [4, 4, 8, 7, 0]])
    with torch.no_grad():
        return m(input_ids=ids).last_hidden_state


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    scale = max(float(b.abs().max().detach()), 1e-12)
    err = float((a - b).abs().max().detach())
    assert err <= rel * scale, f"max abs error {err:.3g} vs scale {scale:.3g}"


def _trainable(m) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def _snapshot(m):
    return ({k: v.detach().clone() for k, v in m.state_dict().items()},
            {n: type(x).__name__ for n, x in m.named_modules()},
            {n: p.requires_grad for n, p in m.named_parameters()})


def _unchanged(before, m) -> bool:
    after = _snapshot(m)
    same = lambda a, b: torch.equal(a, b) or (a.is_floating_point() and torch.allclose(a, b, rtol=0, atol=0, equal_nan=True))  # noqa: E731
    return (before[0].keys() == after[0].keys() and all(same(before[0][k], after[0][k]) for k in before[0])
            and before[1:] == after[1:])


def test_inject_unet_matches_peft(unet_pair):
    pm, om = unet_pair
    want = get_peft_model_state_dict(pm)
    got = M.lokr_state_dict(om)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert any(k.endswith("lokr_t2") for k in got) and any(k.endswith("lokr_w1_a") for k in got)
    assert "base_model.model.conv_out.weight" in got
    assert _trainable(om) == _trainable(pm)
    layers = dict(M.lokr_layers(om))
    assert len(layers) == sum(1 for _, m in pm.named_modules() if isinstance(m, PeftLoKrLayer))
    assert layers["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k"].r["default"] == 4
    assert layers["down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj"].alpha["default"] == 3
    y = _unet_out(pm)
    _close(_unet_out(om), y)
    for mode in ("delta", "bypass", "auto"):  # PEFT's way (ΔW every call) and bypass give the same
        for _, layer in M.lokr_layers(om):
            layer.forward_mode = mode
        assert any(l.uses_bypass("default") for _, l in M.lokr_layers(om)) == (mode == "bypass")
        _close(_unet_out(om), y)
    # ΔW per layer, Linear / 1x1 / 3x3 Tucker
    peft_mods = dict(pm.base_model.model.named_modules())
    for name, layer in M.lokr_layers(om):
        _close(layer.get_delta_weight("default"), peft_mods[name].get_delta_weight("default").detach())


def test_inject_clip_matches_peft(base_clip):
    pm, om = _both(base_clip, CLIP_CFG)
    names = [n for n, _ in M.lokr_layers(om)]
    assert names and all(n.startswith("encoder.layers.1.") for n in names)
    assert get_peft_model_state_dict(pm).keys() == M.lokr_state_dict(om).keys()
    assert _trainable(om) == _trainable(pm)
    _close(_clip_out(om), _clip_out(pm))


def test_merge_unmerge_merge_and_unload_and_unload(base_clip):
    pm, om = _both(base_clip, CLIP_CFG)
    base_out = _clip_out(base_clip)
    adapted = _clip_out(om)
    weights = {n: l.base_layer.weight.detach().clone() for n, l in M.lokr_layers(om)}
    for _, layer in M.lokr_layers(om):
        layer.merge()
    _close(_clip_out(om), adapted)
    for _, layer in M.lokr_layers(om):
        layer.unmerge()
    for n, layer in M.lokr_layers(om):
        _close(layer.base_layer.weight, weights[n], 1e-6)
    om2 = copy.deepcopy(om)
    merged_peft = pm.merge_and_unload()
    merged = M.merge_and_unload(om)
    assert not list(M.lokr_layers(merged)) and isinstance(merged.final_layer_norm, torch.nn.LayerNorm)
    assert merged.state_dict().keys() == merged_peft.state_dict().keys() == base_clip.state_dict().keys()
    for k, v in merged_peft.state_dict().items():
        _close(merged.state_dict()[k], v)
    _close(_clip_out(merged), adapted)
    # unload: the base model back, merged layers unmerged first
    next(layer for _, layer in M.lokr_layers(om2)).merge()
    plain = M.unload(om2)
    assert {n: type(m) for n, m in plain.named_modules()} == {n: type(m) for n, m in base_clip.named_modules()}
    for k, v in base_clip.state_dict().items():
        _close(plain.state_dict()[k], v, 1e-6)
    _close(_clip_out(plain), base_out)


def test_set_adapter_scale_and_enable(base_clip):
    pm, om = _both(base_clip, CLIP_CFG)
    for mod in pm.modules():
        if hasattr(mod, "set_scale") and hasattr(mod, "lokr_w1"):
            mod.set_scale("default", 0.4)
    M.set_adapter_scale(om, 0.4)
    _close(_clip_out(om), _clip_out(pm))
    M.enable_adapters(om, False)
    assert not any(p.requires_grad for n, p in om.named_parameters() if "lokr_" in n)
    with pm.disable_adapter():
        want = _clip_out(pm)
    _close(_clip_out(om), want)
    _close(_clip_out(om), _clip_out(base_clip))
    M.enable_adapters(om, True)
    M.set_adapter_scale(om, 0.0, "default")  # scale 0 + the copy of final_layer_norm: the base output
    _close(_clip_out(om), want)
    with pytest.raises(LoKrKeyError, match="no LoKr adapter 'other'"):
        M.set_adapter_scale(om, 2.0, "other")


def test_two_adapters_and_set_adapter_match_peft(base_clip):
    pm, om = _both(base_clip, CLIP_CFG)
    second = dict(r=2, alpha=2, target_modules=["k_proj", "q_proj"], init_weights=False)
    torch.manual_seed(9)
    pm.add_adapter("second", PeftLoKrConfig(**second))
    torch.manual_seed(9)
    M.inject(om, LoKrConfig(**second), "second")
    assert M.active_adapters(om) == ["default"]
    assert M.lokr_state_dict(om, adapter_name="second").keys() == get_peft_model_state_dict(pm, adapter_name="second").keys()
    _close(_clip_out(om), _clip_out(pm))  # still "default" active
    pm.set_adapter("second")
    M.set_adapter(om, "second")
    _close(_clip_out(om), _clip_out(pm))
    assert _trainable(om) == _trainable(pm)
    before = _snapshot(om)
    with pytest.raises(LoKrKeyError, match=r"no LoKr adapter 'third'; expected one of \['default', 'second'\]"):
        M.set_adapter(om, ["second", "third"])
    with pytest.raises(LoKrKeyError, match="already has an adapter named 'second'"):
        M.inject(om, LoKrConfig(**second), "second")
    assert _unchanged(before, om)


def test_inject_failure_midway_leaves_model_exactly_as_before(base_clip, monkeypatch):
    om = M.inject(copy.deepcopy(base_clip), LoKrConfig(**CLIP_CFG))
    before = _snapshot(om)
    real = M.wrap_layer
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise LoKrShapeError("synthetic failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(M, "wrap_layer", failing)
    # q_proj of layer 1 already has "default" (update_layer path), k_proj / out_proj are new wraps
    cfg = LoKrConfig(r=2, alpha=2, target_modules=["q_proj", "k_proj", "out_proj"], modules_to_save=["final_layer_norm"])
    with pytest.raises(LoKrShapeError, match="module 'encoder.layers.1.k_proj'|module 'encoder.layers.\\d.self_attn.\\w+'"):
        M.inject(om, cfg, "second")
    assert _unchanged(before, om)
    assert all(l.available_adapters == {"default"} for _, l in M.lokr_layers(om))
    # real bad inputs: nothing matches / a non-Linear target
    with pytest.raises(LoKrKeyError, match="no module matched LoKrConfig.target_modules"):
        M.inject(om, LoKrConfig(target_modules=["nope"]), "third")
    with pytest.raises(LoKrConfigError, match="'encoder.layers.0.layer_norm1'.*LayerNorm"):
        M.inject(om, LoKrConfig(target_modules=["layer_norm1"]), "third")
    assert _unchanged(before, om)


@torch.no_grad()  # lycoris' make_module_from_state_dict copies into leaf parameters
def test_lycoris_state_dict_keeps_delta_under_lycoris_rule(base_unet):
    from lycoris.modules.lokr import LokrModule

    cfg = dict(UNET_CFG, target_modules=["to_q", "to_k", "ff.net.0.proj"], modules_to_save=None)
    pm, om = _both(base_unet, cfg)
    sd = M.lokr_state_dict(om, format="lycoris")
    peft_mods = dict(pm.base_model.model.named_modules())
    layouts = set()
    for name, layer in M.lokr_layers(om):
        assert torch.equal(sd[f"{name}.alpha"], sd[f"{name}.alpha"].reshape(()))
        g = lambda p: sd.get(f"{name}.lokr_{p}")  # noqa: E731
        mod = LokrModule.make_module_from_state_dict(name.replace(".", "_"), layer.base_layer, g("w1"), g("w1_a"),
                                                     g("w1_b"), g("w2"), g("w2_a"), g("w2_b"), None, g("t2"),
                                                     sd[f"{name}.alpha"], None)
        layouts.add(layer.factors("default").layout)
        _close(mod.get_weight(layer.base_layer.weight.shape).detach(), peft_mods[name].get_delta_weight("default").detach())
    assert {"full", "split-w2"} <= layouts
    with pytest.raises(LoKrFormatError, match="format must be 'peft' or 'lycoris'"):
        M.lokr_state_dict(om, format="kohya")


def test_load_state_dict_from_peft_and_strict_errors(base_unet):
    pm, _ = _both(base_unet, UNET_CFG)
    sd = get_peft_model_state_dict(pm)
    om = M.inject(copy.deepcopy(base_unet), LoKrConfig(**dict(UNET_CFG, init_weights=True)))
    before = _snapshot(om)
    key = "base_model.model.down_blocks.0.resnets.0.conv1.lokr_t2"
    bad_cases = [
        ({k: v for k, v in sd.items() if k != key}, LoKrFormatError,
         r"module 'down_blocks.0.resnets.0.conv1': missing key 'down_blocks.0.resnets.0.conv1.lokr_t2' \(expected shape \(2, 2, 3, 3\)\)"),
        ({**sd, key: torch.zeros(2, 2, 1, 1)}, LoKrShapeError,
         r"key 'down_blocks.0.resnets.0.conv1.lokr_t2' has shape \(2, 2, 1, 1\); expected \(2, 2, 3, 3\)"),
        ({**sd, "base_model.model.conv_in.lokr_w1": torch.zeros(2, 2)}, LoKrFormatError,
         "unexpected key 'conv_in.lokr_w1'"),
        ({**sd, key: torch.full((2, 2, 3, 3), float("nan"))}, LoKrFormatError, "lokr_t2' holds NaN"),
    ]
    for bad, cls, msg in bad_cases:
        with pytest.raises(cls, match=msg):
            M.load_lokr_state_dict(om, bad, file="x.safetensors")
        assert _unchanged(before, om)
    M.load_lokr_state_dict(om, sd)
    want = _unet_out(pm)
    _close(_unet_out(om), want)
    # prefix-less keys load too, giving the same factors
    om2 = M.inject(copy.deepcopy(base_unet), LoKrConfig(**dict(UNET_CFG, init_weights=True)))
    M.load_lokr_state_dict(om2, {k[len(M.PEFT_PREFIX):]: v for k, v in sd.items()})
    got = M.lokr_state_dict(om2)
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)


def test_save_peft_adapter_roundtrip_with_peft(base_clip, tmp_path):
    pm, om = _both(base_clip, CLIP_CFG)
    want = _clip_out(pm)
    out = M.save_peft_adapter(om, tmp_path / "ours", LoKrConfig(**CLIP_CFG))
    assert sorted(os.listdir(out)) == ["adapter_config.json", "adapter_model.safetensors"]
    loaded = PeftModel.from_pretrained(copy.deepcopy(base_clip), str(out))
    _close(_clip_out(loaded), want)
    # a dir written by peft loads into ours
    pm.save_pretrained(str(tmp_path / "theirs"))
    cfg = LoKrConfig.from_pretrained(tmp_path / "theirs")
    ours = M.inject(copy.deepcopy(base_clip), cfg)
    M.load_lokr_state_dict(ours, load_file(str(tmp_path / "theirs" / "adapter_model.safetensors")))
    _close(_clip_out(ours), want)
    # bad target: a file where the folder should be -> error, nothing written
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LoKrFormatError, match="is a file; expected a directory"):
        M.save_peft_adapter(om, blocker, LoKrConfig(**CLIP_CFG))
    assert blocker.read_text() == "x" and sorted(os.listdir(tmp_path)) == ["file", "ours", "theirs"]


def test_layer_types_and_dropout_train_eval(unet_pair, base_clip):
    layers = dict(M.lokr_layers(unet_pair[1]))
    assert isinstance(layers["down_blocks.1.resnets.0.conv_shortcut"], LoKrConv2d)
    assert isinstance(layers["mid_block.attentions.0.transformer_blocks.0.attn1.to_q"], LoKrLinear)
    assert all(isinstance(l, LoKrLayer) and not l.training for l in layers.values())  # eval model stays eval
    cfg = dict(CLIP_CFG, rank_dropout=0.5, module_dropout=0.5)
    pm, om = _both(base_clip, cfg)
    om.train(), pm.train()
    torch.manual_seed(11)
    a = _clip_out(pm)
    torch.manual_seed(11)
    b = _clip_out(om)
    _close(b, a)  # same draws in the same order as PEFT
    assert not torch.allclose(b, _clip_out(om))
    om.eval(), pm.eval()  # eval: no dropout (PEFT's new layers start in train mode, so eval() it)
    _close(_clip_out(om), _clip_out(pm))


@pytest.mark.parametrize("which", ["sd15_unet", "clip_l"])
def test_trainable_counts_equal_peft_on_full_size_meta_models(which):
    if which == "sd15_unet":
        base = models.unet(models.SD15_UNET, device="meta")
        cfg = dict(r=8, alpha=8, use_effective_conv2d=True,
                   target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj",
                                   "ff.net.2", "conv1", "conv2", "conv_shortcut"])
    else:
        base = models.clip_text(models.CLIP_L, device="meta")
        cfg = dict(r=16, alpha=8, decompose_both=True, target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"])
    pm = get_peft_model(copy.deepcopy(base), PeftLoKrConfig(**cfg))
    om = M.inject(copy.deepcopy(base), LoKrConfig(**cfg))
    assert _trainable(om) == _trainable(pm) > 0
    assert {k: tuple(v.shape) for k, v in M.lokr_state_dict(om).items()} == \
        {k: tuple(v.shape) for k, v in get_peft_model_state_dict(pm).items()}


def test_safe_merge_and_merged_load_refused_model_unchanged(base_clip):
    _, om = _both(base_clip, CLIP_CFG)
    name, layer = next(iter(M.lokr_layers(om)))
    with torch.no_grad():
        layer.lokr_w1["default"][0, 0] = float("nan")
    before = _snapshot(om)
    with pytest.raises(LoKrFormatError, match=f"module '{name}': merging adapter 'default' gives NaN/inf"):
        M.merge_and_unload(om, safe_merge=True)
    with pytest.raises(LoKrKeyError, match="no LoKr adapter 'nope'"):
        M.merge_and_unload(om, adapter_names=["nope"])
    assert _unchanged(before, om)
    sd = M.lokr_state_dict(om)
    layer.merge()
    before = _snapshot(om)
    with pytest.raises(LoKrKeyError, match="is merged into the weights; unmerge it"):
        M.load_lokr_state_dict(om, sd)
    assert _unchanged(before, om)
    assert M.active_adapters(om) == ["default"]


def test_lycoris_state_dict_conv1d_tucker_core_and_delta_vs_lycoris():
    from lycoris.functional.lokr import kron_weight

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(16, 32, 3), torch.nn.ReLU(), torch.nn.Conv1d(32, 32, 5))
    cfg = dict(r=2, alpha=3, target_modules=["0", "2"], use_effective_conv2d=True, init_weights=False)
    pm, om = _both(net, cfg)
    sd = M.lokr_state_dict(om, format="lycoris")
    assert tuple(sd["0.lokr_t2"].shape) == (2, 2, 3) and tuple(sd["2.lokr_t2"].shape) == (2, 2, 5)
    peft_mods = dict(pm.base_model.model.named_modules())
    for name in ("0", "2"):
        g = lambda p: sd[f"{name}.lokr_{p}"]  # noqa: E731
        alpha, r = float(sd[f"{name}.alpha"]), g("w2_b").shape[0]
        want = kron_weight(g("w1"), None, None, None, g("w2_a"), g("w2_b"), g("t2"), scale=alpha / r, backend="torch")
        _close(want.detach(), peft_mods[name].get_delta_weight("default").detach())
