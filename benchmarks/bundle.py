"""What a dataset loader returns (`DataBundle`) and images held in one tensor (`TensorImages`).

A module of its own so that benchmarks/data.py and benchmarks/synthetic.py both import it at the top and
neither imports the other's caller; `from benchmarks.data import DataBundle` still works (re-exported).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


@dataclass
class DataBundle:
    train: Dataset
    test: Dataset
    num_classes: int
    input_size: int
    fingerprint: str
    val: Dataset | None = None  # held out of `train` for model selection (Hou & Kwok's 45k/5k split)


class TensorImages(Dataset):
    """Images held in one tensor; training copies get a random translation (pad + crop, no flip: digits)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, pad: int = 0) -> None:
        self.images, self.labels, self.pad = images, labels, pad

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.images[index]
        if self.pad:
            size = img.shape[-1]
            padded = F.pad(img, (self.pad,) * 4)
            dy, dx = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            img = padded[:, dy : dy + size, dx : dx + size]
        return img, int(self.labels[index])
