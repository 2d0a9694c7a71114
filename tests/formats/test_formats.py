"""formats/: detection, LyCORIS and PEFT readers, conversions checked by loading the results in
lycoris-lora and peft."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.support import lokr_fixtures as F
from lokr_core.base.errors import LoKrFormatError, LoKrKeyError
from lokr_core.formats.keys import group_keys, module_kind, split_key
from lokr_core.formats.detect import format_of_keys, locate
from lokr_core.formats.lycoris import canonical_name
from lokr_core.formats.peft import module_path
from lokr_core.formats.io import load_lokr, save_lokr

PEFT_OK = ["full_linear", "split_w2_linear", "split_w2_linear_rect", "full_conv1x1", "split_conv1x1",
           "tucker_conv3x3", "full_conv3x3"]


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def test_split_key_group_and_kind():
    assert split_key("a_b.lokr_w1") == ("a_b", "lokr_w1")
    assert split_key("a.b.lokr_w2_a") == ("a.b", "lokr_w2_a")
    assert split_key("x.lora_up.weight") == ("x", "lora_up.weight")
    assert split_key("x.hada_w1_a") == ("x", "hada_w1_a")
    assert split_key("plain") == ("plain", "")
    g = group_keys(["m.lokr_w1", "m.alpha", "n.lora_down.weight", "o.hada_w1_a", "p.diff", "q.w_norm", "r.foo"])
    assert {k: module_kind(v) for k, v in g.items()} == {"m": "lokr", "n": "lora", "o": "loha", "p": "diff",
                                                         "q": "norm", "r": "unknown"}


def test_canonical_names_and_peft_paths():
    assert canonical_name("lora_te_text_model_encoder_layers_0_mlp_fc1") == ("te1", "encoder_layers_0_mlp_fc1")
    assert canonical_name("lora_te1_encoder_layers_0_mlp_fc1") == ("te1", "encoder_layers_0_mlp_fc1")
    assert canonical_name("lycoris_down_blocks_0") == canonical_name("lora_unet_down_blocks_0")
    assert canonical_name("lora_te2_x") == ("te2", "x")
    assert module_path("unet.base_model.model.a.b") == ("unet", "a.b")
    assert module_path("base_model.model.a.b") == (None, "a.b")


def test_format_of_keys_and_locate(tmp_path):
    assert format_of_keys(["lora_unet_x.lokr_w1", "lora_unet_x.lokr_w2"]) == "lycoris"
    assert format_of_keys(["base_model.model.x.lokr_w1"]) == "peft"
    assert format_of_keys(["unet.base_model.model.x.lokr_w1"]) == "peft"
    with pytest.raises(LoKrFormatError, match=r"file 'f', module 'lora_unet_y'.*mixes PEFT names"):
        format_of_keys(["base_model.model.x.lokr_w1", "lora_unet_y.lokr_w1"], "f")
    (tmp_path / "d").mkdir()
    with pytest.raises(LoKrFormatError, match=r"directory has no adapter_model.safetensors"):
        locate(tmp_path / "d")
    with pytest.raises(LoKrFormatError, match="no such file"):
        locate(tmp_path / "missing.safetensors")


def test_lycoris_reader_kohya_te_names_and_lycoris_prefix(tmp_path):
    te = F.make_lycoris_file(tmp_path, ["te_split_q", "te_full_fc1"], filename="te.safetensors")
    w = load_lokr(te.path)
    assert all(n.startswith("lora_te_text_model_encoder_layers_") for n in w.module_names)
    for name, ref in te.reference.items():
        assert rel(w.delta(name, ref.shape), ref) < 1e-5
    un = F.make_lycoris_file(tmp_path, ["split_w2_linear"], filename="ly.safetensors", unet_prefix="lycoris_")
    w2 = load_lokr(un.path)
    assert w2.module_names[0].startswith("lycoris_down_blocks_0")
    assert rel(w2.delta(w2.module_names[0], next(iter(un.reference.values())).shape), next(iter(un.reference.values()))) < 1e-5


def test_mixed_file_lists_other_modules(tmp_path):
    lf, others = F.make_mixed_file(tmp_path)
    w = load_lokr(lf.path)
    assert w.other_modules == others
    assert set(w.module_names) == set(lf.reference)
    for name, ref in lf.reference.items():
        assert rel(w.delta(name, ref.shape), ref) < 1e-5
    lora = next(n for n, k in others.items() if k == "lora")
    assert set(w.raw_keys(lora)) == {f"{lora}.lora_up.weight", f"{lora}.lora_down.weight", f"{lora}.alpha"}
    # lycoris -> lycoris keeps LoKr and other modules bit for bit, metadata kept
    out = save_lokr(w, tmp_path / "copy.safetensors", metadata={"note": "x"})
    sd = load_file(out)
    assert set(sd) == set(lf.state_dict)
    for k, t in lf.state_dict.items():
        assert torch.equal(sd[k], t), k
    w2 = load_lokr(out)
    assert w2.metadata["ss_network_module"] == "lycoris.kohya" and w2.metadata["note"] == "x"


def test_peft_state_dict_with_component_prefix_and_config(tmp_path):
    pd = F.make_peft_dir(tmp_path)
    sd = load_file(pd.path / "adapter_model.safetensors")
    cfg = json.loads((pd.path / "adapter_config.json").read_text())
    w = load_lokr({f"unet.{k}": v for k, v in sd.items()}, config=cfg)
    for name, ref in pd.reference.items():
        assert rel(w.delta(f"unet.{name}", ref.shape), ref) < 1e-5
    # no config: scale 1 with a plain warning
    w0 = load_lokr(sd)
    assert any("adapter_config.json" in m for m in w0.scale_warnings())
    name = next(iter(pd.reference))
    assert w0.scale(name) == 1.0
    # the safetensors file alone, config beside it
    w1 = load_lokr(pd.path / "adapter_model.safetensors")
    assert w1.format == "peft" and w1.peft_r_alpha(name) == pd.r_alpha[name]


def _fresh_unet():
    return F.build_model("unet")


def test_lycoris_to_peft_loads_in_peft_with_equal_outputs(tmp_path):
    from peft import PeftModel

    from tests.support import models

    lf = F.make_lycoris_file(tmp_path, PEFT_OK)
    w = load_lokr(lf.path)
    out = save_lokr(w, tmp_path / "as_peft", format="peft", name_map=lf.paths)
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    model = PeftModel.from_pretrained(_fresh_unet(), str(out)).eval()
    mods = dict(model.named_modules())
    for name, ref in lf.reference.items():
        layer = mods["base_model.model." + lf.paths[name]]
        assert rel(layer.get_delta_weight("default").float(), ref) < 1e-5, name
    merged = _fresh_unet()
    named = dict(merged.named_modules())
    with torch.no_grad():
        for name, ref in lf.reference.items():
            named[lf.paths[name]].weight += ref
        x = models.unet_inputs()
        y_peft = model(*x).sample
        y_ref = merged(*x).sample
    assert rel(y_peft, y_ref) < 1e-5
    # and back: peft -> lycoris -> same ΔW
    back = load_lokr(out)
    for name, ref in lf.reference.items():
        assert rel(back.delta("base_model.model." + lf.paths[name], ref.shape), ref) < 1e-5


def _lycoris_module_from(sd, name, org):
    """A lycoris LokrModule holding the file's module (make_module_from_state_dict, or a constructed
    Tucker module, since make_module_from_state_dict cannot rebuild Tucker: docs/known-failures.md, lycoris-lora 4.1.3)."""
    from lycoris.modules.lokr import LokrModule

    g = {k[len(name) + 1:]: v for k, v in sd.items() if k.startswith(name + ".")}
    if "lokr_t2" in g:
        r = g["lokr_t2"].shape[0]
        mod = LokrModule(name, org, lora_dim=r, alpha=float(g["alpha"]), use_tucker=True,
                         decompose_both="lokr_w1_a" in g)
        mod.load_state_dict(g, strict=False)
        return mod
    with torch.no_grad():
        return LokrModule.make_module_from_state_dict(
            name, org, g.get("lokr_w1"), g.get("lokr_w1_a"), g.get("lokr_w1_b"), g.get("lokr_w2"),
            g.get("lokr_w2_a"), g.get("lokr_w2_b"), None, g.get("lokr_t2"), g.get("alpha", torch.tensor(0.0)),
            g.get("dora_scale"))


def test_peft_to_lycoris_loads_in_lycoris(tmp_path):
    pd = F.make_peft_dir(tmp_path)
    w = load_lokr(pd.path)
    out = save_lokr(w, tmp_path / "conv.safetensors")
    sd = load_file(out)
    base = dict(_fresh_unet().named_modules())
    full_full = 0
    for name, ref in pd.reference.items():
        path = name[len("base_model.model."):]
        kname = "lora_unet_" + path.replace(".", "_")
        full_full += f"{kname}.lokr_w2" in sd and f"{kname}.lokr_w1" in sd
        mod = _lycoris_module_from(sd, kname, base[path])
        with torch.no_grad():
            got = mod.get_weight(mod.shape).float()
        assert rel(got, ref) < 1e-5, name
    assert full_full > 0  # the alpha/r fold into lokr_w1 was exercised
    assert load_lokr(out).metadata["ss_network_module"] == "lycoris.kohya"


def test_peft_export_refuses_what_peft_cannot_express(tmp_path):
    lf = F.make_lycoris_file(tmp_path, ["dora_out_linear", "split_w2_linear"])
    w = load_lokr(lf.path)
    target = tmp_path / "out_dir"
    with pytest.raises(LoKrFormatError, match=r"module 'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_2'.*DoRA"):
        save_lokr(w, target, format="peft", name_map=lf.paths)
    assert not target.exists()
    lf2 = F.make_lycoris_file(tmp_path, ["tucker_split_w1_conv3x3"], filename="t.safetensors")
    with pytest.raises(LoKrFormatError, match=r"module 'lora_unet_mid_block_resnets_1_conv2'.*not what PEFT creates"):
        save_lokr(load_lokr(lf2.path), target, format="peft", name_map=lf2.paths)
    assert not target.exists()
    with pytest.raises(LoKrKeyError, match="name_map"):
        save_lokr(load_lokr(lf2.path), target, format="peft")
    assert not target.exists()


def test_duplicate_modules_are_errors(tmp_path):
    keys = ["lora_te_text_model_encoder_layers_0_q.lokr_w1", "lora_te_text_model_encoder_layers_0_q.lokr_w2",
            "lora_te1_encoder_layers_0_q.lokr_w1", "lora_te1_encoder_layers_0_q.lokr_w2"]
    sd = {k: torch.ones(2, 2) for k in keys}
    save_file(sd, str(tmp_path / "dup.safetensors"))
    with pytest.raises(LoKrFormatError, match=r"dup.safetensors', module '.*same module as ") as err:
        load_lokr(tmp_path / "dup.safetensors")
    assert "'lora_te1_encoder_layers_0_q'" in str(err.value)
    assert "'lora_te_text_model_encoder_layers_0_q'" in str(err.value)
    t = torch.ones(2, 2)
    sd2 = {"unet.base_model.model.a.lokr_w1": t, "unet.base_model.model.a.lokr_w2": t,
           "base_model.model.a.lokr_w1": t, "base_model.model.a.lokr_w2": t}
    with pytest.raises(LoKrFormatError, match=r"module 'base_model.model.a'.*same module as 'unet.base_model.model.a'"):
        load_lokr(sd2)


def test_peft_with_decompose_factor_roundtrips_to_peft(tmp_path):
    from peft import LoKrConfig, PeftModel, get_peft_model

    cfg = LoKrConfig(r=2, alpha=3, target_modules=["ff.net.0.proj", "to_q"], decompose_factor=4, init_weights=False)
    model = get_peft_model(_fresh_unet(), cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lokr_" in n:
                p.copy_(torch.randn(p.shape))
    model.save_pretrained(str(tmp_path / "a"))
    ref = {n: m.get_delta_weight("default").float() for n, m in model.named_modules()
           if hasattr(m, "get_delta_weight") and "default" in getattr(m, "lokr_w1", {})}
    out = save_lokr(load_lokr(tmp_path / "a"), tmp_path / "b", format="peft")
    assert json.loads((out / "adapter_config.json").read_text())["decompose_factor"] == 4
    again = dict(PeftModel.from_pretrained(_fresh_unet(), str(out)).named_modules())
    for n, r in ref.items():
        assert rel(again[n].get_delta_weight("default").float(), r) < 1e-5, n


# ------------------------------------------------------------- a given PEFT config means PEFT rules
def _peft_unet(rank_pattern, alpha_pattern, targets=("to_q", "to_v", "proj_in", "conv1"), seed=0):
    """(PeftModel on a tiny UNet with random factors, peft's LoKrConfig, {module path: peft ΔW})."""
    from peft import LoKrConfig, get_peft_model

    from lokr_core.commands.demo_run import randomize_adapters

    config = LoKrConfig(r=4, alpha=4.0, target_modules=list(targets), rank_pattern=dict(rank_pattern),
                        alpha_pattern=dict(alpha_pattern), init_weights=False)
    model = get_peft_model(F.build_model("unet", seed), config)
    randomize_adapters(model, seed + 1, std=0.5)
    ref = {}
    for name, mod in model.named_modules():
        if hasattr(mod, "get_delta_weight") and "default" in getattr(mod, "r", {}):
            with torch.no_grad():
                ref[name[len("base_model.model."):]] = mod.get_delta_weight("default").float().clone()
    return model.eval(), config, ref


@pytest.mark.parametrize("prefix", ["", "unet."])
@pytest.mark.parametrize("config_as", ["ours", "peft dict"])
def test_peft_state_dict_without_base_model_prefix_follows_the_given_config(prefix, config_as):
    from peft import get_peft_model_state_dict

    from lokr_core.tuner.config import LoKrConfig

    model, config, ref = _peft_unet({"to_v": 2}, {"to_v": 6.0, "proj_in": 2.0})
    sd = {prefix + k[len("base_model.model."):]: v for k, v in get_peft_model_state_dict(model).items()}
    assert not any(k.startswith("base_model.model.") for k in sd)
    given = config.to_dict()
    cfg = LoKrConfig.from_peft_dict(given) if config_as == "ours" else given
    w = load_lokr(sd, config=cfg)
    assert w.format == "peft" and sorted(w.module_names) == sorted(prefix + p for p in ref)
    to_v = next(p for p in ref if p.endswith("to_v"))
    assert w.peft_r_alpha(prefix + to_v) == (2, 6.0) and w.scale(prefix + to_v) == 3.0
    for path, delta in ref.items():
        assert rel(w.delta(prefix + path, delta.shape), delta) < 1e-5, path
    # the same dict without a config is still read as LyCORIS names at scale 1
    assert load_lokr(sd).format == "lycoris"


def test_given_config_with_kohya_names_is_an_error():
    sd = {"lora_unet_a.lokr_w1": torch.randn(2, 2), "lora_unet_a.lokr_w2": torch.randn(4, 4)}
    with pytest.raises(LoKrFormatError, match=r"module 'lora_unet_a'.*LyCORIS/kohya name.*config"):
        load_lokr(sd, config={"peft_type": "LOKR", "r": 4, "alpha": 4})


# ------------------------------------------------------------- one PEFT adapter per pipeline part
UNET_PART = ["split_w2_linear", "full_linear", "split_conv1x1", "tucker_conv3x3"]
TE_PART = ["te_split_q", "te_full_fc1"]


def _unet_and_te_file(tmp_path):
    """One kohya file adapting a tiny UNet and a tiny CLIP text encoder: (path, unet LokrFile, te LokrFile)."""
    lu = F.make_lycoris_file(tmp_path, UNET_PART, filename="u.safetensors")
    lt = F.make_lycoris_file(tmp_path, TE_PART, filename="t.safetensors")
    path = tmp_path / "unet_te.safetensors"
    save_file({**lu.state_dict, **lt.state_dict}, str(path), metadata={"ss_network_module": "lycoris.kohya"})
    return path, lu, lt


@pytest.mark.parametrize("te_key", ["text_encoder", "te1"])
def test_lycoris_unet_and_text_encoder_to_peft_parts_load_in_peft(tmp_path, te_key):
    from peft import PeftModel

    from tests.support import models

    path, lu, lt = _unet_and_te_file(tmp_path)
    w = load_lokr(path)
    out = save_lokr(w, tmp_path / "pipe_adapter", format="peft", model={"unet": lu.model, te_key: lt.model})
    assert sorted(p.name for p in out.iterdir()) == ["text_encoder", "unet"]
    for part in ("unet", "text_encoder"):
        assert sorted(p.name for p in (out / part).iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    unet = PeftModel.from_pretrained(F.build_model("unet"), str(out / "unet")).eval()
    te = PeftModel.from_pretrained(F.build_model("clip"), str(out / "text_encoder")).eval()
    for lf, peft_model in ((lu, unet), (lt, te)):
        mods = dict(peft_model.named_modules())
        for name, ref in lf.reference.items():
            layer = mods["base_model.model." + lf.paths[name]]
            assert rel(layer.get_delta_weight("default").float(), ref) < 1e-5, name
    # outputs: peft's adapted models == the base models with lycoris' ΔW added
    ref_unet, ref_te = F.build_model("unet"), F.build_model("clip")
    with torch.no_grad():
        for lf, model in ((lu, ref_unet), (lt, ref_te)):
            for name, ref in lf.reference.items():
                model.get_submodule(lf.paths[name]).weight += ref
        x = models.unet_inputs()
        assert rel(unet(*x).sample, ref_unet(*x).sample) < 1e-5
        ids = torch.tensor([[0, 5, 9, 3, 1]])
        assert rel(te(ids).last_hidden_state, ref_te(ids).last_hidden_state) < 1e-5
    # load_lokr reads the folder back: one module per part, same ΔW, resolvable against the parts
    back = load_lokr(out)
    assert back.format == "peft" and len(back) == len(lu.reference) + len(lt.reference)
    for prefix, lf in (("unet.base_model.model.", lu), ("text_encoder.base_model.model.", lt)):
        for name, ref in lf.reference.items():
            assert rel(back.delta(prefix + lf.paths[name], ref.shape), ref) < 1e-5, name
    assert len(back.resolve({"unet": lu.model, "text_encoder": lt.model}).matched) == len(back)
    # and to LyCORIS again: kohya names per part, same ΔW
    again = load_lokr(save_lokr(back, tmp_path / "again.safetensors"))
    for prefix, lf in (("lora_unet_", lu), ("lora_te1_", lt)):
        for name, ref in lf.reference.items():
            assert rel(again.delta(prefix + lf.paths[name].replace(".", "_"), ref.shape), ref) < 1e-5, name


def test_peft_parts_unet_only_file_and_errors(tmp_path):
    path, lu, lt = _unet_and_te_file(tmp_path)
    only_unet = load_lokr(lu.path)
    out = save_lokr(only_unet, tmp_path / "u", format="peft", model={"unet": lu.model, "text_encoder": lt.model})
    assert (out / "adapter_model.safetensors").is_file() and not (out / "unet").exists()  # plain UNet adapter
    w = load_lokr(path)
    with pytest.raises(LoKrKeyError, match="does not resolve to a module of the given model"):
        save_lokr(w, tmp_path / "no_te", format="peft", model={"unet": lu.model})
    assert not (tmp_path / "no_te").exists()
    mixed = {**lu.paths, **{n: "text_encoder." + p for n, p in lt.paths.items()}}
    with pytest.raises(LoKrFormatError, match="has no component while other modules belong to 'text_encoder'"):
        save_lokr(w, tmp_path / "mixed", format="peft", name_map=mixed)
    assert not (tmp_path / "mixed").exists()
