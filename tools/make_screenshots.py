"""Make the web extension's README images (docs/img/*.png) in a real ComfyUI and headless Chromium.

    COMFYUI_PATH=/path/to/ComfyUI <ComfyUI's python> tools/make_screenshots.py [--out docs/img] [--only NAME ...]

Starts ``main.py --cpu`` on a throw-away base directory with the test fixtures and a headless Chromium
(``tests/comfyui/web_driver.py``, the same driver as ``tests/comfyui/test_web_panel.py``), builds each
scene and writes one PNG per shot:

- ``lokr_loader_panel.png``: Checkpoint (SDXL name) -> LoKr Loader with an SD1 LoKr: summary, trigger
  words, family-mismatch badge, a "Last run" report; classic canvas.
- ``lokr_block_weights.png``: LoKr Block Weights, preset SD-OUTALL with two sliders moved; classic canvas.
- ``lokr_stack_panel.png``: LoKr Stack with two slots chosen; classic canvas.
- ``lokr_loader_panel_vue.png``: the LoKr Loader scene in the Vue node mode ("Nodes 2.0").
- ``lokr_power_loader.png``: LoKr Power Loader with three rows (one with a preview and trigger words,
  one off) and a run status; classic canvas.

This is the only thing that writes docs/img; the tests write their screenshots under a tmp dir.
Needs ``COMFYUI_PATH`` (``COMFYUI_PYTHON`` for ComfyUI's interpreter) and Chromium (``CHROMIUM``).
Exit status 2 when something needed is missing.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Awaitable, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "comfyui"))
import web_driver as wd  # noqa: E402

MAX_PNG = 300_000
Scene = Callable[[wd.CDP], Awaitable[list[int]]]


async def loader(cdp: wd.CDP) -> list[int]:
    """Checkpoint -> LoKr Loader with the panel and a run report; the node ids to frame."""
    ids = await wd.loader_scene(cdp)
    await wd.feed_report(cdp, ids["lokr"], wd.SAMPLE_REPORT)
    return [ids["ckpt"], ids["lokr"]]


async def block_weights(cdp: wd.CDP) -> list[int]:
    """LoKr Block Weights, SD-OUTALL with IN05 at 1.25 and MID at 0.5 (through the sliders)."""
    await wd.clear_graph(cdp)
    node_id = await wd.block_weights_scene(cdp, (400, 150))
    await cdp.js(f"""(() => {{ const s = {wd.panel_js(node_id, 'lokrEditor')}.querySelectorAll('input[type=range]');
        s[7].value = '0.5'; s[7].dispatchEvent(new Event('input'));
        s[4].value = '1.25'; s[4].dispatchEvent(new Event('input')); return true; }})()""")
    return [node_id]


async def stack(cdp: wd.CDP) -> list[int]:
    """LoKr Stack with the fixture in slots 1 and 3."""
    await wd.clear_graph(cdp)
    return [await wd.stack_scene(cdp, {1: wd.FIXTURE, 3: wd.FIXTURE})]


async def power(cdp: wd.CDP) -> list[int]:
    """LoKr Power Loader with three rows (the third off, the second's clip unlinked) and a run status."""
    node_id, _info = await wd.power_scene(cdp)
    for query, file in (("corgi", wd.STYLE), ("sd15", wd.FIXTURE), ("tiny", wd.TINY_FIXTURE)):
        await wd.add_power_row(cdp, node_id, query, file)
    panel = wd.panel_js(node_id, "lokrPowerPanel")
    await cdp.js(f"""(() => {{ const rows = {panel}.querySelectorAll('[data-lokr=power-row]');
        rows[2].querySelector('[data-lokr=power-on]').click();
        const clip = {panel}.querySelectorAll('[data-lokr=power-row]')[1].querySelector('[data-lokr=power-clip]');
        clip.value = '0.5'; clip.dispatchEvent(new Event('change'));
        window.comfyAPI.app.app.graph.getNodeById({node_id}).onExecuted({{lokr_power: [{{model_family: 'sd1',
          model_family_label: 'SD1.x', rows: [
          {{index: 0, file: {wd.STYLE!r}, on: true, kind: 'lokr', matched: 40, total: 40}},
          {{index: 1, file: {wd.FIXTURE!r}, on: true, kind: 'lokr', matched: 40, total: 40}},
          {{index: 2, file: {wd.TINY_FIXTURE!r}, on: false, kind: 'off', matched: null, total: null}}]}}]}});
        return true; }})()""")
    await cdp.wait_js(f"{panel}.querySelectorAll('[data-lokr=power-status]').length === 3"
                      f" && {panel}.querySelector('[data-lokr=power-preview]')?.naturalWidth > 0", 30,
                      "the rows with their preview and run status")
    return [node_id]


SHOTS: dict[str, tuple[str, Scene]] = {
    "lokr_loader_panel.png": ("classic", loader),
    "lokr_block_weights.png": ("classic", block_weights),
    "lokr_stack_panel.png": ("classic", stack),
    "lokr_loader_panel_vue.png": ("vue", loader),
    "lokr_power_loader.png": ("classic", power),
}


async def take(devtools: int, url: str, out: Path, names: list[str]) -> list[str]:
    """Write the shots ``names`` into ``out``; one line per shot (written, or why not)."""
    lines = []
    for mode in ("classic", "vue"):
        todo = [n for n in names if SHOTS[n][0] == mode]
        if not todo:
            continue
        async with wd.page(devtools) as cdp:
            info = await wd.open_app(cdp, url, vue=mode == "vue")
            if info["vue"] != (mode == "vue"):
                lines += [f"{n}: skipped (this frontend has no Vue node mode)" for n in todo]
                continue
            for name in todo:
                ids = await SHOTS[name][1](cdp)
                await wd.settle(cdp, 1.0)
                size = await cdp.screenshot(out / name, wd.clip(await wd.node_rect(cdp, ids)))
                if size >= MAX_PNG:
                    lines.append(f"{name}: WARNING {size} bytes (over {MAX_PNG})")
                lines.append(f"{name}: {size} bytes")
            errors = wd.lokr_errors(cdp.console)
            if errors:
                lines.append(f"console errors ({mode}): {errors}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder for the PNGs")
    parser.add_argument("--only", nargs="*", choices=sorted(SHOTS), help="make only these shots")
    args = parser.parse_args(argv)
    comfy = os.environ.get("COMFYUI_PATH")
    if not comfy or not (Path(comfy) / "main.py").is_file():
        print("make_screenshots: set COMFYUI_PATH to a ComfyUI folder (with main.py)", file=sys.stderr)
        return 2
    if wd.chromium_path() is None:
        print("make_screenshots: no chromium (install Debian's chromium or set CHROMIUM)", file=sys.stderr)
        return 2
    comfy_dir = Path(comfy)
    frontend = wd.frontend_version(wd.comfy_python(comfy_dir))
    print(f"ComfyUI {comfy_dir}, comfyui-frontend-package {frontend}")
    with tempfile.TemporaryDirectory(prefix="lokr_shots_") as tmp:
        base = wd.make_base(Path(tmp) / "base")
        (Path(tmp) / "profile").mkdir()
        with wd.comfy_server(comfy_dir, base) as url, wd.chromium(Path(tmp) / "profile") as devtools:
            lines = asyncio.run(take(devtools, url, args.out, args.only or list(SHOTS)))
    for line in lines:
        print(line)
    return 1 if any("console errors" in line for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
