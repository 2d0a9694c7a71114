"""``lokr info`` on DiT LoKr files (family label, block groups, the checkpoint's family) and
``lokr merge`` / ``lokr extract`` on DiT checkpoints: ComfyUI-saved (``model.diffusion_model.`` with
text encoders and VAE) and diffusion-model-only files (``diffusion_model.`` / bare keys).

LoKr files: lycoris-lora modules on the tiny diffusers models (tests/keymap/test_dit_resolve.py
``Case``); where each lands in the ComfyUI layout: ComfyUI 0.28.0's own LoRA key map / diffusers'
converters (tests/ops/test_dit_ops.py ``_placed``). Extract: the names ComfyUI's map gives every
diffusion-model weight (``lora_unet_`` + its path with ``_``).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lokr_core.commands.cli import main
from lokr_core.formats.checkpoint import checkpoint_shapes
from lokr_core.formats.io import load_lokr
from lokr_core.keymap.family import FAMILY_LABELS
from lokr_core.ops.merge import merge_checkpoint
from tests.keymap.test_dit_resolve import KEYS, Case
from tests.ops.test_dit_ops import _placed, dit_models_family

PREFIX = "model.diffusion_model."
EXTRAS = {"text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight": (8, 8),
          "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight": (8, 8),
          "vae.decoder.conv_in.weight": (4, 4, 3, 3)}


def _checkpoint(family: str, path: Path, prefix: str = PREFIX, seed: int = 7) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {prefix + k: torch.randn(s, generator=gen) for k, s in KEYS[family]["keys"].items()}
    if prefix == PREFIX:
        state.update({k: torch.randn(s, generator=gen) for k, s in EXTRAS.items()})
    save_file(state, str(path))
    return state


@pytest.fixture(scope="module", params=["flux", "sd3", "zimage", "wan21"])
def case(request) -> Case:
    return Case(request.param)


def test_cli_merge_dit_checkpoint_shows_family(case: Case, tmp_path: Path, capsys) -> None:
    shapes = {k: tuple(s) for k, s in KEYS[case.family]["keys"].items()}
    rename, expected, _ = _placed(case, shapes)
    f, names = case.save(tmp_path, rename)
    ckpt, out = tmp_path / "ckpt.safetensors", tmp_path / "merged.safetensors"
    state = _checkpoint(case.family, ckpt)
    assert main(["merge", str(ckpt), f"{f}:0.5", "-o", str(out), "--device", "cpu", "--no-progress"]) == 0
    err = capsys.readouterr().err
    label = FAMILY_LABELS[dit_models_family(case.family)]
    assert f"checkpoint: {label}" in err, err
    assert f"{len(names)} modules merged" in err and "unmatched" not in err, err
    got = load_file(str(out))
    for k, t in state.items():
        short = k[len(PREFIX):]
        if short in expected and expected[short].abs().max() > 0:
            torch.testing.assert_close(got[k] - t, 0.5 * expected[short], atol=1e-5, rtol=1e-4, msg=k)
        else:
            assert torch.equal(got[k], t), k


def test_cli_merge_strict_refuses_unmatched(tmp_path: Path, capsys) -> None:
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for n in ("lora_unet_double_blocks_0_img_attn_proj", "lora_unet_no_such_layer"):
        sd.update({f"{n}.lokr_w1": torch.randn(4, 4, generator=gen), f"{n}.lokr_w2": torch.randn(16, 16, generator=gen),
                   f"{n}.alpha": torch.tensor(1.0)})
    f, ckpt, out = tmp_path / "l.safetensors", tmp_path / "c.safetensors", tmp_path / "o.safetensors"
    save_file(sd, str(f))
    _checkpoint("flux", ckpt)
    assert main(["merge", str(ckpt), str(f), "-o", str(out), "--strict", "--no-progress"]) == 2
    assert not out.exists() and "no_such_layer" in capsys.readouterr().err
    assert main(["merge", str(ckpt), str(f), "-o", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "1 modules merged, 1 unmatched" in err and "unmatched: lora_unet_no_such_layer" in err


@pytest.mark.parametrize("prefix", [PREFIX, "diffusion_model.", ""])
def test_cli_extract_dit_roundtrip(case: Case, prefix: str, tmp_path: Path, capsys) -> None:
    """base vs base + a LoKr: the extracted file names ComfyUI's keys, resolves back onto the base
    checkpoint, and merging it gives tuned - base within the error it reports."""
    shapes = {k: tuple(s) for k, s in KEYS[case.family]["keys"].items()}
    rename, _, _ = _placed(case, shapes)
    f, _ = case.save(tmp_path, rename)
    base, tuned = tmp_path / "base.safetensors", tmp_path / "tuned.safetensors"
    state = _checkpoint(case.family, base, prefix)
    merge_checkpoint(base, [(f, 1.0)], tuned, device="cpu")
    out, rj = tmp_path / "x.safetensors", tmp_path / "x.json"
    assert main(["extract", str(base), str(tuned), "-o", str(out), "--rank", "8", "--save-dtype", "fp32",
                 "--no-progress", "--no-lora-compare", "--report-json", str(rj)]) == 0
    capsys.readouterr()
    tuned_sd = load_file(str(tuned))
    changed = {k for k, t in state.items() if not torch.equal(tuned_sd[k], t)}
    assert changed and all(k.endswith(".weight") for k in changed)
    conv3d = {k for k in changed if state[k].ndim == 5}  # Wan's patch embedding: not extracted (2-D / 4-D only)
    changed -= conv3d
    w = load_lokr(out)
    names = {"lora_unet_" + k[len(prefix): -len(".weight")].replace(".", "_") for k in changed}
    assert set(w.module_names) == names
    report = w.resolve(checkpoint_shapes(base))
    assert report.ok and set(report.matched.values()) == changed and not report.rows, report.format()
    errors = {m["key"]: m["rel_error"] for m in json.loads(rj.read_text())["modules"]}
    back = tmp_path / "back.safetensors"
    merge_checkpoint(base, [(out, 1.0)], back, device="cpu")
    got = load_file(str(back))
    for k in changed:
        d, want = got[k] - state[k], tuned_sd[k] - state[k]
        assert float((d - want).norm() / want.norm()) <= errors[k] + 1e-4, k
    for k in set(state) - changed:
        assert torch.equal(got[k], state[k]), k
    assert (case.family == "wan21") == bool(conv3d)


def test_cli_info_dit_file_names_family_and_block_groups(case: Case, tmp_path: Path, capsys) -> None:
    from tests.ops.test_dit_report import comfy_block

    rename, _, _ = _placed(case, {k: tuple(s) for k, s in KEYS[case.family]["keys"].items()})
    f, names = case.save(tmp_path, rename)
    blocks: dict[str, set[int]] = {}
    for p in names.values():  # each module's block, read from the ComfyUI weight it lands on
        kind, _, i = comfy_block(case.oracle[p][0]).partition(" ")
        if i:
            blocks.setdefault(kind, set()).add(int(i))
    assert blocks, "the tiny models have numbered blocks"
    label = FAMILY_LABELS[dit_models_family(case.family)]
    assert main(["info", str(f)]) == 0
    out = capsys.readouterr().out
    guess = out.split("family guess: ", 1)[1].split(")\n", 1)[0]
    # the tiny models' widths (64) are no released model's: names alone may leave two families
    # (SD3's diffusers names are Flux's too, and the file then reads its blocks as Flux's double ones)
    assert guess == label or label in guess.split(" or "), out
    for kind, idx in blocks.items():
        assert f"{kind if guess == label else ''} {min(idx)}-{max(idx)} (".lstrip() in out, out
    ckpt = tmp_path / "ckpt.safetensors"
    _checkpoint(case.family, ckpt)
    assert main(["info", str(f), "--against", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert f"family guess: {guess})" in out and f"(target family: {label})" in out, out
    assert f"Against target: {len(names)}/{len(names)} modules matched" in out, out
