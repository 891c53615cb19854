"""torchvision's classification reference recipe (pytorch/vision references/classification/train.py) with
cacim's four lines, marked `# cacim`. Written here, not copied: the same calls in the same order (ImageFolder
with the reference presets' transforms, `torchvision.models.get_model`, label-smoothed cross-entropy, SGD over
`split_normalization_params` groups, StepLR, the reference's ExponentialMovingAverage (an AveragedModel with
`use_buffers=True`), the checkpoint dict of model/optimizer/lr_scheduler/epoch/args/model_ema, `--resume`,
`--test-only`), without the CUDA-only parts (AMP scaler, cudnn flags, DDP wrappers) and the logging classes.
tests/test_reference_script.py runs it on a tiny generated ImageFolder: train, resume, evaluate the EMA.

    python scripts/torchvision_reference_train.py --data-path DIR --model resnet18 --epochs 2 --model-ema \
        --output-dir out [--resume out/checkpoint.pth] [--test-only] [--cacim-method lloyd --cacim-levels 3]
"""

from __future__ import annotations

import argparse
import os

import torch
import torchvision
from torch import nn
from torchvision.transforms import v2 as T

from cacim_core import QuantConfig, quantize_model, refit, refit_check  # cacim (1 of 4)


class ExponentialMovingAverage(torch.optim.swa_utils.AveragedModel):
    """The reference's EMA: decay * avg + (1 - decay) * param, over parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float, device: str = "cpu") -> None:
        def ema_avg(avg: torch.Tensor, param: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
            return decay * avg + (1 - decay) * param

        super().__init__(model, device, ema_avg, use_buffers=True)


def load_data(root: str, args: argparse.Namespace):
    """ImageFolder train/val with the reference presets' transforms (no auto-augment, no random erasing)."""
    norm = T.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    train = T.Compose(
        [
            T.PILToTensor(),
            T.RandomResizedCrop(args.train_crop_size, antialias=True),
            T.RandomHorizontalFlip(0.5),
            T.ToDtype(torch.float, scale=True),
            norm,
        ]
    )
    val = T.Compose(
        [
            T.PILToTensor(),
            T.Resize(args.val_resize_size, antialias=True),
            T.CenterCrop(args.val_crop_size),
            T.ToDtype(torch.float, scale=True),
            norm,
        ]
    )
    dataset = torchvision.datasets.ImageFolder(os.path.join(root, "train"), train)
    dataset_test = torchvision.datasets.ImageFolder(os.path.join(root, "val"), val)
    return dataset, dataset_test


def train_one_epoch(model, criterion, optimizer, loader, epoch, args, model_ema=None) -> None:
    model.train()
    for i, (image, target) in enumerate(loader):
        output = model(image)
        loss = criterion(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        refit_check(model)  # cacim (3 of 4): Algorithm 1's projection test after every optimizer step
        if model_ema is not None and i % args.model_ema_steps == 0:
            model_ema.update_parameters(model)
            if epoch < args.lr_warmup_epochs:
                model_ema.n_averaged.fill_(0)
        print(f"Epoch: [{epoch}] [{i}] loss {loss.item():.4f}", flush=True)


def evaluate(model, criterion, loader, log_suffix: str = "") -> float:
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for image, target in loader:
            output = model(image)
            criterion(output, target)
            correct += int((output.argmax(1) == target).sum())
            total += image.shape[0]
    acc1 = 100.0 * correct / total
    print(f"Test: {log_suffix} Acc@1 {acc1:.3f} n={total}", flush=True)
    return acc1


def main(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    dataset, dataset_test = load_data(args.data_path, args)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, sampler=torch.utils.data.RandomSampler(dataset)
    )
    loader_test = torch.utils.data.DataLoader(
        dataset_test, batch_size=args.batch_size, sampler=torch.utils.data.SequentialSampler(dataset_test)
    )
    model = torchvision.models.get_model(args.model, weights=None, num_classes=len(dataset.classes))
    config = QuantConfig(method=args.cacim_method, levels=args.cacim_levels, noise=args.cacim_noise)
    model = quantize_model(model, config)  # cacim (2 of 4): after the model is built, before the optimizer
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    groups = torchvision.ops._utils.split_normalization_params(model)
    wd = [args.norm_weight_decay, args.weight_decay]
    parameters = [{"params": p, "weight_decay": w} for p, w in zip(groups, wd, strict=True) if p]
    optimizer = torch.optim.SGD(
        parameters, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )
    lr_scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=args.lr_step_size, gamma=args.lr_gamma
    )
    model_ema = None
    if args.model_ema:
        adjust = args.batch_size * args.model_ema_steps / args.epochs
        alpha = min(1.0, (1.0 - args.model_ema_decay) * adjust)
        model_ema = ExponentialMovingAverage(model, decay=1.0 - alpha)
    if args.resume:
        checkpoint = torch.load(args.resume, map_location="cpu", weights_only=False)
        model.load_state_dict(checkpoint["model"])
        if not args.test_only:
            optimizer.load_state_dict(checkpoint["optimizer"])
            lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
        args.start_epoch = checkpoint["epoch"] + 1
        if model_ema is not None:
            model_ema.load_state_dict(checkpoint["model_ema"])
    if args.test_only:
        evaluate(
            model_ema if model_ema is not None else model, criterion, loader_test, "EMA" if model_ema else ""
        )
        return
    for epoch in range(args.start_epoch, args.epochs):
        train_one_epoch(model, criterion, optimizer, loader, epoch, args, model_ema)
        lr_scheduler.step()
        evaluate(model, criterion, loader_test)
        if model_ema is not None:
            refit(model_ema.module)  # cacim (4 of 4): the EMA's levels from its own averaged weights
            evaluate(model_ema, criterion, loader_test, log_suffix="EMA")
        if args.output_dir:
            checkpoint = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": lr_scheduler.state_dict(),
                "epoch": epoch,
                "args": args,
            }
            if model_ema is not None:
                checkpoint["model_ema"] = model_ema.state_dict()
            torch.save(checkpoint, os.path.join(args.output_dir, f"model_{epoch}.pth"))
            torch.save(checkpoint, os.path.join(args.output_dir, "checkpoint.pth"))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="torchvision classification reference recipe, with cacim")
    p.add_argument("--data-path", required=True)
    p.add_argument("--model", default="resnet18")
    p.add_argument("-b", "--batch-size", default=32, type=int)
    p.add_argument("--epochs", default=90, type=int)
    p.add_argument("--lr", default=0.1, type=float)
    p.add_argument("--momentum", default=0.9, type=float)
    p.add_argument("--wd", "--weight-decay", default=1e-4, type=float, dest="weight_decay")
    p.add_argument("--norm-weight-decay", default=0.0, type=float)
    p.add_argument("--label-smoothing", default=0.0, type=float)
    p.add_argument("--lr-step-size", default=30, type=int)
    p.add_argument("--lr-gamma", default=0.1, type=float)
    p.add_argument("--lr-warmup-epochs", default=0, type=int)
    p.add_argument("--output-dir", default=".")
    p.add_argument("--resume", default="")
    p.add_argument("--start-epoch", default=0, type=int)
    p.add_argument("--test-only", action="store_true")
    p.add_argument("--model-ema", action="store_true")
    p.add_argument("--model-ema-steps", default=32, type=int)
    p.add_argument("--model-ema-decay", default=0.99998, type=float)
    p.add_argument("--train-crop-size", default=224, type=int)
    p.add_argument("--val-resize-size", default=256, type=int)
    p.add_argument("--val-crop-size", default=224, type=int)
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--cacim-method", default="lloyd")
    p.add_argument("--cacim-levels", default=3, type=int)
    p.add_argument("--cacim-noise", default=0.02, type=float, help="NATS delta in every training forward")
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
