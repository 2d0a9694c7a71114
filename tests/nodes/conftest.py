"""Fixtures of the CPU node tests (ComfyUI stand-ins; see tests/support/node_env.py)."""
import pytest

from tests.support.node_env import make_env


@pytest.fixture
def env(tmp_path, monkeypatch):
    return make_env(tmp_path, monkeypatch)
