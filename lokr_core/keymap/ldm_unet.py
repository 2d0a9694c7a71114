"""diffusers <-> LDM (original Stable Diffusion) names of UNet modules, generated from the config.

The map is not a table per model: :func:`layout_from_config` reads the structure (number of levels,
layers per block, which levels have attention, mid block, label embedding) from a diffusers UNet
config, or :func:`layout_from_ldm_keys` / :func:`layout_from_diffusers_keys` infer it from key
lists, and :func:`unet_rules` turns it into prefix rules following the numbering of diffusers'
single-file converter:

- ``input_blocks.0.0`` = ``conv_in``; level ``b``, layer ``j`` of the down path is
  ``input_blocks.i`` with ``i = 1 + sum(layers[:b] + 1) + j``: ``.0`` the resnet, ``.1`` the
  attention; the level's downsampler ``down_blocks.b.downsamplers.0.conv`` is ``input_blocks.i.0.op``
  at the next ``i``.
- ``middle_block.0/1/2`` = ``mid_block.resnets.0``, ``mid_block.attentions.0``, ``mid_block.resnets.1``.
- ``output_blocks.i`` counts the up path from 0, ``layers + 1`` per level; the upsampler is
  ``output_blocks.i.2.conv`` after an attention, else ``output_blocks.i.1.conv``.
- resnets: ``norm1/conv1/norm2/conv2/time_emb_proj/conv_shortcut`` =
  ``in_layers.0/in_layers.2/out_layers.0/out_layers.3/emb_layers.1/skip_connection``.
- ``time_embedding.linear_1/2`` = ``time_embed.0/2``; ``add_embedding`` (or ``class_embedding``)
  ``.linear_1/2`` = ``label_emb.0.0/0.2``; ``conv_norm_out`` = ``out.0``; ``conv_out`` = ``out.2``.

Every function here works on dotted paths without the ``model.diffusion_model.`` prefix; a path may
be a module path or a parameter key (``...to_q.weight``): the tail is carried over unchanged.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..base.errors import LoKrKeyError

RESNET_RENAMES: tuple[tuple[str, str], ...] = (
    ("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"),
)
"""(diffusers name inside a ResnetBlock2D, LDM name inside a ResBlock)."""


@dataclass(frozen=True)
class UNetLayout:
    """The structure facts the diffusers <-> LDM numbering depends on.

    ``layers[b]``: resnets per down level ``b``; ``down_attn[b]`` / ``up_attn[b]``: whether down
    level ``b`` / up level ``b`` (``up_blocks.b``, deepest first) has attentions; ``mid_attn``:
    whether the mid block has an attention; ``label_emb``: ``"add_embedding"``,
    ``"class_embedding"`` or None (what ``label_emb.0`` holds).
    """

    layers: tuple[int, ...]
    down_attn: tuple[bool, ...]
    up_attn: tuple[bool, ...]
    mid_attn: bool = True
    label_emb: str | None = None

    @property
    def levels(self) -> int:
        return len(self.layers)

    @property
    def num_input_blocks(self) -> int:
        """``input_blocks`` count: conv_in + every resnet + every downsampler."""
        return 1 + sum(self.layers) + self.levels - 1

    @property
    def num_output_blocks(self) -> int:
        return sum(n + 1 for n in self.layers)


@dataclass(frozen=True)
class Rule:
    """``diffusers`` prefix <-> ``ldm`` prefix; ``resnet`` rules also rename the first sub-module."""

    diffusers: str
    ldm: str
    resnet: bool = False


def _get(config: Any, name: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(name, default)
    return getattr(config, name, default)


def layout_from_config(config: Any) -> UNetLayout:
    """UNetLayout from a diffusers UNet2DConditionModel config (a dict, FrozenDict or model.config).

    Raises LoKrKeyError when the config has no ``block_out_channels`` / ``down_block_types``.
    """
    down_types = _get(config, "down_block_types")
    up_types = _get(config, "up_block_types")
    if not down_types or not up_types:
        raise LoKrKeyError("UNet config: expected 'down_block_types' and 'up_block_types' (a diffusers "
                           f"UNet2DConditionModel config); got keys {sorted(dict(config))[:12] if isinstance(config, Mapping) else type(config).__name__}")
    levels = len(down_types)
    lpb = _get(config, "layers_per_block", 2)
    layers = tuple(int(x) for x in lpb) if isinstance(lpb, (list, tuple)) else (int(lpb),) * levels
    mid_type = _get(config, "mid_block_type", "UNetMidBlock2DCrossAttn")
    add = _get(config, "addition_embed_type")
    cls = _get(config, "class_embed_type")
    label = "add_embedding" if add == "text_time" else ("class_embedding" if cls in ("timestep", "projection") else None)
    return UNetLayout(
        layers=layers,
        down_attn=tuple("Attn" in t for t in down_types),
        up_attn=tuple("Attn" in t for t in up_types),
        mid_attn=mid_type is not None and "Attn" in str(mid_type),
        label_emb=label,
    )


def unet_rules(layout: UNetLayout) -> tuple[Rule, ...]:
    """All prefix rules of one UNet layout (see the module docstring for the numbering)."""
    rules = [Rule("conv_in", "input_blocks.0.0"), Rule("time_embedding.linear_1", "time_embed.0"),
             Rule("time_embedding.linear_2", "time_embed.2"), Rule("conv_norm_out", "out.0"),
             Rule("conv_out", "out.2")]
    if layout.label_emb:
        rules += [Rule(f"{layout.label_emb}.linear_1", "label_emb.0.0"),
                  Rule(f"{layout.label_emb}.linear_2", "label_emb.0.2")]
    i = 1
    for b, n in enumerate(layout.layers):
        for j in range(n):
            rules.append(Rule(f"down_blocks.{b}.resnets.{j}", f"input_blocks.{i}.0", resnet=True))
            if layout.down_attn[b]:
                rules.append(Rule(f"down_blocks.{b}.attentions.{j}", f"input_blocks.{i}.1"))
            i += 1
        if b < layout.levels - 1:
            rules.append(Rule(f"down_blocks.{b}.downsamplers.0.conv", f"input_blocks.{i}.0.op"))
            i += 1
    rules.append(Rule("mid_block.resnets.0", "middle_block.0", resnet=True))
    if layout.mid_attn:
        rules += [Rule("mid_block.attentions.0", "middle_block.1"),
                  Rule("mid_block.resnets.1", "middle_block.2", resnet=True)]
    else:
        rules.append(Rule("mid_block.resnets.1", "middle_block.1", resnet=True))
    i = 0
    for b, n in enumerate(reversed(layout.layers)):
        for j in range(n + 1):
            rules.append(Rule(f"up_blocks.{b}.resnets.{j}", f"output_blocks.{i}.0", resnet=True))
            if layout.up_attn[b]:
                rules.append(Rule(f"up_blocks.{b}.attentions.{j}", f"output_blocks.{i}.1"))
            if b < layout.levels - 1 and j == n:
                up = 2 if layout.up_attn[b] else 1
                rules.append(Rule(f"up_blocks.{b}.upsamplers.0.conv", f"output_blocks.{i}.{up}.conv"))
            i += 1
    return tuple(rules)


def _split(path: str, prefix: str) -> str | None:
    """The tail of ``path`` after ``prefix`` ('' for equality, None when it does not start there)."""
    if path == prefix:
        return ""
    if path.startswith(prefix + "."):
        return path[len(prefix) + 1:]
    return None


def _convert(path: str, rules: Iterable[Rule], to_ldm: bool) -> str | None:
    best: tuple[int, str] | None = None
    for rule in rules:
        src, dst = (rule.diffusers, rule.ldm) if to_ldm else (rule.ldm, rule.diffusers)
        tail = _split(path, src)
        if tail is None:
            continue
        if rule.resnet and tail:
            for d_name, l_name in RESNET_RENAMES:
                a, z = (d_name, l_name) if to_ldm else (l_name, d_name)
                sub = _split(tail, a)
                if sub is not None:
                    tail = z + ("." + sub if sub else "")
                    break
            else:
                continue  # a resnet sub-module we do not know: no conversion
        out = dst + ("." + tail if tail else "")
        if best is None or len(src) > best[0]:
            best = (len(src), out)
    return None if best is None else best[1]


def diffusers_to_ldm(path: str, rules: Iterable[Rule]) -> str | None:
    """``down_blocks.1.attentions.0.proj_in`` -> ``input_blocks.4.1.proj_in`` (None: no LDM name)."""
    return _convert(path, rules, to_ldm=True)


def ldm_to_diffusers(path: str, rules: Iterable[Rule]) -> str | None:
    """``input_blocks.4.1.proj_in`` -> ``down_blocks.1.attentions.0.proj_in`` (None: no diffusers name)."""
    return _convert(path, rules, to_ldm=False)


def unet_module_map(config: Any, paths: Iterable[str]) -> dict[str, str]:
    """{diffusers path: LDM path} for every path of ``paths`` (e.g. a UNet's module names) that has one."""
    rules = unet_rules(layout_from_config(config))
    out = {}
    for p in paths:
        ldm = diffusers_to_ldm(p, rules)
        if ldm is not None:
            out[p] = ldm
    return out


_INPUT = re.compile(r"^input_blocks\.(\d+)\.")
_OUTPUT = re.compile(r"^output_blocks\.(\d+)\.")


def layout_from_ldm_keys(keys: Iterable[str]) -> UNetLayout:
    """Infer the UNetLayout from LDM UNet keys without the ``model.diffusion_model.`` prefix.

    Downsamplers (``input_blocks.i.0.op``) split the input blocks into levels; attentions are
    ``input_blocks.i.1`` / ``output_blocks.i.1`` (not ``.1.conv``). Raises LoKrKeyError when no
    ``input_blocks`` keys are present.
    """
    keys = list(keys)
    inputs, ops, in_attn, out_attn = set(), set(), set(), set()
    mids = set()
    label = False
    for k in keys:
        m = _INPUT.match(k)
        if m:
            i = int(m.group(1))
            inputs.add(i)
            if k.startswith(f"input_blocks.{i}.0.op"):
                ops.add(i)
            elif k.startswith(f"input_blocks.{i}.1."):
                in_attn.add(i)
            continue
        m = _OUTPUT.match(k)
        if m:
            i = int(m.group(1))
            if k.startswith(f"output_blocks.{i}.1.") and not k.startswith(f"output_blocks.{i}.1.conv"):
                out_attn.add(i)
            continue
        if k.startswith("middle_block."):
            mids.add(k.split(".")[1])
        elif k.startswith("label_emb.0.0"):
            label = True
    if not inputs:
        raise LoKrKeyError("LDM UNet keys: expected 'input_blocks.N...' keys to infer the UNet structure; found none")
    bounds = sorted(ops) + [max(inputs) + 1]
    layers, down_attn, start = [], [], 1
    for end in bounds:
        layers.append(end - start)
        down_attn.append(any(start <= i < end for i in in_attn))
        start = end + 1
    up_attn, i = [], 0
    for n in reversed(layers):
        up_attn.append(any(i <= x < i + n + 1 for x in out_attn))
        i += n + 1
    return UNetLayout(tuple(layers), tuple(down_attn), tuple(up_attn), mid_attn="2" in mids or not mids,
                      label_emb="add_embedding" if label else None)


_DOWN = re.compile(r"^down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.")
_UP = re.compile(r"^up_blocks\.(\d+)\.attentions\.")


def layout_from_diffusers_keys(keys: Iterable[str]) -> UNetLayout:
    """Infer the UNetLayout from diffusers UNet keys (``down_blocks.b.resnets.j...``)."""
    res: dict[int, set[int]] = {}
    d_attn, u_attn = set(), set()
    mid_attn = False
    label = None
    for k in keys:
        m = _DOWN.match(k)
        if m:
            b = int(m.group(1))
            res.setdefault(b, set())
            if m.group(2) == "resnets":
                res[b].add(int(m.group(3)))
            else:
                d_attn.add(b)
            continue
        m = _UP.match(k)
        if m:
            u_attn.add(int(m.group(1)))
        elif k.startswith("mid_block.attentions."):
            mid_attn = True
        elif k.startswith("add_embedding.linear_1"):
            label = "add_embedding"
        elif k.startswith("class_embedding.linear_1"):
            label = "class_embedding"
    if not res:
        raise LoKrKeyError("diffusers UNet keys: expected 'down_blocks.N.resnets.M...' keys to infer the UNet "
                           "structure; found none")
    levels = max(res) + 1
    return UNetLayout(tuple(len(res.get(b, ())) for b in range(levels)), tuple(b in d_attn for b in range(levels)),
                      tuple(b in u_attn for b in range(levels)), mid_attn=mid_attn, label_emb=label)
