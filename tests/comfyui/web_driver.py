"""Drive the pack's web extension in a real ComfyUI with headless Chromium.

Shared by ``tests/comfyui/test_web_panel.py`` (checks, screenshots only under a tmp dir) and
``tools/make_screenshots.py`` (the README images). Nothing here runs at import.

- :func:`make_base`: a throw-away ComfyUI ``--base-directory``: this repo symlinked into
  ``custom_nodes/comfyui_lokr`` (``PACK``), fixture LoKr files in ``models/loras`` (the SD1 one with a preview
  image and a Civitai Helper ``.civitai.info`` beside it), a dummy SDXL checkpoint name
  (never loaded), first-run settings that keep dialogs away; :func:`link_checkpoint` adds a real one.
- :func:`comfy_server` / :func:`chromium`: context managers that start ``main.py --cpu`` and a
  headless Chromium (``--remote-debugging-port``) and stop them afterwards.
- :class:`CDP`: a minimal DevTools-protocol client over one page's websocket (aiohttp only).
- :func:`open_app`: load the ComfyUI page in the classic LiteGraph canvas or in the Vue node mode
  ("Nodes 2.0", setting ``Comfy.VueNodes.Enabled``), set through ComfyUI's ``/settings`` route.
- Page helpers (:func:`add_loader`, :func:`add_block_weights`, :func:`add_stack`, :func:`node_rect`,
  :func:`click_center`, ...) that both the tests and the screenshot script use.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
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
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[2]
from comfy_env import stop_process

PACK = "comfyui_lokr"  # the pack's folder under custom_nodes: its web files are served under /extensions/PACK/
FIXTURE = "lokr_sd15_fixture.safetensors"
CKPT = "sd_xl_base_1.0.safetensors"
TINY_CKPT = "tiny_v1-5_test.safetensors"
TINY_FIXTURE = "lokr_tiny_fixture.safetensors"
VUE_SETTING = "Comfy.VueNodes.Enabled"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--hide-scrollbars", "--mute-audio"]
VIEWPORT = (1600, 1400)
FIRST_RUN_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Validation.Workflows": False,
                      "Comfy.Sidebar.Location": "left", "Comfy.UseNewMenu": "Top",
                      "Comfy.Minimap.Visible": False, "Comfy.VersionCompatibility.DisableWarnings": True,
                      "Comfy.Workflow.Persist": False}  # no restored workflow racing the test's own graph


# ------------------------------------------------------------------------------------ binaries
def chromium_path() -> str | None:
    """The Chromium to drive: ``$CHROMIUM``, else ``chromium`` / ``chromium-browser`` / ``google-chrome``."""
    for cand in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def comfy_python(comfy: Path) -> str:
    """ComfyUI's interpreter: ``$COMFYUI_PYTHON``, else a venv beside or inside ``comfy``, else this one."""
    if os.environ.get("COMFYUI_PYTHON"):
        return os.environ["COMFYUI_PYTHON"]
    for cand in (comfy.parent / "venv" / "bin" / "python", comfy / "venv" / "bin" / "python",
                 comfy / ".venv" / "bin" / "python"):
        if cand.exists():
            return str(cand)
    return sys.executable


def frontend_version(python: str) -> str:
    """The comfyui-frontend-package version installed for ``python`` ("unknown" when it has none)."""
    code = "from importlib.metadata import version; print(version('comfyui-frontend-package'))"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "unknown"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ fixtures
def write_fixture_lokr(path: Path) -> None:
    """A small SD1.5-named LoKr: attn1 q/k/v/out and attn2 k/v of six UNet blocks (split W2, factor 8,
    rank 4, alpha 4) and two text-encoder layers (full W2), with kohya training metadata (tags, dim, args)."""
    import torch
    from safetensors.torch import save_file

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


FIXTURE_SIDECAR = {"trainedWords": ["ohwx corgi", "red collar"], "baseModel": "SD 1.5", "modelId": 4201,
                   "id": 4202, "model": {"name": "Corgi LoKr"}}
"""The fixture's ``.civitai.info`` (a Civitai model-version record, as sd-webui Civitai Helper saves it)."""


def write_fixture_sidecars(path: Path) -> None:
    """Beside LoKr file ``path``: ``<stem>.preview.png`` (a 64 x 48 gradient) and ``<stem>.civitai.info``."""
    from PIL import Image

    stem = str(path)[: -len(".safetensors")]
    img = Image.new("RGB", (64, 48))
    img.putdata([(x * 4, y * 5, 160) for y in range(48) for x in range(64)])
    img.save(stem + ".preview.png")
    Path(stem + ".civitai.info").write_text(json.dumps(FIXTURE_SIDECAR))


def write_tiny_fixture_lokr(path: Path) -> None:
    """A LoKr for comfy_env's tiny SD1.5 checkpoint (2 levels: 320 and 640 channels): four modules
    it has and one it lacks (a third-level block), so a real run reports 4 / 5 matched."""
    import torch
    from safetensors.torch import save_file

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


def link_checkpoint(base: Path, checkpoint: str | os.PathLike, name: str = TINY_CKPT) -> Path:
    """Link ``checkpoint`` into ``base``'s models/checkpoints as ``name`` (once); the link."""
    link = base / "models" / "checkpoints" / name
    if not link.exists():
        os.symlink(Path(checkpoint).resolve(), link)
    return link


def make_base(base: Path) -> Path:
    """Fill ``base`` (an empty folder) as a ComfyUI ``--base-directory``; returns ``base``."""
    (base / "custom_nodes").mkdir(parents=True)
    os.symlink(ROOT, base / "custom_nodes" / PACK)
    (base / "models" / "loras").mkdir(parents=True)
    (base / "models" / "checkpoints").mkdir(parents=True)
    write_fixture_lokr(base / "models" / "loras" / FIXTURE)
    write_fixture_sidecars(base / "models" / "loras" / FIXTURE)
    (base / "models" / "checkpoints" / CKPT).write_bytes(b"")  # only its name is used
    write_tiny_fixture_lokr(base / "models" / "loras" / TINY_FIXTURE)  # for a checkpoint linked later
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps(FIRST_RUN_SETTINGS))
    return base


# ------------------------------------------------------------------------------------ processes
@contextlib.contextmanager
def comfy_server(comfy_dir: Path, base: Path, timeout: float = 240) -> Iterator[str]:
    """Base URL of ``main.py --cpu`` run from ``comfy_dir`` on ``base``, once it lists LoKrLoader.

    The server log is ``base/server.log``; RuntimeError (with its tail) when it exits or times out."""
    port = free_port()
    log = base / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [comfy_python(comfy_dir), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
             "--base-directory", str(base), "--disable-auto-launch"],
            cwd=comfy_dir, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/object_info/LoKrLoader", timeout=5) as r:
                    if json.loads(r.read()).get("LoKrLoader"):
                        break
            except OSError:
                pass
            if time.monotonic() > end:
                raise RuntimeError(f"ComfyUI did not list LoKrLoader in {timeout:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(1.0)
        yield url
    finally:
        stop_process(proc, 20)


@contextlib.contextmanager
def chromium(profile: Path, exe: str | None = None) -> Iterator[int]:
    """DevTools port of a headless Chromium using the (empty) ``profile`` folder; stopped afterwards."""
    exe = exe or chromium_path()
    if exe is None:
        raise RuntimeError("no chromium binary (set CHROMIUM or install Debian's chromium)")
    proc = subprocess.Popen([exe, *FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}",
                             f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("chromium did not start its DevTools server")
            time.sleep(0.2)
        yield int(port_file.read_text().split()[0])
    finally:
        stop_process(proc, 10)


def set_setting(url: str, key: str, value: Any) -> None:
    """Store one user setting through ComfyUI's ``POST /settings/{id}`` (read by the page when it loads)."""
    req = urllib.request.Request(f"{url}/settings/{key}", data=json.dumps(value).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


# ------------------------------------------------------------------------------------ DevTools
class CDP:
    """Minimal Chrome DevTools Protocol client over one page's websocket (aiohttp)."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.console: list[str] = []
        self.requests: list[str] = []  # URLs the page asked for, once the Network domain is enabled

    async def call(self, method: str, **params):
        msg_id = next(self.ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), 120)
            if msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif msg.get("method") == "Network.requestWillBeSent":
                self.requests.append(msg["params"]["request"]["url"])
            elif msg.get("method") == "Runtime.exceptionThrown":
                self.console.append("EXCEPTION " + json.dumps(msg["params"]["exceptionDetails"])[:500])
            elif msg.get("method") == "Page.javascriptDialogOpening":  # "leave with unsaved changes?"
                await self.ws.send_json({"id": next(self.ids), "method": "Page.handleJavaScriptDialog",
                                         "params": {"accept": True}})
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

    async def wait_js(self, expression: str, timeout: float = 60.0, what: str = "", diag: str | None = None):
        """The first truthy value of ``expression``, polled every 0.3 s; AssertionError after ``timeout``
        (with the value of the JS expression ``diag``, when given, and the last console lines)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                value = await self.js(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            await asyncio.sleep(0.3)
        seen = ""
        if diag:
            try:
                seen = f"; seen: {json.dumps(await self.js(diag))[:1500]}"
            except RuntimeError as e:
                seen = f"; seen: {e}"
        raise AssertionError(f"timed out waiting for {what or expression}{seen}; console: {self.console[-10:]}")

    async def screenshot(self, path: Path, clip: dict) -> int:
        """Write the page area ``clip`` (x, y, width, height in CSS px) to ``path`` as PNG; its size in bytes."""
        shot = await self.call("Page.captureScreenshot", format="png", clip={**clip, "scale": 1},
                               captureBeyondViewport=False)
        data = base64.b64decode(shot["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".png.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return len(data)

    async def click(self, x: float, y: float) -> None:
        """A real left click (pointer + mouse events from the browser) at page point (x, y)."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                            clickCount=0 if kind == "mouseMoved" else 1)


@contextlib.asynccontextmanager
async def page(devtools_port: int):
    """A CDP client on a new browser tab (viewport ``VIEWPORT``), closed afterwards."""
    import aiohttp

    devtools = f"http://127.0.0.1:{devtools_port}"
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{devtools}/json/new?about:blank") as r:
            target = await r.json()
        ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 * 2**20)
        try:
            cdp = CDP(ws)
            await cdp.call("Runtime.enable")
            await cdp.call("Page.enable")
            await cdp.call("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0], height=VIEWPORT[1],
                           deviceScaleFactor=1, mobile=False)
            yield cdp
        finally:
            await ws.close()
            async with session.get(f"{devtools}/json/close/{target['id']}") as r:
                await r.read()


# ------------------------------------------------------------------------------------ the app
APP_READY = ("!!(window.comfyAPI?.app?.app?.graph && window.LiteGraph"
             " && LiteGraph.registered_node_types['LoKrLoader'])")


async def open_app(cdp: CDP, url: str, vue: bool) -> dict:
    """Load ComfyUI with the Vue node mode on or off; {"vue": mode in effect, "has_vue": setting exists}.

    The mode is stored with ``POST /settings/Comfy.VueNodes.Enabled`` before the page loads. Leftover
    first-run dialogs and the minimap are hidden so that they cover no node."""
    set_setting(url, VUE_SETTING, bool(vue))
    await cdp.call("Page.navigate", url=url + "/")
    await cdp.wait_js(APP_READY, 120, "the ComfyUI app")
    with contextlib.suppress(AssertionError):  # the default workflow, loaded at start-up
        await cdp.wait_js("window.comfyAPI.app.app.graph.nodes?.length > 0", 10)
    await asyncio.sleep(1.5)  # let the first-load dialogs / menus settle
    await cdp.js("document.querySelectorAll('.p-dialog-mask').forEach((d) => d.remove());"
                 "const st = document.createElement('style'); st.textContent ="
                 " '.minimap-main-container{display:none!important}'; document.head.appendChild(st); true")
    return await cdp.js(f"""(() => {{ const app = window.comfyAPI.app.app;
        const lookup = app.ui?.settings?.settingsLookup ?? {{}};
        return {{vue: !!LiteGraph.vueNodesMode, has_vue: !!lookup[{json.dumps(VUE_SETTING)}]}}; }})()""")


async def settle(cdp: CDP, seconds: float = 0.6) -> None:
    """Redraw the canvas and wait for the frontend (and Vue) to lay the nodes out."""
    await cdp.js("window.comfyAPI.app.app.graph.setDirtyCanvas(true, true); true")
    await asyncio.sleep(seconds)


# JS: (re)set the view to zoom 1 at the origin, so node positions are page positions
RESET_VIEW = ("app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; app.canvas.setDirty?.(true, true);"
              " app.graph.setDirtyCanvas(true, true);")


async def add_loader(cdp: CDP, ckpt: str, file: str, node_type: str = "LoKrLoader", x: int = 470) -> dict:
    """Checkpoint loader at (100, 150) named ``ckpt`` feeding a ``node_type`` at (x, 150) with ``file``
    chosen through its widget callback (as a click in either renderer does); {"ckpt": id, "lokr": id}."""
    return await cdp.js(f"""(() => {{
      const app = window.comfyAPI.app.app;
      app.graph.clear();
      const ckpt = LiteGraph.createNode("CheckpointLoaderSimple");
      ckpt.pos = [100, 150];
      app.graph.add(ckpt);
      ckpt.widgets.find((x) => x.name === "ckpt_name").value = {json.dumps(ckpt)};
      const lokr = LiteGraph.createNode({json.dumps(node_type)});
      lokr.pos = [{x}, 150];
      app.graph.add(lokr);
      ckpt.connect(0, lokr, lokr.inputs.findIndex((i) => i.name === "model"));
      const clipIn = lokr.inputs.findIndex((i) => i.name === "clip");
      if (clipIn >= 0) ckpt.connect(1, lokr, clipIn);
      const fw = lokr.widgets.find((x) => x.name === "lokr_name");
      fw.value = {json.dumps(file)};
      fw.callback?.(fw.value);
      lokr.setSize([380, lokr.size[1]]);
      {RESET_VIEW}
      return {{ckpt: ckpt.id, lokr: lokr.id}};
    }})()""")


async def add_node(cdp: CDP, node_type: str, pos: tuple[int, int], width: int, widgets: dict | None = None) -> int:
    """Add a ``node_type`` at ``pos``, ``width`` wide, setting ``widgets`` (name -> value, each through
    its callback, in order); its id."""
    return await cdp.js(f"""(() => {{
      const app = window.comfyAPI.app.app;
      const n = LiteGraph.createNode({json.dumps(node_type)});
      n.pos = {json.dumps(list(pos))};
      app.graph.add(n);
      for (const [name, value] of Object.entries({json.dumps(widgets or {})})) {{
        const w = n.widgets.find((x) => x.name === name);
        if (w) {{ w.value = value; w.callback?.(w.value); }}
      }}
      n.setSize([{width}, n.size[1]]);
      {RESET_VIEW}
      return n.id;
    }})()""")


async def set_widget(cdp: CDP, node_id: int, name: str, value: Any) -> None:
    """Set a widget value the way both renderers do on a user edit (value, then callback)."""
    await cdp.js(f"""(() => {{ const n = window.comfyAPI.app.app.graph.getNodeById({node_id});
        const w = n.widgets.find((x) => x.name === {json.dumps(name)}); w.value = {json.dumps(value)};
        w.callback?.(w.value); return true; }})()""")


async def clear_graph(cdp: CDP) -> None:
    await cdp.js(f"(() => {{ const app = window.comfyAPI.app.app; app.graph.clear(); {RESET_VIEW} return true; }})()")


def element_js(node_id: int | str, selector: str) -> str:
    """JS expression: the element ``selector`` inside the pack's widget(s) of node ``node_id`` (or null)."""
    return (f"(() => {{ const n = window.comfyAPI.app.app.graph.getNodeById({node_id});"
            f" for (const w of n?.widgets ?? []) {{ const e = w.element?.querySelector?.({json.dumps(selector)});"
            f" if (e) return e; }} return null; }})()")


async def node_rect(cdp: CDP, node_ids: list[int]) -> dict:
    """Page rectangle around ``node_ids`` (title bar included): the Vue node elements in Vue mode,
    the canvas geometry otherwise."""
    return await cdp.js(f"""(() => {{
      const app = window.comfyAPI.app.app;
      const ids = {json.dumps(node_ids)};
      let x0 = 1e9, y0 = 1e9, x1 = -1e9, y1 = -1e9;
      const grow = (l, t, r, b) => {{ x0 = Math.min(x0, l); y0 = Math.min(y0, t); x1 = Math.max(x1, r); y1 = Math.max(y1, b); }};
      if (LiteGraph.vueNodesMode) {{
        for (const id of ids) {{
          const r = document.querySelector(`.lg-node[data-node-id="${{id}}"]`).getBoundingClientRect();
          grow(r.left, r.top, r.right, r.bottom);
        }}
      }} else {{
        const canvas = app.canvas.canvas.getBoundingClientRect();
        const s = app.canvas.ds.scale, off = app.canvas.ds.offset, title = LiteGraph.NODE_TITLE_HEIGHT;
        for (const n of ids.map((id) => app.graph.getNodeById(id))) {{
          grow(canvas.left + (n.pos[0] + off[0]) * s, canvas.top + (n.pos[1] - title + off[1]) * s,
               canvas.left + (n.pos[0] + n.size[0] + off[0]) * s, canvas.top + (n.pos[1] + n.size[1] + off[1]) * s);
        }}
      }}
      return {{x: x0, y: y0, width: x1 - x0, height: y1 - y0}};
    }})()""")


async def element_rect(cdp: CDP, expression: str) -> dict | None:
    """Page rectangle of the element ``expression`` evaluates to, with whether it is visible and on top
    at its centre (``hit``: the element found there belongs to it); None when there is no element."""
    return await cdp.js(f"""(() => {{
      const e = {expression};
      if (!e || !e.isConnected) return null;
      const r = e.getBoundingClientRect();
      const cx = r.left + r.width / 2, cy = r.top + r.height / 2;
      const top = document.elementFromPoint(cx, cy);
      const style = getComputedStyle(e);
      return {{x: r.left, y: r.top, width: r.width, height: r.height, cx, cy,
               visible: r.width > 0 && r.height > 0 && style.visibility !== 'hidden' && style.display !== 'none',
               hit: !!top && (top === e || e.contains(top)),
               top: top ? `${{top.tagName.toLowerCase()}}.${{String(top.className).slice(0, 60)}}` : null}};
    }})()""")


def inside(inner: dict, outer: dict, tol: float = 2.0) -> bool:
    """Whether rectangle ``inner`` lies within ``outer`` (page px, ``tol`` slack)."""
    return (inner["x"] >= outer["x"] - tol and inner["y"] >= outer["y"] - tol
            and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + tol
            and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + tol)


def clip(rect: dict, pad: int = 24) -> dict:
    """A screenshot clip: ``rect`` grown by ``pad`` px on each side, kept on the page."""
    return {"x": max(0, rect["x"] - pad), "y": max(0, rect["y"] - pad),
            "width": rect["width"] + 2 * pad, "height": rect["height"] + 2 * pad}


async def grant_clipboard(cdp: CDP, url: str) -> bool:
    """Let the page write and read the clipboard without a prompt; False when the browser refuses."""
    try:
        await cdp.call("Browser.grantPermissions", origin=url,
                       permissions=["clipboardReadWrite", "clipboardSanitizedWrite"])
        return True
    except RuntimeError:
        return False


def lokr_errors(console: list[str]) -> list[str]:
    """Console lines that come from the pack (its warnings, exceptions naming lokr, or the frontend's
    messages about one of the pack's web files, such as "Error loading extension /extensions/PACK/...")."""
    return [c for c in console if "comfyui-lokr" in c or ("EXCEPTION" in c and "lokr" in c)
            or f"/extensions/{PACK}/" in c]


# ------------------------------------------------------------------------------------ scenes
SAMPLE_REPORT = {"matched": 30, "total": 32, "family": "sd1", "shape_mismatch": {},
                 "unmatched": {"lora_te_text_model_encoder_layers_11_self_attn_q_proj": [],
                               "lora_te_text_model_encoder_layers_11_self_attn_v_proj": []}}


def panel_js(node_id: int | str, key: str = "lokrPanel") -> str:
    """JS expression: the element of the pack's ``key`` panel (lokrPanel / lokrStackPanel / lokrEditor) on a node."""
    return f"(window.comfyAPI.app.app.graph.getNodeById({node_id})?.{key}?.element ?? null)"


async def loader_scene(cdp: CDP, node_type: str = "LoKrLoader") -> dict:
    """Checkpoint named like SDXL -> ``node_type`` with the SD1 fixture; waits until the panel shows the
    summary and the family-mismatch badge; {"ckpt": id, "lokr": id}."""
    ids = await add_loader(cdp, CKPT, FIXTURE, node_type)
    await cdp.wait_js(f"(() => {{ const p = {panel_js(ids['lokr'])};"
                      " return p && /Modules/.test(p.textContent) && /mismatch/.test(p.textContent); })()",
                      60, "the LoKr panel with the file summary and the mismatch badge",
                      diag=f"(() => {{ const n = window.comfyAPI.app.app.graph.getNodeById({ids['lokr']});"
                           " return {text: n?.lokrPanel?.element.innerText, state: n?.lokrPanel?.state,"
                           " widgets: n?.widgets?.map((w) => [w.name, w.type, String(w.value)])}; })()")
    return ids


async def feed_report(cdp: CDP, node_id: int, report: dict) -> str:
    """Hand ``report`` to the node's ``onExecuted`` as ComfyUI does after a run; the panel's report text."""
    await cdp.js(f"""(() => {{ const n = window.comfyAPI.app.app.graph.getNodeById({node_id});
        n.onExecuted({{lokr_report: [{json.dumps(report)}]}}); return true; }})()""")
    return await cdp.wait_js(f"{panel_js(node_id)}?.querySelector('[data-lokr=report]')?.innerText", 10,
                             "the run report in the panel")


async def block_weights_scene(cdp: CDP, pos: tuple[int, int] = (830, 150)) -> int:
    """LoKr Block Weights with the fixture and preset SD-OUTALL; waits for its 17 sliders; its id."""
    node_id = await add_node(cdp, "LoKrBlockWeights", pos, 440, {"lokr_name": FIXTURE, "preset": "SD-OUTALL"})
    await cdp.wait_js(f"(() => {{ const s = {panel_js(node_id, 'lokrEditor')}?.querySelectorAll('input[type=range]');"
                      " return s?.length === 17 && s[1].value === '0' && s[16].value === '1'; })()", 30,
                      "the SD-OUTALL preset on the block editor's sliders")
    await cdp.wait_js(f"/Modules/.test({panel_js(node_id)}?.textContent ?? '')", 30,
                      "the panel on the block-weights node")
    return node_id


async def stack_scene(cdp: CDP, slots: dict[int, str], pos: tuple[int, int] = (400, 150)) -> int:
    """LoKr Stack with ``slots`` (slot number -> file) chosen; waits until every chosen slot has a row
    with its summary; its id."""
    node_id = await add_node(cdp, "LoKrStack", pos, 420, {f"lokr_{k}": v for k, v in slots.items()})
    want = sum(1 for v in slots.values() if v != "None")
    await cdp.wait_js(f"(() => {{ const p = {panel_js(node_id, 'lokrStackPanel')};"
                      " const rows = p?.isConnected ? [...p.querySelectorAll('[data-lokr=stack-row]')] : null;"
                      f" return rows && rows.length === {want} && rows.every((r) => /modules/.test(r.innerText)); }})()",
                      60, f"{want} stack rows with their summaries")
    return node_id
