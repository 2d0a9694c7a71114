"""Which transformer (DiT) model family a module name belongs to, and which block it sits in.

A module name is first reduced to its path (:func:`dit_path`): every prefix a trainer puts before it
(``lycoris_``, ``lora_unet_``, ``lora_transformer_``, ``transformer.``, ``base_model.model.``,
``diffusion_model.``, ``model.diffusion_model.``) is dropped and dots become ``_``. Both the names of
the model's original code (as ComfyUI holds the weights: ``double_blocks_0_img_attn_qkv``) and the
diffusers names (``transformer_blocks_0_attn_to_q``) are known.

:data:`NAME_RULES` maps a path to the set of families whose models have a module of that name
(first matching rule wins; a name no rule knows says nothing). :data:`HIDDEN` gives the hidden sizes
of each family's released models: the input width of an attention projection narrows the set
further (SD3 1536 / 2432 vs Flux 3072, Lumina 2 2304 vs Z-Image 3840). :data:`BLOCK_RULES` gives the
block group of a path: ``double N`` / ``single N`` (two-stream / one-stream blocks: Flux, Flux.2,
Chroma, HunyuanVideo, HiDream, AuraFlow), ``joint N`` (SD3), ``layers N`` (every other family's
main stack); anything else (embedders, refiners, final layers, text-side stacks) is ``BASE``.
"""
from __future__ import annotations

import re
from typing import Mapping

from .kohya import TEXT_HINTS, split_name

LABELS: dict[str, str] = {
    "flux": "Flux.1", "flux2": "Flux.2", "chroma": "Chroma", "hunyuan_video": "HunyuanVideo",
    "sd3": "SD3 / SD3.5", "auraflow": "AuraFlow", "pixart": "PixArt", "hunyuan_dit": "HunyuanDiT",
    "hidream": "HiDream", "lumina2": "Lumina 2", "zimage": "Z-Image", "omnigen2": "OmniGen2",
    "qwen_image": "Qwen-Image", "wan": "Wan 2.1 / 2.2", "ltxv": "LTX-Video", "mochi": "Mochi",
    "cosmos": "Cosmos", "kandinsky5": "Kandinsky 5", "krea2": "Krea 2", "ernie": "ERNIE-Image",
    "ace": "ACE-Step",
}
"""DiT family id -> display name."""

ORDER = tuple(LABELS)
"""Preference order: when names cannot tell several families apart, the set is named in this order
(``flux/chroma``), the most common family first."""

HIDDEN: dict[str, frozenset[int]] = {k: frozenset(v) for k, v in {
    "flux": (3072,), "flux2": (3072, 4096, 6144), "chroma": (3072,), "hunyuan_video": (3072,),
    "sd3": (1536, 2432), "auraflow": (3072,), "pixart": (1152,), "hunyuan_dit": (1408,), "hidream": (2560,),
    "lumina2": (2304,), "zimage": (3840,), "omnigen2": (2520,), "qwen_image": (3072,), "wan": (1536, 3072, 5120),
    "ltxv": (2048, 4096), "mochi": (1536, 3072), "cosmos": (2048, 4096, 5120),
    "kandinsky5": (1792, 2048, 2560, 4096), "krea2": (6144,), "ernie": (3072, 4096), "ace": (2560,),
}.items()}
"""family -> hidden sizes (input width of its attention projections) of the released models."""

DEPTH: dict[tuple[str, str], int] = {
    ("flux", "double"): 19, ("flux", "single"): 38, ("chroma", "double"): 19, ("chroma", "single"): 38,
    ("flux2", "double"): 8, ("flux2", "single"): 48, ("hunyuan_video", "double"): 20,
    ("hunyuan_video", "single"): 40, ("hidream", "double"): 16, ("hidream", "single"): 32,
    ("auraflow", "double"): 4, ("auraflow", "single"): 32, ("sd3", "joint"): 38,
    ("qwen_image", "layers"): 60, ("zimage", "layers"): 30, ("lumina2", "layers"): 26, ("omnigen2", "layers"): 32,
    ("wan", "layers"): 40, ("ltxv", "layers"): 48, ("pixart", "layers"): 28, ("hunyuan_dit", "layers"): 40,
    ("mochi", "layers"): 48, ("cosmos", "layers"): 36, ("kandinsky5", "layers"): 60, ("krea2", "layers"): 28,
    ("ernie", "layers"): 36, ("ace", "layers"): 24,
}
"""(family, block kind) -> most blocks of that kind in any released model of the family (a block
index at or past it rules the family out)."""

DEFAULT_BLOCKS: dict[str, dict[str, int]] = {
    "flux": {"double": 19, "single": 38}, "chroma": {"double": 19, "single": 38},
    "flux2": {"double": 8, "single": 48}, "hunyuan_video": {"double": 20, "single": 40},
    "hidream": {"double": 16, "single": 32}, "auraflow": {"double": 4, "single": 32},
    "sd3": {"joint": 24}, "qwen_image": {"layers": 60}, "zimage": {"layers": 30}, "lumina2": {"layers": 26},
    "omnigen2": {"layers": 32}, "wan": {"layers": 40}, "ltxv": {"layers": 28}, "pixart": {"layers": 28},
    "hunyuan_dit": {"layers": 40}, "mochi": {"layers": 48}, "cosmos": {"layers": 28},
    "kandinsky5": {"layers": 32}, "krea2": {"layers": 28}, "ernie": {"layers": 36}, "ace": {"layers": 24},
}
"""family -> {block kind: count} of its best-known model (Flux.1-dev, Flux.2-dev, SD3-medium /
SD3.5-medium, Wan 14B, ...): the block layout block weights use when the model's own counts are not
given."""

_FLUXLIKE = {"flux", "chroma", "flux2", "hunyuan_video"}
_JOINT_DIFFUSERS = {"flux", "chroma", "flux2", "hunyuan_video", "sd3", "qwen_image"}


def _r(pattern: str) -> re.Pattern:
    """A rule pattern: ``N`` right after ``_`` is a block number."""
    return re.compile(re.sub(r"(?<=_)N", r"\\d+", pattern))


NAME_RULES: tuple[tuple[re.Pattern, frozenset[str]], ...] = tuple((_r(p), frozenset(f)) for p, f in (
    # Flux family, original names (ComfyUI, kohya, ai-toolkit)
    (r"^(double_stream_modulation_(img|txt)|single_stream_modulation)_", {"flux2"}),
    (r"^distilled_guidance_layer_", {"chroma"}),
    (r"^(txt_in_(individual_token_refiner|c_embedder|t_embedder|input_embedder)|img_in_proj$)", {"hunyuan_video"}),
    (r"^double_blocks_N_(img|txt)_(mod_linear|mlp_fc[12]|attn_proj_)", {"hunyuan_video"}),
    (r"^single_blocks_N_modulation_linear$", {"hunyuan_video"}),
    (r"^double_blocks_N_(img|txt)_mod_lin$|^single_blocks_N_modulation_lin$", {"flux", "hunyuan_video"}),
    (r"^(double|single)_blocks_N_", _FLUXLIKE),
    (r"^vector_in_", {"flux", "hunyuan_video"}),
    (r"^(time_in|guidance_in)_", {"flux", "flux2", "hunyuan_video"}),
    (r"^(img_in|txt_in)$", {"flux", "flux2", "chroma", "qwen_image", "krea2"}),
    # Flux family, diffusers names
    (r"^time_guidance_embed_", {"flux2"}),
    (r"^single_transformer_blocks_N_attn_to_qkv_mlp_proj$|^transformer_blocks_N_ff(_context)?_linear_(in|out)$"
     r"|^single_transformer_blocks_N_attn_to_out$", {"flux2", "flux", "chroma"}),
    (r"^context_embedder_(token_refiner|proj_in|time_text_embed)_|^context_embedder_proj_in$", {"hunyuan_video"}),
    (r"^single_transformer_blocks_N_(proj_mlp|proj_out)$", {"flux", "chroma", "hunyuan_video", "flux2"}),
    (r"^single_transformer_blocks_N_norm_linear$", {"flux", "hunyuan_video"}),
    (r"^single_transformer_blocks_N_(attn_to_out_0|ff_linear_[12]|ff_out_projection|norm1_linear)$", {"auraflow"}),
    (r"^single_transformer_blocks_N_attn_(to_[qkv]|norm_[qk])$", {"flux", "chroma", "hunyuan_video", "auraflow", "flux2"}),
    # AuraFlow
    (r"^(joint_transformer_blocks|double_layers|single_layers)_N_|^(cond_seq_linear|init_x_linear)$|^modF_", {"auraflow"}),
    # SD3 (original names; diffusers names are shared with Flux's two-stream blocks)
    (r"^joint_blocks_N_|^y_embedder_mlp_", {"sd3"}),
    (r"^transformer_blocks_N_attn2_(to_[qkv]|to_out_0)$", {"sd3", "pixart", "ltxv", "cosmos"}),
    # Qwen-Image, Mochi, ACE-Step, Cosmos, Krea 2, LTX: transformer_blocks_N with their own module names
    (r"^transformer_blocks_N_(img|txt)_(mlp|mod)_", {"qwen_image"}),
    (r"^transformer_blocks_N_attn1_(add_[qkv]_proj|to_add_out|norm_added_[qk])$|^transformer_blocks_N_norm1_context_linear_1$"
     r"|^(t5_y_embedder|t5_yproj)|^blocks_N_(attn_(qkv|proj)_[xy]|mlp_[xy]_w[12]|mod_[xy])$", {"mochi"}),
    (r"^transformer_blocks_N_(cross_attn_|ff_(inverted|depth|point)_conv)|^(lyric_encoder_|lyric_proj|lyric_embs"
     r"|speaker_embedder|genre_embedder|projectors_N_)", {"ace"}),
    (r"^transformer_blocks_N_norm[123]_linear_[12]$|^blocks_N_(adaln_modulation_(self_attn|cross_attn|mlp)_|"
     r"(self_attn|cross_attn)_(output_proj|[qkv]_proj)$|mlp_layer[12]$)", {"cosmos"}),
    (r"^transformer_blocks_N_(attn_to_gate|ff_(up|down|gate))$|^text_fusion_|^txtfusion_|^blocks_N_(attn_(wq|wk|wv|wo|gate)"
     r"|mlp_(up|down|gate))$", {"krea2"}),
    (r"^patchify_proj$|^(audio_|av_cross_attn_|transformer_blocks_N_(audio_|video_to_audio|audio_to_video))"
     r"|^time_embed_emb_timestep_embedder_", {"ltxv"}),
    (r"^adaln_single_emb_(aspect_ratio|resolution)_embedder_|^(t_block_|y_embedder_y_proj_)"
     r"|^blocks_N_(attn_(qkv|proj)|cross_attn_(q_linear|kv_linear|proj))$", {"pixart"}),
    (r"^adaln_single_|^caption_projection_linear_", {"pixart", "ltxv"}),
    (r"^transformer_blocks_N_attn1_(to_[qkv]|to_out_0)$", {"pixart", "ltxv", "cosmos", "mochi"}),
    (r"^transformer_blocks_N_(attn_(add_[qkv]_proj|to_add_out|norm_added_[qk]))$", _JOINT_DIFFUSERS),
    (r"^transformer_blocks_N_norm1_context_linear$", {"flux", "hunyuan_video", "sd3", "mochi"}),
    (r"^transformer_blocks_N_ff_context_net_", {"flux", "chroma", "hunyuan_video", "sd3", "mochi", "flux2"}),
    (r"^transformer_blocks_N_norm1_linear$", {"flux", "hunyuan_video", "sd3", "mochi"}),
    (r"^transformer_blocks_N_attn_(to_[qkv]|to_out_0|norm_[qk])$", _JOINT_DIFFUSERS | {"ace", "krea2"}),
    (r"^transformer_blocks_N_ff_net_", _JOINT_DIFFUSERS - {"qwen_image"} | {"pixart", "ltxv", "cosmos", "mochi"}),
    # HunyuanDiT, PixArt
    (r"^blocks_N_(attn1_Wqkv|attn1_out_proj|attn2_(kv_proj|q_proj|out_proj)|default_modulation_1)$"
     r"|^(mlp_t5_|pooler_|extra_embedder_|style_embedder)", {"hunyuan_dit"}),
    (r"^blocks_N_mlp_fc[12]$", {"pixart", "hunyuan_dit"}),
    # HiDream
    (r"^(double|single)_stream_blocks_N_|^caption_projection_N_linear$|^p_embedder_", {"hidream"}),
    # Wan (original and diffusers names)
    (r"^blocks_N_((self|cross)_attn_([qkvo]|[kv]_img)|ffn_[02]|modulation)$|^(head_head|patch_embedding|text_embedding_N"
     r"|time_embedding_N|time_projection_N|img_emb_)$", {"wan"}),
    (r"^blocks_N_(attn[12]_(to_[qkv]|to_out_0|add_[kv]_proj)|ffn_net_)|^condition_embedder_", {"wan"}),
    # Lumina 2 / Z-Image / OmniGen2
    (r"^(layers|noise_refiner|context_refiner)_N_adaLN_modulation_0$", {"zimage"}),
    (r"^layers_N_attention_(to_[qkv]|to_out_0)$|^(noise|context)_refiner_N_attention_(to_[qkv]|to_out_0)$"
     r"|^all_(x_embedder|final_layer)_", {"zimage", "lumina2"}),
    (r"^(layers|noise_refiner|context_refiner)_N_adaLN_modulation_1$", {"lumina2"}),
    (r"^(layers|noise_refiner|context_refiner)_N_(attention_(qkv|out)|feed_forward_w[123])$|^cap_embedder_",
     {"lumina2", "zimage"}),
    (r"^(ref_image_refiner_|ref_image_patch_embedder)", {"omnigen2"}),
    (r"^(layers|noise_refiner|context_refiner)_N_(attn_(to_[qkv]|to_out_0)|feed_forward_linear_[123]|norm1_linear)$"
     r"|^time_caption_embed_", {"lumina2", "omnigen2"}),
    # Kandinsky 5, ERNIE-Image
    (r"^(visual|text)_transformer_blocks_N_|^(visual|text|pooled_text|time)_embeddings_", {"kandinsky5"}),
    (r"^layers_N_(self_attention_(to_[qkv]|to_out_0)|mlp_(gate_proj|up_proj|linear_fc2))$", {"ernie"}),
))
"""(path pattern, families that have such a module); ``N`` in a pattern is a block number."""

_BLOCK = re.compile(r"^(?P<g>double_blocks|single_blocks|transformer_blocks|single_transformer_blocks|joint_blocks"
                    r"|joint_transformer_blocks|double_layers|single_layers|double_stream_blocks|single_stream_blocks"
                    r"|visual_transformer_blocks|blocks|layers)_(?P<i>\d+)_")
_KIND_BY_GROUP = {"double_blocks": "double", "single_blocks": "single", "single_transformer_blocks": "single",
                  "joint_transformer_blocks": "double", "double_layers": "double", "single_layers": "single",
                  "double_stream_blocks": "double", "single_stream_blocks": "single", "joint_blocks": "joint"}
_TWO_STREAM = {"flux", "flux2", "chroma", "hunyuan_video"}
_ATTN_IN = re.compile(r"(to_q|to_k|to_v|qkv|_[qkv]|wq|wk|wv|to_query|to_key|to_value|Wqkv|w1q|w1k|w1v|qkv_x|[qkv]_proj"
                      r"|q_linear|kv_linear|add_[qkv]_proj)$")

_PREFIXES = ("lora_transformer_", "transformer_", "diffusion_model_", "model_diffusion_model_", "lora_prior_unet_",
             "base_model_model_")


def dit_path(name: str) -> str:
    """A file module name or weight key -> its model path in underscore form, without prefixes.

    ``lycoris_transformer_blocks_0_attn_to_q``, ``transformer.transformer_blocks.0.attn.to_q`` and
    ``base_model.model.transformer_blocks.0.attn.to_q`` -> ``transformer_blocks_0_attn_to_q``;
    ``diffusion_model.double_blocks.0.img_attn.qkv.weight`` -> ``double_blocks_0_img_attn_qkv``.
    """
    _, rest = split_name(name[:-len(".weight")] if name.endswith(".weight") else name)
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if rest.startswith(p) and not rest.startswith("transformer_blocks_"):
                rest, changed = rest[len(p):], True
    return rest


def name_families(path: str) -> frozenset[str] | None:
    """The families that have a module at ``path`` (from :func:`dit_path`), or None when no rule
    knows the name. A block index past a family's deepest model rules that family out."""
    for pattern, fams in NAME_RULES:
        if pattern.search(path):
            m = _BLOCK.match(path)
            if m:
                i = int(m.group("i"))
                fams = frozenset(f for f in fams if i < DEPTH.get((f, _kind(m.group("g"), f)), 10 ** 6)) or fams
            return fams
    return None


def _kind(group: str, family: str | None) -> str:
    """Block kind of numbered group ``group`` in ``family``: double, single, joint or layers."""
    if group in _KIND_BY_GROUP:
        return _KIND_BY_GROUP[group]
    if group == "transformer_blocks" and family in _TWO_STREAM:
        return "double"
    if group == "transformer_blocks" and family == "sd3":
        return "joint"
    return "layers"


_MLP_IN = re.compile(r"^(single_blocks_\d+_linear1|double_blocks_\d+_(img|txt)_mlp_0"
                     r"|single_transformer_blocks_\d+_attn_to_qkv_mlp_proj|transformer_blocks_\d+_ff(_context)?_linear_in)$")
_MLP_RATIO = {7: _FLUXLIKE - {"flux2"}, 9: {"flux2"}, 4: _FLUXLIKE - {"flux2"}, 6: {"flux2"}}
"""out / in of Flux-style ``linear1`` (q, k, v and MLP in one: 3 + 4 Flux.1, 3 + 2*3 Flux.2) and
``img_mlp.0`` (4 Flux.1, 2*3 Flux.2's gated MLP)."""


def width_families(path: str, dims: tuple[int, ...] | None) -> frozenset[str] | None:
    """Families a weight shape ``dims`` (out, in, ...) fits at ``path``, or None when the shape says
    nothing: the input width of an attention input projection (q/k/v/qkv) is the hidden size
    (:data:`HIDDEN`); the out/in ratio of Flux-style MLP inputs tells Flux.2 from Flux.1."""
    if not dims or len(dims) < 2 or not dims[1]:
        return None
    if _MLP_IN.match(path) and dims[0] % dims[1] == 0 and dims[0] // dims[1] in _MLP_RATIO:
        return frozenset(_MLP_RATIO[dims[0] // dims[1]])
    if not _ATTN_IN.search(path):
        return None
    return frozenset(f for f, h in HIDDEN.items() if dims[1] in h)


def block_of(name_or_key: str, family: str | None = None) -> str:
    """Block group of a module name or weight key in any naming style: ``double N``, ``single N``,
    ``joint N``, ``layers N`` or ``BASE``.

    ``family`` (a DiT family id, or several joined by ``/``) decides what diffusers'
    ``transformer_blocks N`` is: the two-stream ``double`` blocks of Flux / Chroma / Flux.2 /
    HunyuanVideo, the ``joint`` blocks of SD3, else ``layers``. Without it the name's own families
    decide (a name Flux and SD3 share is read as Flux's). Text-side and refiner stacks
    (HunyuanVideo's token refiner, Lumina's refiners, Kandinsky's text blocks, ...) are BASE.
    """
    path = dit_path(name_or_key)
    m = _BLOCK.match(path)
    if not m:
        return "BASE"
    group, i = m.group("g"), int(m.group("i"))
    fams = set(family.split("/")) & set(LABELS) if family else set()
    if not fams:
        fams = set(name_families(path) or ())
    return f"{_kind(group, next((f for f in ORDER if f in fams), None))} {i}"


def dit_block_counts(keys, family: str | None = None) -> dict[str, int]:
    """{block kind: count} of a model's weight keys or a file's module names (highest index + 1)."""
    out: dict[str, int] = {}
    for k in keys:
        b = block_of(k, family)
        if b != "BASE":
            kind, i = b.split(" ")
            out[kind] = max(out.get(kind, 0), int(i) + 1)
    return out


def dit_signals(names, dims_of: Mapping[str, tuple[int, ...]] | None = None) -> frozenset[str] | None:
    """The families every DiT module name of a file (or weight key of a model) fits, or None when
    no name is a known DiT module.

    Each known name gives its families (:func:`name_families`, narrowed by :func:`width_families`
    when ``dims_of[name]`` is given); the file's answer is what they all share. Flux.1 and
    HunyuanVideo share every block name and width: a file with no HunyuanVideo-only module (token
    refiner, ``img_in.proj``, diffusion-pipe ``_mod.linear``) and no block past Flux's 19 double /
    38 single is read as Flux. When the names share nothing (a merged or odd file) the family most
    names fit wins.
    """
    sets = []
    dims_of = dims_of or {}
    for name in names:
        if split_name(name)[0] in TEXT_HINTS:
            continue
        path = dit_path(name)
        fams = name_families(path)
        if fams is None:
            continue
        wide = width_families(path, dims_of.get(name))
        if wide is not None and fams & wide:
            fams = fams & wide
        sets.append(fams)
    if not sets:
        return None
    common = frozenset.intersection(*sets)
    if "flux" in common:  # nothing HunyuanVideo-only and no block past Flux's 19 / 38: read as Flux
        common = common - {"hunyuan_video"}
    if common:
        return common
    votes: dict[str, int] = {}
    for s in sets:
        for f in s:
            votes[f] = votes.get(f, 0) + 1
    best = max(votes.values())
    return frozenset(f for f, v in votes.items() if v == best)


def join_families(fams) -> str:
    """``{"chroma", "flux"}`` -> ``"flux/chroma"`` (in :data:`ORDER`)."""
    return "/".join(f for f in ORDER if f in fams)
