"""Layer 5, operations on models and checkpoints built from the layers below.

:mod:`.apply` (a LoKr on a live model: merge into the weights or bypass through hooks),
:mod:`.merge` (LoKr files into a checkpoint or state dict, streamed tensor by tensor),
:mod:`.extract` (a LoKr from two checkpoints, rank reduction) and :mod:`.report` (what a file
holds and how it fits a model). Each reads weights through :mod:`lokr_core.formats` and matches
names through :mod:`lokr_core.keymap`.
"""
