"""Text encoders of DiT models (T5, UMT5, Qwen2.5-VL, Qwen3, Llama, Gemma 2; CLIP-L / -G next to them).

References: ComfyUI 0.28.0's own text-encoder models of each family and its LoRA key map for them
(``comfy.lora.model_lora_keys_clip``), stored in tests/support/comfy_te_keys.json by
tools/comfy_dit_keylists.py; tiny random transformers encoders (T5EncoderModel, UMT5EncoderModel,
Qwen2Model, Qwen3Model, LlamaModel, Gemma2Model); lycoris-lora for the expected ΔW.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

import lokr_core as lk
from lokr_core.keymap.family import family_signals, pick_family
from lokr_core.keymap.resolve import resolve

TE = json.loads((Path(__file__).parents[1] / "support" / "comfy_te_keys.json").read_text())
OTHER_MODELS = ("lora_prior_te_",)
"""Names ComfyUI's map gives for other model kinds (Stable Cascade), not these families."""


def _names(family: str) -> dict[str, str]:
    """ComfyUI's LoRA names of ``family``'s text encoders -> weight key (CLIP-object layout)."""
    return {n: k for n, k in TE[family]["lora_keys"].items() if not n.startswith(OTHER_MODELS)}


@pytest.mark.parametrize("saved", [True, False], ids=["text_encoders.", "clip object"])
@pytest.mark.parametrize("family", sorted(TE))
def test_every_comfy_text_encoder_name_resolves_to_comfy_weight(family: str, saved: bool) -> None:
    prefix = "text_encoders." if saved else ""
    target = {prefix + k: tuple(s) for k, s in TE[family]["weights"].items()}
    names = _names(family)
    report = resolve(list(names), target)
    assert not report.unmatched and not report.ambiguous and not report.skipped, report.format()
    assert report.matched == {n: prefix + k for n, k in names.items()}


def test_text_encoder_names_skipped_on_a_diffusion_model_only_target() -> None:
    names = list(_names("flux"))[:5]
    report = resolve(names, {"diffusion_model.double_blocks.0.img_attn.qkv.weight": (12, 4)})
    assert sorted(report.skipped) == sorted(names) and not report.unmatched


# ----------------------------------------------------------------------------------------- families
ENCODERS = {f: sorted({k.split(".")[0] for k in TE[f]["weights"]}) for f in TE}


@pytest.mark.parametrize("family", sorted(TE))
def test_family_of_a_text_encoder_only_file(family: str) -> None:
    """The families whose ComfyUI text-encoder model holds every non-CLIP encoder a file names."""
    names = [n for n in _names(family) if n.startswith("text_encoders.") and n.split(".")[1] in ENCODERS[family]
             and not n.split(".")[1].startswith("clip_")]
    verdict = pick_family(family_signals(names))
    used = {n.split(".")[1] for n in names}
    want = {f for f, encs in ENCODERS.items() if used <= set(encs)}
    assert verdict is not None and set(verdict.split("/")) >= want, (verdict, want)
    assert family in verdict.split("/")


def test_lora_te3_names_the_families_comfy_gives_it_to() -> None:
    te3 = {f for f in TE if any(n.startswith("lora_te3_") for n in _names(f))}
    assert te3 == {"flux", "sd3", "hidream"}
    verdict = pick_family(family_signals(["lora_te3_encoder_block_0_layer_0_SelfAttention_q"]))
    assert set(verdict.split("/")) == te3


def test_text_encoder_names_narrow_a_dit_verdict() -> None:
    dit = ["lycoris_transformer_blocks_0_attn_to_q", "lycoris_transformer_blocks_0_attn_add_q_proj"]
    both = pick_family(family_signals(dit))
    assert "flux" in both.split("/") and "sd3" in both.split("/")
    assert pick_family(family_signals(dit + ["text_encoders.clip_g.transformer.text_model.encoder.layers.0.mlp.fc1",
                                             "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q"])) \
        == "sd3"


# ------------------------------------------------------------------------------- transformers models
def _tiny(kind: str) -> torch.nn.Module:
    import transformers as tf

    torch.manual_seed(0)
    common = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8)
    if kind in ("t5xxl", "umt5xxl"):
        cls = tf.T5Config if kind == "t5xxl" else tf.UMT5Config
        model = (tf.T5EncoderModel if kind == "t5xxl" else tf.UMT5EncoderModel)(cls(
            vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu"))
    else:
        cfg, mdl = {"qwen25_7b": ("Qwen2Config", "Qwen2Model"), "qwen3_4b": ("Qwen3Config", "Qwen3Model"),
                    "llama": ("LlamaConfig", "LlamaModel"), "gemma2_2b": ("Gemma2Config", "Gemma2Model")}[kind]
        model = getattr(tf, mdl)(getattr(tf, cfg)(**common))
    return model.eval()


ENCODER_OF = {"t5xxl": "flux", "umt5xxl": "wan", "qwen25_7b": "qwen_image", "qwen3_4b": "zimage", "llama": "hidream",
              "gemma2_2b": "lumina2"}
"""ComfyUI encoder name -> a family whose stored key map has it."""


def _comfy_names_on(model: torch.nn.Module, enc: str) -> dict[str, str]:
    """ComfyUI's LoRA names of encoder ``enc`` -> the transformers module path of the same weight
    (ComfyUI's path less ``<enc>.transformer.`` and its language models' ``model.`` level), for the
    weights the tiny model has (linear layers of blocks 0 and 1)."""
    mods = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    out = {}
    for n, k in _names(ENCODER_OF[enc]).items():
        if not k.startswith(f"{enc}.transformer."):
            continue
        path = k[len(f"{enc}.transformer."): -len(".weight")]
        path = path[len("model."):] if path.startswith("model.") else path
        if path in mods:
            out[n] = path
    return out


@pytest.mark.parametrize("enc", sorted(ENCODER_OF))
def test_comfy_names_resolve_on_transformers_encoders(enc: str) -> None:
    model = _tiny(enc)
    names = _comfy_names_on(model, enc)
    assert len({p for p in names.values()}) >= 10, "ComfyUI's block-0/1 linear weights exist in the tiny model"
    report = resolve(list(names), model)
    assert report.matched == names and not report.unmatched, report.format()
    as_part = resolve(list(names), {"text_encoder": model})
    assert as_part.matched == {n: "text_encoder." + p for n, p in names.items()}, as_part.format()


@pytest.mark.parametrize("enc", ["t5xxl", "qwen25_7b"])
def test_lokr_on_transformers_encoder_applies_lycoris_delta(enc: str, tmp_path: Path) -> None:
    """lycoris-lora LoKr modules on a tiny encoder, saved under ComfyUI's ``text_encoders.<enc>.transformer.``
    names, applied with apply_lokr: ΔW equal to lycoris'."""
    from lycoris import create_lycoris
    from safetensors.torch import save_file

    from tests.support.lokr_fixtures import _randomize_, lycoris_reference

    model = _tiny(enc)
    comfy = {p: n for n, p in _comfy_names_on(model, enc).items() if n.startswith("text_encoders.")}
    net = create_lycoris(model, 1.0, linear_dim=4, linear_alpha=2.0, algo="lokr", factor=4, preset="full")
    paths = {id(m): n for n, m in model.named_modules()}
    gen = torch.Generator().manual_seed(1)
    sd, ref = {}, {}
    for lo in net.loras:
        path = paths[id(lo.org_module[0])]
        if path not in comfy:
            continue
        _randomize_(lo, gen)
        ref[path] = lycoris_reference(lo.eval())
        for param, t in lo.state_dict().items():
            if param != "scalar":
                sd[f"{comfy[path]}.{param}"] = t.detach().float().clone().contiguous()
    assert len(ref) >= 10
    f = tmp_path / f"{enc}.safetensors"
    save_file(sd, str(f))
    before = copy.deepcopy(model)
    result = lk.apply_lokr(model, lk.load_lokr(f))
    assert not result.unmatched and len(result.matched) == len(ref)
    for path, d in ref.items():
        got = model.get_submodule(path).weight.detach() - before.get_submodule(path).weight.detach()
        torch.testing.assert_close(got, d.reshape(got.shape), atol=1e-5, rtol=1e-4, msg=path)


# ------------------------------------------------------------------------------ whole checkpoints
def test_comfy_saved_checkpoint_with_text_encoders_is_its_dit_family() -> None:
    """A ComfyUI-saved SD3 checkpoint holds CLIP-G too: still SD3 (not SDXL); its modules of every part resolve."""
    dit = json.loads((Path(__file__).parents[1] / "support" / "comfy_dit_keys.json").read_text())["sd3"]["weights"]
    state = {"model." + k: tuple(s) for k, s in dit.items()}
    state.update({"text_encoders." + k: tuple(s) for k, s in TE["sd3"]["weights"].items()})
    names = {"lora_unet_joint_blocks_0_x_block_attn_proj": "model.diffusion_model.joint_blocks.0.x_block.attn.proj.weight",
             "lora_te2_text_model_encoder_layers_0_mlp_fc1":
                 "text_encoders.clip_g.transformer.text_model.encoder.layers.0.mlp.fc1.weight",
             "lora_te3_encoder_block_0_layer_0_SelfAttention_q":
                 "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight"}
    report = resolve(list(names), state)
    assert report.target_family == "sd3" and report.matched == names, report.format()


def test_diffusers_pipeline_state_dict(tmp_path: Path) -> None:
    """A diffusers Flux pipeline's state dict (transformer. / text_encoder. CLIP / text_encoder_2. T5)."""
    from tests.support import dit_models

    t5 = _tiny("t5xxl")
    state = {"transformer." + k: v for k, v in dit_models.build("flux").state_dict().items()}
    state.update({"text_encoder_2." + k: v for k, v in t5.state_dict().items()})
    names = {"lycoris_transformer_blocks_0_attn_to_q": "transformer.transformer_blocks.0.attn.to_q.weight",
             "lora_unet_double_blocks_0_img_attn_proj": "transformer.transformer_blocks.0.attn.to_out.0.weight",
             "lora_te2_encoder_block_1_layer_1_DenseReluDense_wo": "text_encoder_2.encoder.block.1.layer.1.DenseReluDense.wo.weight",
             "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q":
                 "text_encoder_2.encoder.block.0.layer.0.SelfAttention.q.weight"}
    report = resolve(list(names), state)
    assert report.matched == names and report.target_family is not None and "flux" in report.target_family.split("/"), \
        report.format()
