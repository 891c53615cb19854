"""The bill before a run: cells, training steps, images and GPU-hours of an experiment at a scale.

    python -m benchmarks plan table3 --scale paper [--gpus 8] [--methods lloyd,mine] [--seeds 0,1,2]

GPU-hours come from the images/s that `make bench` measured on a GPU (results/_bench/throughput.json,
keyed by model and device); without such a measurement they are printed as unknown, never guessed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from benchmarks.experiments import Cell, MMRecipe, Recipe, cells

# Training-set sizes of the paper-scale datasets (images); the proxies are counted from their bundles.
TRAIN_IMAGES = {
    "imagenet": 1_281_167,
    "imagenet_rrc": 1_281_167,
    "cifar10": 50_000,
    "cifar10_hou": 45_000,
    "voc0712": 16_551,
    "voc12aug": 10_582,
}
THROUGHPUT = Path("_bench") / "throughput.json"


def _train_images(cell: Cell, data: str | None) -> int | None:
    if cell.dataset in TRAIN_IMAGES:
        return TRAIN_IMAGES[cell.dataset]
    if isinstance(cell.recipe, MMRecipe):
        return None
    from benchmarks.data import load_data

    return len(load_data(cell.dataset, data).train)


def _steps_images(cell: Cell, recipe: Recipe | MMRecipe | None, n_train: int | None) -> tuple[float, float]:
    """(optimizer steps, training images) of one phase (nan where the config must be read to know)."""
    if recipe is None:
        return 0.0, 0.0
    if isinstance(recipe, MMRecipe):
        iters = float(recipe.phase["train_cfg"]["max_iters"])
        batch = recipe.extra.get("train_dataloader", {}).get("batch_size")
        return iters, iters * batch if batch else math.nan
    steps = recipe.epochs * math.ceil((n_train or 0) / recipe.batch_size)
    if cell.max_batches is not None:
        steps = recipe.epochs * cell.max_batches
    return float(steps), float(steps * recipe.batch_size * recipe.noise_samples)


def bill(
    experiment: str,
    scale: str,
    results: str | Path = "results",
    data: str | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
) -> pd.DataFrame:
    """One row per (model, dataset): cells (of `methods` at `seeds`, as `run` would list them), float models
    to train (none where the recipe expects a user's checkpoint), optimizer steps, training images,
    GPU-hours."""
    listed = cells(experiment, scale, methods, seeds)
    rates = {}
    path = Path(results) / THROUGHPUT
    if path.is_file():
        rates = {(r["model"], r["device"]): r["images_per_s"] for r in json.loads(path.read_text())}
    rows = []
    for (model, dataset), group in pd.DataFrame({"cell": listed}).groupby(
        [[c.model for c in listed], [c.dataset for c in listed]]
    ):
        group_cells: list[Cell] = list(group["cell"])
        n_train = _train_images(group_cells[0], data)
        per_cell = [_steps_images(cell, cell.recipe, n_train) for cell in group_cells]
        floats = {(c.seed, repr(c.fp_recipe)) for c in group_cells if c.fp_recipe is not None}
        fp_steps, fp_images = _steps_images(group_cells[0], group_cells[0].fp_recipe, n_train)
        steps = sum(s for s, _ in per_cell) + len(floats) * fp_steps
        images = sum(i for _, i in per_cell) + len(floats) * fp_images
        cuda = [v for (m, d), v in rates.items() if m == model and d.startswith("cuda")]
        rows.append(
            {
                "model": model,
                "dataset": dataset,
                "cells": len(group_cells),
                "float models": len(floats),
                "steps": steps,
                "train images": images,
                "GPU-hours": images / cuda[0] / 3600 if cuda else math.nan,
            }
        )
    return pd.DataFrame(rows)


def render(frame: pd.DataFrame, experiment: str, scale: str, gpus: int) -> str:
    total = frame["GPU-hours"].sum(min_count=len(frame))
    lines = [
        f"# {experiment} [{scale}]: what a full run costs",
        "",
        frame.to_markdown(index=False, floatfmt=".3g"),
        "",
    ]
    if math.isnan(total):
        lines.append(
            "GPU-hours: unknown: no GPU throughput measured for these models; run `make bench` on a GPU "
            "(it writes results/_bench/throughput.json), then plan again."
        )
    else:
        lines.append(
            f"GPU-hours: {total:.1f} in all; wall time on {gpus} GPU(s), one cell per GPU: "
            f"about {total / gpus:.1f} h (cells are independent)."
        )
    lines.append(
        "Evaluation passes (noise draws over the test set) are not counted; they are minutes per cell."
    )
    return "\n".join(lines) + "\n"
