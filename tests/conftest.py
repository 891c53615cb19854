import pytest
import torch

from cacim_core import quantizers

# Every registered method with the level counts it supports.
METHOD_LEVELS = [
    (m, v)
    for m in quantizers.names()
    for v in (3, 4, 8)
    if not (m in ("ttq", "twn", "hefan") and v != 3) and not (m == "lqnet" and v == 3)
]


@pytest.fixture
def gaussian_weights() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 8, 3, 3, generator=g) * 0.05
