"""cacim_core in torchvision's classification reference recipe (scripts/torchvision_reference_train.py, the
reference's calls with cacim's four lines): it trains with --model-ema, resumes from its checkpoint exactly,
and --test-only reproduces the EMA's accuracy, on a tiny ImageFolder generated here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cacim_core import QuantConfig, quantize_model, quantized_layers

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "torchvision_reference_train.py"


def _image_folder(root: Path) -> Path:
    """Two classes told apart by colour (red vs blue, with noise), 8 train and 4 val PNGs each."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 4)):
        for label, channel in (("red", 0), ("blue", 2)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 90, size=(36, 36, 3))
                pixels[..., channel] += 140
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def _run(data: Path, out: Path, *extra: str) -> str:
    args = [
        *("--data-path", str(data), "--model", "resnet18", "-b", "4", "--lr", "0.02", "--lr-step-size", "2"),
        *("--train-crop-size", "32", "--val-resize-size", "36", "--val-crop-size", "32"),
        *("--model-ema", "--model-ema-steps", "1", "--model-ema-decay", "0.9", "--output-dir", str(out)),
    ]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, *extra], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _acc(stdout: str, suffix: str) -> list[float]:
    return [float(a) for a in re.findall(rf"Test: {suffix} Acc@1 ([0-9.]+) n=8", stdout)]


@pytest.mark.slow  # three runs of the script, resnet18 at 32 px
def test_reference_recipe_trains_resumes_and_evaluates_the_ema(tmp_path):
    data, out = _image_folder(tmp_path / "data"), tmp_path / "out"
    first = _run(data, out, "--epochs", "2")
    assert re.findall(r"Epoch: \[(\d)\] \[0\]", first) == ["0", "1"]
    assert len(_acc(first, "EMA")) == 2 and len(_acc(first, "")) == 2
    saved = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)
    assert saved["epoch"] == 1

    # every conv and the fc of resnet18 quantized, in the checkpoint the recipe wrote
    import torchvision

    reference = quantize_model(torchvision.models.resnet18(num_classes=2), QuantConfig(levels=3))
    names = [n for n, _, _ in quantized_layers(reference)]
    assert len(names) == 21 and all(f"{n}.parametrizations.weight.original" in saved["model"] for n in names)
    levels = saved["model"]["conv1.parametrizations.weight.0.quantizer._levels"]
    assert levels.numel() == 3 and torch.all(levels[1:] > levels[:-1])

    resumed = _run(data, out, "--epochs", "3", "--resume", str(out / "checkpoint.pth"))
    assert re.findall(r"Epoch: \[(\d)\] \[0\]", resumed) == ["2"]  # starts after the saved epoch
    after = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)
    assert after["epoch"] == 2 and after["lr_scheduler"]["last_epoch"] == 3

    evaluated = _run(data, out, "--epochs", "3", "--resume", str(out / "checkpoint.pth"), "--test-only")
    assert "Epoch:" not in evaluated
    # the EMA reloaded from the checkpoint scores what the run measured when it saved it (noise-free eval)
    assert _acc(evaluated, "EMA") == _acc(resumed, "EMA")[-1:]
