"""Run the web extension's JavaScript tests (``node --test tests/web``) and check that the Python
block-weight parser agrees with the JavaScript one on the shared vectors (tests/web/block_vectors.json)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CASES = json.loads((ROOT / "tests" / "web" / "block_vectors.json").read_text())["cases"]


def test_node_tests_pass():
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed")
    proc = subprocess.run([node, "--test", "tests/web"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout


def _python_parser():
    """lokr_core.keymap.block_weights.parse_block_weights as f(text, family, A, B) -> {block id: value}."""
    from lokr_core.keymap import block_weights as bw

    def parse(text: str, family: str, a: float, b: float) -> dict:
        return dict(bw.parse_block_weights(text, family, a=a, b=b, seed=0))

    return parse


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_python_parser_agrees_with_js(case):
    parse = _python_parser()
    from lokr_core import LoKrError

    args = (case["vector"], case["family"], case.get("A", 4.0), case.get("B", 1.0))
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
