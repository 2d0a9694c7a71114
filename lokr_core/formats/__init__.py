"""Layer 4, files: reading and writing LoKr files and checkpoints.

:mod:`.sources` (a safetensors file or a state dict behind one lazy interface), :mod:`.keys`
(file keys -> modules), :mod:`.detect` (which format a path or key list is), :mod:`.lycoris`
(LyCORIS / kohya files), :mod:`.peft` (PEFT adapter folders), :mod:`.weights` (``LoKrWeights``:
the parsed file, lazy factors, scale rules, ΔW), :mod:`.io` (``load_lokr`` / ``save_lokr``, the
one entry point) and :mod:`.checkpoint` (checkpoint headers, diffusers folders, the streamed
safetensors writer). Names are resolved through :mod:`lokr_core.keymap`.
"""
