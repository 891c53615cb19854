"""Section 5.1 digital-cost table: bit counts checked against direct computations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cacim_core import quantizers
from tables import digital_cost as dc


def quantize_to(weights: np.ndarray, levels: np.ndarray) -> np.ndarray:
    return levels[np.abs(weights[:, None] - levels[None, :]).argmin(axis=1)]


def reference_grid_bits(weights: np.ndarray, quantized: np.ndarray) -> int | None:
    """Brute force: every grid size, every weight's squared error recomputed from scratch."""
    levels, cell = np.unique(quantized, return_inverse=True)
    exact = np.mean((weights - levels[cell]) ** 2)
    for bits in range(1, dc.MAX_GRID_BITS + 1):
        for steps in range(max(len(levels) - 1, 2 ** (bits - 1)), 2**bits):
            unit = (levels[-1] - levels[0]) / steps
            rounded = levels[0] + np.round((levels - levels[0]) / unit) * unit
            if np.mean((weights - rounded[cell]) ** 2) <= exact * (1 + dc.MSE_TOLERANCE):
                return bits
    return None


def test_paper_example_needs_three_bits_plain_or_two_with_a_codebook() -> None:
    values = torch.tensor(dc.PAPER_EXAMPLE).repeat(50).reshape(1, -1)
    cost = dc.digital_cost(values, values, levels=4)
    assert (cost.direct_bits, cost.index_bits) == (3, 2)
    assert cost.codebook_bits_per_weight == pytest.approx(4 * dc.CODEBOOK_VALUE_BITS / 200)


GRIDS = {
    "uniform": lambda v: np.arange(v) - (v - 1) / 2,
    "power_of_two": lambda v: np.sort(
        np.r_[-(2.0 ** -np.arange(v // 2)), np.zeros(v % 2), 2.0 ** -np.arange(v // 2)]
    ),
}


@pytest.mark.parametrize("levels", [3, 4, 8])
@pytest.mark.parametrize("grid", GRIDS)
def test_uniform_and_power_of_two_levels_need_no_extra_bits(grid: str, levels: int) -> None:
    weights = np.random.default_rng(levels).normal(size=4000)
    q = quantize_to(weights, GRIDS[grid](levels) * 0.37)
    assert len(np.unique(q)) == levels
    cost = dc.digital_cost(torch.from_numpy(weights)[None], torch.from_numpy(q)[None], levels=levels)
    assert cost.direct_bits == cost.index_bits == math.ceil(math.log2(levels))


@pytest.mark.parametrize("seed", range(4))
def test_grid_bits_match_brute_force_on_irregular_levels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    weights = rng.standard_t(3, size=3000) * 0.1 + 0.02
    levels = np.sort(rng.normal(size=4) * 0.1)
    q = quantize_to(weights, levels)
    assert dc.grid_bits(weights, q) == reference_grid_bits(weights, q)


def test_per_channel_levels_are_counted_per_channel() -> None:
    weights = torch.randn(6, 50)
    scales = torch.linspace(0.5, 1.5, 6)[:, None]
    q = torch.sign(weights) * scales  # binary levels {-s_c, +s_c}, a different s_c per output channel
    cost = dc.digital_cost(weights, q, levels=2)
    assert (cost.groups, cost.distinct_levels, cost.index_bits) == (6, 2, 1)
    assert cost.codebook_bits_per_weight == pytest.approx(12 * dc.CODEBOOK_VALUE_BITS / 300)


def test_snap_merges_straight_through_roundoff_only() -> None:
    w = torch.randn(1000)
    levels = torch.tensor([-0.8, 0.1, 0.9])
    wq = levels[(w[:, None] - levels).abs().argmin(1)]
    ste = (w + (wq - w)).numpy()  # the straight-through expression, not bit-exact in float32
    assert len(np.unique(dc.snap(ste.astype(np.float64)))) == 3


def test_cli_writes_a_row_per_method_and_level(tmp_path: Path) -> None:
    state = {"fc.weight": torch.from_numpy(np.random.default_rng(0).standard_t(4, (20, 64)) * 0.05)}
    torch.save(state, tmp_path / "m.pt")
    assert dc.main(["--checkpoint", str(tmp_path / "m.pt"), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "proxy" / "digital_cost.md").read_text()  # outputs are per scale
    for method in quantizers.names():
        for levels in dc.LEVEL_COUNTS:
            assert (f"| {method} | {levels} |" in text) == (method != "lloyd_exact")
    assert "m.pt: fc.weight" in text and "| paper example {1, 2, 4, 6} | 4 | 4 (layer) | 3 |" in text
    assert dc.main(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "out")]) == 2


def test_cli_takes_a_plugin_and_a_method_list(tmp_path: Path, capsys) -> None:
    torch.save({"fc.weight": torch.randn(20, 64)}, tmp_path / "m.pt")
    plugin = str(Path(__file__).parent / "cacim_test_plugin.py")
    args = ["--checkpoint", str(tmp_path / "m.pt"), "--out", str(tmp_path / "out")]
    assert dc.main([*args, "--plugin", plugin, "--methods", "lloyd,maxabs_grid"]) == 0
    rows = (tmp_path / "out" / "proxy" / "digital_cost.md").read_text().splitlines()
    methods = {line.split("|")[1].strip() for line in rows if line.startswith("| ")}
    assert {"lloyd", "maxabs_grid"} <= methods and "uniform" not in methods
    assert dc.main([*args, "--methods", "lloyd,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown quantizer 'nope'; registered: apot" in err
