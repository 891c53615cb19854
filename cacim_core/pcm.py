"""Statistical PCM device model: programming noise, drift, 1/f read noise, global drift compensation.

The model of Joshi et al., "Accurate deep neural network inference using computational phase-change
memory", Nature Communications 11:2473 (2020), and Nandakumar et al., ICECS 2019, transcribed from IBM
aihwkit (github.com/IBM/aihwkit, commit 4545f11): `src/aihwkit/inference/noise/pcm.py`
(`PCMLikeNoiseModel`, the conductance formulas), `src/aihwkit/inference/converter/conductance.py`
(`SinglePairConductanceConverter`, the weight mapping) and `src/aihwkit/inference/compensation/drift.py`
with `src/aihwkit/simulator/tiles/inference.py` (`GlobalDriftCompensation`).

Weights -> conductances (differential pair, one device at 0): G+ = max(W, 0) * g_max / max|W|,
G- = max(-W, 0) * g_max / max|W| (per layer, or per tile with `QuantConfig.tile`). For each device:
  programming:  G_p = max(0, G_T + sigma_p(G_T) z1),  sigma_p = (c0 + c1 g + c2 g^2) g_max / 25 uS,
                g = G_T / g_max, (c0, c1, c2) = (0.26348, 1.9650, -1.1731) fitted at g_max = 25 uS;
  drift:        nu = |mu_nu + sigma_nu z2|, mu_nu = clip(-0.0155 ln g + 0.0244, 0.049, 0.1),
                sigma_nu = clip(-0.0125 ln g - 0.0059, 0.008, 0.045), g clipped below at 1e-7;
                G_D = G_p ((t + t0) / t0)^-nu  (t counts from the end of programming, t0 = 20 s);
  read (1/f):   Q_s = min(0.2, 0.0088 / max(1e-3, (G_p / g_max)^0.65)),
                G(t) = max(0, G_D + |G_D| Q_s sqrt(ln((t + t0 + t_read) / (2 t_read))) z3), t_read = 250 ns.
Global drift compensation (aihwkit's default): right after programming the tile reads out one-hot inputs
(the identity matrix: every column once) and keeps mean|output| = mean|W_p| as the reference; at time t
the same read-out gives mean|W(t)|, and every output of the tile is multiplied by alpha = ref / now. That
is one scale per layer (per tile), applied here to the weights (the bias is digital and not scaled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .noise import NoiseModel, register

PROG_COEFF = (0.26348, 1.9650, -1.1731)  # uS, at g_max = PROG_COEFF_G_MAX
PROG_COEFF_G_MAX = 25.0
ZERO_CLIP = 1e-7
SECOND, HOUR, DAY = 1.0, 3600.0, 86400.0
TIMES = {"1s": SECOND, "1h": HOUR, "1d": DAY, "1mo": 30 * DAY, "1y": 365 * DAY}  # evaluation times


@register("pcm")
@dataclass(frozen=True)
class PCMNoise(NoiseModel):
    """PCM weights read at `t` seconds after programming; `compensation`: aihwkit's global drift compensation.

    One call is one programmed chip (layer or tile): programming error, drift exponents and read noise are
    drawn from `generator` in that order.
    """

    t: float = 0.0
    compensation: bool = True
    g_max: float = 25.0
    t0: float = 20.0
    t_read: float = 250e-9
    prog_scale: float = 1.0
    read_scale: float = 1.0
    drift_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.t >= 0:
            raise ValueError(f"pcm: t is seconds after programming and must be >= 0, got {self.t}")
        if not (self.g_max > 0 and self.t0 > 0 and self.t_read > 0):
            raise ValueError("pcm: g_max, t0 and t_read must be > 0")
        if min(self.prog_scale, self.read_scale, self.drift_scale) < 0:
            raise ValueError("pcm: prog_scale, read_scale and drift_scale must be >= 0")

    def programming_std(self, g_target: Tensor) -> Tensor:
        """sigma_p(G_T) in uS (aihwkit `apply_programming_noise_to_conductance`)."""
        g = g_target / self.g_max
        c0, c1, c2 = PROG_COEFF
        return (c0 + c1 * g + c2 * g * g) * (self.g_max / PROG_COEFF_G_MAX)

    def drift_stats(self, g_target: Tensor) -> tuple[Tensor, Tensor]:
        """(mu_nu, sigma_nu) of the drift exponent per target conductance (`generate_drift_coefficients`)."""
        log_g = torch.log((g_target / self.g_max).abs().clamp_min(ZERO_CLIP))
        mu = (-0.0155 * log_g + 0.0244).clamp(0.049, 0.1)
        sigma = (-0.0125 * log_g - 0.0059).clamp(0.008, 0.045)
        return mu, sigma

    def read_std(self, g_prog: Tensor) -> Tensor:
        """Relative std of the accumulated 1/f read noise at time t (`apply_drift_noise_to_conductance`)."""
        q_s = (0.0088 / ((g_prog.abs() / self.g_max) ** 0.65).clamp_min(1e-3)).clamp_max(0.2)
        t = self.t + self.t0
        return q_s * math.sqrt(math.log((t + self.t_read) / (2 * self.t_read)))

    def conductances(
        self, g_target: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(G_p right after programming, G(t)) for each device, in uS."""
        z = torch.randn(
            (3, *g_target.shape), generator=generator, device=g_target.device, dtype=g_target.dtype
        )
        g_prog = (g_target + self.prog_scale * self.programming_std(g_target) * z[0]).clamp_min(0.0)
        mu, sigma = self.drift_stats(g_target)
        nu = (mu + sigma * z[1]).abs() * self.drift_scale
        t = self.t + self.t0
        g_drift = g_prog * (t / self.t0) ** (-nu) if t > self.t0 else g_prog
        g_t = g_drift + g_drift.abs() * self.read_scale * self.read_std(g_prog) * z[2]
        return g_prog, g_t.clamp_min(0.0)

    @torch.no_grad()
    def __call__(self, wq: Tensor, generator: torch.Generator | None = None) -> Tensor:
        w = wq.detach()
        ratio = self.g_max / w.abs().max().clamp_min(ZERO_CLIP)  # uS per weight unit
        targets = torch.stack([(w * ratio).clamp(0, self.g_max), (-w * ratio).clamp(0, self.g_max)])
        g_prog, g_t = self.conductances(targets, generator)
        diff = g_t[0] - g_t[1]
        if self.compensation:
            reference = (g_prog[0] - g_prog[1]).abs().mean().clamp_min(1e-4)
            diff = diff * (reference / diff.abs().mean().clamp_min(1e-4))
        return diff / ratio - w

    def describe(self) -> str:
        comp = "with" if self.compensation else "without"
        return f"PCM (Joshi et al. 2020) at t={self.t:g} s after programming, {comp} drift compensation"
