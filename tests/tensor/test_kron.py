"""kron.py against lycoris-lora's LokrModule and PEFT's LoKr layers (the reference math)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lokr_core.tensor import kron
from lokr_core.tensor.factors import FACTOR_NAMES, LoKrFactors


def lycoris_module(layer, **kwargs):
    from lycoris.modules.lokr import LokrModule

    torch.manual_seed(1)
    module = LokrModule("m", layer, **kwargs)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("lokr_"):
                p.copy_(torch.randn_like(p) * 0.1)
    return module


def factors_of(module) -> LoKrFactors:
    state = module.state_dict()  # lycoris' custom_state_dict: only the factors its layout uses
    return LoKrFactors(**{n: state["lokr_" + n] for n in FACTOR_NAMES if "lokr_" + n in state},
                       alpha=float(state["alpha"]) if "alpha" in state else None)


CASES = [
    (nn.Linear(24, 40), dict(lora_dim=2, alpha=1.5)),                       # split W2
    (nn.Linear(24, 40), dict(lora_dim=64, alpha=3)),                         # full/full
    (nn.Linear(64, 96), dict(lora_dim=2, alpha=2, decompose_both=True, factor=4)),
    (nn.Conv2d(16, 32, 3, padding=1), dict(lora_dim=2, alpha=1)),            # split conv, flat w2_b
    (nn.Conv2d(16, 32, 3, padding=1), dict(lora_dim=2, alpha=1, use_tucker=True)),
    (nn.Conv2d(16, 32, 1), dict(lora_dim=2, alpha=0.5)),
    (nn.Conv2d(16, 32, 3, padding=1), dict(lora_dim=32, alpha=1)),           # full 4-D W2
]


@pytest.mark.parametrize("layer, kwargs", CASES)
def test_kron_delta_equals_lycoris_get_weight(layer, kwargs):
    module = lycoris_module(layer, **kwargs)
    f = factors_of(module)
    f.validate()
    shape = layer.weight.shape
    f.check_target(shape)
    reference = module.get_weight(shape).detach()  # scale applied once (docs/math.md, Scale)
    ours = kron.kron_delta(f, shape, module.scale)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layer, kwargs", CASES)
def test_add_kron_in_place_equals_weight_plus_delta(layer, kwargs):
    module = lycoris_module(layer, **kwargs)
    f = factors_of(module)
    shape = layer.weight.shape
    w1, w2 = kron.rebuild_w1(f), kron.rebuild_w2(f, shape[2:])
    weight = torch.randn(shape)
    expected = weight + kron.kron_delta(f, shape, 0.7)
    out = kron.add_kron_(weight, w1, w2, 0.7)
    assert out.data_ptr() == weight.data_ptr()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    half = torch.randn(shape).half()
    expected = (half.float() + kron.kron_delta(f, shape, 0.7)).half()
    torch.testing.assert_close(kron.add_kron_(half, w1, w2, 0.7), expected, rtol=0, atol=1e-3)
    strided = torch.randn(shape[1], shape[0], *shape[2:]).transpose(0, 1)
    expected = strided + kron.kron_delta(f, shape, 0.7)
    torch.testing.assert_close(kron.add_kron_(strided, w1, w2, 0.7), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer, kwargs", [CASES[0], CASES[1], CASES[2]])
def test_kron_linear_bypass_equals_dense_linear(layer, kwargs):
    module = lycoris_module(layer, **kwargs)
    f = factors_of(module)
    x = torch.randn(3, 5, layer.in_features)
    delta = kron.kron_delta(f, layer.weight.shape)
    torch.testing.assert_close(kron.kron_linear_factors(x, f), F.linear(x, delta), rtol=1e-4, atol=1e-5)
    w1, w2 = kron.rebuild_w1(f), kron.rebuild_w2(f)
    torch.testing.assert_close(kron.kron_linear(x, w1, w2), F.linear(x, delta), rtol=1e-4, atol=1e-5)


def test_kron_conv1x1_bypass_equals_conv():
    layer = nn.Conv2d(16, 32, 1)
    f = factors_of(lycoris_module(layer, lora_dim=2, alpha=1))
    x = torch.randn(2, 16, 5, 6)
    delta = kron.kron_delta(f, layer.weight.shape)
    torch.testing.assert_close(kron.kron_conv1x1(x, f), F.conv2d(x, delta), rtol=1e-4, atol=1e-5)


def test_peft_conv1d_layout_reproduces_peft_and_true_kron_differs():
    from peft import LoKrConfig as PeftLoKrConfig
    from peft.tuners.lokr.layer import Conv1d as PeftConv1d

    base = nn.Conv1d(16, 32, 3)
    layer = PeftConv1d(base, adapter_name="default", config=PeftLoKrConfig(r=64, alpha=64, init_weights=False),
                       r=64, alpha=64)
    f = LoKrFactors(w1=layer.lokr_w1["default"].detach(), w2=layer.lokr_w2["default"].detach())
    reference = layer.get_delta_weight("default").detach()
    compat = kron.kron_delta(f, base.weight.shape, layer.scaling["default"], peft_conv1d=True)
    torch.testing.assert_close(compat, reference, rtol=1e-5, atol=1e-7)
    true = kron.kron_delta(f, base.weight.shape, layer.scaling["default"])
    assert not torch.allclose(true, reference)
    # the true product is what applying the layer as a Kronecker operator means
    w1, w2 = f.w1, f.w2
    manual = torch.einsum("lm,kns->lkmns", w1, w2).reshape(32, 16, 3) * layer.scaling["default"]
    torch.testing.assert_close(true, manual)


@pytest.mark.parametrize("wd_on_out", [True, False])
@pytest.mark.parametrize("layer", [nn.Linear(24, 40), nn.Conv2d(16, 32, 3)])
def test_dora_weight_equals_lycoris_merged_weight(layer, wd_on_out):
    module = lycoris_module(layer, lora_dim=2, alpha=1, weight_decompose=True, wd_on_out=wd_on_out)
    with torch.no_grad():
        module.dora_scale.mul_(1.3)
    shape = layer.weight.shape
    f = factors_of(module)
    delta = kron.kron_delta(f, shape, module.scale)
    # oracle: lycoris' DoRA epilogue on W + get_weight; its get_merged_weight applies the scale twice
    # (docs/known-failures.md, lycoris-lora 4.1.3), so it is not used here
    merged = layer.weight.detach() + module.get_weight(shape).detach()
    reference = module.apply_weight_decompose(merged, 1.0)
    ours = kron.dora_weight(layer.weight.detach(), delta, module.dora_scale.detach())
    torch.testing.assert_close(ours, reference.detach(), rtol=1e-5, atol=1e-6)
    # lycoris' own strength rule, offered as mode="lycoris"
    ref_half = module.apply_weight_decompose(merged, 0.5)
    ours_half = kron.dora_apply(layer.weight.detach(), delta, module.dora_scale.detach(), 0.5, mode="lycoris")
    torch.testing.assert_close(ours_half, ref_half.detach(), rtol=1e-5, atol=1e-6)


def test_dora_apply_interpolates_and_zero_strength_is_exact():
    w = torch.randn(40, 24)
    delta = torch.randn(40, 24) * 0.1
    mag = torch.rand(40, 1) + 0.5
    assert torch.equal(kron.dora_apply(w, delta, mag, 0.0), w)
    full = kron.dora_apply(w, delta, mag, 1.0)
    torch.testing.assert_close(full, kron.dora_weight(w, delta, mag))
    torch.testing.assert_close(kron.dora_apply(w, delta, mag, 0.25), w + 0.25 * (full - w))
    with pytest.raises(ValueError, match="mode"):
        kron.dora_apply(w, delta, mag, 1.0, mode="bogus")


def test_dora_norm_axis_follows_the_stored_shape():
    w = torch.randn(6, 4, 3, 3)
    assert kron.dora_norm(w, (6, 1, 1, 1)).shape == (6, 1, 1, 1)
    col = kron.dora_norm(w, (1, 4, 1, 1))
    assert col.shape == (1, 4, 1, 1)
    torch.testing.assert_close(col[0, 1, 0, 0], w[:, 1].norm())


def test_rebuild_w2_reshapes_split_conv_and_kron_product_shapes():
    f = LoKrFactors(w1=torch.randn(2, 2), w2_a=torch.randn(5, 2), w2_b=torch.randn(2, 3 * 9))
    assert kron.rebuild_w2(f, (3, 3)).shape == (5, 3, 3, 3)
    assert kron.rebuild_w2(f).shape == (5, 27)
    assert kron.rebuild_w1(f).shape == (2, 2)
    assert kron.kron_product(torch.randn(2, 2), torch.randn(5, 3, 3, 3)).shape == (10, 6, 3, 3)
    assert kron.peft_conv1d_kron(torch.randn(2, 2), torch.randn(5, 3, 3), (10, 6, 3)).shape == (10, 6, 3)
