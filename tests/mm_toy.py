"""The toy mmengine model, metric and data shared by the CacimHook and OpenMMLab tests (mmengine needed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import METRICS
from torch import nn


class ToyNet(BaseModel):
    """Small classifier; `batch_norm` puts a BatchNorm (buffers to restore) after the first Linear layer."""

    def __init__(self, batch_norm: bool = False) -> None:
        super().__init__()
        norm = [nn.BatchNorm1d(32)] if batch_norm else []
        self.net = nn.Sequential(
            nn.Linear(4, 32), *norm, nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2)
        )

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


def toy_data(n: int, seed: int) -> list[dict]:
    """A linearly separable 2-class problem in 4 dimensions, fixed by `seed`."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return [{"inputs": a, "labels": b} for a, b in zip(x, y, strict=True)]
