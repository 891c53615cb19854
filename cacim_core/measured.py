"""Empirical weight noise from measured memristor conductances (paper section 4.4, Figure 4).

A conductance file lists, for each target differential conductance G = G+ - G- (uS) a layer was programmed
to, the values measured after programming. Two CSV layouts are accepted (lines starting with '#' are
comments):

- wide: a header of target levels, one column of measured values per level (columns may differ in length)::

      -10.36,-0.57,4.52,15.75
      -10.12,-0.31,4.60,15.41
      ...

- pairs: a header ``target_uS,measured_uS`` and one programmed device pair per row.

Sampling resamples the measured deviations (measured - target) of the nearest target level, so the noise
keeps whatever shape, level dependence and mean shift the devices have; nothing assumes a Gaussian.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .device import ConductanceMap

PAIR_HEADER = ("target", "measured")
MIN_SAMPLES_PER_LEVEL = 2


@dataclass(frozen=True)
class MeasuredConductances:
    """Measured differential conductances grouped by target level (all in uS)."""

    targets: Tensor  # (levels,) sorted target conductances
    deviations: tuple[Tensor, ...]  # per level: measured - target
    source: str = ""

    @classmethod
    def from_csv(cls, path: str | Path) -> MeasuredConductances:
        """Parse a wide or pairs CSV; any malformed line raises a one-line ValueError naming file and line."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"conductance file {path} does not exist; pass a CSV of measured uS values"
            )
        rows = [
            (lineno, [field.strip() for field in row])
            for lineno, row in enumerate(csv.reader(path.read_text().splitlines()), start=1)
            if row and any(field.strip() for field in row) and not row[0].lstrip().startswith("#")
        ]
        if not rows:
            raise ValueError(
                f"{path}: no header line; expected target levels (uS) or 'target_uS,measured_uS'"
            )
        (_, header), body = rows[0], rows[1:]
        groups = _pairs(path, header, body) if _is_pair_header(header) else _wide(path, header, body)
        targets = sorted(groups)
        for target in targets:
            if len(groups[target]) < MIN_SAMPLES_PER_LEVEL:
                raise ValueError(
                    f"{path}: target {target:g} uS has {len(groups[target])} measured value(s); "
                    f"at least {MIN_SAMPLES_PER_LEVEL} per level are needed"
                )
        deviations = tuple(torch.tensor(groups[t], dtype=torch.float64) - t for t in targets)
        return cls(torch.tensor(targets, dtype=torch.float64), deviations, source=str(path))

    @property
    def std(self) -> Tensor:
        """Sample std of the measured conductance at each target level (uS)."""
        return torch.stack([dev.std() for dev in self.deviations])

    @property
    def mean_shift(self) -> Tensor:
        """Mean of measured - target at each level (uS): programming bias, if the devices have one."""
        return torch.stack([dev.mean() for dev in self.deviations])

    def measured(self) -> Tensor:
        """All measured conductances, flat (uS) — what Figure 4(a) plots as 'measured'."""
        return torch.cat([dev + target for dev, target in zip(self.deviations, self.targets, strict=True)])

    def nearest_level(self, targets_uS: Tensor) -> Tensor:
        """Index of the measured level nearest to each requested conductance."""
        levels = self.targets.to(targets_uS.device, targets_uS.dtype)
        return torch.bucketize(targets_uS, (levels[1:] + levels[:-1]) / 2)

    def sample_deviation(self, targets_uS: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A conductance error (uS) per element of `targets_uS`, drawn from the nearest level's measurements.

        Add it to the programmed conductances to get one simulated chip: `G + sample_deviation(G, gen)`.
        """
        counts = torch.tensor([len(dev) for dev in self.deviations])
        offsets = torch.cumsum(counts, 0) - counts
        pool = torch.cat(self.deviations)
        level = self.nearest_level(targets_uS.detach()).cpu()
        device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(targets_uS.shape, generator=generator, device=device, dtype=torch.float64).cpu()
        pick = offsets[level] + (u * counts[level]).long().clamp_max(counts[level] - 1)
        return pool[pick].to(targets_uS.device, targets_uS.dtype)


@dataclass(frozen=True)
class MeasuredNoise:
    """A noise model `(wq, generator) -> noise` from measurements: `QuantConfig(noise_fn=MeasuredNoise(m))`.

    Programs the layer's quantized weights onto differential conductances (section 4.4: G = wq / max|wq| *
    scale), adds a measured conductance error drawn for each device pair, and returns the error in weight
    units. Inside `weight_noise(...)` each draw is one programmed chip.
    """

    conductances: MeasuredConductances
    device: ConductanceMap = ConductanceMap()

    def __call__(self, wq: Tensor, generator: torch.Generator | None = None) -> Tensor:
        w_max = wq.detach().abs().max()
        g = self.device.differential(wq.detach(), w_max)
        return self.conductances.sample_deviation(g, generator) / self.device.scale * w_max


def _is_pair_header(header: list[str]) -> bool:
    return len(header) == 2 and all(
        field.lower().startswith(prefix) for field, prefix in zip(header, PAIR_HEADER, strict=True)
    )


def _number(path: Path, lineno: int, field: str) -> float:
    try:
        value = float(field)
    except ValueError:
        raise ValueError(
            f"{path}:{lineno}: {field!r} is not a number (conductances are plain uS values)"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"{path}:{lineno}: {field!r} is not finite; remove that measurement")
    return value


def _pairs(path: Path, header: list[str], body: list[tuple[int, list[str]]]) -> dict[float, list[float]]:
    groups: dict[float, list[float]] = {}
    for lineno, row in body:
        if len(row) != 2 or not all(row):
            raise ValueError(
                f"{path}:{lineno}: expected 'target,measured' (2 numbers), got {len(row)} field(s)"
            )
        target, measured = (_number(path, lineno, field) for field in row)
        groups.setdefault(target, []).append(measured)
    return groups


def _wide(path: Path, header: list[str], body: list[tuple[int, list[str]]]) -> dict[float, list[float]]:
    try:
        targets = [float(field) for field in header]
    except ValueError:
        raise ValueError(
            f"{path}:1: header {','.join(header)!r} is neither 'target_uS,measured_uS' nor one target "
            "conductance (uS) per column, e.g. '-10.36,-0.57,4.52,15.75'"
        ) from None
    if len(set(targets)) != len(targets):
        raise ValueError(f"{path}:1: a target level appears twice in the header; give each level one column")
    groups: dict[float, list[float]] = {target: [] for target in targets}
    for lineno, row in body:
        if len(row) > len(targets):
            raise ValueError(f"{path}:{lineno}: {len(row)} fields but the header names {len(targets)} levels")
        for target, field in zip(targets, row, strict=False):
            if field:
                groups[target].append(_number(path, lineno, field))
    return groups
