"""The torch loop backend (classification): float model -> quantize_model -> STE fine-tuning with re-fit
checks and NATS -> noisy evaluation. Resumable per epoch; under torchrun each process drives one GPU with
DistributedDataParallel and rank 0 evaluates.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from benchmarks.backends import (
    REQUESTS,
    Context,
    Outcome,
    SetupError,
    gap_metrics,
    produce_once,
    ptq_metrics,
    recipe_hash,
    trained_float_key,
)
from benchmarks.data import DataBundle, load_data, make_loader
from benchmarks.experiments import CONTROL, Cell, Condition, Recipe
from benchmarks.models import build_model, load_weights
from benchmarks.results import (
    Metric,
    SweepPoint,
    checkpoint_path,
    fingerprint_files,
    float_path,
    load_checkpoint,
    save_checkpoint,
)
from cacim_core import QuantConfig, noisy_evaluate, quantize_model, quantizers, refit_check, refit_counts
from cacim_core.device import calibrate_adc, set_adc, set_tile
from cacim_core.noise import parse
from cacim_core.training import ha_sgd_backward

METRICS = ("top1", "top5")
# File names a user may supply for the paper-scale float models (torchvision's and akamaster's names too).
WEIGHT_PATTERNS = {
    "resnet18b": ("resnet18b.pth", "resnet18-*.pth"),
    "resnet50b": ("resnet50b.pth", "resnet50-*.pth"),
    "resnet20": ("resnet20.pth", "resnet20*.th"),
    "vgg_like": ("vgg_like.pth",),
}


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
    """The recipe's optimizer over groups: the model's weights, and each quantizer's parameters with the
    learning-rate scale and weight decay its authors used (`quantizers.param_groups`)."""
    groups = quantizers.param_groups(model, recipe.lr, recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; use sgd or adam")


_EVAL_LOADERS: dict[tuple[int, str], DataLoader] = {}


def eval_loader(dataset: Dataset, ctx: Context, batch: int = 256) -> DataLoader:
    """One evaluation loader per dataset and device, kept for the whole run (its workers persist)."""
    key = (id(dataset), f"{ctx.device}/{batch}")
    if key not in _EVAL_LOADERS:
        _EVAL_LOADERS[key] = make_loader(dataset, batch, train=False, seed=0, epoch=0, device=ctx.device)
    return _EVAL_LOADERS[key]


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
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train `recipe.epochs` epochs, checkpointing after each; resumes from `ckpt` if it exists (or from
    `resume`, that checkpoint already read by the caller: a large one is not read twice).

    `extra` is stored in every checkpoint and comes back from a resumed one. With a validation split
    (Hou & Kwok's Table 2 protocol) the model kept is that of the last epoch whose validation accuracy is
    at least the best so far. Returns {"resumed_from_epoch", "train_time_s", "extra"} (time summed over
    interrupted runs).
    """
    optimizer = make_optimizer(recipe, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, recipe.schedule.factor)
    start, elapsed, best = 0, 0.0, {"val": -1.0, "model": None}
    state = resume if resume is not None else load_checkpoint(ckpt)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, elapsed, extra = state["epoch"], state["train_time_s"], state["extra"]
        best = state.get("best", best)
    loader = make_loader(
        data.train,
        recipe.batch_size,
        train=True,
        seed=seed,
        epoch=start,
        device=ctx.device,
        world=ctx.world,
        rank=ctx.rank,
    )
    net: nn.Module = model
    if ctx.channels_last:
        model.to(memory_format=torch.channels_last)
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
        loader.sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
            if ctx.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)

            def step_loss(m: nn.Module, x: Tensor = x, y: Tensor = y) -> Tensor:
                with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.amp):
                    return loss_fn(recipe.loss, m(x), y)

            loss = ha_sgd_backward(net, step_loss, recipe.noise_samples)
            optimizer.step()
            if quantized:
                refit_check(model)
            total, count = total + loss, count + 1
        scheduler.step()
        elapsed += time.perf_counter() - t0
        bar.set_postfix(loss=f"{total / max(count, 1):.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        if data.val is not None and ctx.main:
            val = accuracy(model.eval(), data.val, ctx, max_batches and 1)["top1"]
            if val >= best["val"]:  # Hou & Kwok keep the last epoch with validation error <= the best
                best = {
                    "val": val,
                    "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                }
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
                    "best": best,
                },
            )
    if best["model"] is not None and ctx.main:
        model.load_state_dict(best["model"])
    return {"resumed_from_epoch": start, "train_time_s": elapsed, "extra": extra}


@torch.no_grad()
def accuracy(
    model: nn.Module, dataset: Dataset, ctx: Context, max_batches: int | None = None
) -> dict[str, float]:
    """Top-1 and top-5 accuracy in percent on `dataset` (eval mode; noise only inside weight_noise). The hit
    counts stay on the device until the end: one host sync per evaluation, not two per batch."""
    loader = eval_loader(dataset, ctx)
    correct = torch.zeros(2, dtype=torch.long, device=ctx.device)
    seen = 0
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(ctx.device), y.to(ctx.device)
        logits = model(x)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == y[:, None]
        correct += torch.stack([hits[:, 0].sum(), hits.any(1).sum()])
        seen += len(y)
    correct1, correct5 = correct.tolist()
    return {"top1": 100.0 * correct1 / seen, "top5": 100.0 * correct5 / seen}


@torch.no_grad()
def reestimate_bn(model: nn.Module, batches: list[Tensor]) -> int:
    """Recompute every BatchNorm's running statistics as the plain average over `batches` (momentum None),
    the rest of the model in eval mode: noise-free quantized weights, the statistics every chip shares.
    Returns how many BatchNorm layers were re-estimated; the model is left in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for x in batches:
            model(x)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    return len(norms)


def calibration_batches(data: DataBundle, ctx: Context, batches: int = 4) -> list[Tensor]:
    """The first training batches, unshuffled: where ADC ranges are calibrated (never the test set)."""
    return [x.to(ctx.device) for x, _ in itertools.islice(eval_loader(data.train, ctx, 128), batches)]


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
    """The float model a cell starts from and its accuracy: a user-supplied file, else trained (with the
    cell's seed: the gap is paired per seed) and cached in the store."""
    path = find_weights(ctx, cell)
    if path is not None:
        key = f"{cell.model}-{cell.dataset}-file{fingerprint_files([path], hash_contents=False)}"
        key += f"-reset{recipe_hash(cell.fp_recipe or cell.recipe)}-s{cell.seed}" if ctx.reset_head else ""
    elif cell.fp_recipe is None:
        raise SetupError(missing_weights_message(ctx, cell))
    else:
        key = trained_float_key(cell, data.fingerprint)
    cache = float_path(ctx.results, ctx.scale, key)

    def produce() -> None:
        torch.manual_seed(cell.seed)
        model = build_model(cell.model, data.num_classes, data.input_size)
        reset = path is not None and load_weights(model, path, reset_head=ctx.reset_head)
        model.to(ctx.device)
        if path is None or reset:  # trained here; a fresh classifier is trained (float) before quantizing
            recipe = cell.fp_recipe or cell.recipe
            train(
                model,
                recipe,
                data,
                cell.seed,
                cache.with_suffix(".ckpt"),
                ctx,
                quantized=False,
                desc=f"float {cell.model} s{cell.seed}",
                max_batches=cell.max_batches,
            )
        if ctx.main:
            model.eval()
            metrics = accuracy(model, data.test, ctx, cell.max_batches and 1)
            state = {k: v.cpu() for k, v in model.state_dict().items()}
            save_checkpoint(cache, {"model": state, "metrics": metrics, "source": str(path or "trained")})
            cache.with_suffix(".ckpt").unlink(missing_ok=True)

    produce_once(cache, ctx, produce)
    _barrier(ctx)
    cached = load_checkpoint(cache)
    if cached is None:  # unreadable and set aside: train it again
        produce_once(cache, ctx, produce)
        cached = load_checkpoint(cache)
    return cached["model"], cached["metrics"]


# ---------------------------------------------------------------- one cell
class TorchLoop:
    name = "torch"
    supports = frozenset(REQUESTS)
    hints: dict[str, str] = {}

    def __init__(self) -> None:
        self.bundles: dict[str, DataBundle] = {}

    def _bundle(self, name: str, ctx: Context) -> DataBundle:
        """Each dataset loaded once per process (a spawned worker starts without `prepare`'s bundles): a
        reload per cell cost seconds and left one more evaluation loader cached per cell."""
        if name not in self.bundles:
            self.bundles[name] = load_data(name, ctx.data)
        return self.bundles[name]

    def prepare(self, cells: list[Cell], ctx: Context) -> None:
        for name in sorted({c.dataset for c in cells}):
            self._bundle(name, ctx)
        for cell in cells:
            quantizer_only = (cell.sweep, cell.options, cell.noise_train, cell.noise_eval)
            if cell.method == CONTROL and (any(quantizer_only) or cell.noise_eval_file):
                raise SetupError(f"{cell.id}: the control arm has no quantizer: drop its noise/options/sweep")
            if find_weights(ctx, cell) is not None:
                continue
            if cell.fp_recipe is None:
                raise SetupError(missing_weights_message(ctx, cell))
            if ctx.reset_head:  # nothing to reset: refused, not ignored
                message = missing_weights_message(ctx, cell)
                raise SetupError(f"--reset-head retrains the head of a supplied float file: {message}")

    def finetune_and_evaluate(self, cell: Cell, ctx: Context) -> Outcome | None:
        data = self._bundle(cell.dataset, ctx)
        fp_state, fp = float_model(cell, data, ctx)
        model, config = self._quantized(cell, data, fp_state, ctx)
        ckpt = checkpoint_path(ctx.results, cell.experiment, ctx.scale, cell.id)
        evaluate = lambda m: accuracy(m, data.test, ctx, cell.max_batches and 1)  # noqa: E731
        # accuracy right after conversion, before fine-tuning: the quantizer alone (post-training)
        # read once here (an unreadable one is set aside: None); the other ranks read theirs in train()
        state = load_checkpoint(ckpt) if ctx.main else None
        resuming = state is not None if ctx.main else ckpt.is_file()
        ptq = None if resuming or not ctx.main or config is None else evaluate(model.eval())
        trained = train(
            model,
            cell.recipe,
            data,
            cell.seed,
            ckpt,
            ctx,
            quantized=config is not None,
            desc=cell.id,
            max_batches=cell.max_batches,
            extra={"ptq": ptq},
            resume=state,
        )
        if not ctx.main:
            _barrier(ctx)
            return None
        t0 = time.perf_counter()
        if cell.recipe.bn_reestimate:  # before the ADCs: they calibrate on the outputs BN feeds
            reestimate_bn(model, calibration_batches(data, ctx, cell.recipe.bn_reestimate))
        if config is not None and config.adc_bits is not None:
            calibrate_adc(model, calibration_batches(data, ctx))  # fine-tuning moved the outputs
        noise: Any = cell.noise_eval  # parsed once by cacim_core.noise.parse: a delta, or the measured model
        if cell.noise_eval_file:
            noise = {"type": "measured", "path": cell.noise_eval_file}
        draws = cell.trials if cell.noise_eval > 0 or cell.noise_eval_file else 1
        result = noisy_evaluate(model, evaluate, draws=draws, seed=cell.seed, noise=noise)
        metrics: dict[str, Metric] = {}
        for k in METRICS:
            metrics.update(gap_metrics(k, fp[k], _metric(result, k)))
            if config is not None:  # the control has no post-training-quantized model
                metrics.update(ptq_metrics(k, fp[k], trained["extra"]["ptq"][k]))
        sweep = []
        for at in (Condition(*c) for c in cell.sweep):  # the same trained model; a plain (noise, bits) reads
            set_tile(model, at.tile if at.tile is not None else config.tile)  # before set_adc: ADCs per tile
            adc = at.adc_bits if at.adc_bits is not None else config.adc_bits
            set_adc(model, adc)
            if adc is not None:
                calibrate_adc(model, calibration_batches(data, ctx))
            draws = cell.trials if parse(at.noise) is not None else 1
            point = noisy_evaluate(model, evaluate, draws, cell.seed, noise=at.noise)
            sweep.append(SweepPoint(at.noise, at.adc_bits, {k: _metric(point, k) for k in METRICS}, at.tile))
        outcome = Outcome(
            metrics,
            data.fingerprint,
            trained["train_time_s"] + time.perf_counter() - t0,
            trained["resumed_from_epoch"] > 0,
            refit_counts(model),
            sweep,
        )
        _barrier(ctx)
        return outcome  # the checkpoint stays until the runner has made the record durable (`discard`)

    def discard(self, cell: Cell, ctx: Context) -> None:
        """Drop a finished cell's checkpoint: called once its record is durable."""
        checkpoint_path(ctx.results, cell.experiment, ctx.scale, cell.id).unlink(missing_ok=True)

    @staticmethod
    def _quantized(
        cell: Cell, data: DataBundle, fp_state: dict, ctx: Context
    ) -> tuple[nn.Module, QuantConfig | None]:
        """The model a cell fine-tunes and its QuantConfig; the control arm (method CONTROL) gets the same
        float model with no quantizer and config None: the only difference between the two arms."""
        torch.manual_seed(cell.seed)
        model = build_model(cell.model, data.num_classes, data.input_size)
        if cell.init == "pretrained":
            model.load_state_dict(fp_state)
        model.to(ctx.device)
        if cell.method == CONTROL:
            return model, None
        config = QuantConfig(
            method=cell.method,
            levels=cell.levels,
            noise=cell.noise_train,
            first_last=cell.first_last,
            refit_threshold=cell.recipe.refit_threshold,
            **dict(cell.options),
        )
        quantize_model(model, config)
        if config.adc_bits is not None:
            calibrate_adc(model, calibration_batches(data, ctx))
        return model, config


def _metric(result: Any, key: str) -> Metric:
    return Metric(result.mean[key], result.std[key], result.n)


BACKEND = TorchLoop()
