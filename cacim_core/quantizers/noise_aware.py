"""Noise-aware Lloyd: levels and edges that minimise the expected error under a device noise model.

The error of a weight w stored at level q and read back as q + n(q) is, in expectation over the device,
E[(w - q - n(q))^2] = (w - q - m(q))^2 + v(q), with m and v the mean and variance of the device's error
at that level (any noise model: only the first two moments matter for the mean squared error). So
- assignment: w goes to the level minimising (w - q_k - m_k)^2 + v_k, i.e. the edge between levels k and
  k+1 (read-back means e_k = q_k + m_k) sits at (e_k + e_k+1)/2 + (v_k+1 - v_k) / (2 (e_k+1 - e_k)):
  noisier levels get narrower cells;
- update: q_k = centroid of cell k - m_k, pre-distorting each level against its mean error (e.g. PCM
  drift after global compensation, or a device mean shift).
m_k and v_k depend on all levels (the conductance scale is max|q|), so they are re-estimated each
iteration by Monte Carlo on the layer's level histogram with a fixed seed (common random numbers); an
iteration is kept only if the estimated expected error decreases. Starts from, and with no noise is,
`lloyd`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..noise import NoiseModel, parse
from .base import check_weights, register
from .lloyd import HIST_BINS, Lloyd, _prefix, atoms


@register("lloyd_noise")
class NoiseAwareLloyd(Lloyd):
    """Lloyd-Max under a device noise model (`noise`: any spec `cacim_core.noise.parse` reads).

    quantize_model passes the config's training noise when `quantizer_kwargs` gives no `noise`.
    samples: Monte Carlo draws for the moments (at least `samples // 20` per level); seed: their seed.
    """

    noise_aware = True

    def __init__(
        self,
        levels: int,
        noise: Any = None,
        samples: int = 20_000,
        seed: int = 0,
        tol: float = 1e-7,
        max_iter: int = 100,
        bins: int = HIST_BINS,
    ) -> None:
        super().__init__(levels, tol=tol, max_iter=max_iter, bins=bins)
        self.noise: NoiseModel | None = parse(noise)
        self.samples, self.seed = samples, seed
        self.expected_error = float("nan")

    @torch.no_grad()
    def fit(self, w: Tensor) -> None:
        super().fit(w)  # Lloyd: the start, and the answer without noise
        if self.noise is None:
            return
        check_weights(w)
        cnt, s1, s2 = atoms(w, self.bins)
        pos = s1 / cnt
        c, p1, p2 = _prefix(cnt), _prefix(s1), _prefix(s2)
        q = self.levels.double().cpu().numpy()
        if len(q) < 2:
            return

        def evaluate(q: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
            mean, var = self.moments(q, counts, w)
            edges = aware_edges(q + mean, var)
            cut = np.concatenate([[0], np.searchsorted(pos, edges, side="right"), [len(pos)]])
            nk, sk, qk = np.diff(c[cut]), np.diff(p1[cut]), np.diff(p2[cut])
            e = q + mean
            error = float(np.sum(qk - 2 * e * sk + nk * e * e + nk * var) / c[-1])
            return edges, nk, error

        lloyd_edges = self.edges.double().cpu().numpy()
        counts = np.diff(c[np.concatenate([[0], np.searchsorted(pos, lloyd_edges, "right"), [len(pos)]])])
        edges, _, error = evaluate(q, counts)  # Lloyd's levels, noise-aware edges: the bar to beat
        cells = lloyd_edges  # the first update starts from Lloyd's cells
        for _ in range(self.max_iter):
            cut = np.concatenate([[0], np.searchsorted(pos, cells, side="right"), [len(pos)]])
            nk, sk = np.diff(c[cut]), np.diff(p1[cut])
            mean, _ = self.moments(q, nk, w)
            full = nk > 0
            q_new = np.where(full, sk / np.where(full, nk, 1.0) - mean, q)
            if np.any(np.diff(q_new) <= 0):
                break
            edges_new, _, error_new = evaluate(q_new, nk)
            if not error_new < error * (1 - self.tol):
                break
            q, edges, error = q_new, edges_new, error_new
            cells = edges
        self.expected_error = error
        self.set_levels(torch.as_tensor(q, dtype=w.dtype, device=w.device), torch.as_tensor(edges).to(w))

    def moments(self, q: np.ndarray, counts: np.ndarray, w: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of the device error at each level, in weight units, by Monte Carlo on a copy of
        the layer's level histogram (every level at least samples // 20 times)."""
        share = counts / max(counts.sum(), 1)
        reps = np.maximum(np.round(share * self.samples), self.samples // 20).astype(np.int64)
        values = torch.as_tensor(np.repeat(q, reps), dtype=torch.float64, device=w.device)
        generator = torch.Generator(device=w.device).manual_seed(self.seed)
        noise = self.noise(values, generator).double()
        index = torch.as_tensor(np.repeat(np.arange(len(q)), reps), device=w.device)
        n = torch.as_tensor(reps, dtype=torch.float64, device=w.device)
        mean = torch.zeros(len(q), dtype=torch.float64, device=w.device).index_add_(0, index, noise) / n
        sq = torch.zeros(len(q), dtype=torch.float64, device=w.device).index_add_(0, index, noise * noise) / n
        return mean.cpu().numpy(), (sq - mean * mean).clamp_min(0).cpu().numpy()


def aware_edges(e: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Edges between read-back means e (sorted) with error variances var: where the expected errors tie."""
    gap = np.diff(e)
    edges = (e[1:] + e[:-1]) / 2 + np.diff(var) / (2 * np.where(gap > 0, gap, np.inf))
    return np.maximum.accumulate(edges)
