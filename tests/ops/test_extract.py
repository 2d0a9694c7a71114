"""Extraction and resize (lokr_core.tensor.decompose / lokr_core.ops.extract) checked against lycoris-lora.

References: ``lycoris.functional.lokr.make_kron`` (the Kronecker product), ``LokrModule`` (layout
decisions and ΔW via ``get_weight``, scale applied once), and plain ``torch.linalg.svd`` for the
optimality claims (Eckart-Young on the rearranged matrix / on W2 / on ΔW).
"""
from __future__ import annotations

import math
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lokr_core.base.errors import LoKrConfigError, LoKrError, LoKrFormatError, LoKrKeyError, LoKrShapeError
from lokr_core.ops.extract import extract_lokr, format_extract_report, resize_lokr, save_extracted
from lokr_core.tensor.decompose import (factors_from_delta, lora_error_at_params, lowrank_split, nearest_kronecker,
                                    plan_layout, rearrange, resize_factors, top_singular_pair, tucker2)
from lokr_core.tensor.factors import LoKrFactors
from lokr_core.tensor.kron import kron_delta

from tests.support import lokr_fixtures as fx


def _ref_kron(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    from lycoris.functional.lokr import make_kron

    return make_kron(w1, w2, 1.0)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------------------- nearest Kronecker
@pytest.mark.parametrize("w1_shape,w2_shape", [((4, 6), (8, 5)), ((8, 10), (10, 8, 3, 3)), ((20, 24), (32, 32)),
                                                ((8, 8), (8, 8, 1, 1))])
def test_nearest_kronecker_recovers_exact_product(w1_shape, w2_shape):
    w1, w2 = torch.randn(w1_shape), torch.randn(w2_shape)
    delta = _ref_kron(w1, w2)  # lycoris' product (W1 unsqueezed for convs)
    a, b, err = nearest_kronecker(delta, w1_shape, w2_shape)
    assert a.shape == w1_shape and b.shape == w2_shape
    assert err < 1e-5
    assert _rel(_ref_kron(a, b), delta) < 1e-5
    # factors are w1, w2 up to a scalar c and 1/c
    c = float((a * w1).sum() / (w1 * w1).sum())
    assert _rel(a, c * w1) < 1e-5 and _rel(b, w2 / c) < 1e-5


def test_nearest_kronecker_is_optimal_on_noise():
    """Error equals the rank-1 tail of the rearranged matrix (full SVD in float64)."""
    delta = torch.randn(160, 120)
    w1s, w2s = (10, 10), (16, 12)
    a, b, err = nearest_kronecker(delta, w1s, w2s)
    s = torch.linalg.svdvals(rearrange(delta.double(), w1s, w2s))
    best = math.sqrt(1 - float(s[0] ** 2 / (s ** 2).sum()))
    measured = _rel(_ref_kron(a, b), delta)
    assert err > 0.9  # honest: noise is not a Kronecker product
    assert abs(measured - best) < 1e-4 and abs(err - best) < 1e-4


def test_top_singular_pair_matches_svd():
    """The block power iteration (forced with direct_max=0) agrees with a float64 SVD."""
    r = torch.randn(150, 120) + 0.5 * torch.outer(torch.randn(150), torch.randn(120))
    u, s, v = top_singular_pair(r, direct_max=0)
    ref = torch.linalg.svd(r.double(), full_matrices=False)
    assert abs(s - float(ref.S[0])) / float(ref.S[0]) < 1e-5
    assert abs(abs(float(u.double() @ ref.U[:, 0])) - 1) < 1e-5


def test_nearest_kronecker_bad_shape_and_zero():
    with pytest.raises(LoKrShapeError, match=r"expected \(12, 30\)"):
        nearest_kronecker(torch.randn(12, 31), (3, 5), (4, 6))
    a, b, err = nearest_kronecker(torch.zeros(12, 30), (3, 5), (4, 6))
    assert err == 0.0 and not a.any() and not b.any()


# ------------------------------------------------------------------------------- low-rank parts
def test_lowrank_split_is_truncated_svd_and_pads():
    m = torch.randn(12, 30)
    a, b = lowrank_split(m, 4)
    u, s, vh = torch.linalg.svd(m.double(), full_matrices=False)
    best = (u[:, :4] * s[:4]) @ vh[:4]
    assert _rel((a @ b).double(), best) < 1e-5
    a, b = lowrank_split(torch.randn(3, 30), 5)  # rank above min(m, n): zero padding, exact
    assert a.shape == (3, 5) and b.shape == (5, 30) and not a[:, 3:].any()


def test_tucker2_matches_lycoris_rebuild():
    from lycoris.functional.general import rebuild_tucker

    t2, a, b = torch.randn(3, 3, 3, 3), torch.randn(3, 10), torch.randn(3, 8)
    w2 = rebuild_tucker(t2, a, b)
    t, wa, wb = tucker2(w2, 3)
    assert t.shape == (3, 3, 3, 3) and wa.shape == (3, 10) and wb.shape == (3, 8)
    assert _rel(rebuild_tucker(t, wa, wb), w2) < 1e-5


# ------------------------------------------------------------------------------- layout vs lycoris
@pytest.mark.parametrize("layer,rank,kw", [
    (torch.nn.Linear(256, 96), 2, {}), (torch.nn.Linear(64, 64), 8, {}),
    (torch.nn.Linear(256, 96), 2, dict(decompose_both=True)), (torch.nn.Conv2d(64, 32, 3), 2, dict(use_tucker=True)),
    (torch.nn.Conv2d(64, 32, 3), 2, {}), (torch.nn.Conv2d(64, 64, 1), 2, dict(use_tucker=True)),
    (torch.nn.Linear(128, 640), 4, dict(factor=8)),
])
def test_plan_layout_matches_lycoris_module(layer, rank, kw):
    from lycoris.modules.lokr import LokrModule

    mod = LokrModule("m", layer, lora_dim=rank, alpha=rank, **kw)
    lay = plan_layout(layer.weight.shape, rank, kw.get("factor", -1), kw.get("decompose_both", False),
                      tucker=kw.get("use_tucker", False))
    f, _ = factors_from_delta(torch.randn(layer.weight.shape), lay)
    ours = {f"lokr_{n}": tuple(t.shape) for n, t in f.tensors()}
    theirs = {n: tuple(p.shape) for n, p in mod.named_parameters() if n.startswith("lokr_")}
    assert ours == theirs


# ------------------------------------------------------------------------------- checkpoints
GROUPS = {  # extraction settings -> fixture layouts made by lycoris-lora with those settings
    (8, False, "tucker"): ["full_linear", "full_conv1x1", "full_conv3x3"],
    (2, False, "tucker"): ["split_w2_linear", "split_w2_linear_rect", "split_conv1x1", "tucker_conv3x3"],
    (2, False, "flat"): ["split_conv3x3", "split_conv3x3_rect"],
    (2, True, "tucker"): ["split_both_linear"],
}


@pytest.fixture(scope="module")
def lycoris_pair(tmp_path_factory):
    """(base folder, tuned folder, {kohya name: (lycoris ΔW, LokrModule kwargs, layout)}): a tiny diffusers
    UNet and the same UNet with every fixture LokrModule's ΔW merged in."""
    torch.manual_seed(0)
    model = fx.build_model("unet")
    base_sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    layouts = {k: fx.LAYOUTS[k] for keys in GROUPS.values() for k in keys}
    mods = fx.make_lokr_modules(model, layouts, "lora_unet_", seed=1)
    tuned_sd = {k: v.clone() for k, v in base_sd.items()}
    refs = {}
    for name, (key, mod, path, layout) in mods.items():
        ref = fx.lycoris_reference(mod)
        tuned_sd[path + ".weight"] = tuned_sd[path + ".weight"] + ref
        refs[name] = (ref, fx.LAYOUTS[key][2], layout, key)
    root = tmp_path_factory.mktemp("pair")
    for side, sd in (("base", base_sd), ("tuned", tuned_sd)):
        (root / side / "unet").mkdir(parents=True)
        save_file(sd, str(root / side / "unet" / "diffusion_pytorch_model.safetensors"))
    return root / "base", root / "tuned", refs


@pytest.mark.parametrize("settings", list(GROUPS))
def test_roundtrip_lycoris_file_through_checkpoint(lycoris_pair, settings):
    """ΔW of lycoris LokrModules merged into a checkpoint is extracted back to 1e-4, with lycoris' layout,
    and a LokrModule loaded with our factors (alpha = rank) reproduces the reference ΔW."""
    from lycoris.modules.lokr import LokrModule

    base, tuned, refs = lycoris_pair
    rank, both, conv = settings
    names = [n for n, (_, _, _, key) in refs.items() if key in GROUPS[settings]]
    weights, report = extract_lokr(base, tuned, rank, decompose_both=both, conv=conv,
                                   targets=[f"^{n}$" for n in names], hash_sources=False)
    assert sorted(weights.module_names) == sorted(names)
    model = fx.build_model("unet")
    named = dict(model.named_modules())
    for row in report["modules"]:
        assert row["rel_error"] < 1e-4, row
    for name in names:
        ref, kw, layout, key = refs[name]
        f = weights.modules[name]
        assert f.layout == layout
        assert f.alpha == float(rank)
        mod = LokrModule(name, named[fx.LAYOUTS[key][1]], **{**kw, "alpha": float(rank)})
        with torch.no_grad():
            for pname, p in mod.named_parameters():
                if pname.startswith("lokr_"):
                    p.copy_(getattr(f, pname[len("lokr_"):]).reshape(p.shape))
            got = mod.get_weight(mod.shape)
        assert _rel(got, ref) < 1e-4, name


def test_extract_file_is_read_by_lycoris(lycoris_pair, tmp_path):
    """The written file (LyCORIS keys, fp32) loads in lycoris' make_module_from_state_dict with the same ΔW."""
    from lycoris.modules.lokr import LokrModule

    base, tuned, refs = lycoris_pair
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj"
    out = tmp_path / "x.safetensors"
    extract_lokr(base, tuned, 2, targets=[f"^{name}$"], out=out, save_dtype="fp32")
    with safe_open(str(out), "pt") as fh:
        sd = {k: fh.get_tensor(k) for k in fh.keys()}
        meta = fh.metadata()
    assert set(sd) == {f"{name}.{p}" for p in ("lokr_w1", "lokr_w2_a", "lokr_w2_b", "alpha")}
    assert meta["ss_network_module"] == "lycoris.kohya" and '"algo": "lokr"' in meta["ss_network_args"]
    assert "lokr_extract_base_sha256" in meta and meta["ss_network_dim"] == "2"
    layer = dict(fx.build_model("unet").named_modules())["down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj"]
    g = lambda p: sd.get(f"{name}.{p}")  # noqa: E731
    with torch.no_grad():
        mod = LokrModule.make_module_from_state_dict(name, layer, g("lokr_w1"), None, None, None, g("lokr_w2_a"),
                                                     g("lokr_w2_b"), None, None, g("alpha"), None)
        assert _rel(mod.get_weight(mod.shape), refs[name][0]) < 1e-4


def _ldm_pair(noise: float = 0.0):
    base = {
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": torch.randn(64, 64, 1, 1),
        "model.diffusion_model.input_blocks.1.0.in_layers.2.weight": torch.randn(64, 32, 3, 3),
        "model.diffusion_model.input_blocks.1.0.in_layers.2.bias": torch.randn(64),
        "model.diffusion_model.input_blocks.1.1.norm.weight": torch.randn(64),
        "model.diffusion_model.time_embed.0.weight": torch.randn(64, 16),
        "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight": torch.randn(32, 32),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.randn(100, 32),
        "first_stage_model.decoder.conv_in.weight": torch.randn(8, 4, 3, 3),
    }
    tuned = {k: v + noise * torch.randn_like(v) for k, v in base.items()}
    return base, tuned


def test_random_noise_reports_large_error_and_lora_comparison():
    base, tuned = _ldm_pair(noise=0.1)
    calls = []
    weights, report = extract_lokr(base, tuned, 4, conv="flat", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]  # two UNet weights and one text-encoder weight considered
    names = set(weights.module_names)
    assert names == {"lora_unet_input_blocks_1_1_proj_in", "lora_unet_input_blocks_1_0_in_layers_2",
                     "lora_te_text_model_encoder_layers_0_self_attn_q_proj"}  # norms, embeddings, VAE skipped
    for row in report["modules"]:
        f = weights.modules[row["name"]]
        key = row["key"]
        delta = tuned[key] - base[key]
        ours = kron_delta(f, delta.shape)
        assert row["rel_error"] > 0.8
        assert abs(row["rel_error"] - _rel(ours, delta)) < 1e-5
        # LoRA of equal size, by an independent SVD
        s = torch.linalg.svdvals(delta.reshape(delta.shape[0], -1).double())
        r = row["lora_rank"]
        assert r == row["params"] // (delta.shape[0] + delta[0].numel())
        assert abs(row["lora_rel_error"] - math.sqrt(float((s[r:] ** 2).sum() / (s ** 2).sum()))) < 1e-5
    text = format_extract_report(report)
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in text and "overall relative error" in text


def test_lora_error_at_params_vs_svd():
    d = torch.randn(40, 8, 3, 3)
    r, err = lora_error_at_params(d, 3 * (40 + 72) + 5)
    s = torch.linalg.svdvals(d.reshape(40, -1).double())
    assert r == 3 and abs(err - math.sqrt(float((s[3:] ** 2).sum() / (s ** 2).sum()))) < 1e-5
    assert lora_error_at_params(d, 40 + 71) == (0, 1.0)  # no rank-1 LoRA fits the budget


def test_openclip_in_proj_split_into_qkv():
    """SD2 / SDXL OpenCLIP fused q/k/v rows become three kohya modules with their own ΔW."""
    w = torch.randn(48, 16)
    base = {"conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight": w,
            "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight": torch.randn(64, 16)}
    k1, k2 = torch.randn(4, 4), torch.randn(4, 4)
    tuned = dict(base)
    tuned["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"] = \
        w + torch.cat([torch.zeros(16, 16), _ref_kron(k1, k2), torch.zeros(16, 16)])
    weights, report = extract_lokr(base, tuned, 2)
    assert weights.module_names == ["lora_te2_text_model_encoder_layers_0_self_attn_k_proj"]
    assert report["skipped"]["lora_te2_text_model_encoder_layers_0_self_attn_q_proj"] == "unchanged"
    assert report["modules"][0]["rel_error"] < 1e-5


# ------------------------------------------------------------------------------- bad input
def test_different_shapes_names_the_key(tmp_path):
    base, tuned = _ldm_pair(0.1)
    tuned["model.diffusion_model.input_blocks.1.1.proj_in.weight"] = torch.randn(64, 32, 1, 1)
    out = tmp_path / "o.safetensors"
    with pytest.raises(LoKrShapeError, match=r"input_blocks\.1\.1\.proj_in\.weight.*same architecture"):
        extract_lokr(base, tuned, 4, out=out)
    assert list(tmp_path.iterdir()) == []


def test_different_architectures_names_the_key(tmp_path):
    base, tuned = _ldm_pair(0.1)
    tuned["model.diffusion_model.output_blocks.0.0.skip_connection.weight"] = torch.randn(8, 8, 1, 1)
    with pytest.raises(LoKrKeyError, match=r"output_blocks\.0\.0\.skip_connection\.weight.*same architecture"):
        extract_lokr(base, tuned, 4, out=tmp_path / "o.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_identical_checkpoints_clear_message_no_file(tmp_path):
    base, _ = _ldm_pair()
    path = tmp_path / "ckpt.safetensors"
    save_file(base, str(path))
    out = tmp_path / "o.safetensors"
    with pytest.raises(LoKrError, match=r"identical \(ΔW = 0\).*no file was written"):
        extract_lokr(path, path, 4, out=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]


def test_output_equal_to_input_refused_before_work(tmp_path):
    base, tuned = _ldm_pair(0.1)
    pb, pt = tmp_path / "b.safetensors", tmp_path / "t.safetensors"
    save_file(base, str(pb))
    save_file(tuned, str(pt))
    before = pt.read_bytes()
    with pytest.raises(LoKrFormatError, match="output path is also an input"):
        extract_lokr(pb, pt, 4, out=pt)
    assert pt.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.safetensors", "t.safetensors"]


def test_bad_arguments_and_unreadable_input(tmp_path):
    base, tuned = _ldm_pair(0.1)
    with pytest.raises(LoKrFormatError, match="conv='bogus'"):
        extract_lokr(base, tuned, 4, conv="bogus")
    with pytest.raises(LoKrFormatError, match="rank=0"):
        extract_lokr(base, tuned, 0)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(LoKrFormatError, match="cannot be read as safetensors"):
        extract_lokr(bad, bad, 4, out=tmp_path / "o.safetensors")
    with pytest.raises(LoKrFormatError, match="does not exist"):
        extract_lokr(tmp_path / "missing.safetensors", bad, 4)
    if not torch.cuda.is_available():
        with pytest.raises(LoKrConfigError, match="CUDA is not available"):
            extract_lokr(base, tuned, 4, device="cuda")
    with pytest.raises(LoKrKeyError, match="no weight to extract"):
        extract_lokr(base, tuned, 4, targets=["nothing_matches"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]


def test_save_extracted_roundtrip_dtype(tmp_path):
    base, tuned = _ldm_pair(0.1)
    weights, _ = extract_lokr(base, tuned, 4, hash_sources=False)
    out = save_extracted(weights, tmp_path / "o.safetensors", dtype="bf16")
    with safe_open(str(out), "pt") as fh:
        assert all(fh.get_tensor(k).dtype == (torch.float32 if k.endswith(".alpha") else torch.bfloat16)
                   for k in fh.keys())


# ------------------------------------------------------------------------------- resize
def _lycoris_module(layer, **kw):
    from lycoris.modules.lokr import LokrModule

    mod = LokrModule("m", layer, **kw)
    fx._randomize_(mod, torch.Generator().manual_seed(3))
    f = LoKrFactors(**{n[len("lokr_"):]: p.detach().clone() for n, p in mod.named_parameters() if n.startswith("lokr_")},
                    alpha=float(mod.alpha))
    return mod, f


def test_resize_split_w2_is_truncated_svd_and_keeps_scale():
    mod, f = _lycoris_module(torch.nn.Linear(256, 96), lora_dim=6, alpha=3.0)
    shape = (96, 256)
    g, err = resize_factors(f, 2, shape)
    assert g.rank == 2 and torch.equal(g.w1, f.w1)
    assert abs(g.alpha / 2 - 3.0 / 6) < 1e-12  # same scale alpha / rank
    with torch.no_grad():
        ref = mod.get_weight(mod.shape).double()  # lycoris ΔW at rank 6
    w2 = (f.w2_a @ f.w2_b).double()
    u, s, vh = torch.linalg.svd(w2, full_matrices=False)
    best = (u[:, :2] * s[:2]) @ vh[:2]
    assert _rel((g.w2_a @ g.w2_b).double(), best) < 1e-5
    got = kron_delta(g, shape, g.alpha / 2).double()
    expect = math.sqrt(float((s[2:] ** 2).sum() / (s ** 2).sum()))  # ||W1|| cancels
    assert abs(_rel(got, ref) - expect) < 1e-5 and abs(err - expect) < 1e-5


def test_resize_tucker_and_both_and_untouched():
    mod, f = _lycoris_module(torch.nn.Conv2d(64, 32, 3), lora_dim=3, alpha=1.5, use_tucker=True)
    g, err = resize_factors(f, 3, (32, 64, 3, 3))
    assert g is f and err == 0.0  # already at rank
    g, err = resize_factors(f, 2, (32, 64, 3, 3))
    assert g.t2.shape == (2, 2, 3, 3) and 0 < err < 1
    with torch.no_grad():
        ref = mod.get_weight(mod.shape)
    assert abs(_rel(kron_delta(g, (32, 64, 3, 3), g.alpha / 2), ref) - err) < 1e-5
    mod, f = _lycoris_module(torch.nn.Linear(256, 96), lora_dim=2, alpha=2.0, decompose_both=True)
    g, err = resize_factors(f, 1, (96, 256))
    assert g.w1_a.shape[1] == 1 and g.w2_a.shape[1] == 1 and g.alpha == 1.0
    full = LoKrFactors(w1=torch.randn(2, 2), w2=torch.randn(3, 3), alpha=8.0)
    assert resize_factors(full, 1, (6, 6))[0] is full


def test_resize_lokr_weights_and_report(tmp_path):
    from lokr_core.formats.weights import LoKrWeights

    _, f = _lycoris_module(torch.nn.Linear(256, 96), lora_dim=6, alpha=3.0)
    full = LoKrFactors(w1=torch.randn(2, 2), w2=torch.randn(3, 3), alpha=8.0)
    w = LoKrWeights.from_factors({"lora_unet_a": f, "lora_unet_b": full}, metadata={"ss_network_dim": "6"})
    new, report = resize_lokr(w, 2)
    assert new.modules["lora_unet_a"].rank == 2 and new.modules["lora_unet_b"] is full
    assert report["skipped"] == {"lora_unet_b": "full/full"} and new.metadata["ss_network_dim"] == "2"
    assert report["modules"][0]["params"] < report["modules"][0]["params_before"]
    with pytest.raises(LoKrFormatError, match="rank=0"):
        resize_lokr(w, 0)
    out = save_extracted(new, tmp_path / "r.safetensors")
    assert os.path.getsize(out) > 0


def test_diffusers_sdxl_names_and_mixed_inputs(tmp_path):
    """diffusers folders: unet / text_encoder (te1 when text_encoder_2 exists) / text_encoder_2 names in kohya
    form (transformers 5 keys get the text_model level back); an LDM file and a state dict can be paired."""
    parts = {"unet": {"down_blocks.0.attentions.0.proj_in.weight": torch.randn(16, 16)},
             "text_encoder": {"encoder.layers.0.mlp.fc1.weight": torch.randn(16, 8)},
             "text_encoder_2": {"text_model.encoder.layers.0.self_attn.v_proj.weight": torch.randn(8, 8)}}
    for side, noise in (("base", 0.0), ("tuned", 0.1)):
        for sub, sd in parts.items():
            (tmp_path / side / sub).mkdir(parents=True)
            torch.manual_seed(1)
            save_file({k: v + noise * torch.randn_like(v) for k, v in sd.items()},
                      str(tmp_path / side / sub / ("model.safetensors" if sub != "unet" else
                                                   "diffusion_pytorch_model.safetensors")))
    weights, _ = extract_lokr(tmp_path / "base", tmp_path / "tuned", 2, hash_sources=False)
    assert sorted(weights.module_names) == ["lora_te1_text_model_encoder_layers_0_mlp_fc1",
                                            "lora_te2_text_model_encoder_layers_0_self_attn_v_proj",
                                            "lora_unet_down_blocks_0_attentions_0_proj_in"]
    base, tuned = _ldm_pair(0.1)
    path = tmp_path / "b.safetensors"
    save_file(base, str(path))
    weights, _ = extract_lokr(path, tuned, 4, hash_sources=False)
    assert len(weights.module_names) == 3
    with pytest.raises(LoKrFormatError, match="same layout"):
        extract_lokr(tmp_path / "base", tuned, 2)


def test_resize_peft_adapter_keeps_delta_vs_peft(tmp_path):
    """A PEFT adapter (made with peft, scale alpha / r) resized: at its own rank every module's ΔW under the
    LyCORIS rule equals peft's get_delta_weight; at rank 1 the reported error is the measured one."""
    from lokr_core.tensor.scale import lycoris_scale

    pd = fx.make_peft_dir(tmp_path)
    for rank in (8, 1):
        new, report = resize_lokr(pd.path, rank)
        errors = {r["name"]: r["rel_error"] for r in report["modules"]}
        assert (not errors) if rank == 8 else len(errors) > 3
        for name, ref in pd.reference.items():
            kohya = "lora_unet_" + name[len("base_model.model."):].replace(".", "_")
            g = new.modules[kohya]
            got = kron_delta(g, ref.shape, lycoris_scale(g))
            assert abs(_rel(got, ref) - errors.get(kohya, 0.0)) < 1e-5, (rank, name)


def test_lora_shaped_difference_reports_lora_better():
    """A low-rank (LoRA-like) ΔW that is not Kronecker-structured: the report says so honestly."""
    key = "model.diffusion_model.middle_block.1.proj_out.weight"
    base = {key: torch.randn(128, 128)}
    tuned = {key: base[key] + torch.randn(128, 1) @ torch.randn(1, 128)}
    _, report = extract_lokr(base, tuned, 16, factor=4)  # W1 (4, 4) full, W2 (32, 32) full: 1040 params
    row = report["modules"][0]
    assert row["lora_rank"] == 4 and row["lora_rel_error"] < 1e-3
    assert row["rel_error"] > 0.5 and report["totals"]["lokr_better"] == 0
    assert "LoKr better on 0" in format_extract_report(report, limit=1)
