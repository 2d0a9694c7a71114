"""Write tests/support/dit_tiny_keys.json: ComfyUI's weight names and shapes of the tiny DiT models.

Run once in a ComfyUI venv (not part of the test suite):
``python tools/dit_tiny_keys.py COMFY_DIR [OUT]``. For each family of
``tests/support/dit_models.COMFY_CONFIGS`` it builds the model with ComfyUI's own classes (the
config matches the tiny diffusers model of ``tests/support/dit_models.build``) and stores every
state-dict key of its diffusion model (bare ComfyUI path, no prefix) with its shape, and ComfyUI's
own LoRA key map for diffusers module paths (``comfy.lora.model_lora_keys_unet``, its
``transformer.<diffusers path>`` entries: diffusers path -> [ComfyUI weight key, [dim, start,
length] or null, whether a function such as the scale/shift swap applies]), so the CPU suite has
real ComfyUI-layout keys and ComfyUI's name map without ComfyUI.
"""
from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(comfy_dir: str, out_path: str) -> None:
    sys.path.insert(0, comfy_dir)
    sys.path.insert(0, os.path.join(HERE, ".."))
    sys.argv[1:] = ["--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import torch
    import comfy.lora
    import comfy.model_detection
    from tests.support.dit_models import COMFY_CONFIGS

    result = {}
    for fam, cfg in COMFY_CONFIGS.items():
        mc = comfy.model_detection.model_config_from_unet_config(dict(cfg))
        if mc is None:
            print(f"{fam}: no ComfyUI model config matches", file=sys.stderr)
            continue
        mc.set_inference_dtype(torch.float32, None)
        try:
            model = mc.get_model({}, device="cpu")
        except Exception as e:  # report the family, go on with the others
            print(f"{fam}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        sd = model.diffusion_model.state_dict()
        kmap = comfy.lora.model_lora_keys_unet(model, {})
        diffusers_map = {}
        for name, t in kmap.items():
            if not name.startswith("transformer."):
                continue
            key, offset, fn = (t, None, None) if isinstance(t, str) else (tuple(t) + (None,))[:3]
            diffusers_map[name[len("transformer."):]] = [key[len("diffusion_model."):],
                                                          list(offset) if offset else None, fn is not None]
        result[fam] = {"model_class": type(model.diffusion_model).__name__,
                       "keys": {k: list(v.shape) for k, v in sd.items()}, "diffusers_map": diffusers_map}
        print(f"{fam}: {type(mc).__name__} {len(sd)} keys")
    with open(out_path, "w") as f:
        json.dump(result, f, indent=0, sort_keys=True)
    print(f"wrote {out_path} ({os.path.getsize(out_path)} bytes)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else
         os.path.join(HERE, "..", "tests", "support", "dit_tiny_keys.json"))
