"""Empirical weight noise from measured memristor conductances (paper section 4.4, Figure 4).

A conductance file lists, for each target differential conductance G = G+ - G- (uS) a layer was programmed
to, the values measured after programming. Two CSV layouts are accepted (lines starting with '#' are
comments):

- wide: a header of target levels, one column of measured values per level (columns may differ in length)::

      -10.36,-0.57,4.52,15.75
      -10.12,-0.31,4.60,15.41
      ...

- pairs: a header ``target_uS,measured_uS`` and one programmed device pair per row.

Two noise models read such a file. "measured" (`MeasuredNoise`) resamples the measured deviations
(measured - target) of the nearest target level, so the noise keeps whatever shape, level dependence and
mean shift the devices have; nothing assumes a Gaussian. "fitted" (`FittedNoise`) fits a Gaussian
programming noise to it instead: the per-level mean and std, or polynomials in the target conductance
that also cover targets between the measured levels; its `quality` says how well the fit matches.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .device import ConductanceMap
from .noise import NOISES, NoiseModel, register

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


@dataclass(frozen=True, eq=False)  # tensors inside: compare by `spec`
class MeasuredNoise(NoiseModel):
    """Noise resampled from measurements: `QuantConfig(noise="measured:path=chip.csv")`.

    Programs the layer's quantized weights onto differential conductances (section 4.4: G = wq / max|wq| *
    scale), adds a measured conductance error drawn for each device pair, and returns the error in weight
    units. Inside `weight_noise(...)` each draw is one programmed chip.
    """

    conductances: MeasuredConductances
    device: ConductanceMap = ConductanceMap()
    name = "measured"

    @classmethod
    def from_csv(cls, path: str) -> MeasuredNoise:
        return cls(MeasuredConductances.from_csv(path))

    def __call__(self, wq: Tensor, generator: torch.Generator | None = None) -> Tensor:
        w_max = wq.detach().abs().max()
        g = self.device.differential(wq.detach(), w_max)
        return self.conductances.sample_deviation(g, generator) / self.device.scale * w_max

    @property
    def spec(self) -> str:
        return f"measured:path={self.conductances.source}"


NOISES.register("measured")(MeasuredNoise.from_csv)


@dataclass(frozen=True)
class FitQuality:
    """How well a fitted programming-noise model matches the file, over its measured levels.

    r2_std: R^2 of the predicted std against the per-level sample std (nan when every level has the same
    std); residual_std: rms of (predicted - sample std) in uS; ks: the largest Kolmogorov-Smirnov distance,
    over levels, between the standardised measured deviations and N(0, 1) (about 1.36 / sqrt(n) is the 5%
    critical value for n samples of a Gaussian).
    """

    r2_std: float
    residual_std: float
    ks: float


@register("fitted")
@dataclass(frozen=True)
class FittedNoise(NoiseModel):
    """Gaussian programming noise fitted to a measured conductance file: N(mu(G), sigma(G)^2) in uS.

    kind="level": mu and sigma of the nearest measured level (the per-level fit); kind="poly": mu and
    sigma are polynomials of `degree` in the target conductance G, least squares over the levels.
    """

    path: str
    kind: str = "level"
    degree: int = 2
    device: ConductanceMap = dataclasses.field(default=ConductanceMap(), metadata={"spec": False})
    data: MeasuredConductances = dataclasses.field(init=False, repr=False, compare=False)
    mean_coeffs: tuple[float, ...] = dataclasses.field(init=False, repr=False, compare=False)
    std_coeffs: tuple[float, ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("level", "poly"):
            raise ValueError(f"fitted: kind must be 'level' or 'poly', got {self.kind!r}")
        data = MeasuredConductances.from_csv(self.path)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "mean_coeffs", ())
        object.__setattr__(self, "std_coeffs", ())
        if self.kind == "poly":
            levels = len(data.targets)
            if not 0 <= self.degree < levels:
                raise ValueError(f"fitted: degree must be in 0..{levels - 1} for {levels} measured levels")
            x = data.targets.numpy()
            object.__setattr__(
                self, "mean_coeffs", tuple(np.polyfit(x, data.mean_shift.numpy(), self.degree))
            )
            object.__setattr__(self, "std_coeffs", tuple(np.polyfit(x, data.std.numpy(), self.degree)))

    def stats(self, g: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std) of the programming error (uS) at target conductances `g`."""
        if self.kind == "level":
            index = self.data.nearest_level(g).cpu()
            return self.data.mean_shift[index].to(g), self.data.std[index].to(g)
        return _polyval(self.mean_coeffs, g), _polyval(self.std_coeffs, g).clamp_min(0.0)

    @property
    def quality(self) -> FitQuality:
        targets = self.data.targets
        mean, std = self.stats(targets)
        sample = self.data.std
        total = float(((sample - sample.mean()) ** 2).sum())
        residual = float(((std - sample) ** 2).sum())
        ks = max(
            _ks_normal((dev - m) / s)
            for dev, m, s in zip(self.data.deviations, mean, std, strict=True)
            if s > 0
        )
        return FitQuality(
            r2_std=1 - residual / total if total > 0 else math.nan,
            residual_std=math.sqrt(residual / len(targets)),
            ks=ks,
        )

    @torch.no_grad()
    def __call__(self, wq: Tensor, generator: torch.Generator | None = None) -> Tensor:
        w = wq.detach()
        w_max = w.abs().max()
        mean, std = self.stats(self.device.differential(w, w_max))
        eps = torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype)
        return (mean + std * eps) / self.device.scale * w_max

    def describe(self) -> str:
        q = self.quality
        how = "per level" if self.kind == "level" else f"polynomial degree {self.degree}"
        return (
            f"programming noise fitted to {self.path} ({how}): R^2 of std {q.r2_std:.3f}, "
            f"residual std {q.residual_std:.3g} uS, max KS distance {q.ks:.3f}"
        )


def _polyval(coeffs: tuple[float, ...], g: Tensor) -> Tensor:
    out = torch.zeros_like(g)
    for c in coeffs:  # Horner, highest power first (numpy's polyfit order)
        out = out * g + c
    return out


def _ks_normal(z: Tensor) -> float:
    """Kolmogorov-Smirnov distance between the sample z and N(0, 1)."""
    z = z.double().sort().values
    n = len(z)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n - cdf
    lower = cdf - torch.arange(0, n, dtype=torch.float64) / n
    return float(torch.maximum(upper, lower).max())


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
