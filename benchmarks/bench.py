"""`make bench`: speed and memory of the core, as ratios against baselines run in this same process.

1. Lloyd fit of every Conv/Linear weight of torchvision ResNet-50 (random init) at 3/4/8 levels, against
   the exact 1-D k-means of `kmeans1d` (its C core called on a numpy buffer, so Python list marshalling is
   not charged to it) and scikit-learn's KMeans; distortion relative to kmeans1d's exact optimum.
2. ResNet-20 training step (CIFAR shape, batch 128) with Lloyd quantization + NATS noise on every layer
   and Algorithm 1's refit_check, against the same float step; bytes saved for backward and peak RSS.
   Then the whole Algorithm 1 step (forward, backward, SGD, refit_check) on ResNet-18 at batch 8 and 64 and
   on the proxy nets, eager and torch.compile'd, with refit_check's share (`bench_whole_step`).
3. ImageNet loader on generated 500x375 JPEGs (ImageNet's typical size; smooth random images, smaller
   files than photographs, ~46 kB vs ~110 kB): CPU ms per image of the paper's train transform (He et al.
   scale augmentation, and RandomResizedCrop), images/s of `make_loader` with the available workers, and
   on CUDA the GPU-decode path's images/s.
Targets (issue 2): ResNet-50 Lloyd < 1 s per level count, >= 10x faster than kmeans1d within 0.5% of its
distortion; training-step ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import resource
import tempfile
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from cacim_core import QuantConfig, quantize_model, quantizers, refit_check, refit_counts


def layer_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def synchronize() -> None:
    """Wait for queued CUDA work; a no-op until CUDA is in use (a CUDA context would add to the peak RSS)."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def seconds(fn: Callable[[], object], repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def interleaved_medians(fns: dict[str, Callable[[], object]], steps: int) -> dict[str, float]:
    """Median seconds of each function over `steps` rounds, called in turn so that load from other
    processes hits all alike; one untimed warm-up call each first (cudnn autotune, allocator)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            times[name].append(seconds(fn))
    return {name: float(np.median(t)) for name, t in times.items()}


def kmeans1d_centroids(x: np.ndarray, k: int) -> np.ndarray:
    """kmeans1d's exact O(kn) C routine on a float64 buffer."""
    import kmeans1d

    dll = ctypes.cdll.LoadLibrary(kmeans1d._core.__file__)
    x = np.ascontiguousarray(x, dtype=np.float64)
    clusters = np.empty(len(x), dtype=np.uint64)
    centroids = np.empty(k, dtype=np.float64)
    dll.cluster(
        x.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
        ctypes.c_ulong(len(x)),
        ctypes.c_ulong(k),
        clusters.ctypes.data_as(ctypes.POINTER(ctypes.c_ulong)),
        centroids.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
    )
    return np.sort(centroids)


def timed(fn: Callable[[np.ndarray, int], np.ndarray], arrays: list[np.ndarray], v: int, repeat: int = 1):
    """Best wall time of fitting every layer with fn, and the sorted levels it found per layer."""
    runs: list[list[np.ndarray]] = []
    best = seconds(lambda: runs.append([fn(a, v) for a in arrays]), repeat)
    return best, runs[-1]


def lloyd_levels(a: np.ndarray, v: int) -> np.ndarray:
    q = quantizers.build("lloyd", levels=v)
    q.fit(torch.from_numpy(a))
    return q.levels.numpy()


def sklearn_levels(a: np.ndarray, v: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return np.sort(KMeans(v, n_init=1, random_state=0).fit(a.reshape(-1, 1)).cluster_centers_.ravel())


def bench_lloyd(levels_list: tuple[int, ...], with_sklearn: bool) -> None:
    arrays = [w.flatten().numpy() for w in layer_weights(torchvision.models.resnet50())]
    n = sum(len(a) for a in arrays)
    print(f"\n## Lloyd fit: all {len(arrays)} Conv/Linear layers of ResNet-50 ({n / 1e6:.1f}M weights)\n")
    print(
        "| levels | lloyd s | kmeans1d s | sklearn s | speed-up vs kmeans1d | vs sklearn "
        "| distortion / exact: lloyd | sklearn |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for v in levels_list:
        t_ours, ours = timed(lloyd_levels, arrays, v, repeat=3)
        t_ref, exact = timed(kmeans1d_centroids, arrays, v)
        t_sk, sk = timed(sklearn_levels, arrays, v) if with_sklearn else (float("nan"), exact)
        e_ref = total_sse(arrays, exact)
        e_ours, e_sk = total_sse(arrays, ours) / e_ref, total_sse(arrays, sk) / e_ref
        print(
            f"| {v} | {t_ours:.2f} | {t_ref:.2f} | {t_sk:.1f} | {t_ref / t_ours:.1f}x "
            f"| {t_sk / t_ours:.1f}x | {e_ours:.5f} | {e_sk:.5f} |"
        )


def total_sse(arrays: list[np.ndarray], levels: list[np.ndarray]) -> float:
    return sum(
        quantizers.distortion(
            torch.from_numpy(a),
            quantizers.nearest(torch.from_numpy(a).double(), torch.as_tensor(lv, dtype=torch.float64)),
        )
        * len(a)
        for a, lv in zip(arrays, levels, strict=True)
    )


def saved_bytes(step: Callable[[], None]) -> int:
    """Bytes autograd saves for backward in one call of `step`: the training-step memory quantization adds."""
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(sizes)


def bench_train_step(steps: int) -> None:
    """ResNet-20 (CIFAR shape, batch 128): the step's time and the bytes it saves for backward."""
    from benchmarks.models import build_model

    torch.manual_seed(0)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    quantized = QuantConfig(method="lloyd", levels=4, noise=0.02, first_last="quantize")
    models = {
        "float": build_model("resnet20", 10, 32),
        "lloyd 4L + 2% noise, every layer, + refit_check": quantize_model(
            build_model("resnet20", 10, 32), quantized
        ),
    }
    steps_of = {name: train_step(model, x, y, refit=name != "float") for name, model in models.items()}
    medians = interleaved_medians(steps_of, steps)
    print(f"\n## ResNet-20 training step, batch 128, CPU ({torch.get_num_threads()} threads)\n")
    print("| model | median step s | ratio to float | saved-for-backward MB | ratio |")
    print("|---|---|---|---|---|")
    base_t = base_m = None
    for name, step in steps_of.items():
        saved, t = saved_bytes(step), medians[name]
        base_t, base_m = base_t or t, base_m or saved
        print(f"| {name} | {t:.3f} | {t / base_t:.3f} | {saved / 2**20:.1f} | {saved / base_m:.3f} |")
    print(f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MB")


#: (model, classes, image size, batch) of the whole-step bench: issue 25's ResNet-18 shapes and the proxies
WHOLE_STEP = (
    ("resnet18b", 1000, 64, 8),
    ("resnet18b", 1000, 64, 64),
    ("resnet18b_proxy", 10, 32, 64),
    ("resnet50b_proxy", 10, 32, 64),
)


def bench_whole_step(steps: int, compile_too: bool) -> None:
    """Algorithm 1's whole step as a user runs it (forward, backward, SGD step, `refit_check`) against the
    float step, eager and under torch.compile, interleaved; and `refit_check`'s own share of the step.
    Targets (issue 25, not tests): eager quantized/float <= 1.3 at batch 64; compiled quantized <= compiled
    float x 1.3 and <= eager quantized; refit_check <= 5% of the step."""
    from benchmarks.models import build_model

    config = QuantConfig(method="lloyd", levels=4, noise=0.02)
    print(f"\n## Whole Algorithm 1 step on CPU ({torch.get_num_threads()} threads): lloyd 4L + 2% NATS\n")
    head = "| model | batch | float s | quantized s | ratio | refit_check s | share |"
    print(
        head
        + (" compiled float s | compiled quantized s | ratio | vs eager quantized |" if compile_too else "")
    )
    print("|---" * (head.count("|") - 1 + (4 if compile_too else 0)) + "|")
    for name, classes, size, batch in WHOLE_STEP:
        torch.manual_seed(0)
        x, y = torch.randn(batch, 3, size, size), torch.randint(0, classes, (batch,))
        float_model = build_model(name, classes, size)
        quantized = quantize_model(build_model(name, classes, size), config)
        fns = {
            "float": train_step(float_model, x, y, lr=1e-4),
            "quantized": train_step(quantized, x, y, lr=1e-4, refit=True),
            "refit_check": partial(refit_check, quantized),
        }
        if compile_too:
            fns["compiled float"] = train_step(torch.compile(build_model(name, classes, size)), x, y, lr=1e-4)
            compiled = quantize_model(build_model(name, classes, size), config)
            fns["compiled quantized"] = train_step(
                torch.compile(compiled), x, y, lr=1e-4, refit=True, refit_model=compiled
            )
        t = interleaved_medians(fns, steps)
        row = (
            f"| {name} | {batch} x {size}px | {t['float']:.4f} | {t['quantized']:.4f} | "
            f"{t['quantized'] / t['float']:.2f} | {t['refit_check']:.4f} | "
            f"{100 * t['refit_check'] / t['quantized']:.1f}% |"
        )
        if compile_too:
            cf, cq = t["compiled float"], t["compiled quantized"]
            row += f" {cf:.4f} | {cq:.4f} | {cq / cf:.2f} | {cq / t['quantized']:.2f} |"
        print(row, flush=True)


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float = 0.01,
    refit: bool = False,
    refit_model: nn.Module | None = None,
) -> Callable[[], None]:
    """One SGD step; with `refit`, then Algorithm 1's refit_check (the hot path of a paper-scale cell) on
    `refit_model` (the uncompiled model a torch.compile'd `model` wraps; default `model`)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    refit_model = model if refit_model is None else refit_model

    def step() -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if refit:
            refit_check(refit_model)

    return step


def write_jpegs(root: Path, images: int, classes: int = 4) -> None:
    """ImageNet-layout folders of 500x375 JPEGs: smooth random fields (a 12x16 grid upsampled) plus pixel
    noise, closer to photographs in size and decode cost than pure noise."""
    rng = np.random.default_rng(0)
    for split, count in (("train", images), ("val", classes)):
        for i in range(count):
            folder = root / split / f"n{i % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375))
            pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-8, 9, (375, 500, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.JPEG", quality=90)


def decode_all(dataset: Dataset) -> None:
    for i in range(len(dataset)):
        dataset[i]


def pil_decode_all(files: list[Path]) -> None:
    for path in files:
        with Image.open(path) as img:
            img.convert("RGB")


def images_per_second(loader: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Second pass over the loader (the first starts the persistent workers and warms the caches)."""
    for _ in loader:
        pass
    start, seen = time.perf_counter(), 0
    for x, _ in loader:
        seen += len(x)
    synchronize()
    return seen / (time.perf_counter() - start)


def bench_loader(images: int, batch: int) -> None:
    from benchmarks.data import imagenet, loader_workers, make_loader

    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp), images)
        mb = sum(p.stat().st_size for p in Path(tmp, "train").rglob("*.JPEG")) / images / 1e3
        print(f"\n## ImageNet loader: {images} generated 500x375 JPEGs ({mb:.0f} kB each), train transform\n")
        print("| train transform | CPU ms / image, one process (best of 3) | loader images/s | workers |")
        print("|---|---|---|---|")
        files = sorted(Path(tmp, "train").rglob("*.JPEG"))
        decode_ms = 1e3 * seconds(partial(pil_decode_all, files), repeat=3) / len(files)
        print(f"| decode only (PIL, RGB) | {decode_ms:.2f} | | |")
        cpu = torch.device("cpu")
        for augment in ("he", "rrc"):
            train = imagenet(tmp, augment).train
            ms = 1e3 * seconds(partial(decode_all, train), repeat=3) / len(train)
            workers = loader_workers(train)
            loader = make_loader(train, batch, train=True, seed=0, epoch=0, device=cpu)
            print(f"| {augment} | {ms:.2f} | {images_per_second(loader):.0f} | {workers} |")
        if not torch.cuda.is_available():
            print("\nno CUDA device: GPU JPEG decode not measured")
            return
        cuda = torch.device("cuda")
        train = imagenet(tmp, "he").train
        loader = make_loader(train, batch, train=True, seed=0, epoch=0, device=cuda, gpu_decode=True)
        print(
            f"\nGPU decode ({torch.cuda.get_device_name()}), workers read bytes: "
            f"{images_per_second(loader):.0f} images/s, batch {batch}"
        )


def bench_resnet_steps(device: torch.device, steps: int, results: Path) -> None:
    """ResNet-18/50 training step, float vs Lloyd 4L + 2% NATS + Algorithm 1's refit_check (the hot path of
    a paper-scale cell), interleaved; images/s per model and device go to results/_bench/throughput.json,
    where `python -m benchmarks plan` reads them. GPU: the paper's 224 px, batch 256; CPU: 64 px, batch 16."""
    from benchmarks.models import build_model
    from benchmarks.results import atomic_write

    cuda = device.type == "cuda"
    batch, size = (256, 224) if cuda else (16, 64)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    config = QuantConfig(method="lloyd", levels=4, noise=0.02)
    rows, rates = [], []
    for name in ("resnet18b", "resnet50b"):
        float_model = build_model(name, 1000, size).to(device)
        quantized = quantize_model(build_model(name, 1000, size).to(device), config)
        steps_of = {
            "float": train_step(float_model, x, y, lr=1e-4),  # Table 3's fine-tuning rate
            "quantized": train_step(quantized, x, y, lr=1e-4, refit=True),
        }
        t_float, t_quant = interleaved_medians(steps_of, steps).values()
        refits = sum(refit_counts(quantized).values())
        cells = f"{t_float:.4f} | {t_quant:.4f} | {t_quant / t_float:.3f} | {refits}"
        rows.append(f"| {name} | {batch} x {size}px | {cells} |")
        rates.append(
            {
                "model": name,
                "device": str(device),
                "images_per_s": batch / t_quant,
                "batch": batch,
                "size": size,
                "quantized": True,
            }
        )
    print(f"\n## ResNet training step on {device}: float vs Lloyd 4L + 2% NATS + refit_check\n")
    print("| model | batch | float step s | quantized step s | ratio | re-fits |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    if cuda:  # plan's GPU-hours come from measured GPU throughput only
        path = atomic_write(results / "_bench" / "throughput.json", json.dumps(rates, indent=1))
        print(f"\nwrote {path}")
        weights = [w.to(device) for w in layer_weights(torchvision.models.resnet50())]
        for v in (3, 4, 8):
            q = quantizers.build("lloyd", v)

            def fit_all(q: quantizers.Quantizer = q) -> None:
                for w in weights:
                    q.fit(w)

            fit_all()
            print(f"Lloyd fit of all ResNet-50 weights on {device}, {v} levels: {seconds(fit_all, 3):.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="3,4,8", help="comma-separated level counts")
    parser.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn KMeans (the slowest)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    parser.add_argument("--loader-images", type=int, default=512, help="JPEGs for the loader (0: skip)")
    parser.add_argument("--whole-steps", type=int, default=5, help="whole-step rounds per model (0: skip)")
    parser.add_argument("--no-compile", action="store_true", help="whole step: eager only (compile is slow)")
    parser.add_argument("--resnet-steps", type=int, default=3, help="ResNet-18/50 steps per model (0: skip)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="where throughput.json goes")
    args = parser.parse_args()
    torch.manual_seed(0)
    bench_lloyd(tuple(int(v) for v in args.levels.split(",")), with_sklearn=not args.no_sklearn)
    bench_train_step(args.steps)
    if args.whole_steps:
        bench_whole_step(args.whole_steps, compile_too=not args.no_compile)
    if args.loader_images:
        bench_loader(args.loader_images, batch=64)
    if args.resnet_steps:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        bench_resnet_steps(device, args.resnet_steps, args.results)


if __name__ == "__main__":
    main()
