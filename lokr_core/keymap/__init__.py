"""Layer 3, names: which weight of which model a file's module adapts (SD1.x, SD2.x, SDXL, DiT models).

kohya / LyCORIS / PEFT names <-> diffusers <-> LDM paths, resolved against a model or checkpoint:

- :mod:`.ldm_unet`: diffusers <-> LDM UNet paths, generated from the UNet config;
- :mod:`.clip_text`: transformers CLIP <-> OpenCLIP text-encoder paths (fused q/k/v rows);
- :mod:`.kohya`: file module names (every prefix style) -> (component, underscore form);
- :mod:`.targets`: an index of a target model / state dict under all its names;
- :mod:`.dit_names`: diffusers <-> original (ComfyUI) names of DiT models, row blocks of fused weights;
- :mod:`.family_signatures`: DiT families and block groups from module names and widths;
- :mod:`.family`: which SD or DiT family names / shapes belong to (files and targets);
- :mod:`.families`: reference SD1.5 / SD2.1 / SDXL configs and their key lists;
- :mod:`.blocks`: LDM block IDs (BASE, IN00.., MID, OUT00..) and DiT groups (double N, layers N, ...);
- :mod:`.resolve`: file modules -> target keys and shapes (the one resolver);
- :mod:`.block_weights`: per-block strength vectors and presets (LoRA Block Weight syntax).

Uses :mod:`lokr_core.tensor` (factor shapes tell families apart); reads no files.
"""
from __future__ import annotations

from .blocks import block_id, ldm_block_of
from .clip_text import hf_to_openclip, openclip_weight_to_hf
from .families import family_target
from .family import model_family, target_dit_family
from .kohya import kohya_name, split_name, underscore
from .ldm_unet import (UNetLayout, diffusers_to_ldm, layout_from_config, layout_from_diffusers_keys,
                       layout_from_ldm_keys, ldm_to_diffusers, unet_module_map, unet_rules)
from .targets import TargetEntry, TargetIndex, build_index

__all__ = ["block_id", "target_dit_family", "family_target", "ldm_block_of", "hf_to_openclip", "openclip_weight_to_hf", "model_family", "kohya_name", "split_name",
           "underscore", "UNetLayout", "diffusers_to_ldm", "layout_from_config", "layout_from_diffusers_keys",
           "layout_from_ldm_keys", "ldm_to_diffusers", "unet_module_map", "unet_rules", "TargetEntry",
           "TargetIndex", "build_index"]
