"""Beyond the paper: HA-SGD, device mean shift, ADC read-out, bias range matching, LG-LSQ, BN folding."""

import math

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from cacim_core import QuantConfig, export, float_weight, quantize_model, quantized_layers, weight_noise
from cacim_core.device import ADC, calibrate_adc, set_adc
from cacim_core.quantizers import build, distortion
from cacim_core.quantizers.learned import arctan_soft_round
from cacim_core.training import ha_sgd_backward, refit_check


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))


def batch(n: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=g), torch.randint(0, 4, (n,), generator=g)


def grads(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


# --- HA-SGD -------------------------------------------------------------------------------------------------


def test_ha_sgd_with_one_sample_is_plain_nats():
    x, y = batch()
    model = quantize_model(mlp(), QuantConfig(method="lloyd", levels=4, noise=0.05))
    torch.manual_seed(7)
    F.cross_entropy(model(x), y).backward()
    plain = grads(model)
    model.zero_grad()
    torch.manual_seed(7)
    loss = ha_sgd_backward(model, lambda m: F.cross_entropy(m(x), y), samples=1)
    assert torch.equal(grads(model), plain)
    torch.manual_seed(7)
    with torch.no_grad():
        assert loss == pytest.approx(float(F.cross_entropy(model(x), y)))


def test_ha_sgd_gradient_variance_shrinks_as_one_over_samples():
    x, y = batch()
    model = quantize_model(mlp(), QuantConfig(method="lloyd", levels=4, noise=0.1))
    torch.manual_seed(0)

    def estimates(samples: int, repeats: int = 40) -> torch.Tensor:
        out = []
        for _ in range(repeats):
            model.zero_grad()
            ha_sgd_backward(model, lambda m: F.cross_entropy(m(x), y), samples=samples)
            out.append(grads(model))
        return torch.stack(out).double()

    one, four = estimates(1), estimates(4)
    ratio = float(one.var(0).sum() / four.var(0).sum())
    assert 3.0 < ratio < 5.2, ratio  # 4 in expectation; sum over ~1000 coordinates, 40 repeats each
    assert torch.allclose(one.mean(0), four.mean(0), atol=4 * float(one.std(0).max()) / math.sqrt(40))


def test_ha_sgd_errors():
    model = quantize_model(mlp(), QuantConfig(noise=0.05))
    with pytest.raises(ValueError, match="samples"):
        ha_sgd_backward(model, lambda m: m(batch()[0]).sum(), samples=0)
    with pytest.raises(ValueError, match=r"model.train\(\)"):
        ha_sgd_backward(model.eval(), lambda m: m(batch()[0]).sum(), samples=2)


# --- device mean shift --------------------------------------------------------------------------------------


def test_mean_shift_in_training_and_at_test():
    model = quantize_model(
        mlp(), QuantConfig(levels=4, noise="gaussian:delta=0.02,mean=0.05", first_last="8bit")
    )
    layer = model[2]
    _, _, p = quantized_layers(model)[1]
    clean = p.clean(float_weight(layer))
    top = float(clean.abs().max())
    shifts = torch.stack([layer.weight.detach() - clean for _ in range(100)])
    assert float(shifts.mean()) == pytest.approx(0.05 * top, rel=0.02)
    assert float(shifts.std()) == pytest.approx(0.02 * top, rel=0.05)
    model.eval()
    with torch.no_grad(), weight_noise(model, "gaussian:delta=0,mean=-0.03"):
        torch.testing.assert_close(layer.weight - clean, torch.full_like(clean, -0.03 * top))
        assert torch.equal(model[0].weight, quantized_layers(model)[0][2].clean(float_weight(model[0])))
    with pytest.raises(TypeError, match="mean"):  # the removed legacy sugar: noise= is the one way
        with weight_noise(model, mean=0.1):
            pass


def _regression_error(noise_mean: float, eval_mean: float) -> float:
    """A linear student of a linear teacher, trained knowing (or not) the device's mean shift."""
    g = torch.Generator().manual_seed(0)
    x, teacher = torch.randn(256, 16, generator=g), torch.randn(16, 4, generator=g)
    y = x @ teacher
    torch.manual_seed(0)
    config = QuantConfig(levels=16, noise={"type": "gaussian", "delta": 0.01, "mean": noise_mean})
    model = quantize_model(nn.Linear(16, 4, bias=False), config)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(150):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
        refit_check(model)
    model.eval()
    with torch.no_grad(), weight_noise(model, f"gaussian:delta=0.01,mean={eval_mean}", seed=1):
        return float(F.mse_loss(model(x), y))


def test_mean_shift_as_prior_knowledge_compensates_the_drift():
    aware, unaware = _regression_error(0.1, 0.1), _regression_error(0.0, 0.1)
    assert aware < 0.6 * unaware, (aware, unaware)
    assert _regression_error(0.0, 0.0) < _regression_error(0.1, 0.0)


# --- ADC ----------------------------------------------------------------------------------------------------


def test_adc_codes_range_and_gradient():
    adc = ADC(bits=3, quantile=0.9)
    y = torch.linspace(-2, 2, 401, requires_grad=True)
    with pytest.raises(RuntimeError, match="calibrate_adc"):
        adc(y)
    adc.observing = True
    adc(y.detach())
    adc(2 * y.detach())
    adc.observing = False
    expected = (torch.quantile(y.detach().abs(), 0.9) + torch.quantile(2 * y.detach().abs(), 0.9)) / 2
    assert float(adc.range) == pytest.approx(float(expected))
    out = adc(2 * y)  # beyond the range: saturates at the outer codes
    step = float(adc.range) / 3
    torch.testing.assert_close(out.detach().unique(), torch.arange(-3, 4) * step)
    inside = 2 * y.detach().abs() < adc.range
    assert float((out - 2 * y).detach()[inside].abs().max()) <= step / 2 + 1e-6
    out.sum().backward()
    assert torch.equal(y.grad, torch.full_like(y, 2.0))


def test_adc_on_quantized_layers_calibrated_and_monotone_in_bits():
    x = batch(128)[0]
    model = quantize_model(mlp(), QuantConfig(levels=4, adc_bits=4, first_last="8bit")).eval()
    assert [hasattr(m, "adc") for m in (model[0], model[2], model[4])] == [False, True, False]
    with pytest.raises(RuntimeError, match="calibrate_adc"):
        model(x)
    assert calibrate_adc(model, [x[:64], x[64:]]) == 2
    seen = []
    model[2].register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model(x)
    assert len(seen[-1].unique()) <= 15
    set_adc(model, None)
    with torch.no_grad():
        reference = model(x)
    errors = []
    for bits in (2, 4, 8):
        assert set_adc(model, bits) == 1
        calibrate_adc(model, [x])
        with torch.no_grad():
            errors.append(float((model(x) - reference).abs().mean()))
    assert errors[0] > errors[1] > errors[2] > 0
    assert errors[2] < 0.01 * float(reference.abs().mean())
    with pytest.raises(ValueError, match="adc_bits"):
        QuantConfig(adc_bits=1)
    with pytest.raises(ValueError, match="no batches"):
        calibrate_adc(model, [])


# --- bias range matching ------------------------------------------------------------------------------------


def test_bias_column_shares_the_weights_levels_and_keeps_the_function():
    x = batch()[0]
    torch.manual_seed(3)
    layer = nn.Linear(12, 8)
    with torch.no_grad():
        layer.bias.mul_(5)  # a bias range unlike the weights'
    reference = layer(x).detach()
    fine = quantize_model(
        nn.Sequential(layer), QuantConfig(method="uniform", levels=4095, bias_range_match=True)
    ).eval()
    with torch.no_grad():
        assert float((fine(x) - reference).abs().max()) < 1e-3 * float(reference.abs().max())

    torch.manual_seed(3)
    model = quantize_model(nn.Sequential(nn.Linear(12, 8)), QuantConfig(levels=3, bias_range_match=True))
    layer, (_, _, p) = model[0], quantized_layers(model)[0]
    with torch.no_grad():
        layer.parametrizations.bias.original.mul_(5)
    model.eval()
    column = layer.parametrizations.bias[0]
    w, b = float_weight(layer).detach(), layer.parametrizations.bias.original.detach()
    s = float(column.scale)
    assert s == pytest.approx(float(b.abs().max() / (w.abs().max() * 5)))  # fixed at conversion
    assert torch.isin(layer.bias / column.scale, p.quantizer.levels).all()  # the weights' levels
    augmented = torch.cat([layer.weight, (layer.bias / column.scale)[:, None]], 1)
    inputs = torch.cat([x, torch.full((len(x), 1), s)], 1)
    torch.testing.assert_close(model(x), inputs @ augmented.T)  # [W b/s][x; s]


def test_bias_column_noise_relative_to_the_array_and_export():
    torch.manual_seed(4)
    model = quantize_model(
        nn.Sequential(nn.Linear(64, 32)), QuantConfig(levels=4, noise=0.05, bias_range_match=True)
    )
    layer, (_, _, p) = model[0], quantized_layers(model)[0]
    column = layer.parametrizations.bias[0]
    clean_b = column.clean(layer.parametrizations.bias.original)
    top = float(p.clean(float_weight(layer)).abs().max())
    draws = torch.stack([layer.bias.detach() - clean_b for _ in range(300)]) / column.scale
    assert float(draws.std()) == pytest.approx(0.05 * top, rel=0.06)
    export(model)
    assert not hasattr(layer, "parametrizations")
    assert torch.equal(layer.bias.detach(), clean_b)


# --- LG-LSQ -------------------------------------------------------------------------------------------------


def test_arctan_soft_round_shape():
    x = torch.linspace(-3, 3, 6001, requires_grad=True)
    soft = arctan_soft_round(x, 4.0)
    soft.sum().backward()
    assert (x.grad > 0).all(), "ASR never has a zero gradient"
    ints = torch.arange(-3.0, 4.0)
    torch.testing.assert_close(arctan_soft_round(ints + 0.5, 4.0), ints + 0.5)  # fixed at the thresholds
    torch.testing.assert_close(arctan_soft_round(ints, 4.0), ints)
    assert float(x.grad.mean()) == pytest.approx(1.0, abs=0.01)  # STE's slope on average
    torch.testing.assert_close(arctan_soft_round(x, 1e-4), x, atol=1e-4, rtol=0)
    away = torch.tensor([-2.7, -1.2, 0.3, 0.45, 1.55, 2.9])  # not at a rounding threshold
    torch.testing.assert_close(arctan_soft_round(away, 1e4), torch.round(away), atol=1e-3, rtol=0)


@pytest.mark.parametrize("levels", [3, 4, 8])
def test_lglsq_step_gradient_and_mde_fit(levels, gaussian_weights):
    w = gaussian_weights.clone().requires_grad_(True)
    q = build("lglsq", levels=levels)
    q.fit(w.detach())
    lsq = build("lsq", levels=levels)
    lsq.fit(w.detach())
    assert distortion(w.detach(), q(w).detach()) <= distortion(w.detach(), lsq(w).detach())
    q(w).sum().backward()
    s, half, offset = float(q.step.detach()), (levels - 1) / 2, 0.0 if levels % 2 else 0.5
    x = (w.detach() / s).clamp(-half - 0.5, half + 0.5) - offset
    xs = x.clone().requires_grad_(True)
    arctan_soft_round(xs, q.sharpness).sum().backward()
    slope = xs.grad
    inside = (w.detach() / s).abs() < half + 0.5
    hard = torch.round(x).clamp(-half - offset, half - offset) + offset
    expected = torch.where(inside, hard - (x + offset) * slope, hard)
    g = 1 / math.sqrt(w.numel() * half)
    assert float(q.step.grad) == pytest.approx(float(expected.sum()) * g, rel=1e-4)
    torch.testing.assert_close(w.grad, torch.where(inside, slope, torch.zeros_like(slope)))


# --- batch-norm folding -------------------------------------------------------------------------------------


def randomise_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def test_fold_batchnorm_keeps_the_eval_function():
    torch.manual_seed(0)
    model = randomise_bn(torchvision.models.resnet18(num_classes=10))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    from cacim_core.convert import fold_batchnorm

    folded = fold_batchnorm(model)
    assert len(folded) == 20 and ("layer2.0.downsample.0", "layer2.0.downsample.1") in folded
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)


def test_fold_batchnorm_only_direct_pairs_and_via_config():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(8),
        nn.ReLU(),  # pool before BN: not foldable
        nn.Conv2d(8, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
        nn.BatchNorm1d(10),
    )
    model = randomise_bn(net)
    x = torch.randn(4, 3, 14, 14)
    with torch.no_grad():
        before = model(x)
    quantize_model(model, QuantConfig(method="uniform", levels=4095, fold_bn=True, first_last="fp"))
    kinds = [type(m).__name__ for m in model]
    assert kinds[2] == "BatchNorm2d" and kinds[5] == "Identity" and kinds[9] == "Identity"
    assert [n for n, _, _ in quantized_layers(model)] == ["4"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-3, atol=1e-3)
