"""Run the web extension's JavaScript tests (``node --test tests/web``) and check that the Python
block-weight parser agrees with the JavaScript one on the shared vectors (tests/web/block_vectors.json)."""
from __future__ import annotations

import inspect
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
    """lokr_core.block_weights' vector parser as f(text, family, A, B) -> {block id: value}."""
    bw = pytest.importorskip("lokr_core.block_weights")
    fn = getattr(bw, "parse_block_vector", None) or getattr(bw, "parse_vector", None)
    if fn is None:
        pytest.skip("lokr_core.block_weights has no parse_block_vector yet")
    params = inspect.signature(fn).parameters

    def parse(text: str, family: str, a: float, b: float) -> dict:
        kwargs = {k: v for k, v in {"family": family, "A": a, "B": b, "a": a, "b": b}.items() if k in params}
        result = fn(text, **kwargs)
        blocks = getattr(result, "blocks", result)
        return dict(blocks)

    return parse


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_python_parser_agrees_with_js(case):
    parse = _python_parser()
    from lokr_core.errors import LoKrError

    args = (case["vector"], case["family"], case.get("A", 1.0), case.get("B", 1.0))
    if "error" in case:
        with pytest.raises((LoKrError, ValueError)):
            parse(*args)
        return
    blocks = parse(*args)
    expected = {k: v for k, v in case["blocks"].items() if v is not None}  # R/U: seeded, drawn in Python
    assert set(case["blocks"]) <= set(blocks)
    for key, value in expected.items():
        assert blocks[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
