"""Tests of comfyui-lokr; ``tests/<layer>/`` mirrors ``lokr_core/<layer>/``, fixtures in :mod:`tests.support`."""
