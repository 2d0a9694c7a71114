"""nodes/patch.py against ComfyUI's weight-adapter contract, without ComfyUI (CPU stand-ins).

Every layout lycoris-lora writes (tests/support/lokr_fixtures.py LAYOUTS + DORA_LAYOUTS: full, split W1 /
W2 / both, Tucker, 1x1 / 3x3 conv, DoRA on both axes) is checked for:

- rebuild: ``type(p)(p.loaded_keys, p.weights)`` computes the same weight, also with every tensor
  staged into a uint8 buffer the way ComfyUI 0.28.0's ``comfy.lora.prefetch_prepared_value``
  does (:func:`stage`, a line-by-line copy of it); the numbers equal lycoris-lora's;
- the bytes staged are the factors' (1024-aligned), never ΔW;
- bypass: ``base_out + h(x, base_out)`` with the attributes ComfyUI's ``BypassForwardHook`` sets
  equals the layer run with W + ΔW; ``g`` is the identity; DoRA refuses by module name.

The same contract inside a real ComfyUI: tests/comfyui/test_comfyui_adapter.py.
"""
from __future__ import annotations

import copy
import dataclasses
import sys

import pytest
import torch
from torch import nn

from tests.support import comfy_standins as cs
from tests.support import lokr_fixtures as F
from tests.support.comfy_pack import pack_module

P = pack_module("nodes.patch")
errors = pack_module("lokr_core.base.errors")
load_lokr = pack_module("lokr_core.formats.io").load_lokr
ALIGN = 1024  # comfy.memory_management.vram_aligned_size (ComfyUI 0.28.0)


def aligned(t: torch.Tensor | None) -> int:
    """``vram_aligned_size``: bytes rounded up to 1024 (0 for None)."""
    return 0 if t is None else (t.numel() * t.element_size() + ALIGN - 1) // ALIGN * ALIGN


def stage(value, counter: list[int], destination: torch.Tensor | None):
    """ComfyUI 0.28.0 ``prefetch_prepared_value``: tensors copied into 1024-aligned views of ``destination``.

    Adapters are rebuilt as ``type(v)(v.loaded_keys, <staged weights>)``; tuples and lists are
    walked; anything else is kept. ``destination`` None only counts bytes (``memory_required``).
    """
    if isinstance(value, torch.Tensor):
        size, offset = aligned(value), counter[0]
        counter[0] += size
        if destination is None:
            return value
        nbytes = value.numel() * value.element_size()
        view = destination[offset:offset + nbytes].view(dtype=value.dtype).view(value.shape)
        view.copy_(value)
        return view
    if isinstance(value, P.LoKrPatchMixin):
        return type(value)(value.loaded_keys, stage(value.weights, counter, destination))
    if isinstance(value, tuple):
        return tuple(stage(v, counter, destination) for v in value)
    if isinstance(value, list):
        return [stage(v, counter, destination) for v in value]
    return value


def tensors_of(patch) -> list[torch.Tensor]:
    return [t for t in patch.weights[0] if t is not None]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.fixture(scope="module")
def lyco(tmp_path_factory):
    """Every lycoris layout written to one file, loaded back, one patch per module."""
    f = F.make_lycoris_file(tmp_path_factory.mktemp("patch"))
    w = load_lokr(f.path)
    patches = {n: P.make_patch(w.modules[n], w.scale(n, "file"), module=n, source=f.path.name)
               for n in f.reference}
    return f, w, patches


def expected(f, name: str, strength: float = 1.0) -> torch.Tensor:
    """W + strength * ΔW from lycoris-lora (DoRA: its merged weight at strength 1)."""
    base = f.weights[name].float()
    if name in f.merged:
        assert strength == 1.0
        return f.merged[name]
    return base + strength * f.reference[name].reshape(base.shape)


NAMES = [n for n in {**F.LAYOUTS, **F.DORA_LAYOUTS}]


def _name(f, fixture_key: str) -> str:
    return next(n for n, k in f.fixture.items() if k == fixture_key)


@pytest.mark.parametrize("key", NAMES)
def test_rebuilt_patch_computes_the_same_weight_as_lycoris(lyco, key):
    f, _, patches = lyco
    name = _name(f, key)
    p = patches[name]
    q = type(p)(p.loaded_keys, p.weights)
    base = f.weights[name].float()
    a = p.calculate_weight(base.clone(), name, 1.0, 1.0, None, None)
    b = q.calculate_weight(base.clone(), name, 1.0, 1.0, None, None)
    assert torch.equal(a, b)
    assert rel(a, expected(f, name)) < 1e-5


@pytest.mark.parametrize("key", NAMES)
def test_staged_into_a_byte_buffer_counts_factors_and_computes_the_same(lyco, key):
    f, _, patches = lyco
    name = _name(f, key)
    p = patches[name]
    counter = [0]
    assert stage(p, counter, None) is not p  # rebuilt even when only counting, as ComfyUI does
    factor_bytes = sum(aligned(t) for t in tensors_of(p))
    assert counter[0] == factor_bytes and factor_bytes > 0
    buf = torch.full((factor_bytes,), 255, dtype=torch.uint8)
    q = stage(p, [0], buf)
    lo, hi = buf.data_ptr(), buf.data_ptr() + buf.numel()
    for t in tensors_of(q):
        assert lo <= t.data_ptr() < hi and t.data_ptr() + t.numel() * t.element_size() <= hi
    assert [None if t is None else tuple(t.shape) for t in q.weights[0]] == \
           [None if t is None else tuple(t.shape) for t in p.weights[0]]
    assert q.params == p.params and q.loaded_keys == p.loaded_keys
    base = f.weights[name].float()
    assert torch.equal(q.calculate_weight(base.clone(), name, 0.7, 1.0, None, None),
                       p.calculate_weight(base.clone(), name, 0.7, 1.0, None, None))


def test_factor_bytes_are_far_below_delta_bytes(lyco):
    """What ComfyUI reserves for a LowVramPatch is the factors: for a split layout a small part of ΔW."""
    f, _, patches = lyco
    name = _name(f, "split_w2_linear")
    counter = [0]
    stage(patches[name], counter, None)
    delta_bytes = f.reference[name].numel() * 4
    assert counter[0] < delta_bytes / 4, (counter[0], delta_bytes)


def test_weights_hold_eight_factor_slots_and_frozen_params(lyco):
    f, w, patches = lyco
    for name, p in patches.items():
        slots, params = p.weights
        assert len(slots) == 8 and P.FACTOR_SLOTS == ("w1", "w1_a", "w1_b", "w2", "w2_a", "w2_b", "t2", "dora_scale")
        for slot, t in zip(P.FACTOR_SLOTS, slots):
            assert t is getattr(w.modules[name], slot)
        assert not any(isinstance(v, torch.Tensor) for v in dataclasses.astuple(params))
        with pytest.raises(dataclasses.FrozenInstanceError):
            params.scale = 2.0
        # loaded_keys are the file keys of the module's tensors
        file_keys = {k for k in f.state_dict if k.startswith(name + ".") and not k.endswith(".alpha")}
        assert p.loaded_keys == file_keys, name
        assert params.module == name and params.source == f.path.name


def test_old_positional_form_is_refused_with_the_expected_form(lyco):
    """ComfyUI <= 0.27 form ``cls(factors, scale)`` or a (set, list) pair: a TypeError saying what is expected."""
    _, _, patches = lyco
    cls = type(next(iter(patches.values())))
    with pytest.raises(TypeError, match="factor slots"):
        cls({"a.lokr_w1"}, [torch.zeros(2, 2), torch.zeros(2, 2)])
    with pytest.raises(TypeError, match="PatchParams"):
        cls(set(), ((None,) * 8, {"scale": 1.0}))


def test_calculate_shape_is_none_and_load_claims_nothing(lyco):
    p = next(iter(lyco[2].values()))
    assert p.calculate_shape("any.weight") is None
    assert type(p).load("x", {"x.lokr_w1": torch.zeros(1)}, None, None) is None


def test_block_weight_makes_a_new_patch_sharing_the_factors(lyco):
    f, _, patches = lyco
    name = _name(f, "split_both_linear")
    p = patches[name]
    q = p.with_block_weight(0.5)
    assert q is not p and p.block_weight == 1.0 and q.block_weight == 0.5
    assert all(a is b for a, b in zip(q.weights[0], p.weights[0]))
    base = f.weights[name].float()
    got = q.calculate_weight(base.clone(), name, 0.8, 1.0, None, None)
    assert rel(got, expected(f, name, 0.4)) < 1e-5
    r = type(q)(q.loaded_keys, q.weights)  # block weight survives a rebuild
    assert torch.equal(r.calculate_weight(base.clone(), name, 0.8, 1.0, None, None), got)


def test_deepcopy_computes_the_same_weight(lyco):
    f, _, patches = lyco
    name = _name(f, "tucker_conv3x3")
    p = patches[name]
    q = copy.deepcopy(p)
    assert all(a is not b for a, b in zip(tensors_of(q), tensors_of(p)))
    base = f.weights[name].float()
    assert torch.equal(q.calculate_weight(base.clone(), name, 1.0, 1.0, None, None),
                       p.calculate_weight(base.clone(), name, 1.0, 1.0, None, None))


def test_strength_zero_returns_the_weight_object_untouched(lyco):
    f, _, patches = lyco
    name = _name(f, "full_conv3x3")
    w = f.weights[name].float().clone()
    before = w.clone()
    assert patches[name].calculate_weight(w, name, 0.0, 1.0, None, None) is w
    assert torch.equal(w, before)


def test_row_offset_updates_the_fused_weight_in_place(lyco):
    """ComfyUI narrows a fused weight (dim 0, start, length) and keeps the parent: rows outside stay."""
    f, _, patches = lyco
    name = _name(f, "split_w2_linear")
    ref = f.reference[name]
    rows = ref.shape[0]
    big = torch.randn(rows + 24, ref.shape[1])
    before = big.clone()
    patches[name].calculate_weight(big.narrow(0, 16, rows), name, 1.0, 1.0, (0, 16, rows), None)
    assert rel(big[16:16 + rows], before[16:16 + rows] + ref) < 1e-5
    assert torch.equal(big[:16], before[:16]) and torch.equal(big[16 + rows:], before[16 + rows:])


def _bypass_layer(f, name: str) -> nn.Module:
    return dict(f.model.named_modules())[f.paths[name]]


def _hook_attributes(adapter, layer: nn.Module, multiplier: float) -> None:
    """What ComfyUI 0.28.0's BypassForwardHook sets on an adapter before h() is called."""
    adapter.multiplier = multiplier
    adapter.is_conv = isinstance(layer, nn.Conv2d)
    adapter.kernel_size = tuple(layer.kernel_size) if adapter.is_conv else ()
    adapter.kw_dict = ({"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation,
                        "groups": layer.groups} if adapter.is_conv else {})


@pytest.mark.parametrize("key", ["full_linear", "split_w1_linear", "split_both_linear", "full_conv1x1",
                                 "split_conv3x3", "tucker_conv3x3", "tucker_split_w1_conv3x3"])
def test_bypass_h_equals_the_layer_with_the_merged_weight(lyco, key):
    f, _, patches = lyco
    name = _name(f, key)
    layer = _bypass_layer(f, name)
    p = type(patches[name])(patches[name].loaded_keys, patches[name].weights)  # own copy: attributes get set
    _hook_attributes(p, layer, 0.6)
    g = torch.Generator().manual_seed(3)
    if isinstance(layer, nn.Conv2d):
        x = torch.randn(2, layer.in_channels, 9, 7, generator=g)
        run = lambda w: nn.functional.conv2d(x, w, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)  # noqa: E731
    else:
        x = torch.randn(3, 5, layer.in_features, generator=g)
        run = lambda w: nn.functional.linear(x, w, layer.bias)  # noqa: E731
    base = f.weights[name].float()
    with torch.no_grad():
        base_out = run(base)
        got = p.g(base_out + p.h(x, base_out))
        want = run(expected(f, name, 0.6))
    assert p.g(base_out) is base_out
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_bypass_refuses_dora_naming_the_module(lyco):
    f, _, patches = lyco
    name = _name(f, "dora_out_linear")
    layer = _bypass_layer(f, name)
    p = patches[name]
    _hook_attributes(p, layer, 1.0)
    x = torch.randn(2, layer.in_features)
    with pytest.raises(errors.LoKrConfigError, match=name):
        p.h(x, nn.functional.linear(x, f.weights[name]))


def test_bypass_factors_cast_once_per_device(lyco):
    f, _, patches = lyco
    p = patches[_name(f, "full_linear")]
    a = p.factors_on(torch.device("cpu"))
    assert a is p.factors_on(torch.device("cpu"))
    assert all(t.dtype == torch.float32 for _, t in a.tensors())


def test_class_is_a_weight_adapter_when_comfy_is_importable(monkeypatch, lyco):
    f, w, _ = lyco
    name = _name(f, "full_linear")
    for k, v in cs.fake_comfy_weight_adapter().items():
        monkeypatch.setitem(sys.modules, k, v)
    P.lokr_patch_class.cache_clear()
    try:
        p = P.make_patch(w.modules[name], 1.0, module=name)
        assert isinstance(p, cs.WeightAdapterBase) and P.is_lokr_patch(p)
        q = stage(p, [0], torch.empty(sum(aligned(t) for t in tensors_of(p)), dtype=torch.uint8))
        assert type(q) is type(p)
    finally:
        P.lokr_patch_class.cache_clear()
