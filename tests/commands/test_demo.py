"""`lokr demo`: the README's main job runs end to end and its figures are at float tolerance.

The demo's own numbers compare our paths with each other (PEFT dir vs LyCORIS file, merge vs
bypass vs streamed checkpoint); the reference comparisons against peft / lycoris-lora live in the
module tests (test_model, test_io, test_merge, ...)."""
import pytest

from lokr_core.commands.cli import main
from lokr_core.commands.demo_run import run_demo


def test_run_demo_writes_both_formats_and_agrees(tmp_path):
    figures = run_demo(tmp_path, log=lambda _: None)
    assert (tmp_path / "peft_unet" / "adapter_config.json").exists()
    assert (tmp_path / "demo_lokr.safetensors").exists()
    assert (tmp_path / "merged" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert figures["unet_modules"] > 30 and figures["text_modules"] == 12
    assert {"full", "split-w2", "tucker"} <= set(figures["layouts"])
    for key in ("max_rel_delta_peft_vs_lycoris", "max_rel_merge_error", "rel_output_error_bypass", "checkpoint_rel_error"):
        assert figures[key] < 1e-4, key


def test_demo_command_plumbing_and_exit_codes(tmp_path, monkeypatch, capsys):
    """The command passes --out/--seed through and fails (exit 3) when a figure is off."""
    import lokr_core.commands.demo_run as demo

    seen = {}
    good = dict(seconds=0.1, max_rel_delta_peft_vs_lycoris=0.0, max_rel_merge_error=1e-7,
                rel_output_error_bypass=1e-6, checkpoint_rel_error=0.0)

    def fake(out, seed=0):
        seen.update(out=str(out), seed=seed)
        return dict(figures)

    monkeypatch.setattr(demo, "run_demo", fake)
    figures = good
    assert main(["demo", "--out", str(tmp_path), "--seed", "3", "--json"]) == 0
    assert seen == {"out": str(tmp_path), "seed": 3}
    assert '"checkpoint_rel_error": 0.0' in capsys.readouterr().out
    figures = dict(good, max_rel_merge_error=0.5)
    assert main(["demo", "--out", str(tmp_path)]) == 3
    assert "max_rel_merge_error" in capsys.readouterr().out
