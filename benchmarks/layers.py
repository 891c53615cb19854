"""Weights of one layer for Figures 2 and 4(a) and the digital-cost table: from a checkpoint, or synthetic."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

#: Where a trained model's checkpoint is looked for under the results store when the user names none: the
#: runner's cached float models first (`<results>/_float/<scale>/<model>-....pt`), then any checkpoint.
CHECKPOINT_GLOBS = ("_float/*/*.pt", "**/*.pt", "**/*.pth")
SYNTHETIC_SEED = 0


@dataclass(frozen=True)
class Layer:
    """A layer's float weights and a human-readable source for titles and table headers."""

    weight: Tensor
    source: str
    synthetic: bool


def find_checkpoint(root: str | Path = "results", scale: str = "proxy") -> Path | None:
    """The newest float ResNet-18 checkpoint of `scale` if there is one (the paper's Figure 2 model)."""
    root = Path(root)
    found = {path for pattern in CHECKPOINT_GLOBS for path in root.glob(pattern) if path.is_file()}

    def preference(path: Path) -> tuple:
        text = str(path.relative_to(root)).lower()
        return ("_float" in text, f"/{scale}/" in text, "resnet18" in text, path.stat().st_mtime)

    return max(found, key=preference, default=None)


def state_dict_of(path: Path) -> dict[str, Tensor]:
    """Tensors of a checkpoint: a bare state_dict, or one nested under 'state_dict' / 'model'."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad file; all mean the same to the user
        raise ValueError(
            f"{path}: cannot load as a torch checkpoint ({type(exc).__name__}); name a .pt file "
            "saved with torch.save(model.state_dict())"
        ) from exc
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state_dict; save model.state_dict()")
    return {name: value for name, value in obj.items() if isinstance(value, Tensor)}


def layer_weights(state: dict[str, Tensor], which: str) -> tuple[str, Tensor]:
    """The Conv/Linear weight named `which`, or the 'first' / 'last' one in checkpoint order."""
    candidates = [
        (name, value)
        for name, value in state.items()
        if name.endswith(("weight", "weight.original")) and value.dim() >= 2  # plain or parametrized layer
    ]
    if not candidates:
        raise ValueError("checkpoint has no Conv/Linear weight (no '*.weight' tensor with 2+ dims)")
    if which == "first":
        return candidates[0]
    if which == "last":
        return candidates[-1]
    names = [name for name, _ in candidates]
    if which not in names:
        raise ValueError(f"no layer weight named {which!r}; choose one of: {', '.join(names)}")
    return which, state[which]


def synthetic_layer(kind: str, seed: int = SYNTHETIC_SEED) -> Tensor:
    """Stand-in weights shaped as the paper observes: bell-shaped, long-tailed; asymmetric for 'last'."""
    rng = np.random.default_rng(seed)
    if kind == "last":
        body = rng.standard_t(4.0, size=(100, 512)) * 0.02
        tail = rng.random((100, 512)) ** 4 * 0.12  # the long positive tail of a trained classifier layer
        return torch.from_numpy(body + tail - 0.01).float()
    return torch.from_numpy(rng.standard_t(3.0, size=(64, 3, 7, 7)) * 0.08).float()


def load_layer(
    checkpoint: str | Path | None, which: str, root: str | Path = "results", scale: str = "proxy"
) -> Layer:
    """Weights of one layer; falls back to a synthetic layer with a message naming how to get a real one."""
    path = Path(checkpoint) if checkpoint else find_checkpoint(root, scale)
    if checkpoint and not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; pass an existing .pt file to --checkpoint"
        )
    if path is None:
        print(
            f"note: no checkpoint under {root}/ ({', '.join(CHECKPOINT_GLOBS)}); "
            f"using a synthetic {which} layer. Train the proxy model (`make table3`) "
            "or pass --checkpoint PATH for real weights.",
            file=sys.stderr,
        )
        return Layer(synthetic_layer(which), f"synthetic {which} layer (no checkpoint)", synthetic=True)
    name, weight = layer_weights(state_dict_of(path), which)
    return Layer(weight.detach().float(), f"{path.name}: {name}", synthetic=False)
