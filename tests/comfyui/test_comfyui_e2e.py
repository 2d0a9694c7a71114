"""End to end in a real ComfyUI: ``main.py --cpu`` with this pack symlinked into custom_nodes/.

A throw-away ``--base-directory`` holds the tiny SD1.5 checkpoint (as the workflows' checkpoint
name) and a LoKr fixture (as ``example_lokr.safetensors``). The test checks ``/object_info`` (every
node, category ``loaders/LoKr``, tooltips), then posts the API twin of every example workflow
(``example_workflows/api/*.json``: loader + sampling, block weights + info, stack, merge, power loader), each cut
to 1 step at 64x64, waits for it and checks the saved image, the info text and the merged checkpoint.
Run: ``COMFYUI_PATH=$BENCH/ComfyUI $BENCH/venv/bin/python -m pytest -q tests/comfyui/test_comfyui_e2e.py``.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import comfy_env
from tests.support import workflows

NODES = ["LoKrLoader", "LoKrLoaderModelOnly", "LoKrBlockWeights", "LoKrStack", "ApplyLoKrStack", "LoKrInfo",
         "LoKrMergeCheckpoint", "LoKrPowerLoader", "LoKrFromPrompt", "LoKrHook"]


def fixture_lokr(path: Path, alpha: float = 4.0) -> None:
    """A small kohya-named LoKr for the tiny SD1.5 checkpoint: IN01, MID, OUT02 attention and one CLIP layer."""
    g = torch.Generator().manual_seed(0)
    sd = {}

    def split(name, out_l, in_m, out_k, in_n, r=4):
        sd[f"{name}.lokr_w1"] = torch.randn(out_l, in_m, generator=g) * 0.05
        sd[f"{name}.lokr_w2_a"] = torch.randn(out_k, r, generator=g) * 0.05
        sd[f"{name}.lokr_w2_b"] = torch.randn(r, in_n, generator=g) * 0.05
        sd[f"{name}.alpha"] = torch.tensor(alpha)

    split("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q", 8, 8, 40, 40)
    split("lora_unet_middle_block_1_transformer_blocks_0_attn1_to_q", 8, 8, 80, 80)
    split("lora_unet_output_blocks_2_1_transformer_blocks_0_attn1_to_q", 8, 8, 40, 40)
    name = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    sd[f"{name}.lokr_w1"] = torch.randn(24, 24, generator=g) * 0.05
    sd[f"{name}.lokr_w2"] = torch.randn(32, 32, generator=g) * 0.05
    save_file(sd, str(path), metadata={"ss_network_module": "lycoris.kohya", "ss_network_dim": "4"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _post(url: str, data: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(data).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise AssertionError(f"POST {url}: {e.code} {e.read()[:2000]!r}") from None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    comfy = Path(comfy_env.comfy_path())
    base = tmp_path_factory.mktemp("comfy_base")
    for d in ("custom_nodes", "models/checkpoints", "models/loras", "output", "input", "temp", "user"):
        (base / d).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / "comfyui-lokr").symlink_to(comfy_env.ROOT, target_is_directory=True)
    ckpt = comfy_env.cached_tiny_sd15(base)
    (base / "models" / "checkpoints" / workflows.CKPT).symlink_to(ckpt)
    fixture_lokr(base / "models" / "loras" / workflows.LOKR)
    port = _free_port()
    py = os.environ.get("COMFYUI_PYTHON") or str(comfy.parent / "venv" / "bin" / "python")
    py = py if os.path.exists(py) else sys.executable
    log = open(base / "server.log", "w")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen([py, "main.py", *comfy_env.main_args(), "--fp32-text-enc", "--listen", "127.0.0.1", "--port", str(port),
                             "--base-directory", str(base)], cwd=str(comfy), stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise AssertionError("ComfyUI exited:\n" + (base / "server.log").read_text()[-4000:])
            try:
                _get(url + "/system_stats", 2)
                break
            except Exception:
                time.sleep(0.5)
        else:
            raise AssertionError("ComfyUI did not start:\n" + (base / "server.log").read_text()[-4000:])
        yield dict(url=url, base=base, log=base / "server.log")
    finally:
        comfy_env.stop_process(proc, 30)
        log.close()


def test_object_info_lists_nodes_with_tooltips(server):
    info = _get(server["url"] + "/object_info")
    for n in NODES:
        assert n in info, (n, server["log"].read_text()[-3000:])
        d = info[n]
        assert d["category"] == "loaders/LoKr" and d["description"]
        for group in ("required", "optional"):
            for name, spec in (d["input"].get(group) or {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), (n, name)
    assert workflows.LOKR in info["LoKrLoader"]["input"]["required"]["lokr_name"][0]


def _run(server, name: str, prompt: dict | None = None) -> dict:
    prompt = prompt or json.loads((workflows.OUT / "api" / f"{name}.json").read_text())
    for node in prompt.values():
        inp = node["inputs"]
        if node["class_type"] == "KSampler":
            inp["steps"] = 1
        if node["class_type"] == "EmptyLatentImage":
            inp["width"] = inp["height"] = 64
    return _outputs(prompt, _queue(server, prompt, name))


def _outputs(prompt: dict, h: dict) -> dict:
    return {prompt[k]["class_type"]: v for k, v in h["outputs"].items()}


def _queue(server, prompt: dict, name: str) -> dict:
    """Queue ``prompt``, wait for it; its history entry (outputs, status with messages)."""
    pid = _post(server["url"] + "/prompt", {"prompt": prompt, "client_id": "lokr-e2e"})["prompt_id"]
    for _ in range(1200):
        hist = _get(server["url"] + f"/history/{pid}")
        if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"{name}: prompt did not finish\n" + server["log"].read_text()[-4000:])
    h = hist[pid]
    assert h["status"]["status_str"] == "success", (name, h["status"], server["log"].read_text()[-4000:])
    return h


@pytest.mark.parametrize("name", [n for n in workflows.graphs() if n != "lokr_merge_checkpoint"])
def test_sampling_workflows_save_an_image(server, name):
    outputs = _run(server, name)
    images = outputs["SaveImage"]["images"]
    assert images and (server["base"] / "output" / images[0]["subfolder"] / images[0]["filename"]).stat().st_size > 0
    if name == "lokr_block_weights":
        text = outputs["LoKrInfo"]["text"][0]
        assert workflows.LOKR in text and "Against the connected model: 4/4 modules match" in text
        report = outputs["LoKrBlockWeights"]["lokr_report"][0]
        assert report["matched"] == 4 and report["block_weights"]["MID"] == 0
    if name == "lokr_power_loader":  # the first row is on, the second off (its file is not there)
        rows = outputs["LoKrPowerLoader"]["lokr_power"][0]["rows"]
        assert [(r["kind"], r["file"]) for r in rows] == [("lokr", workflows.LOKR), ("off", workflows.OFF_FILE)]
        assert rows[0]["matched"] == 4 and len(outputs["LoKrPowerLoader"]["lokr_report"]) == 1
    if name == "lokr_from_prompt":
        report = outputs["LoKrFromPrompt"]["lokr_report"]
        assert [r["file"] for r in report] == [workflows.LOKR] and report[0]["matched"] == 4


def test_power_loader_rows_given_as_a_list_value(server):
    """API format: the rows list itself, wrapped as ComfyUI wants list values, instead of its JSON text."""
    prompt = json.loads((workflows.OUT / "api" / "lokr_power_loader.json").read_text())
    node = next(n for n in prompt.values() if n["class_type"] == "LoKrPowerLoader")
    node["inputs"]["rows"] = {"__value__": json.loads(node["inputs"]["rows"])}
    outputs = _run(server, "lokr_power_loader", prompt)
    rows = outputs["LoKrPowerLoader"]["lokr_power"][0]["rows"]
    assert [r["kind"] for r in rows] == ["lokr", "off"] and outputs["SaveImage"]["images"]


def test_merge_workflow_writes_checkpoint(server):
    outputs = _run(server, "lokr_merge_checkpoint")
    path = outputs["LoKrMergeCheckpoint"]["text"][0]
    assert Path(path).is_file() and str(server["base"] / "output") in path
    with safe_open(path, "pt") as fh:
        meta = fh.metadata()
        keys = list(fh.keys())
        w = fh.get_tensor("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight")
    assert json.loads(meta["lokr_merged"])[0]["file"] == workflows.LOKR
    assert w.dtype == torch.float16
    assert any(k.startswith("cond_stage_model.") for k in keys) and any(k.startswith("first_stage_model.") for k in keys)
    with safe_open(comfy_env.cached_tiny_sd15(server["base"]), "pt") as fh:
        base = fh.get_tensor("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight")
        untouched = fh.get_tensor("model.diffusion_model.input_blocks.1.1.proj_in.weight")
    assert not torch.equal(w, base)
    with safe_open(path, "pt") as fh:
        assert torch.equal(fh.get_tensor("model.diffusion_model.input_blocks.1.1.proj_in.weight"), untouched)


def _cached(h: dict) -> set[str]:
    """Ids of the nodes ComfyUI took from its cache in this run (the execution_cached message)."""
    return {n for event, data in h["status"]["messages"] if event == "execution_cached" for n in data["nodes"]}


def test_rewritten_file_runs_the_nodes_again(server):
    """IS_CHANGED: queued twice unchanged, the LoKr nodes come from ComfyUI's cache; after the file is
    rewritten under the same name (same size, new alpha), they run again and read the new file."""
    name = "rerun_lokr.safetensors"
    path = server["base"] / "models" / "loras" / name
    fixture_lokr(path, alpha=4.0)
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": workflows.CKPT}},
        "2": {"class_type": "LoKrLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lokr_name": name,
                                                     "strength_model": 1.0, "strength_clip": 1.0,
                                                     "scale_rule": "file"}},
        "3": {"class_type": "LoKrInfo", "inputs": {"lokr_name": name, "scale_rule": "file",
                                                   "model": ["2", 0], "clip": ["2", 1]}},
    }
    first = _queue(server, prompt, "rerun 1")
    again = _queue(server, prompt, "rerun 2")
    assert {"1", "2", "3"} <= _cached(again)
    size = path.stat().st_size
    fixture_lokr(path, alpha=2.0)
    assert path.stat().st_size == size
    third = _queue(server, prompt, "rerun 3")
    assert "1" in _cached(third) and not {"2", "3"} & _cached(third), third["status"]["messages"]
    text1, text3 = first["outputs"]["3"]["text"][0], third["outputs"]["3"]["text"][0]
    assert text1 != text3 and "Against the connected model" in text3
