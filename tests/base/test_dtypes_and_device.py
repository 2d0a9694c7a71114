"""lokr_core.base.dtypes.parse_dtype and lokr_core.base.device.parse_device: the one parser of each."""
import pytest
import torch

from lokr_core.base.device import parse_device
from lokr_core.base.dtypes import ST_CODES, TORCH_DTYPES, parse_dtype
from lokr_core.base.errors import LoKrConfigError


def test_parse_dtype_and_parse_device():
    assert parse_dtype("fp16") is torch.float16 and parse_dtype(None) is None
    assert parse_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(LoKrConfigError, match="floating"):
        parse_dtype(torch.int8)
    assert parse_device("cpu").type == "cpu"
    assert parse_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(LoKrConfigError, match="not a torch device"):
        parse_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(LoKrConfigError, match="CUDA is not available"):
            parse_device("cuda")
    assert TORCH_DTYPES["BF16"] is torch.bfloat16 and ST_CODES[torch.float16] == "F16"
