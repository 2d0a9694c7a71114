"""Shared test fixtures, imported as a package (``from tests.support import lokr_fixtures``).

- :mod:`.models`: tiny and full-size (meta device) SD-shaped models built from configs;
- :mod:`.keylists`: the module names every tool writes for a model (kohya, LyCORIS, PEFT, ...);
- :mod:`.lokr_fixtures`: LoKr files made by lycoris-lora / PEFT, the reference implementations.
"""
