"""lokr_core.keymap.block_weights: LBW vectors mapped by block ID (17/26 SD values, 12/20 SDXL values), presets
(Inspire-Pack's resources/lbw-preset.txt), A/a/B/b/R/U tokens, the % form, and block_multiplier."""
from __future__ import annotations

import pytest

from lokr_core.keymap.block_weights import (LAYOUTS, PRESETS, SD_17, SD_26, SDXL_12, SDXL_20, block_multiplier,
                                     format_block_weights, parse_block_weights)
from lokr_core.base.errors import LoKrConfigError, LoKrKeyError
from lokr_core.keymap import layout_from_config

SD15_CONFIG = dict(layers_per_block=2, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                   up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def test_layouts_are_the_lbw_block_ids():
    assert SD_17 == ("BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "MID", "OUT03", "OUT04", "OUT05",
                     "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11")
    assert len(SD_26) == 26 and SD_26[1] == "IN00" and SD_26[13] == "MID" and SD_26[-1] == "OUT11"
    assert SDXL_12 == ("BASE", "IN04", "IN05", "IN07", "IN08", "MID", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05")
    assert len(SDXL_20) == 20 and SDXL_20[9] == "IN08" and SDXL_20[10] == "MID" and SDXL_20[-1] == "OUT08"


def test_sd_17_maps_by_id_and_fills_the_rest_with_one():
    vec = ",".join(str(i / 100) for i in range(17))
    out = parse_block_weights(vec, "sd1")
    assert list(out) == list(SD_26)
    for i, bid in enumerate(SD_17):
        assert out[bid] == pytest.approx(i / 100)
    for bid in ("IN00", "IN03", "IN06", "IN09", "IN10", "IN11", "OUT00", "OUT01", "OUT02"):
        assert out[bid] == 1.0


def test_sd_26_and_sdxl_lengths():
    out = parse_block_weights(",".join(str(i) for i in range(26)), "sd2")
    assert [out[b] for b in SD_26] == list(range(26))
    out = parse_block_weights(",".join(str(i) for i in range(20)), "sdxl")
    assert [out[b] for b in SDXL_20] == list(range(20))
    out = parse_block_weights(",".join(str(i) for i in range(12)), "sdxl")
    assert [out[b] for b in SDXL_12] == list(range(12))
    assert out["IN00"] == 1.0 and out["OUT08"] == 1.0 and list(out) == list(SDXL_20)


@pytest.mark.parametrize("family,n", [("sd1", 18), ("sd1", 12), ("sd1", 27), ("sdxl", 17), ("sdxl", 21), ("sdxl", 26)])
def test_other_lengths_rejected_with_expected_ids(family, n):
    with pytest.raises(LoKrConfigError) as e:
        parse_block_weights(",".join(["1"] * n), family)
    msg = str(e.value)
    short, full = LAYOUTS[family]
    assert f"{n} values given" in msg
    assert f"expected {len(short)} values ({', '.join(short)}) or {len(full)} values ({', '.join(full)})" in msg
    assert ("Inspire-Pack's LyCORIS layout" in msg) == (n in (27, 21))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_parses_for_its_family(name):
    fam = "sdxl" if name.startswith("SDXL") else "sd1"
    out = parse_block_weights(name, fam, a=4.0, b=1.0, seed=1)
    assert list(out) == list(LAYOUTS[fam][1])


def test_presets_values():
    inspire = {  # lines of Inspire-Pack resources/lbw-preset.txt
        "SD-INS": "1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0",
        "SD-MIDD": "1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0",
        "SD-OUTALL": "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1",
        "SDXL-ALL": "1,1,1,1,1,1,1,1,1,1,1,1",
        "SDXL-OUTALL": "1,0,0,0,0,0,1,1,1,1,1,1",
    }
    for name, line in inspire.items():
        assert PRESETS[name] == line
    out = parse_block_weights("SD-INS", "sd1")
    assert out["IN02"] == 1 and out["IN04"] == 1 and out["IN05"] == 0 and out["MID"] == 0
    out = parse_block_weights("SD-LyC-MIDALL", "sd1")
    assert out["BASE"] == 1 and out["MID"] == 1 and out["IN00"] == 0 and out["OUT11"] == 0
    out = parse_block_weights("SDXL-LyC-INALL", "sdxl")
    assert all(out[f"IN{i:02d}"] == 1 for i in range(9)) and out["MID"] == 0 and out["OUT00"] == 0
    out = parse_block_weights("SD-AB", "sd1", a=3.0, b=0.25)
    assert out["BASE"] == 3.0 and out["IN01"] == 0.25 and out["OUT11"] == 3.0


def test_name_colon_values_and_preset_lines():
    a = parse_block_weights("MINE:1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1", "sd1")
    assert a == parse_block_weights("SD-OUTALL", "sd1")
    assert parse_block_weights("X:SDXL-MIDALL", "sdxl")["MID"] == 1


def test_tokens_a_b_r_u():
    out = parse_block_weights("A,a,B,b,1,1,1,1,1,1,1,1", "sdxl", a=3.0, b=-1.0)
    assert [out[k] for k in SDXL_12[:4]] == [3.0, 1.5, -1.0, -0.5]
    r1 = parse_block_weights("R,U,r,u,R,U,R,U,R,U,R,U", "sdxl", seed=7)
    r2 = parse_block_weights("R,U,r,u,R,U,R,U,R,U,R,U", "sdxl", seed=7)
    r3 = parse_block_weights("R,U,r,u,R,U,R,U,R,U,R,U", "sdxl", seed=8)
    assert r1 == r2 and r1 != r3
    for i, bid in enumerate(SDXL_12):
        v = r1[bid]
        assert (0.0 <= v <= 3.0) if i % 2 == 0 else (-1.5 <= v <= 1.5)
        assert round(v, 2) == v


def test_inverse_and_spaces_and_trailing_comma():
    out = parse_block_weights(" 0.25, 0,0,0,0,0,0,0,0,0,0,0, ", "sdxl", inverse=True)
    assert out["BASE"] == 0.75 and out["MID"] == 1.0 and out["IN00"] == 0.0


def test_percent_form_by_block_id():
    out = parse_block_weights("%default=0.5,base=1,in=0.2,out3-5=0,mid=0.7,in4=0.9", "sd1")
    assert out["BASE"] == 1 and out["MID"] == 0.7
    assert out["IN00"] == 0.2 and out["IN04"] == 0.9 and out["IN11"] == 0.2
    assert out["OUT02"] == 0.5 and out["OUT03"] == out["OUT04"] == out["OUT05"] == 0 and out["OUT06"] == 0.5
    out = parse_block_weights("%default=0", "sdxl")
    assert set(out.values()) == {0.0} and len(out) == 20
    assert parse_block_weights("%default=0.3", "sd1")["BASE"] == 0.3  # base follows default


@pytest.mark.parametrize("spec,match", [
    ("%in12=0", "IN12, which a sd1 UNet does not have"),
    ("%foo=1", "is not understood"),
    ("%mid2=1", "middle block has no number"),
    ("%in=x", "'x' is not a number"),
])
def test_percent_form_errors(spec, match):
    with pytest.raises(LoKrConfigError, match=match):
        parse_block_weights(spec, "sd1")


@pytest.mark.parametrize("spec,match", [
    ("1,1,1,1,1,1,1,1,1,1,1,Q", "value 12 'Q' is not a number"),
    ("1,1,1,1,1,1,1,1,1,1,1,1e999", "not finite"),
    ("1,1,1,1,1,1,1,1,1,1,1,inf", "'inf' is not a number"),
    ("1,1,1,1,1,,1,1,1,1,1,1", "value 6 '' is not a number"),
    ("", "the vector is empty"),
    ("NOT-A-PRESET", "1 values given"),
])
def test_bad_tokens(spec, match):
    with pytest.raises(LoKrConfigError, match=match):
        parse_block_weights(spec, "sdxl")


def test_bad_family():
    # Kolors (an SDXL-shaped UNet with a ChatGLM text encoder) is a family this package has no tables for
    with pytest.raises(LoKrConfigError, match=r"family 'kolors' is not known; expected one of sd1, sd2, sdxl, flux"):
        parse_block_weights("SD-ALL", "kolors")


def test_block_multiplier_any_key_style():
    vals = parse_block_weights("SD-OUTALL", "sd1")
    assert block_multiplier(vals, "model.diffusion_model.output_blocks.3.1.proj_in.weight") == 1
    assert block_multiplier(vals, "diffusion_model.input_blocks.4.1.proj_in.weight") == 0
    assert block_multiplier(vals, "lora_unet_input_blocks_1_1_proj_in") == 0
    assert block_multiplier(vals, "lora_te_text_model_encoder_layers_0_mlp_fc1") == 1  # BASE
    lay = layout_from_config(SD15_CONFIG)
    assert block_multiplier(vals, "up_blocks.1.attentions.0.proj_in", lay) == 1  # OUT03
    assert block_multiplier(vals, "down_blocks.1.attentions.0.proj_in", lay) == 0  # IN04


def test_block_multiplier_wrong_family():
    vals = parse_block_weights("SDXL-ALL", "sdxl")
    with pytest.raises(LoKrKeyError, match="block IN11, which the vector does not have"):
        block_multiplier(vals, "model.diffusion_model.input_blocks.11.0.in_layers.2.weight")


def test_format_block_weights():
    vals = parse_block_weights("SDXL-MIDALL", "sdxl")
    text = format_block_weights(vals)
    assert text.startswith("BASE=1, IN00=1, IN01=1, IN02=1, IN03=1, IN04=0") and "MID=1" in text
