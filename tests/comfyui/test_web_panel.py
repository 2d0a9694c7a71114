"""The web extension in a real ComfyUI + comfyui-frontend-package, driven by headless Chromium.

Starts ``main.py --cpu`` from ``COMFYUI_PATH`` with a throw-away ``--base-directory`` (this repo
symlinked into its custom_nodes/ as ``comfyui_lokr``, a fixture LoKr in models/loras, a dummy SDXL
checkpoint name in models/checkpoints that is never loaded), opens the page in Chromium over the
DevTools protocol (aiohttp websocket, no extra package), adds a checkpoint loader and a LoKr Loader,
selects the fixture file, and checks the panel's text in the DOM: family, modules, layouts, scale,
trigger words, the family-mismatch badge, and the run report rendered by ``onExecuted``. Then the
block-weight editor, when the pack has a block-weights node. Screenshots go to ``docs/img/``
(``LOKR_SCREENSHOTS=0`` turns that off).

Skips cleanly without ``COMFYUI_PATH`` or a Chromium binary (``CHROMIUM`` or ``chromium`` on PATH).
``COMFYUI_PYTHON`` picks the interpreter for ComfyUI (default: ``<COMFYUI_PATH>/../venv/bin/python``).
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from comfy_env import stop_process  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
IMG = ROOT / "docs" / "img"
FIXTURE = "lokr_sd15_fixture.safetensors"
CKPT = "sd_xl_base_1.0.safetensors"
TINY_CKPT_CACHE = "lokr_tiny_sd15_v1.safetensors"
TINY_CKPT = "tiny_v1-5_test.safetensors"
TINY_FIXTURE = "lokr_tiny_fixture.safetensors"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--hide-scrollbars", "--mute-audio"]
MAX_PNG = 300_000


def _chromium() -> str | None:
    for cand in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def _comfy_python(comfy: Path) -> str:
    if os.environ.get("COMFYUI_PYTHON"):
        return os.environ["COMFYUI_PYTHON"]
    for cand in (comfy.parent / "venv" / "bin" / "python", comfy / "venv" / "bin" / "python",
                 comfy / ".venv" / "bin" / "python"):
        if cand.exists():
            return str(cand)
    return sys.executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_fixture_lokr(path: Path) -> None:
    """A small SD1.5-named LoKr: attn1 q/k/v/out and attn2 k/v of six UNet blocks (split W2, factor 8,
    rank 4, alpha 4) and two text-encoder layers (full W2), with kohya training metadata (tags, dim, args)."""
    g = torch.Generator().manual_seed(0)
    tensors: dict[str, torch.Tensor] = {}
    blocks = {"down_blocks_0_attentions_0": 320, "down_blocks_1_attentions_0": 640,
              "down_blocks_2_attentions_1": 1280, "mid_block_attentions_0": 1280,
              "up_blocks_1_attentions_2": 1280, "up_blocks_3_attentions_0": 320}
    for block, dim in blocks.items():
        for proj in ("to_q", "to_k", "to_v", "to_out_0"):
            name = f"lora_unet_{block}_transformer_blocks_0_attn1_{proj}"
            tensors[f"{name}.lokr_w1"] = torch.randn(8, 8, generator=g) * 0.01
            tensors[f"{name}.lokr_w2_a"] = torch.randn(dim // 8, 4, generator=g) * 0.01
            tensors[f"{name}.lokr_w2_b"] = torch.randn(4, dim // 8, generator=g) * 0.01
            tensors[f"{name}.alpha"] = torch.tensor(4.0)
        for proj in ("to_k", "to_v"):  # cross-attention reads CLIP-L's 768 channels: SD1
            name = f"lora_unet_{block}_transformer_blocks_0_attn2_{proj}"
            tensors[f"{name}.lokr_w1"] = torch.randn(8, 8, generator=g) * 0.01
            tensors[f"{name}.lokr_w2_a"] = torch.randn(dim // 8, 4, generator=g) * 0.01
            tensors[f"{name}.lokr_w2_b"] = torch.randn(4, 768 // 8, generator=g) * 0.01
            tensors[f"{name}.alpha"] = torch.tensor(4.0)
    for layer in (0, 11):
        for proj in ("q_proj", "v_proj"):
            name = f"lora_te_text_model_encoder_layers_{layer}_self_attn_{proj}"
            tensors[f"{name}.lokr_w1"] = torch.randn(8, 8, generator=g) * 0.01
            tensors[f"{name}.lokr_w2"] = torch.randn(96, 96, generator=g) * 0.01
            tensors[f"{name}.alpha"] = torch.tensor(4.0)
    metadata = {
        "ss_network_module": "lycoris.kohya", "ss_network_dim": "4", "ss_network_alpha": "4",
        "ss_network_args": json.dumps({"algo": "lokr", "factor": "8"}),
        "ss_sd_model_name": "v1-5-pruned-emaonly.safetensors", "ss_output_name": "ohwx_corgi",
        "ss_tag_frequency": json.dumps({"10_ohwx corgi": {"ohwx corgi": 24, "grass": 9, "sitting": 7,
                                                          "outdoors": 5, "red collar": 3}}),
    }
    save_file(tensors, str(path), metadata=metadata)


def write_tiny_fixture_lokr(path: Path) -> None:
    """A LoKr for comfy_env's tiny SD1.5 checkpoint (2 levels: 320 and 640 channels): four modules
    it has and one it lacks (a third-level block), so a real run reports 4 / 5 matched."""
    g = torch.Generator().manual_seed(1)
    tensors: dict[str, torch.Tensor] = {}
    for block, dim in {"down_blocks_0_attentions_0": 320, "down_blocks_1_attentions_0": 640,
                       "mid_block_attentions_0": 640, "down_blocks_2_attentions_0": 1280}.items():
        name = f"lora_unet_{block}_transformer_blocks_0_attn1_to_q"
        tensors[f"{name}.lokr_w1"] = torch.randn(8, 8, generator=g) * 0.01
        tensors[f"{name}.lokr_w2_a"] = torch.randn(dim // 8, 4, generator=g) * 0.01
        tensors[f"{name}.lokr_w2_b"] = torch.randn(4, dim // 8, generator=g) * 0.01
        tensors[f"{name}.alpha"] = torch.tensor(4.0)
    name = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    tensors[f"{name}.lokr_w1"] = torch.randn(8, 8, generator=g) * 0.01
    tensors[f"{name}.lokr_w2"] = torch.randn(96, 96, generator=g) * 0.01
    save_file(tensors, str(path))


# ------------------------------------------------------------------------------------ DevTools
class CDP:
    """Minimal Chrome DevTools Protocol client over one page's websocket (aiohttp)."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.console: list[str] = []

    async def call(self, method: str, **params):
        msg_id = next(self.ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), 60)
            if msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif msg.get("method") == "Runtime.exceptionThrown":
                self.console.append("EXCEPTION " + json.dumps(msg["params"]["exceptionDetails"])[:500])
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expression: str):
        """Evaluate ``expression`` (awaiting promises) and return its JSON value."""
        res = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error: {json.dumps(res['exceptionDetails'])[:800]}")
        return res.get("result", {}).get("value")

    async def wait_js(self, expression: str, timeout: float = 60.0, what: str = ""):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                value = await self.js(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            await asyncio.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what or expression}; console: {self.console[-10:]}")

    async def screenshot(self, path: Path, clip: dict) -> int:
        shot = await self.call("Page.captureScreenshot", format="png", clip={**clip, "scale": 1},
                               captureBeyondViewport=False)
        data = base64.b64decode(shot["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".png.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return len(data)


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    """(base URL, server log path) of a ComfyUI started for this module; stopped afterwards."""
    path = os.environ.get("COMFYUI_PATH")
    if not path or not (Path(path) / "main.py").exists():
        pytest.skip("COMFYUI_PATH (a ComfyUI checkout with main.py) is not set")
    if _chromium() is None:
        pytest.skip("no chromium binary (set CHROMIUM or install Debian's chromium)")
    comfy_dir = Path(path)
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    os.symlink(ROOT, base / "custom_nodes" / "comfyui_lokr")
    (base / "models" / "loras").mkdir(parents=True)
    (base / "models" / "checkpoints").mkdir(parents=True)
    write_fixture_lokr(base / "models" / "loras" / FIXTURE)
    (base / "models" / "checkpoints" / CKPT).write_bytes(b"")  # only its name is used
    tiny = comfy_dir.parent / "ref" / TINY_CKPT_CACHE  # made by tests/comfyui/comfy_env.py, when present
    if tiny.is_file():
        os.symlink(tiny, base / "models" / "checkpoints" / TINY_CKPT)
        write_tiny_fixture_lokr(base / "models" / "loras" / TINY_FIXTURE)
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True, "Comfy.Validation.Workflows": False,
                                    "Comfy.Sidebar.Location": "left", "Comfy.UseNewMenu": "Top",
                                    "Comfy.Minimap.Visible": False}))
    port = _free_port()
    log = base / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [_comfy_python(comfy_dir), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
             "--base-directory", str(base), "--disable-auto-launch"],
            cwd=comfy_dir, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/object_info/LoKrLoader", timeout=5) as r:
                    if json.loads(r.read()).get("LoKrLoader"):
                        break
            except OSError:
                pass
            if time.monotonic() > end:
                pytest.fail(f"ComfyUI did not list LoKrLoader in 240 s:\n{log.read_text()[-3000:]}")
            time.sleep(1.0)
        yield url, log
    finally:
        stop_process(proc, 20)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """(process, DevTools port) of a headless Chromium; stopped afterwards."""
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium binary")
    profile = tmp_path_factory.mktemp("chromium_profile")
    proc = subprocess.Popen([exe, *FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}",
                             "--window-size=1400,1000", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > end:
                pytest.fail("chromium did not start its DevTools server")
            time.sleep(0.2)
        yield proc, int(port_file.read_text().split()[0])
    finally:
        stop_process(proc, 10)


async def _page(devtools_port: int):
    import aiohttp

    session = aiohttp.ClientSession()
    async with session.get(f"http://127.0.0.1:{devtools_port}/json/list") as r:
        targets = await r.json()
    page = next(t for t in targets if t.get("type") == "page")
    ws = await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=64 * 2**20)
    cdp = CDP(ws)
    await cdp.call("Runtime.enable")
    await cdp.call("Page.enable")
    await cdp.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False)
    return session, cdp


def _save(name: str) -> Path | None:
    if os.environ.get("LOKR_SCREENSHOTS", "1") == "0":
        return None
    return IMG / name


def _clip(rect: dict, pad: int = 24) -> dict:
    return {"x": max(0, rect["x"] - pad), "y": max(0, rect["y"] - pad),
            "width": rect["width"] + 2 * pad, "height": rect["height"] + 2 * pad}


# JS run in the page: place nodes at fixed spots at zoom 1, return the screen rectangle around them
SETUP_LOADER = """
(async () => {
  const app = window.comfyAPI.app.app;
  app.graph.clear();
  const ckpt = LiteGraph.createNode("CheckpointLoaderSimple");
  ckpt.pos = [30, 150];
  app.graph.add(ckpt);
  const w = ckpt.widgets.find((x) => x.name === "ckpt_name");
  w.value = %(ckpt)s;
  const lokr = LiteGraph.createNode("LoKrLoader");
  lokr.pos = [400, 150];
  app.graph.add(lokr);
  ckpt.connect(0, lokr, 0);
  ckpt.connect(1, lokr, 1);
  const fw = lokr.widgets.find((x) => x.name === "lokr_name");
  fw.value = %(file)s;
  fw.callback?.(fw.value);
  lokr.setSize([380, lokr.size[1]]);
  app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0];
  app.graph.setDirtyCanvas(true, true);
  window.__lokr = lokr.id;
  return true;
})()
"""

PANEL_TEXT = """
(() => {
  const p = document.querySelector('.lokr-panel');
  return p && /Modules/.test(p.textContent) && /mismatch/.test(p.textContent) ? p.innerText : null;
})()
"""

NODE_RECT = """
(() => {
  const app = window.comfyAPI.app.app;
  const ids = %s;
  const nodes = ids.map((id) => app.graph.getNodeById(id));
  const canvas = app.canvas.canvas.getBoundingClientRect();
  const s = app.canvas.ds.scale, off = app.canvas.ds.offset;
  let x0 = 1e9, y0 = 1e9, x1 = -1e9, y1 = -1e9;
  for (const n of nodes) {
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    x0 = Math.min(x0, (n.pos[0] + off[0]) * s); y0 = Math.min(y0, (n.pos[1] - title + off[1]) * s);
    x1 = Math.max(x1, (n.pos[0] + n.size[0] + off[0]) * s); y1 = Math.max(y1, (n.pos[1] + n.size[1] + off[1]) * s);
  }
  return {x: canvas.left + x0, y: canvas.top + y0, width: x1 - x0, height: y1 - y0};
})()
"""


def test_loader_panel_and_block_editor(comfy, browser):
    url, log = comfy
    _proc, devtools = browser

    async def scenario():
        session, cdp = await _page(devtools)
        try:
            await cdp.call("Page.navigate", url=url + "/")
            await cdp.wait_js("!!(window.comfyAPI?.app?.app?.graph && window.LiteGraph"
                              " && LiteGraph.registered_node_types['LoKrLoader'])", 120, "the ComfyUI app")
            await asyncio.sleep(1.5)  # let the first-load dialogs / menus settle
            await cdp.js("document.querySelectorAll('.p-dialog-mask').forEach((d) => d.remove());"
                         "const st = document.createElement('style'); st.textContent ="
                         " '.minimap-main-container{display:none!important}'; document.head.appendChild(st); true")
            await cdp.js(SETUP_LOADER % {"ckpt": json.dumps(CKPT), "file": json.dumps(FIXTURE)})
            text = await cdp.wait_js(PANEL_TEXT, 60, "the LoKr panel with the file summary")
            # the run report the node returns, fed through the node's onExecuted
            await cdp.js("""(() => { const app = window.comfyAPI.app.app;
                const n = app.graph.getNodeById(window.__lokr);
                n.onExecuted({lokr_report: [{matched: 30, total: 32, family: 'sd1',
                    unmatched: {lora_te_text_model_encoder_layers_11_self_attn_q_proj: [],
                                lora_te_text_model_encoder_layers_11_self_attn_v_proj: []},
                    shape_mismatch: {}}]});
                app.graph.setDirtyCanvas(true, true); return true; })()""")
            report = await cdp.wait_js("document.querySelector('.lokr-panel [data-lokr=report]')?.innerText", 10,
                                       "the run report in the panel")
            tags = await cdp.js("[...document.querySelectorAll('.lokr-panel .lokr-tag')].map((t) => t.textContent)")
            await asyncio.sleep(1.0)
            rect = await cdp.js(NODE_RECT % "[window.__lokr - 1, window.__lokr]")
            shots = {}
            if (out := _save("lokr_loader_panel.png")) is not None:
                shots["loader"] = (out, await cdp.screenshot(out, _clip(rect)))
            editor = None
            block_types = await cdp.js("Object.keys(LiteGraph.registered_node_types).filter((t) => "
                                       "/^LoKr.*Block/i.test(t))")
            if block_types:
                editor = await block_editor(cdp, block_types[0], shots)
            reload = await reload_workflow(cdp, bool(block_types))
            return text, report, tags, editor, shots, reload, cdp.console
        finally:
            await cdp.ws.close()
            await session.close()

    text, report, tags, editor, shots, reload, console = asyncio.run(scenario())
    assert "SD 1.x" in text or "SD 2.x" in text, text
    assert "Modules" in text and "40" in text, text
    assert "Layouts" in text and "Scale" in text, text
    assert "family mismatch" in text, text  # LoKr for SD1, checkpoint named like SDXL
    assert "ohwx corgi" in tags and "grass" in tags, tags
    assert "Matched" in report and "30 / 32" in report and "Unmatched" in report, report
    errors = [c for c in console if "comfyui-lokr" in c or "EXCEPTION" in c and "lokr" in c]
    assert not errors, errors
    for name, (path, size) in shots.items():
        assert 0 < size < MAX_PNG, (name, path, size)
    # saved and re-opened: the panels are not serialized (widget values unchanged) and come back
    assert reload["widgets_values"] == [FIXTURE, 1, 1, "file", "interpolate"], reload
    assert "Modules" in reload["panel"], reload
    if editor is not None:
        assert reload["sliders"][:5] == ["1", "0", "0", "0", "1.25"], reload
    if editor is not None:
        rows, vector, preset = editor
        assert rows[:3] == ["BASE", "IN01", "IN02"], rows
        # SD-OUTALL with MID set to 0.5 and IN05 to 1.25 by the sliders; the node now uses the text
        assert vector == "1,0,0,0,1.25,0,0,0.5,1,1,1,1,1,1,1,1,1", vector
        assert preset == "custom", preset


async def block_editor(cdp: CDP, node_type: str, shots: dict):
    """Add the block-weights node with the fixture file, move two sliders; return (ids, vector, preset)."""
    await cdp.js(f"""(() => {{ const app = window.comfyAPI.app.app;
        const n = LiteGraph.createNode({json.dumps(node_type)}); n.pos = [830, 150]; app.graph.add(n);
        const fw = n.widgets.find((x) => x.name === "lokr_name");
        if (fw) {{ fw.value = {json.dumps(FIXTURE)}; fw.callback?.(fw.value); }}
        const pw = n.widgets.find((x) => x.name === "preset");
        if (pw) {{ pw.value = "SD-OUTALL"; pw.callback?.(pw.value); }}
        n.setSize([440, n.size[1]]); window.__lokrBW = n.id; app.graph.setDirtyCanvas(true, true); return true; }})()""")
    await cdp.wait_js("document.querySelectorAll('.lokr-bw .lokr-bw-row').length >= 17", 20, "the block editor")
    await cdp.wait_js("(() => { const s = document.querySelectorAll('.lokr-bw input[type=range]');"
                      " return s.length === 17 && s[1].value === '0' && s[16].value === '1'; })()", 20,
                      "the SD-OUTALL preset on the sliders")
    result = await cdp.js("""(() => { const app = window.comfyAPI.app.app;
        const n = app.graph.getNodeById(window.__lokrBW);
        const s = document.querySelectorAll('.lokr-bw input[type=range]');
        s[7].value = '0.5'; s[7].dispatchEvent(new Event('input'));
        s[4].value = '1.25'; s[4].dispatchEvent(new Event('input'));
        const tw = n.widgets.find((x) => x.name === 'block_vector');
        const pw = n.widgets.find((x) => x.name === 'preset');
        return [tw.value, pw ? pw.value : null]; })()""")
    ids = await cdp.js("[...document.querySelectorAll('.lokr-bw .lokr-bw-id')].map((e) => e.textContent)")
    await cdp.wait_js("document.querySelectorAll('.lokr-bw')[0].closest('.lokr-host') && "
                      "/Modules/.test(document.querySelectorAll('.lokr-panel')[1]?.textContent ?? '')", 20,
                      "the panel on the block-weights node")
    await asyncio.sleep(1.0)
    rect = await cdp.js(NODE_RECT % "[window.__lokrBW]")
    if (out := _save("lokr_block_weights.png")) is not None:
        shots["block_weights"] = (out, await cdp.screenshot(out, _clip(rect)))
    return ids, result[0], result[1]


async def reload_workflow(cdp: CDP, with_editor: bool) -> dict:
    """Serialize the graph, load it again (app.loadGraphData), and read the panels back."""
    saved = await cdp.js("""(async () => { const app = window.comfyAPI.app.app;
        const wf = JSON.parse(JSON.stringify(app.graph.serialize()));
        await app.loadGraphData(wf);
        const node = wf.nodes.find((n) => n.type === 'LoKrLoader');
        return node.widgets_values; })()""")
    panel = await cdp.wait_js("[...document.querySelectorAll('.lokr-panel')].map((p) => p.innerText)"
                              ".find((t) => /Modules/.test(t))", 30, "the panel after reloading the workflow")
    sliders = []
    if with_editor:
        sliders = await cdp.wait_js("(() => { const s = [...document.querySelectorAll('.lokr-bw input[type=range]')];"
                                    " return s.length === 17 && s[4].value === '1.25' ? s.map((x) => x.value) : null; })()",
                                    30, "the block editor after reloading the workflow")
    return {"widgets_values": saved, "panel": panel, "sliders": sliders}


RUN_GRAPH = """
(async () => {
  const app = window.comfyAPI.app.app;
  app.graph.clear();
  const ckpt = LiteGraph.createNode("CheckpointLoaderSimple");
  ckpt.pos = [30, 150]; app.graph.add(ckpt);
  ckpt.widgets.find((x) => x.name === "ckpt_name").value = %(ckpt)s;
  const lokr = LiteGraph.createNode("LoKrLoader");
  lokr.pos = [400, 150]; app.graph.add(lokr);
  ckpt.connect(0, lokr, 0); ckpt.connect(1, lokr, 1);
  const fw = lokr.widgets.find((x) => x.name === "lokr_name");
  fw.value = %(file)s; fw.callback?.(fw.value);
  const info = LiteGraph.createNode("LoKrInfo");
  info.pos = [820, 150]; app.graph.add(info);
  info.widgets.find((x) => x.name === "lokr_name").value = %(file)s;
  lokr.connect(0, info, info.inputs.findIndex((i) => i.name === "model"));
  lokr.connect(1, info, info.inputs.findIndex((i) => i.name === "clip"));
  window.__lokrRun = lokr.id;
  await app.queuePrompt(0, 1);
  return true;
})()
"""


def test_run_report_from_a_real_run(comfy, browser):
    """Queue Checkpoint -> LoKr Loader -> LoKr Info on comfy_env's tiny SD1.5 checkpoint; the loader's
    panel shows the report the node returned (ui.lokr_report through the 'executed' event)."""
    url, log = comfy
    _proc, devtools = browser
    if not (Path(os.environ["COMFYUI_PATH"]).parent / "ref" / TINY_CKPT_CACHE).is_file():
        pytest.skip("no cached tiny SD1.5 checkpoint (tests/comfyui/comfy_env.py makes it)")

    async def scenario():
        session, cdp = await _page(devtools)
        try:
            await cdp.call("Page.navigate", url=url + "/")
            await cdp.wait_js("!!(window.comfyAPI?.app?.app?.graph && window.LiteGraph"
                              " && LiteGraph.registered_node_types['LoKrLoader'])", 120, "the ComfyUI app")
            await asyncio.sleep(1.0)
            await cdp.js(RUN_GRAPH % {"ckpt": json.dumps(TINY_CKPT), "file": json.dumps(TINY_FIXTURE)})
            return await cdp.wait_js(
                "(() => { const app = window.comfyAPI.app.app; const n = app.graph.getNodeById(window.__lokrRun);"
                " const r = n?.lokrPanel?.element.querySelector('[data-lokr=report]'); return r ? r.innerText : null; })()",
                240, "the run report on the LoKr Loader")
        finally:
            await cdp.ws.close()
            await session.close()

    report = asyncio.run(scenario())
    assert "Matched" in report and "4 / 5" in report, (report, log.read_text()[-2000:])
    assert "lora_unet_down_blocks_2_attentions_0_transformer_blocks_0_attn1_to_q" in report, report


STACK_ROWS = """
(() => {
  const app = window.comfyAPI.app.app;
  const n = app.graph.getNodeById(window.__lokrStack);
  const p = n?.lokrStackPanel?.element;
  if (!p || !p.isConnected) return null;
  return [...p.querySelectorAll('[data-lokr=stack-row]')].map((r) => ({
    slot: r.dataset.slot, text: r.innerText,
    family: r.querySelector('.lokr-fam')?.textContent ?? null,
    tags: [...r.querySelectorAll('.lokr-tag')].map((t) => t.textContent)}));
})()
"""


def test_stack_panel(comfy, browser):
    """LoKr Stack: one compact row per chosen slot (family, modules, layouts, scale, first tags), updated
    when any lokr_i widget changes."""
    url, _log = comfy
    _proc, devtools = browser

    def set_slot(slot: int, value: str) -> str:
        return (f"(() => {{ const n = window.comfyAPI.app.app.graph.getNodeById(window.__lokrStack);"
                f" const w = n.widgets.find((x) => x.name === 'lokr_{slot}'); w.value = {json.dumps(value)};"
                f" w.callback?.(w.value); return true; }})()")

    def rows_when(cond: str) -> str:
        return f"(() => {{ const rows = {STACK_ROWS.strip()}; return rows && ({cond}) ? rows : null; }})()"

    async def scenario():
        session, cdp = await _page(devtools)
        try:
            await cdp.call("Page.navigate", url=url + "/")
            await cdp.wait_js("!!(window.comfyAPI?.app?.app?.graph && window.LiteGraph"
                              " && LiteGraph.registered_node_types['LoKrStack'])", 120, "the ComfyUI app")
            await asyncio.sleep(1.0)
            await cdp.js("""(() => { const app = window.comfyAPI.app.app; app.graph.clear();
                const n = LiteGraph.createNode("LoKrStack"); n.pos = [400, 150]; app.graph.add(n);
                n.setSize([420, n.size[1]]); window.__lokrStack = n.id;
                app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; app.graph.setDirtyCanvas(true, true);
                return true; })()""")
            empty = await cdp.wait_js("(() => { const n = window.comfyAPI.app.app.graph.getNodeById(window.__lokrStack);"
                                      " const p = n?.lokrStackPanel?.element; return p?.isConnected ? p.innerText : null; })()",
                                      20, "the empty stack panel")
            await cdp.js(set_slot(1, FIXTURE))
            one = await cdp.wait_js(rows_when("rows.length === 1 && /modules/.test(rows[0].text)"), 60,
                                    "the stack panel row of slot 1")
            await cdp.js(set_slot(3, FIXTURE))
            two = await cdp.wait_js(rows_when("rows.length === 2 && rows.every((r) => /modules/.test(r.text))"), 30,
                                    "the stack panel rows of slots 1 and 3")
            await cdp.js(set_slot(1, "None"))
            last = await cdp.wait_js(rows_when("rows.length === 1 && rows[0].slot === '3'"), 30,
                                     "the stack panel after emptying slot 1")
            return empty, one, two, last, cdp.console
        finally:
            await cdp.ws.close()
            await session.close()

    empty, one, two, last, console = asyncio.run(scenario())
    assert "No LoKr files selected" in empty, empty
    row = one[0]
    assert row["slot"] == "1" and FIXTURE in row["text"], row
    assert row["family"] in ("SD 1.x", "SD 1.x/2.x"), row
    assert "40 modules" in row["text"] and "scale" in row["text"], row
    assert "split" in row["text"] or "full" in row["text"], row  # the layouts
    assert row["tags"][:2] == ["ohwx corgi", "grass"] and len(row["tags"]) <= 3, row
    assert [r["slot"] for r in two] == ["1", "3"], two
    assert last[0]["text"] == two[1]["text"], (last, two)
    errors = [c for c in console if "comfyui-lokr" in c or "EXCEPTION" in c and "lokr" in c]
    assert not errors, errors
