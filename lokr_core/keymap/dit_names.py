"""diffusers <-> original (ComfyUI) module paths of DiT models: Flux / Flux.2 / Chroma, SD3 / SD3.5,
Z-Image, Lumina 2, Qwen-Image, Wan 2.1 / 2.2, AuraFlow, PixArt, Krea 2 (and HunyuanVideo's diffusion-pipe
names, in the Flux table: the two share one original layout).

The same weight has two names: the diffusers path (``transformer_blocks.0.attn.to_q``: what
SimpleTuner's ``lycoris_``, PEFT ``transformer.`` and OneTrainer ``lora_transformer_`` files name)
and the original path ComfyUI loads (``double_blocks.0.img_attn.qkv``: what ai-toolkit's
``diffusion_model.`` and kohya / musubi-tuner's ``lora_unet_`` files name). Each family's table is a
list of :class:`NamePair` with ``{i}`` for a block number; block counts, hidden sizes and row blocks
come from the target's own paths and shapes (:func:`translate`), never from a config.

Fused weights: where the original model holds q, k, v (Flux single blocks: q, k, v and the MLP
input) in one weight, a diffusers-named module is a ROW BLOCK of that weight (``rows``). The other
way round (one fused original module onto separate diffusers weights) and the modulations whose two
layouts order their (shift, scale) halves differently have no weight to be filed under: they are
listed in ``Translation.unsupported``, and :func:`lokr_core.keymap.resolve.layout_moves` places
them by a row operation on ΔW instead (``ResolveReport.split``: the fused ΔW split by rows over the
separate weights; ``ResolveReport.row_order``: halves swapped). The note is what ``report.notes``
says when that operation does not fit the target (a part missing, parts of other input widths, an
odd row count).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Mapping

SPLITS = ("qkv", "qkv_mlp", "kv", "qkv_rest")
"""Row layouts of a fused original weight of shape (out, in), by part:

- ``qkv``: q = ``in`` rows, k and v = half of the rest each (three equal thirds when out = 3*in;
  grouped-query attention when k / v are narrower, Lumina 2);
- ``qkv_mlp``: q, k, v = ``in`` rows each, then the MLP input (Flux / HunyuanVideo single blocks);
- ``kv``: k and v = half each (PixArt cross attention);
- ``qkv_rest``: q, k and v together (3 * ``in`` rows), then the rest (ComfyUI's ``linear1_qkv`` name
  for the attention rows of a Flux single block's ``linear1``)."""


@dataclass(frozen=True)
class NamePair:
    """One weight under its two names; ``{i}`` stands for a block number.

    ``part``: index of the diffusers weight's row block inside the fused original weight (None: the
    two are the same weight); ``split``: row layout of that fused weight (:data:`SPLITS`);
    ``swap``: the (shift, scale) halves are in the other order (``"all"``, or ``"last"`` for the last
    numbered block only: SD3's last ``norm1_context``).
    """

    diffusers: str
    original: str
    part: int | None = None
    split: str = "qkv"
    swap: str | None = None


@dataclass(frozen=True)
class DitTable:
    """A family's name pairs (``label`` is for messages)."""

    family: str
    label: str
    pairs: tuple[NamePair, ...]


@dataclass
class Translation:
    """What :func:`translate` found for one target's paths.

    ``family``: the table used (None: no DiT table fits); ``side``: ``"diffusers"`` or
    ``"original"`` (the layout of the target's own paths); ``aliases``: (target path, other-layout
    path, rows) to file the target weight under; rows (start, stop) when the other-layout name is a
    row block of the target weight; ``unsupported``: other-layout path that no single weight holds as
    named (a fused original weight held as separate ones, a modulation with swapped halves) -> why
    it cannot be placed when the row operation that places it does not fit.
    """

    family: str | None = None
    side: str | None = None
    aliases: list[tuple[str, str, tuple[int, int] | None]] = field(default_factory=list)
    unsupported: dict[str, str] = field(default_factory=dict)


def _qkv(d_prefix: str, o: str, names: tuple[str, str, str] = ("to_q", "to_k", "to_v"),
         split: str = "qkv") -> list[NamePair]:
    return [NamePair(f"{d_prefix}.{n}", o, part=j, split=split) for j, n in enumerate(names)]


def _flux() -> DitTable:
    d, o, s, so = "transformer_blocks.{i}", "double_blocks.{i}", "single_transformer_blocks.{i}", "single_blocks.{i}"
    pairs = _qkv(f"{d}.attn", f"{o}.img_attn.qkv") + _qkv(f"{d}.attn", f"{o}.txt_attn.qkv",
                                                          ("add_q_proj", "add_k_proj", "add_v_proj"))
    pairs += [NamePair(f"{d}.{a}", f"{o}.{b}") for a, b in (
        ("attn.to_out.0", "img_attn.proj"), ("attn.to_add_out", "txt_attn.proj"),
        ("norm1.linear", "img_mod.lin"), ("norm1_context.linear", "txt_mod.lin"),
        ("ff.net.0.proj", "img_mlp.0"), ("ff.net.2", "img_mlp.2"),
        ("ff_context.net.0.proj", "txt_mlp.0"), ("ff_context.net.2", "txt_mlp.2"),
        ("ff.linear_in", "img_mlp.0"), ("ff.linear_out", "img_mlp.2"),  # Flux.2
        ("ff_context.linear_in", "txt_mlp.0"), ("ff_context.linear_out", "txt_mlp.2"))]
    pairs += _qkv(f"{s}.attn", f"{so}.linear1", split="qkv_mlp")
    pairs += [NamePair(f"{s}.proj_mlp", f"{so}.linear1", part=3, split="qkv_mlp")]
    pairs += [NamePair(f"{s}.{a}", f"{so}.{b}") for a, b in (
        ("norm.linear", "modulation.lin"), ("proj_out", "linear2"),
        ("attn.to_qkv_mlp_proj", "linear1"), ("attn.to_out", "linear2"))]  # Flux.2
    pairs += [NamePair(a, b) for a, b in (
        ("proj_out", "final_layer.linear"), ("x_embedder", "img_in"), ("context_embedder", "txt_in"),
        ("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
        ("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
        ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
        ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
        ("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
        ("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
        ("time_guidance_embed.timestep_embedder.linear_1", "time_in.in_layer"),  # Flux.2
        ("time_guidance_embed.timestep_embedder.linear_2", "time_in.out_layer"),
        ("time_guidance_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
        ("time_guidance_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
        ("double_stream_modulation_img.linear", "double_stream_modulation_img.lin"),
        ("double_stream_modulation_txt.linear", "double_stream_modulation_txt.lin"),
        ("single_stream_modulation.linear", "single_stream_modulation.lin"),
        ("distilled_guidance_layer.in_proj", "distilled_guidance_layer.in_proj"),  # Chroma
        ("distilled_guidance_layer.out_proj", "distilled_guidance_layer.out_proj"),
        ("distilled_guidance_layer.layers.{i}.linear_1", "distilled_guidance_layer.layers.{i}.in_layer"),
        ("distilled_guidance_layer.layers.{i}.linear_2", "distilled_guidance_layer.layers.{i}.out_layer"),
        ("controlnet_x_embedder", "pos_embed_input"))]
    pairs += [NamePair("norm_out.linear", "final_layer.adaLN_modulation.1", swap="all")]
    # HunyuanVideo holds Flux's original layout; diffusion-pipe files name its MLPs and modulations
    # otherwise (its fused q / k / v already meet as img_attn_qkv)
    r = "txt_in.individual_token_refiner.blocks.{i}"
    pairs += [NamePair(f"{o}.{a}", f"{o}.{b}") for a, b in (
        ("img_mlp.fc1", "img_mlp.0"), ("img_mlp.fc2", "img_mlp.2"), ("txt_mlp.fc1", "txt_mlp.0"),
        ("txt_mlp.fc2", "txt_mlp.2"), ("img_mod.linear", "img_mod.lin"), ("txt_mod.linear", "txt_mod.lin"))]
    pairs += [NamePair(f"{so}.modulation.linear", f"{so}.modulation.lin"), NamePair(f"{r}.mlp.fc1", f"{r}.mlp.0"),
              NamePair(f"{r}.mlp.fc2", f"{r}.mlp.2")]
    pairs += [NamePair(f"{so}.linear1_qkv", f"{so}.linear1", part=0, split="qkv_rest")]  # ComfyUI's own name
    return DitTable("flux", "Flux", tuple(pairs))


def _sd3() -> DitTable:
    d, o = "transformer_blocks.{i}", "joint_blocks.{i}"
    pairs = (_qkv(f"{d}.attn", f"{o}.x_block.attn.qkv")
             + _qkv(f"{d}.attn", f"{o}.context_block.attn.qkv", ("add_q_proj", "add_k_proj", "add_v_proj"))
             + _qkv(f"{d}.attn2", f"{o}.x_block.attn2.qkv"))
    pairs += [NamePair(f"{d}.{a}", f"{o}.{b}") for a, b in (
        ("attn.to_out.0", "x_block.attn.proj"), ("attn2.to_out.0", "x_block.attn2.proj"),
        ("attn.to_add_out", "context_block.attn.proj"), ("norm1.linear", "x_block.adaLN_modulation.1"),
        ("ff.net.0.proj", "x_block.mlp.fc1"), ("ff.net.2", "x_block.mlp.fc2"),
        ("ff_context.net.0.proj", "context_block.mlp.fc1"), ("ff_context.net.2", "context_block.mlp.fc2"))]
    pairs += [NamePair(f"{d}.norm1_context.linear", f"{o}.context_block.adaLN_modulation.1", swap="last")]
    pairs += [NamePair(a, b) for a, b in (
        ("context_embedder", "context_embedder"), ("pos_embed.proj", "x_embedder.proj"),
        ("time_text_embed.timestep_embedder.linear_1", "t_embedder.mlp.0"),
        ("time_text_embed.timestep_embedder.linear_2", "t_embedder.mlp.2"),
        ("time_text_embed.text_embedder.linear_1", "y_embedder.mlp.0"),
        ("time_text_embed.text_embedder.linear_2", "y_embedder.mlp.2"), ("proj_out", "final_layer.linear"))]
    pairs += [NamePair("norm_out.linear", "final_layer.adaLN_modulation.1", swap="all")]
    return DitTable("sd3", "SD3 / SD3.5", tuple(pairs))


_LUMINA_GROUPS = ("layers", "context_refiner", "noise_refiner")


def _zimage() -> DitTable:
    pairs: list[NamePair] = []
    for g in _LUMINA_GROUPS:
        b = f"{g}.{{i}}"
        pairs += _qkv(f"{b}.attention", f"{b}.attention.qkv")
        pairs += [NamePair(f"{b}.attention.to_out.0", f"{b}.attention.out")]
        pairs += [NamePair(f"{b}.{n}", f"{b}.{n}") for n in
                  ("feed_forward.w1", "feed_forward.w2", "feed_forward.w3", "adaLN_modulation.0")]
    pairs += [NamePair(a, b) for a, b in (
        ("all_final_layer.2-1.linear", "final_layer.linear"),
        ("all_final_layer.2-1.adaLN_modulation.1", "final_layer.adaLN_modulation.1"),
        ("all_x_embedder.2-1", "x_embedder"), ("cap_embedder.1", "cap_embedder.1"),
        ("t_embedder.mlp.0", "t_embedder.mlp.0"), ("t_embedder.mlp.2", "t_embedder.mlp.2"))]
    return DitTable("zimage", "Z-Image", tuple(pairs))


def _lumina2() -> DitTable:
    pairs: list[NamePair] = []
    for g in _LUMINA_GROUPS:
        b = f"{g}.{{i}}"
        pairs += _qkv(f"{b}.attn", f"{b}.attention.qkv")
        pairs += [NamePair(f"{b}.{a}", f"{b}.{c}") for a, c in (
            ("attn.to_out.0", "attention.out"), ("feed_forward.linear_1", "feed_forward.w1"),
            ("feed_forward.linear_2", "feed_forward.w2"), ("feed_forward.linear_3", "feed_forward.w3"),
            ("norm1.linear", "adaLN_modulation.1"))]
    pairs += [NamePair(a, b) for a, b in (
        ("time_caption_embed.timestep_embedder.linear_1", "t_embedder.mlp.0"),
        ("time_caption_embed.timestep_embedder.linear_2", "t_embedder.mlp.2"),
        ("time_caption_embed.caption_embedder.1", "cap_embedder.1"), ("x_embedder", "x_embedder"),
        ("norm_out.linear_1", "final_layer.adaLN_modulation.1"), ("norm_out.linear_2", "final_layer.linear"))]
    return DitTable("lumina2", "Lumina 2", tuple(pairs))


def _qwen_image() -> DitTable:
    """Qwen-Image: ComfyUI keeps the diffusers names; the table only tells the family apart."""
    b = "transformer_blocks.{i}"
    names = [f"{b}.attn.{n}" for n in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj",
                                        "to_out.0", "to_add_out")]
    names += [f"{b}.{n}" for n in ("img_mod.1", "txt_mod.1", "img_mlp.net.0.proj", "img_mlp.net.2",
                                   "txt_mlp.net.0.proj", "txt_mlp.net.2")]
    names += ["img_in", "txt_in", "proj_out", "norm_out.linear", "time_text_embed.timestep_embedder.linear_1",
              "time_text_embed.timestep_embedder.linear_2"]
    return DitTable("qwen_image", "Qwen-Image", tuple(NamePair(n, n) for n in names))


def _wan() -> DitTable:
    b = "blocks.{i}"
    pairs = [NamePair(f"{b}.{a}", f"{b}.{c}") for a, c in (
        ("attn1.to_q", "self_attn.q"), ("attn1.to_k", "self_attn.k"), ("attn1.to_v", "self_attn.v"),
        ("attn1.to_out.0", "self_attn.o"), ("attn2.to_q", "cross_attn.q"), ("attn2.to_k", "cross_attn.k"),
        ("attn2.to_v", "cross_attn.v"), ("attn2.to_out.0", "cross_attn.o"),
        ("attn2.add_k_proj", "cross_attn.k_img"), ("attn2.add_v_proj", "cross_attn.v_img"),
        ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"))]
    pairs += [NamePair(a, c) for a, c in (
        ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
        ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
        ("condition_embedder.time_proj", "time_projection.1"),
        ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
        ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
        ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
        ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
        ("proj_out", "head.head"), ("patch_embedding", "patch_embedding"))]
    return DitTable("wan", "Wan 2.1 / 2.2", tuple(pairs))


def _auraflow() -> DitTable:
    """AuraFlow: two-stream ``double_layers`` (diffusers ``joint_transformer_blocks``) then one-stream
    ``single_layers``, numbered from 0 each; q / k / v are separate weights in both layouts."""
    d, do, s, so = "joint_transformer_blocks.{i}", "double_layers.{i}", "single_transformer_blocks.{i}", "single_layers.{i}"
    pairs = [NamePair(f"{d}.{a}", f"{do}.{b}") for a, b in (
        ("attn.to_q", "attn.w2q"), ("attn.to_k", "attn.w2k"), ("attn.to_v", "attn.w2v"), ("attn.to_out.0", "attn.w2o"),
        ("attn.add_q_proj", "attn.w1q"), ("attn.add_k_proj", "attn.w1k"), ("attn.add_v_proj", "attn.w1v"),
        ("attn.to_add_out", "attn.w1o"), ("ff.linear_1", "mlpX.c_fc1"), ("ff.linear_2", "mlpX.c_fc2"),
        ("ff.out_projection", "mlpX.c_proj"), ("ff_context.linear_1", "mlpC.c_fc1"),
        ("ff_context.linear_2", "mlpC.c_fc2"), ("ff_context.out_projection", "mlpC.c_proj"),
        ("norm1.linear", "modX.1"), ("norm1_context.linear", "modC.1"))]
    pairs += [NamePair(f"{s}.{a}", f"{so}.{b}") for a, b in (
        ("attn.to_q", "attn.w1q"), ("attn.to_k", "attn.w1k"), ("attn.to_v", "attn.w1v"), ("attn.to_out.0", "attn.w1o"),
        ("norm1.linear", "modCX.1"), ("ff.linear_1", "mlp.c_fc1"), ("ff.linear_2", "mlp.c_fc2"),
        ("ff.out_projection", "mlp.c_proj"))]
    pairs += [NamePair(a, b) for a, b in (
        ("time_step_proj.linear_1", "t_embedder.mlp.0"), ("time_step_proj.linear_2", "t_embedder.mlp.2"),
        ("context_embedder", "cond_seq_linear"), ("pos_embed.proj", "init_x_linear"), ("proj_out", "final_linear"))]
    pairs += [NamePair("norm_out.linear", "modF.1", swap="all")]
    return DitTable("auraflow", "AuraFlow", tuple(pairs))


def _pixart() -> DitTable:
    """PixArt-α / Σ: self-attention q / k / v fused in ``attn.qkv`` (thirds), cross-attention k / v
    in ``cross_attn.kv_linear`` (halves)."""
    d, o = "transformer_blocks.{i}", "blocks.{i}"
    pairs = _qkv(f"{d}.attn1", f"{o}.attn.qkv")
    pairs += [NamePair(f"{d}.attn2.{n}", f"{o}.cross_attn.kv_linear", part=j, split="kv")
              for j, n in enumerate(("to_k", "to_v"))]
    pairs += [NamePair(f"{d}.{a}", f"{o}.{b}") for a, b in (
        ("attn1.to_out.0", "attn.proj"), ("attn2.to_q", "cross_attn.q_linear"), ("attn2.to_out.0", "cross_attn.proj"),
        ("ff.net.0.proj", "mlp.fc1"), ("ff.net.2", "mlp.fc2"))]
    pairs += [NamePair(a, b) for a, b in (
        ("adaln_single.emb.timestep_embedder.linear_1", "t_embedder.mlp.0"),
        ("adaln_single.emb.timestep_embedder.linear_2", "t_embedder.mlp.2"),
        ("adaln_single.emb.resolution_embedder.linear_1", "csize_embedder.mlp.0"),
        ("adaln_single.emb.resolution_embedder.linear_2", "csize_embedder.mlp.2"),
        ("adaln_single.emb.aspect_ratio_embedder.linear_1", "ar_embedder.mlp.0"),
        ("adaln_single.emb.aspect_ratio_embedder.linear_2", "ar_embedder.mlp.2"),
        ("adaln_single.linear", "t_block.1"), ("caption_projection.linear_1", "y_embedder.y_proj.fc1"),
        ("caption_projection.linear_2", "y_embedder.y_proj.fc2"), ("pos_embed.proj", "x_embedder.proj"),
        ("proj_out", "final_layer.linear"))]
    return DitTable("pixart", "PixArt", tuple(pairs))


def _krea2() -> DitTable:
    """Krea 2: main ``blocks`` and the text-fusion stacks share one block layout (q / k / v / out / gate,
    gated MLP up / gate / down); diffusers names ``to_out`` with and without ``.0``."""
    inner = (("attn.to_q", "attn.wq"), ("attn.to_k", "attn.wk"), ("attn.to_v", "attn.wv"), ("attn.to_out", "attn.wo"),
             ("attn.to_out.0", "attn.wo"), ("attn.to_gate", "attn.gate"), ("ff.up", "mlp.up"), ("ff.gate", "mlp.gate"),
             ("ff.down", "mlp.down"))
    pairs = [NamePair(f"{d}.{a}", f"{o}.{b}") for d, o in (
        ("transformer_blocks.{i}", "blocks.{i}"), ("text_fusion.layerwise_blocks.{i}", "txtfusion.layerwise_blocks.{i}"),
        ("text_fusion.refiner_blocks.{i}", "txtfusion.refiner_blocks.{i}")) for a, b in inner]
    pairs += [NamePair(a, b) for a, b in (
        ("text_fusion.projector", "txtfusion.projector"), ("final_layer.linear", "last.linear"), ("img_in", "first"),
        ("time_embed.linear_1", "tmlp.0"))]
    return DitTable("krea2", "Krea 2", tuple(pairs))


@lru_cache(maxsize=None)
def dit_tables() -> tuple[DitTable, ...]:
    """Every family table (built on first use)."""
    return (_flux(), _sd3(), _zimage(), _lumina2(), _qwen_image(), _wan(), _auraflow(), _pixart(), _krea2())


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(\d+)") + "$")


@lru_cache(maxsize=None)
def _compiled(family: str, side: str) -> tuple[tuple[re.Pattern, NamePair], ...]:
    table = next(t for t in dit_tables() if t.family == family)
    return tuple((_pattern(getattr(p, side)), p) for p in table.pairs)


def _hits(family: str, side: str, paths: Iterable[str]) -> list[tuple[str, str | None, NamePair]]:
    """(path, block number or None, pair) for every path matching one of the table's ``side`` names."""
    pats = _compiled(family, side)
    out = []
    for path in paths:
        for pat, pair in pats:
            m = pat.match(path)
            if m:
                out.append((path, m.group(1) if m.groups() else None, pair))
    return out


def split_rows(split: str, part: int, shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(start, stop) rows of ``part`` in a fused weight of ``shape`` (out, in, ...) under ``split``;
    None when the shape cannot hold that layout (the pair then does not apply)."""
    if len(shape) < 2:
        return None
    out, d = int(shape[0]), int(shape[1])
    if split == "qkv":
        rest = out - d
        sizes = (d, rest // 2, rest // 2) if rest > 0 and rest % 2 == 0 else None
    elif split == "qkv_mlp":
        sizes = (d, d, d, out - 3 * d) if out > 3 * d else None
    elif split == "kv":
        sizes = (out // 2, out // 2) if out % 2 == 0 else None
    elif split == "qkv_rest":
        sizes = (3 * d, out - 3 * d) if out > 3 * d else None
    else:
        raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    if sizes is None or part >= len(sizes):
        return None
    start = sum(sizes[:part])
    return start, start + sizes[part]


def _fill(template: str, i: str | None) -> str:
    return template if i is None else template.replace("{i}", i)


def pick_table(paths: Iterable[str]) -> tuple[str | None, str | None]:
    """(family, side) of the table covering most of ``paths`` (module paths of one model part);
    (None, None) when no table covers any. Ties go to the diffusers side, then table order."""
    paths = list(paths)
    best, score = (None, None), 0
    for side in ("diffusers", "original"):
        for t in dit_tables():
            n = len({p for p, _, _ in _hits(t.family, side, paths)})
            if n > score:
                best, score = (t.family, side), n
    return best


def translate(shapes: Mapping[str, tuple[int, ...]]) -> Translation:
    """Other-layout names of a model part's weights.

    ``shapes``: {module path (no ``.weight``): weight shape} of one model part (a diffusers DiT
    model, or a ComfyUI / original diffusion model without its prefix). The family table and the
    side are picked by :func:`pick_table`; every path the table names gets its other-layout name
    (rows of fused weights from the shape); names no single weight holds are listed with a note.
    """
    family, side = pick_table(shapes)
    tr = Translation(family, side)
    if family is None:
        return tr
    other = "original" if side == "diffusers" else "diffusers"
    label = next(t.label for t in dit_tables() if t.family == family)
    hits = _hits(family, side, shapes)
    last: dict[str, int] = {}
    for _, i, pair in hits:
        if i is not None and pair.swap == "last":
            last[pair.diffusers] = max(last.get(pair.diffusers, -1), int(i))
    for path, i, pair in hits:
        alias = _fill(getattr(pair, other), i)
        swapped = pair.swap == "all" or (pair.swap == "last" and i is not None and int(i) == last.get(pair.diffusers))
        if swapped:
            tr.unsupported[alias] = (f"{label}: {path!r} and {alias!r} hold the same modulation with its (shift, scale) "
                                     f"halves in the other order; {path!r} has an odd row count, so its halves "
                                     "cannot be swapped")
            continue
        if pair.part is None:
            if alias != path:
                tr.aliases.append((path, alias, None))
        elif side == "original":
            rows = split_rows(pair.split, pair.part, shapes[path])
            if rows is not None:
                tr.aliases.append((path, alias, rows))
        else:
            fused = _fill(pair.original, i)
            tr.unsupported.setdefault(fused, (
                f"{label}: {fused!r} is one fused weight in the original layout; this model holds it as separate "
                "weights (" + ", ".join(repr(_fill(p.diffusers, i)) for p in _compiled_parts(family, pair.original))
                + "), and the fused ΔW is split by rows onto them only when all of them are present with the "
                "same input width: here they are not"))
    return tr


def _compiled_parts(family: str, original: str) -> list[NamePair]:
    """The diffusers pairs that are row blocks of one fused original template, by part."""
    table = next(t for t in dit_tables() if t.family == family)
    return sorted((p for p in table.pairs if p.original == original and p.part is not None and p.split != "qkv_rest"),
                  key=lambda p: p.part)
