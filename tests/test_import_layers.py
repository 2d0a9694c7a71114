"""tools/import_layers.py: lokr_core's layers hold (no upward import, no cycle), and the checker sees both."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "import_layers.py"


def _run(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), "--root", str(root)], capture_output=True, text=True, timeout=60)


def test_lokr_core_has_no_upward_imports_and_no_cycles():
    r = _run(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "upward imports: none" in r.stdout and "cycles: none" in r.stdout
    assert "levels: 8 " in r.stdout  # the seven layer folders + the package root
    assert "commands   lokr_core.commands.cli" in r.stdout


def test_checker_reports_upward_lazy_imports_and_cycles(tmp_path):
    pkg = tmp_path / "lokr_core"
    for sub in ("base", "ops"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text('_EXPORTS = {"thing": "base.low"}\n')
    (pkg / "base" / "low.py").write_text("def f():\n    from ..ops import high  # lazy, still counts\n")
    (pkg / "ops" / "high.py").write_text("from ..base import low\n")
    r = _run(tmp_path)
    assert r.returncode == 1
    assert "upward imports: lokr_core.base.low -> lokr_core.ops.high" in r.stdout
    assert "cycles: lokr_core.base.low <-> lokr_core.ops.high" in r.stdout
