"""Fuzz: the LoKr loader nodes (ComfyUI stand-ins, tests/support/node_env) and the HTTP routes
(aiohttp test client, the real lokr_core backend) with hostile files in the loras folder: raw
safetensors bytes and hostile LoKr module sets named for the stand-in model.

Nodes: only the pack's LoKrError subclasses may escape, the input MODEL / CLIP never change, and a
successful load gives patches that ComfyUI can compute into finite weights. Routes: every answer
is JSON, 200 or 4xx, never a server error.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import math

import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st
from safetensors.torch import save_file

from tests.fuzz.strategies import FuzzTarget, fuzz, kohya, module_set, safetensors_blob, targets_for
from tests.support import comfy_standins as cs
from tests.support.comfy_pack import pack_module
from tests.support.node_env import make_env

errors = pack_module("lokr_core.base.errors")
loaders = pack_module("nodes.loaders")
common = pack_module("nodes.common")
routes = pack_module("nodes.routes")
_names = itertools.count()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        yield make_env(tmp_path_factory.mktemp("fuzz_nodes"), mp)


def stand_in_targets() -> list[FuzzTarget]:
    """The stand-in UNet's and CLIP's layers as FuzzTargets (kohya / lycoris_ / dotted names)."""
    unet = targets_for([(k[len("diffusion_model."):], None, tuple(cs.UNET_LAYERS[k]().weight.shape))
                        for k in cs.UNET_LAYERS])
    clip = []
    for k, make in cs.CLIP_LAYERS.items():
        path = k[len("clip_l.transformer."):]
        clip.append(FuzzTarget({"kohya_ldm": kohya("lora_te_", path), "lycoris_ldm": kohya("lora_te1_", path),
                                "dotted_ldm": "text_encoders.clip_l." + path}, tuple(make().weight.shape)))
    return unet + clip


TARGETS = stand_in_targets()
STRENGTHS = st.sampled_from([1.0] * 4 + [0.5, -2.0, 0.0, math.nan, math.inf, 1e38])


def run_loaders(env, name: str, strength: float, apply: str, strict: bool) -> None:
    """Both loader nodes on ``name``: errors must be LoKrErrors, inputs unchanged, results finite."""
    snap_m, snap_c = cs.snapshot(env["model"]), cs.snapshot(env["clip"].patcher)
    calls = [(loaders.LoKrLoader(), (env["model"], env["clip"], name, strength, 1.0)),
             (loaders.LoKrLoaderModelOnly(), (env["model"], name, strength))]
    for node, args in calls:
        try:
            out = getattr(node, node.FUNCTION)(*args, apply=apply, strict=strict)
        except errors.LoKrError as exc:
            event(f"node: {type(exc).__name__}")
        else:
            event("node: loaded")
            if apply == common.PATCH:
                for patcher in (out["result"][0], *(o.patcher for o in out["result"][1:])):
                    bad = [k for k, v in patcher.patched_state_dict().items() if not torch.isfinite(v).all()]
                    assert not bad, bad[:3]
            json.dumps(out["ui"], allow_nan=True)
        assert cs.unchanged(env["model"], snap_m) and cs.unchanged(env["clip"].patcher, snap_c)


@fuzz(200)
@given(data=st.data(), strength=STRENGTHS, apply=st.sampled_from(common.APPLY_MODES), strict=st.booleans())
def test_loader_nodes_module_sets(data, strength, apply, strict, env):
    sd, notes = data.draw(module_set(TARGETS), label="state dict")
    name = f"m{next(_names)}.safetensors"
    try:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(env["loras"] / name))
    except Exception:
        return
    run_loaders(env, name, strength, apply, strict)


@fuzz(200)
@given(blob=safetensors_blob(), strength=STRENGTHS)
def test_loader_nodes_raw_bytes(blob, strength, env):
    name = f"b{next(_names)}.safetensors"
    (env["loras"] / name).write_bytes(blob)
    run_loaders(env, name, strength, common.PATCH, False)


# ------------------------------------------------------------------------------------------ routes
def get_all(loras, paths: list[str]) -> list[tuple[int, str]]:
    """GET every path on one app with the routes over ``loras`` (real backend); [(status, body)]."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    fp = cs.folder_paths_module(str(loras), str(loras))

    async def go():
        app = web.Application()
        routes.add_routes(app.router, fp)
        async with TestClient(TestServer(app)) as client:
            out = []
            for p in paths:
                resp = await client.get(p)
                out.append((resp.status, await resp.text()))
            return out

    return asyncio.run(go())


@fuzz(40)
@given(data=st.data())
def test_routes_hostile_files(data, env):
    from urllib.parse import quote

    paths = []
    for _ in range(data.draw(st.integers(1, 4))):
        name = f"r{next(_names)}.safetensors"
        if data.draw(st.booleans()):
            (env["loras"] / name).write_bytes(data.draw(safetensors_blob(), label="blob"))
        else:
            sd, _ = data.draw(module_set(TARGETS), label="state dict")
            try:
                save_file({k: v.contiguous() for k, v in sd.items()}, str(env["loras"] / name))
            except Exception:
                continue
        family = data.draw(st.sampled_from(["sd1", "sdxl", "flux", "nope"] + list(routes.FAMILIES)[:3]))
        paths += [f"/lokr/info?file={quote(name)}", f"/lokr/report?file={quote(name)}&family={family}"]
    for status, text in get_all(env["loras"], paths):
        event(f"route: {status}")
        assert status == 200 or 400 <= status < 500, (status, text[:300])
        json.loads(text)
