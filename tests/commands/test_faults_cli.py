"""Faults survived by the ``lokr`` commands, in real processes where the fault needs one.

- a ``lokr merge`` SIGKILLed in the middle of its write leaves its temp file (``lokr info --stale``
  lists it); the next run removes it and writes the right checkpoint (merged weights checked
  against lycoris-lora's ΔW);
- a file-size limit (RLIMIT_FSIZE: EFBIG) and a read-only output folder end with exit code 2, a
  message naming the path, and no temp file;
- too little free space (``shutil.disk_usage`` of the target folder) is refused before anything is
  written, with exit code 2, by every writing command (merge, convert, extract, resize).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lokr_core.base.tempfiles import TEMP_RE
from lokr_core.commands import cli
from tests.commands.test_extract_cli import _pair
from tests.ops.test_merge import _ldm_key_of, _ldm_unet_sd
from tests.support import lokr_fixtures as FX
from tests.support import models

ROOT = Path(__file__).resolve().parents[2]
FILLER = 48  # tensors of 4 MiB each: the checkpoint is about 192 MiB, so its write takes a while


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{lokr, small, big}: a LoKr file (lycoris layouts on the tiny UNet), the tiny UNet as an LDM
    checkpoint, and the same with FILLER big VAE-like tensors added."""
    d = tmp_path_factory.mktemp("faults_in")
    lf = FX.make_lycoris_file(d, list(FX.LAYOUTS))
    unet = _ldm_unet_sd(models.tiny_unet(0))
    save_file(unet, str(d / "small.safetensors"))
    big = dict(unet)
    big.update({f"first_stage_model.filler.{i}": torch.full((1 << 20,), float(i)) for i in range(FILLER)})
    save_file(big, str(d / "big.safetensors"))
    return {"lokr": lf, "small": d / "small.safetensors", "big": d / "big.safetensors", "unet": unet}


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lokr_core.commands.cli", *args]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def _run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(*args), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300, **kw)


def _temps(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if TEMP_RE.match(n)]


def _check_merged(out: Path, files: dict) -> None:
    got = load_file(str(out))
    lf, base = files["lokr"], files["unet"]
    assert len(got) == len(base) + FILLER
    for name in lf.reference:
        key = _ldm_key_of(base, lf, name)
        want = base[key].double() + lf.reference[name].double()
        assert (got[key].double() - want).abs().max() <= 1e-5 * want.abs().max()
    for i in range(FILLER):
        assert torch.equal(got[f"first_stage_model.filler.{i}"], torch.full((1 << 20,), float(i)))


def test_merge_killed_mid_write_then_run_again(files, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "merged.safetensors"
    args = ("merge", str(files["big"]), str(files["lokr"].path), "-o", str(out), "--device", "cpu", "--no-progress")
    proc = subprocess.Popen(_cmd(*args), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while True:  # wait until the temp file holds some data, then kill the writer
            names = _temps(out_dir)
            try:
                if names and os.path.getsize(out_dir / names[0]) > 0:
                    break
            except FileNotFoundError:  # renamed meanwhile: the merge finished (reported below)
                pass
            assert proc.poll() is None, f"the merge ended before it could be killed: {proc.stderr.read()}"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (temp,) = _temps(out_dir)
    assert not out.exists()
    assert TEMP_RE.match(temp).group("pid") == str(proc.pid) and temp.startswith(".merged.safetensors.lokr-")
    size = os.path.getsize(out_dir / temp)
    assert 0 < size < os.path.getsize(files["big"]) + 1024

    listed = _run("info", "--stale", str(out_dir))
    assert listed.returncode == 0, listed.stderr
    assert temp in listed.stdout and "stale" in listed.stdout and "--remove" in listed.stdout
    assert _temps(out_dir) == [temp]  # listing removes nothing

    again = _run(*args)
    assert again.returncode == 0, again.stderr
    assert sorted(os.listdir(out_dir)) == ["merged.safetensors"]  # the stale temp is gone
    _check_merged(out, files)


def test_info_stale_remove_removes_only_stale_temps(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".a.safetensors.lokr-{dead.pid}-0123abcd.tmp"
    live = tmp_path / f".a.safetensors.lokr-{os.getpid()}-0123abcd.tmp"  # this test process runs
    alike = tmp_path / f".a.safetensors.lokr-{dead.pid}-0123abcd.tmp~"
    for f in (stale, live, alike):
        f.write_bytes(b"partial")
    assert cli.main(["info", "--stale", str(tmp_path), "--json"]) == 0
    rows = {Path(r["path"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {stale.name, live.name} and rows[stale.name]["stale"] and not rows[live.name]["stale"]
    assert cli.main(["info", "--stale", str(tmp_path), "--remove"]) == 0
    out = capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, alike.name])
    assert f"{stale.name}  0.0 MiB  for 'a.safetensors'" in out and "(removed)" in out and "kept" in out
    assert cli.main(["info", "--stale", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli.main(["info"]) == 1 and cli.main(["info", "x.safetensors", "--stale", str(tmp_path)]) == 1


def _limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_merge_under_a_file_size_limit_exit_2_no_temp(files, tmp_path):
    out = tmp_path / "merged.safetensors"
    r = _run("merge", str(files["big"]), str(files["lokr"].path), "-o", str(out), "--device", "cpu", "--no-progress",
             preexec_fn=_limit_file_size(8 << 20))
    assert r.returncode == 2, r.stderr
    assert str(out) in r.stderr and "file too large" in r.stderr and "EFBIG" in r.stderr
    assert "unexpected" not in r.stderr and "nothing was written" in r.stderr
    assert os.listdir(tmp_path) == []


def _read_only_runner(folder: Path) -> tuple[list[str], str]:
    """(command prefix, how) making ``folder`` read-only for the command: chmod 0o555 for a normal
    user; as root, where chmod does not stop writes, a read-only bind mount in a private mount
    namespace (``unshare``); skip when neither is possible."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return [], "chmod"
    probe = subprocess.run(["unshare", "--mount", "--", "sh", "-c",
                            'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0"', str(folder)],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("running as root (chmod does not bite) and no read-only bind mount possible: "
                    + probe.stderr.strip()[:200])
    return ["unshare", "--mount", "--", "sh", "-c",
            'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"', str(folder)], "bind"


def test_merge_into_a_read_only_folder_exit_2(files, tmp_path):
    out_dir = tmp_path / "ro"
    out_dir.mkdir()
    out = out_dir / "merged.safetensors"
    prefix, how = _read_only_runner(out_dir)
    try:
        r = subprocess.run(prefix + _cmd("merge", str(files["small"]), str(files["lokr"].path), "-o", str(out),
                                         "--device", "cpu", "--no-progress"),
                           cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    finally:
        out_dir.chmod(0o755)
    assert r.returncode == 2, r.stderr
    want = "read-only file system (EROFS)" if how == "bind" else "permission denied (EACCES)"
    assert str(out) in r.stderr and want in r.stderr and "unexpected" not in r.stderr
    assert os.listdir(out_dir) == []


def test_every_writing_command_refuses_without_room(files, tmp_path, monkeypatch, capsys):
    usage = namedtuple("usage", "total used free")
    asked = []

    def full(folder):
        asked.append(Path(folder))
        return usage(1 << 40, (1 << 40) - 64, 64)
    monkeypatch.setattr(shutil, "disk_usage", full)
    pb, pt, _ = _pair(tmp_path)
    lokr = str(files["lokr"].path)
    runs = {
        "merge": ["merge", str(files["big"]), lokr, "-o", str(tmp_path / "m.safetensors"), "--device", "cpu",
                  "--no-progress"],
        "convert": ["convert", lokr, str(tmp_path / "c.safetensors"), "--to", "lycoris"],
        "extract": ["extract", str(pb), str(pt), "-o", str(tmp_path / "e.safetensors"), "--rank", "2",
                    "--save-dtype", "fp32", "--no-progress"],
        "resize": ["resize", lokr, "-o", str(tmp_path / "r.safetensors"), "--rank", "1", "--no-progress"],
    }
    for name, argv in runs.items():
        asked.clear()
        assert cli.main(argv) == 2, name
        err = capsys.readouterr().err
        out = argv[argv.index("-o") + 1] if "-o" in argv else argv[2]
        assert f"file {out!r}: not enough free space" in err and "has 64 bytes (0.0 MiB) free" in err, (name, err)
        assert asked and all(p == tmp_path for p in asked), (name, asked)
    assert sorted(os.listdir(tmp_path)) == ["base.safetensors", "tuned.safetensors"]


def test_merge_estimate_is_the_output_size(files, tmp_path, monkeypatch, capsys):
    """The bytes the refusal names are the bytes the merge then writes."""
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(1 << 40, 0, 10))
    out = tmp_path / "m.safetensors"
    argv = ["merge", str(files["small"]), str(files["lokr"].path), "-o", str(out), "--device", "cpu", "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    needed = int(err.split("needs about ")[1].split(" bytes")[0])
    monkeypatch.undo()
    assert cli.main(argv) == 0
    assert os.path.getsize(out) == needed


def test_diffusers_folder_merge_uses_the_same_temp_rules(files, tmp_path, monkeypatch, capsys):
    pipe = tmp_path / "pipe"
    (pipe / "unet").mkdir(parents=True)
    unet = models.tiny_unet(0)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()},
              str(pipe / "unet" / "diffusion_pytorch_model.safetensors"))
    (pipe / "model_index.json").write_text("{}")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".merged.lokr-{dead.pid}-0123abcd.tmp"
    (stale / "unet").mkdir(parents=True)
    (stale / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"partial")
    argv = ["merge", str(pipe), str(files["lokr"].path), "-o", str(tmp_path / "merged"), "--device", "cpu",
            "--no-progress"]
    usage = namedtuple("usage", "total used free")
    with monkeypatch.context() as m:
        m.setattr(shutil, "disk_usage", lambda folder: usage(1 << 40, 0, 100))
        assert cli.main(argv) == 2
        assert "merged': not enough free space" in capsys.readouterr().err
    assert not stale.exists()  # removed by the refused write already: same target
    assert sorted(os.listdir(tmp_path)) == ["pipe"]
    assert cli.main(argv) == 0
    assert sorted(os.listdir(tmp_path)) == ["merged", "pipe"]
    assert sorted(os.listdir(tmp_path / "merged")) == ["model_index.json", "unet"]
