"""Run an experiment: for every cell, Algorithm 1 (float model -> quantize_model -> STE fine-tuning with
re-fit checks and optional NATS noise -> noisy evaluation), one record per finished cell, resumable.

Single process on CPU; under `torchrun` (WORLD_SIZE set) each process drives one GPU with
DistributedDataParallel, rank 0 evaluates and writes results.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from benchmarks.data import DataBundle, TensorImages, load_data
from benchmarks.experiments import Cell, Recipe, cells, sweep_key
from benchmarks.models import build_model, load_weights
from benchmarks.results import (
    checkpoint_path,
    code_version,
    fingerprint_files,
    is_finished,
    load_checkpoint,
    now_iso,
    record_path,
    save_checkpoint,
    write_record,
)
from cacim_core import QuantConfig, noisy_evaluate, quantize_model, quantizers, refit_check, refit_counts
from cacim_core.device import calibrate_adc, set_adc
from cacim_core.measured import MeasuredConductances, MeasuredNoise
from cacim_core.training import ha_sgd_backward

# File names a user may supply for the paper-scale float models (torchvision's and akamaster's names too).
WEIGHT_PATTERNS = {
    "resnet18b": ("resnet18b.pth", "resnet18-*.pth"),
    "resnet50b": ("resnet50b.pth", "resnet50-*.pth"),
    "resnet20": ("resnet20.pth", "resnet20*.th"),
    "vgg_like": ("vgg_like.pth",),
}


class SetupError(ValueError):
    """Bad input found before any training starts (one line, names the fix)."""


@dataclass
class Context:
    scale: str
    results: Path
    data: Path | None
    weights: Path | None
    force: bool = False
    progress: bool = True
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(ctx: Context) -> None:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE set); else stay single."""
    if "WORLD_SIZE" not in os.environ or dist.is_initialized():
        if torch.cuda.is_available():
            ctx.device = torch.device("cuda")
        return
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        ctx.device = torch.device("cuda", local_rank)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    ctx.rank, ctx.world = dist.get_rank(), dist.get_world_size()


def _barrier(ctx: Context) -> None:
    if ctx.world > 1:
        dist.barrier()


# ---------------------------------------------------------------- training and evaluation
def loss_fn(kind: str, logits: Tensor, target: Tensor) -> Tensor:
    if kind == "ce":
        return F.cross_entropy(logits, target)
    if kind == "squared_hinge":  # Hou & Kwok's L2-SVM loss, targets +-1
        signs = 2 * F.one_hot(target, logits.shape[1]).to(logits) - 1
        return F.relu(1 - signs * logits).pow(2).sum(1).mean()
    raise ValueError(f"unknown loss {kind!r}; use ce or squared_hinge")


def make_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; use sgd or adam")


def _workers(dataset: Dataset) -> int:
    return 0 if isinstance(dataset, TensorImages) else min(8, os.cpu_count() or 1)


def train_loader(dataset: Dataset, recipe: Recipe, seed: int, epoch: int, ctx: Context) -> DataLoader:
    """A fresh loader per epoch, shuffled by (seed, epoch): a resumed run sees the same batches."""
    batch = max(1, recipe.batch_size // ctx.world)
    if ctx.world > 1:
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return DataLoader(
            dataset,
            batch,
            sampler=sampler,
            num_workers=_workers(dataset),
            drop_last=True,
            pin_memory=ctx.device.type == "cuda",
        )
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return DataLoader(
        dataset,
        batch,
        shuffle=True,
        generator=generator,
        num_workers=_workers(dataset),
        drop_last=len(dataset) > batch,
        pin_memory=ctx.device.type == "cuda",
    )


def train(
    model: nn.Module,
    recipe: Recipe,
    data: DataBundle,
    seed: int,
    ckpt: Path,
    ctx: Context,
    quantized: bool,
    desc: str,
    max_batches: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train `recipe.epochs` epochs, checkpointing after each; resumes from `ckpt` if it exists.

    `extra` is stored in every checkpoint and comes back from a resumed one. Returns
    {"resumed_from_epoch", "train_time_s", "extra"} (time summed over interrupted runs).
    """
    optimizer = make_optimizer(recipe, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, recipe.schedule.factor)
    start, elapsed = 0, 0.0
    state = load_checkpoint(ckpt)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, elapsed, extra = state["epoch"], state["train_time_s"], state["extra"]
    net: nn.Module = model
    if ctx.world > 1:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
    bar = tqdm(
        range(start, recipe.epochs),
        desc=desc,
        leave=False,
        disable=not (ctx.progress and ctx.main),
        initial=start,
        total=recipe.epochs,
    )
    for epoch in bar:
        t0 = time.perf_counter()
        torch.manual_seed(seed * 100_003 + epoch)  # augmentation and NATS noise draws: resumable
        net.train()
        total, count = 0.0, 0
        for i, (x, y) in enumerate(train_loader(data.train, recipe, seed, epoch, ctx)):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = ha_sgd_backward(
                net, lambda m, x=x, y=y: loss_fn(recipe.loss, m(x), y), recipe.noise_samples
            )
            optimizer.step()
            if quantized:
                refit_check(model)
            total, count = total + loss, count + 1
        scheduler.step()
        elapsed += time.perf_counter() - t0
        bar.set_postfix(loss=f"{total / max(count, 1):.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        if ctx.main:
            save_checkpoint(
                ckpt,
                {
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "train_time_s": elapsed,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "extra": extra,
                },
            )
    return {"resumed_from_epoch": start, "train_time_s": elapsed, "extra": extra}


@torch.no_grad()
def accuracy(
    model: nn.Module, dataset: Dataset, ctx: Context, max_batches: int | None = None
) -> dict[str, float]:
    """Top-1 and top-5 accuracy in percent on `dataset` (eval mode; noise only inside weight_noise)."""
    loader = DataLoader(dataset, 256, shuffle=False, num_workers=_workers(dataset))
    correct1 = correct5 = seen = 0
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(ctx.device), y.to(ctx.device)
        logits = model(x)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == y[:, None]
        correct1 += int(hits[:, 0].sum())
        correct5 += int(hits.any(1).sum())
        seen += len(y)
    return {"top1": 100.0 * correct1 / seen, "top5": 100.0 * correct5 / seen}


def calibration_batches(data: DataBundle, ctx: Context, batches: int = 4) -> list[Tensor]:
    """The first training batches, unshuffled: where ADC ranges are calibrated (never the test set)."""
    loader = DataLoader(data.train, 128, shuffle=False, num_workers=_workers(data.train))
    return [x.to(ctx.device) for x, _ in itertools.islice(loader, batches)]


# ---------------------------------------------------------------- the float model
def find_weights(ctx: Context, cell: Cell) -> Path | None:
    if ctx.weights is None:
        return None
    for pattern in (f"{cell.model}.pth", *WEIGHT_PATTERNS.get(cell.arch, ())):
        found = sorted(ctx.weights.glob(pattern))
        if found:
            return found[0]
    return None


def missing_weights_message(ctx: Context, cell: Cell) -> str:
    names = " or ".join(WEIGHT_PATTERNS.get(cell.arch, (f"{cell.model}.pth",)))
    where = ctx.weights or "DATA/weights"
    return f"no float weights for {cell.arch}: put {names} into {where} (--weights DIR, make ... WEIGHTS=DIR)"


def float_model(cell: Cell, data: DataBundle, ctx: Context) -> tuple[dict[str, Tensor], dict[str, float]]:
    """The float model a cell starts from and its accuracy: a user-supplied file, else trained and cached."""
    model = build_model(cell.model, data.num_classes, data.input_size)
    path = find_weights(ctx, cell)
    if path is not None:
        load_weights(model, path)
        key = f"{cell.model}-{cell.dataset}-file{fingerprint_files([path], hash_contents=False)}"
    elif cell.fp_recipe is None:
        raise SetupError(missing_weights_message(ctx, cell))
    else:
        recipe_hash = hashlib.sha256(repr(cell.fp_recipe).encode()).hexdigest()[:8]
        key = f"{cell.model}-{cell.dataset}-{data.fingerprint}-{recipe_hash}"
    cache = ctx.results / "_float" / ctx.scale / f"{key}.pt"
    cached = load_checkpoint(cache)
    if cached is not None:
        return cached["model"], cached["metrics"]
    model.to(ctx.device)
    if path is None:
        torch.manual_seed(0)
        model = build_model(cell.model, data.num_classes, data.input_size).to(ctx.device)
        train(
            model,
            cell.fp_recipe,
            data,
            0,
            cache.with_suffix(".ckpt"),
            ctx,
            quantized=False,
            desc=f"float {cell.model}",
            max_batches=cell.max_batches,
        )
    metrics: dict[str, float] = {}
    if ctx.main:
        model.eval()
        metrics = accuracy(model, data.test, ctx, cell.max_batches and 1)
        state = {k: v.cpu() for k, v in model.state_dict().items()}
        save_checkpoint(cache, {"model": state, "metrics": metrics, "source": str(path or "trained")})
        cache.with_suffix(".ckpt").unlink(missing_ok=True)
    _barrier(ctx)
    cached = load_checkpoint(cache)
    return cached["model"], cached["metrics"]


# ---------------------------------------------------------------- one cell
def run_cell(cell: Cell, data: DataBundle, ctx: Context) -> dict[str, Any] | None:
    """Algorithm 1 for one cell; returns the record written (None on ranks other than 0)."""
    fp_state, fp_metrics = float_model(cell, data, ctx)
    torch.manual_seed(cell.seed)
    model = build_model(cell.model, data.num_classes, data.input_size)
    if cell.init == "pretrained":
        model.load_state_dict(fp_state)
    model.to(ctx.device)
    config = QuantConfig(
        method=cell.method,
        levels=cell.levels,
        noise=cell.noise_train,
        first_last=cell.first_last,
        refit_threshold=cell.recipe.refit_threshold,
        **dict(cell.options),
    )
    # Figure 4(b): evaluate on measured conductances; read the file before training, so a bad one fails fast
    measured = None
    if cell.noise_eval_file:
        measured = MeasuredNoise(MeasuredConductances.from_csv(cell.noise_eval_file))
    quantize_model(model, config)
    if config.adc_bits is not None:
        calibrate_adc(model, calibration_batches(data, ctx))
    ckpt = checkpoint_path(ctx.results, cell.experiment, ctx.scale, cell.id)
    # Accuracy right after conversion, before fine-tuning: the quantizer alone (post-training quantization).
    ptq = (
        None
        if ckpt.is_file() or not ctx.main
        else accuracy(model.eval(), data.test, ctx, cell.max_batches and 1)
    )
    trained = train(
        model,
        cell.recipe,
        data,
        cell.seed,
        ckpt,
        ctx,
        quantized=True,
        desc=cell.id,
        max_batches=cell.max_batches,
        extra={"ptq": ptq},
    )
    if not ctx.main:
        _barrier(ctx)
        return None
    t0 = time.perf_counter()

    def metric_fn(m: nn.Module) -> dict[str, float]:
        return accuracy(m, data.test, ctx, cell.max_batches and 1)

    if config.adc_bits is not None:
        calibrate_adc(model, calibration_batches(data, ctx))  # fine-tuning moved the outputs
    if measured is not None:
        result = noisy_evaluate(model, metric_fn, draws=cell.trials, seed=cell.seed, noise_fn=measured)
    else:
        draws = cell.trials if cell.noise_eval > 0 else 1
        result = noisy_evaluate(model, metric_fn, draws=draws, seed=cell.seed, delta=cell.noise_eval)
    metrics: dict[str, float] = {f"fp_{k}": v for k, v in fp_metrics.items()}
    for k in ("top1", "top5"):
        metrics[k] = result.mean[k]
        metrics[f"gap_{k}"] = fp_metrics[k] - result.mean[k]
        if len(result.values[k]) > 1:
            metrics[f"{k}_std"] = metrics[f"gap_{k}_std"] = result.std[k]
        metrics[f"ptq_{k}"] = trained["extra"]["ptq"][k]
        metrics[f"gap_ptq_{k}"] = fp_metrics[k] - metrics[f"ptq_{k}"]
    for delta, bits in cell.sweep:  # robustness curves: the same trained model, other test conditions
        adc = bits if bits is not None else config.adc_bits
        set_adc(model, adc)
        if adc is not None:
            calibrate_adc(model, calibration_batches(data, ctx))
        point = noisy_evaluate(model, metric_fn, cell.trials if delta > 0 else 1, cell.seed, delta)
        for k in ("top1", "top5"):
            metrics[sweep_key(k, delta, bits)] = point.mean[k]
            metrics[sweep_key(f"{k}_std", delta, bits)] = point.std[k]
    record = {
        **{k: v for k, v in asdict(cell).items() if k not in ("recipe", "fp_recipe", "max_batches")},
        "cell": cell.id,
        "scale": ctx.scale,
        "trials": len(result.values["top1"]),
        "metrics": metrics,
        "refits": refit_counts(model),
        "dataset_fingerprint": data.fingerprint,
        "code_version": code_version(),
        "wall_time_s": round(trained["train_time_s"] + time.perf_counter() - t0, 2),
        "resumed_from_epoch": trained["resumed_from_epoch"],
        "recipe": asdict(cell.recipe),
        "world_size": ctx.world,
        "device": str(ctx.device),
        "finished_at": now_iso(),
    }
    write_record(ctx.results, record, overwrite=ctx.force)
    ckpt.unlink(missing_ok=True)
    _barrier(ctx)
    return record


# ---------------------------------------------------------------- an experiment
def check_finished_match(ctx: Context, done: list[Cell]) -> None:
    """A finished record made with another recipe or dataset is stale: say so instead of skipping it."""
    for cell in done:
        path = record_path(ctx.results, cell.experiment, ctx.scale, cell.id)
        with open(path) as f:
            record = json.load(f)
        declared = {
            "recipe": json.loads(json.dumps(asdict(cell.recipe))),
            "model": cell.model,
            "dataset": cell.dataset,
        }
        if any(record.get(key) != value for key, value in declared.items()):
            raise SetupError(
                f"{path} was made with another recipe/model/dataset than {cell.id} now declares: "
                "delete it or pass --force to recompute"
            )


def load_plugin(name: str) -> None:
    """Import a user module (e.g. one that registers a quantizer); the working directory is importable."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        importlib.import_module(name)
    except ImportError as exc:
        raise SetupError(f"cannot import plugin {name!r} ({exc}): pass an importable module name") from exc


def run(
    experiment: str,
    scale: str = "proxy",
    data: str | Path | None = None,
    weights: str | Path | None = None,
    results: str | Path = "results",
    methods: list[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every unfinished cell of `experiment` at `scale`; returns the records written now."""
    code_version()  # the code as loaded now, before any later commit
    try:
        todo = cells(experiment, scale, methods)
    except ValueError as exc:
        raise SetupError(str(exc)) from exc
    unknown = sorted({c.method for c in todo} - set(quantizers.names()))
    if unknown:
        raise SetupError(
            f"unknown method(s) {', '.join(unknown)}; registered: {', '.join(quantizers.names())} "
            "(a plugin module can register more: --plugin MODULE)"
        )
    if not todo:
        raise SetupError(f"no cell of {experiment} uses methods {methods}")
    data_root = Path(data) if data else None
    if weights is None and data_root is not None and scale == "paper":
        weights = data_root / "weights"
    ctx = Context(scale, Path(results), data_root, Path(weights) if weights else None, force, progress)
    init_distributed(ctx)
    pending = [c for c in todo if force or not is_finished(ctx.results, c.experiment, scale, c.id)]
    if not force:
        check_finished_match(ctx, [c for c in todo if c not in pending])
    # Every input is checked before the first cell trains: no half-run table because of a missing file.
    bundles = {name: load_data(name, data_root) for name in sorted({c.dataset for c in pending})}
    for cell in pending:
        if cell.fp_recipe is None and find_weights(ctx, cell) is None:
            raise SetupError(missing_weights_message(ctx, cell))
    if ctx.main:
        print(
            f"{experiment} [{scale}]: {len(todo)} cells, {len(todo) - len(pending)} already finished, "
            f"{len(pending)} to run",
            file=sys.stderr,
        )
    written = []
    for cell in tqdm(pending, desc=f"{experiment} [{scale}]", disable=not (progress and ctx.main)):
        record = run_cell(cell, bundles[cell.dataset], ctx)
        if record is not None:
            written.append(record)
    if ctx.world > 1:
        dist.destroy_process_group()
    return written
