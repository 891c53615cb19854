"""Built-in equalities: two methods that fit the same grid by construction are stated per layer, not tested.

On symmetric weights 3-level Lloyd, MSE-uniform and log2 are one grid {-s, 0, s} (Lloyd's middle centroid
is 0 by symmetry, and its outer level satisfies the same fixed point as the MSE-optimal s), so a claim
"lloyd < uniform at 3L" there is decided by how symmetric the layers are, not by the method. A verdict on
it would be a test of training noise; instead a table shows, per layer of a real float model, the two
methods' distortions (MSE of the fitted quantizer) and whether their levels coincide.

What it shows: log2 3L and uniform 3L are one grid on every layer (the same scale search on {-1, 0, 1}).
Lloyd 3L = uniform 3L holds for a symmetric distribution, not for a finite or skewed layer: on a few hundred
exactly symmetric weights the optimum can be one of a mirror pair of asymmetric grids (ratio ~0.99), and
trained layers are skewed (table1's proxy float ResNet-20, seed 0: ratio 0.919..0.999 over 20 layers, the
classifier lowest), so that claim is a measurement, not a construction.

    python -m benchmarks.equalities results/_float/proxy/<key>.pt lloyd uniform --levels 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from cacim_core import quantizers
from cacim_core.convert import LAYER_TYPES
from cacim_core.quantizers.lloyd import distortion

COLUMNS = ("layer", "mse_a", "mse_b", "ratio", "same_grid")


def layer_weights(
    model_or_state: nn.Module | dict[str, Tensor], first_last: str = "quantize"
) -> dict[str, Tensor]:
    """The weights quantize_model would quantize, by layer name, in model order: a module's Conv/Linear
    layers, or a state dict's `<layer>.weight` tensors of two or more dimensions (BatchNorm's are 1-D).
    first_last "fp" leaves out the first and last layer (the paper's *)."""
    if isinstance(model_or_state, nn.Module):
        layers = {
            name: m.weight.detach()
            for name, m in model_or_state.named_modules()
            if isinstance(m, LAYER_TYPES)
        }
    else:
        layers = {
            key.removesuffix(".weight"): w.detach()
            for key, w in model_or_state.items()
            if key.endswith(".weight") and w.dim() >= 2
        }
    if not layers:
        raise ValueError("no Conv/Linear weights found: pass a model or its state dict")
    names = list(layers)
    if first_last == "fp":
        names = names[1:-1]
    elif first_last != "quantize":
        raise ValueError(
            f"first_last must be quantize or fp, got {first_last!r} (8bit layers are not analog)"
        )
    return {name: layers[name] for name in names}


def _fit(method: str, levels: int, w: Tensor) -> tuple[Tensor, float]:
    """(sorted levels, MSE per weight) of `method` fitted on w, in float64."""
    quantizer = quantizers.build(method, levels=levels)
    w = w.double()
    quantizer.to(dtype=w.dtype)
    quantizer.fit(w)
    return quantizer.levels.detach().double(), distortion(w, quantizer.quantize(w))


def grid_equalities(
    model_or_state: nn.Module | dict[str, Tensor],
    method_a: str,
    method_b: str,
    levels: int,
    first_last: str = "quantize",
    tol: float = 0.01,
) -> pd.DataFrame:
    """Per layer: mse_a, mse_b, ratio = mse_a / mse_b and same_grid (as many levels, each within `tol` of the
    layer's largest level magnitude). The methods and levels ride along in `DataFrame.attrs` for `summary`."""
    rows = []
    for name, w in layer_weights(model_or_state, first_last).items():
        levels_a, mse_a = _fit(method_a, levels, w)
        levels_b, mse_b = _fit(method_b, levels, w)
        scale = float(torch.cat([levels_a, levels_b]).abs().max())
        same = levels_a.shape == levels_b.shape and float((levels_a - levels_b).abs().max()) <= tol * scale
        ratio = mse_a / mse_b if mse_b > 0 else (1.0 if mse_a == 0 else float("inf"))
        rows.append({"layer": name, "mse_a": mse_a, "mse_b": mse_b, "ratio": ratio, "same_grid": same})
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.attrs = {"method_a": method_a, "method_b": method_b, "levels": levels, "tol": tol}
    return frame


def summary(frame: pd.DataFrame) -> str:
    """One line: on how many layers the two methods fit the same grid, and the range of their distortion
    ratio (e.g. "lloyd 3L = uniform 3L on 19/19 layers (levels within 1%): distortion ratio 1.000..1.002")."""
    a, b, v = frame.attrs["method_a"], frame.attrs["method_b"], frame.attrs["levels"]
    same, total = int(frame["same_grid"].sum()), len(frame)
    lo, hi = frame["ratio"].min(), frame["ratio"].max()
    return (
        f"{a} {v}L = {b} {v}L on {same}/{total} layers (levels within {frame.attrs['tol']:.0%}): "
        f"distortion ratio {a}/{b} {lo:.3f}..{hi:.3f}"
    )


def load_state(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a file: a cached float model (`{"model": state, ...}`) or a bare state dict."""
    loaded = torch.load(path, map_location="cpu", weights_only=False)
    state = loaded.get("model", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict: pass a float checkpoint from results/_float/<scale>/")
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.equalities", description=__doc__)
    parser.add_argument("checkpoint", help="a float model: results/_float/<scale>/<key>.pt or a state dict")
    parser.add_argument("method_a")
    parser.add_argument("method_b")
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--first-last", default="quantize", choices=("quantize", "fp"))
    args = parser.parse_args(argv)
    try:
        for method in (args.method_a, args.method_b):
            quantizers.base.QUANTIZERS.get(method)  # an unknown name: one line listing the registered ones
        if not Path(args.checkpoint).is_file():
            raise ValueError(
                f"no file {args.checkpoint}: pass a float checkpoint from results/_float/<scale>/"
            )
        frame = grid_equalities(
            load_state(args.checkpoint), args.method_a, args.method_b, args.levels, args.first_last
        )
    except (ValueError, KeyError) as exc:
        print(f"error: {str(exc).strip(chr(34) + chr(39))}", file=sys.stderr)
        return 2
    print(frame.to_markdown(index=False, floatfmt=".6g"))
    print(summary(frame))
    return 0


if __name__ == "__main__":
    sys.exit(main())
