"""Shared pytest set-up: make lycoris-lora use plain torch kernels (its default torch.compile costs
~45 s on a first call on CPU) and fix seeds.

``tests`` is a package: fixtures and helpers are imported as ``tests.support.<module>`` (pytest puts
the repository root on ``sys.path`` for it). The node pack is loaded the way ComfyUI loads it
(``tests.support.comfy_pack``), never as a top-level ``nodes`` package.
"""
import os

os.environ.setdefault("LYCORIS_KERNEL_BACKEND", "torch")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
