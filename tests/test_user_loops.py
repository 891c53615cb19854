"""cacim_core inside a user's own loop the way it is run at scale: DDP over two processes, torch.compile.

Noise-free configs, so that every comparison is exact up to float arithmetic: NATS draws differ by rank (and
by design between runs), which would hide what is checked here — that wrapping changes nothing.
"""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from cacim_core import QuantConfig, float_weight, quantize_model, quantized_layers, refit_check

CONFIG = QuantConfig(method="lloyd", levels=4, refit_threshold=0.02)
STEPS = 6


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )  # fmt: skip


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, 3, 12, 12, generator=g), torch.randint(0, 5, (8,), generator=g)) for _ in range(STEPS)
    ]


def _train(model: nn.Module, batches, step_model: nn.Module | None = None, lr: float = 0.5) -> int:
    """SGD steps with Algorithm 1's check after each; `step_model` runs the forward (a DDP or compiled
    wrapper of `model`). Returns the re-fits."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    forward = step_model or model
    refits = 0
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(forward(x), y).backward()
        opt.step()
        refits += refit_check(model)
    return refits


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _ddp_rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    model = quantize_model(_net(), CONFIG)
    ddp = nn.parallel.DistributedDataParallel(model)
    halves = [(x[rank * 4 : rank * 4 + 4], y[rank * 4 : rank * 4 + 4]) for x, y in _batches()]
    refits = _train(model, halves, step_model=ddp)
    torch.save({"state": _state(model), "refits": refits}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_over_two_processes_trains_what_one_process_trains_on_the_whole_batch(tmp_path) -> None:
    """DDP averages the two half-batch gradients of the float weights (the parametrization's `original`),
    so both ranks step, re-fit and end exactly like one process on the full batch."""
    mp.spawn(_ddp_rank, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    single = quantize_model(_net(), CONFIG)
    refits = _train(single, _batches())
    assert refits > 0  # the check re-fitted layers along the way: the ranks must agree on those too
    assert ranks[0]["refits"] == ranks[1]["refits"] == refits
    expected = _state(single)
    for got in (r["state"] for r in ranks):
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_torch_compile_follows_refits_and_matches_eager() -> None:
    """A compiled quantized model trains like the eager one, and after a re-fit that changes the levels
    (so the buffers are new tensors) the compiled forward uses the new levels, not the traced ones."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager = quantize_model(_net(), CONFIG)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model)
    batches = _batches()
    refits = _train(eager, batches)
    assert refits == _train(compiled_model, batches, step_model=compiled) and refits > 0
    x = batches[0][0]
    eager.eval(), compiled_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-4, atol=1e-5)
        for model in (eager, compiled_model):  # move every weight, then force a re-fit of every layer
            for _, module, _ in quantized_layers(model):
                float_weight(module).mul_(1.7).add_(0.01)
            assert refit_check(model, threshold=0.0) == len(quantized_layers(model))
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-4, atol=1e-5)
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]  # really compiled, whole
