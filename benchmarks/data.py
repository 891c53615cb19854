"""Datasets: CIFAR-10 (python batches), ImageNet (class folders), and the proxy digits that ship with sklearn.

A missing or malformed dataset raises `DatasetError` with one line that names the expected layout.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import datasets, transforms

from benchmarks.results import fingerprint_files

CIFAR_LAYOUT = (
    "DIR/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} "
    "(the python version of CIFAR-10, https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, unpacked)"
)
IMAGENET_LAYOUT = (
    "DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG (ILSVRC-2012, val sorted into class folders)"
)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DatasetError(ValueError):
    """Missing or malformed data; the message is one line naming the expected layout."""


@dataclass
class DataBundle:
    train: Dataset
    test: Dataset
    num_classes: int
    input_size: int
    fingerprint: str


class CifarBatches(datasets.CIFAR10):
    """torchvision's CIFAR10 reader without its md5 check, so that any file in the real pickle format loads.

    The md5 check would reject every file but the official archive's (the tests write tiny batches in the
    same format); the exact data used is recorded instead by a content hash (`DataBundle.fingerprint`).
    """

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        path = Path(self.root) / self.base_folder / self.meta["filename"]
        with open(path, "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


def cifar10(root: str | Path, augment: bool = True) -> DataBundle:
    """CIFAR-10 with He et al. (2016) augmentation: 4-pixel padding, random 32x32 crop, horizontal flip."""
    root = Path(root)
    folder = root / CifarBatches.base_folder
    names = [n for n, _ in CifarBatches.train_list + CifarBatches.test_list] + ["batches.meta"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DatasetError(f"CIFAR-10 not found at {root} (missing {missing[0]}): expected {CIFAR_LAYOUT}")
    normalize = transforms.Normalize(CIFAR_MEAN, CIFAR_STD)
    train_tf = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if augment else []
    try:
        train = CifarBatches(
            root,
            train=True,
            transform=transforms.Compose([*train_tf, transforms.ToTensor(), normalize]),
            download=False,
        )
        test = CifarBatches(
            root,
            train=False,
            transform=transforms.Compose([transforms.ToTensor(), normalize]),
            download=False,
        )
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as exc:
        raise DatasetError(
            f"CIFAR-10 at {root} is malformed ({type(exc).__name__}: {exc}): expected {CIFAR_LAYOUT}"
        ) from exc
    if len(set(train.targets)) < 2 or len(train.classes) != 10:
        raise DatasetError(
            f"CIFAR-10 at {root} is malformed (expected 10 label names): expected {CIFAR_LAYOUT}"
        )
    return DataBundle(train, test, 10, 32, fingerprint_files([folder / n for n in names]))


def imagenet(root: str | Path, augment: bool = True) -> DataBundle:
    """ImageNet with the torchvision recipe: random-resized 224 crop + flip; val resize 256, center 224."""
    root = Path(root)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetError(
                f"ImageNet not found at {root} (no {split}/ folder): expected {IMAGENET_LAYOUT}"
            )
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = (
        [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
        if augment
        else [transforms.Resize(256), transforms.CenterCrop(224)]
    )
    try:
        train = datasets.ImageFolder(
            root / "train", transforms.Compose([*train_tf, transforms.ToTensor(), normalize])
        )
        test = datasets.ImageFolder(
            root / "val",
            transforms.Compose(
                [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), normalize]
            ),
        )
    except (FileNotFoundError, RuntimeError) as exc:
        raise DatasetError(f"ImageNet at {root} is malformed ({exc}): expected {IMAGENET_LAYOUT}") from exc
    if train.classes != test.classes:
        raise DatasetError(
            f"ImageNet at {root}: train/ and val/ hold different classes: expected {IMAGENET_LAYOUT}"
        )
    # Hashing 150 GB of JPEGs is too slow; the file list with sizes identifies the copy well enough.
    h = hashlib.sha256()
    for path, label in train.samples + test.samples:
        h.update(f"{os.path.relpath(path, root)}:{label}:{os.path.getsize(path)}".encode())
    return DataBundle(train, test, len(train.classes), 224, h.hexdigest()[:16])


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


def digits(size: int, augment: bool = True, noise: float = 0.0, test_fraction: float = 0.25) -> DataBundle:
    """scikit-learn's 8x8 handwritten digits (1797 images, ships with the package), upsampled to size x size.

    `noise` adds fixed Gaussian pixel noise (std relative to the 0..1 ink range, drawn once with seed 1 at
    8x8) so that the proxy is hard enough (float ResNet ~85-90% instead of ~98%) for quantization gaps to
    show. Bilinear upsampling, 3 channels, standardised with the training mean/std; a fixed stratified
    split (every 4th image of each class goes to test) so every run sees the same data.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    if noise:
        x = x + noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.repeat(1, 3, 1, 1)
    is_test = torch.zeros(len(y), dtype=torch.bool)
    period = round(1 / test_fraction)
    for label in range(10):
        idx = (y == label).nonzero().flatten()
        is_test[idx[::period]] = True
    # float64 numpy statistics: a float32 torch reduction differs in its last bits with the thread count,
    # which changed the data's fingerprint (and retrained the cached float models) between 1 and 2 threads
    train_np = x[~is_test].numpy().astype(np.float64)
    x = ((x.double() - train_np.mean()) / train_np.std(ddof=1)).float()
    fingerprint = hashlib.sha256(np.ascontiguousarray(x.numpy()).tobytes()).hexdigest()[:16]
    pad = max(1, size // 8) if augment else 0
    return DataBundle(
        TensorImages(x[~is_test], y[~is_test], pad),
        TensorImages(x[is_test], y[is_test]),
        10,
        size,
        fingerprint,
    )


def load_data(name: str, root: str | Path | None = None, augment: bool = True) -> DataBundle:
    """Build a dataset by name: cifar10 / imagenet (need `root`); proxy: digits<size>[-noise<percent>]."""
    if name == "synth32":
        from benchmarks.synthetic import SynthSpec, synth_bundle

        return synth_bundle(SynthSpec(), augment)
    if name.startswith("digits"):
        size, _, noise = name.removeprefix("digits").partition("-noise")
        return digits(int(size), augment, int(noise or 0) / 100)
    loaders = {"cifar10": (cifar10, CIFAR_LAYOUT), "imagenet": (imagenet, IMAGENET_LAYOUT)}
    if name not in loaders:
        raise DatasetError(f"unknown dataset {name!r}; known: cifar10, imagenet, digits<size>[-noise<pct>]")
    loader, layout = loaders[name]
    if root is None:
        raise DatasetError(f"{name} needs its files: pass --data DIR (make ... DATA=DIR) with {layout}")
    return loader(root, augment)
