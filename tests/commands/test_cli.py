"""Tests for the ``lokr`` command line (lokr_core/cli.py and lokr_core/commands/*).

Numbers are checked against lycoris-lora's ΔW (tests/support/lokr_fixtures.py) and against PEFT loading and
merging the converted adapter itself (``PeftModel.from_pretrained(...).merge_and_unload()``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.support import lokr_fixtures as FX
from tests.support import models
from lokr_core.commands import cli
from lokr_core.commands.merge import parse_lokr_arg

ROOT = Path(__file__).resolve().parents[1]


def _close(a, b, rtol=1e-5):
    a, b = a.double(), b.double()
    err = (a - b).abs().max().item()
    assert err <= rtol * max(b.abs().max().item(), 1e-12), f"max abs error {err}"


@pytest.fixture(scope="module")
def lf(tmp_path_factory):
    return FX.make_lycoris_file(tmp_path_factory.mktemp("cli"), list(FX.LAYOUTS),
                                metadata={"ss_network_dim": "8", "ss_tag_frequency": json.dumps({"1_x": {"cat": 4}})})


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    """A tiny diffusers folder (unet only) with the fixture UNet's weights."""
    d = tmp_path_factory.mktemp("pipe")
    (d / "unet").mkdir()
    unet = models.tiny_unet(0)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(d / "unet" / "diffusion_pytorch_model.safetensors"))
    return d


def test_info_text_and_json(lf, capsys):
    assert cli.main(["info", str(lf.path)]) == 0
    out = capsys.readouterr().out
    assert f"Modules:   {len(lf.reference)} LoKr" in out and "Top tags:  cat (4)" in out
    assert cli.main(["info", str(lf.path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["module_count"] == len(lf.reference) and data["file"] == "lokr.safetensors"
    for name, mod in lf.modules.items():  # lycoris-lora's own scale of each module
        assert data["scales"][name] == pytest.approx(float(mod.scale), rel=1e-6)


def test_info_against(lf, pipe, capsys):
    assert cli.main(["info", str(lf.path), "--against", str(pipe), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["resolve"]["matched"] == len(lf.reference) and not data["resolve"]["shape_mismatch"]


def test_merge_command_matches_lycoris(lf, pipe, tmp_path, capsys):
    out = tmp_path / "merged"
    code = cli.main(["merge", str(pipe), f"{lf.path}:0.5", "-o", str(out), "--device", "cpu", "--dtype", "fp16"])
    assert code == 0, capsys.readouterr().err
    got = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    base = models.tiny_unet(0).state_dict()
    for name, path in lf.paths.items():
        key = path + ".weight"
        assert got[key].dtype == torch.float16
        assert torch.allclose(got[key].float(), base[key] + 0.5 * lf.reference[name], rtol=2 ** -10, atol=2 ** -20)
    captured = capsys.readouterr()
    assert "wrote" in captured.out and f"{len(lf.reference)} modules merged" in captured.err


def test_merge_command_bad_input_exit_2(lf, pipe, tmp_path, capsys):
    ckpt = tmp_path / "m.safetensors"
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(4, 32, 3, 3)}, str(ckpt))
    before = ckpt.read_bytes()
    assert cli.main(["merge", str(ckpt), str(lf.path), "-o", str(ckpt)]) == 2
    assert "output path is also an input" in capsys.readouterr().err
    assert cli.main(["merge", str(ckpt), f"{lf.path}:nan", "-o", str(tmp_path / "o.safetensors")]) == 2
    assert "strength is nan; expected a finite number" in capsys.readouterr().err
    assert cli.main(["merge", str(ckpt), str(lf.path), "-o", str(tmp_path / "o.safetensors")]) == 2
    assert "none of its" in capsys.readouterr().err
    assert ckpt.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.safetensors"]


def test_usage_errors_exit_1(capsys):
    assert cli.main([]) == 1
    assert cli.main(["frobnicate"]) == 1
    assert "invalid choice" in capsys.readouterr().err
    assert cli.main(["merge", "a.safetensors", "b.safetensors"]) == 1
    assert "-o/--output" in capsys.readouterr().err
    assert cli.main(["merge", "a", "b", "-o", "c", "--dtype", "fp8"]) == 1
    assert cli.main(["--help"]) == 0
    assert "merge" in capsys.readouterr().out


def test_unexpected_error_exit_3(monkeypatch, lf, capsys):
    import lokr_core.formats.io

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(lokr_core.formats.io, "load_lokr", boom)
    assert cli.main(["info", str(lf.path)]) == 3
    assert "unexpected error: RuntimeError: disk on fire" in capsys.readouterr().err
    assert cli.main(["--debug", "info", str(lf.path)]) == 3
    assert "Traceback" in capsys.readouterr().err


def test_convert_lycoris_to_peft_loads_in_peft(pipe, tmp_path, capsys):
    from peft import PeftModel

    # layouts one PEFT config can express (no decompose_both / Tucker mix)
    lf = FX.make_lycoris_file(tmp_path, ["split_w2_linear", "full_linear", "split_conv3x3", "split_w2_linear_rect"])
    out = tmp_path / "peft_adapter"
    assert cli.main(["convert", str(lf.path), str(out), "--to", "peft", "--against", str(pipe)]) == 0, capsys.readouterr().err
    merged = PeftModel.from_pretrained(models.tiny_unet(0), str(out)).merge_and_unload()
    for name, path in lf.paths.items():
        _close(merged.get_submodule(path).weight.detach(), lf.weights[name] + lf.reference[name], rtol=1e-4)
    assert cli.main(["convert", str(lf.path), str(tmp_path / "p2"), "--to", "peft"]) == 2  # tiny UNet is no SD family
    assert "--family" in capsys.readouterr().err and not (tmp_path / "p2").exists()


def test_convert_unet_and_text_encoder_file_writes_one_peft_adapter_per_part(tmp_path, capsys):
    from peft import PeftModel

    lu = FX.make_lycoris_file(tmp_path, ["split_w2_linear", "full_linear"], filename="u.safetensors")
    lt = FX.make_lycoris_file(tmp_path, ["te_split_q", "te_full_fc1"], filename="t.safetensors")
    both = tmp_path / "both.safetensors"
    save_file({**lu.state_dict, **lt.state_dict}, str(both))
    pipe = tmp_path / "pipe"
    for part, model, fname in (("unet", lu.model, "diffusion_pytorch_model"), ("text_encoder", lt.model, "model")):
        (pipe / part).mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(pipe / part / f"{fname}.safetensors"))
    out = tmp_path / "adapters"
    assert cli.main(["convert", str(both), str(out), "--to", "peft", "--against", str(pipe)]) == 0, capsys.readouterr().err
    for part, lf, base in (("unet", lu, models.tiny_unet(0)), ("text_encoder", lt, FX.build_model("clip"))):
        merged = PeftModel.from_pretrained(base, str(out / part)).merge_and_unload()
        for name, path in lf.paths.items():
            _close(merged.get_submodule(path).weight.detach(), lf.weights[name] + lf.reference[name], rtol=1e-4)


def test_convert_peft_to_lycoris_and_bad_input(tmp_path, capsys):
    from lokr_core.formats.io import load_lokr

    pd = FX.make_peft_dir(tmp_path)
    out = tmp_path / "conv.safetensors"
    assert cli.main(["convert", str(pd.path), str(out), "--to", "lycoris"]) == 0
    w = load_lokr(out)
    assert len(w.module_names) == len(pd.reference)
    deltas = {n: w.delta(n, pd.reference[p].shape) for n in w.module_names
              for p in pd.reference if n.endswith(p.replace("base_model.model.", "").replace(".", "_"))}
    assert len(deltas) == len(pd.reference)
    for n, d in deltas.items():
        p = next(p for p in pd.reference if n.endswith(p.replace("base_model.model.", "").replace(".", "_")))
        _close(d, pd.reference[p], rtol=1e-4)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    assert cli.main(["convert", str(bad), str(tmp_path / "x.safetensors"), "--to", "lycoris"]) == 2
    assert "bad.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_parse_lokr_arg_and_command_discovery():
    assert parse_lokr_arg("a.safetensors:0.5") == ("a.safetensors", 0.5)
    assert parse_lokr_arg("a.safetensors") == ("a.safetensors", 1.0)
    assert parse_lokr_arg(r"C:\loras\a.safetensors") == (r"C:\loras\a.safetensors", 1.0)
    assert parse_lokr_arg("C:/x.safetensors:-1") == ("C:/x.safetensors", -1.0)
    found = cli.load_commands()
    assert list(found) == list(cli.COMMANDS)
    assert all(callable(m.add_parser) and callable(m.run) for m in found.values())
    assert set(cli.COMMANDS) >= {"info", "merge", "convert", "demo", "extract", "resize"}
    with pytest.raises(ModuleNotFoundError):  # a listed command that does not exist is an error, not skipped
        cli.load_commands(["no_such_command"])


def test_python_m_subprocess(lf):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "lokr_core.commands.cli", "info", str(lf.path), "--json"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["module_count"] == len(lf.reference)


def test_parse_scale_rule_and_tqdm_progress(capsys):
    from lokr_core.commands import parse_scale_rule, tqdm_progress

    assert parse_scale_rule("0.25") == 0.25 and parse_scale_rule("metadata-dim") == "metadata-dim"
    with tqdm_progress("testing") as progress:
        for i in range(1, 6):
            progress(i, 5)
    assert "testing" in capsys.readouterr().err
    with tqdm_progress("silent", enabled=False) as progress:
        progress(1, 1)
    assert capsys.readouterr().err == ""


def test_info_scale_rule_option(lf, capsys):
    assert cli.main(["info", str(lf.path), "--json", "--scale-rule", "none"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scale_rule"] == "none" and set(data["scale_values"]) == {"1"}
