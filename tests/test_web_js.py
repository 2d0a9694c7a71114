"""Run the web extension's JavaScript tests (``node --test tests/web``), check that the Python
block-weight parser agrees with the JavaScript one on the shared vectors (tests/web/block_vectors.json),
and that every node input name the JavaScript reads is an input of one of the pack's nodes."""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CASES = json.loads((ROOT / "tests" / "web" / "block_vectors.json").read_text())["cases"]


def _node() -> str:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed")
    return node


def test_node_tests_pass():
    proc = subprocess.run([_node(), "--test", "tests/web"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout
    assert "# pass 0" not in proc.stdout


def _node_inputs() -> tuple[set[str], set[str]]:
    """From nodes/*.py (read, not imported): the input names in every ``{"required": {...}, "optional":
    {...}}`` literal (INPUT_TYPES) and those built with f-strings (``out[f"lokr_{i}"] = ...`` -> ``"lokr_{}"``)."""
    names, patterns = set(), set()
    for path in sorted((ROOT / "nodes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and key.value in ("required", "optional") and isinstance(value, ast.Dict):
                        names.update(k.value for k in value.keys if isinstance(k, ast.Constant))
            elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript):
                key = node.targets[0].slice
                if isinstance(key, ast.JoinedStr):
                    patterns.add("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in key.values))
    return names, patterns


def test_js_reads_only_inputs_the_nodes_have():
    """web/logic/node_ui.js names the node inputs and values the panels read: each is in nodes/*.py."""
    script = ("import * as U from './web/logic/node_ui.js'; console.log(JSON.stringify({inputs: U.INPUTS,"
              " custom: U.CUSTOM_PRESET, auto: U.AUTO_FAMILY, report: U.REPORT_KEY}));")
    proc = subprocess.run([_node(), "--input-type=module", "-e", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    js = json.loads(proc.stdout)
    names, patterns = _node_inputs()
    from tests.support.comfy_pack import pack_module

    bw = pack_module("nodes.block_weights")
    assert {"lokr_name", "model", "strength_model"} <= names  # the scan finds the loaders' inputs
    missing = [name for name in js["inputs"].values() if name not in names]
    assert not missing, f"web/logic/node_ui.js reads inputs no node has: {missing}"
    assert "lokr_{}" in patterns  # LoKr Stack's slots, which stackSlotNames (/^lokr_\d+$/) picks
    assert js["custom"] == bw.CUSTOM  # nodes/block_weights.py
    assert js["auto"] in bw.FAMILIES
    assert f'"{js["report"]}"' in (ROOT / "nodes" / "loaders.py").read_text()  # {"ui": {"lokr_report": [...]}}


def _js(expr: str, module: str) -> object:
    """JSON of ``expr`` evaluated with ``M`` = web/logic/<module>.js imported."""
    script = f"import * as M from './web/logic/{module}.js'; console.log(JSON.stringify({expr}));"
    proc = subprocess.run([_node(), "--input-type=module", "-e", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_js_family_tables_are_lokr_cores():
    """web/logic's transformer tables (block counts, presets, labels) are lokr_core's, and the node's
    family menu holds every family the editor lays out."""
    from lokr_core.keymap import block_weights as bw
    from lokr_core.keymap import family_signatures as sig

    js = _js("{blocks: M.DIT_BLOCKS, presets: M.DIT_PRESETS, kinds: M.DIT_KINDS}", "dit_blocks")
    assert js["blocks"] == sig.DEFAULT_BLOCKS and list(js["blocks"]) == [f for f in sig.ORDER if f in sig.DEFAULT_BLOCKS]
    assert js["presets"] == bw.DIT_PRESETS and tuple(js["kinds"]) == bw.DIT_KINDS
    from lokr_core.keymap.family import FAMILY_LABELS

    assert _js("M.FAMILY_LABELS", "family") == dict(FAMILY_LABELS)
    layouts = _js("Object.fromEntries(Object.keys(M.DIT_BLOCKS).map((f) => [f, M.ditLayout(f)]))", "dit_blocks")
    for fam in sig.DEFAULT_BLOCKS:  # the editor's layout IDs are lokr_core's dit_layout
        assert layouts[fam] == list(bw.dit_layout(fam)), fam


def _python_parser():
    """lokr_core.keymap.block_weights.parse_block_weights as f(text, family, A, B) -> {block id: value}."""
    from lokr_core.keymap import block_weights as bw

    def parse(text: str, family: str, a: float, b: float, blocks: dict | None = None) -> dict:
        return dict(bw.parse_block_weights(text, family, a=a, b=b, seed=0, blocks=blocks))

    return parse


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_python_parser_agrees_with_js(case):
    parse = _python_parser()
    from lokr_core import LoKrError

    args = (case["vector"], case["family"], case.get("A", 4.0), case.get("B", 1.0), case.get("dit_blocks"))
    if "error" in case:
        with pytest.raises((LoKrError, ValueError)) as err:
            parse(*args)
        if case.get("py_error", True) and not case["error"].startswith("'"):
            assert case["error"].strip("'") in str(err.value) or case["error"] in str(err.value), str(err.value)
        return
    blocks = parse(*args)
    expected = {k: v for k, v in case["blocks"].items() if v is not None}  # R/U: seeded, drawn in Python
    assert set(case["blocks"]) <= set(blocks)  # Python fills a short vector's other blocks with 1
    assert [k for k in blocks if k in case["blocks"]] == list(case["blocks"])  # same order
    for key, value in expected.items():
        assert blocks[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_js_rows_are_what_the_power_loader_reads():
    """The rows editor's widget text (web/logic/power_rows.js) is read by the node's parser
    (nodes/rows.py) as the same rows; both name the same keys, and the UI key is the node's."""
    from tests.support.comfy_pack import pack_module

    rows_mod = pack_module("nodes.rows")
    js = _js("{keys: M.ROW_KEYS, power: M.POWER_KEY, text: M.serializeRows(M.setBlocks(M.setStrength(M.toggleRow("
             "M.addRow(M.addRow(M.addRow([], 'a.safetensors'), 'sub/b.safetensors'), 'c.safetensors'), 2),"
             " 1, 'clip', 0.25), 0, 'SD-OUTALL')),"
             " back: M.parseRows('[{\"file\": \"x.safetensors\", \"strength_model\": 0.5}]').rows}", "power_rows")
    assert tuple(js["keys"]) == rows_mod.KEYS
    assert f'"{js["power"]}"' in (ROOT / "nodes" / "power_loader.py").read_text()
    parsed = rows_mod.parse_rows(js["text"])
    assert [(r.index, r.file, r.on, r.strength_model, r.strength_clip, r.linked, r.blocks) for r in parsed] == [
        (0, "a.safetensors", True, 1.0, 1.0, True, "SD-OUTALL"),
        (1, "sub/b.safetensors", True, 1.0, 0.25, False, ""),
        (2, "c.safetensors", False, 1.0, 1.0, True, ""),
    ]
    (x,) = rows_mod.parse_rows(json.dumps(js["back"]))  # the editor's defaults are the node's
    assert (x.on, x.strength_model, x.strength_clip, x.linked, x.blocks) == (True, 0.5, 0.5, True, "")
