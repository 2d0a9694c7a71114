"""Fuzz: PEFT adapter folders whose adapter_config.json contradicts itself (several rank / alpha
patterns matching one module with other values, invalid regexes, ill-typed or out-of-range fields,
not a dict at all) beside hostile PEFT tensors, fed to ``load_lokr`` (folder, and state dict +
config) and ``apply_lokr``. Only LoKrError subclasses may escape; the model is unchanged on failure
and finite on success."""
from __future__ import annotations

import json

import torch
from hypothesis import event, given
from hypothesis import strategies as st

from lokr_core.base.errors import LoKrError
from lokr_core.formats.io import load_lokr
from lokr_core.ops.apply import apply_lokr
from tests.fuzz.strategies import fuzz, module_set, peft_config
from tests.fuzz.test_fuzz_files import use_weights
from tests.fuzz.test_fuzz_modules import save


@fuzz(250)
@given(data=st.data())
def test_peft_configs(data, targets, unet, pristine, scratch):
    sd, notes = data.draw(module_set(targets, schemes=["peft"]), label="state dict")
    paths = sorted({k.rsplit(".", 1)[0][len("base_model.model."):] for k in sd if k.startswith("base_model.model.")})
    cfg = data.draw(peft_config(paths), label="adapter_config")
    folder = scratch / "peft"
    folder.mkdir(exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    if not save(sd, folder / "adapter_model.safetensors"):
        return
    for load in (lambda: load_lokr(folder), lambda: load_lokr(sd, config=cfg)):
        try:
            weights = load()
            use_weights(weights)
            apply_lokr(unet, weights, strength=1.0, mode="merge")
            event("peft: applied")
        except LoKrError as exc:
            event(f"peft: {type(exc).__name__}")
            now = unet.state_dict()
            assert all(torch.equal(now[k], pristine[k]) for k in pristine), notes
            continue
        try:
            bad = [k for k, v in unet.state_dict().items() if not torch.isfinite(v).all()]
            assert not bad, (notes, cfg, bad[:3])
        finally:
            unet.load_state_dict(pristine)
