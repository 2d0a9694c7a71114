"""lokr_core.tuner.config.LoKrConfig against the real peft LoKrConfig (defaults, validation, files, patterns)."""
from __future__ import annotations

import dataclasses
import json
import os
import warnings

import pytest
from torch import nn

from lokr_core.tuner.config import CONFIG_NAME, LoKrConfig, pattern_key
from lokr_core.base.errors import LoKrConfigError, LoKrError, LoKrFormatError

peft = pytest.importorskip("peft")
from peft.tuners.lokr.layer import LoKrLayer as PeftLoKrLayer  # noqa: E402

PEFT_BASE = {"task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision",
             "inference_mode"}
OUR_FIELDS = [f.name for f in dataclasses.fields(LoKrConfig)]


def _norm(v):
    """PEFT keeps target/exclude lists as sets; compare as sorted lists."""
    return sorted(v) if isinstance(v, (set, frozenset)) else v


def test_fields_and_defaults_equal_peft():
    theirs = peft.LoKrConfig()
    peft_fields = {f.name for f in dataclasses.fields(theirs)} - PEFT_BASE
    assert set(OUR_FIELDS) == peft_fields and len(OUR_FIELDS) == 16
    ours = LoKrConfig()
    for name in OUR_FIELDS:
        assert getattr(ours, name) == getattr(theirs, name), name


def test_rejected_like_peft_layers_pattern_needs_layers_to_transform():
    with pytest.raises(ValueError, match="layers_to_transform"):
        peft.LoKrConfig(target_modules=["q"], layers_pattern="layers")
    with pytest.raises(LoKrConfigError, match="LoKrConfig.layers_pattern"):
        LoKrConfig(target_modules=["q"], layers_pattern="layers")


def test_nonpositive_r_rejected_here_at_config_time_and_by_peft_at_injection():
    for r in (0, -4):
        with pytest.raises(LoKrConfigError, match="LoKrConfig.r: expected a positive integer"):
            LoKrConfig(r=r)
        with pytest.raises(ValueError, match="positive"):
            peft.inject_adapter_in_model(peft.LoKrConfig(r=r, target_modules=["0"]), nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(LoKrConfigError, match=r"LoKrConfig.rank_pattern\['a'\]"):
        LoKrConfig(rank_pattern={"a": 0})
    with pytest.raises(ValueError, match="positive"):
        peft.inject_adapter_in_model(peft.LoKrConfig(target_modules=["0"], rank_pattern={"0": 0}),
                                     nn.Sequential(nn.Linear(4, 4)))


@pytest.mark.parametrize("kwargs, field", [
    (dict(r=2.5), "r"), (dict(r=True), "r"), (dict(alpha="8"), "alpha"), (dict(alpha=float("nan")), "alpha"),
    (dict(rank_dropout=1.5), "rank_dropout"), (dict(module_dropout=-0.1), "module_dropout"),
    (dict(use_effective_conv2d="yes"), "use_effective_conv2d"), (dict(decompose_both=1), "decompose_both"),
    (dict(rank_dropout_scale=None), "rank_dropout_scale"),
    (dict(decompose_factor=0), "decompose_factor"), (dict(decompose_factor=-2), "decompose_factor"),
    (dict(target_modules=5), "target_modules"), (dict(target_modules=["q", 3]), "target_modules"),
    (dict(target_modules="to_(q"), "target_modules"), (dict(exclude_modules="[bad"), "exclude_modules"),
    (dict(init_weights="gaussian"), "init_weights"), (dict(init_weights=1), "init_weights"),
    (dict(layers_to_transform="0", target_modules=["q"]), "layers_to_transform"),
    (dict(layers_to_transform=[0, -1], target_modules=["q"]), "layers_to_transform"),
    (dict(layers_to_transform=0, layers_pattern=5), "layers_pattern"),
    (dict(rank_pattern=["a"]), "rank_pattern"), (dict(rank_pattern={"a": 2.0}), "rank_pattern"),
    (dict(rank_pattern={"(a": 2}), "rank_pattern"), (dict(alpha_pattern={"a": "x"}), "alpha_pattern"),
    # found by the fuzz suite (docs/fuzzing.md): re raises OverflowError, not re.error, for these
    (dict(rank_pattern={"a{99999999999}": 2}), "rank_pattern"), (dict(target_modules="x{4294967296}"), "target_modules"),
    (dict(modules_to_save="conv_out"), "modules_to_save"), (dict(modules_to_save=[""]), "modules_to_save"),
])
def test_bad_values_raise_naming_the_field(kwargs, field):
    with pytest.raises(LoKrConfigError) as info:
        LoKrConfig(**kwargs)
    assert f"LoKrConfig.{field}" in str(info.value)


def test_sets_and_tuples_are_normalised_to_lists():
    c = LoKrConfig(target_modules={"to_v", "to_q"}, exclude_modules=("a",), layers_to_transform=(1, 2),
                   modules_to_save={"conv_out"})
    assert c.target_modules == ["to_q", "to_v"] and c.exclude_modules == ["a"]
    assert c.layers_to_transform == [1, 2] and c.modules_to_save == ["conv_out"]


FULL = dict(r=4, alpha=2.5, rank_dropout=0.1, module_dropout=0.2, use_effective_conv2d=True, decompose_both=True,
            decompose_factor=8, rank_dropout_scale=True, target_modules=["to_q", "to_v"],
            exclude_modules=["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"],
            init_weights="lycoris", layers_to_transform=[0, 1], layers_pattern=["attentions"],
            rank_pattern={"to_q": 8, r"down_blocks\.1.*": 2}, alpha_pattern={"to_v": 16}, modules_to_save=["conv_out"])


def _check_same(ours: LoKrConfig, theirs) -> None:
    for name in OUR_FIELDS:
        a, b = _norm(getattr(ours, name)), _norm(getattr(theirs, name))
        if name in ("target_modules", "exclude_modules") and isinstance(a, list) and isinstance(b, list):
            a, b = sorted(a), sorted(b)  # PEFT writes its sets in hash order: the order carries no meaning
        assert a == b, name


@pytest.mark.parametrize("kwargs", [{}, FULL, dict(target_modules="all-linear", init_weights=False),
                                    dict(target_modules=r".*attn\d\.to_q", exclude_modules=r".*up_blocks.*",
                                         layers_to_transform=3)])
def test_adapter_config_json_round_trip_both_directions(tmp_path, kwargs):
    # PEFT writes -> we read
    theirs = peft.LoKrConfig(base_model_name_or_path="runwayml/stable-diffusion-v1-5", **kwargs)
    theirs.save_pretrained(tmp_path / "peft")
    ours = LoKrConfig.from_pretrained(tmp_path / "peft")
    _check_same(ours, theirs)
    assert LoKrConfig.from_pretrained(tmp_path / "peft" / CONFIG_NAME) == ours  # the file itself works too
    # we write -> PEFT reads (through its generic loader, which dispatches on peft_type)
    path = ours.save_pretrained(tmp_path / "ours" / "nested")
    assert path == tmp_path / "ours" / "nested" / CONFIG_NAME
    assert sorted(os.listdir(path.parent)) == [CONFIG_NAME]  # no temp file left behind
    back = peft.PeftConfig.from_pretrained(str(path.parent))
    assert isinstance(back, peft.LoKrConfig)
    _check_same(ours, back)
    # same JSON keys as PEFT writes, except the version PEFT fills in itself
    written = json.loads(path.read_text())
    peft_written = json.loads((tmp_path / "peft" / CONFIG_NAME).read_text())
    assert set(written) == set(peft_written) - {"peft_version"}
    assert written["peft_type"] == "LOKR"


def test_to_and_from_peft_dict():
    ours = LoKrConfig(**FULL)
    d = ours.to_peft_dict()
    assert d["peft_type"] == "LOKR" and d["target_modules"] == ["to_q", "to_v"]
    assert peft.LoKrConfig(**{k: v for k, v in d.items() if k != "peft_type"}).r == 4
    d.update(base_model_name_or_path="x", peft_version="0.99.0", task_type=None, revision="main")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PEFT's own keys pass silently
        assert LoKrConfig.from_peft_dict(d) == ours
    d["some_future_key"] = 1
    with pytest.warns(UserWarning, match="some_future_key"):
        assert LoKrConfig.from_peft_dict(d) == ours
    del d["some_future_key"]
    d["rank_pattern"] = None  # older PEFT files may hold null patterns
    assert LoKrConfig.from_peft_dict(d).rank_pattern == {}


def test_from_peft_dict_rejects_other_adapter_types_and_bad_values():
    with pytest.raises(LoKrConfigError, match="peft_type is 'LORA'; expected 'LOKR'"):
        LoKrConfig.from_peft_dict(peft.LoraConfig(target_modules=["q"]).to_dict())
    with pytest.raises(LoKrConfigError, match="expected a PEFT config dict"):
        LoKrConfig.from_peft_dict(["r", 8])
    with pytest.raises(LoKrConfigError, match=r"file '.*adapter_config.json'.*LoKrConfig.rank_dropout"):
        LoKrConfig.from_peft_dict({"peft_type": "LOKR", "rank_dropout": 3}, file="adapter_config.json")


def test_from_pretrained_errors_name_the_file_and_create_nothing(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(LoKrFormatError, match="nope.*no such file"):
        LoKrConfig.from_pretrained(missing)
    assert not missing.exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / CONFIG_NAME).write_text("{not json")
    with pytest.raises(LoKrFormatError, match="not valid JSON"):
        LoKrConfig.from_pretrained(bad)
    (bad / CONFIG_NAME).write_text(json.dumps({"peft_type": "LOKR", "init_weights": "maybe"}))
    with pytest.raises(LoKrConfigError, match="adapter_config.json.*LoKrConfig.init_weights"):
        LoKrConfig.from_pretrained(bad)
    assert sorted(os.listdir(bad)) == [CONFIG_NAME]


def test_save_pretrained_onto_a_file_fails_and_leaves_it_alone(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    with pytest.raises(LoKrError, match="expects a directory"):
        LoKrConfig().save_pretrained(target)
    assert target.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["a_file"]


def test_save_pretrained_replaces_an_existing_config(tmp_path):
    LoKrConfig(r=4).save_pretrained(tmp_path)
    LoKrConfig(r=16).save_pretrained(tmp_path)
    assert LoKrConfig.from_pretrained(tmp_path).r == 16 and os.listdir(tmp_path) == [CONFIG_NAME]


class Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleDict({"q_proj": nn.Linear(8, 8), "k_proj": nn.Linear(8, 8),
                                                   "fc1": nn.Linear(8, 16), "fc11": nn.Linear(8, 16)})
                                    for _ in range(3))
        self.q_proj = nn.Linear(8, 8)


@pytest.mark.parametrize("rank_pattern, alpha_pattern", [
    ({"q_proj": 2, r"layers\.1\.k_proj": 6}, {"fc1": 3.5, "layers.2.q_proj": 7}),
    ({r"layers\.[02]\..*": 5, "fc1": 4}, {"^q_proj": 9, r".*k_proj": 1}),  # first matching key wins
    ({"proj": 3, "1.fc11": 12}, {"fc": 2}),  # 'proj' is not a dotted tail of 'q_proj': no match
])
def test_r_alpha_for_equals_peft(rank_pattern, alpha_pattern):
    config = dict(target_modules=["q_proj", "k_proj", "fc1", "fc11"], r=8, alpha=10,
                  rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)
    model = Blocks()
    peft.inject_adapter_in_model(peft.LoKrConfig(**config), model)
    seen = 0
    ours = LoKrConfig(**config)
    for name, module in model.named_modules():
        if isinstance(module, PeftLoKrLayer):
            assert ours.r_alpha_for(name) == (module.r["default"], module.alpha["default"]), name
            seen += 1
    assert seen == 13


def test_pattern_key_equals_peft_get_pattern_key():
    from peft.utils.other import get_pattern_key

    keys = ["to_q", "attn1.to_k", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v", "1.fc1", ".to_out.0",
            "blocks.1", r"up_blocks\.\d.*", "ff.net.2", "a.b.", "proj", "conv.", "^mid.*"]
    names = ["to_q", "x.to_q", "xto_q", "a.attn1.to_k", "a.attn1Xto_k", "attn1.to_k", "b.attn11.to_k",
             "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v", "z.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v",
             "zdown_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v", "layers.1.fc1", "layers.11.fc1", "x.to_out.0",
             "x..to_out.0", "up_blocks.1.resnets.0.conv1", "down_blocks.1", "mid_block.proj", "ff.net.2", "ffxnetx2",
             "a.b.c", "q.a.b.", "conv1", "mid.conv2", ""]
    for i in range(len(keys)):
        order = keys[i:] + keys[:i]
        for name in names:
            expected = get_pattern_key(order, name)
            assert pattern_key(order, name) == (None if expected == name and name not in order else expected), name
            cfg = LoKrConfig(rank_pattern={k: j + 1 for j, k in enumerate(order)})
            assert cfg.r_alpha_for(name)[0] == cfg.rank_pattern.get(expected, 8), (order, name)


def test_pattern_key_rule():
    assert pattern_key(["to_q", "to_k"], "a.b.to_k") == "to_k"
    assert pattern_key(["to_q"], "a.b.xto_q") is None
    assert pattern_key({}, "a") is None
    assert LoKrConfig(r=3, alpha=5).r_alpha_for("anything") == (3, 5)
