import os

# One thread per process: the suite runs subprocesses (SIGKILL/resume, torchrun with 2 ranks) on a 2-core
# machine, where torch's default of one thread per core oversubscribes and runs up to 40x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from cacim_core import quantizers  # noqa: E402

torch.set_num_threads(1)

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
