"""The LoKr factorization rule (docs/math.md, Factorization), as PEFT and LyCORIS apply it."""
from __future__ import annotations


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """Split ``dimension`` into ``(m, n)`` with ``m * n == dimension``.

    - ``factor > 0`` dividing ``dimension``: ``(factor, dimension // factor)`` exactly as PEFT
      returns it (so ``m > n`` is possible, e.g. ``factorization(8, 4) == (4, 2)``).
    - otherwise (``factor == -1`` means no limit): the most balanced pair whose smaller part does not
      exceed ``factor``, searching divisors upwards from 1; the result has ``m <= n``.

    Examples: 256 -> (16, 16); 128 -> (8, 16); 127 -> (1, 127); (128, 4) -> (4, 32);
    320 -> (16, 20); 768 -> (24, 32); 1280 -> (32, 40).
    """
    if dimension <= 0:
        raise ValueError(f"factorization: dimension must be positive, got {dimension}")
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    if factor == -1:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    if m > n:
        n, m = m, n
    return m, n
