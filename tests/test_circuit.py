"""Circuit effects: IR drop (first-order model vs the exact nodal solve), the input DAC, bit slicing, and
their composition in noise specs."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from cacim_core import QuantConfig, energy, quantize_model, quantized_layers, weight_noise
from cacim_core.circuit import (
    BitSliced,
    IRDrop,
    first_order_conductance,
    nodal_conductance,
    nodal_solve,
)
from cacim_core.device import DAC, ConductanceMap, calibrate_adc, set_adc
from cacim_core.noise import Composed, GaussianNoise, parse

DEVICE = ConductanceMap()  # the paper's device: 2.1 .. 17.85 uS
WIRES = (0.15, 0.35, 1.0, 2.5)  # ohm per cell: aihwkit's 0.15 and 0.35, and two heavier lines
SIZES = (8, 16, 32, 64)
SECOND_ORDER = 0.2  # measured: error <= 0.18 * drop^2 over the grid below (n up to 128)


def conductances(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(DEVICE.g_min, DEVICE.g_max, (rows, cols))


@pytest.mark.parametrize("size", SIZES)
def test_first_order_within_stated_error_of_nodal_solve(size):
    """max |G_first - G_exact| / g_max <= 0.2 * drop^2, drop = the largest exact attenuation 1 - G_eff/G."""
    g = conductances(size, size, seed=size)
    for r in WIRES:
        exact = nodal_conductance(g, r)
        first = first_order_conductance(torch.from_numpy(g), r).numpy()
        drop = float((1 - exact / g).max())
        error = float(np.abs(first - exact).max() / g.max())
        assert 0 < drop < 0.2
        assert error <= SECOND_ORDER * drop**2, (size, r, drop, error)
        assert error <= 2e-3  # n <= 64, r <= 2.5 ohm: within 0.2% of full scale


@pytest.mark.parametrize(("rows", "r"), [(128, 0.35), (128, 2.5), (256, 1.0)])
def test_first_order_error_on_the_proxy_tiles(rows, r):
    """The robustness sweep's tiles: up to 256 rows (inputs) and 32 columns (outputs) at up to 1 ohm."""
    g = conductances(rows, 32, seed=1)
    exact = nodal_conductance(g, r)
    first = first_order_conductance(torch.from_numpy(g), r).numpy()
    drop = float((1 - exact / g).max())
    assert np.abs(first - exact).max() / g.max() <= SECOND_ORDER * drop**2


def test_zero_resistance_is_the_ideal_mvm():
    g = conductances(12, 9)
    torch.testing.assert_close(
        first_order_conductance(torch.from_numpy(g), 0.0), torch.from_numpy(g), rtol=0, atol=0
    )
    assert np.array_equal(nodal_conductance(g, 0.0), g)
    assert parse("irdrop:r=0") is None  # inactive: no noise model at all
    wq = torch.randn(9, 12, dtype=torch.float64)
    for mode in ("first", "exact"):  # the weight -> conductance -> weight round trip: float precision
        assert IRDrop(0.0, mode)(wq).abs().max() <= 8 * torch.finfo(wq.dtype).eps * wq.abs().max()
    # the solve converges to the ideal MVM, its deviation to the first-order term (second order: 1e-3)
    exact = nodal_conductance(g, 1e-3)
    first = first_order_conductance(torch.from_numpy(g), 1e-3).numpy()
    assert np.abs(exact - g).max() / g.max() < 1e-5
    assert np.abs((g - exact) - (g - first)).max() <= 1e-3 * np.abs(g - exact).max()


def test_nodal_solve_by_hand_and_by_energy():
    """One cell: driver - r - G - r - ground, I = V / (2 r + 1 / G). Any array: the drivers deliver exactly
    the power the cells and wires dissipate (Tellegen), and the outputs are G_eff^T v."""
    r, g1 = 2.0, 10.0  # ohm, uS
    expected = g1 / (1 + 2 * r * g1 * 1e-6)
    assert nodal_conductance(np.array([[g1]]), r)[0, 0] == pytest.approx(expected, rel=1e-12)
    g = conductances(5, 7, seed=3)
    v = np.random.default_rng(4).uniform(-0.2, 0.3, 5)
    vr, vc, out = nodal_solve(g, v, r)
    gw = 1e6 / r
    delivered = np.sum(v * (v - vr[:, 0]) * gw)  # uW
    dissipated = (
        np.sum(g * (vr - vc) ** 2)
        + gw * np.sum(np.diff(vr, axis=1) ** 2)
        + gw * np.sum(np.diff(vc, axis=0) ** 2)
        + gw * np.sum((v - vr[:, 0]) ** 2)
        + gw * np.sum(vc[-1] ** 2)
    )
    assert delivered == pytest.approx(dissipated, rel=1e-9)
    np.testing.assert_allclose(out, nodal_conductance(g, r).T @ v, rtol=1e-9)
    with pytest.raises(ValueError, match="mode=first"):
        nodal_conductance(np.ones((200, 200)), 1.0)


@pytest.mark.parametrize("mode", ["first", "exact"])
def test_irdrop_weights_are_the_arrays_effective_conductances(mode):
    """The noise model on a (out, in) block: (G+_eff - G-_eff)^T / scale * max|W|, each array solved alone."""
    wq = torch.randn(6, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noisy = wq + IRDrop(1.0, mode)(wq)
    w_max = wq.abs().max()
    gp, gm = (t.numpy().T for t in DEVICE.pair(wq, w_max))
    reference = (nodal_conductance(gp, 1.0) - nodal_conductance(gm, 1.0)).T / DEVICE.scale * float(w_max)
    tolerance = 1e-12 if mode == "exact" else 1e-5
    np.testing.assert_allclose(noisy.numpy(), reference, rtol=0, atol=tolerance * float(w_max))
    assert (noisy - wq).abs().max() > 1e-4 * w_max  # it does something


def linear(weight: list[list[float]], bias: list[float]) -> nn.Module:
    layer = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return nn.Sequential(layer)


def test_dac_by_hand_unsigned_and_signed():
    """Calibration at quantile 1 sets r = max|x|; unsigned inputs: 2^b codes on [0, r], signed: 2^(b-1) - 1
    codes each side of 0 on [-r, r]; the quantized layer then sees the coded input."""
    model = quantize_model(
        linear([[1.0, -1.0, 0.5, 0.25], [0.0, 1.0, -1.0, 1.0]], [0.1, -0.2]),
        QuantConfig(method="uniform_maxabs", levels=9, refit_threshold=None),
    )
    w = model[0].weight.detach()  # the 9-level grid holds these weights exactly (steps of 0.25)
    set_adc(model, None, quantile=1.0)
    calibrate_adc(model, [torch.tensor([[0.0, 0.5, 1.0, 2.0]])])  # r = 2, unsigned
    x = torch.tensor([[0.3, 0.9, 1.9, 2.5]])
    coded = torch.tensor([[0.0, 2 / 3, 2.0, 2.0]])  # steps of 2/3: 0.45 -> 0, 1.35 -> 1, 2.85 -> 3, clamp
    model.eval()
    with torch.no_grad(), weight_noise(model, "dac:bits=2"):
        torch.testing.assert_close(model(x), coded @ w.T + torch.tensor([0.1, -0.2]))
    with torch.no_grad(), weight_noise(model, 0.0):
        torch.testing.assert_close(model(x), x @ w.T + torch.tensor([0.1, -0.2]))  # no DAC in the spec
    calibrate_adc(model, [torch.tensor([[-1.5, 0.5, 1.0, 0.0]])])  # r = 1.5, signed
    x = torch.tensor([[-0.2, 0.3, 0.8, -2.0]])
    coded = torch.tensor([[0.0, 0.5, 1.0, -1.5]])  # 3 bits: 3 codes each side, step 0.5
    with torch.no_grad(), weight_noise(model, "dac:bits=3"):
        torch.testing.assert_close(model(x), coded @ w.T + torch.tensor([0.1, -0.2]))


def test_dac_feeds_per_tile_adcs():
    """With tiles and an ADC per tile, the DAC'd layer is the same chip fed the coded inputs, bitwise."""
    torch.manual_seed(0)
    model = quantize_model(nn.Sequential(nn.Linear(12, 5)), QuantConfig(levels=4, adc_bits=6, tile=(3, 4)))
    x = torch.rand(4, 12)
    calibrate_adc(model, [x])
    model.eval()
    with torch.no_grad(), weight_noise(model, "dac:bits=2"):
        coded_by_spec = model(x)
    with torch.no_grad(), weight_noise(model, 0.0):
        assert torch.equal(coded_by_spec, model(model[0].dac(x, 2)))
        assert not torch.equal(coded_by_spec, model(x))


def test_dac_is_straight_through_in_training():
    model = quantize_model(
        linear([[1.0, -0.5], [0.25, 1.0]], [0.0, 0.0]),
        QuantConfig(method="uniform_maxabs", levels=9, noise="dac:bits=2", refit_threshold=None),
    )
    set_adc(model, None, quantile=1.0)
    calibrate_adc(model, [torch.tensor([[0.0, 3.0]])])  # r = 3, step 1
    model.train()
    x = torch.tensor([[0.4, 2.6]], requires_grad=True)
    y = model(x)
    w = model[0].weight.detach()
    torch.testing.assert_close(y.detach(), torch.tensor([[0.0, 3.0]]) @ w.T)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(1, 2) @ w)  # dL/dx = W^T dL/dy: the DAC passes it unchanged
    dac = DAC()
    with pytest.raises(RuntimeError, match="calibrate_adc"):
        dac(torch.ones(2), 4)


def test_a_dac_is_never_silently_off():
    """A "dac:bits=b" training noise gets its DAC without adc_bits (uncalibrated: the forward says so); a
    DAC read-out spec on a model with no DAC is an error naming the fix, not a DAC-free evaluation."""
    trained = quantize_model(nn.Sequential(nn.Linear(4, 2)), QuantConfig(levels=4, noise="dac:bits=4"))
    assert isinstance(trained[0].dac, DAC) and not hasattr(trained[0], "adc")
    with pytest.raises(RuntimeError, match="calibrate_adc"):
        trained(torch.rand(3, 4))
    plain = quantize_model(nn.Sequential(nn.Linear(4, 2)), QuantConfig(levels=4))
    with pytest.raises(ValueError, match="set_adc"), weight_noise(plain, "gaussian:delta=0.02+dac:bits=4"):
        pass


def test_circuit_specs_fail_loudly():
    with pytest.raises(KeyError, match="irdrop"):
        parse("irdorp:r=1")  # an unknown name lists the registered ones
    with pytest.raises(ValueError, match="ohm"):
        parse("irdrop:r=-1")
    with pytest.raises(ValueError, match="mode"):
        parse("irdrop:r=1,mode=second")
    with pytest.raises(ValueError, match="bits"):
        parse("dac:bits=-2")
    with pytest.raises(ValueError, match="DAC twice"):
        parse("dac:bits=2+dac:bits=4")
    with pytest.raises(ValueError, match="slices"):
        parse("slice:slices=0")


def test_composition_is_sequential_and_round_trips():
    spec = "gaussian:delta=0.02+irdrop:r=0.35"
    model = parse(spec)
    assert isinstance(model, Composed) and model.spec == spec and parse(model.spec) == model
    assert parse("gaussian:delta=0+irdrop:r=0") is None
    assert parse("gaussian:delta=0.02+irdrop:r=0") == GaussianNoise(0.02)
    assert parse("dac:bits=4+gaussian:delta=0.02").input_bits == 4
    assert parse("pcm:t=1e+16").t == 1e16  # a "+" inside a number is not a composition
    wq = torch.randn(8, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    first = GaussianNoise(0.02)(wq, torch.Generator().manual_seed(5))
    by_hand = first + IRDrop(0.35)(wq + first)
    torch.testing.assert_close(model(wq, torch.Generator().manual_seed(5)), by_hand)


def on_grid(full_scale: int, n: int, seed: int = 0) -> torch.Tensor:
    """Weights max|W| * n / C for integer n in -C..C, both ends present (so max|W| is the grid's top)."""
    codes = torch.randint(-full_scale, full_scale + 1, (n,), generator=torch.Generator().manual_seed(seed))
    codes[:2] = torch.tensor([full_scale, -full_scale])
    return codes.double() * 0.37 / full_scale


@pytest.mark.parametrize(("slices", "bits"), [(3, 1), (2, 2), (2, 3)])
def test_bit_slices_recombine_exactly(slices, bits):
    sliced = BitSliced(slices, bits)
    wq = on_grid(sliced.full_scale, 4000)
    sign, digits, unit = sliced.digits(wq)
    assert digits.min() >= 0 and digits.max() <= 2**bits - 1
    hand = sum(digits[k] * 2 ** (bits * k) for k in range(slices))  # base-B digits, slice 0 least significant
    torch.testing.assert_close(sign * hand * unit, wq, rtol=1e-12, atol=0)
    torch.testing.assert_close(wq + sliced(wq), wq, rtol=1e-12, atol=0)


def test_eight_level_uniform_weights_on_three_binary_slices():
    """An 8-level uniform_maxabs layer, levels (+-1, 3, 5, 7) / 7 * max|W|: exact on 3 slices of 1 bit."""
    layer = nn.Linear(64, 32)
    model = quantize_model(nn.Sequential(layer), QuantConfig(method="uniform_maxabs", levels=8))
    wq = quantized_layers(model)[0][1].weight.detach()
    assert len(wq.unique()) == 8
    error = BitSliced(3, 1)(wq).abs().max()
    assert error <= 4 * torch.finfo(wq.dtype).eps * wq.abs().max()  # the float32 levels' own rounding


@pytest.mark.parametrize(("slices", "bits", "delta"), [(2, 2, 0.05), (3, 1, 0.1)])
def test_bit_slice_noise_variance_is_the_weighted_sum(slices, bits, delta):
    """Per-slice Gaussian noise delta (B - 1) in digit units: total variance (u delta (B-1))^2 sum B^(2k)."""
    sliced = BitSliced(slices, bits, f"gaussian:delta={delta}")
    wq = on_grid(sliced.full_scale, 200_000, seed=2)
    noise = sliced(wq, torch.Generator().manual_seed(7))
    base, unit = 2**bits, 0.37 / sliced.full_scale
    variance = (unit * delta * (base - 1)) ** 2 * sum(base ** (2 * k) for k in range(slices))
    n = wq.numel()
    sample = float(noise.var())
    assert abs(sample - variance) <= 5 * variance * math.sqrt(2 / (n - 1))  # 5 standard errors
    assert abs(float(noise.mean())) <= 5 * math.sqrt(variance / n)
    spec = "slice:slices=3,bits=2,device=pcm:t=3600;compensation=false"
    assert parse(spec).spec == spec and parse(spec)._device.compensation is False


def test_energy_counts_by_hand_for_a_conv_and_a_linear_layer():
    """Conv 3->4 (3x3, pad 1) on 5x5, then Linear 100->6, on (4 outputs, 16 inputs) tiles, 2-bit inputs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(100, 6))
    quantize_model(model, QuantConfig(levels=3, tile=(4, 16), adc_bits=4))
    conv, fc = energy.count(model, torch.zeros(1, 3, 5, 5), input_bits=2)
    assert (conv.inputs, conv.outputs, conv.positions, conv.adc_bits) == (27, 4, 25, 4)
    assert conv.tiles == ((4, 16), (4, 11))  # 27 = 16 + 11 inputs, one block of 4 outputs
    assert conv.macs_per_tile == [4 * 16 * 25, 4 * 11 * 25] and conv.macs == 27 * 4 * 25
    assert conv.dac_bits == 25 * 2 * (16 + 11)  # every tile's rows, every position, every input bit
    assert conv.adc_conversions == 25 * 2 * (4 + 4)  # every tile's columns, every position and bit
    assert (fc.inputs, fc.outputs, fc.positions) == (100, 6, 1)
    assert len(fc.tiles) == 2 * 7 and fc.macs == 600  # outputs 4 + 2, inputs 6 x 16 + 4
    assert fc.dac_bits == 2 * (2 * 100) and fc.adc_conversions == 2 * (7 * 4 + 7 * 2)


def test_energy_of_one_column_by_hand():
    """Weights (0.5, -1) on the paper's device: G+ = (9.975, 2.1), G- = (2.1, 17.85) uS, one 4-bit column."""
    model = quantize_model(
        linear([[0.5, -1.0]], [0.0]), QuantConfig(method="uniform_maxabs", levels=5, refit_threshold=None)
    )
    result = energy.estimate(model, torch.zeros(1, 2), input_bits=3, adc_bits=4)
    resistance = 1 / ((9.975 + 2.1 + 2.1 + 17.85) * 1e-6)
    power = 0.7213e-6 * 4 + 3.3041e-6 + 0.084273 * math.exp(-2.311 * math.log10(resistance))
    assert result.energy == pytest.approx(3 * power * 5e-9, rel=1e-9)  # 3 input bits, (4 + 1) ns each
    assert result.latency == pytest.approx(3 * 5e-9, rel=1e-12)
    assert "nJ" in result.line() and all(c.source.startswith("DNN+NeuroSim") for c in energy.COSTS.values())
    with pytest.raises(ValueError, match="adc_bits"):
        energy.estimate(model, torch.zeros(1, 2), input_bits=3)


def test_adc_and_dac_forwards_read_no_device_value():
    """A converter forward must not sync the host on a GPU: no `bool(tensor)` / `.item()` per layer. On CPU
    the same calls dispatch `aten::is_nonzero` / `aten::_local_scalar_dense`, counted here. A checkpoint's
    ADC is calibrated on load; calibrate_adc starts over from uncalibrated."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Syncs(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func._schema.name in ("aten::is_nonzero", "aten::_local_scalar_dense", "aten::item"):
                Syncs.count += 1
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model = quantize_model(nn.Sequential(nn.Linear(8, 4)), QuantConfig(levels=4, adc_bits=6))
    x = torch.randn(5, 8)
    calibrate_adc(model, [x])
    model.eval()
    with torch.no_grad(), weight_noise(model, "dac:bits=4"):
        model(x)  # the weight cache fills outside the counted forward
        with Syncs():
            out = model(x)
    assert Syncs.count == 0 and model[0].dac.signed  # randn inputs: the signed grid
    fresh = quantize_model(nn.Sequential(nn.Linear(8, 4)), QuantConfig(levels=4, adc_bits=6))
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    assert fresh[0].adc.calibrated and not fresh[0].dac.calibrated  # the DAC's range is not saved
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))
        with pytest.raises(RuntimeError, match="calibrate_adc"), weight_noise(fresh, "dac:bits=4"):
            fresh(x)
    assert out.shape == (5, 4)
