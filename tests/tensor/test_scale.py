"""lokr_core.tensor.scale against the scales lycoris-lora's LokrModule and peft's LoKr layers use."""
import math

import pytest
import torch

from tests.support import lokr_fixtures as F
from lokr_core.base.errors import LoKrFormatError
from lokr_core.tensor.factors import LoKrFactors
from lokr_core.tensor.scale import is_ambiguous, lycoris_scale, metadata_dim, module_scale


def _factors_of(mod) -> LoKrFactors:
    sd = mod.state_dict()
    kw = {k[len("lokr_"):]: v for k, v in sd.items() if k.startswith("lokr_")}
    if "dora_scale" in sd:
        kw["dora_scale"] = sd["dora_scale"]
    return LoKrFactors(**kw, alpha=float(sd["alpha"]))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 3.0, 16.0])
def test_file_rule_equals_lycoris_module_scale(alpha):
    from lycoris.modules.lokr import LokrModule

    model = F.build_model("unet")
    named = dict(model.named_modules())
    for key in ("split_w2_linear", "split_both_linear", "full_linear", "tucker_conv3x3", "split_conv3x3"):
        _, path, kwargs, _ = F.LAYOUTS[key]
        mod = LokrModule("x", named[path], **dict(kwargs, alpha=alpha))
        f = _factors_of(mod)
        assert module_scale(f, "file") == pytest.approx(float(mod.scale), rel=1e-6), key
        assert lycoris_scale(f) == pytest.approx(float(mod.scale), rel=1e-6)


def test_file_rule_with_peft_r_alpha_equals_peft_scaling(tmp_path):
    pd = F.make_peft_dir(tmp_path)
    mods = dict(pd.model.named_modules())
    for name, (r, alpha) in pd.r_alpha.items():
        f = LoKrFactors(w1=torch.ones(2, 2), w2=torch.ones(2, 2))
        assert module_scale(f, "file", peft_r=r, peft_alpha=alpha) == pytest.approx(mods[name].scaling["default"])
        assert module_scale(f, "peft", peft_r=r, peft_alpha=alpha) == pytest.approx(mods[name].scaling["default"])


def test_full_full_ignores_alpha_including_inf():
    f = LoKrFactors(w1=torch.ones(2, 2), w2=torch.ones(3, 3), alpha=math.inf)
    assert module_scale(f, "file") == 1.0
    f.alpha = 1e10
    assert module_scale(f, "file") == 1.0


def test_other_rules():
    split = LoKrFactors(w1=torch.ones(2, 2), w2_a=torch.ones(3, 4), w2_b=torch.ones(4, 3), alpha=2.0)
    full = LoKrFactors(w1=torch.ones(2, 2), w2=torch.ones(3, 3), alpha=1.0)
    assert module_scale(split, "file") == 0.5
    assert module_scale(split, "peft") == 0.5
    assert module_scale(split, "none") == 1.0
    assert module_scale(split, 0.25) == 0.25
    assert module_scale(full, "metadata-dim", metadata_dim=32) == pytest.approx(1 / 32)
    assert module_scale(full, "metadata-dim") == 1.0
    assert module_scale(split, "metadata-dim", metadata_dim=32) == 0.5  # split modules keep alpha/rank
    assert module_scale(full, "peft", metadata_dim=4) == 0.25
    assert module_scale(LoKrFactors(w1=torch.ones(2, 2), w2_a=torch.ones(3, 4), w2_b=torch.ones(4, 3)), "file") == 1.0


def test_bad_rules_name_module():
    full = LoKrFactors(w1=torch.ones(2, 2), w2=torch.ones(3, 3), alpha=1.0)
    with pytest.raises(LoKrFormatError, match=r"file 'f.safetensors', module 'm'.*unknown scale rule 'lyco'"):
        module_scale(full, "lyco", file="f.safetensors", module="m")
    with pytest.raises(LoKrFormatError, match=r"module 'm'.*'peft' needs a rank"):
        module_scale(full, "peft", module="m")
    with pytest.raises(LoKrFormatError, match="not finite"):
        module_scale(full, math.nan)
    with pytest.raises(LoKrFormatError, match="bool"):
        module_scale(full, True)
    with pytest.raises(LoKrFormatError, match="positive rank"):
        module_scale(full, "file", peft_r=0, peft_alpha=1.0)


def test_metadata_dim_and_ambiguity():
    assert metadata_dim({"ss_network_dim": "32"}) == 32
    assert metadata_dim({"ss_network_dim": "x"}) is None
    assert metadata_dim({}) is None and metadata_dim(None) is None
    full = LoKrFactors(w1=torch.ones(2, 2), w2=torch.ones(3, 3), alpha=1.0)
    assert is_ambiguous(full, 32)
    assert not is_ambiguous(full, None)
    full.alpha = 32.0
    assert not is_ambiguous(full, 32)
    full.alpha = math.inf
    assert not is_ambiguous(full, 32)
    split = LoKrFactors(w1=torch.ones(2, 2), w2_a=torch.ones(3, 4), w2_b=torch.ones(4, 3), alpha=1.0)
    assert not is_ambiguous(split, 32)
