"""Host syncs per training step: a quantized step costs at most 2 more than the float step, at any depth."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode

from cacim_core import QuantConfig, quantize_model, refit_check

# Ops that copy a device value to the host (.item(), float(), bool(), .tolist(), nonzero's size).
SYNC_OPS = {"aten::_local_scalar_dense", "aten::item", "aten::nonzero", "aten::equal", "aten::is_nonzero"}


class SyncCounter(TorchDispatchMode):
    """Counts the aten calls that force a host sync on an accelerator (the same calls run on CPU).

    A copy to the CPU counts only from another device; on CPU, `.tolist()` of a CPU tensor dispatches no
    op, so refit_check's one `.tolist()` (its one sync on a GPU) is not seen here: the bound of 2 leaves
    room for it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        to_cpu = (
            name == "aten::_to_copy"
            and str((kwargs or {}).get("device", "")) == "cpu"
            and args[0].device.type != "cpu"
        )
        if name in SYNC_OPS or to_cpu:
            self.calls[name] = self.calls.get(name, 0) + 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def syncs_per_step(model: torch.nn.Module, quantized: bool) -> int:
    """Host syncs in one full step: forward, backward, SGD step (+ Algorithm 1's refit_check).

    The learning rate is 0 because a random-init ResNet at batch 2 and 32x32 (BatchNorm over 2 values on
    1x1 maps) has gradients 1e2-1e8 times its weights' norm: at any usual rate every layer would re-fit,
    and a re-fit (rare by design, a few per run) costs its own syncs. SGD still runs all its kernels; the
    counted step re-fits nothing, so it measures the steady-state step.
    """
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 32, 32, generator=g), torch.tensor([1, 7])
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    refits = []

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if quantized:
            refits.append(refit_check(model))

    model.train()
    step()  # warm-up: lazy state (momentum buffers) is created outside the counted step
    counter = SyncCounter()
    with counter:
        step()
    assert not quantized or refits[-1] == 0, "the counted step re-fitted a layer: lower the learning rate"
    return counter.total


CASES = [("resnet18", m, 4) for m in ("lloyd", "lsq", "lqnet", "apot")]
CASES += [("resnet18", m, 3) for m in ("ttq", "twn", "hefan")]
CASES += [("resnet50", m, 4) for m in ("lloyd", "lsq")]


@pytest.mark.parametrize("arch,method,levels", CASES)
def test_quantized_step_adds_at_most_two_syncs(arch, method, levels):
    torch.manual_seed(0)
    float_syncs = syncs_per_step(getattr(torchvision.models, arch)(num_classes=10), quantized=False)
    torch.manual_seed(0)
    config = QuantConfig(method=method, levels=levels, noise=0.02)
    model = quantize_model(getattr(torchvision.models, arch)(num_classes=10), config)
    quantized_syncs = syncs_per_step(model, quantized=True)
    assert quantized_syncs - float_syncs <= 2, (float_syncs, quantized_syncs)


def test_sync_counter_sees_item():
    """The counter is not blind: .item() and float() are counted."""
    counter = SyncCounter()
    t = torch.ones(3)
    with counter:
        t.sum().item()
        float(t.max())
    assert counter.total == 2


def test_evaluation_counts_hits_on_the_device_and_matches_a_numpy_reference(monkeypatch):
    """`torch_loop.accuracy` keeps its hit counts on the device (no per-batch `int(tensor)`: on a GPU two
    host syncs per batch) and gives the top-1/top-5 a numpy argsort computes from the same logits."""
    import numpy as np

    from benchmarks.backends import Context, torch_loop

    torch.manual_seed(0)
    images, labels = torch.randn(600, 3, 8, 8), torch.randint(0, 10, (600,))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10)).eval()
    ctx = Context("smoke", None, None, None, progress=False)  # type: ignore[arg-type]
    # the batches a loader would yield, made beforehand: its own indexing is host work, not counted here
    batches = list(zip(images.split(256), labels.split(256), strict=True))
    monkeypatch.setattr(torch_loop, "eval_loader", lambda dataset, ctx: batches)
    counter = SyncCounter()
    with counter:
        got = torch_loop.accuracy(model, None, ctx)  # type: ignore[arg-type]
    assert counter.total == 0
    with torch.no_grad():
        order = np.argsort(-model(images).numpy(), axis=1, kind="stable")
    truth = labels.numpy()[:, None]
    assert got["top1"] == pytest.approx(100 * (order[:, :1] == truth).any(1).mean())
    assert got["top5"] == pytest.approx(100 * (order[:, :5] == truth).any(1).mean())
