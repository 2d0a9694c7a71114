"""Layer 1, the math: pure tensor functions on LoKr factors, independent of any model or file.

:mod:`.factorization` (LyCORIS' dimension split), :mod:`.factors` (``LoKrFactors``: W1 / W2 in
every layout, shape checks), :mod:`.shapes` (which factor shapes a layer gets), :mod:`.kron`
(ΔW, and the Kronecker product applied without building ΔW), :mod:`.scale` (the alpha / rank
scale rules) and :mod:`.decompose` (nearest Kronecker product, rank reduction: the math behind
extract / resize). The same functions serve training, merging and bypass.
"""
