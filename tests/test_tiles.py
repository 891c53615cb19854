"""Crossbar tiles: per-tile noise scale, per-tile ADCs on partial sums; one tile == no tiling, bitwise."""

import pytest
import torch
from torch import nn

from cacim_core import QuantConfig, float_weight, quantize_model, quantized_layers, weight_noise
from cacim_core.device import ADC, calibrate_adc, set_adc, set_tile, tiled_forward, tiled_noise
from cacim_core.evaluate import chip_key
from cacim_core.noise import GaussianNoise


def net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, 10),
    )


def inputs(n: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("noise", ["gaussian:delta=0.05,mean=0.01", "pcm:t=86400", "stuck:gmax=0.05"])
@pytest.mark.parametrize("adc_bits", [None, 4])
def test_one_tile_equals_no_tiling_bitwise(noise, adc_bits):
    x = inputs()
    outputs = []
    for tile in (None, (10_000, 10_000), (12, 72), (4, 16)):  # (12, 72): exactly the largest layer's matrix
        model = quantize_model(net(), QuantConfig(levels=4, noise=noise, adc_bits=adc_bits, tile=tile))
        if adc_bits is not None:
            calibrate_adc(model, [inputs(seed=2)])
        model.eval()
        with torch.no_grad(), weight_noise(model, seed=3):
            outputs.append(model(x))
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])
    assert not torch.allclose(outputs[0], outputs[3])  # real tiles: other scales, other ADC ranges


def test_noise_scale_is_per_tile():
    """Gaussian noise on a tiled matrix: each tile's noise is delta * max|W_q| of that tile."""
    wq = torch.arange(1, 31, dtype=torch.float32).reshape(5, 6) / 30
    noise = GaussianNoise(0.1)
    tiled = tiled_noise(noise, wq, (2, 4), torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    for r0, r1 in ((0, 2), (2, 4), (4, 5)):  # row blocks, column blocks inside (the documented order)
        for c0, c1 in ((0, 4), (4, 6)):
            block = wq[r0:r1, c0:c1]
            eps = torch.randn(block.shape, generator=generator)
            torch.testing.assert_close(tiled[r0:r1, c0:c1], 0.1 * eps * block.abs().max())
    assert not torch.equal(tiled, noise(wq, torch.Generator().manual_seed(0)))


def test_conv_weight_tiles_follow_the_in_k_k_view():
    model = quantize_model(net(), QuantConfig(levels=4, noise=0.1, tile=(5, 20)))
    _, layer, p = quantized_layers(model)[1]  # Conv2d(8, 12, 3): a 12 x 72 matrix
    assert p.tile == (5, 20)
    model.eval()
    with torch.no_grad(), weight_noise(model, seed=0):
        noisy = layer.weight.detach()
    clean = p.clean(float_weight(layer))
    generator = torch.Generator().manual_seed(chip_key(0, 0, 1))  # weight_noise: seed 0, draw 0, layer 1
    expected = tiled_noise(GaussianNoise(0.1), clean, (5, 20), generator)
    torch.testing.assert_close(noisy - clean, expected)


def identity_adcs(n: int) -> list[nn.Module]:
    return [nn.Identity() for _ in range(n)]


@pytest.mark.parametrize("tile", [(3, 5), (4, 9), (12, 18), (1, 1)])
def test_partial_sums_add_up_to_the_layer_output(tile):
    """Without ADC rounding the tiled forward is the layer's forward (conv blocks may cut a kernel)."""
    torch.manual_seed(0)
    conv, linear = nn.Conv2d(8, 12, 3, padding=1, stride=2), nn.Linear(20, 7)
    for layer, x in ((conv, torch.randn(2, 8, 7, 7)), (linear, torch.randn(4, 20))):
        rows = -(-layer.weight.shape[0] // tile[0])
        cols = -(-layer.weight[0].numel() // tile[1])
        with torch.no_grad():
            out = tiled_forward(layer, x, tile, identity_adcs(rows * cols))
            torch.testing.assert_close(out, layer(x), atol=1e-5, rtol=1e-5)


def reference_adc(y: torch.Tensor, r: float, bits: int) -> torch.Tensor:
    steps = 2 ** (bits - 1) - 1
    return torch.round(y.clamp(-r, r) / r * steps) * r / steps


def test_each_tile_has_its_own_adc_range():
    """Linear 20 -> 6, tiles of (4, 8): column blocks 0..8, 8..16, 16..20; row blocks 0..4, 4..6."""
    torch.manual_seed(0)
    model = quantize_model(nn.Sequential(nn.Linear(20, 6)), QuantConfig(levels=8, adc_bits=3, tile=(4, 8)))
    layer = model[0]
    adcs = list(layer.tile_adcs)
    assert len(adcs) == 6 and all(isinstance(a, ADC) for a in adcs)
    calib = torch.randn(64, 20, generator=torch.Generator().manual_seed(1))
    calibrate_adc(model, [calib])
    x = torch.randn(5, 20, generator=torch.Generator().manual_seed(2))
    w, b = layer.weight.detach(), layer.bias.detach()
    expected = torch.zeros(5, 6)
    cols, rows = [(0, 8), (8, 16), (16, 20)], [(0, 4), (4, 6)]

    def part(z: torch.Tensor, rows: tuple[int, int], cols: tuple[int, int], last: bool) -> torch.Tensor:
        (r0, r1), (c0, c1) = rows, cols
        return z[:, c0:c1] @ w[r0:r1, c0:c1].T + (b[r0:r1] if last else 0)  # bias: on the last column block

    for j, col in enumerate(cols):
        for i, row in enumerate(rows):
            r = torch.quantile(part(calib, row, col, j == 2).abs().flatten(), 0.999)
            assert float(adcs[j * 2 + i].range) == pytest.approx(float(r), rel=1e-5)
            expected[:, row[0] : row[1]] += reference_adc(part(x, row, col, j == 2), float(r), 3)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), expected, atol=1e-5, rtol=1e-5)


def test_set_adc_keeps_the_tiles_and_errors():
    model = quantize_model(net(), QuantConfig(levels=4, tile=(4, 16)))
    assert set_adc(model, 4) == 3
    assert len(model[2].tile_adcs) == 3 * 5 and not hasattr(model[2], "adc")
    set_adc(model, None)
    assert "tile_adcs" not in model[2]._modules
    with pytest.raises(ValueError, match="tile must be"):
        QuantConfig(tile=(0, 8))
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 2, 1))
    with pytest.raises(ValueError, match="groups=1"):
        quantize_model(grouped, QuantConfig(tile=(2, 2), adc_bits=4))


@pytest.mark.parametrize("adc_bits", [None, 4])
def test_set_tile_on_a_quantized_model_equals_quantizing_tiled(adc_bits):
    """Re-tiling a model after quantization (what the robustness sweep does) is the model quantized with
    that tile: same noise draws, same ADC partial sums; back to None is the untiled model again."""
    x = inputs()

    def noisy_output(model: nn.Module) -> torch.Tensor:
        if adc_bits is not None:
            calibrate_adc(model, [inputs(seed=2)])
        model.eval()
        with torch.no_grad(), weight_noise(model, seed=3):
            return model(x)

    config = QuantConfig(levels=4, noise=0.05, adc_bits=adc_bits)
    retiled = quantize_model(net(), config)
    untiled = noisy_output(retiled)
    for tile in ((4, 16), (12, 72), None):
        assert set_tile(retiled, tile) == 3
        direct = noisy_output(
            quantize_model(net(), QuantConfig(levels=4, noise=0.05, adc_bits=adc_bits, tile=tile))
        )
        assert torch.equal(noisy_output(retiled), direct)
        assert torch.equal(direct, untiled) == (tile != (4, 16))
    if adc_bits is not None:
        set_tile(retiled, (4, 16))
        assert len(retiled[2].tile_adcs) == 3 * 5
        with pytest.raises(RuntimeError, match="not calibrated"):
            retiled.eval()(x)
    with pytest.raises(ValueError, match="tile must be"):
        set_tile(retiled, (4, 0))
