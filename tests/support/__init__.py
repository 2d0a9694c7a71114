"""Shared test fixtures, imported as a package (``from tests.support import lokr_fixtures``).

- :mod:`.models`: tiny and full-size (meta device) SD-shaped models built from configs;
- :mod:`.keylists`: the module names every tool writes for a model (kohya, LyCORIS, PEFT, ...);
- :mod:`.lokr_fixtures`: LoKr files made by lycoris-lora / PEFT, the reference implementations;
- :mod:`.lokr_node_fixtures`: lycoris-lora ``LokrModule`` per layer and merged references for node tests;
- :mod:`.comfy_pack`: loads the repository as a ComfyUI custom-node pack, the way ComfyUI does;
- :mod:`.comfy_standins`: small stand-ins for ComfyUI's ModelPatcher / CLIP / folder_paths;
- :mod:`.node_env`: a node-test environment (stand-in model, CLIP, loras folder) over those;
- :mod:`.workflows`: the example workflows (``python -m tests.support.workflows`` writes them).
"""
