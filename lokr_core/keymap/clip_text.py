"""Text-encoder names: transformers CLIPTextModel <-> OpenCLIP (SD2.x ``cond_stage_model.model.``,
SDXL ``conditioner.embedders.1.model.``).

The canonical text path is the transformers path WITHOUT the ``text_model.`` level
(``encoder.layers.0.self_attn.q_proj``), so transformers 4 and 5 layouts meet in one name.
OpenCLIP fuses q/k/v into one ``attn.in_proj_weight`` of shape (3*d, d): q_proj, k_proj and
v_proj are the row blocks 0, 1 and 2 of it.
"""
from __future__ import annotations

import re

_HF_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_OC_LAYER = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")

_LAYER_RENAMES = (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                  ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"))
_TOP_RENAMES = (("final_layer_norm", "ln_final"), ("embeddings.token_embedding", "token_embedding"))
QKV = ("q_proj", "k_proj", "v_proj")


def canonical_text_path(path: str) -> str:
    """Drop a leading ``text_model.`` (transformers 4 layout) so both layouts share one name."""
    return path[len("text_model."):] if path.startswith("text_model.") else path


def hf_to_openclip(path: str) -> tuple[str, int | None] | None:
    """Canonical transformers module path -> (OpenCLIP module path, q/k/v row block or None).

    ``encoder.layers.3.self_attn.k_proj`` -> (``transformer.resblocks.3.attn.in_proj``, 1): the weight
    key is then ``...attn.in_proj_weight`` rows [d:2d]. None for modules OpenCLIP has no module for
    (``text_projection`` is a transposed parameter there, ``position_embedding`` a bare parameter).
    """
    m = _HF_LAYER.match(path)
    if m:
        n, rest = m.groups()
        for i, q in enumerate(QKV):
            if rest == f"self_attn.{q}":
                return f"transformer.resblocks.{n}.attn.in_proj", i
        for hf, oc in _LAYER_RENAMES:
            if rest == hf:
                return f"transformer.resblocks.{n}.{oc}", None
        return None
    for hf, oc in _TOP_RENAMES:
        if path == hf:
            return oc, None
    return None


def openclip_weight_to_hf(key: str) -> list[tuple[str, int | None]]:
    """OpenCLIP weight key (no model prefix) -> [(canonical transformers module path, row block)].

    ``transformer.resblocks.3.attn.in_proj_weight`` gives three entries (q, k, v with blocks 0, 1, 2);
    ``transformer.resblocks.3.mlp.c_fc.weight`` gives one; keys without a transformers module give [].
    """
    m = _OC_LAYER.match(key)
    if m:
        n, rest = m.groups()
        if rest == "attn.in_proj_weight":
            return [(f"encoder.layers.{n}.self_attn.{q}", i) for i, q in enumerate(QKV)]
        if not rest.endswith(".weight"):
            return []
        rest = rest[: -len(".weight")]
        for hf, oc in _LAYER_RENAMES:
            if rest == oc:
                return [(f"encoder.layers.{n}.{hf}", None)]
        return []
    if key.endswith(".weight"):
        for hf, oc in _TOP_RENAMES:
            if key[: -len(".weight")] == oc:
                return [(hf, None)]
    return []
