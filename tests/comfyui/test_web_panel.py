"""The web extension in a real ComfyUI + comfyui-frontend-package, driven by headless Chromium.

Starts ``main.py --cpu`` from ``COMFYUI_PATH`` on a throw-away ``--base-directory`` and a headless
Chromium over the DevTools protocol (``web_driver.py``: aiohttp websocket, no extra package). Each
panel test runs twice: in the classic LiteGraph canvas and in the Vue node mode ("Nodes 2.0",
setting ``Comfy.VueNodes.Enabled``; skipped on a frontend without it). They check the panel's text
(family, modules, layouts, scale, trigger words, family-mismatch badge, the run report from
``onExecuted``), that the panel sits on its node and is the element under the pointer there, real
clicks (a trigger word to the clipboard, a block slider), the LoKr Stack rows, the block-weight editor,
a saved and re-opened workflow, and that a screenshot of each can be taken (written under pytest's tmp
dir only: the README images come from ``tools/make_screenshots.py``).

Skips cleanly without ``COMFYUI_PATH`` or a Chromium binary (``CHROMIUM`` or ``chromium`` on PATH).
``COMFYUI_PYTHON`` picks the interpreter for ComfyUI (default: ``<COMFYUI_PATH>/../venv/bin/python``).
"""
from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from pathlib import Path

import pytest

import web_driver as wd

MAX_PNG = 300_000
MODES = ["classic", "vue"]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    """(base URL, server log path, frontend version) of a ComfyUI started for this module."""
    path = os.environ.get("COMFYUI_PATH")
    if not path or not (Path(path) / "main.py").exists():
        pytest.skip("COMFYUI_PATH (a ComfyUI checkout with main.py) is not set")
    if wd.chromium_path() is None:
        pytest.skip("no chromium binary (set CHROMIUM or install Debian's chromium)")
    comfy_dir = Path(path)
    base = wd.make_base(tmp_path_factory.mktemp("comfy_base"))
    frontend = wd.frontend_version(wd.comfy_python(comfy_dir))
    try:
        with wd.comfy_server(comfy_dir, base) as url:
            yield url, base / "server.log", frontend
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """DevTools port of a headless Chromium; stopped afterwards."""
    if wd.chromium_path() is None:
        pytest.skip("no chromium binary")
    with wd.chromium(tmp_path_factory.mktemp("chromium_profile")) as port:
        yield port


def run(scenario, devtools: int, url: str, mode: str, network: bool = False):
    """Run ``scenario(cdp)`` on a fresh page of ComfyUI in ``mode`` (with ``network``, recording the URLs
    the page requests in ``cdp.requests``); skip Vue mode where the frontend lacks it."""

    async def main():
        async with wd.page(devtools) as cdp:
            if network:
                await cdp.call("Network.enable")
            info = await wd.open_app(cdp, url, vue=mode == "vue")
            if mode == "vue" and not info["has_vue"]:
                return "this frontend has no Vue node mode (Comfy.VueNodes.Enabled)"
            assert info["vue"] == (mode == "vue"), info
            if mode == "vue" and not await vue_mounts_dom_widgets(cdp):
                return ("this frontend's Vue nodes mount no DOM widget at all (they came with "
                        "ComfyUI_frontend PR #6006, Oct 2025): the pack's panels show in the classic canvas only")
            result = await scenario(cdp)
            return result, cdp.console

    out = asyncio.run(main())
    if isinstance(out, str):
        pytest.skip(out)
    return out


async def vue_mounts_dom_widgets(cdp: wd.CDP) -> bool:
    """Whether this frontend's Vue nodes show a plain ``addDOMWidget`` element (a probe on a LoKr Info
    node, not the pack's code): the nodes must be Vue elements first, else AssertionError."""
    await cdp.js("""(() => { const app = window.comfyAPI.app.app; app.graph.clear();
        const n = LiteGraph.createNode('LoKrInfo'); const probe = document.createElement('div');
        probe.id = 'lokr-dom-probe'; probe.textContent = 'probe';
        n.addDOMWidget('probe', 'probe', probe, {serialize: false}); app.graph.add(n); return true; })()""")
    await cdp.wait_js("!!document.querySelector('.lg-node[data-node-id]')", 20, "a Vue node element")
    try:
        await cdp.wait_js("!!document.querySelector('.lg-node #lokr-dom-probe')", 10)
        return True
    except AssertionError:
        return False


def widget_inputs(url: str, node_type: str) -> list[str]:
    """Names of ``node_type``'s inputs that are widgets (not links), from the server's /object_info."""
    with urllib.request.urlopen(f"{url}/object_info/{node_type}", timeout=10) as r:
        spec = json.loads(r.read())[node_type]["input"]
    names = []
    for group in ("required", "optional"):
        for name, value in (spec.get(group) or {}).items():
            kind = value[0]
            if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                names.append(name)
    return names


async def placement(cdp: wd.CDP, node_id: int, element: str) -> dict:
    """Where ``element`` (a JS expression) is against node ``node_id``: its rect, the node's rect,
    whether it is visible, inside the node and the element under the pointer at its centre."""
    await wd.settle(cdp)
    rect = await wd.element_rect(cdp, element)
    node = await wd.node_rect(cdp, [node_id])
    assert rect is not None, "no element"
    return {"rect": rect, "node": node, "visible": rect["visible"], "inside": wd.inside(rect, node),
            "hit": rect["hit"]}


# ------------------------------------------------------------------------------------ extension files
WEB_FILES = sorted(p.relative_to(wd.ROOT / "web").as_posix() for p in (wd.ROOT / "web").rglob("*.js"))

PAGE_FILES = """
(async () => {
  const base = location.origin + %(prefix)s;
  const links = [...document.querySelectorAll('link[rel=stylesheet]')].map((l) => l.href).filter((h) => h.startsWith(base));
  const panel = %(panel)s;
  const style = panel ? getComputedStyle(panel) : null;
  const ui = await import(base + 'logic/node_ui.js');
  return {links, styleId: document.querySelectorAll('#lokr-style').length,
          radius: style?.borderTopLeftRadius ?? null, font: style?.fontSize ?? null,
          inputs: Object.values(ui.INPUTS), custom: ui.CUSTOM_PRESET, auto: ui.AUTO_FAMILY};
})()
"""


def combo_options(spec: list) -> list:
    """The choices of a combo input in /object_info: ``[[choices], {...}]`` or ``["COMBO", {"options": [...]}]``."""
    return spec[0] if isinstance(spec[0], list) else spec[1].get("options", [])


def test_extension_files(comfy, browser):
    """How ComfyUI serves and loads the web folder: /extensions lists every .js under web/, the page
    fetches each module once (the frontend's own imports and the relative imports between modules
    are one module graph), lokr.css is linked once beside the entry and styles the panel, no module
    fails to load, and the input names the panels read are inputs of the pack's nodes in /object_info."""
    url, log, frontend = comfy
    prefix = f"/extensions/{wd.PACK}/"
    with urllib.request.urlopen(f"{url}/extensions", timeout=10) as r:
        listed = sorted(e[len(prefix):] for e in json.loads(r.read()) if e.startswith(prefix))
    with urllib.request.urlopen(f"{url}/object_info", timeout=30) as r:
        info = json.loads(r.read())

    async def scenario(cdp: wd.CDP):
        ids = await wd.loader_scene(cdp)
        fetched = [u[len(url + prefix):] for u in cdp.requests if u.startswith(url + prefix)]
        page = await cdp.js(PAGE_FILES % {"prefix": json.dumps(prefix), "panel": wd.panel_js(ids["lokr"])})
        return {**page, "fetched": fetched}

    r, console = run(scenario, browser, url, "classic", network=True)
    ctx = frontend
    assert listed == WEB_FILES, (ctx, listed)
    assert sorted(r["fetched"]) == sorted([*WEB_FILES, "lokr.css"]), (ctx, r["fetched"])  # each once
    assert r["links"] == [f"{url}{prefix}lokr.css"] and r["styleId"] == 1, (ctx, r)
    assert (r["radius"], r["font"]) == ("6px", "11px"), (ctx, r)  # .lokr-panel's rules from lokr.css
    ours = {name: spec for name, spec in info.items() if spec.get("python_module", "").endswith(wd.PACK)}
    assert {"LoKrLoader", "LoKrBlockWeights", "LoKrStack"} <= set(ours), (ctx, sorted(ours))
    have = {n for spec in ours.values() for group in ("required", "optional") for n in (spec["input"].get(group) or {})}
    assert set(r["inputs"]) <= have, (ctx, set(r["inputs"]) - have)
    preset, family = (combo_options(ours["LoKrBlockWeights"]["input"]["required"][k]) for k in ("preset", "family"))
    assert r["custom"] in preset and r["auto"] in family, (ctx, preset, family)
    assert not wd.lokr_errors(console), (ctx, wd.lokr_errors(console), log.read_text()[-1500:])


def test_file_routes_on_the_server(comfy):
    """/lokr/files, /lokr/sidecar and /lokr/preview on ComfyUI's own server, with and without /api."""
    url, log, frontend = comfy

    def get(path: str):
        with urllib.request.urlopen(url + path, timeout=30) as r:
            return r.headers.get("Content-Type", ""), r.read()

    for prefix in ("", "/api"):
        _, raw = get(prefix + "/lokr/files")
        files = {f["name"]: f for f in json.loads(raw)["files"]}
        assert files[wd.FIXTURE] == {"name": wd.FIXTURE, "kind": "lokr", "family": "sd1", "family_label": "SD1.x",
                                     "has_preview": True}, (frontend, files)
        assert files[wd.TINY_FIXTURE]["has_preview"] is False, (frontend, files)
    side = json.loads(get("/api/lokr/sidecar?file=" + wd.FIXTURE)[1])
    assert side["preview"] == "/lokr/preview?file=" + wd.FIXTURE and side["title"] == "Corgi LoKr", side
    assert side["trigger_words"] == wd.FIXTURE_SIDECAR["trainedWords"] and str(log.parent) not in json.dumps(side)
    ctype, data = get("/api" + side["preview"])
    assert ctype == "image/png" and data.startswith(b"\x89PNG"), (ctype, data[:16])


# ------------------------------------------------------------------------------------ loader panel
SIDECAR = """
(() => {
  const p = %s;
  const img = p?.querySelector('[data-lokr=preview]');
  if (!img || !img.complete || !img.naturalWidth) return null;
  const a = p.querySelector('[data-lokr=source]');
  const r = img.getBoundingClientRect(), q = p.getBoundingClientRect();
  return {size: [img.naturalWidth, img.naturalHeight], src: img.src,
          inside: r.width > 0 && r.left >= q.left - 1 && r.right <= q.right + 1 && r.top >= q.top - 1 && r.bottom <= q.bottom + 1,
          title: p.querySelector('.lokr-title')?.textContent ?? null,
          link: a ? {href: a.href, target: a.target, rel: a.rel} : null};
})()
"""


@pytest.mark.parametrize("mode", MODES)
def test_loader_panel(comfy, browser, tmp_path, mode):
    """Checkpoint (SDXL name) -> LoKr Loader with an SD1 LoKr: summary, the sidecar (preview image loaded
    from /lokr/preview, title, base model, source link, the .civitai.info's trigger words), mismatch badge
    (which follows the upstream checkpoint name), the run report, a real click that copies a trigger word,
    the panel placed on its node, not serialized, back after reloading the workflow."""
    url, log, frontend = comfy

    async def scenario(cdp: wd.CDP):
        clipboard = await wd.grant_clipboard(cdp, url)
        ids = await wd.loader_scene(cdp)
        panel = wd.panel_js(ids["lokr"])
        side = await cdp.wait_js(SIDECAR % panel, 30, "the preview image and sidecar facts on the panel")
        text = await cdp.js(f"{panel}.innerText")
        report = await wd.feed_report(cdp, ids["lokr"], wd.SAMPLE_REPORT)
        tags = await cdp.js(f"[...{panel}.querySelectorAll('.lokr-tag')].map((t) => t.textContent)")
        where = await placement(cdp, ids["lokr"], panel)
        chip = await wd.element_rect(cdp, f"{panel}.querySelector('.lokr-tag')")
        await cdp.click(chip["cx"], chip["cy"])
        copied = await cdp.wait_js(f"{panel}.querySelector('.lokr-tag.lokr-copied') ? true : null", 5,
                                   "the copied mark on the clicked trigger word")
        pasted = await cdp.js("navigator.clipboard.readText().catch((e) => 'error: ' + e)") if clipboard else None
        shot = await cdp.screenshot(tmp_path / f"loader_{mode}.png", wd.clip(await wd.node_rect(cdp, list(ids.values()))))
        # the model's family follows the checkpoint name upstream: an SD1 name clears the badge
        await cdp.js(f"window.comfyAPI.app.app.graph.getNodeById({ids['ckpt']}).widgets"
                     f".find((w) => w.name === 'ckpt_name').value = 'v1-5-pruned-emaonly.safetensors'; true")
        cleared = await cdp.wait_js(f"!{panel}.querySelector('[data-lokr=mismatch]')", 10,
                                    "the mismatch badge gone after choosing an SD1 checkpoint")
        saved = await cdp.js(f"""(async () => {{ const app = window.comfyAPI.app.app;
            const n = app.graph.getNodeById({ids['lokr']});
            const live = n.widgets.filter((w) => w.serialize !== false && w.options?.serialize !== false)
                .map((w) => [w.name, w.value]);
            const wf = JSON.parse(JSON.stringify(app.graph.serialize()));
            await app.loadGraphData(wf);
            return {{live, saved: wf.nodes.find((x) => x.type === 'LoKrLoader').widgets_values}}; }})()""")
        reloaded = await cdp.wait_js("(() => { const n = window.comfyAPI.app.app.graph.nodes.find("
                                     "(x) => x.type === 'LoKrLoader'); const t = n?.lokrPanel?.element.innerText;"
                                     " return t && /Modules/.test(t) ? t : null; })()", 30,
                                     "the panel after reloading the workflow")
        return dict(text=text, report=report, tags=tags, where=where, copied=copied, pasted=pasted,
                    shot=shot, cleared=cleared, saved=saved, reloaded=reloaded, clipboard=clipboard, side=side)

    r, console = run(scenario, browser, url, mode)
    ctx = (frontend, mode)
    text = r["text"]
    assert "SD1.x" in text or "SD2.x" in text, (ctx, text)
    assert "Modules" in text and "40" in text, (ctx, text)
    assert "Layouts" in text and "Scale" in text, (ctx, text)
    assert "family mismatch" in text, (ctx, text)  # LoKr for SD1, checkpoint named like SDXL
    assert r["tags"] == wd.FIXTURE_SIDECAR["trainedWords"], (ctx, r["tags"])  # the .civitai.info's words
    assert "Trigger words" in text and "Base model\tSD 1.5" in text, (ctx, text)
    side = r["side"]
    assert side["size"] == [64, 48] and side["inside"], (ctx, side)  # the preview, loaded, within the panel
    assert side["src"].endswith("/lokr/preview?file=" + wd.FIXTURE), (ctx, side)
    assert side["title"] == "Corgi LoKr", (ctx, side)
    assert side["link"] == {"href": "https://civitai.com/models/4201?modelVersionId=4202", "target": "_blank",
                            "rel": "noopener noreferrer"}, (ctx, side)
    assert "Matched" in r["report"] and "30 / 32" in r["report"] and "Unmatched" in r["report"], (ctx, r["report"])
    where = r["where"]
    assert where["visible"] and where["inside"] and where["hit"], (ctx, where)
    assert where["rect"]["height"] > 80, (ctx, where)  # the panel is not squeezed to a sliver
    assert r["copied"], ctx
    if r["clipboard"]:  # the browser let the page read the clipboard back
        assert r["pasted"] == "ohwx corgi", (ctx, r["pasted"])
    assert 0 < r["shot"] < MAX_PNG, (ctx, r["shot"])
    assert r["cleared"], ctx
    # saved: exactly the node's widget inputs (from /object_info), no value for the panel
    names = widget_inputs(url, "LoKrLoader")
    saved = r["saved"]["saved"]
    assert [n for n, _ in r["saved"]["live"]] == names, (ctx, r["saved"]["live"], names)
    assert saved == [v for _, v in r["saved"]["live"]], (ctx, saved)
    assert saved[names.index("lokr_name")] == wd.FIXTURE, (ctx, saved)
    assert "Modules" in r["reloaded"], (ctx, r["reloaded"])
    assert not wd.lokr_errors(console), (ctx, wd.lokr_errors(console), log.read_text()[-1500:])



# ------------------------------------------------------------------------------------ block editor
@pytest.mark.parametrize("mode", MODES)
def test_block_editor(comfy, browser, tmp_path, mode):
    """LoKr Block Weights: preset SD-OUTALL on the sliders, a real click on a slider and two slider
    inputs write block_vector and switch preset to custom; sliders come back after reloading."""
    url, log, frontend = comfy

    async def scenario(cdp: wd.CDP):
        await wd.clear_graph(cdp)
        node_id = await wd.block_weights_scene(cdp, (400, 150))
        editor = wd.panel_js(node_id, "lokrEditor")
        ids = await cdp.js(f"[...{editor}.querySelectorAll('.lokr-bw-id')].map((e) => e.textContent)")
        where = await placement(cdp, node_id, editor)
        # a real click at the right end of OUT11's slider (last one): the browser moves it to 2
        slider = await wd.element_rect(cdp, f"[...{editor}.querySelectorAll('input[type=range]')].at(-1)")
        await cdp.click(slider["x"] + slider["width"] - 2, slider["cy"])
        clicked = await cdp.wait_js(f"(() => {{ const n = window.comfyAPI.app.app.graph.getNodeById({node_id});"
                                    " const v = n.widgets.find((w) => w.name === 'block_vector').value;"
                                    " return /,2$/.test(v) ? v : null; })()", 10,
                                    "block_vector ending in 2 after clicking the last slider")
        typed = await cdp.js(f"""(() => {{ const n = window.comfyAPI.app.app.graph.getNodeById({node_id});
            const s = {editor}.querySelectorAll('input[type=range]');
            s[16].value = '1'; s[16].dispatchEvent(new Event('input'));
            s[7].value = '0.5'; s[7].dispatchEvent(new Event('input'));
            s[4].value = '1.25'; s[4].dispatchEvent(new Event('input'));
            const tw = n.widgets.find((x) => x.name === 'block_vector');
            const pw = n.widgets.find((x) => x.name === 'preset');
            return [tw.value, pw ? pw.value : null]; }})()""")
        shot = await cdp.screenshot(tmp_path / f"block_weights_{mode}.png", wd.clip(await wd.node_rect(cdp, [node_id])))
        await cdp.js("""(async () => { const app = window.comfyAPI.app.app;
            await app.loadGraphData(JSON.parse(JSON.stringify(app.graph.serialize()))); return true; })()""")
        sliders = await cdp.wait_js("(() => { const n = window.comfyAPI.app.app.graph.nodes.find("
                                    "(x) => x.type === 'LoKrBlockWeights');"
                                    " const s = [...(n?.lokrEditor?.element.querySelectorAll('input[type=range]') ?? [])];"
                                    " return s.length === 17 && s[4].value === '1.25' ? s.map((x) => x.value) : null; })()",
                                    30, "the block editor after reloading the workflow")
        return dict(ids=ids, where=where, clicked=clicked, typed=typed, shot=shot, sliders=sliders)

    r, console = run(scenario, browser, url, mode)
    ctx = (frontend, mode)
    assert r["ids"][:3] == ["BASE", "IN01", "IN02"] and r["ids"][-1] == "OUT11", (ctx, r["ids"])
    where = r["where"]
    assert where["visible"] and where["inside"] and where["hit"], (ctx, where)
    assert r["clicked"] == "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,2", (ctx, r["clicked"])
    # SD-OUTALL with MID set to 0.5 and IN05 to 1.25 by the sliders; the node now uses the text
    assert r["typed"] == ["1,0,0,0,1.25,0,0,0.5,1,1,1,1,1,1,1,1,1", "custom"], (ctx, r["typed"])
    assert r["sliders"][:8] == ["1", "0", "0", "0", "1.25", "0", "0", "0.5"], (ctx, r["sliders"])
    assert 0 < r["shot"] < MAX_PNG, (ctx, r["shot"])
    assert not wd.lokr_errors(console), (ctx, wd.lokr_errors(console), log.read_text()[-1500:])


def test_block_editor_transformers(comfy, browser, tmp_path):
    """LoKr Block Weights with family flux: the Flux.1 layout (BASE, a double section 0-18, a single
    section 0-37), a group slider writes every block of its group; a run report naming a Flux model
    with 2 + 2 blocks gives a 5-block layout; the loader panel's badge and mismatch use the report's
    family labels."""
    url, log, frontend = comfy

    async def scenario(cdp: wd.CDP):
        await wd.clear_graph(cdp)
        node_id = await wd.block_weights_scene(cdp, (400, 150))
        editor = wd.panel_js(node_id, "lokrEditor")
        node = f"window.comfyAPI.app.app.graph.getNodeById({node_id})"
        await wd.set_widget(cdp, node_id, "preset", "custom")
        await cdp.js(f"(() => {{ const w = {node}.widgets.find((x) => x.name === 'family'); w.value = 'flux';"
                     " w.callback?.('flux'); return true; })()")
        await cdp.js(f"(() => {{ const w = {node}.widgets.find((x) => x.name === 'block_vector');"
                     " w.value = '1,0.5,2'; w.callback?.('1,0.5,2'); return true; })()")
        flux = await cdp.wait_js(f"""(() => {{ const e = {editor};
            const rows = [...e.querySelectorAll('.lokr-bw-sub .lokr-bw-row')].map((r) => r.dataset.id);
            if (rows.length !== 57) return null;
            return {{rows, sections: [...e.querySelectorAll('.lokr-bw-sec')].map((x) => x.dataset.group),
                     layout: e.querySelector('select').selectedOptions[0].textContent,
                     single: [...e.querySelectorAll('[data-group=single] .lokr-bw-sub input')].map((x) => x.value)}}; }})()""",
                                 20, "the Flux.1 layout on the block editor")
        where = await placement(cdp, node_id, editor)
        shot = await cdp.screenshot(tmp_path / "block_weights_flux.png", wd.clip(await wd.node_rect(cdp, [node_id])))
        grouped = await cdp.js(f"""(() => {{ const g = {editor}.querySelector('[data-group=double] .lokr-bw-ghead input');
            g.value = '0'; g.dispatchEvent(new Event('input'));
            return {node}.widgets.find((x) => x.name === 'block_vector').value; }})()""")
        await cdp.js(f"""(() => {{ const w = {node}.widgets.find((x) => x.name === 'family'); w.value = 'auto';
            w.callback?.('auto'); {node}.onExecuted({{lokr_report: [{{matched: 2, total: 2, unmatched: [],
            block_family: 'flux', blocks: {{double: 2, single: 2}}, family: 'flux', family_label: 'Flux.1',
            model_family: 'sd3', model_family_label: 'SD3 / SD3.5'}}]}}); return true; }})()""")
        small = await cdp.wait_js(f"""(() => {{ const e = {editor};
            const ids = [...e.querySelectorAll('.lokr-bw-row')].filter((r) => !r.classList.contains('lokr-bw-ghead'))
                .map((r) => r.dataset.id);
            return ids.length === 5 ? {{ids, err: e.querySelector('.lokr-bw-err').textContent,
                panel: {wd.panel_js(node_id)}.innerText}} : null; }})()""", 20, "the 2 + 2 block layout after the run report")
        return dict(flux=flux, where=where, shot=shot, grouped=grouped, small=small)

    (r, console) = run(scenario, browser, url, "classic")
    ctx = frontend
    flux = r["flux"]
    assert flux["sections"] == ["double", "single"] and flux["layout"] == "Flux.1 · double 19, single 38", (ctx, flux)
    assert flux["rows"][0] == "double 0" and flux["rows"][18] == "double 18" and flux["rows"][-1] == "single 37", (ctx, flux)
    assert set(flux["single"]) == {"2"}, (ctx, flux)  # the per-group vector 1,0.5,2 spread over the single blocks
    where = r["where"]
    assert where["visible"] and where["inside"] and where["hit"], (ctx, where)
    assert 0 < r["shot"] < MAX_PNG, (ctx, r["shot"])
    values = r["grouped"].split(",")
    assert len(values) == 58 and values[0] == "1" and set(values[1:20]) == {"0"} and set(values[20:]) == {"2"}, (ctx, r)
    small = r["small"]
    assert small["ids"] == ["BASE", "double 0", "double 1", "single 0", "single 1"], (ctx, small)
    assert "58 values given; expected 5 values" in small["err"], (ctx, small)  # the 58-value text on a 2 + 2 model
    assert "Flux.1" in small["panel"] and "family mismatch: model is SD3 / SD3.5" in small["panel"], (ctx, small)
    assert not wd.lokr_errors(console), (ctx, wd.lokr_errors(console), log.read_text()[-1500:])


# ------------------------------------------------------------------------------------ stack panel
STACK_ROWS = """
(() => {
  const p = %s;
  if (!p || !p.isConnected) return null;
  return [...p.querySelectorAll('[data-lokr=stack-row]')].map((r) => ({
    slot: r.dataset.slot, text: r.innerText,
    family: r.querySelector('.lokr-fam')?.textContent ?? null,
    tags: [...r.querySelectorAll('.lokr-tag')].map((t) => t.textContent)}));
})()
"""


@pytest.mark.parametrize("mode", MODES)
def test_stack_panel(comfy, browser, tmp_path, mode):
    """LoKr Stack: one compact row per chosen slot (family, modules, layouts, scale, first tags), updated
    when any lokr_i widget changes; the panel sits on its node."""
    url, log, frontend = comfy

    def rows_when(node_id: int, cond: str) -> str:
        rows = STACK_ROWS % wd.panel_js(node_id, "lokrStackPanel")
        return f"(() => {{ const rows = {rows.strip()}; return rows && ({cond}) ? rows : null; }})()"

    async def scenario(cdp: wd.CDP):
        await wd.clear_graph(cdp)
        node_id = await wd.add_node(cdp, "LoKrStack", (400, 150), 420)
        panel = wd.panel_js(node_id, "lokrStackPanel")
        empty = await cdp.wait_js(f"(() => {{ const p = {panel}; return p?.isConnected ? p.innerText : null; }})()",
                                  20, "the empty stack panel")
        await wd.set_widget(cdp, node_id, "lokr_1", wd.FIXTURE)
        one = await cdp.wait_js(rows_when(node_id, "rows.length === 1 && /modules/.test(rows[0].text)"), 60,
                                "the stack panel row of slot 1")
        await wd.set_widget(cdp, node_id, "lokr_3", wd.FIXTURE)
        two = await cdp.wait_js(rows_when(node_id, "rows.length === 2 && rows.every((r) => /modules/.test(r.text))"),
                                30, "the stack panel rows of slots 1 and 3")
        where = await placement(cdp, node_id, panel)
        shot = await cdp.screenshot(tmp_path / f"stack_{mode}.png", wd.clip(await wd.node_rect(cdp, [node_id])))
        await wd.set_widget(cdp, node_id, "lokr_1", "None")
        last = await cdp.wait_js(rows_when(node_id, "rows.length === 1 && rows[0].slot === '3'"), 30,
                                 "the stack panel after emptying slot 1")
        return dict(empty=empty, one=one, two=two, last=last, where=where, shot=shot)

    r, console = run(scenario, browser, url, mode)
    ctx = (frontend, mode)
    assert "No LoKr files selected" in r["empty"], (ctx, r["empty"])
    row = r["one"][0]
    assert row["slot"] == "1" and wd.FIXTURE in row["text"], (ctx, row)
    assert row["family"] in ("SD1.x", "SD1.x or SD2.x"), (ctx, row)
    assert "40 modules" in row["text"] and "scale" in row["text"], (ctx, row)
    assert "split" in row["text"] or "full" in row["text"], (ctx, row)  # the layouts
    assert row["tags"][:2] == ["ohwx corgi", "grass"] and len(row["tags"]) <= 3, (ctx, row)
    assert [x["slot"] for x in r["two"]] == ["1", "3"], (ctx, r["two"])
    assert r["last"][0]["text"] == r["two"][1]["text"], (ctx, r["last"], r["two"])
    where = r["where"]
    assert where["visible"] and where["inside"] and where["hit"], (ctx, where)
    assert 0 < r["shot"] < MAX_PNG, (ctx, r["shot"])
    assert not wd.lokr_errors(console), (ctx, wd.lokr_errors(console), log.read_text()[-1500:])


# ------------------------------------------------------------------------------------ real run
RUN_GRAPH = """
(async () => {
  const app = window.comfyAPI.app.app;
  const lokr = app.graph.getNodeById(%(lokr)s);
  const info = LiteGraph.createNode("LoKrInfo");
  info.pos = [900, 150]; app.graph.add(info);
  info.widgets.find((x) => x.name === "lokr_name").value = %(file)s;
  lokr.connect(0, info, info.inputs.findIndex((i) => i.name === "model"));
  lokr.connect(1, info, info.inputs.findIndex((i) => i.name === "clip"));
  await app.queuePrompt(0, 1);
  return true;
})()
"""


def test_run_report_from_a_real_run(comfy, browser, tmp_path):
    """Queue Checkpoint -> LoKr Loader -> LoKr Info on comfy_env's tiny SD1.5 checkpoint; the loader's
    panel shows the report the node returned (ui.lokr_report through the 'executed' event)."""
    url, log, frontend = comfy
    import comfy_env

    wd.link_checkpoint(log.parent, comfy_env.cached_tiny_sd15(tmp_path))  # made once per bench

    async def scenario(cdp: wd.CDP):
        ids = await wd.add_loader(cdp, wd.TINY_CKPT, wd.TINY_FIXTURE)
        await cdp.js(RUN_GRAPH % {"lokr": ids["lokr"], "file": json.dumps(wd.TINY_FIXTURE)})
        return await cdp.wait_js(f"{wd.panel_js(ids['lokr'])}?.querySelector('[data-lokr=report]')?.innerText",
                                 240, "the run report on the LoKr Loader")

    report, _console = run(scenario, browser, url, "classic")
    assert "Matched" in report and "4 / 5" in report, (frontend, report, log.read_text()[-2000:])
    assert "lora_unet_down_blocks_2_attentions_0_transformer_blocks_0_attn1_to_q" in report, report
