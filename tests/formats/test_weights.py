"""LoKrWeights: ΔW and merged weights against lycoris-lora / peft references, laziness, scale warnings."""
import math

import pytest
import torch
from safetensors.torch import save_file

from tests.support import lokr_fixtures as F
from lokr_core.formats.weights import LoKrWeights
from lokr_core.base.errors import LoKrFormatError, LoKrKeyError, LoKrShapeError
from lokr_core.tensor.factors import LoKrFactors
from lokr_core.formats.io import load_lokr, save_lokr


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.fixture(scope="module")
def lyco(tmp_path_factory):
    return F.make_lycoris_file(tmp_path_factory.mktemp("lyco"))


@pytest.fixture(scope="module")
def peftdir(tmp_path_factory):
    return F.make_peft_dir(tmp_path_factory.mktemp("peft"))


def test_every_layout_delta_equals_lycoris_get_weight(lyco):
    w = load_lokr(lyco.path)
    assert set(w.module_names) == set(lyco.reference)
    seen = set()
    for name, ref in lyco.reference.items():
        assert w.shapes(name).layout == lyco.layouts[name]
        seen.add(lyco.layouts[name])
        d = w.delta(name, ref.shape)
        assert d.dtype == torch.float32 and d.shape == ref.shape
        assert rel(d, ref) < 1e-5, name
        assert rel(w.delta(name), ref.reshape(w.natural_shape(name))) < 1e-5  # natural shape
    assert seen == {"full", "split-w2", "split-w1", "split-both", "tucker", "tucker-split-w1"}


def test_delta_dtype_device_and_fp16_file(tmp_path):
    lf = F.make_lycoris_file(tmp_path, ["split_w2_linear", "tucker_conv3x3"], dtype=torch.float16)
    w = load_lokr(lf.path)
    for name, ref in lf.reference.items():
        assert w.modules[name].w1.dtype == torch.float16
        assert rel(w.delta(name, ref.shape), ref) < 1e-5  # computed in fp32
        d64 = w.delta(name, ref.shape, device="cpu", dtype=torch.float64)
        assert d64.dtype == torch.float64 and rel(d64.float(), ref) < 1e-5


def test_peft_delta_equals_get_delta_weight(peftdir):
    w = load_lokr(peftdir.path)
    assert w.format == "peft" and len(w) == len(peftdir.reference)
    for name, ref in peftdir.reference.items():
        assert rel(w.delta(name, ref.shape), ref) < 1e-5, name
        assert w.peft_r_alpha(name) == peftdir.r_alpha[name]


def test_dora_merged_weight_equals_lycoris_both_layouts(lyco):
    w = load_lokr(lyco.path)
    assert len(lyco.merged) == 5
    axes = set()
    for name, merged in lyco.merged.items():
        W = lyco.weights[name]
        axes.add(tuple(w.modules[name].dora_scale.shape[:2]) == (1, W.shape[1]))
        before = W.clone()
        out = w.merged_weight(name, W)
        assert rel(out, merged) < 1e-5, name
        assert torch.equal(W, before)  # input untouched
        assert torch.equal(w.merged_weight(name, W, strength=0.0), W)
        half = w.merged_weight(name, W, strength=0.5)
        assert rel(half, W + 0.5 * (merged - W)) < 1e-5
        # lycoris' own formula at strength m: (W + ΔW) * (m (s - 1) + 1)
        from lycoris.functional.general import weight_decompose
        mod = lyco.modules[name]
        ref = weight_decompose(W + lyco.reference[name], mod.dora_scale.detach().float(), 0.5, mod.wd_on_out)
        assert rel(w.merged_weight(name, W, strength=0.5, dora_mode="lycoris"), ref) < 1e-5
    assert axes == {True, False}


def test_merged_weight_plain_equals_lycoris_and_keeps_dtype(lyco):
    w = load_lokr(lyco.path)
    for name, ref in lyco.reference.items():
        if name in lyco.merged:
            continue
        W = lyco.weights[name]
        assert rel(w.merged_weight(name, W, strength=0.7), W + 0.7 * ref) < 1e-5
        half = w.merged_weight(name, W.half())
        assert half.dtype == torch.float16
        assert rel(half.float(), W + ref) < 2e-3


def test_shape_mismatch_and_unknown_module(lyco):
    w = load_lokr(lyco.path)
    name = next(iter(lyco.reference))
    with pytest.raises(LoKrShapeError, match=rf"{lyco.path.name}.*{name}.*target weight has shape \(7, 7\)"):
        w.delta(name, (7, 7))
    W = torch.zeros(7, 7)
    with pytest.raises(LoKrShapeError):
        w.merged_weight(name, W)
    assert torch.equal(W, torch.zeros(7, 7))
    with pytest.raises(LoKrKeyError, match=r"module 'nope'.*no such LoKr module"):
        w.delta("nope")


def test_lazy_modules_and_raw_keys(lyco):
    w = load_lokr(lyco.path)
    assert w.modules.loaded() == []
    name = next(iter(lyco.reference))
    raw = w.raw_keys(name)
    assert set(raw) == {k for k in lyco.state_dict if k.startswith(name + ".")}
    for k, t in raw.items():
        assert torch.equal(t, lyco.state_dict[k])
    w.modules[name]
    assert w.modules.loaded() == [name]
    w.validate_all()
    assert len(w.modules.loaded()) == len(w)


def test_scale_rules_and_15114_warning(tmp_path):
    lf = F.make_lycoris_file(tmp_path, ["full_linear", "split_w2_linear"], alpha_override={"full_linear": 1.0},
                             metadata={"ss_network_dim": "32"})
    w = load_lokr(lf.path)
    full = next(n for n, k in lf.fixture.items() if k == "full_linear")
    split = next(n for n, k in lf.fixture.items() if k == "split_w2_linear")
    assert w.scale(full) == 1.0 and w.scale(full, "metadata-dim") == pytest.approx(1 / 32)
    assert w.scale(split) == 0.5 and w.scale(split, "metadata-dim") == 0.5
    assert rel(w.delta(full, scale_rule="metadata-dim"), lf.reference[full] / 32) < 1e-5
    assert rel(w.delta(full, scale_rule=2.0), 2 * lf.reference[full]) < 1e-5
    warns = w.scale_warnings()
    assert len(warns) == 1 and "alpha 1" in warns[0] and "ss_network_dim" in warns[0] and full in warns[0]
    assert "metadata-dim" in warns[0]
    clean = F.make_lycoris_file(tmp_path, ["full_linear"], filename="clean.safetensors",
                                metadata={"ss_network_dim": "8"})
    assert load_lokr(clean.path).scale_warnings() == []


def test_from_factors_validates_and_computes():
    good = LoKrFactors(w1=torch.randn(2, 2), w2_a=torch.randn(3, 1), w2_b=torch.randn(1, 3), alpha=0.5)
    w = LoKrWeights.from_factors({"m": good}, source="mem")
    ref = 0.5 * torch.kron(good.w1, good.w2_a @ good.w2_b)
    assert rel(w.delta("m"), ref) < 1e-6
    assert set(w.raw_keys("m")) == {"m.lokr_w1", "m.lokr_w2_a", "m.lokr_w2_b", "m.alpha"}
    bad = LoKrFactors(w1=torch.randn(2, 2), w2_a=torch.randn(3, 1), w2_b=torch.randn(1, 3), alpha=math.nan)
    with pytest.raises(LoKrFormatError, match=r"file 'mem', module 'b': alpha is NaN"):
        LoKrWeights.from_factors({"b": bad}, source="mem")


def test_natural_shape_ambiguous_conv_asks_for_shape(tmp_path):
    # w1 (1, 3), w2_b (1, 36): in_n*k*k = 36 fits kernel 2x2 (in 27) and 3x3 (in 12) -> must ask for shape
    sd = {"m.lokr_w1": torch.randn(1, 3), "m.lokr_w2_a": torch.randn(4, 1), "m.lokr_w2_b": torch.randn(1, 36),
          "m.alpha": torch.tensor(1.0), "m.dora_scale": torch.ones(4, 1, 1, 1)}
    save_file(sd, str(tmp_path / "a.safetensors"))
    w = load_lokr(tmp_path / "a.safetensors")
    with pytest.raises(LoKrShapeError, match=r"a.safetensors.*module 'm'.*expected shape="):
        w.delta("m")
    assert w.delta("m", (4, 12, 3, 3)).shape == (4, 12, 3, 3)


def test_resolve_delegates_with_shapes_only(lyco):
    w = load_lokr(lyco.path)
    report = w.resolve(lyco.model)
    assert len(report.matched) == len(w)
    assert w.modules.loaded() == []  # resolving read no tensors


def test_peft_conv1d_full_w2_compat_option(tmp_path):
    from peft import LoKrConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Conv1d(8, 8, 3))
    model = get_peft_model(base, LoKrConfig(r=8, alpha=4, target_modules=["0"], init_weights=False))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lokr_" in n:
                p.copy_(torch.randn(p.shape))
    model.save_pretrained(str(tmp_path / "c1"))
    layer = dict(model.named_modules())["base_model.model.0"]
    ref = layer.get_delta_weight("default").float()
    w = load_lokr(tmp_path / "c1")
    name = "base_model.model.0"
    assert w.shapes(name).w2.ndim == 3
    assert rel(w.delta(name, ref.shape, peft_conv1d=True), ref) < 1e-5
    # default: the true Kronecker product of the layer (PEFT's layout differs: docs/math.md, Shapes)
    f = w.modules[name]
    true = 0.5 * torch.kron(f.w1[:, :, None], f.w2)
    assert rel(w.delta(name, ref.shape), true) < 1e-5
    assert rel(w.delta(name, ref.shape), ref) > 0.1


def test_peft_to_peft_roundtrip_loads_in_peft(peftdir, tmp_path):
    from peft import PeftModel

    w = load_lokr(peftdir.path)
    out = save_lokr(w, tmp_path / "again", format="peft")
    model = PeftModel.from_pretrained(F.build_model("unet"), str(out))
    mods = dict(model.named_modules())
    for name, ref in peftdir.reference.items():
        assert rel(mods[name].get_delta_weight("default").float(), ref) < 1e-5, name
