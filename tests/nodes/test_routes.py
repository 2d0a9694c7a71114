"""Tests of nodes/routes.py: the web extension's HTTP routes, through aiohttp's test client.

folder_paths is a stand-in (the ComfyUI module's three functions the routes use). Every traversal
attempt must get a 4xx JSON error and never a byte of the file behind it.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
import torch
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from safetensors.torch import save_file
from yarl import URL

from tests.support.comfy_pack import pack_module

errors = pack_module("lokr_core.base.errors")
routes = pack_module("nodes.routes")

SECRET = "TOPSECRET-CONTENT-0123"


class FolderPaths:
    """Stand-in of ComfyUI's folder_paths for one folder type, 'loras' (walks symlinks like ComfyUI)."""

    def __init__(self, *roots: Path) -> None:
        self.roots = [str(r) for r in roots]

    def get_folder_paths(self, folder: str) -> list[str]:
        if folder != "loras":
            raise KeyError(folder)
        return list(self.roots)

    def get_filename_list(self, folder: str) -> list[str]:
        names = []
        for root in self.get_folder_paths(folder):
            for dirpath, _dirs, files in os.walk(root, followlinks=True):
                for f in files:
                    names.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
        return sorted(names)

    def get_full_path(self, folder: str, name: str) -> str | None:
        for root in self.get_folder_paths(folder):
            path = os.path.join(root, name)
            if os.path.isfile(path):
                return path
        return None


def stand_in_load(path: str) -> SimpleNamespace:
    """Minimal loader: groups `<module>.lokr_*` keys (the real one is lokr_core.io.load_lokr)."""
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        keys = list(f.keys())
    modules = {k.rsplit(".", 1)[0] for k in keys if ".lokr_" in k}
    others = {k.rsplit(".", 1)[0]: "lora" for k in keys if ".lora_down" in k}
    if not keys:
        raise errors.LoKrFormatError(f"file {path!r}: no tensors")
    return SimpleNamespace(modules={m: None for m in sorted(modules)}, other_modules=others, source=path)


def stand_in_summarize(weights: SimpleNamespace) -> dict:
    return {"family": "sd1", "modules": len(weights.modules), "alpha": float("inf"), "shape": (2, 3),
            "path": weights.source}


BACKEND = routes.Backend(
    load=stand_in_load,
    summarize=stand_in_summarize,
    report=lambda w, fam: {"matched": {m: m for m in w.modules}, "unmatched": {}, "target": fam},
    presets=lambda: {"SD-ALL": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"},
)


def lokr_tensors() -> dict[str, torch.Tensor]:
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    return {f"{name}.lokr_w1": torch.randn(16, 16), f"{name}.lokr_w2_a": torch.randn(20, 4),
            f"{name}.lokr_w2_b": torch.randn(4, 20), f"{name}.alpha": torch.tensor(4.0)}


@pytest.fixture()
def tree(tmp_path: Path) -> SimpleNamespace:
    """loras/ with a LoKr, a LoRA-only file, garbage, a .ckpt, symlinks out; secret files outside."""
    root = tmp_path / "models" / "loras"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.safetensors"
    save_file(lokr_tensors(), str(secret), metadata={"note": SECRET})
    (outside / "secret.txt").write_text(SECRET)
    save_file(lokr_tensors(), str(root / "good.safetensors"))
    save_file(lokr_tensors(), str(root / "sub" / "nested lokr.safetensors"))
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2),
               "lora_unet_x.lora_up.weight": torch.zeros(2, 2)}, str(root / "plain_lora.safetensors"))
    (root / "garbage.safetensors").write_bytes(SECRET.encode() * 10)
    (root / "model.ckpt").write_bytes(SECRET.encode())
    (root / "notes.txt").write_text(SECRET)
    os.symlink(secret, root / "link_out.safetensors")
    os.symlink(outside, root / "linkdir")
    os.symlink(root / "good.safetensors", root / "link_in.safetensors")
    return SimpleNamespace(root=root, outside=outside, secret=secret, fp=FolderPaths(root))


def call(fp: FolderPaths, path: str, backend: routes.Backend = BACKEND):
    """GET ``path`` (sent byte for byte: no client-side re-quoting) on an app with the routes;
    return (status, parsed JSON, raw text)."""

    async def go():
        app = web.Application()
        routes.add_routes(app.router, fp, backend)
        async with TestClient(TestServer(app)) as client:
            base = str(client.make_url("/")).rstrip("/")
            resp = await client.session.get(URL(base + path, encoded=True), allow_redirects=False)
            text = await resp.text()
            return resp.status, text

    status, text = asyncio.run(go())
    return status, json.loads(text), text


def info(fp, name: str, backend: routes.Backend = BACKEND):
    return call(fp, "/lokr/info?file=" + quote(name, safe=""), backend)


def test_info_ok(tree):
    status, body, text = info(tree.fp, "good.safetensors")
    assert status == 200 and str(tree.root) not in text  # the summary's server path is dropped
    assert body == {"family": "sd1", "modules": 1, "alpha": "inf", "shape": [2, 3], "file": "good.safetensors"}


def test_info_nested_and_symlink_inside_ok(tree):
    assert info(tree.fp, "sub/nested lokr.safetensors")[0] == 200
    assert info(tree.fp, "link_in.safetensors")[0] == 200


@pytest.mark.parametrize("query", [
    "../outside/secret.safetensors",
    "sub/../../outside/secret.safetensors",
    "..\\outside\\secret.safetensors",
    "ABSOLUTE",
    "linkdir/../../outside/secret.safetensors",
    "%2e%2e%2foutside%2fsecret.safetensors",  # decoded once by the server
    "..%252Foutside%252Fsecret.safetensors",  # double-encoded separator
    "sub%5c..%5c..%5coutside%5csecret.safetensors",
    "good.safetensors%00.txt",
    "",
    "x" * 2000,
])
def test_traversal_refused(tree, query):
    if query == "ABSOLUTE":
        query = quote(str(tree.secret), safe="")
    status, body, text = call(tree.fp, "/lokr/info?file=" + query)
    assert 400 <= status < 500
    assert "error" in body and SECRET not in text
    if "outside" not in query:  # the name asked for is quoted back; no other path is shown
        assert str(tree.root) not in text


def test_traversal_unencoded_path_chars(tree):
    # raw, unencoded '/' and '..' in the query string reach the handler as is
    status, body, text = call(tree.fp, "/lokr/info?file=../outside/secret.safetensors")
    assert status == 404 and "not in the 'loras' folder list" in body["error"] and SECRET not in text


def test_missing_parameter(tree):
    status, body, _ = call(tree.fp, "/lokr/info")
    assert status == 400 and "missing query parameter 'file'" in body["error"]


@pytest.mark.parametrize("name", ["link_out.safetensors", "linkdir/secret.safetensors"])
def test_symlink_out_of_folder_refused(tree, name):
    assert name in tree.fp.get_filename_list("loras")  # listed, like ComfyUI lists it
    status, body, text = info(tree.fp, name)
    assert status == 403 and "resolves outside the 'loras' folders" in body["error"]
    assert SECRET not in text and str(tree.outside) not in text


@pytest.mark.parametrize("name", ["model.ckpt", "notes.txt"])
def test_non_safetensors_refused_unread(tree, name):
    loaded = []
    backend = routes.Backend(load=lambda p: loaded.append(p), summarize=stand_in_summarize)
    status, body, text = info(tree.fp, name, backend)
    assert status == 415 and "only .safetensors" in body["error"] and SECRET not in text
    assert loaded == []


def test_garbage_file_gives_422_without_content(tree):
    status, body, text = info(tree.fp, "garbage.safetensors")
    assert status == 422 and "not a readable safetensors file" in body["error"]
    assert SECRET not in text


def test_lora_only_file_is_not_lokr(tree):
    status, body, _ = info(tree.fp, "plain_lora.safetensors")
    assert status == 422 and "holds no LoKr modules (it holds lora modules)" in body["error"]


def test_lokr_error_message_names_file_not_path(tree):
    def load(path):
        raise errors.LoKrFormatError(f"file {path!r}, module 'm': expected lokr_w1 or lokr_w1_a/b")

    status, body, text = info(tree.fp, "good.safetensors", routes.Backend(load=load))
    assert status == 422
    assert "module 'm': expected lokr_w1" in body["error"] and str(tree.root) not in text


def test_file_vanished_after_listing(tree):
    fp = FolderPaths(tree.root)
    fp.get_full_path = lambda folder, name: None
    status, body, _ = info(fp, "good.safetensors")
    assert status == 404 and "no longer on disk" in body["error"]


def test_unknown_folder_type_is_500(tree):
    fp = FolderPaths(tree.root)
    fp.get_filename_list = lambda folder: (_ for _ in ()).throw(KeyError(folder))
    status, body, _ = info(fp, "good.safetensors")
    assert status == 500 and "not configured" in body["error"]


def test_report_ok_and_family_checked(tree):
    status, body, _ = call(tree.fp, "/lokr/report?file=good.safetensors&family=sdxl")
    assert status == 200 and body["target_family"] == "sdxl" and body["target"] == "sdxl"
    assert body["file"] == "good.safetensors" and len(body["matched"]) == 1
    for bad in ["", "&family=flux2x", "&family=SD1", "&family=flux/chroma"]:
        status, body, _ = call(tree.fp, "/lokr/report?file=good.safetensors" + bad)
        assert status == 400 and "expected one of sd1, sd2, sdxl, " in body["error"] and "flux" in body["error"]


def test_report_traversal_refused(tree):
    status, body, text = call(tree.fp, "/lokr/report?family=sd1&file=" + quote(str(tree.secret), safe=""))
    assert status == 404 and SECRET not in text


def test_presets(tree):
    status, body, _ = call(tree.fp, "/lokr/presets")
    assert status == 200 and body == {"presets": {"SD-ALL": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"}}


def test_lora_path_direct(tree):
    assert routes.lora_path("good.safetensors", tree.fp) == os.path.realpath(tree.root / "good.safetensors")
    with pytest.raises(routes.RouteError) as err:
        routes.lora_path(None, tree.fp)
    assert err.value.status == 400


def test_payload_functions_direct(tree):
    assert routes.info_payload("good.safetensors", tree.fp, BACKEND)["modules"] == 1
    assert routes.report_payload("good.safetensors", "sd1", tree.fp, BACKEND)["target_family"] == "sd1"
    assert "SD-ALL" in routes.presets_payload(BACKEND)["presets"]


def test_jsonable():
    value = {1: (1.0, float("nan"), float("-inf")), "t": torch.tensor([1.5]), "s": {3}, "o": Path("x")}
    assert routes.jsonable(value) == {"1": [1.0, "nan", "-inf"], "t": [1.5], "s": [3], "o": "x"}
    json.dumps(routes.jsonable(value), allow_nan=False)


def test_register_on_route_table(tree):
    table = web.RouteTableDef()
    assert routes.register(SimpleNamespace(routes=table), tree.fp) is True
    assert sorted(r.path for r in table) == ["/lokr/files", "/lokr/info", "/lokr/presets", "/lokr/preview",
                                             "/lokr/report", "/lokr/sidecar"]


def test_register_outside_comfyui_does_nothing():
    if importlib.util.find_spec("server") is not None:
        pytest.skip("a module named 'server' is importable here")
    assert routes.register() is False


def test_real_lokr_core_backend(tree):
    """With lokr_core's own loader and summary."""
    status, body, text = info(tree.fp, "good.safetensors", routes.Backend())
    assert status == 200, text
    assert body["file"] == "good.safetensors"
    status, body, text = info(tree.fp, "plain_lora.safetensors", routes.Backend())
    assert status == 422 and SECRET not in text
    status, body, text = info(tree.fp, "garbage.safetensors", routes.Backend())
    assert status == 422 and SECRET not in text


def test_real_report_and_presets(tree, monkeypatch):
    """/lokr/report and /lokr/presets through lokr_core (family_report + resolve, block_weights.PRESETS).

    The family key list is a small stand-in (lokr_core builds the real one from a meta-device
    diffusers model, ~30 s here; its own tests cover it)."""
    bw = pack_module("lokr_core.keymap.block_weights")
    keymap = pack_module("lokr_core.keymap.families")
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    asked = []
    monkeypatch.setattr(keymap, "family_target", lambda fam, *a, **k: asked.append(fam) or {key: (320, 320)})
    status, body, text = call(tree.fp, "/lokr/report?file=good.safetensors&family=sd1", routes.Backend())
    assert status == 200, text
    assert asked == ["sd1"]
    assert body["matched"] == 1 and body["total"] == 1 and body["target_family"] == "sd1"
    monkeypatch.setattr(keymap, "family_target", lambda fam, *a, **k: {key.replace("to_q", "to_k"): (320, 320)})
    status, body, text = call(tree.fp, "/lokr/report?file=good.safetensors&family=sdxl", routes.Backend())
    assert status == 200, text
    assert body["matched"] == 0 and list(body["unmatched"]) == [
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"]
    status, body, _ = call(tree.fp, "/lokr/presets", routes.Backend())
    assert status == 200 and body["presets"] == dict(bw.PRESETS)


def test_real_family_guess_uses_shapes(tree):
    """The names-only guess cannot tell SD1 from SD2; the route adds the factor shapes."""
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    save_file({f"{name}.lokr_w1": torch.randn(8, 8), f"{name}.lokr_w2_a": torch.randn(40, 2),
               f"{name}.lokr_w2_b": torch.randn(2, 128), f"{name}.alpha": torch.tensor(2.0)},
              str(tree.root / "sd2.safetensors"))  # attn2.to_k reads 1024 channels: SD2
    status, body, text = info(tree.fp, "sd2.safetensors", routes.Backend())
    assert status == 200, text
    assert body["family"] == "sd2"


def test_report_takes_transformer_families(tree):
    """/lokr/report accepts every family lokr_core names; for a DiT family it compares the file's family
    with the asked one (no full-size key list): a Flux file (kohya names, widths of a Flux.1 model)
    against SD3 is a mismatch named with both labels, against Flux it is not."""
    labels = pack_module("lokr_core.keymap.family").FAMILY_LABELS
    sd = {}
    for name, (out, inp) in {"lora_unet_double_blocks_0_img_attn_qkv": (9216, 3072),
                             "lora_unet_double_blocks_0_img_mod_lin": (18432, 3072),
                             "lora_unet_single_blocks_0_linear1": (21504, 3072),
                             "lora_unet_single_blocks_0_modulation_lin": (9216, 3072)}.items():
        sd.update({f"{name}.lokr_w1": torch.randn(4, 4), f"{name}.lokr_w2_a": torch.randn(out // 4, 2),
                   f"{name}.lokr_w2_b": torch.randn(2, inp // 4), f"{name}.alpha": torch.tensor(2.0)})
    save_file(sd, str(tree.root / "flux.safetensors"))
    status, body, text = call(tree.fp, "/lokr/report?file=flux.safetensors&family=sd3", routes.Backend())
    assert status == 200, text
    assert body["key_list"] is False and body["target_family"] == "sd3" and body["total"] == 4
    assert body["family_mismatch"] == f"this file is for {labels[body['family']]}, the model is {labels['sd3']}"
    assert body["family"].split("/")[0] == "flux" and body["target_family_label"] == labels["sd3"]
    status, body, _ = call(tree.fp, "/lokr/report?file=flux.safetensors&family=flux", routes.Backend())
    assert status == 200 and body["family_mismatch"] is None


def test_report_backend_import_error_is_501(tree):
    def report(weights, family):
        raise ImportError("No module named 'diffusers'")

    backend = routes.Backend(load=stand_in_load, report=report)
    status, body, _ = call(tree.fp, "/lokr/report?file=good.safetensors&family=sd1", backend)
    assert status == 501 and "diffusers" in body["error"]


def test_summary_cache_reuses_until_the_file_changes(tree):
    loads = []

    def load(path):
        loads.append(path)
        return stand_in_load(path)

    backend = routes.Backend(load=load, summarize=stand_in_summarize)
    cache = routes.SummaryCache(size=1)
    first = cache.get("good.safetensors", tree.fp, backend)
    assert cache.get("good.safetensors", tree.fp, backend) is first and len(loads) == 1
    st = os.stat(tree.root / "good.safetensors")
    os.utime(tree.root / "good.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    cache.get("good.safetensors", tree.fp, backend)
    assert len(loads) == 2
    cache.get("sub/nested lokr.safetensors", tree.fp, backend)  # size 1: evicts the first
    cache.get("good.safetensors", tree.fp, backend)
    assert len(loads) == 4
    with pytest.raises(routes.RouteError) as err:  # checks still run before the cache
        cache.get("../outside/secret.safetensors", tree.fp, backend)
    assert err.value.status == 404


# ---------------------------------------------------------------------------------------------
# /lokr/files, /lokr/sidecar, /lokr/preview

def png_bytes(color=(200, 30, 30), size=(4, 3)) -> bytes:
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def sidecars(tree):
    """tree + previews and sidecars: a good one, a link out, a non-image, a huge one, a video."""
    root = tree.root
    (root / "good.preview.png").write_bytes(png_bytes())
    (root / "good.civitai.info").write_text(json.dumps({
        "trainedWords": ["lokr style, red hat", "Lokr Style"], "baseModel": "SD 1.5", "modelId": 12, "id": 34,
        "model": {"name": "Good Style"}}))
    (tree.outside / "secret.png").write_bytes(png_bytes((1, 2, 3)))
    os.symlink(tree.outside / "secret.png", root / "sub" / "nested lokr.png")  # preview linking out
    (root / "sub" / "nested lokr.json").write_text(json.dumps({"activation text": "nested word"}))
    os.symlink(tree.outside / "secret.txt", root / "sub" / "nested lokr.metadata.json")  # sidecar linking out
    (root / "plain_lora.preview.png").write_text("<html><script>alert(1)</script>" + SECRET)  # not an image
    for stem in ("huge", "video"):
        save_file(lokr_tensors(), str(root / f"{stem}.safetensors"))
    with open(root / "huge.preview.jpg", "wb") as fh:  # sparse: 17 MiB, a JPEG start
        fh.write(b"\xff\xd8\xff\xe0")
        fh.truncate(17 * 1024 * 1024)
    (root / "video.preview.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    return tree


def fetch(fp, path):
    """GET ``path``; (status, headers, body bytes)."""

    async def go():
        app = web.Application()
        routes.add_routes(app.router, fp)
        async with TestClient(TestServer(app)) as client:
            base = str(client.make_url("/")).rstrip("/")
            resp = await client.session.get(URL(base + path, encoded=True), allow_redirects=False)
            return resp.status, dict(resp.headers), await resp.read()

    return asyncio.run(go())


def test_files_lists_every_name_with_kind_family_preview(sidecars):
    status, body, text = call(sidecars.fp, "/lokr/files")
    assert status == 200 and str(sidecars.root) not in text and SECRET not in text
    files = {f["name"]: f for f in body["files"]}
    assert [f["name"] for f in body["files"]] == sidecars.fp.get_filename_list("loras")
    assert body["folders"] == ["linkdir", "sub"]
    assert files["good.safetensors"]["kind"] == "lokr" and files["good.safetensors"]["has_preview"] is True
    assert files["plain_lora.safetensors"]["kind"] == "lora"
    for name in ("plain_lora", "huge", "video"):  # not a png inside, over the cap, a video
        assert files[f"{name}.safetensors"]["has_preview"] is False, name
    assert files["sub/nested lokr.safetensors"]["has_preview"] is False  # the preview links out
    for name in ("garbage.safetensors", "model.ckpt", "notes.txt", "link_out.safetensors",
                 "linkdir/secret.safetensors"):
        assert files[name] == {"name": name, "kind": "unknown", "family": None, "family_label": None,
                               "has_preview": False}


def test_files_family_is_the_info_routes_family(tree):
    """The header-only family of /lokr/files equals the one /lokr/info reads through lokr_core's loader."""
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    save_file({f"{name}.lokr_w1": torch.randn(8, 8), f"{name}.lokr_w2_a": torch.randn(40, 2),
               f"{name}.lokr_w2_b": torch.randn(2, 128), f"{name}.alpha": torch.tensor(2.0)},
              str(tree.root / "sd2.safetensors"))
    labels = pack_module("lokr_core.keymap.family").FAMILY_LABELS
    files = {f["name"]: f for f in call(tree.fp, "/lokr/files")[1]["files"]}
    for file in ("sd2.safetensors", "good.safetensors"):
        info_body = info(tree.fp, file, routes.Backend())[1]
        assert files[file]["family"] == info_body["family"]
        assert files[file]["family_label"] == (labels[info_body["family"]] if info_body["family"] else None)
    assert files["sd2.safetensors"]["family"] == "sd2" and files["sd2.safetensors"]["family_label"] == "SD2.x"


def test_files_overview_cached_until_the_file_changes(tree, monkeypatch):
    file_routes = pack_module("nodes.file_routes")
    read = []
    real_overview = file_routes.file_overview
    monkeypatch.setattr(file_routes, "file_overview", lambda p: read.append(p) or real_overview(p))
    cache = file_routes.OverviewCache()
    file_routes.files_payload(tree.fp, cache)
    first = len(read)
    assert first == 4  # good, nested, plain_lora, garbage (+ link_in -> good's real path, cached)
    file_routes.files_payload(tree.fp, cache)
    assert len(read) == first
    path = tree.root / "good.safetensors"
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # same size, mtime restored: the fingerprint's tail hash tells
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    file_routes.files_payload(tree.fp, cache)
    assert read[first:] == [os.path.realpath(path)]


def test_sidecar_ok_with_preview_url(sidecars):
    status, body, text = call(sidecars.fp, "/lokr/sidecar?file=good.safetensors")
    assert status == 200 and str(sidecars.root) not in text
    assert body["file"] == "good.safetensors" and body["kind"] == "lokr"
    assert body["trigger_words"] == ["lokr style", "red hat"]
    assert body["base_model"] == "SD 1.5" and body["title"] == "Good Style"
    assert body["source_url"] == "https://civitai.com/models/12?modelVersionId=34"
    assert body["preview"] == "/lokr/preview?file=good.safetensors"
    assert body["sources"]["trigger_words"] == ["good.civitai.info"] and body["problems"] == []
    assert {"family", "family_label", "has_thumbnail", "notes", "preferred_weight", "top_tags"} <= set(body)


def test_sidecar_nested_name_is_quoted_in_the_preview_url(sidecars):
    (sidecars.root / "sub" / "nested lokr.png").unlink()
    (sidecars.root / "sub" / "nested lokr.webp").write_bytes(b"RIFF\x10\x00\x00\x00WEBPVP8 ")
    status, body, _ = call(sidecars.fp, "/lokr/sidecar?file=" + quote("sub/nested lokr.safetensors", safe=""))
    assert status == 200 and body["preview"] == "/lokr/preview?file=sub%2Fnested%20lokr.safetensors"
    status, headers, data = fetch(sidecars.fp, body["preview"])
    assert status == 200 and headers["Content-Type"] == "image/webp" and data.startswith(b"RIFF")


def test_sidecar_links_out_are_named_without_server_paths(sidecars):
    status, body, text = call(sidecars.fp, "/lokr/sidecar?file=" + quote("sub/nested lokr.safetensors", safe=""))
    assert status == 200 and body["preview"] is None and body["trigger_words"] == ["nested word"]
    assert SECRET not in text and str(sidecars.outside) not in text and str(sidecars.root) not in text
    problems = " | ".join(body["problems"])
    assert "nested lokr.png: links outside the LoKr file's folder (<path>)" in problems
    assert "nested lokr.metadata.json: links outside" in problems


def test_sidecar_of_video_and_non_image_previews_is_null(sidecars):
    for name in ("video.safetensors", "plain_lora.safetensors", "huge.safetensors"):
        status, body, _ = call(sidecars.fp, "/lokr/sidecar?file=" + name)
        assert status == 200 and body["preview"] is None, name
    assert call(sidecars.fp, "/lokr/sidecar?file=plain_lora.safetensors")[1]["kind"] == "lora"


def test_sidecar_header_problem_names_the_file_only(sidecars):
    status, body, text = call(sidecars.fp, "/lokr/sidecar?file=garbage.safetensors")
    assert status == 200 and body["kind"] == "unknown" and SECRET not in text
    assert body["problems"] and all(str(sidecars.root) not in p for p in body["problems"])
    assert "garbage.safetensors" in body["problems"][0]


def test_preview_serves_the_image(sidecars):
    status, headers, data = fetch(sidecars.fp, "/lokr/preview?file=good.safetensors")
    assert status == 200 and data == (sidecars.root / "good.preview.png").read_bytes()
    assert headers["Content-Type"] == "image/png" and headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("name, code, words", [
    ("plain_lora.safetensors", 415, "is not a png image"),
    ("video.safetensors", 415, "its preview is a .mp4 file"),
    ("huge.safetensors", 413, "at most 16777216 are served"),
    ("sub/nested lokr.safetensors", 404, "has no preview image"),  # the link out is never used
    ("model.ckpt", 415, "only .safetensors"),
    ("link_out.safetensors", 403, "resolves outside"),
])
def test_preview_refusals(sidecars, name, code, words):
    status, headers, data = fetch(sidecars.fp, "/lokr/preview?file=" + quote(name, safe=""))
    body = json.loads(data)
    assert status == code and words in body["error"], body
    assert SECRET.encode() not in data and str(sidecars.root).encode() not in data
    assert str(sidecars.outside).encode() not in data


@pytest.mark.parametrize("route", ["/lokr/sidecar", "/lokr/preview"])
@pytest.mark.parametrize("query", [
    "../outside/secret.png", "../outside/secret.safetensors", "ABSOLUTE", "%2e%2e%2foutside%2fsecret.png",
    "sub%5c..%5c..%5coutside%5csecret.safetensors", "good.preview.png", "good.civitai.info",
    "good.safetensors%00.png", "", "x" * 2000,
])
def test_file_routes_traversal_refused(sidecars, route, query):
    if query == "ABSOLUTE":
        query = quote(str(sidecars.outside / "secret.png"), safe="")
    status, headers, data = fetch(sidecars.fp, f"{route}?file={query}")
    assert 400 <= status < 500 and "error" in json.loads(data)
    assert SECRET.encode() not in data and b"\x89PNG" not in data


def test_preview_route_only_serves_the_sidecars_pick(sidecars, monkeypatch):
    """A preview path read_sidecar would return outside the roots (a stand-in reader) is refused."""
    file_routes = pack_module("nodes.file_routes")
    monkeypatch.setattr(file_routes, "read_sidecar", lambda p: SimpleNamespace(
        preview=str(sidecars.outside / "secret.png")))
    status, _, data = fetch(sidecars.fp, "/lokr/preview?file=good.safetensors")
    assert status == 403 and b"\x89PNG" not in data and str(sidecars.outside).encode() not in data


def test_scrub_paths():
    file_routes = pack_module("nodes.file_routes")
    text = "header: file '/srv/m/loras/a.safetensors': bad; x.json: links outside (C:\\data\\y.json); not read"
    assert file_routes.scrub_paths(text, "a.safetensors", "/srv/m/loras/a.safetensors", "/real/a.safetensors") == (
        "header: file 'a.safetensors': bad; x.json: links outside (<path>); not read")
