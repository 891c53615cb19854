"""Circuit effects of a crossbar tile, as device models for `noise.parse` specs: IR drop, DAC, bit slicing.

- `irdrop:r=0.35` (ohm of wire between neighbouring cells, row and column lines alike): the effective
  weights of a tile whose lines are resistive. A crossbar of ohmic cells with ideal row drivers and
  virtual-ground column outputs is a linear network, so its outputs are exactly G_eff^T v for an effective
  conductance matrix that depends on G and the wire only, never on the input: IR drop is a deterministic,
  input-independent weight error. `mode="first"` (default) is the first-order model, `mode="exact"` the
  nodal solve (`nodal_conductance`, its reference; small tiles only).
- `dac:bits=4`: the layer's input (activation) digitised by a b-bit DAC over a calibrated range; acts through
  the converter hooks of `cacim_core.device` (see `DACInput`).
- `slice:slices=3,bits=1,device=gaussian:delta=0.02`: a weight spread over `slices` differential device
  pairs of `bits` magnitude bits each, each with its own device noise (`BitSliced`).
Compose with "+", applied left to right: "gaussian:delta=0.02+irdrop:r=0.35" programs noisy conductances,
then reads them through resistive lines.

Geometry (both IR-drop models): a tile's (out, in) weight block maps to crossbars with M = in rows (inputs)
and N = out columns (outputs), one crossbar for G+ and one for G- (`device.ConductanceMap.pair`, the other
device of a pair at g_ref; subtraction outside the array, CrossSim's "non-interleaved" array). Row i is
driven at its column-0 end, column j is held at virtual ground below its row M-1; every cell sits one wire
segment r further along its row than the previous one and one segment further from the output along its
column, the driver and the ground each one segment away from the nearest cell (CrossSim's convention:
`simulator/circuits/array/NonInterleaved_InputSource.py`, sandialabs/cross-sim commit 0a2eb1e, cumulative
sums of the line currents times Rp from the input end and from the output end).

First-order model (the O(r) term of the exact solution): with all row nodes at v and all column nodes at 0
(r = 0), the row wire segment k of row i carries sum_{j' >= k} G_ij' v_i and column segment k of column j
carries sum_{i' <= k} G_i'j v_i'; the drops they cause change each cell's voltage, so to first order
G_eff = G (1 - r_row row_load - r_col col_load), used in the form that stays positive (the same O(r) term,
measured 5-7x closer to the solve than the linear form on 64..128-row tiles):

    G_eff[i, j] = G[i, j] / (1 + r_row * row_load[i, j] + r_col * col_load[i, j])
    row_load[i, j] = sum_j' G[i, j'] (min(j, j') + 1)          (the row's current through cell j's path)
    col_load[i, j] = sum_i' G[i', j] (M - max(i, i'))         (the column's, to the virtual ground)

each cell's current attenuated by the line resistance seen from its row and its column. Measured against the
solve (tests/test_circuit.py): max |G_first - G_exact| <= 0.2 * drop^2 of g_max, drop = max(1 - G_exact/G).
IBM aihwkit's `ir_drop` (`src/rpucuda/rpu_forward_backward_pass.cpp`, `applyIrDrop`, commit 4545f11) models
the output line only, mean-field: y_i -= ir_drop * c(a_i) * sum_j w_ij x_j (1 - (1 - j/n)^2), with a_i = n
sum_j |w_ij||x_j| / ir_drop_g_ratio and c(a) = 0.5 a - 0.2 a^2 + 0.05 a^3 (a fit beyond first order); for
uniform conductances col_load above is G M^2 (1 - x^2) / 2 at a fraction x of the way to the output, the same
quadratic profile, and c's linear term 0.5 a its coefficient. Here every cell keeps its own row and column
loads. aihwkit's defaults give the realistic wire: 0.35 ohm per cell (`ir_drop_g_ratio = 1 / 0.35 / 5e-6`,
`io.py`; example 34) and 0.15 ohm (`IOParametersIRDropT.ir_drop_rs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch import Tensor

from .device import ConductanceMap
from .noise import NoiseModel, parse, register

US_PER_SIEMENS = 1e6  # conductances are in uS, wire resistances in ohm
EXACT_MAX_NODES = 2 * 128 * 128  # the nodal solve is for small tiles: a 128 x 128 array solves in ~1 s


def first_order_conductance(g: Tensor, r_row: float, r_col: float | None = None) -> Tensor:
    """G_eff of an (M inputs, N outputs) crossbar, in uS, to first order in the wire resistance (ohm)."""
    r_col = r_row if r_col is None else r_col
    # row_load[i, j] = sum_{k <= j} sum_{j' >= k} G[i, j']: suffix sums along the row, then prefix sums
    suffix = g.flip(1).cumsum(1).flip(1)
    row_load = suffix.cumsum(1)
    # col_load[i, j] = sum_{k >= i} sum_{i' <= k} G[i', j]: prefix sums down the column, then suffix sums
    col_load = g.cumsum(0).flip(0).cumsum(0).flip(0)
    return g / (1 + (r_row * row_load + r_col * col_load) / US_PER_SIEMENS)


def _nodal_system(g: np.ndarray, r_row: float, r_col: float) -> scipy.sparse.csc_matrix:
    """Kirchhoff's current law at the 2 M N nodes (row nodes first, then column nodes), in uS."""
    m, n = g.shape
    gr, gc = US_PER_SIEMENS / r_row, US_PER_SIEMENS / r_col
    row = np.arange(m * n).reshape(m, n)
    col = row + m * n
    i_idx, j_idx, vals = [], [], []

    def link(a: np.ndarray, b: np.ndarray, cond: np.ndarray | float) -> None:  # a conductance between nodes
        cond = np.broadcast_to(cond, a.shape).ravel()
        a, b = a.ravel(), b.ravel()
        i_idx.extend([a, b, a, b])
        j_idx.extend([a, b, b, a])
        vals.extend([cond, cond, -cond, -cond])

    def ground(a: np.ndarray, cond: float) -> None:  # to a fixed potential (driver or virtual ground)
        i_idx.append(a.ravel())
        j_idx.append(a.ravel())
        vals.append(np.full(a.size, cond))

    link(row, col, g)  # the cells
    link(row[:, :-1], row[:, 1:], gr)  # row wire between neighbouring cells
    link(col[:-1, :], col[1:, :], gc)  # column wire
    ground(row[:, 0], gr)  # the driver's segment
    ground(col[-1, :], gc)  # the segment to the virtual ground
    shape = (2 * m * n, 2 * m * n)
    a = scipy.sparse.coo_matrix((np.concatenate(vals), (np.concatenate(i_idx), np.concatenate(j_idx))), shape)
    return a.tocsc()


def _check_exact(g: np.ndarray, r_row: float, r_col: float) -> None:
    if g.ndim != 2 or 2 * g.size > EXACT_MAX_NODES:
        raise ValueError(
            f"nodal solve of a {g.shape} crossbar: at most {EXACT_MAX_NODES // 2} cells; "
            "use irdrop mode=first or a smaller tile"
        )
    if min(r_row, r_col) < 0:
        raise ValueError(f"wire resistance must be >= 0 ohm, got {r_row}, {r_col}")


def nodal_solve(
    g: np.ndarray, v: np.ndarray, r_row: float, r_col: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row node voltages, column node voltages, output currents in uA) for inputs v (volts), exactly."""
    r_col = r_row if r_col is None else r_col
    g = np.asarray(g, dtype=np.float64)
    _check_exact(g, r_row, r_col)
    m, n = g.shape
    if r_row == 0 or r_col == 0:
        raise ValueError("nodal_solve needs r > 0 on both lines (r = 0 is the ideal MVM: g.T @ v)")
    b = np.zeros(2 * m * n)
    b[np.arange(m) * n] = US_PER_SIEMENS / r_row * np.asarray(v, dtype=np.float64)
    x = scipy.sparse.linalg.spsolve(_nodal_system(g, r_row, r_col), b)
    vr, vc = x[: m * n].reshape(m, n), x[m * n :].reshape(m, n)
    return vr, vc, US_PER_SIEMENS / r_col * vc[-1]


def nodal_conductance(g: np.ndarray, r_row: float, r_col: float | None = None) -> np.ndarray:
    """Exact G_eff (uS) of an (M, N) crossbar: output currents for a unit voltage on each row in turn."""
    r_col = r_row if r_col is None else r_col
    g = np.asarray(g, dtype=np.float64)
    _check_exact(g, r_row, r_col)
    if r_row == 0 and r_col == 0:
        return g.copy()  # every row node at its driver, every column node at ground: the ideal MVM
    if r_row == 0 or r_col == 0:
        raise ValueError("nodal_conductance: give both lines a resistance > 0, or both 0")
    m, n = g.shape
    b = np.zeros((2 * m * n, m))
    b[np.arange(m) * n, np.arange(m)] = US_PER_SIEMENS / r_row
    x = scipy.sparse.linalg.splu(_nodal_system(g, r_row, r_col)).solve(b)
    return US_PER_SIEMENS / r_col * x[m * n + (m - 1) * n : m * n + m * n].T


@register("irdrop")
@dataclass(frozen=True)
class IRDrop(NoiseModel):
    """IR drop on each crossbar tile: weights -> (G+, G-) -> each array's G_eff -> weights (module docstring).

    r: wire resistance between neighbouring cells, ohm, rows and columns; mode: "first" (first-order model)
    or "exact" (nodal solve, tiles of at most 128 x 128). Deterministic: no generator draw. A 1-D vector (a
    bias column, `bias_range_match`) is left unchanged.
    """

    r: float = 0.0
    mode: str = "first"
    device: ConductanceMap = field(default=ConductanceMap(), metadata={"spec": False})

    def __post_init__(self) -> None:
        if not (math.isfinite(self.r) and self.r >= 0):
            raise ValueError(
                f"irdrop: r is the wire resistance per cell in ohm and must be >= 0, got {self.r}"
            )
        if self.mode not in ("first", "exact"):
            raise ValueError(f"irdrop: mode must be 'first' or 'exact', got {self.mode!r}")

    @property
    def active(self) -> bool:
        return self.r > 0

    def effective(self, g: Tensor) -> Tensor:
        """G_eff (uS) of one (inputs, outputs) crossbar."""
        if self.mode == "first":
            return first_order_conductance(g, self.r)
        out = nodal_conductance(g.detach().cpu().double().numpy(), self.r)
        return torch.from_numpy(out).to(g)

    @torch.no_grad()
    def __call__(self, wq: Tensor, generator: torch.Generator | None = None) -> Tensor:
        w = wq.detach()
        w_max = w.abs().max()
        if w.dim() < 2 or w_max == 0:
            return torch.zeros_like(w)
        matrix = w.reshape(w.shape[0], -1).double()  # (out, in * k * k): the crossbar is its transpose
        g_plus, g_minus = self.device.pair(matrix, w_max.double())
        diff = self.effective(g_plus.T) - self.effective(g_minus.T)
        return (self.device.to_weight(diff.T, 0.0, w_max.double()).to(w) - matrix.to(w)).reshape(w.shape)


@register("dac")
@dataclass(frozen=True)
class DACInput(NoiseModel):
    """A b-bit input DAC on every analog layer: no weight error, `input_bits` read by the converter hooks.

    The layer's input x is replaced by its nearest code of a uniform grid over the calibrated range
    (`cacim_core.device.DAC`: [0, r] with 2^b - 1 steps when the calibration inputs were all >= 0, else
    2^(b-1) - 1 codes each side of 0 on [-r, r]), straight-through in training. The range comes from
    `device.calibrate_adc`; a layer needs the converter hooks (`adc_bits`, or `device.set_adc(model, bits)`,
    also with bits=None) for the DAC to act.
    """

    bits: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.bits, int) and self.bits >= 1) and self.bits != 0:
            raise ValueError(f"dac: bits must be an int >= 1 (e.g. 'dac:bits=4'), got {self.bits!r}")

    @property
    def active(self) -> bool:
        return self.bits > 0

    @property
    def input_bits(self) -> int:
        return self.bits

    def __call__(self, wq: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.zeros_like(wq)


@register("slice")
@dataclass(frozen=True)
class BitSliced(NoiseModel):
    """Bit slicing (CrossSim's balanced bit-sliced core, `simulator/cores/bitsliced_core.py`, commit 0a2eb1e):
    a weight on `slices` differential device pairs of `bits` magnitude bits each, sign-magnitude.

    With B = 2^bits and C = B^slices - 1, a weight w becomes the integer code n = round(|w| / u), u = max|W|/
    C, written in base B: n = sum_k d_k B^k, digit d_k in 0..B-1 on slice k (k = 0 least significant), each
    slice a differential pair holding sign(w) d_k. The output of slice k is weighted by B^k (digitally, after
    the array) and the sum scaled by u, so without noise w = u sign(w) sum_k d_k B^k: exact for weights on the
    grid u * integer (uniform_maxabs at 2C + 1 levels, or 8-level uniform_maxabs (+-1, 3, 5, 7)/7 on 3 binary
    slices); other level sets are rounded onto that grid, and the rounding is part of the error. `device` is
    each slice's own device noise (a spec, ';' between its parameters: "pcm:t=3600;compensation=false"),
    drawn per slice with the slice's full scale B - 1 as its max|W|, so the total noise is u sum_k B^k n_k:
    for Gaussian delta, variance (u delta (B - 1))^2 sum_k B^(2k).
    """

    slices: int = 2
    bits: int = 1
    device: str = "none"

    def __post_init__(self) -> None:
        if not (
            isinstance(self.slices, int)
            and self.slices >= 1
            and isinstance(self.bits, int)
            and self.bits >= 1
        ):
            raise ValueError(f"slice: slices and bits must be ints >= 1, got {self.slices}, {self.bits}")
        object.__setattr__(self, "_device", parse(self.device.replace(";", ",")))

    @property
    def base(self) -> int:
        return 2**self.bits

    @property
    def full_scale(self) -> int:
        """C = B^slices - 1, the largest magnitude code."""
        return self.base**self.slices - 1

    def digits(self, wq: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(sign, digits (slices, *shape) least significant first, unit u) of the weights."""
        w = wq.detach()
        unit = w.abs().max() / self.full_scale
        code = torch.round(w.abs() / unit.clamp_min(torch.finfo(w.dtype).tiny)).to(torch.int64)
        powers = self.base ** torch.arange(self.slices, device=w.device)
        digits = (code.unsqueeze(0) // powers.reshape(-1, *[1] * w.dim())) % self.base
        return torch.sign(w), digits.to(w.dtype), unit

    def combine(self, slice_weights: Tensor, unit: Tensor) -> Tensor:
        """u * sum_k B^k w_k over the leading slice dimension."""
        powers = (self.base ** torch.arange(self.slices, device=slice_weights.device)).to(slice_weights)
        return unit * torch.tensordot(powers, slice_weights, dims=1)

    @torch.no_grad()
    def __call__(self, wq: Tensor, generator: torch.Generator | None = None) -> Tensor:
        w = wq.detach()
        if w.abs().max() == 0:
            return torch.zeros_like(w)
        sign, digits, unit = self.digits(w)
        slices = sign * digits
        device = self._device  # type: ignore[attr-defined]
        if device is not None:
            full = torch.full((1,), float(self.base - 1), dtype=w.dtype, device=w.device)
            noisy = []
            for k in range(self.slices):  # each slice is its own array: its own draw, at the device's scale
                flat = torch.cat([slices[k].flatten(), full])
                noisy.append(flat + device(flat, generator))
            slices = torch.stack([n[:-1].reshape(w.shape) for n in noisy])
        return self.combine(slices, unit) - w

    def describe(self) -> str:
        c = self.full_scale
        return f"{self.slices} slices of {self.bits} bit(s) (C = {c}), per-slice noise {self.device}"
