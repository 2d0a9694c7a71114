"""LoKr layers against the real peft 0.21.2 LoKr layers (and lycoris-lora for the true Conv1d product).

Both layers are built from the same seed, so PEFT's and our parameters start identical; every
numeric assertion compares against PEFT (or lycoris-lora), never against our own code alone.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from peft import LoKrConfig as PeftLoKrConfig
from peft.tuners.lokr import layer as peft_layer
from torch import nn

from lokr_core.base.errors import LoKrConfigError, LoKrFormatError, LoKrKeyError
from lokr_core.tuner.layers import LoKrConv1d, LoKrConv2d, LoKrLayer, LoKrLinear, wrap_layer

PEFT_CLS = {nn.Linear: peft_layer.Linear, nn.Conv2d: peft_layer.Conv2d, nn.Conv1d: peft_layer.Conv1d}

# name -> (base factory, r, config kwargs, input shape)
CASES = {
    "linear_split_w2": (lambda: nn.Linear(320, 640), 4, {}, (2, 5, 320)),
    "linear_decompose_both": (lambda: nn.Linear(320, 640), 4, {"decompose_both": True}, (2, 5, 320)),
    "linear_full_full": (lambda: nn.Linear(64, 48), 16, {}, (3, 64)),
    "linear_factor4": (lambda: nn.Linear(128, 64), 2, {"decompose_factor": 4}, (3, 128)),
    "conv3x3_split": (lambda: nn.Conv2d(32, 64, 3, padding=1), 2, {}, (2, 32, 6, 6)),
    "conv3x3_tucker": (lambda: nn.Conv2d(32, 64, 3, padding=1), 2, {"use_effective_conv2d": True}, (2, 32, 6, 6)),
    "conv3x3_tucker_both": (lambda: nn.Conv2d(64, 64, 3, stride=2, padding=1), 2,
                            {"use_effective_conv2d": True, "decompose_both": True}, (2, 64, 7, 7)),
    "conv3x3_full": (lambda: nn.Conv2d(16, 16, 3), 8, {}, (1, 16, 5, 5)),
    "conv1x1": (lambda: nn.Conv2d(64, 32, 1), 2, {"use_effective_conv2d": True}, (2, 64, 4, 4)),
    "conv1x1_full": (lambda: nn.Conv2d(16, 16, 1), 8, {}, (2, 16, 3, 3)),
    "conv_grouped": (lambda: nn.Conv2d(32, 64, 3, padding=1, groups=2), 2, {}, (1, 32, 5, 5)),
    "conv1d_split": (lambda: nn.Conv1d(32, 64, 3, padding=1), 2, {}, (2, 32, 9)),
    "conv1d_tucker": (lambda: nn.Conv1d(32, 64, 3), 2, {"use_effective_conv2d": True}, (2, 32, 9)),
    "conv1d_k1": (lambda: nn.Conv1d(32, 64, 1), 2, {}, (2, 32, 9)),
}


def _pair(case: str, init_weights=False, alpha: float = 3.0, seed: int = 1, **extra):
    """(peft layer, our layer, input) built from the same base weights and the same RNG state."""
    factory, r, kw, xshape = CASES[case]
    torch.manual_seed(0)
    base = factory()
    cfg = PeftLoKrConfig(r=r, alpha=alpha, init_weights=init_weights, **kw, **extra)
    torch.manual_seed(seed)
    p = PEFT_CLS[type(base)](copy.deepcopy(base), "default", cfg, r=r, alpha=alpha)
    torch.manual_seed(seed)
    o = wrap_layer(copy.deepcopy(base), "default", r, alpha, cfg)
    x = torch.randn(*xshape, generator=torch.Generator().manual_seed(7))
    return p, o, x


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    a, b = a.detach(), b.detach()
    scale = max(float(b.abs().max()), 1e-12)
    err = float((a - b).abs().max())
    assert err <= rel * scale, f"max abs error {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("init", [True, "lycoris", False])
def test_update_layer_params_and_init_match_peft(case, init):
    p, o, x = _pair(case, init_weights=init)
    ours = dict(o.named_parameters())
    theirs = dict(p.named_parameters())
    assert set(ours) == set(theirs)
    for name, t in theirs.items():
        assert ours[name].shape == t.shape, name
        assert torch.equal(ours[name], t), f"{name} differs from PEFT's init ({init})"
        assert ours[name].requires_grad == t.requires_grad, name
    trainable = lambda m: sum(q.numel() for n, q in m.named_parameters() if "lokr_" in n and q.requires_grad)  # noqa: E731
    assert trainable(o) == trainable(p) > 0
    with torch.no_grad():
        if init is False:
            assert not torch.allclose(o(x), o.base_layer(x))
        else:  # True and "lycoris" start as the identity
            assert torch.equal(o(x), o.base_layer(x))


@pytest.mark.parametrize("case", sorted(CASES))
def test_delta_weight_and_forward_match_peft(case):
    p, o, x = _pair(case)
    _close(o.get_delta_weight("default"), p.get_delta_weight("default"))
    with torch.no_grad():
        want = p(x)
        _close(o(x), want)
        o.forward_mode = "delta"
        _close(o(x), want)
        o.forward_mode = "bypass"
        _close(o(x), want)
    factory, *_ = CASES[case]
    b = factory()
    expect_bypass = isinstance(b, nn.Linear) or (all(k == 1 for k in b.kernel_size) and b.groups == 1)
    assert o.uses_bypass("default") == expect_bypass
    assert o.forward_path("default") == ("bypass" if expect_bypass else "delta")
    o.forward_mode = "auto"
    assert o.forward_path("default") == "fused" and not o.uses_bypass("default")


@pytest.mark.parametrize("mode", ["auto", "bypass"])
@pytest.mark.parametrize("case", ["linear_decompose_both", "conv1x1", "conv3x3_tucker"])
def test_gradients_match_peft(case, mode):
    p, o, x = _pair(case)
    o.forward_mode = mode
    p(x).square().sum().backward()
    o(x).square().sum().backward()
    grads = {n: q.grad for n, q in p.named_parameters() if q.grad is not None}
    assert grads and set(grads) == {n for n, q in o.named_parameters() if q.grad is not None}
    for n, q in o.named_parameters():
        if q.grad is not None:
            _close(q.grad, grads[n], 1e-4)


@pytest.mark.parametrize("case", ["linear_split_w2", "linear_full_full", "conv3x3_tucker", "conv1x1",
                                  "conv_grouped", "conv1d_split"])
def test_merge_unmerge_match_peft(case):
    p, o, x = _pair(case)
    original = o.base_layer.weight.detach().clone()
    with torch.no_grad():
        unmerged = o(x)
        p.merge()
        o.merge()
        assert o.merged_adapters == ["default"] and o.merged
        _close(o.base_layer.weight, p.base_layer.weight)
        _close(o(x), p(x))
        _close(o(x), unmerged)
        o.merge()  # already merged: nothing added
        _close(o.base_layer.weight, p.base_layer.weight)
        o.set_scale("default", 0.25)  # unmerge uses the scale the adapter was merged with
        o.unmerge()
    assert o.merged_adapters == [] and not o.merged
    _close(o.base_layer.weight, original, 1e-6)
    with pytest.warns(UserWarning, match="unmerged"):
        o.unmerge()


def test_safe_merge_refuses_nan_and_leaves_weight():
    p, o, x = _pair("linear_split_w2")
    with torch.no_grad():
        o.lokr_w1["default"][0, 0] = float("inf")
    before = o.base_layer.weight.detach().clone()
    with pytest.raises(LoKrFormatError, match="'default'.*NaN/inf"):
        o.merge(safe_merge=True)
    assert torch.equal(o.base_layer.weight, before) and not o.merged


def test_conv1d_full_w2_true_kron_vs_lycoris_and_peft_compat():
    from lycoris.functional.lokr import kron_weight

    torch.manual_seed(0)
    base = nn.Conv1d(16, 16, 3)
    cfg = PeftLoKrConfig(r=8, alpha=2.0, init_weights=False)
    torch.manual_seed(1)
    p = peft_layer.Conv1d(copy.deepcopy(base), "default", cfg, r=8, alpha=2.0)
    torch.manual_seed(1)
    o = wrap_layer(copy.deepcopy(base), "default", 8, 2.0, cfg)
    torch.manual_seed(1)
    compat = wrap_layer(copy.deepcopy(base), "default", 8, 2.0, cfg, peft_conv1d_compat=True)
    assert o.lokr_w2["default"].ndim == 3
    f = o.factors("default")
    want = kron_weight(f.w1, None, None, f.w2, None, None, None, scale=0.25, backend="torch")
    _close(o.get_delta_weight("default"), want.reshape(16, 16, 3))
    assert not torch.allclose(o.get_delta_weight("default"), p.get_delta_weight("default"))
    _close(compat.get_delta_weight("default"), p.get_delta_weight("default"))
    x = torch.randn(2, 16, 8)
    with torch.no_grad():
        _close(compat(x), p(x))
        compat.merge()
        _close(compat.base_layer.weight, base.weight + p.get_delta_weight("default"))


@pytest.mark.parametrize("case,mode,scale_flag", [("linear_split_w2", "auto", False), ("linear_split_w2", "bypass", True),
                                                   ("conv3x3_split", "auto", True), ("conv3x3_split", "delta", False),
                                                   ("conv1x1", "bypass", False)])
def test_rank_and_module_dropout_in_training_match_peft(case, mode, scale_flag):
    p, o, x = _pair(case, rank_dropout=0.5, module_dropout=0.3, rank_dropout_scale=scale_flag)
    o.forward_mode = mode
    p.train(), o.train()
    outs = []
    for mod in (p, o):
        torch.manual_seed(123)
        with torch.no_grad():
            outs.append(torch.stack([mod(x) for _ in range(6)]))
    _close(outs[1], outs[0])
    with torch.no_grad():  # some calls differ from the no-dropout output: dropout did act
        o.eval()
        clean = o(x)
    assert any(not torch.allclose(y, clean) for y in outs[1])
    p.eval()
    with torch.no_grad():  # eval: no dropout, deterministic
        _close(o(x), p(x))


def test_disable_enable_adapters():
    p, o, x = _pair("conv3x3_split")
    with torch.no_grad():
        on = o(x)
        o.merge()
        o.enable_adapters(False)
        assert torch.allclose(o(x), o.base_layer(x)) and not o.merged  # disabling unmerges
        _close(o(x), nn.functional.conv2d(x, p.base_layer.weight, p.base_layer.bias, padding=1))
    assert not any(q.requires_grad for n, q in o.named_parameters() if "lokr_" in n)
    o.enable_adapters(True)
    assert o.lokr_w1["default"].requires_grad
    with torch.no_grad():
        _close(o(x), on)


def test_two_adapters_active_set_and_scale_match_peft():
    p, o, x = _pair("linear_decompose_both")
    cfg = PeftLoKrConfig(r=2, alpha=5.0, init_weights=False)
    torch.manual_seed(5)
    p.update_layer("second", 2, 5.0, config=cfg)
    torch.manual_seed(5)
    o.update_layer("second", 2, 5.0, cfg)
    assert o.active_adapters == ["default"] and not o.lokr_w1["second"].requires_grad
    for mod in (p, o):
        mod.set_adapter(["default", "second"])
        mod.set_scale("second", 0.5)
    assert o.scaling == p.scaling
    assert {n: q.requires_grad for n, q in o.named_parameters()} == {n: q.requires_grad for n, q in p.named_parameters()}
    with torch.no_grad():
        _close(o(x), p(x))
        o.merge(["second"])
        p.merge(["second"])
        _close(o.base_layer.weight, p.base_layer.weight)
        _close(o(x), p(x))
        o.unmerge()
    o.set_adapter("second")
    assert o.active_adapter == "second"
    o.delete_adapter("second")
    assert o.available_adapters == {"default"} and o.active_adapters == []


def test_half_precision_base_keeps_dtype():
    torch.manual_seed(0)
    base = nn.Linear(64, 32).to(torch.bfloat16)
    cfg = PeftLoKrConfig(r=4, alpha=4, init_weights=False)
    torch.manual_seed(1)
    p = peft_layer.Linear(copy.deepcopy(base), "default", cfg, r=4, alpha=4)
    torch.manual_seed(1)
    o = wrap_layer(copy.deepcopy(base), "default", 4, 4, cfg)
    assert o.lokr_w1["default"].dtype == torch.bfloat16
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        y = o(x)
        assert y.dtype == torch.bfloat16
        _close(y.float(), p(x).float(), 2e-2)


def _snapshot(layer: LoKrLayer):
    return ({k: v.detach().clone() for k, v in layer.state_dict().items()}, dict(layer.scaling),
            layer.active_adapters, list(layer.merged_adapters))


def _same(a, b) -> bool:
    return (a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
            and a[1:] == b[1:])


def test_bad_input_errors_leave_layer_unchanged():
    p, o, x = _pair("linear_split_w2")
    before = _snapshot(o)
    with pytest.raises(LoKrConfigError, match="'extra'.*r must be a positive integer, got 0"):
        o.update_layer("extra", 0, 1.0)
    with pytest.raises(LoKrKeyError, match="'default' already exists"):
        o.update_layer("default", 4, 1.0)
    with pytest.raises(LoKrConfigError, match=r"unknown setting\(s\) \['dropout'\]"):
        o.update_layer("extra", 4, 1.0, dropout=0.1)
    with pytest.raises(LoKrKeyError, match=r"\['nope'\] not on this layer.*'default'"):
        o.set_adapter(["default", "nope"])
    with pytest.raises(LoKrConfigError, match="forward_mode must be one of"):
        o.forward_mode = "fast"
    with pytest.raises(LoKrConfigError, match="list of names"):
        o.merge(adapter_names="default")
    with pytest.raises(LoKrKeyError, match="no adapter 'nope'"):
        o.delete_adapter("nope")
    assert _same(before, _snapshot(o))
    with pytest.raises(LoKrConfigError, match="supports nn.Linear, nn.Conv1d and nn.Conv2d; got a Embedding"):
        wrap_layer(nn.Embedding(10, 4))
    with pytest.raises(LoKrConfigError, match="base_layer must be a Conv2d, got a Linear"):
        LoKrConv2d(nn.Linear(4, 4))
    o.merge()
    with pytest.raises(LoKrKeyError, match="'default' is merged"):
        o.delete_adapter("default")


def test_classes_and_wrap_layer_nesting():
    assert isinstance(wrap_layer(nn.Conv1d(8, 8, 3), r=2), LoKrConv1d)
    assert isinstance(wrap_layer(nn.Conv2d(8, 8, 3), r=2), LoKrConv2d)
    lin = wrap_layer(nn.Linear(8, 8), r=2)
    assert isinstance(lin, LoKrLinear)
    assert wrap_layer(lin, "b", r=2) is lin and lin.available_adapters == {"default", "b"}
    assert lin.weight is lin.base_layer.weight and lin.in_features == 8 and lin.out_features == 8
    assert math.isclose(lin.scaling["b"], 8 / 2)
    assert "lokr_w1.b" in dict(lin.named_parameters())


@pytest.mark.parametrize("mode", ["auto", "bypass", "delta"])
def test_two_adapters_dropout_draw_order_matches_peft(mode):
    p, o, x = _pair("linear_split_w2", rank_dropout=0.4, module_dropout=0.2)
    cfg = PeftLoKrConfig(r=2, alpha=5.0, init_weights=False, rank_dropout=0.6, module_dropout=0.3,
                         rank_dropout_scale=True)
    torch.manual_seed(5)
    p.update_layer("second", 2, 5.0, config=cfg)
    torch.manual_seed(5)
    o.update_layer("second", 2, 5.0, cfg)
    o.forward_mode = mode
    outs = []
    for mod in (p, o):
        mod.set_adapter(["default", "second"])
        mod.train()
        torch.manual_seed(77)
        with torch.no_grad():
            outs.append(torch.stack([mod(x) for _ in range(8)]))
    _close(outs[1], outs[0])
