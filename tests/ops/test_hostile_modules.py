"""Hostile LoKr modules the fuzz suite found (docs/fuzzing.md), as plain regression tests.

- A ΔW that leaves the weight's dtype range (a huge alpha or factor on an fp16 weight) merged into
  inf without a word; merges now refuse it before any weight changes, naming the file and module.
- A DoRA merge at an extreme strength / magnitude gave inf / NaN, and apply had already written
  the DoRA weights before it; a dora_scale of the wrong size reached a reshape (RuntimeError).
- One module stored under two naming schemes (``unet.x`` and ``lycoris_x``) was applied twice.
"""
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from lokr_core.base.errors import LoKrFormatError, LoKrShapeError
from lokr_core.formats.io import load_lokr
from lokr_core.ops.apply import apply_lokr
from lokr_core.ops.merge import KronUpdate, check_merge_fits, delta_bound, merge_plan_into_file, merged_weight
from lokr_core.tensor.factors import LoKrFactors
from tests.support import models

NAME = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
PATH = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


def _factors(big: float = 1.0) -> LoKrFactors:
    return LoKrFactors(w1=torch.full((4, 4), 0.5), w2=torch.full((8, 8), 0.25 * big))


def test_delta_bound_is_the_exact_largest_entry():
    f = LoKrFactors(w1=torch.tensor([[1.0, -3.0]]), w2_a=torch.tensor([[2.0], [1.0]]), w2_b=torch.tensor([[0.5, -1.0]]))
    u = KronUpdate(f, scale=2.0, strength=-0.5)
    delta = torch.kron(f.w1, f.w2_a @ f.w2_b) * 2.0 * -0.5
    assert delta_bound(u) == pytest.approx(float(delta.abs().max()))
    assert delta_bound(KronUpdate(f, scale=2.0, strength=0.0)) == 0.0


def test_fp16_overflow_is_refused_before_writing(tmp_path):
    src, out = tmp_path / "ckpt.safetensors", tmp_path / "out.safetensors"
    save_file({"w": torch.ones(32, 32, dtype=torch.float16), "b": torch.zeros(3)}, str(src))
    huge = [KronUpdate(_factors(), scale=1e6, strength=1.0, source="big.safetensors", module="lora_unet_w")]
    with pytest.raises(LoKrFormatError, match=r"big\.safetensors.*lora_unet_w.*float16 holds") as err:
        merge_plan_into_file(src, out, {"w": huge})
    assert "Nothing was changed" in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.safetensors"]  # no output, no temp file
    # the same update fits an fp32 output: written, finite and exact
    merge_plan_into_file(src, out, {"w": huge}, dtype="fp32")
    got = load_file(str(out))["w"]
    assert torch.isfinite(got).all() and torch.allclose(got, torch.full((32, 32), 1 + 0.125e6))


def test_check_merge_fits_sums_updates_and_ignores_non_finite_bases():
    w = torch.ones(32, 32, dtype=torch.float16)
    half = KronUpdate(_factors(), scale=4e5, strength=1.0)  # 50000 each: one fits fp16, two do not
    check_merge_fits(w, [half])
    with pytest.raises(LoKrFormatError, match="float16"):
        check_merge_fits(w, [half, half])
    check_merge_fits(w, [half, half], torch.float32)
    nan_base = w.clone()
    nan_base[0, 0] = float("nan")
    check_merge_fits(nan_base, [half, half])  # a broken checkpoint is not the LoKr's fault: no verdict
    assert torch.isfinite(merged_weight(w, [half])).all()


def test_check_merge_fits_reads_fp8_weights_and_skips_small_updates():
    """fp8 weights (no CPU amax kernel) are checked through fp32: 448 is e4m3fn's largest value."""
    w = torch.full((32, 32), 400.0).to(torch.float8_e4m3fn)
    check_merge_fits(w, [KronUpdate(_factors(), scale=1.0, strength=1.0)])  # 0.125 << 448 / 16: weight not read
    with pytest.raises(LoKrFormatError, match="float8_e4m3fn"):
        check_merge_fits(w, [KronUpdate(_factors(), scale=800.0, strength=1.0)])  # 400 + 100 > 448


@pytest.mark.parametrize("dtype, scale", [(torch.float16, 1e6), (torch.float32, 1e38)])
def test_apply_merge_refuses_overflow_and_leaves_the_model(dtype, scale):
    unet = models.tiny_unet(0).to(dtype)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    out_l = 4
    weight = unet.get_submodule(PATH).weight
    f = {f"{NAME}.lokr_w1": torch.full((out_l, out_l), 0.5),
         f"{NAME}.lokr_w2": torch.full((weight.shape[0] // out_l, weight.shape[1] // out_l), 10.0),
         f"{NAME}.alpha": torch.tensor(scale)}
    # full/full ignores alpha (scale 1) in LyCORIS' rule: a split W2 carries it
    f[f"{NAME}.lokr_w2_a"] = f.pop(f"{NAME}.lokr_w2")[:, :1].clone()
    f[f"{NAME}.lokr_w2_b"] = torch.ones(1, weight.shape[1] // out_l)
    with pytest.raises(LoKrFormatError, match=rf"{NAME}.*holds"):
        apply_lokr(unet, load_lokr(f), mode="merge")
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())


def _dora_module(name: str, weight: torch.Tensor, dora_scale: torch.Tensor) -> dict[str, torch.Tensor]:
    out, inn = weight.shape[:2]
    g = torch.Generator().manual_seed(1)
    return {f"{name}.lokr_w1": torch.randn(4, 4, generator=g) * 0.1,
            f"{name}.lokr_w2": torch.randn(out // 4, inn // 4, generator=g) * 0.1, f"{name}.dora_scale": dora_scale}


def test_dora_merge_that_overflows_is_refused_and_leaves_the_model():
    """A DoRA magnitude far beyond fp16 at strength 10 merged into inf."""
    unet = models.tiny_unet(0).half()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    weight = unet.get_submodule(PATH).weight
    mag = weight.detach().float().norm(dim=1, keepdim=True) * 1e5
    sd = _dora_module(NAME, weight, mag)
    with pytest.raises(LoKrFormatError, match=rf"{NAME}.*DoRA.*float16"):
        apply_lokr(unet, load_lokr(sd), strength=10.0, mode="merge")
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())
    sd[f"{NAME}.dora_scale"] = mag / 1e5
    apply_lokr(unet, load_lokr(sd), strength=1.0, mode="merge")  # a usable magnitude merges, finite
    assert torch.isfinite(unet.get_submodule(PATH).weight).all()


def test_one_module_under_two_names_is_refused():
    unet = models.tiny_unet(0)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    weight = unet.get_submodule(PATH).weight
    sd = {}
    for name in (NAME, "unet." + PATH):
        sd.update({f"{name}.lokr_w1": torch.ones(4, 4), f"{name}.lokr_w2": torch.ones(8, 8)})
    for mode in ("merge", "bypass"):
        with pytest.raises(LoKrFormatError, match=r"adapts the same weight .*one module under two names"):
            apply_lokr(unet, load_lokr(sd), mode=mode)
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())
    assert weight.shape == (32, 32)


def test_dora_scale_of_the_wrong_size_is_a_shape_error():
    """Found by the fuzz suite: a dora_scale of neither (out, 1) nor (1, in) reached a reshape (RuntimeError)."""
    unet = models.tiny_unet(0)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    weight = unet.get_submodule(PATH).weight
    sd = _dora_module(NAME, weight, torch.ones(2, 2))
    for mode in ("merge", "bypass"):
        with pytest.raises(LoKrShapeError, match=NAME):
            apply_lokr(unet, load_lokr(sd), mode=mode, strict=True)
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())
    f = LoKrFactors(w1=torch.randn(4, 4), w2=torch.randn(8, 8), dora_scale=torch.ones(1, 32))
    f.check_target((32, 32))  # per input column: fine
    with pytest.raises(LoKrShapeError, match="dora_scale"):
        LoKrFactors(w1=torch.randn(4, 4), w2=torch.randn(8, 8), dora_scale=torch.ones(31, 1)).check_target((32, 32))
