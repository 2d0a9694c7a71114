"""Settings for the real-ComfyUI tests (``tests/comfyui``).

- Without ``COMFYUI_PATH`` the ``test_comfyui_*`` tests skip, each with a message naming the variable.
- ``LOKR_REQUIRE_COMFYUI=1`` (set by ``.ci/run``) turns a missing ComfyUI or chromium into a usage
  error (pytest exit code 4) instead of skips, so CI cannot pass without running them.
- The report header names the ComfyUI, frontend and chromium under test.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from web_driver import chromium_path


def _comfy_dir() -> Path | None:
    """``COMFYUI_PATH`` when it is a ComfyUI folder (holds ``main.py``), else None."""
    p = os.environ.get("COMFYUI_PATH")
    return Path(p) if p and (Path(p) / "main.py").is_file() else None


def _comfy_version(comfy: Path) -> str:
    """``__version__`` from ``comfyui_version.py`` (read as text: importing it is not needed)."""
    f = comfy / "comfyui_version.py"
    m = re.search(r'__version__\s*=\s*"([^"]+)"', f.read_text()) if f.is_file() else None
    return m.group(1) if m else "unknown"


def _frontend_version() -> str:
    """The installed ``comfyui-frontend-package`` version (this interpreter), or 'none'."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("comfyui-frontend-package")
    except PackageNotFoundError:
        return "none"


def pytest_configure(config: pytest.Config) -> None:
    """With ``LOKR_REQUIRE_COMFYUI=1``: a usage error unless COMFYUI_PATH and chromium are there."""
    if os.environ.get("LOKR_REQUIRE_COMFYUI") != "1":
        return
    if _comfy_dir() is None:
        raise pytest.UsageError("LOKR_REQUIRE_COMFYUI=1 but COMFYUI_PATH is not a ComfyUI folder with main.py "
                                f"(COMFYUI_PATH={os.environ.get('COMFYUI_PATH')!r})")
    if chromium_path() is None:
        raise pytest.UsageError("LOKR_REQUIRE_COMFYUI=1 but no chromium binary for the web-panel test "
                                "(install Debian's chromium or set CHROMIUM)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without ``COMFYUI_PATH``: skip every ``test_comfyui_*`` test (the modules import without ComfyUI)."""
    if _comfy_dir() is not None:
        return
    skip = pytest.mark.skip(reason="COMFYUI_PATH is not set: real-ComfyUI tests skipped")
    here = Path(__file__).parent
    for item in items:
        if item.path.parent == here and item.path.name.startswith("test_comfyui_"):
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """One line: the ComfyUI, frontend and chromium the tests run against (or why they skip)."""
    comfy = _comfy_dir()
    if comfy is None:
        return ["real ComfyUI: COMFYUI_PATH not set, tests/comfyui skip"]
    return [f"real ComfyUI {_comfy_version(comfy)} at {comfy}, comfyui-frontend-package {_frontend_version()}, "
            f"chromium: {chromium_path() or 'none (web-panel test skips)'}"]
