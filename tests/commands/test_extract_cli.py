"""``lokr extract`` / ``lokr resize`` and the LoKr Extract node, on tiny LDM-keyed checkpoints.

ΔW is an exact Kronecker product built with lycoris-lora's ``make_kron``; files written are read
back with ``lokr_core.formats.io.load_lokr`` and with lycoris' ``LokrModule.make_module_from_state_dict``.
"""
from __future__ import annotations

import json

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lokr_core.commands.cli import main

KEY = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
NAME = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"


def _pair(tmp_path, identical=False):
    """base / tuned LDM files; tuned = base + kron(W1, W2 of rank 2) on one Linear (lycoris make_kron)."""
    from lycoris.functional.lokr import make_kron

    base = {KEY: torch.randn(128, 128), "model.diffusion_model.out.0.weight": torch.randn(8),
            "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight": torch.randn(32, 16)}
    w1, w2 = torch.randn(8, 8), torch.randn(16, 2) @ torch.randn(2, 16)
    delta = make_kron(w1, w2, 1.0)
    tuned = dict(base) if identical else {**base, KEY: base[KEY] + delta}
    pb, pt = tmp_path / "base.safetensors", tmp_path / "tuned.safetensors"
    save_file(base, str(pb))
    save_file(tuned, str(pt))
    return pb, pt, delta


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_cli_extract_writes_lokr_and_report(tmp_path, capsys):
    from lokr_core.formats.io import load_lokr

    pb, pt, delta = _pair(tmp_path)
    out, rj = tmp_path / "out.safetensors", tmp_path / "report.json"
    code = main(["extract", str(pb), str(pt), "-o", str(out), "--rank", "2", "--save-dtype", "fp32",
                 "--report-json", str(rj), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(rj.read_text())
    assert [m["name"] for m in report["modules"]] == [NAME] and report["modules"][0]["rel_error"] < 1e-5
    assert report["skipped"] == {"lora_te_text_model_encoder_layers_0_mlp_fc1": "unchanged"}
    w = load_lokr(out)
    assert w.module_names == [NAME] and w.modules[NAME].layout == "split-w2"
    got = w.delta(NAME, (128, 128))
    assert float((got - delta).norm() / delta.norm()) < 1e-5
    captured = capsys.readouterr()
    assert "wrote" in captured.out and NAME in captured.err


def test_cli_extract_output_is_input_exit_2_nothing_written(tmp_path, capsys):
    pb, pt, _ = _pair(tmp_path)
    before = pt.read_bytes()
    code = main(["extract", str(pb), str(pt), "-o", str(pt), "--rank", "2", "--no-progress"])
    assert code == 2
    assert "output path is also an input" in capsys.readouterr().err
    assert pt.read_bytes() == before and _files(tmp_path) == ["base.safetensors", "tuned.safetensors"]


def test_cli_extract_identical_exit_2_no_file(tmp_path, capsys):
    pb, pt, _ = _pair(tmp_path, identical=True)
    code = main(["extract", str(pb), str(pt), "-o", str(tmp_path / "o.safetensors"), "--rank", "2",
                 "--report-json", str(tmp_path / "r.json"), "--no-progress"])
    assert code == 2
    assert "identical" in capsys.readouterr().err
    assert _files(tmp_path) == ["base.safetensors", "tuned.safetensors"]


def test_cli_resize(tmp_path, capsys):
    from lycoris.modules.lokr import LokrModule

    pb, pt, delta = _pair(tmp_path)
    out = tmp_path / "r4.safetensors"
    assert main(["extract", str(pb), str(pt), "-o", str(out), "--rank", "4", "--save-dtype", "fp32",
                 "--no-progress"]) == 0
    small = tmp_path / "r2.safetensors"
    assert main(["resize", str(out), "-o", str(small), "--rank", "2", "--no-progress",
                 "--report-json", str(tmp_path / "rr.json")]) == 0
    with safe_open(str(small), "pt") as fh:
        sd = {k: fh.get_tensor(k) for k in fh.keys()}
    assert sd[f"{NAME}.lokr_w2_a"].shape == (16, 2) and float(sd[f"{NAME}.alpha"]) == 2.0
    layer = torch.nn.Linear(128, 128)
    with torch.no_grad():  # lycoris reads the resized file; ΔW is still exact (true rank 2)
        mod = LokrModule.make_module_from_state_dict(NAME, layer, sd[f"{NAME}.lokr_w1"], None, None, None,
                                                     sd[f"{NAME}.lokr_w2_a"], sd[f"{NAME}.lokr_w2_b"], None, None,
                                                     sd[f"{NAME}.alpha"], None)
        assert float((mod.get_weight(mod.shape) - delta).norm() / delta.norm()) < 1e-5
    before = small.read_bytes()
    assert main(["resize", str(small), "-o", str(small), "--rank", "1", "--no-progress"]) == 2
    assert "output path is also an input" in capsys.readouterr().err and small.read_bytes() == before
