"""The example workflows, defined once: UI format (``example_workflows/*.json``, what the template
browser and the frontend load) and API format (``example_workflows/api/*.json``, what the
end-to-end test posts to ``/prompt``).

``python -m tests.support.workflows`` (from the repository root) rewrites both sets;
``tests/nodes/test_workflows.py`` checks the committed files equal what this module builds.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "example_workflows"

# node type -> (input sockets [(name, type)], output sockets [(name, type)], widget names in order)
SOCKETS: dict[str, tuple[list, list, list]] = {
    "CheckpointLoaderSimple": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], ["ckpt_name"]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")], ["text"]),
    "EmptyLatentImage": ([], [("LATENT", "LATENT")], ["width", "height", "batch_size"]),
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                  ("latent_image", "LATENT")], [("LATENT", "LATENT")],
                 ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")], []),
    "SaveImage": ([("images", "IMAGE")], [], ["filename_prefix"]),
    "LoKrLoader": ([("model", "MODEL"), ("clip", "CLIP")], [("MODEL", "MODEL"), ("CLIP", "CLIP")],
                   ["lokr_name", "strength_model", "strength_clip", "scale_rule", "dora_mode", "apply", "strict"]),
    "LoKrBlockWeights": ([("model", "MODEL"), ("clip", "CLIP")],
                         [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("block_weights", "STRING")],
                         ["lokr_name", "strength_model", "strength_clip", "preset", "block_vector", "family", "A", "B",
                          "rng_seed", "scale_rule", "dora_mode", "apply"]),
    "LoKrInfo": ([("model", "MODEL"), ("clip", "CLIP")], [("report", "STRING")], ["lokr_name", "scale_rule"]),
    "LoKrStack": ([("lora_stack", "LORA_STACK")], [("lora_stack", "LORA_STACK")],
                  [f"{w}_{i}" for i in (1, 2, 3) for w in ("lokr", "strength_model", "strength_clip")]),
    "ApplyLoKrStack": ([("model", "MODEL"), ("clip", "CLIP"), ("lora_stack", "LORA_STACK")],
                       [("MODEL", "MODEL"), ("CLIP", "CLIP")], ["scale_rule", "apply", "strict"]),
    "LoKrMergeCheckpoint": ([("model", "MODEL"), ("clip", "CLIP"), ("vae", "VAE")], [("path", "STRING")],
                            ["filename_prefix", "dtype"]),
    "LoKrPowerLoader": ([("model", "MODEL"), ("clip", "CLIP"), ("lora_stack", "LORA_STACK")],
                        [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("trigger_words", "STRING"), ("loaded", "STRING"),
                         ("lora_stack", "LORA_STACK")], ["rows", "scale_rule", "apply", "strict"]),
    "LoKrFromPrompt": ([("model", "MODEL"), ("clip", "CLIP")],
                       [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("prompt", "STRING"), ("trigger_words", "STRING"),
                        ("loaded", "STRING")], ["prompt", "scale_rule", "apply", "strict"]),
    "LoKrHook": ([("prev_hooks", "HOOKS")], [("HOOKS", "HOOKS")],
                 ["lokr_name", "strength_model", "strength_clip", "scale_rule", "dora_mode"]),
    "CreateHookKeyframe": ([("prev_hook_kf", "HOOK_KEYFRAMES")], [("HOOK_KF", "HOOK_KEYFRAMES")],
                           ["strength_mult", "start_percent"]),
    "SetHookKeyframes": ([("hooks", "HOOKS"), ("hook_kf", "HOOK_KEYFRAMES")], [("HOOKS", "HOOKS")], []),
    "SetClipHooks": ([("clip", "CLIP"), ("hooks", "HOOKS")], [("CLIP", "CLIP")], ["apply_to_conds", "schedule_clip"]),
}

LOKR = "example_lokr.safetensors"
OFF_FILE = "example_style_lora.safetensors"
"""The Power Loader example's second row: off, so its file need not exist."""
CKPT = "v1-5-pruned-emaonly.safetensors"


def _sampling(model: str, clip: str, prefix: str) -> dict[str, tuple]:
    return {
        "pos": ("CLIPTextEncode", {"text": "a photo of a cat, best quality"}, {"clip": clip}),
        "neg": ("CLIPTextEncode", {"text": "blurry, low quality"}, {"clip": clip}),
        "latent": ("EmptyLatentImage", {"width": 512, "height": 512, "batch_size": 1}, {}),
        "sampler": ("KSampler", {"seed": 42, "control_after_generate": "fixed", "steps": 20, "cfg": 7.0,
                                 "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0},
                    {"model": model, "positive": "pos.0", "negative": "neg.0", "latent_image": "latent.0"}),
        "decode": ("VAEDecode", {}, {"samples": "sampler.0", "vae": "ckpt.2"}),
        "save": ("SaveImage", {"filename_prefix": prefix}, {"images": "decode.0"}),
    }


def graphs() -> dict[str, dict[str, tuple]]:
    """name -> {node label: (type, widgets, links {input: "label.output_index"})}."""
    ckpt = {"ckpt": ("CheckpointLoaderSimple", {"ckpt_name": CKPT}, {})}
    loader = {"lokr": ("LoKrLoader", {"lokr_name": LOKR, "strength_model": 1.0, "strength_clip": 1.0,
                                      "scale_rule": "file", "dora_mode": "interpolate", "apply": "patch weights",
                                      "strict": False},
                       {"model": "ckpt.0", "clip": "ckpt.1"})}
    bypass = {"lokr": ("LoKrLoader", dict(loader["lokr"][1], apply="bypass"), {"model": "ckpt.0", "clip": "ckpt.1"})}
    blocks = {"lokr": ("LoKrBlockWeights", {"lokr_name": LOKR, "strength_model": 1.0, "strength_clip": 1.0,
                                            "preset": "custom", "block_vector": "1,1,1,1,1,1,1,0,0.5,0.5,0.5,1,1,1,1,1,1",
                                            "family": "auto", "A": 4.0, "B": 1.0, "rng_seed": 0, "scale_rule": "file",
                                            "dora_mode": "interpolate", "apply": "patch weights"},
                       {"model": "ckpt.0", "clip": "ckpt.1"}),
              "info": ("LoKrInfo", {"lokr_name": LOKR, "scale_rule": "file"}, {"model": "ckpt.0", "clip": "ckpt.1"})}
    stack = {"stack": ("LoKrStack", {"lokr_1": LOKR, "strength_model_1": 0.8, "strength_clip_1": 0.8,
                                     "lokr_2": "None", "strength_model_2": 1.0, "strength_clip_2": 1.0,
                                     "lokr_3": "None", "strength_model_3": 1.0, "strength_clip_3": 1.0}, {}),
             "lokr": ("ApplyLoKrStack", {"scale_rule": "file", "apply": "patch weights", "strict": False},
                      {"model": "ckpt.0", "clip": "ckpt.1", "lora_stack": "stack.0"})}
    power_rows = [{"on": True, "file": LOKR, "strength_model": 0.8, "strength_clip": 0.8, "linked": True, "blocks": ""},
                  {"on": False, "file": OFF_FILE, "strength_model": 1.0, "strength_clip": 1.0, "linked": True,
                   "blocks": "SD-ALL"}]
    power = {"lokr": ("LoKrPowerLoader", {"rows": json.dumps(power_rows), "scale_rule": "file",
                                          "apply": "patch weights", "strict": False},
                      {"model": "ckpt.0", "clip": "ckpt.1"})}
    merge = {"merge": ("LoKrMergeCheckpoint", {"filename_prefix": "checkpoints/lokr_merged", "dtype": "fp16"},
                       {"model": "lokr.0", "clip": "lokr.1", "vae": "ckpt.2"})}
    from_prompt = {"lokr": ("LoKrFromPrompt", {"prompt": f"a photo of a cat, <lora:{LOKR.rsplit('.', 1)[0]}:0.8:1.0> "
                                                          "best quality", "scale_rule": "file",
                                               "apply": "patch weights", "strict": False},
                            {"model": "ckpt.0", "clip": "ckpt.1"})}
    prompt_sampling = _sampling("lokr.0", "lokr.1", "lokr_prompt")
    prompt_sampling["pos"] = ("CLIPTextEncode", {}, {"clip": "lokr.1", "text": "lokr.2"})
    hook = {"hook": ("LoKrHook", {"lokr_name": LOKR, "strength_model": 1.0, "strength_clip": 1.0, "scale_rule": "file",
                                  "dora_mode": "interpolate"}, {}),
            "kf_on": ("CreateHookKeyframe", {"strength_mult": 1.0, "start_percent": 0.0}, {}),
            "kf_off": ("CreateHookKeyframe", {"strength_mult": 0.0, "start_percent": 0.5}, {"prev_hook_kf": "kf_on.0"}),
            "schedule": ("SetHookKeyframes", {}, {"hooks": "hook.0", "hook_kf": "kf_off.0"}),
            "clip_hooks": ("SetClipHooks", {"apply_to_conds": True, "schedule_clip": False},
                           {"clip": "ckpt.1", "hooks": "schedule.0"})}
    return {
        "lokr_load_and_sample": {**ckpt, **loader, **_sampling("lokr.0", "lokr.1", "lokr")},
        "lokr_from_prompt": {**ckpt, **from_prompt, **prompt_sampling},
        "lokr_hook_schedule": {**ckpt, **hook, **_sampling("ckpt.0", "clip_hooks.0", "lokr_hook")},
        "lokr_bypass": {**ckpt, **bypass, **_sampling("lokr.0", "lokr.1", "lokr_bypass")},
        "lokr_block_weights": {**ckpt, **blocks, **_sampling("lokr.0", "lokr.1", "lokr_blocks")},
        "lokr_stack": {**ckpt, **stack, **_sampling("lokr.0", "lokr.1", "lokr_stack")},
        "lokr_merge_checkpoint": {**ckpt, **loader, **merge},
        "lokr_power_loader": {**ckpt, **power, **_sampling("lokr.0", "lokr.1", "lokr_power")},
    }


def api_format(graph: dict[str, tuple]) -> dict[str, Any]:
    """ComfyUI's API prompt format: {id: {class_type, inputs}} (UI-only widgets dropped)."""
    ids = {label: str(i + 1) for i, label in enumerate(graph)}
    out = {}
    for label, (ntype, widgets, links) in graph.items():
        inputs = {k: v for k, v in widgets.items() if k != "control_after_generate"}
        for name, src in links.items():
            node, idx = src.split(".")
            inputs[name] = [ids[node], int(idx)]
        out[ids[label]] = {"class_type": ntype, "inputs": inputs, "_meta": {"title": label}}
    return out


def _in_sockets(graph: dict[str, tuple], ntype: str, links: dict[str, str]) -> list[tuple[str, str]]:
    """A node's input sockets: its own, then each widget fed by a link (typed as the linked output)."""
    own = SOCKETS[ntype][0]
    extra = []
    for name, src in links.items():
        if name not in [n for n, _ in own]:
            node, idx = src.split(".")
            extra.append((name, SOCKETS[graph[node][0]][1][int(idx)][1]))
    return own + extra


def ui_format(graph: dict[str, tuple]) -> dict[str, Any]:
    """The frontend's workflow format (nodes with sockets, widgets_values and positions, links).

    A widget fed by a link (CLIP Text Encode's ``text`` from LoKr from Prompt) is an input with a
    ``widget`` entry, its value in ``widgets_values`` an empty placeholder, as the frontend saves it.
    """
    ids = {label: i + 1 for i, label in enumerate(graph)}
    links, nodes = [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    for label, (ntype, _w, lk) in graph.items():
        in_sockets = _in_sockets(graph, ntype, lk)
        for name, src in lk.items():
            node, idx = src.split(".")
            slot = [n for n, _ in in_sockets].index(name)
            ltype = in_sockets[slot][1]
            link_id = len(links) + 1
            links.append([link_id, ids[node], int(idx), ids[label], slot, ltype])
            out_links.setdefault((ids[node], int(idx)), []).append(link_id)
    for order, (label, (ntype, widgets, lk)) in enumerate(graph.items()):
        nid = ids[label]
        _, outs, wnames = SOCKETS[ntype]
        inputs = []
        for slot, (name, typ) in enumerate(_in_sockets(graph, ntype, lk)):
            link = next((l[0] for l in links if l[3] == nid and l[4] == slot), None)
            inputs.append({"name": name, "type": typ, "link": link, **({"widget": {"name": name}} if name in wnames else {})})
        outputs = [{"name": name, "type": typ, "links": out_links.get((nid, i), []), "slot_index": i}
                   for i, (name, typ) in enumerate(outs)]
        nodes.append({"id": nid, "type": ntype, "pos": [60 + 380 * (order % 4), 80 + 360 * (order // 4)],
                      "size": [340, 120 + 26 * len(wnames)], "flags": {}, "order": order, "mode": 0,
                      "inputs": inputs, "outputs": outputs, "title": label,
                      "properties": {"Node name for S&R": ntype},
                      "widgets_values": [widgets[w] if w in widgets else "" for w in wnames if w in widgets or w in lk]})
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def rendered() -> dict[Path, str]:
    """Every example file path -> its JSON text."""
    out = {}
    for name, g in graphs().items():
        out[OUT / f"{name}.json"] = json.dumps(ui_format(g), indent=1) + "\n"
        out[OUT / "api" / f"{name}.json"] = json.dumps(api_format(g), indent=1) + "\n"
    return out


def main() -> int:
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
