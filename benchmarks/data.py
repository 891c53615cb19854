"""Datasets: CIFAR-10 (python batches), ImageNet (class folders), and the proxy digits that ship with sklearn.

A missing or malformed dataset raises `DatasetError` with one line that names the expected layout.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import datasets, transforms
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg
from torchvision.transforms import functional as TF

from benchmarks.bundle import DataBundle, TensorImages
from benchmarks.results import fingerprint_files
from benchmarks.synthetic import DATASETS, synth_bundle

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


class CifarBatches(datasets.CIFAR10):
    """torchvision's CIFAR10 reader without its md5 check, so that any file in the real pickle format loads.

    The md5 check would reject every file but the official archive's (the tests write tiny batches in the
    same format); the exact data used is recorded instead by a content hash (`DataBundle.fingerprint`).
    """

    def _check_integrity(self) -> bool:
        return True  # `cifar10` has checked that every file is there, with an error naming the layout

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
    to_tensor = [transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)]
    train_tf = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if augment else []
    try:
        train = CifarBatches(root, train=True, transform=transforms.Compose(train_tf + to_tensor))
        test = CifarBatches(root, train=False, transform=transforms.Compose(to_tensor))
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as exc:
        raise DatasetError(
            f"CIFAR-10 at {root} is malformed ({type(exc).__name__}: {exc}): expected {CIFAR_LAYOUT}"
        ) from exc
    if len(set(train.targets)) < 2 or len(train.classes) != 10:
        raise DatasetError(
            f"CIFAR-10 at {root} is malformed (expected 10 label names): expected {CIFAR_LAYOUT}"
        )
    return DataBundle(train, test, 10, 32, fingerprint_files([folder / n for n in names]))


def global_contrast_normalize(x: np.ndarray, scale: float = 55.0) -> np.ndarray:
    """pylearn2's global contrast normalisation (scale 55, as its make_cifar10_gcn_whitened.py): each row
    minus its own mean, divided by its L2 norm, times `scale`; rows of norm < 1e-8 are only centred."""
    x = x.astype(np.float64) - x.mean(axis=1, keepdims=True, dtype=np.float64)
    norms = np.sqrt((x**2).sum(axis=1)) / scale
    norms[norms < 1e-8] = 1.0
    return x / norms[:, None]


def zca_fit(x: np.ndarray, filter_bias: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """pylearn2's ZCA: (mean, P) with P = V diag(1/sqrt(e)) V^T for the eigenpairs (e, V) of
    cov(x) + filter_bias * I (biased covariance, pylearn2's default bias 0.1); apply as (x - mean) @ P."""
    x = x.astype(np.float64)
    mean = x.mean(axis=0)
    centred = torch.from_numpy(x - mean)
    covariance = (centred.T @ centred).numpy() / len(x) + filter_bias * np.eye(x.shape[1])
    eigs, eigv = np.linalg.eigh(covariance)
    return mean, (eigv / np.sqrt(eigs)) @ eigv.T


def cifar10_hou(root: str | Path) -> DataBundle:
    """Hou & Kwok's CIFAR-10 (Table 2; houlu369/Loss-aware-weight-quantization FNN/cifar10.py).

    Their pylearn2 data: global contrast normalisation (scale 55) and ZCA whitening fitted on all 50k
    training images, no augmentation; the first 45k train, the last 5k (`val`) pick the epoch whose test
    accuracy is reported. A smaller copy (the tests) keeps the 9:1 split.
    """
    plain = cifar10(root, augment=False)
    train, test = plain.train, plain.test

    def rows(images: np.ndarray) -> np.ndarray:  # NHWC uint8 -> the pickle's rows (3 planes of 32x32)
        return images.transpose(0, 3, 1, 2).reshape(len(images), -1)

    x_train = global_contrast_normalize(rows(train.data))
    mean, whiten = zca_fit(x_train)

    def images(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x - mean) @ whiten).astype(np.float32)).reshape(-1, 3, 32, 32)

    train_x, test_x = images(x_train), images(global_contrast_normalize(rows(test.data)))
    train_y, test_y = torch.tensor(train.targets), torch.tensor(test.targets)
    split = len(train_y) - len(train_y) // 10
    fingerprint = hashlib.sha256(f"{plain.fingerprint}:gcn55-zca0.1-split{split}".encode()).hexdigest()[:16]
    return DataBundle(
        TensorImages(train_x[:split], train_y[:split]),
        TensorImages(test_x, test_y),
        10,
        32,
        fingerprint,
        val=TensorImages(train_x[split:], train_y[split:]),
    )


class ScaleAugment:
    """He et al. (2016) scale augmentation: shorter side uniform in [low, high] pixels, then a random crop.

    Works on PIL images and on CHW tensors on any device, so the CPU loader and the GPU-decode path apply
    the same rule. The flip and normalisation follow it in `imagenet_geometry` / the loaders.
    """

    def __init__(self, low: int = 256, high: int = 480, crop: int = 224) -> None:
        if not crop <= low <= high:
            raise ValueError(f"scale augmentation needs crop <= low <= high, got {crop}, {low}, {high}")
        self.low, self.high, self.crop = low, high, crop

    def params(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Resized (height, width) with the drawn shorter side, and the crop's (top, left)."""
        short = int(torch.randint(self.low, self.high + 1, ()))
        if height <= width:
            new_h, new_w = short, int(short * width / height)
        else:
            new_h, new_w = int(short * height / width), short
        top = int(torch.randint(0, new_h - self.crop + 1, ()))
        left = int(torch.randint(0, new_w - self.crop + 1, ()))
        return new_h, new_w, top, left

    def __call__(self, img: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        """PIL: resamples only the cropped box (6x less work than resizing the whole image; equal to it up
        to rounding, at most one grey level on ~0.1% of pixels). Tensors: resize, then crop."""
        if isinstance(img, Image.Image):
            width, height = img.size
            new_h, new_w, top, left = self.params(height, width)
            sx, sy = width / new_w, height / new_h
            box = (left * sx, top * sy, (left + self.crop) * sx, (top + self.crop) * sy)
            return img.resize((self.crop, self.crop), Image.BILINEAR, box=box)
        new_h, new_w, top, left = self.params(img.shape[-2], img.shape[-1])
        img = TF.resize(img, [new_h, new_w], antialias=True)
        return TF.crop(img, top, left, self.crop, self.crop)

    def __repr__(self) -> str:
        return f"ScaleAugment(low={self.low}, high={self.high}, crop={self.crop})"


IMAGENET_AUGMENTS = ("he", "rrc")


def imagenet_geometry(train: bool, augment: bool | str = True) -> transforms.Compose:
    """The crop/flip part of the ImageNet transforms (PIL or tensor in, same kind out).

    Training: "he" (the default, `augment=True`) is He et al. (2016) scale augmentation, which the paper
    cites: shorter side random in [256, 480], random 224 crop, horizontal flip (their PCA colour
    augmentation is not applied); "rrc" is torchvision's RandomResizedCrop(224) + flip. Evaluation and
    `augment=False`: shorter side 256, centre 224 crop.
    """
    if augment is True:
        augment = "he"
    if augment and augment not in IMAGENET_AUGMENTS:
        raise ValueError(
            f"unknown ImageNet augmentation {augment!r}; use one of {IMAGENET_AUGMENTS} or False"
        )
    if not train or not augment:
        return transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    crop = ScaleAugment() if augment == "he" else transforms.RandomResizedCrop(224)
    return transforms.Compose([crop, transforms.RandomHorizontalFlip()])


class ImageNetFolder(datasets.ImageFolder):
    """ImageFolder that keeps its geometry and normalisation apart, for the GPU-decode path to reuse."""

    def __init__(self, root: Path, geometry: transforms.Compose) -> None:
        self.geometry, self.normalize = geometry, transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        super().__init__(root, transforms.Compose([geometry, transforms.ToTensor(), self.normalize]))


def imagenet(root: str | Path, augment: bool | str = True) -> DataBundle:
    """ImageNet class folders; training augmentation as `imagenet_geometry` (He et al. by default)."""
    root = Path(root)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetError(
                f"ImageNet not found at {root} (no {split}/ folder): expected {IMAGENET_LAYOUT}"
            )
    try:
        train = ImageNetFolder(root / "train", imagenet_geometry(True, augment))
        test = ImageNetFolder(root / "val", imagenet_geometry(False))
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


def digits(size: int, augment: bool = True, noise: float = 0.0) -> DataBundle:
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
    for label in range(10):
        is_test[(y == label).nonzero().flatten()[::4]] = True
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


def load_data(name: str, root: str | Path | None = None, augment: bool | str = True) -> DataBundle:
    """Build a dataset by name: cifar10 / cifar10_hou / imagenet / imagenet_rrc (need `root`); proxy:
    synth32[-seed1] (generated, benchmarks/synthetic.py), digits<size>[-noise<percent>] (scikit-learn's
    digits)."""
    if name in DATASETS:
        return synth_bundle(DATASETS[name], augment)
    if name.startswith("digits"):
        size, _, noise = name.removeprefix("digits").partition("-noise")
        return digits(int(size), augment, int(noise or 0) / 100)
    loaders = {
        "cifar10": (cifar10, CIFAR_LAYOUT),
        "cifar10_hou": (lambda root, augment: cifar10_hou(root), CIFAR_LAYOUT),  # Table 2: GCN + ZCA, 45k/5k
        "imagenet": (imagenet, IMAGENET_LAYOUT),  # He et al. 2016 scale augmentation
        "imagenet_rrc": (lambda root, augment: imagenet(root, "rrc" if augment else False), IMAGENET_LAYOUT),
    }
    if name not in loaders:
        raise DatasetError(
            f"unknown dataset {name!r}; known: {', '.join([*loaders, *DATASETS])}, digits<size>[-noise<pct>]"
        )
    loader, layout = loaders[name]
    if root is None:
        raise DatasetError(f"{name} needs its files: pass --data DIR (make ... DATA=DIR) with {layout}")
    return loader(root, augment)


# ---------------------------------------------------------------- loaders built once per run
class EpochSampler(Sampler[tuple[int, int]]):
    """(index, augmentation seed) pairs, a function of (seed, epoch) only: a resumed run sees the same
    batches and the same crops whatever the worker count. Under world > 1 each rank takes every world-th
    item of the shuffled order, padded by wrapping round to a multiple of world (as DistributedSampler).
    Call `set_epoch` before each epoch; evaluation (`shuffle=False`) yields every item in order.
    """

    def __init__(self, size: int, *, shuffle: bool, seed: int, epoch: int = 0, world: int = 1, rank: int = 0):
        if not 0 <= rank < world:
            raise ValueError(
                f"rank {rank} is outside 0..{world - 1}: pass the rank and world of this process"
            )
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, epoch
        self.world, self.rank = (world, rank) if shuffle else (1, 0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.size // self.world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if not self.shuffle:
            return iter([(i, 0) for i in range(self.size)])
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        item_seeds = torch.randint(0, 2**62, (self.size,), generator=generator)
        order = order.repeat(-(-len(self) * self.world // self.size))[: len(self) * self.world]
        mine = order[self.rank :: self.world]
        return iter(zip(mine.tolist(), item_seeds[mine].tolist(), strict=True))


class SeededItems(Dataset):
    """Draws each item's augmentation from its own seed (`EpochSampler`), leaving the global RNG alone."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, item_seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(item_seed)  # CPU only: CUDA noise draws untouched
            return self.dataset[index]


class JpegBytes(Dataset):
    """The file bytes of an `ImageNetFolder`, for decoding on the GPU; the few non-JPEG files in ImageNet
    (a PNG, CMYK JPEGs) are re-encoded here as RGB JPEG so that the GPU decoder accepts every item."""

    def __init__(self, folder: ImageNetFolder) -> None:
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, key: tuple[int, int]) -> tuple[bytes, int, int]:
        index, item_seed = key
        path, label = self.folder.samples[index]
        data = Path(path).read_bytes()
        if data[:2] != b"\xff\xd8" or _is_cmyk_jpeg(data):
            with Image.open(path) as img:
                data = encode_jpeg(TF.pil_to_tensor(img.convert("RGB")), quality=95).numpy().tobytes()
        return data, label, item_seed


def _is_cmyk_jpeg(data: bytes) -> bool:
    """True when the JPEG's first start-of-frame marker declares 4 components (CMYK/YCCK)."""
    pos = 2
    while pos + 9 < len(data) and data[pos] == 0xFF:
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return data[pos + 9] == 4
        pos += 2 + length
    return False


def _collate_bytes(items: list[tuple[bytes, int, int]]) -> tuple[torch.Tensor, ...]:
    """One flat uint8 tensor (and the lengths) per batch: one shared-memory block, not one per image."""
    data, labels, seeds = zip(*items, strict=True)
    flat = torch.frombuffer(bytearray(b"".join(data)), dtype=torch.uint8)
    return flat, torch.tensor([len(d) for d in data]), torch.tensor(labels), torch.tensor(seeds)


class GpuJpegLoader:
    """Workers read JPEG bytes, the GPU decodes and augments them: iterates (images, labels) on `device`,
    normalised NCHW float batches cropped and flipped by the folder's own geometry drawn from each item's
    seed (so the crops are those the CPU loader would draw for the same item and epoch)."""

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.loader, self.device = loader, device
        self.sampler: EpochSampler = loader.sampler  # type: ignore[assignment]
        self.folder: ImageNetFolder = loader.dataset.folder  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for flat, lengths, labels, seeds in self.loader:
            data = list(flat.split(lengths.tolist()))
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
            out = []
            with torch.random.fork_rng(devices=[]):
                for image, item_seed in zip(images, seeds.tolist(), strict=True):
                    torch.default_generator.manual_seed(item_seed)  # CPU only: CUDA noise draws untouched
                    out.append(self.folder.geometry(image))
            batch = self.folder.normalize(torch.stack(out).float().div_(255))
            yield batch, labels.to(self.device, non_blocking=True)


def loader_workers(dataset: Dataset) -> int:
    """The CPUs this process may use divided among the node's GPUs (one training process per GPU under
    torchrun); 0 for in-memory tensors, which need no decoding."""
    if isinstance(dataset, TensorImages):
        return 0
    return max(1, len(os.sched_getaffinity(0)) // max(1, torch.cuda.device_count()))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    seed: int,
    epoch: int,
    device: torch.device,
    world: int = 1,
    rank: int = 0,
    workers: int | None = None,
    gpu_decode: bool = False,
) -> DataLoader | GpuJpegLoader:
    """The one loader of a run: build it once, call `loader.sampler.set_epoch(e)` before each epoch.

    `batch_size` is the global batch (each of `world` processes loads batch_size // world). Training
    shuffles by (seed, epoch) and drops the last partial batch; evaluation keeps the order and every
    item (on every rank). Workers (default `loader_workers`) persist across epochs and prefetch 4
    batches each; batches are pinned for CUDA. `gpu_decode` (an `ImageNetFolder` only): workers only read
    the files and the batches are decoded with torchvision.io.decode_jpeg on `device`, then cropped and
    flipped there by the same rule (on CPU it runs the same code, for tests).
    """
    if gpu_decode and not isinstance(dataset, ImageNetFolder):
        raise ValueError(
            f"gpu_decode needs ImageNet JPEG folders, not {type(dataset).__name__}: drop the option"
        )
    per_rank = max(1, batch_size // world)
    sampler = EpochSampler(len(dataset), shuffle=train, seed=seed, epoch=epoch, world=world, rank=rank)
    workers = loader_workers(dataset) if workers is None else workers
    loader = DataLoader(
        JpegBytes(dataset) if gpu_decode else SeededItems(dataset),
        per_rank,
        sampler=sampler,
        num_workers=workers,
        collate_fn=_collate_bytes if gpu_decode else None,
        pin_memory=device.type == "cuda",
        drop_last=train and len(sampler) > per_rank,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),  # the workers' base seed, not the global RNG's
    )
    return GpuJpegLoader(loader, device) if gpu_decode else loader
