"""example_workflows/: committed files equal what tests/support/workflows.py builds, every node type
exists (ours or ComfyUI core's), and widget values line up with our nodes' widget inputs."""
from __future__ import annotations

import json
import sys

import pytest

from tests.support import comfy_standins as cs
from tests.support import workflows
from tests.support.comfy_pack import pack_module

CORE = {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage",
        "CreateHookKeyframe", "SetHookKeyframes", "SetClipHooks"}
SOCKET_TYPES = {"MODEL", "CLIP", "VAE", "LORA_STACK", "CONDITIONING", "LATENT", "IMAGE", "HOOKS"}


@pytest.fixture
def mappings(tmp_path, monkeypatch):
    (tmp_path / "loras").mkdir()
    monkeypatch.setitem(sys.modules, "folder_paths", cs.folder_paths_module(str(tmp_path / "loras"), str(tmp_path)))
    return pack_module("nodes").node_mappings()[0]


def test_committed_workflows_are_current():
    for path, text in workflows.rendered().items():
        assert path.is_file(), f"{path} missing: run python -m tests.support.workflows"
        assert path.read_text() == text, f"{path} is stale: run python -m tests.support.workflows"


def test_workflow_nodes_exist_and_widgets_match(mappings):
    for name, graph in workflows.graphs().items():
        ui = json.loads((workflows.OUT / f"{name}.json").read_text())
        api = json.loads((workflows.OUT / "api" / f"{name}.json").read_text())
        assert len(ui["nodes"]) == len(api) == len(graph)
        for node in ui["nodes"]:
            t = node["type"]
            assert t in mappings or t in CORE, (name, t)
            if t in mappings:
                spec = mappings[t].INPUT_TYPES()
                widgets = [k for g in ("required", "optional") for k, v in spec.get(g, {}).items()
                           if not (isinstance(v[0], str) and v[0] in SOCKET_TYPES)]
                assert workflows.SOCKETS[t][2] == widgets, (t, widgets)
                assert len(node["widgets_values"]) == len(widgets), (name, t)
        for nid, node in api.items():
            for inp, v in node["inputs"].items():
                if isinstance(v, list):
                    assert v[0] in api, (name, nid, inp)
