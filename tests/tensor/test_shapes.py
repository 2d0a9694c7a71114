"""lokr_core.tensor.shapes against the parameters the real peft (0.21.x) creates."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lokr_core.tuner.config import LoKrConfig
from lokr_core.base.errors import LoKrConfigError, LoKrShapeError
from lokr_core.tensor.shapes import FactorPlan, plan_factors, plan_for_layer
from lokr_core.tuner.targeting import find_targets
from tests.support.models import CLIP_L, SD15_UNET, clip_text, unet

peft = pytest.importorskip("peft")
from peft.tuners.lokr.layer import LoKrLayer as PeftLoKrLayer  # noqa: E402

PLAN_KEYS = ("decompose_both", "decompose_factor", "use_effective_conv2d")


def peft_shapes(model: nn.Module, **config) -> tuple[dict[str, dict[str, tuple[int, ...]]], int]:
    """Inject with peft (on the model's own device) and return {module: {factor: shape}} and the
    number of trainable parameters peft created."""
    peft.inject_adapter_in_model(peft.LoKrConfig(**config), model, low_cpu_mem_usage=True)
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, module in model.named_modules():
        if isinstance(module, PeftLoKrLayer):
            shapes[name] = {attr[len("lokr_"):]: tuple(getattr(module, attr)["default"].shape)
                            for attr in PeftLoKrLayer.adapter_layer_names if "default" in getattr(module, attr)}
    n_params = sum(p.numel() for n, p in model.named_parameters() if "lokr_" in n)
    return shapes, n_params


def our_shapes(model: nn.Module, **config) -> tuple[dict[str, dict[str, tuple[int, ...]]], int]:
    cfg = LoKrConfig(**config)
    plans = {t.name: plan_for_layer(t.module, t.r, **{k: getattr(cfg, k) for k in PLAN_KEYS})
             for t in find_targets(model, cfg)}
    return {n: p.shapes for n, p in plans.items()}, sum(p.num_params for p in plans.values())


class Zoo(nn.Module):
    """One of every layer kind the planner distinguishes."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(320, 768)
        self.lin_prime = nn.Linear(127, 64)
        self.lin_small = nn.Linear(8, 8)
        self.conv3 = nn.Conv2d(320, 640, 3, padding=1)
        self.conv1x1 = nn.Conv2d(320, 320, 1)
        self.conv13 = nn.Conv2d(64, 128, (1, 3))
        self.grouped = nn.Conv2d(64, 128, 3, groups=4)
        self.c1d = nn.Conv1d(64, 128, 5)
        self.c1d_k1 = nn.Conv1d(64, 32, 1)
        self.c1d_grouped = nn.Conv1d(64, 64, 3, groups=8)


ZOO_TARGETS = ["lin", "lin_prime", "lin_small", "conv3", "conv1x1", "conv13", "grouped", "c1d", "c1d_k1",
               "c1d_grouped"]


@pytest.mark.parametrize("config", [
    dict(r=8),
    dict(r=4, decompose_both=True),
    dict(r=1, decompose_both=True, use_effective_conv2d=True),
    dict(r=8, use_effective_conv2d=True),
    dict(r=16, decompose_factor=4),
    dict(r=2, decompose_factor=8, decompose_both=True, use_effective_conv2d=True),
    dict(r=4, decompose_factor=16, use_effective_conv2d=True),
    dict(r=1000),  # r large enough: W1 and W2 both full everywhere
    dict(r=4, rank_pattern={"conv3": 64, "^c1d": 2}, alpha_pattern={"lin": 3}, use_effective_conv2d=True),
])
def test_plan_for_layer_equals_peft_parameter_shapes(config):
    peft_side, peft_n = peft_shapes(Zoo(), target_modules=ZOO_TARGETS, **config)
    ours, ours_n = our_shapes(Zoo(), target_modules=ZOO_TARGETS, **config)
    assert ours == peft_side
    assert ours_n == peft_n


def test_tucker_layouts_match_peft_including_conv1d_padding():
    peft_side, _ = peft_shapes(Zoo(), target_modules=ZOO_TARGETS, r=2, use_effective_conv2d=True)
    assert peft_side["c1d"]["t2"] == (2, 2, 5, 1)  # PEFT's Conv1d Tucker core carries a trailing 1
    plan = plan_for_layer(Zoo().c1d, 2, use_effective_conv2d=True)
    assert plan.tucker and plan.shapes["t2"] == (2, 2, 5, 1) and plan.kernel == (5,)
    assert plan_for_layer(Zoo().conv3, 2, use_effective_conv2d=True).shapes["t2"] == peft_side["conv3"]["t2"]
    # kernel 1 / (1, 1): PEFT turns Tucker off; a (1, 3) kernel keeps it
    assert not plan_for_layer(Zoo().conv1x1, 2, use_effective_conv2d=True).tucker
    assert not plan_for_layer(Zoo().c1d_k1, 2, use_effective_conv2d=True).tucker
    assert plan_for_layer(Zoo().conv13, 2, use_effective_conv2d=True).shapes == peft_side["conv13"]


@pytest.mark.parametrize("config", [
    dict(r=8, use_effective_conv2d=True),
    dict(r=4, decompose_both=True, decompose_factor=8, use_effective_conv2d=True),
])
def test_full_size_sd15_unet_convs_and_attention_equal_peft(config):
    targets = ["conv_in", "conv1", "conv2", "proj_in", "to_q", "to_k", "to_v", "to_out.0", "ff.net.2",
               "conv_shortcut", "time_emb_proj"]
    peft_side, peft_n = peft_shapes(unet(SD15_UNET, "meta"), target_modules=targets, **config)
    ours, ours_n = our_shapes(unet(SD15_UNET, "meta"), target_modules=targets, **config)
    assert len(ours) == len(peft_side) > 200
    assert ours == peft_side
    assert ours_n == peft_n
    # SD1.5 proj_in is a 1x1 conv: never Tucker
    assert "t2" not in ours["down_blocks.0.attentions.0.proj_in"]


def test_full_size_clip_l_all_linear_with_patterns_equals_peft():
    config = dict(target_modules="all-linear", r=16, decompose_factor=16,
                  rank_pattern={r"layers\.1[01]\..*mlp\.fc\d": 200}, alpha_pattern={"q_proj": 4})
    peft_side, peft_n = peft_shapes(clip_text(CLIP_L, "meta"), **config)
    ours, ours_n = our_shapes(clip_text(CLIP_L, "meta"), **config)
    assert ours == peft_side and ours_n == peft_n
    assert "w2" in ours["encoder.layers.10.mlp.fc1"]  # r 200 >= max(out_k, in_n) / 2: full W2


def test_plan_factors_values_and_weight_shape():
    plan = plan_factors((640, 320, 3, 3), 4, conv_dims=2, use_effective_conv2d=True, decompose_both=True)
    assert isinstance(plan, FactorPlan)
    assert (plan.out_l, plan.out_k, plan.in_m, plan.in_n) == (20, 32, 16, 20)
    assert plan.kernel == (3, 3) and plan.rank == 4 and plan.tucker and not plan.use_w1 and not plan.use_w2
    assert plan.shapes == {"w1_a": (20, 4), "w1_b": (4, 16), "t2": (4, 4, 3, 3), "w2_a": (4, 32), "w2_b": (4, 20)}
    assert plan.num_params == sum(math.prod(s) for s in plan.shapes.values())
    assert plan.weight_shape == (640, 320, 3, 3)
    # grouped conv: the weight's in-axis already is in_channels // groups
    grouped = nn.Conv2d(64, 128, 3, groups=4)
    assert plan_factors(tuple(grouped.weight.shape), 8, conv_dims=2, groups=4) == plan_for_layer(grouped, 8)
    # plans are frozen
    with pytest.raises(AttributeError):
        plan.rank = 8  # type: ignore[misc]


@pytest.mark.parametrize("args, kwargs, error, text", [
    (((64, 32), 0), {}, LoKrConfigError, "r must be a positive integer"),
    (((64, 32), -3), {}, LoKrConfigError, "r must be a positive integer"),
    (((64, 32), 4), {"conv_dims": 3}, LoKrConfigError, "conv_dims"),
    (((64, 32), 4), {"groups": 0}, LoKrConfigError, "groups"),
    (((64, 32, 3, 3), 4), {}, LoKrShapeError, "conv_dims=0"),
    (((64, 32), 4), {"conv_dims": 2}, LoKrShapeError, "(64, 32)"),
    (((64, 0), 4), {}, LoKrShapeError, "positive"),
])
def test_plan_factors_rejects_bad_input(args, kwargs, error, text):
    with pytest.raises(error) as info:
        plan_factors(*args, **kwargs)
    assert text in str(info.value)


def test_plan_for_layer_rejects_other_modules_like_peft():
    norm = nn.LayerNorm(8)
    with pytest.raises(LoKrConfigError, match="LayerNorm"):
        plan_for_layer(norm, 4)
    holder = nn.Sequential(nn.LayerNorm(8))
    with pytest.raises((TypeError, ValueError)):  # peft refuses it too
        peft.inject_adapter_in_model(peft.LoKrConfig(target_modules=["0"]), holder)


def test_plan_for_layer_on_meta_touches_nothing():
    layer = nn.Linear(1280, 5120, device="meta")
    plan = plan_for_layer(layer, 8)
    assert plan.shapes == {"w1": (64, 32), "w2_a": (80, 8), "w2_b": (8, 40)}  # 5120 = 64 * 80
    assert layer.weight.device == torch.device("meta") and list(layer.named_children()) == []
