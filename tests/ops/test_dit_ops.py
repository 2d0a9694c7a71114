"""apply_lokr / merge_checkpoint / merge_into_state_dict on DiT models and checkpoints in both layouts.

Files: lycoris-lora LoKr modules (``create_lycoris(algo="lokr", preset="full")``, random factors),
on the tiny diffusers models of tests/support/dit_models.py (diffusers names) or on a module tree
with the ComfyUI 0.28.0 weight names and shapes of the same tiny models (original names,
tests/support/dit_tiny_keys.json). Reference ΔW per module: lycoris' ``get_weight``. Where a
module lands (original key, rows, (shift, scale) halves swapped) comes from ComfyUI's own LoRA key
map stored in that file (its ``(key, None, swap_scale_shift)`` targets) or diffusers' single-file
converters (tests/keymap/test_dit_resolve.py ``Case`` / ``_oracle``), never from lokr_core.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import lokr_core as lk
from lokr_core.base.errors import LoKrKeyError
from lokr_core.ops.merge import merge_checkpoint, merge_into_state_dict
from tests.keymap.test_dit_resolve import KEYS, Case, _oracle
from tests.support import dit_models
from tests.support.lokr_fixtures import _randomize_, lycoris_reference, make_lycoris_file

ATOL = 1e-5
PREFIX = "model.diffusion_model."
SWAP_FAMILIES = ("flux", "sd3")
FUSED_FAMILIES = ("flux", "sd3", "lumina2", "zimage")


def _swap(t: torch.Tensor) -> torch.Tensor:
    """ComfyUI's swap_scale_shift: the two halves of the rows exchanged."""
    h = t.shape[0] // 2
    return torch.cat([t[h:], t[:h]])


def comfy_module(family: str, seed: int = 3) -> nn.Module:
    """A module tree with the ComfyUI names and shapes of the tiny ``family`` model: a Linear / Conv
    layer per 2-D+ ``.weight`` (with its bias when the key list has one), random weights."""
    keys = KEYS[family]["keys"]
    gen = torch.Generator().manual_seed(seed)
    root = nn.Module()
    for k, s in keys.items():
        if not k.endswith(".weight") or len(s) < 2:
            continue
        path = k[: -len(".weight")]
        bias = path + ".bias" in keys
        if len(s) == 2:
            layer = nn.Linear(s[1], s[0], bias=bias)
        else:
            conv = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}[len(s)]
            layer = conv(s[1], s[0], tuple(s[2:]), bias=bias)
        with torch.no_grad():
            for p in layer.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        parent = root
        *heads, leaf = path.split(".")
        for h in heads:
            if not hasattr(parent, h):
                parent.add_module(h, nn.Module())
            parent = getattr(parent, h)
        parent.add_module(leaf, layer)
    return root.eval()


@pytest.fixture(scope="module", params=dit_models.FAMILIES)
def case(request) -> Case:
    return Case(request.param)


def _placed(case: Case, shapes: dict[str, tuple[int, ...]]):
    """(rename keeping the diffusers modules ComfyUI's map places at a fitting shape, {original key:
    expected ΔW}) for a diffusers-named file on the ComfyUI-layout ``shapes`` (keys without prefix)."""
    expected = {k: torch.zeros(s) for k, s in shapes.items()}
    keep = {}
    for path, ref in case.ref.items():
        hit = case.oracle.get(path)
        if hit is None:
            continue
        key, rows, swap = hit
        rows = rows or (0, shapes[key][0])
        if (rows[1] - rows[0],) + tuple(shapes[key][1:]) != tuple(ref.shape[:1]) + tuple(shapes[key][1:]) or \
                ref.numel() != (rows[1] - rows[0]) * int(torch.tensor(shapes[key][1:]).prod()):
            continue  # the two tiny configs size this weight differently
        block = expected[key][rows[0]:rows[1]]
        d = ref.reshape(block.shape)
        block += _swap(d) if swap else d
        keep[path] = swap
    return (lambda n, p: n if p in keep else None), expected, keep


# ------------------------------------------------------------------------ diffusers file -> ComfyUI layout
def test_apply_diffusers_file_on_comfy_layout_module(case: Case, tmp_path: Path) -> None:
    """merge mode: ΔW into the rows ComfyUI's map names; bypass: each layer's output equals the merged one's."""
    base = comfy_module(case.family)
    shapes = {n: tuple(p.shape) for n, p in base.named_parameters()}
    rename, expected, keep = _placed(case, shapes)
    f, names = case.save(tmp_path, rename)
    w = lk.load_lokr(f)
    report = w.resolve(base)
    assert report.ok and sorted(report.matched) == sorted(names), report.format()
    swapped = sorted(n for n, p in names.items() if keep[p])
    assert sorted(report.row_order) == swapped and all(v == "swap_halves" for v in report.row_order.values())
    if case.family in SWAP_FAMILIES:
        assert swapped, "the file has norm_out.linear, whose halves ComfyUI's map swaps"
    if case.family in FUSED_FAMILIES:
        assert report.rows
    merged = copy.deepcopy(base)
    res = lk.apply_lokr(merged, w, mode="merge")
    assert not res.unmatched and not res.skipped
    after = dict(merged.named_parameters())
    for k, p in base.named_parameters():
        if expected[k].abs().max() == 0:
            assert torch.equal(after[k], p), k
        else:
            torch.testing.assert_close(after[k].detach() - p.detach(), expected[k], atol=ATOL, rtol=1e-4, msg=k)
    bypass = copy.deepcopy(base)
    snap = {k: v.clone() for k, v in bypass.state_dict().items()}
    res = lk.apply_lokr(bypass, w, mode="bypass")
    assert len(res.hooks) == len(names) and all(torch.equal(bypass.state_dict()[k], v) for k, v in snap.items())
    gen = torch.Generator().manual_seed(5)
    layers = dict(merged.named_modules())
    for name, layer in bypass.named_modules():
        if isinstance(layer, nn.Linear) and expected[name + ".weight"].abs().max() > 0:
            x = torch.randn(3, layer.in_features, generator=gen)
            with torch.no_grad():
                torch.testing.assert_close(layer(x), layers[name](x), atol=1e-4, rtol=1e-4, msg=name)
    res.remove()


@pytest.mark.parametrize("prefix", [PREFIX, ""])  # diffusion_model.: tests/commands/test_dit_cli.py
def test_merge_checkpoint_comfy_layout_files(case: Case, prefix: str, tmp_path: Path) -> None:
    """ComfyUI-saved checkpoints (with text encoders and VAE) and diffusion-model-only files."""
    shapes = {k: tuple(s) for k, s in KEYS[case.family]["keys"].items()}
    rename, expected, _ = _placed(case, shapes)
    f, names = case.save(tmp_path, rename)
    gen = torch.Generator().manual_seed(7)
    state = {prefix + k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    if prefix == PREFIX:  # what ComfyUI's checkpoint save writes next to the diffusion model
        state["text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"] = torch.randn(8, 8)
        state["text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight"] = torch.randn(8, 8)
        state["vae.decoder.conv_in.weight"] = torch.randn(4, 4, 3, 3)
    state["some.int_buffer"] = torch.arange(6)
    ckpt, out = tmp_path / "model.safetensors", tmp_path / "merged.safetensors"
    save_file(state, str(ckpt))
    res = merge_checkpoint(ckpt, [(f, 1.0)], out, device="cpu")
    assert sorted(res.matched[str(f)]) == sorted(names) and not res.unmatched[str(f)], res.unmatched
    assert res.checkpoint_family == dit_models_family(case.family)
    assert res.families[str(f)] is not None
    got = load_file(str(out))
    assert sorted(got) == sorted(state)
    for k, t in state.items():
        short = k[len(prefix):]
        if short in expected and expected[short].abs().max() > 0:
            torch.testing.assert_close(got[k] - t, expected[short], atol=ATOL, rtol=1e-4, msg=k)
        else:
            assert torch.equal(got[k], t), f"{k} changed but no module targets it"


def dit_models_family(family: str) -> str:
    """keymap family id of a tests/support/dit_models family."""
    return {"wan21": "wan"}.get(family, family)


CONVERTERS = {"sd3": "convert_sd3_transformer_checkpoint_to_diffusers",
              "wan21": "convert_wan_transformer_to_diffusers"}


def _bare(state: dict) -> dict:
    """The diffusion model's keys without the checkpoint prefix (what every converter reads)."""
    return {k[len(PREFIX):]: v for k, v in state.items()}


def test_merged_comfy_checkpoint_converts_to_diffusers_delta(case: Case, tmp_path: Path) -> None:
    """diffusers' own converter of the merged ComfyUI state gives base + lycoris' ΔW on every module
    (q / k / v out of fused weights, (shift, scale) halves of norm_out / last norm1_context)."""
    from diffusers.loaders import single_file_utils as sf

    if case.family not in CONVERTERS:  # diffusers' Flux / Lumina 2 converters assume the full widths
        pytest.skip(f"{case.family}: no diffusers single-file converter for the tiny model")
    convert = getattr(sf, CONVERTERS[case.family])
    shapes = {k: tuple(s) for k, s in KEYS[case.family]["keys"].items()}
    rename, _, keep = _placed(case, shapes)
    f, names = case.save(tmp_path, rename)
    gen = torch.Generator().manual_seed(8)
    state = {PREFIX + k: torch.randn(s, generator=gen, dtype=torch.float64).float() for k, s in shapes.items()}
    merged = merge_into_state_dict(state, [(lk.load_lokr(f), 1.0)]).state_dict
    before, after = convert(_bare(state)), convert(_bare(merged))
    for name, path in names.items():
        d = after[path + ".weight"] - before[path + ".weight"]
        torch.testing.assert_close(d, case.ref[path].reshape(d.shape), atol=ATOL, rtol=1e-4, msg=name)
    if case.family == "sd3":
        assert sum(keep.values()) == 2, "norm_out.linear and the last norm1_context.linear are swapped"


# ------------------------------------------------------------------------ original file -> diffusers model
class OriginalCase:
    """LoKr modules made by lycoris on the ComfyUI-layout tree (original names), and where each
    original module lands on the diffusers model: {diffusers path: (original path, rows, swapped)}."""

    def __init__(self, case: Case):
        from lycoris import create_lycoris

        self.comfy = comfy_module(case.family)
        net = create_lycoris(self.comfy, 1.0, linear_dim=4, linear_alpha=2.0, algo="lokr", factor=4, preset="full")
        paths = {id(m): n for n, m in self.comfy.named_modules()}
        gen = torch.Generator().manual_seed(11)
        self.ref, self.tensors = {}, {}
        for lo in net.loras:
            _randomize_(lo, gen)
            path = paths[id(lo.org_module[0])]
            self.ref[path] = lycoris_reference(lo.eval())
            for param, t in lo.state_dict().items():
                if param != "scalar":
                    self.tensors[(path, param)] = t.detach().float().clone().contiguous()
        params = dict(case.model.named_parameters())
        by_orig: dict[str, list] = {}
        for dpath, (key, rows, swap) in case.oracle.items():
            opath = key[: -len(".weight")]
            if dpath + ".weight" in params and opath in self.ref:
                by_orig.setdefault(opath, []).append((dpath, rows, swap))
        self.lands = {}
        for opath, hits in by_orig.items():
            ref = self.ref[opath].reshape(self.comfy.get_submodule(opath).weight.shape)
            ok = True
            for dpath, rows, _ in hits:
                block = ref if rows is None else ref[rows[0]:rows[1]]
                ok &= tuple(block.shape) == tuple(params[dpath + ".weight"].shape)
            covered = sorted((r or (0, ref.shape[0])) for _, r, _ in hits)
            ok &= covered[0][0] == 0 and covered[-1][1] == ref.shape[0] and all(
                a[1] == b[0] for a, b in zip(covered, covered[1:]))
            if ok:  # every row of the original weight lands on the diffusers model
                for dpath, rows, swap in hits:
                    self.lands[dpath] = (opath, rows, swap)

    def save(self, folder: Path, prefix: str) -> tuple[Path, dict[str, str]]:
        names = {o: prefix + (o.replace(".", "_") if prefix.endswith("_") else o)
                 for o in {v[0] for v in self.lands.values()}}
        sd = {f"{names[p]}.{param}": t for (p, param), t in self.tensors.items() if p in names}
        f = folder / f"orig_{prefix.strip('._')}.safetensors"
        save_file(sd, str(f))
        return f, {n: o for o, n in names.items()}

    def expected(self, dpath: str, shape: tuple[int, ...]) -> torch.Tensor:
        opath, rows, swap = self.lands[dpath]
        ref = self.ref[opath].reshape(self.comfy.get_submodule(opath).weight.shape)
        d = _swap(ref) if swap else ref
        return (d if rows is None else d[rows[0]:rows[1]]).reshape(shape)


@pytest.fixture(scope="module")
def orig(case: Case) -> OriginalCase:
    return OriginalCase(case)


@pytest.mark.parametrize("fmt,mode", [("lora_unet_", "merge"), ("diffusion_model.", "merge"),
                                      ("diffusion_model.", "bypass")])
def test_apply_original_file_on_diffusers_model(case: Case, orig: OriginalCase, fmt: str, mode: str,
                                                tmp_path: Path) -> None:
    oc = orig
    f, names = oc.save(tmp_path, fmt)
    w = lk.load_lokr(f)
    report = w.resolve(case.model)
    assert report.ok, report.format()
    placed = set(report.matched) | set(report.split)
    assert placed == set(names), sorted(set(names) - placed)
    fused = {o for d, (o, rows, _) in oc.lands.items() if rows is not None}
    assert {names_o for n, names_o in names.items() if n in report.split} == fused
    swapped = {o for d, (o, _, s) in oc.lands.items() if s}
    assert {names[n] for n in report.row_order} == swapped
    if case.family in FUSED_FAMILIES:
        assert fused, "the file has fused original q/k/v modules"
    if case.family in SWAP_FAMILIES:
        assert swapped, "the file has final_layer.adaLN_modulation.1"
    model = copy.deepcopy(case.model)
    res = lk.apply_lokr(model, w, mode=mode)
    assert not res.unmatched and not res.skipped
    if mode == "merge":
        before = dict(case.model.named_parameters())
        for n, p in model.named_parameters():
            d = p.detach() - before[n].detach()
            path = n[: -len(".weight")]
            if n.endswith(".weight") and path in oc.lands:
                torch.testing.assert_close(d, oc.expected(path, tuple(d.shape)), atol=ATOL, rtol=1e-4, msg=n)
            else:
                assert torch.equal(p, before[n]), n
        return
    gen = torch.Generator().manual_seed(6)
    layers = dict(case.model.named_modules())
    for path, layer in model.named_modules():
        if path in oc.lands and isinstance(layer, nn.Linear):
            x = torch.randn(3, layer.in_features, generator=gen)
            want = layers[path](x) + x @ oc.expected(path, tuple(layer.weight.shape)).T
            with torch.no_grad():
                torch.testing.assert_close(layer(x), want, atol=1e-4, rtol=1e-4, msg=path)
    res.remove()


def test_merge_original_file_into_diffusers_state_dict(case: Case, orig: OriginalCase, tmp_path: Path) -> None:
    oc = orig
    f, _ = oc.save(tmp_path, "lora_unet_")
    state = {k: v.detach() for k, v in case.model.state_dict().items()}  # a diffusers transformer file's keys
    res = merge_into_state_dict(state, [(f, 1.0)])
    assert not res.unmatched[str(f)]
    for k, t in state.items():
        path = k[: -len(".weight")]
        if k.endswith(".weight") and path in oc.lands:
            torch.testing.assert_close(res.state_dict[k] - t, oc.expected(path, tuple(t.shape)), atol=ATOL,
                                       rtol=1e-4, msg=k)
        else:
            assert torch.equal(res.state_dict[k], t), k


# ------------------------------------------------------------------------ DoRA, odd modules, strict
def _dora_file(folder: Path, wd_on_out: bool):
    comfy = comfy_module("flux")
    layouts = {"qkv": ("unet", "double_blocks.0.img_attn.qkv",
                       dict(lora_dim=2, alpha=1.0, weight_decompose=True, wd_on_out=wd_on_out), "split-w2"),
               "mod": ("unet", "final_layer.adaLN_modulation.1",
                       dict(lora_dim=2, alpha=1.0, weight_decompose=True, wd_on_out=wd_on_out), "split-w2"),
               "proj": ("unet", "double_blocks.0.img_attn.proj", dict(lora_dim=2, alpha=1.0), "split-w2")}
    return make_lycoris_file(folder, layouts, model=comfy, unet_prefix="lora_unet_")


def test_dora_split_and_swap_per_output_row_match_lycoris(tmp_path: Path) -> None:
    """A DoRA magnitude per output row: the split / swapped merged weights are rows of lycoris'
    DoRA-merged original weight (on the same base rows)."""
    fx = _dora_file(tmp_path, wd_on_out=True)
    model = dit_models.build("flux")
    params = dict(model.named_parameters())
    lands: dict[str, list] = {}
    for dpath, (key, rows, swap) in _oracle("flux").items():
        if dpath + ".weight" in params:
            lands.setdefault(key[: -len(".weight")], []).append((dpath, rows, swap))

    def place(t: torch.Tensor, rows, swap: bool) -> torch.Tensor:
        t = _swap(t) if swap else t
        return t if rows is None else t[rows[0]:rows[1]]

    with torch.no_grad():  # the diffusers weights = the ComfyUI-layout weights the file was made on
        for name, opath in fx.paths.items():
            for dpath, rows, swap in lands[opath]:
                params[dpath + ".weight"].copy_(place(fx.weights[name], rows, swap))
    res = lk.apply_lokr(model, fx.path)
    assert not res.unmatched and not res.skipped and len(res.matched) == 3
    assert len(res.matched[next(n for n, p in fx.paths.items() if p.endswith("qkv"))]) == 3
    for name, opath in fx.paths.items():
        merged = fx.merged.get(name)
        if merged is None:
            merged = fx.weights[name] + fx.reference[name].reshape(fx.weights[name].shape)
        for dpath, rows, swap in lands[opath]:
            torch.testing.assert_close(params[dpath + ".weight"].detach(), place(merged, rows, swap), atol=1e-5,
                                       rtol=1e-4, msg=dpath)


def test_dora_per_input_column_split_is_skipped_with_reason_unless_strict(tmp_path: Path) -> None:
    fx = _dora_file(tmp_path, wd_on_out=False)
    model = dit_models.build("flux")
    snap = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(LoKrKeyError, match="strict=True.*Model unchanged"):
        lk.apply_lokr(model, fx.path, strict=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in snap.items())
    res = lk.apply_lokr(model, fx.path)
    qkv = next(n for n, p in fx.paths.items() if p.endswith("img_attn.qkv"))
    assert list(res.skipped) == [qkv] and "per input column" in res.skipped[qkv]
    assert len(res.matched) == 2  # the swapped modulation (norm over columns: unchanged by a row swap) and proj
    with pytest.raises(LoKrKeyError, match="strict merge"):
        merge_into_state_dict(snap, [(fx.path, 1.0)], strict=True)


def test_unmatched_module_is_listed_and_the_rest_applied_unless_strict(tmp_path: Path) -> None:
    case_names = {"lora_unet_double_blocks_0_img_attn_proj": (64, 64), "lora_unet_no_such_layer": (64, 64)}
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for n, (o, i) in case_names.items():
        sd[f"{n}.lokr_w1"] = torch.randn(4, 4, generator=gen)
        sd[f"{n}.lokr_w2"] = torch.randn(o // 4, i // 4, generator=gen)
        sd[f"{n}.alpha"] = torch.tensor(1.0)
    f = tmp_path / "partial.safetensors"
    save_file(sd, str(f))
    model = dit_models.build("flux")
    with pytest.raises(LoKrKeyError, match="1 module\\(s\\) unmatched.*no_such_layer"):
        lk.apply_lokr(copy.deepcopy(model), f, strict=True)
    res = lk.apply_lokr(model, f)
    assert res.unmatched == ["lora_unet_no_such_layer"]
    assert res.matched == {"lora_unet_double_blocks_0_img_attn_proj": "transformer_blocks.0.attn.to_out.0.weight"}
