"""Layer 2, the PEFT-style tuner: LoKr layers injected into a live ``nn.Module`` for training.

:mod:`.config` (``LoKrConfig``, PEFT's field names), :mod:`.targeting` (which modules a config
adapts), :mod:`.layers` (``LoKrLayer``: adapters by name around one Linear / Conv, built from
:mod:`.adapter_store` (adapters by name: creation, activation), :mod:`.layer_merge` (merge /
unmerge) and :mod:`.layer_forward` (forward paths, ΔW)) and
:mod:`.model` (inject, merge_and_unload, unload, state dicts, PEFT adapter folders). Built on
:mod:`lokr_core.tensor`; knows nothing about other tools' key names or files.
"""
