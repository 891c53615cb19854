"""On a CUDA device: the quantized step matches the CPU step, and its host syncs are the ones it claims.

`test_hot_path.py` counts sync-forcing aten calls on CPU, where refit_check's one `.cpu()` copy is
invisible; here torch's own sync detector (`torch.cuda.set_sync_debug_mode`) counts them on the device.
Skipped without a GPU (CI has none); run on one with `pytest tests/test_cuda.py`.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision

from cacim_core import QuantConfig, quantize_model, refit_check
from cacim_core.quantizers.lloyd import Lloyd

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _syncs(fn) -> int:
    """How many synchronizing CUDA calls `fn` makes, by torch's detector ("warn" mode: one warning each)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


#: measured on an NVIDIA H200 (torch 2.11, 2026-12-04): lsq and ttq make no sync in the step, lloyd makes
#: exactly one per step (not one per layer), which the CPU dispatch count of test_hot_path does not see;
#: where it comes from is not located yet (issue 25). Since then the lookup of up to 8 levels is a chain of
#: selects, no longer bucketize + gather (656f8df): not yet rerun on a GPU, so non-strict
LLOYD_SYNC = pytest.mark.xfail(reason="one host sync per step measured on an H200; not located yet")


@pytest.mark.parametrize(
    "method,levels", [pytest.param("lloyd", 4, marks=LLOYD_SYNC), ("lsq", 4), ("ttq", 3)]
)
def test_a_quantized_step_on_the_gpu_syncs_once_in_refit_check_only(method, levels) -> None:
    torch.manual_seed(0)
    model = quantize_model(
        torchvision.models.resnet18(num_classes=10), QuantConfig(method, levels, noise=0.02)
    )
    model = model.cuda().train()
    x, y = torch.randn(4, 3, 32, 32, device="cuda"), torch.tensor([1, 7, 3, 0], device="cuda")
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)  # lr 0: the counted step re-fits nothing

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # warm-up: momentum buffers, cuDNN plans
    assert _syncs(step) == 0  # forward with NATS noise, backward, SGD: no host sync at all
    refits: list[int] = []
    syncs = _syncs(lambda: refits.append(refit_check(model)))
    assert refits == [0]
    assert syncs <= 1  # the one batched projection test, whatever the depth (0 for learned quantizers)


def test_the_gpu_step_computes_what_the_cpu_step_computes() -> None:
    torch.manual_seed(0)
    config = QuantConfig("lloyd", 4, noise=0.0)
    cpu = quantize_model(torchvision.models.resnet18(num_classes=10), config).eval()
    gpu = quantize_model(torchvision.models.resnet18(num_classes=10), config)
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda().eval()
    x = torch.randn(2, 3, 64, 64)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        out_cpu, out_gpu = cpu(x), gpu(x.cuda()).cpu()
    assert torch.allclose(out_cpu, out_gpu, rtol=1e-3, atol=1e-4)


def test_lloyd_on_the_gpu_finds_the_cpu_levels() -> None:
    torch.manual_seed(0)
    w = torch.randn(4096) * 0.05
    for v in (3, 4, 8):
        on_cpu, on_gpu = Lloyd(v), Lloyd(v).cuda()
        on_cpu.fit(w)
        on_gpu.fit(w.cuda())
        assert on_gpu.levels.is_cuda
        assert torch.allclose(on_gpu.levels.cpu(), on_cpu.levels, atol=1e-6)
