"""LoKr Power Loader's rows editor in a real ComfyUI + frontend, driven by headless Chromium.

One server and one browser for the module (as ``test_web_panel.py``); the scenario runs in the
classic canvas and in the Vue node mode (skipped on a frontend without it). It adds three rows
through the editor (the "+ Add LoKr" button, the filter box, a click on a file of a sub folder),
switches one off, moves one, sets strengths linked and unlinked, and checks that the node's hidden
``rows`` widget holds exactly the JSON the Python node reads: in the saved workflow, in the API
prompt (which the server validates with the node's own ``VALIDATE_INPUTS``) and after reloading the
workflow. A file with a ``.png`` and a ``.civitai.info`` beside it shows its preview and trigger
words; a run status handed to ``onExecuted`` shows per row.
"""
from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import pytest

import web_driver as wd
from test_web_panel import MODES, placement, run  # one browser-page runner for the web tests

STYLE = "styles/corgi_style.safetensors"  # the SD1 fixture again, in a sub folder, with sidecar files
WORDS = ["corgi style", "watercolor"]
# a 2 x 2 PNG (red, green / blue, white)
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000020000000208020000fdd49a73000000164944415478"
    "9c63f8cfc0f01f0418181a1a18000021fc03fd3bbd7d1e0000000049454e44ae426082")


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    """(base URL, server log, frontend version) of a ComfyUI whose loras folder also holds STYLE
    with a preview and a Civitai Helper info file beside it."""
    import os
    from pathlib import Path

    path = os.environ.get("COMFYUI_PATH")
    if not path or not (Path(path) / "main.py").exists():
        pytest.skip("COMFYUI_PATH (a ComfyUI checkout with main.py) is not set")
    if wd.chromium_path() is None:
        pytest.skip("no chromium binary (set CHROMIUM or install Debian's chromium)")
    base = wd.make_base(tmp_path_factory.mktemp("comfy_base"))
    loras = base / "models" / "loras"
    (loras / "styles").mkdir()
    shutil.copy(loras / wd.FIXTURE, loras / STYLE)
    (loras / "styles" / "corgi_style.png").write_bytes(PNG)
    (loras / "styles" / "corgi_style.civitai.info").write_text(json.dumps(
        {"id": 2, "modelId": 1, "trainedWords": WORDS, "baseModel": "SD 1.5", "model": {"name": "Corgi style"}}))
    frontend = wd.frontend_version(wd.comfy_python(Path(path)))
    try:
        with wd.comfy_server(Path(path), base) as url:
            yield url, base / "server.log", frontend
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if wd.chromium_path() is None:
        pytest.skip("no chromium binary")
    with wd.chromium(tmp_path_factory.mktemp("chromium_profile")) as port:
        yield port


NODE = "window.comfyAPI.app.app.graph.getNodeById(%s)"
ROWS_DOM = """(() => { const p = %s; if (!p?.isConnected) return null;
  return [...p.querySelectorAll('[data-lokr=power-row]')].map((r) => ({
    file: r.querySelector('[data-lokr=power-file-button]').title,
    on: r.querySelector('[data-lokr=power-on]').checked,
    model: r.querySelector('[data-lokr=power-model]').value, clip: r.querySelector('[data-lokr=power-clip]').value,
    words: [...r.querySelectorAll('[data-lokr=power-words] .lokr-tag')].map((t) => t.textContent),
    preview: r.querySelector('[data-lokr=power-preview]')?.naturalWidth ?? 0,
    flag: r.querySelector('[data-lokr=power-flag]')?.title ?? null,
    status: r.querySelector('[data-lokr=power-status]')?.textContent ?? null})); })()"""


async def add_row(cdp: wd.CDP, node_id: int, query: str, file: str, real_click: bool = False) -> None:
    """Add a row through the editor: "+ Add LoKr", type ``query`` in the filter, click ``file``."""
    panel = wd.panel_js(node_id, "lokrPowerPanel")
    add = f"{panel}.querySelector('[data-lokr=power-add]')"
    if real_click:
        r = await wd.element_rect(cdp, add)
        await cdp.click(r["cx"], r["cy"])
    else:
        await cdp.js(f"{add}.click(); true")
    await cdp.wait_js(f"!!{panel}.querySelector('[data-lokr=power-file]')", 20, "the file list of the picker",
                      diag=f"{panel}.innerText")
    await cdp.js(f"(() => {{ const f = {panel}.querySelector('[data-lokr=power-filter]'); f.value = {json.dumps(query)};"
                 " f.dispatchEvent(new Event('input')); return true; })()")
    item = f"{panel}.querySelector('[data-lokr=power-file][data-file=\"{file}\"]')"
    if real_click:
        await wd.settle(cdp, 0.3)
        r = await wd.element_rect(cdp, item)
        assert r and r["hit"], r
        await cdp.click(r["cx"], r["cy"])
    else:
        await cdp.js(f"{item}.click(); true")


async def edit(cdp: wd.CDP, node_id: int, index: int, tag: str, value=None) -> None:
    """Edit row ``index``: click its ``tag`` control, or set its ``tag`` input / select to ``value``."""
    target = f"{wd.panel_js(node_id, 'lokrPowerPanel')}.querySelectorAll('[data-lokr=power-row]')[{index}]" \
             f".querySelector('[data-lokr={tag}]')"
    if value is None:
        await cdp.js(f"{target}.click(); true")
    else:
        await cdp.js(f"(() => {{ const e = {target}; e.value = {json.dumps(str(value))};"
                     " e.dispatchEvent(new Event('change')); return true; })()")


SAVE_AND_RELOAD = """(async () => {
  const app = window.comfyAPI.app.app;
  const n = app.graph.getNodeById(%(id)s);
  const w = n.widgets.find((x) => x.name === 'rows');
  const live = {value: w.value, hidden: !!w.hidden, textareas: %(textareas)s};
  const wf = JSON.parse(JSON.stringify(app.graph.serialize()));
  const prompt = await app.graphToPrompt();
  await app.loadGraphData(wf);
  return {live, saved: wf.nodes.find((x) => x.type === 'LoKrPowerLoader').widgets_values,
          api: prompt.output[String(%(id)s)].inputs, output: prompt.output};
})()"""

# textareas that show: the node's Vue element in Vue mode, the rows widget's own element otherwise
TEXTAREAS = ("(LiteGraph.vueNodesMode ? [...document.querySelectorAll(`.lg-node[data-node-id=\"${n.id}\"] textarea`)]"
             " : [w.element].filter(Boolean)).filter((t) => t.offsetParent !== null && t.getClientRects().length).length")


@pytest.mark.parametrize("mode", MODES)
def test_power_rows_editor(comfy, browser, tmp_path, mode):
    url, log, frontend = comfy

    async def scenario(cdp: wd.CDP):
        ids = await wd.add_loader(cdp, wd.CKPT, wd.FIXTURE, "LoKrPowerLoader")
        node_id = ids["lokr"]
        await cdp.js(f"{NODE % node_id}.setSize([460, {NODE % node_id}.size[1]]); true")
        info = await cdp.js(f"""(() => {{ const app = window.comfyAPI.app.app; const lokr = {NODE % node_id};
            const info = LiteGraph.createNode('LoKrInfo'); info.pos = [1000, 150]; app.graph.add(info);
            info.widgets.find((x) => x.name === 'lokr_name').value = {json.dumps(wd.FIXTURE)};
            lokr.connect(0, info, info.inputs.findIndex((i) => i.name === 'model'));
            lokr.connect(1, info, info.inputs.findIndex((i) => i.name === 'clip')); return info.id; }})()""")
        panel = wd.panel_js(node_id, "lokrPowerPanel")
        empty = await cdp.wait_js(f"(() => {{ const p = {panel}; return p?.isConnected ? p.innerText : null; }})()",
                                  20, "the empty rows editor")
        await add_row(cdp, node_id, "corgi sty", STYLE, real_click=True)
        await add_row(cdp, node_id, "tiny", wd.TINY_FIXTURE)
        await add_row(cdp, node_id, "sd15", wd.FIXTURE)
        three = await cdp.wait_js(f"(() => {{ const r = {ROWS_DOM % panel}; return r?.length === 3"
                                  " && r[0].words.length && r[0].preview ? r : null; })()", 30,
                                  "three rows, the first with its preview and trigger words", diag=ROWS_DOM % panel)
        where = await placement(cdp, node_id, panel)
        await edit(cdp, node_id, 1, "power-on")                    # tiny fixture off
        await edit(cdp, node_id, 2, "power-up")                    # sd15 fixture up: style, sd15, tiny
        await edit(cdp, node_id, 0, "power-model", 0.6)            # linked: clip follows
        await edit(cdp, node_id, 1, "power-clip", 0.3)             # unlinks
        await edit(cdp, node_id, 1, "power-model", 0.8)            # clip stays 0.3
        await edit(cdp, node_id, 0, "power-blocks", "SD-OUTALL")
        shot = await cdp.screenshot(tmp_path / f"power_{mode}.png", wd.clip(await wd.node_rect(cdp, [node_id])))
        status = {"model_family": "sd1", "model_family_label": "SD1.x", "rows": [
            {"index": 0, "file": STYLE, "on": True, "kind": "lokr", "family": "sd1", "family_label": "SD1.x",
             "matched": 30, "total": 40, "trigger_words": WORDS},
            {"index": 1, "file": wd.FIXTURE, "on": True, "kind": "lokr", "family": "sd1", "family_label": "SD1.x",
             "matched": 40, "total": 40, "trigger_words": []},
            {"index": 2, "file": wd.TINY_FIXTURE, "on": False, "kind": "off", "family": None, "family_label": None,
             "matched": None, "total": None, "trigger_words": []}]}
        await cdp.js(f"{NODE % node_id}.onExecuted({{lokr_power: [{json.dumps(status)}]}}); true")
        after_run = await cdp.wait_js(f"(() => {{ const r = {ROWS_DOM % panel}; return r?.every((x) => x.status)"
                                      " ? r : null; })()", 10, "the run status on each row")
        saved = await cdp.js(SAVE_AND_RELOAD % {"id": node_id, "textareas": TEXTAREAS})
        reloaded = await cdp.wait_js(f"""(() => {{ const n = window.comfyAPI.app.app.graph.nodes.find(
            (x) => x.type === 'LoKrPowerLoader'); if (!n) return null; const r = {ROWS_DOM % wd.panel_js('n.id', 'lokrPowerPanel')};
            return r?.length === 3 && r[0].preview ? {{rows: r, value: n.widgets.find((x) => x.name === 'rows').value,
            hidden: !!n.widgets.find((x) => x.name === 'rows').hidden}} : null; }})()""",
                                     30, "the rows editor after reloading the workflow")
        return dict(empty=empty, three=three, where=where, shot=shot, after_run=after_run, saved=saved,
                    reloaded=reloaded, info=info)

    r, console = run(scenario, browser, url, mode)
    ctx = (frontend, mode)
    assert "No rows" in r["empty"], (ctx, r["empty"])
    first = r["three"][0]
    assert [x["file"] for x in r["three"]] == [STYLE, wd.TINY_FIXTURE, wd.FIXTURE], (ctx, r["three"])
    assert first["words"] == WORDS and first["preview"] == 2, (ctx, first)  # the .civitai.info words, the 2 px png
    where = r["where"]
    assert where["visible"] and where["inside"] and where["hit"], (ctx, where)
    assert 0 < r["shot"] < 300_000, (ctx, r["shot"])
    want = [
        {"on": True, "file": STYLE, "strength_model": 0.6, "strength_clip": 0.6, "linked": True, "blocks": "SD-OUTALL"},
        {"on": True, "file": wd.FIXTURE, "strength_model": 0.8, "strength_clip": 0.3, "linked": False, "blocks": ""},
        {"on": False, "file": wd.TINY_FIXTURE, "strength_model": 1, "strength_clip": 1, "linked": True, "blocks": ""},
    ]
    saved = r["saved"]
    assert json.loads(saved["live"]["value"]) == want, (ctx, saved["live"])
    assert saved["live"]["hidden"] and saved["live"]["textareas"] == 0, (ctx, saved["live"])  # the textarea is hidden
    assert saved["saved"] == [saved["live"]["value"], *saved["saved"][1:]], (ctx, saved["saved"])  # rows is saved first
    assert saved["api"]["rows"] == saved["live"]["value"], (ctx, saved["api"])  # the API prompt: the same JSON text
    statuses = [x["status"] for x in r["after_run"]]
    assert "LoKr · 30 / 40 matched" in statuses[0] and "40 / 40" in statuses[1] and "off" in statuses[2], (ctx, statuses)
    back = r["reloaded"]
    assert back["value"] == saved["live"]["value"] and back["hidden"], (ctx, back)
    assert [(x["file"], x["on"], x["model"], x["clip"]) for x in back["rows"]] == [
        (STYLE, True, "0.6", "0.6"), (wd.FIXTURE, True, "0.8", "0.3"), (wd.TINY_FIXTURE, False, "1", "1")], (ctx, back)
    # the server reads the API prompt's rows with the node's own checks (VALIDATE_INPUTS): no error for them
    body = json.dumps({"prompt": saved["output"]}).encode()
    req = urllib.request.Request(f"{url}/prompt", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        answer = json.loads(e.read())
    assert str(r["info"]) in saved["output"], (ctx, saved["output"])
    assert not answer.get("node_errors") and not answer.get("error"), (ctx, answer)
    assert not wd.lokr_errors(console), (ctx, wd.lokr_errors(console), log.read_text()[-1500:])
