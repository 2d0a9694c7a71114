"""lokr_core.tuner.targeting against the modules the real peft (0.21.x) wraps, on tiny models and on
full-size SD1.5 / SDXL UNets and CLIP-L / OpenCLIP-G text encoders built on the meta device."""
from __future__ import annotations

import copy
import functools

import pytest
from torch import nn

from lokr_core.tuner.config import LoKrConfig
from lokr_core.base.errors import LoKrConfigError, LoKrKeyError
from lokr_core.tuner.targeting import ADAPTABLE_TYPES, Target, find_targets, modules_to_save_names
from tests.support.models import CLIP_L, OPENCLIP_G, SD15_UNET, SDXL_UNET, clip_text, tiny_clip, tiny_unet, unet

peft = pytest.importorskip("peft")
from peft.tuners.lokr.layer import LoKrLayer as PeftLoKrLayer  # noqa: E402
from peft.utils.other import ModulesToSaveWrapper  # noqa: E402

BUILDERS = {
    "tiny_unet": tiny_unet,
    "tiny_clip": tiny_clip,
    "sd15": lambda: unet(SD15_UNET, "meta"),
    "sdxl": lambda: unet(SDXL_UNET, "meta"),
    "clip_l": lambda: clip_text(CLIP_L, "meta"),
    "openclip_g": lambda: clip_text(OPENCLIP_G, "meta", with_projection=True),
}


@functools.lru_cache(maxsize=None)
def pristine(name: str) -> nn.Module:
    """One untouched model per builder for the whole file (find_targets never changes a model;
    the error tests check that); peft gets deep copies."""
    return BUILDERS[name]()


def fresh(name: str) -> nn.Module:
    return copy.deepcopy(pristine(name))


def peft_wrapped(model: nn.Module, **config) -> dict[str, tuple[int, float]]:
    """{name: (r, alpha)} of every module peft wraps for ``config`` (injected in place)."""
    peft.inject_adapter_in_model(peft.LoKrConfig(**config), model, low_cpu_mem_usage=True)
    return {n: (m.r["default"], m.alpha["default"]) for n, m in model.named_modules() if isinstance(m, PeftLoKrLayer)}


def ours(model: nn.Module, **config) -> dict[str, tuple[int, float]]:
    targets = find_targets(model, LoKrConfig(**config))
    assert all(isinstance(t, Target) and isinstance(t.module, ADAPTABLE_TYPES) for t in targets)
    names = [t.name for t in targets]
    assert len(names) == len(set(names))
    modules = dict(model.named_modules())
    assert all(modules[t.name] is t.module for t in targets)
    return {t.name: (t.r, t.alpha) for t in targets}


Q_G = [f"text_model.encoder.layers.{i}.self_attn.q_proj" for i in range(32)]  # full names

CASES = [
    ("tiny_unet", dict(target_modules=["to_q", "to_v"])),
    ("tiny_unet", dict(target_modules=["attn1.to_q", "ff.net.2", "down_blocks.0.attentions.0.proj_in"])),
    ("tiny_unet", dict(target_modules=r".*attn\d\.to_(q|k)|conv_in")),
    ("tiny_unet", dict(target_modules="all-linear")),
    ("tiny_unet", dict(target_modules="ALL-LINEAR", exclude_modules=r".*up_blocks.*")),
    ("tiny_unet", dict(target_modules=["to_k", "conv1", "conv2"],
                       exclude_modules=["up_blocks.1.resnets.0.conv1", "attn2.to_k"])),
    ("tiny_unet", dict(target_modules=["to_q", "conv1"], layers_to_transform=0)),
    ("tiny_unet", dict(target_modules=["to_q", "conv1", "conv2"], layers_to_transform=[1],
                       layers_pattern=["resnets", "attentions"])),
    ("tiny_unet", dict(target_modules=["to_q", "conv_out", "conv_in"], modules_to_save=["conv_out"])),
    ("tiny_unet", dict(target_modules="all-linear", layers_to_transform=[0])),  # < 20 names: exact, no filter
    ("tiny_unet", dict(target_modules=r".*to_q", layers_to_transform=[1])),  # regex: layers ignored
    ("tiny_unet", dict(target_modules=["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "to_k"],
                       layers_to_transform=[5])),  # exact name kept, suffix match filtered out
    ("tiny_clip", dict(target_modules=["q_proj", "fc2"], layers_to_transform=[1], layers_pattern="layers",
                       rank_pattern={"fc2": 2}, alpha_pattern={r"layers\.1\.self_attn\.q_proj": 3})),
    ("sd15", dict(target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "conv1", "conv2",
                                  "conv_in"], rank_pattern={"conv\\d": 4}, alpha_pattern={"to_out.0": 2})),
    ("sdxl", dict(target_modules="all-linear")),
    ("sdxl", dict(target_modules=["to_q", "to_k", "ff.net.0.proj"], layers_to_transform=[0, 9],
                  layers_pattern="transformer_blocks")),
    ("clip_l", dict(target_modules="all-linear", layers_to_transform=[0, 11], layers_pattern="layers")),
    ("openclip_g", dict(target_modules="all-linear")),
    ("openclip_g", dict(target_modules=Q_G, layers_to_transform=[1, 2])),  # >= 20 names: condensed, filtered
    ("openclip_g", dict(target_modules=Q_G[:19], layers_to_transform=[1, 2])),  # < 20: exact, not filtered
]


@pytest.mark.parametrize("model, config", CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES)])
def test_find_targets_equals_peft(model, config):
    expected = peft_wrapped(fresh(model), **config)
    got = ours(pristine(model), **config)
    assert got == expected
    assert got  # every case adapts something


def test_quirks_visible_in_counts():
    """The PEFT rules our matching reproduces, spelled out (the equality above checks them vs peft)."""
    g = pristine("openclip_g")
    assert len(find_targets(g, LoKrConfig(target_modules=Q_G, layers_to_transform=[1, 2]))) == 2
    assert len(find_targets(g, LoKrConfig(target_modules=Q_G[:19], layers_to_transform=[1, 2]))) == 19
    with_proj = find_targets(g, LoKrConfig(target_modules="all-linear"))
    assert "text_projection" in {t.name for t in with_proj} and len(with_proj) == 32 * 6 + 1


def test_already_wrapped_model_targets_the_wrappers_not_their_insides():
    config = dict(target_modules=["to_q", "conv1"], r=4)
    model = tiny_unet()
    expected = peft_wrapped(model, **config)
    targets = find_targets(model, LoKrConfig(**config))
    assert {t.name for t in targets} == set(expected)
    assert all(isinstance(t.module, PeftLoKrLayer) for t in targets)


def _snapshot(model: nn.Module):
    return [(n, id(m)) for n, m in model.named_modules()], list(model.state_dict())


@pytest.mark.parametrize("config, fields", [
    (dict(target_modules=["to_qq", "attn3"]), ["target_modules=['to_qq', 'attn3']"]),
    (dict(target_modules=r"down\.to_q"), ["target_modules='down\\\\.to_q'"]),
    (dict(target_modules=["to_q"], layers_to_transform=[7], layers_pattern="attentions"),
     ["target_modules=['to_q']", "layers_to_transform=[7]", "layers_pattern='attentions'"]),
    (dict(target_modules=["to_q"], exclude_modules=["to_q"]), ["exclude_modules=['to_q']"]),
    (dict(target_modules=["conv_out"], modules_to_save=["conv_out"]), ["modules_to_save=['conv_out']"]),
    (dict(target_modules=[]), ["target_modules is empty"]),
])
def test_nothing_matched_raises_key_error_naming_fields_and_examples(config, fields):
    model = tiny_unet()
    before = _snapshot(model)
    with pytest.raises(LoKrKeyError) as info:
        find_targets(model, LoKrConfig(**config))
    message = str(info.value)
    for text in fields:
        assert text in message
    assert "'conv_in'" in message and "leaf names: " in message and "to_q" in message
    assert _snapshot(model) == before
    with pytest.raises(ValueError):  # peft refuses the same config
        peft.inject_adapter_in_model(peft.LoKrConfig(**config), tiny_unet())


@pytest.mark.parametrize("config, module, type_name", [
    (dict(target_modules=["attn1"]), "down_blocks.0.attentions.0.transformer_blocks.0.attn1", "Attention"),
    (dict(target_modules=r".*norm\d"), "down_blocks.0.attentions.0.transformer_blocks.0.norm1", "LayerNorm"),
])
def test_matched_non_adaptable_module_raises_naming_module_and_type(config, module, type_name):
    model = tiny_unet()
    before = _snapshot(model)
    with pytest.raises(LoKrConfigError) as info:
        find_targets(model, LoKrConfig(**config))
    assert f"module {module!r}" in str(info.value) and type_name in str(info.value)
    assert _snapshot(model) == before
    with pytest.raises(TypeError, match=type_name):
        peft.inject_adapter_in_model(peft.LoKrConfig(**config), tiny_unet())


def test_all_linear_includes_transformers_conv1d_which_lokr_cannot_adapt():
    from transformers.pytorch_utils import Conv1D

    def build():
        return nn.Sequential(nn.Linear(4, 8), Conv1D(8, 4))
    with pytest.raises(LoKrConfigError, match="module '1'.*Conv1D"):
        find_targets(build(), LoKrConfig(target_modules="all-linear"))
    with pytest.raises(TypeError):
        peft.inject_adapter_in_model(peft.LoKrConfig(target_modules="all-linear"), build())


def test_missing_target_modules_raises_like_peft():
    with pytest.raises(LoKrConfigError, match="LoKrConfig.target_modules is None"):
        find_targets(tiny_clip(), LoKrConfig())
    with pytest.raises(ValueError, match="target_modules"):  # CLIP has no default target list in peft
        peft.inject_adapter_in_model(peft.LoKrConfig(), tiny_clip())


@pytest.mark.parametrize("modules_to_save", [["conv_out", "time_embedding"], ["norm_out", "linear_1"], None])
def test_modules_to_save_names_equals_peft(modules_to_save):
    config = dict(target_modules=["to_q"], modules_to_save=modules_to_save)
    wrapped = peft.get_peft_model(tiny_unet(), peft.LoKrConfig(**config)).base_model.model
    expected = [n for n, m in wrapped.named_modules() if isinstance(m, ModulesToSaveWrapper)]
    assert modules_to_save_names(tiny_unet(), LoKrConfig(**config)) == expected
    assert bool(expected) == bool(modules_to_save)
