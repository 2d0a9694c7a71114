"""Tests for lokr_core.ops.report: summarize / format_report / helpers.

Scales are checked against lycoris-lora's own ``LokrModule.scale`` for modules it built.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from lokr_core.formats.weights import LoKrWeights
from lokr_core.tensor.factors import LoKrFactors
from lokr_core.ops import report as R


def lycoris_factors(layer: nn.Module, **kw):
    """(LokrModule, LoKrFactors) for ``layer`` built by lycoris-lora."""
    from lycoris.modules.lokr import LokrModule

    mod = LokrModule("m", layer, **kw)
    sd = mod.custom_state_dict()
    f = LoKrFactors(**{k[5:] if k.startswith("lokr_") else k: v.detach().clone().normal_()
                       for k, v in sd.items() if k != "alpha"}, alpha=float(sd["alpha"]))
    return mod, f


NAMES = {
    "lora_unet_down_blocks_0_attentions_0_proj_in": (lambda: nn.Linear(320, 320), dict(lora_dim=4, alpha=2)),
    "lora_unet_mid_block_resnets_0_conv1": (lambda: nn.Conv2d(128, 128, 3), dict(lora_dim=2, alpha=1, use_tucker=True)),
    "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q": (lambda: nn.Linear(32, 32), dict(lora_dim=16, alpha=4)),
    "lora_unet_conv_in": (lambda: nn.Conv2d(4, 32, 3), dict(lora_dim=8, alpha=8)),
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (lambda: nn.Linear(256, 256), dict(lora_dim=2, alpha=1, decompose_both=True, factor=8)),
}


@pytest.fixture()
def weights_and_mods():
    torch.manual_seed(0)
    mods, factors = {}, {}
    for name, (make, kw) in NAMES.items():
        mods[name], factors[name] = lycoris_factors(make(), **kw)
    meta = {"ss_network_dim": "4", "ss_network_alpha": "2", "ss_network_module": "lycoris.kohya",
            "ss_network_args": json.dumps({"algo": "lokr", "conv_dim": "4"}),
            "ss_tag_frequency": json.dumps({"10_cat": {"cat": 10, "sofa": 3}, "5_dog": {"cat": 2, "dog": 7, " ": "x"}}),
            "modelspec.trigger_phrase": "mycat, sofa", "ss_training_comment": "x" * 400}
    w = LoKrWeights.from_factors(factors, metadata=meta, source="/data/loras/cat.safetensors",
                                 other_modules={"lora_unet_conv_out": "lora"})
    return w, mods


def test_summarize_counts_and_scales_match_lycoris(weights_and_mods):
    w, mods = weights_and_mods
    s = R.summarize(w)
    assert s["file"] == "cat.safetensors" and s["format"] == "lycoris" and s["module_count"] == 5
    assert s["blocks"] == {"te": 1, "base": 1, "down": 1, "mid": 1, "up": 1}
    assert s["layouts"] == {"full": 2, "split-both": 1, "split-w2": 1, "tucker": 1}
    for name, mod in mods.items():  # lycoris-lora's own scale for the module it built
        assert math.isclose(s["scales"][name], float(mod.scale), rel_tol=1e-6), name
    expected_ranks = {}
    for name in NAMES:
        f = w.modules[name]
        key = "full" if f.full_full else str(f.rank)
        expected_ranks[key] = expected_ranks.get(key, 0) + 1
    assert s["ranks"] == expected_ranks
    assert s["params"] == sum(w.modules[n].num_params() for n in NAMES)
    assert s["dora"] == 0 and s["other_modules"] == {"lora": 1} and s["other_module_names"] == ["lora_unet_conv_out"]
    assert any("non-LoKr" in x for x in s["warnings"])
    json.dumps(s, allow_nan=False)


def test_summarize_metadata(weights_and_mods):
    w, _ = weights_and_mods
    meta = R.summarize(w, top_n=2)["metadata"]
    assert meta["training"]["ss_network_args"] == {"algo": "lokr", "conv_dim": "4"}
    assert meta["training"]["ss_training_comment"].endswith("...") and len(meta["training"]["ss_training_comment"]) == 303
    assert meta["trigger_words"] == ["mycat", "sofa"]
    assert meta["top_tags"] == [["cat", 12], ["dog", 7]]
    assert "ss_tag_frequency" in meta["keys"]


def test_full_full_ambiguity_warning_and_inf_alpha_json():
    torch.manual_seed(0)
    full = LoKrFactors(w1=torch.randn(4, 4), w2=torch.randn(8, 8), alpha=1.0)
    inf = LoKrFactors(w1=torch.randn(4, 4), w2=torch.randn(8, 8), alpha=float("inf"))
    w = LoKrWeights.from_factors({"lora_unet_a": full, "lora_unet_b": inf}, metadata={"ss_network_dim": "32"})
    s = R.summarize(w)
    assert s["scales"] == {"lora_unet_a": 1.0, "lora_unet_b": 1.0}  # the LyCORIS rule ignores alpha on full/full
    assert any("network dim 32" in x and "metadata-dim" in x for x in s["warnings"])
    assert s["alphas"] == {"1": 1, "inf": 1}
    json.dumps(s, allow_nan=False)
    s2 = R.summarize(w, scale_rule="metadata-dim")
    assert s2["scales"]["lora_unet_a"] == pytest.approx(1 / 32)


def test_summarize_bad_scale_rule_is_reported_not_raised():
    w = LoKrWeights.from_factors({"lora_unet_a": LoKrFactors(w1=torch.ones(2, 2), w2_a=torch.ones(4, 1),
                                                             w2_b=torch.ones(1, 4), alpha=1.0)})
    s = R.summarize(w, scale_rule="bogus")
    assert s["scales"]["lora_unet_a"] is None
    assert any("'bogus'" in x and "lora_unet_a" in x for x in s["warnings"])


def test_format_report(weights_and_mods):
    w, _ = weights_and_mods
    text = R.format_report(R.summarize(w))
    assert "File:      cat.safetensors" in text
    assert "Modules:   5 LoKr" in text
    assert "Blocks:    te 1, base 1, down 1, mid 1, up 1" in text
    assert "Trigger words: mycat, sofa" in text
    assert "Top tags:  cat (12), dog (7)" in text
    assert "WARNING:" in text and "lora 1 (not LoKr; not applied)" in text
    fake = {"file": None, "module_count": 1, "params": 3, "warnings": [],
            "resolve": {"matched": 1, "total": 3, "unmatched": {"a": ["x", "y"], "b": []},
                        "shape_mismatch": {"c": [[4, 4], [8, 8]]}, "target_family": "sd1",
                        "family_mismatch": "this file is for SDXL, the model is SD1.x", "skipped": 2}}
    text = R.format_report(fake, max_unmatched=1)
    assert "1/3 modules matched (target family: sd1)" in text
    assert "unmatched: a  (closest: x, y)" in text and "1 more unmatched" in text
    assert "SHAPE MISMATCH: c" in text and "WRONG MODEL: this file is for SDXL" in text
    assert "2 modules are for a component the target does not hold" in text


def test_summarize_with_target_and_family_report():
    """Against a full-size SD1.5 key list (meta device): a proj_in LoKr matches, a wrong-size one does not."""
    torch.manual_seed(0)
    ok = LoKrFactors(w1=torch.randn(16, 16), w2_a=torch.randn(20, 2), w2_b=torch.randn(2, 20), alpha=1.0)
    bad = LoKrFactors(w1=torch.randn(8, 8), w2=torch.randn(8, 8), alpha=1.0)
    w = LoKrWeights.from_factors({"lora_unet_down_blocks_0_attentions_0_proj_in": ok,
                                  "lora_unet_down_blocks_0_attentions_0_proj_out": bad,
                                  "lora_unet_no_such_layer": ok})
    rep = R.family_report(w, "sd1")
    assert rep["matched"] == 1 and rep["total"] == 3
    assert list(rep["shape_mismatch"]) == ["lora_unet_down_blocks_0_attentions_0_proj_out"]
    assert rep["shape_mismatch"]["lora_unet_down_blocks_0_attentions_0_proj_out"][0] == [320, 320, 1, 1]
    assert "lora_unet_no_such_layer" in rep["unmatched"]
    from lokr_core.keymap.families import family_target

    s = R.summarize(w, family_target("sd1"))
    assert s["resolve"] == rep
    json.dumps(s, allow_nan=False)
    assert "Against target: 1/3 modules matched" in R.format_report(s)


@pytest.mark.parametrize("name,block", [
    ("lora_unet_down_blocks_0_attentions_0_proj_in", "down"),
    ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", "down"),
    ("lycoris_mid_block_attentions_0_proj_out", "mid"),
    ("lora_unet_middle_block_1_proj_in", "mid"),
    ("base_model.model.up_blocks.1.attentions.0.proj_in", "up"),
    ("lora_unet_output_blocks_3_1_proj_out", "up"),
    ("lora_unet_time_embedding_linear_1", "base"),
    ("unet.conv_in", "base"),
    ("lora_te_text_model_encoder_layers_0_mlp_fc1", "te"),
    ("lora_te_encoder_layers_0_mlp_fc1", "te"),
    ("text_encoder.text_model.encoder.layers.0.mlp.fc1", "te"),
    ("lora_te1_text_model_encoder_layers_0_mlp_fc1", "te1"),
    ("lora_te2_text_model_encoder_layers_0_mlp_fc1", "te2"),
    ("text_encoder_2.text_model.encoder.layers.0.mlp.fc1", "te2"),
    ("something_else", "other"),
])
def test_block_of(name, block):
    assert R.block_of(name) == block


def test_training_info_top_tags_jsonable_edge_cases():
    from lokr_core.base.jsonable import jsonable

    assert R.training_info({"ss_network_args": "not json", "other": "x"}) == {"ss_network_args": "not json"}
    assert R.top_tags({"ss_tag_frequency": "{broken"}) == []
    assert R.top_tags({}) == []
    assert jsonable({"a": (1, float("nan")), 2: torch.tensor([1.0])}) == {"a": [1, "nan"], "2": [1.0]}


def test_family_guess_uses_factor_shapes_without_reading_tensors():
    """Names alone cannot tell SD1 from SD2; the cross-attention in-dim (768 vs 1024) can."""
    import torch

    from lokr_core.formats.weights import LoKrWeights
    from lokr_core.tensor.factors import LoKrFactors
    from lokr_core.ops.report import summarize

    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    for in_dim, family in ((768, "sd1"), (1024, "sd2")):
        f = LoKrFactors(w1=torch.randn(16, 32), w2_a=torch.randn(20, 4), w2_b=torch.randn(4, in_dim // 32), alpha=4.0)
        assert summarize(LoKrWeights.from_factors({name: f}))["family"] == family
    f = LoKrFactors(w1=torch.randn(16, 16), w2_a=torch.randn(20, 4), w2_b=torch.randn(4, 20), alpha=4.0)
    assert summarize(LoKrWeights.from_factors({"lora_unet_down_blocks_0_resnets_0_conv1": f}))["family"] in (None, "sd1/sd2")
