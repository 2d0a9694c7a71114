"""LoKrFactors: layout facts, validation errors and target-shape checks."""
import math

import pytest
import torch

from lokr_core.base.errors import LoKrFormatError, LoKrShapeError
from lokr_core.tensor.factors import FACTOR_NAMES, LoKrFactors


def split_linear(r=2):
    return LoKrFactors(w1=torch.randn(4, 3), w2_a=torch.randn(10, r), w2_b=torch.randn(r, 4), alpha=1.0)


def test_layouts_and_rank():
    assert split_linear().layout == "split-w2" and split_linear().rank == 2
    full = LoKrFactors(w1=torch.randn(4, 3), w2=torch.randn(10, 4))
    assert full.layout == "full" and full.full_full and full.rank is None
    both = LoKrFactors(w1_a=torch.randn(4, 1), w1_b=torch.randn(1, 3), w2_a=torch.randn(10, 2), w2_b=torch.randn(2, 4))
    assert both.layout == "split-both" and both.rank == 2 and both.w1_shape == (4, 3)
    tucker = LoKrFactors(w1=torch.randn(4, 3), t2=torch.randn(2, 2, 3, 3), w2_a=torch.randn(2, 10), w2_b=torch.randn(2, 4))
    assert tucker.layout == "tucker" and tucker.tucker
    assert [n for n, _ in tucker.tensors()] == ["w1", "w2_a", "w2_b", "t2"]
    assert set(FACTOR_NAMES) >= {n for n, _ in tucker.tensors()}
    assert split_linear().num_params() == 12 + 20 + 8


def test_map_and_device_dtype():
    f = split_linear().map(lambda t: t.double())
    assert f.dtype == torch.float64 and f.device.type == "cpu" and f.alpha == 1.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(w2=torch.randn(10, 4)), "W1 is missing"),
    (dict(w1=torch.randn(4, 3)), "W2 is missing"),
    (dict(w1=torch.randn(4, 3), w1_a=torch.randn(4, 1), w1_b=torch.randn(1, 3), w2=torch.randn(10, 4)), "both lokr_w1 and"),
    (dict(w1=torch.randn(4, 3), w2=torch.randn(10, 4), w2_a=torch.randn(10, 2), w2_b=torch.randn(2, 4)), "both lokr_w2 and"),
    (dict(w1=torch.full((4, 3), float("nan")), w2=torch.randn(10, 4)), "NaN or inf"),
    (dict(w1=torch.randn(4, 3), w2_a=torch.randn(10, 2), w2_b=torch.randn(3, 4)), "expected (out_k, r)"),
    (dict(w1_a=torch.randn(4, 2), w1_b=torch.randn(3, 3), w2=torch.randn(10, 4)), "expected (out_l, r)"),
    (dict(w1=torch.randn(4, 3), t2=torch.randn(2, 2, 3, 3), w2_a=torch.randn(3, 10), w2_b=torch.randn(2, 4)), "Tucker"),
    # found by the fuzz suite (docs/fuzzing.md): a 0-D / 1-D full W2 or t2 passed and crashed later
    (dict(w1=torch.randn(1, 1), w2=torch.tensor(1.0)), "lokr_w2 has shape ()"),
    (dict(w1=torch.randn(4, 3), w2=torch.randn(10)), "lokr_w2 has shape (10,)"),
    (dict(w1=torch.randn(4, 3), t2=torch.randn(2), w2_a=torch.randn(2, 10), w2_b=torch.randn(2, 4)), "lokr_t2 has shape (2,)"),
    # rank 0 (ZeroDivisionError in the scale) and empty factors (RuntimeError in a reshape)
    (dict(w1=torch.randn(4, 3), w2_a=torch.randn(10, 0), w2_b=torch.randn(0, 4)), "lokr_w2_a has shape (10, 0)"),
    (dict(w1=torch.randn(0, 3), w2=torch.randn(10, 4)), "no zero-size axis"),
    (dict(w1=torch.randn(4, 3), w2_a=torch.randn(10, 2), w2_b=torch.randn(2, 4), alpha=math.nan), "alpha is NaN"),
    (dict(w1=torch.randn(4, 3), w2_a=torch.randn(10, 2), w2_b=torch.randn(2, 4), alpha=math.inf), "split"),
])
def test_validate_names_file_module_and_expectation(kwargs, message):
    with pytest.raises((LoKrFormatError, LoKrShapeError)) as err:
        LoKrFactors(**kwargs).validate(file="x.safetensors", module="lora_unet_a")
    assert message in str(err.value)
    assert "x.safetensors" in str(err.value) and "lora_unet_a" in str(err.value)


def test_inf_alpha_is_legal_on_full_full():
    LoKrFactors(w1=torch.randn(4, 3), w2=torch.randn(10, 4), alpha=math.inf).validate()
    LoKrFactors(w1=torch.randn(4, 3), w2=torch.randn(10, 4), alpha=1e10).validate()


def test_check_target_accepts_matching_and_rejects_wrong_shapes():
    split_linear().check_target((40, 12))
    conv = LoKrFactors(w1=torch.randn(4, 3), w2_a=torch.randn(10, 2), w2_b=torch.randn(2, 4 * 9))
    conv.check_target((40, 12, 3, 3))
    lycoris_conv = LoKrFactors(w1=torch.randn(4, 3), w2_a=torch.randn(10, 2), w2_b=torch.randn(2, 4, 3, 3))
    lycoris_conv.check_target((40, 12, 3, 3))
    tucker = LoKrFactors(w1=torch.randn(4, 3), t2=torch.randn(2, 2, 3, 3), w2_a=torch.randn(2, 10), w2_b=torch.randn(2, 4))
    tucker.check_target((40, 12, 3, 3))
    with pytest.raises(LoKrShapeError, match=r"target weight has shape \(40, 12, 1, 1\)"):
        tucker.check_target((40, 12, 1, 1))
    with pytest.raises(LoKrShapeError, match="f.safetensors"):
        split_linear().check_target((320, 768), file="f.safetensors", module="m")
