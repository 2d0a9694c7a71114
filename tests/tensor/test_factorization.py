"""factorization() against PEFT's and lycoris-lora's own functions."""
import pytest
from peft.tuners.lokr.layer import factorization as peft_factorization

from lokr_core.tensor.factorization import factorization

DIMS = [1, 2, 4, 8, 127, 128, 256, 320, 640, 768, 1024, 1280, 2048, 2560, 3072, 5120, 10240, 77, 96]


@pytest.mark.parametrize("factor", [-1, 1, 2, 3, 4, 8, 16, 32])
def test_equals_peft_for_every_sd_dimension(factor):
    for dim in DIMS:
        assert factorization(dim, factor) == peft_factorization(dim, factor), (dim, factor)


def test_known_values_of_the_split_rule():
    assert factorization(256) == (16, 16)
    assert factorization(128) == (8, 16)
    assert factorization(127) == (1, 127)
    assert factorization(128, 4) == (4, 32)
    assert factorization(320) == (16, 20)
    assert factorization(768) == (24, 32)
    assert factorization(1280) == (32, 40)
    assert factorization(8, 4) == (4, 2)  # PEFT keeps a factor above the cofactor as given


def test_matches_lycoris_where_lycoris_agrees_with_peft():
    from lycoris.functional.general import factorization as lycoris_factorization

    for dim in DIMS:
        for factor in (-1, 4, 8, 16):
            m, n = lycoris_factorization(dim, factor)
            assert sorted(factorization(dim, factor)) == sorted((m, n))


def test_rejects_non_positive_dimension():
    with pytest.raises(ValueError, match="dimension must be positive"):
        factorization(0)
