"""Shared pytest set-up: make lycoris-lora use plain torch kernels (its default torch.compile costs
~45 s on a first call on CPU), keep the repo importable, fix seeds.

``tests`` is a package: the lokr_core tests import their fixtures as ``tests.support``. The
``tests`` folder itself is still put on ``sys.path`` for the node-pack tests (``test_nodes_*``,
``test_routes``, ``tests/comfyui``), which import ``comfy_standins`` / ``lokr_node_fixtures`` by
their bare names.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("LYCORIS_KERNEL_BACKEND", "torch")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
