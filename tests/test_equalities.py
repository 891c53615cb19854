"""Built-in equalities: per-layer distortion of two methods against an exact 1-D k-means reference."""

from __future__ import annotations

import kmeans1d
import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.equalities import grid_equalities, layer_weights, main, summary


def _symmetric(n: int, kind: str, seed: int) -> torch.Tensor:
    """n weights whose distribution is exactly symmetric: every value x comes with -x."""
    g = torch.Generator().manual_seed(seed)
    half = torch.randn(n // 2, generator=g, dtype=torch.float64)
    if kind == "laplace":
        half = torch.log(torch.rand(n // 2, generator=g, dtype=torch.float64)) * torch.sign(half)
    return torch.cat([half, -half]) * 0.05


def _asymmetric(n: int, seed: int) -> torch.Tensor:
    """A skewed layer: a Gaussian bulk and a heavier positive tail (as the trained linear layers show)."""
    g = torch.Generator().manual_seed(seed)
    bulk = torch.randn(n, generator=g, dtype=torch.float64) * 0.05
    tail = torch.rand(n, generator=g, dtype=torch.float64) < 0.2
    return torch.where(tail, bulk.abs() * 3 + 0.02, bulk)


def _state(make) -> dict[str, torch.Tensor]:
    # a small conv, a linear, and one layer above the 65,536-weight histogram threshold of `lloyd`
    shapes = {"conv1": (16, 3, 3, 3), "fc": (10, 64), "big.conv": (64, 64, 5, 5)}
    return {
        f"{name}.weight": make(int(np.prod(shape)), i).reshape(shape).float()
        for i, (name, shape) in enumerate(shapes.items())
    } | {"bn.weight": torch.ones(16)}


def _exact_mse(w: torch.Tensor, levels: int) -> float:
    """The minimum 3-level distortion of w: kmeans1d's exact 1-D k-means (a separate implementation)."""
    x = w.double().flatten().numpy()
    clusters, centroids = kmeans1d.cluster(x, levels)
    return float(np.mean((x - np.asarray(centroids)[clusters]) ** 2))


@pytest.mark.parametrize("kind", ["gauss", "laplace"])
def test_lloyd_and_uniform_are_one_grid_on_symmetric_layers(kind: str) -> None:
    """Exactly symmetric weights: one grid on the 102,400-weight layer; on a few hundred weights the sample's
    own optimum may be one of a mirror pair of asymmetric grids, within about 1% of the symmetric one."""
    state = _state(lambda n, seed: _symmetric(n, kind, seed))
    frame = grid_equalities(state, "lloyd", "uniform", 3)
    assert list(frame["layer"]) == ["conv1", "fc", "big.conv"]  # BatchNorm's 1-D weight is no layer
    big = frame.set_index("layer").loc["big.conv"]
    assert big["same_grid"] and big["ratio"] == pytest.approx(1.0, abs=1e-4)
    assert ((frame["ratio"] > 0.98) & (frame["ratio"] <= 1 + 1e-3)).all()
    for layer, mse_a, mse_b in zip(frame["layer"], frame["mse_a"], frame["mse_b"], strict=True):
        exact = _exact_mse(state[f"{layer}.weight"], 3)
        assert exact * (1 - 1e-9) <= mse_a <= exact * (1 + 1e-3)  # lloyd: the optimum, up to binning
        assert mse_b >= exact * (1 - 1e-9)  # uniform: a constrained grid, never below the optimum
    same = int(frame["same_grid"].sum())
    assert summary(frame).startswith(f"lloyd 3L = uniform 3L on {same}/3 layers (levels within 1%): ")


def test_lloyd_beats_uniform_on_asymmetric_layers() -> None:
    state = _state(_asymmetric)
    frame = grid_equalities(state, "lloyd", "uniform", 3)
    assert not frame["same_grid"].any()
    assert (frame["ratio"] < 0.9).all()  # skewed weights: the symmetric grid costs over 10% more MSE
    for layer, mse_a in zip(frame["layer"], frame["mse_a"], strict=True):
        exact = _exact_mse(state[f"{layer}.weight"], 3)
        assert exact * (1 - 1e-9) <= mse_a <= exact * (1 + 1e-3)
    line = summary(frame)
    assert "on 0/3 layers" in line
    assert line.endswith(
        f"distortion ratio lloyd/uniform {frame['ratio'].min():.3f}..{frame['ratio'].max():.3f}"
    )


@pytest.mark.parametrize("make", [_asymmetric, lambda n, seed: _symmetric(n, "gauss", seed)])
def test_log2_is_uniform_at_three_levels_and_not_at_four(make) -> None:
    """{-s, 0, s} is both grids at 3 levels on any weights; at 4 ({+-1, +-1/2}, {+-3/2, +-1/2}) they part."""
    state = _state(make)
    three = grid_equalities(state, "log2", "uniform", 3)
    assert three["same_grid"].all() and (three["ratio"] == 1.0).all()
    four = grid_equalities(state, "log2", "uniform", 4)
    assert not four["same_grid"].any() and (four["ratio"] != 1.0).all()


def test_module_and_state_dict_give_the_same_layers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8, 4)
    )
    from_module = layer_weights(model)
    from_state = layer_weights(model.state_dict())
    assert list(from_module) == list(from_state) == ["0", "2", "4"]
    assert all(torch.equal(from_module[k], from_state[k]) for k in from_module)
    assert list(layer_weights(model, first_last="fp")) == ["2"]
    assert grid_equalities(model, "lloyd", "uniform", 3).equals(
        grid_equalities(model.state_dict(), "lloyd", "uniform", 3)
    )
    with pytest.raises(ValueError, match="quantize or fp"):
        layer_weights(model, first_last="8bit")
    with pytest.raises(ValueError, match="no Conv/Linear"):
        layer_weights({"bn.weight": torch.ones(3)})


def test_cli_prints_layers_and_summary_and_refuses_bad_input(tmp_path, capsys) -> None:
    path = tmp_path / "float.pt"
    torch.save({"model": _state(_asymmetric), "metrics": {"top1": 50.0}}, path)
    assert main([str(path), "lloyd", "uniform", "--levels", "3"]) == 0
    out = capsys.readouterr().out
    assert "| big.conv" in out and out.strip().splitlines()[-1].startswith(
        "lloyd 3L = uniform 3L on 0/3 layers"
    )
    for args in ([str(path), "lloyd", "nope"], [str(tmp_path / "none.pt"), "lloyd", "uniform"]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
