"""Noise models: the one parser, and every device-model formula pinned on fixed numbers."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from cacim_core import QuantConfig, noisy_evaluate, quantize_model, quantized_layers, weight_noise
from cacim_core.device import ConductanceMap, StuckNoise
from cacim_core.measured import FittedNoise, MeasuredConductances, MeasuredNoise
from cacim_core.noise import NOISES, FunctionNoise, GaussianNoise, NoiseModel, parse, spec_of
from cacim_core.pcm import PCMNoise
from cacim_core.quantizers import build

EXAMPLE = "figures/data/example_conductances.csv"


def quantized(shape=(64, 128), levels: int = 4, seed: int = 0) -> torch.Tensor:
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.05
    q = build("lloyd", levels=levels)
    q.fit(w)
    return q.quantize(w)


# --- parse --------------------------------------------------------------------------------------------------


def test_parse_every_form():
    assert parse(None) is None and parse(0) is None and parse(0.0) is None and parse("0") is None
    assert parse(0.02) == GaussianNoise(0.02) == parse("0.02") == parse("gaussian:delta=0.02")
    assert parse("gaussian:delta=0.02,mean=0.01") == GaussianNoise(0.02, 0.01)
    assert parse({"type": "pcm", "t": 3600}) == PCMNoise(t=3600.0) == parse("pcm:t=3600")
    assert parse("pcm:t=86400,compensation=false") == PCMNoise(t=86400.0, compensation=False)
    assert parse("stuck:gmin=0.01,gmax=0.005") == StuckNoise(0.01, 0.005)
    assert parse("stuck") is None  # no stuck cells asked: no noise
    built = PCMNoise(t=1.0)
    assert parse(built) is built

    def shift(wq, generator):
        return torch.full_like(wq, 0.01)

    assert isinstance(parse(shift), FunctionNoise) and parse(shift).spec.endswith("shift")
    assert spec_of(0.0) == "none" and spec_of(0.05) == "gaussian:delta=0.05"
    assert parse("none") is None and parse(spec_of(None)) is None


@pytest.mark.parametrize(
    "spec",
    [
        "gaussian:delta=0.02,mean=-0.01",
        "pcm",
        "pcm:t=31536000,compensation=false,g_max=20",
        "stuck:gmax=0.02",
        f"measured:path={EXAMPLE}",
        f"fitted:path={EXAMPLE},kind=poly,degree=1",
    ],
)
def test_spec_round_trips(spec):
    model = parse(spec)
    assert model.spec == spec and parse(model.spec).spec == spec
    assert isinstance(model, NoiseModel) and model.active and model.describe()


def test_every_registered_model_has_a_default_or_is_file_based():
    assert set(NOISES.names()) >= {"gaussian", "measured", "fitted", "pcm", "stuck"}


@pytest.mark.parametrize(
    "spec,error,match",
    [
        ("pcmm", KeyError, "registered: dac, fitted, gaussian, irdrop, measured, pcm, slice, stuck"),
        ("pcm:tt=1", ValueError, "parameters: t, compensation"),
        ("pcm:t=soon", ValueError, "t='soon' is not a float"),
        ("pcm:t", ValueError, "not key=value"),
        ({"t": 1}, ValueError, "needs a 'type' key; registered"),
        (-0.1, ValueError, ">= 0"),
        (True, TypeError, "bool"),
        ([0.1], TypeError, "registered models"),
        ("stuck:gmin=0.7,gmax=0.7", ValueError, "sum <= 1"),
    ],
)
def test_parse_errors_name_the_fix(spec, error, match):
    with pytest.raises(error, match=match):
        parse(spec)


def test_quant_config_parses_once_and_keeps_the_spec():
    config = QuantConfig(noise="pcm:t=3600")
    assert config.noise_model() == PCMNoise(t=3600.0) and config.noise_spec == "pcm:t=3600"
    assert QuantConfig(noise=0.02).noise_model() == GaussianNoise(0.02)
    assert QuantConfig().noise_model() is None and QuantConfig().noise_spec == "none"
    with pytest.raises(TypeError, match="noise_fn"):  # the removed alias: noise= takes objects too
        QuantConfig(noise=0.02, noise_fn=GaussianNoise(0.01))
    with pytest.raises(ValueError, match=">= 0"):
        QuantConfig(noise=-0.01)


def test_noise_specs_as_string_and_object_draw_the_same_chip():
    torch.manual_seed(0)
    model = quantize_model(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)), QuantConfig(levels=4)).eval()
    x = torch.randn(4, 8)
    with torch.no_grad():
        with weight_noise(model, GaussianNoise(0.03, 0.01), seed=2):
            as_object = model(x)
        with weight_noise(model, "gaussian:delta=0.03,mean=0.01", seed=2):
            assert torch.equal(model(x), as_object)
    result = noisy_evaluate(model, lambda m: float(m(x).sum()), draws=3, noise="pcm:t=60")
    assert result.n == 3 and len(result.values["value"]) == 3 and result.std["value"] > 0
    assert noisy_evaluate(model, lambda m: float(m(x).sum()), draws=3, noise=0).n == 1
    assert noisy_evaluate(model, lambda m: float(m(x).sum()), draws=3).n == 1  # trained without noise


def test_device_models_train_and_evaluate_through_quant_config():
    torch.manual_seed(0)
    for spec in ("pcm:t=86400", "stuck:gmax=0.05", f"fitted:path={EXAMPLE}", f"measured:path={EXAMPLE}"):
        model = quantize_model(nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 2)), QuantConfig(noise=spec))
        layer = model[0]
        _, _, p = quantized_layers(model)[0]
        assert p.noise.spec == parse(spec).spec
        first, second = layer.weight.detach(), layer.weight.detach()  # training mode: fresh draws
        assert not torch.equal(first, second)
        assert layer.weight.requires_grad  # the noise is additive and detached: STE gradient to the weights
        result = noisy_evaluate(model, lambda m: float(m(torch.ones(1, 16)).sum()), draws=2, seed=5)
        again = noisy_evaluate(model, lambda m: float(m(torch.ones(1, 16)).sum()), draws=2, seed=5)
        assert result.values == again.values and result.n == 2


# --- PCM (Joshi et al. 2020, aihwkit PCMLikeNoiseModel) -----------------------------------------------------


def reference_prog_std(g: float, g_max: float = 25.0) -> float:
    """aihwkit: sig_prog = (c0 + c1 (g/gmax) + c2 (g/gmax)^2) * gmax / 25."""
    x = g / g_max
    return (0.26348 + 1.9650 * x - 1.1731 * x * x) * g_max / 25.0


def reference_drift(g: float, g_max: float = 25.0) -> tuple[float, float]:
    x = max(abs(g / g_max), 1e-7)
    mu = min(max(-0.0155 * math.log(x) + 0.0244, 0.049), 0.1)
    sigma = min(max(-0.0125 * math.log(x) - 0.0059, 0.008), 0.045)
    return mu, sigma


@pytest.mark.parametrize("g", [2.0, 12.5, 25.0])
def test_pcm_programming_std_at_three_conductances(g):
    pcm = PCMNoise(t=0.0, read_scale=0.0)
    assert float(pcm.programming_std(torch.tensor(g, dtype=torch.float64))) == pytest.approx(
        reference_prog_std(g), rel=1e-12
    )
    n = 200_000
    g_prog, _ = pcm.conductances(torch.full((n,), g, dtype=torch.float64), torch.Generator().manual_seed(0))
    sample = float(g_prog.std())
    assert sample == pytest.approx(reference_prog_std(g), rel=3 / math.sqrt(2 * n))
    assert float(g_prog.mean()) == pytest.approx(g, abs=3 * reference_prog_std(g) / math.sqrt(n))
    # g_max rescales the polynomial fitted at 25 uS
    assert float(PCMNoise(g_max=10.0).programming_std(torch.tensor(5.0))) == pytest.approx(
        reference_prog_std(5.0, 10.0), rel=1e-6
    )


@pytest.mark.parametrize("g,t", [(1.0, 3600.0), (10.0, 86400.0), (25.0, 3.15e7)])
def test_pcm_drift_exponent_and_power_law(g, t):
    pcm = PCMNoise(t=t, read_scale=0.0)
    mu, sigma = pcm.drift_stats(torch.tensor(g, dtype=torch.float64))
    assert (float(mu), float(sigma)) == pytest.approx(reference_drift(g), rel=1e-12)
    targets = torch.full((1000,), g, dtype=torch.float64)
    g_prog, g_t = pcm.conductances(targets, torch.Generator().manual_seed(3))
    z = torch.randn((3, 1000), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref_mu, ref_sigma = reference_drift(g)
    nu = (ref_mu + ref_sigma * z[1]).abs()
    torch.testing.assert_close(g_t, (g_prog * ((t + 20.0) / 20.0) ** (-nu)).clamp_min(0.0))
    # drift exponent recovered from the conductances themselves: mean nu ~ mu_nu (folding negligible here)
    recovered = -torch.log(g_t / g_prog) / math.log((t + 20.0) / 20.0)
    assert float(recovered.mean()) == pytest.approx(ref_mu, abs=3 * ref_sigma / math.sqrt(1000))


def test_pcm_same_seed_is_the_same_chip_at_every_time():
    """A seed fixes the programming error and the drift exponents, so a chip can be followed over time."""
    targets = torch.linspace(0, 25, 101, dtype=torch.float64)
    states = [PCMNoise(t=t).conductances(targets, torch.Generator().manual_seed(2)) for t in (1.0, 86400.0)]
    torch.testing.assert_close(states[0][0], states[1][0])
    assert not torch.equal(states[0][1], states[1][1])


def test_pcm_read_noise_formula():
    t = 86400.0
    pcm = PCMNoise(t=t, prog_scale=0.0, drift_scale=0.0)
    g = torch.tensor([0.01, 2.5, 25.0], dtype=torch.float64)
    q_s = [min(0.2, 0.0088 / max(1e-3, (x / 25.0) ** 0.65)) for x in g.tolist()]
    expected = [q * math.sqrt(math.log((t + 20.0 + 250e-9) / (2 * 250e-9))) for q in q_s]
    torch.testing.assert_close(pcm.read_std(g), torch.tensor(expected, dtype=torch.float64))
    n = 100_000
    _, g_t = pcm.conductances(torch.full((n,), 12.5, dtype=torch.float64), torch.Generator().manual_seed(1))
    rel = float(pcm.read_std(torch.tensor(12.5, dtype=torch.float64)))
    assert float(g_t.std() / 12.5) == pytest.approx(rel, rel=3 / math.sqrt(2 * n))


def test_pcm_weight_mapping_without_noise_is_exact():
    wq = quantized()
    pcm = PCMNoise(t=0.0, prog_scale=0.0, read_scale=0.0, compensation=False)
    assert float(pcm(wq, torch.Generator().manual_seed(0)).abs().max()) < 1e-7


def test_pcm_compensation_restores_the_mean_output():
    """aihwkit's GlobalDriftCompensation: alpha = mean|read-out at t0| / mean|read-out at t| on the one-hot
    (identity) calibration batch; after it, that batch's mean |output| equals the freshly programmed one."""
    wq = quantized()
    t = 365 * 86400.0
    compensated, raw = PCMNoise(t=t), PCMNoise(t=t, compensation=False)
    w_comp = wq + compensated(wq, torch.Generator().manual_seed(7))
    w_raw = wq + raw(wq, torch.Generator().manual_seed(7))
    # the same chip right after programming: the programming draw is the first third of the same stream
    ratio = 25.0 / float(wq.abs().max())
    targets = torch.stack([(wq * ratio).clamp(0, 25), (-wq * ratio).clamp(0, 25)])
    g_prog, _ = raw.conductances(targets, torch.Generator().manual_seed(7))
    w_prog = (g_prog[0] - g_prog[1]) / ratio
    eye = torch.eye(wq.shape[1])
    reference = (eye @ w_prog.T).abs().mean()
    torch.testing.assert_close((eye @ w_comp.T).abs().mean(), reference)
    assert float((eye @ w_raw.T).abs().mean() / reference) < 0.6  # a year of drift without compensation
    torch.testing.assert_close(w_comp, w_raw * reference / (eye @ w_raw.T).abs().mean())
    # on a random calibration batch the mean output comes back to within 2% (it was 40% off)
    x = torch.randn(256, wq.shape[1], generator=torch.Generator().manual_seed(0))
    before, after = (x @ w_raw.T).abs().mean() / (x @ w_prog.T).abs().mean(), None
    after = (x @ w_comp.T).abs().mean() / (x @ w_prog.T).abs().mean()
    assert float(before) < 0.6 and float(after) == pytest.approx(1.0, abs=0.02)


# --- stuck cells --------------------------------------------------------------------------------------------


def test_stuck_fractions_within_three_sigma():
    model = StuckNoise(gmin=0.01, gmax=0.005)
    shape = torch.Size((300, 500))
    low, high = model.masks(shape, torch.Generator().manual_seed(0), torch.device("cpu"))
    n = 2 * shape.numel()
    for mask, p in ((low, 0.01), (high, 0.005)):
        assert abs(float(mask.double().mean()) - p) < 3 * math.sqrt(p * (1 - p) / n)
    assert not (low & high).any()


def test_stuck_noise_formula():
    cmap = ConductanceMap()
    model = StuckNoise(gmin=0.3, gmax=0.3)
    wq = torch.tensor([[-0.4, -0.1, 0.0], [0.1, 0.2, 0.4]])
    noise = model(wq, torch.Generator().manual_seed(4))
    u = torch.rand((2, 2, 3), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    g = wq / 0.4 * 15.75
    g_plus = torch.where(g >= 0, 2.1 + g, torch.full_like(g, 2.1))
    g_minus = torch.where(g >= 0, torch.full_like(g, 2.1), 2.1 - g)
    devices = torch.stack([g_plus, g_minus])
    devices = torch.where(u < 0.3, 2.1, torch.where(u < 0.6, 17.85, devices.double())).float()
    expected = (devices[0] - devices[1]) / cmap.scale * 0.4
    torch.testing.assert_close(wq + noise, expected)
    assert (noise != 0).any()


# --- fitted programming noise -------------------------------------------------------------------------------


def write_levels(path, targets, stds, means, n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    columns = [
        t + m + s * torch.randn(n, generator=g, dtype=torch.float64)
        for t, s, m in zip(targets, stds, means, strict=True)
    ]
    lines = [",".join(str(t) for t in targets)]
    lines += [",".join(f"{float(c[i]):.6f}" for c in columns) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return columns


def test_fitted_per_level_and_polynomial(tmp_path):
    targets, stds, means = [-10.0, -2.0, 4.0, 15.0], [0.5, 0.2, 0.3, 0.8], [0.05, 0.0, -0.02, 0.1]
    path = tmp_path / "chip.csv"
    columns = write_levels(path, targets, stds, means)
    per_level = parse(f"fitted:path={path}")
    mean, std = per_level.stats(torch.tensor(targets, dtype=torch.float64))
    torch.testing.assert_close(std, torch.stack([c.std() for c in columns]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        mean, torch.stack([c.mean() - t for c, t in zip(columns, targets, strict=True)]), atol=1e-5, rtol=0
    )
    quality = per_level.quality
    assert quality.r2_std == pytest.approx(1.0) and quality.residual_std == pytest.approx(0.0, abs=1e-9)
    devs = [(d - d.mean()) / d.std() for d in per_level.data.deviations]
    assert quality.ks == pytest.approx(max(scipy.stats.kstest(d.numpy(), "norm").statistic for d in devs))
    assert quality.ks < 1.36 / math.sqrt(400)  # Gaussian data: below the 5% critical value
    line = parse(f"fitted:path={path},kind=poly,degree=1")
    sample = torch.stack([c.std() for c in columns])
    x = torch.tensor(targets, dtype=torch.float64)
    slope, intercept = torch.linalg.lstsq(
        torch.stack([x, torch.ones(4, dtype=torch.float64)], 1), sample
    ).solution
    torch.testing.assert_close(line.stats(x)[1], (slope * x + intercept).clamp_min(0))
    residual = sample - (slope * x + intercept)
    assert line.quality.r2_std == pytest.approx(
        float(1 - (residual**2).sum() / ((sample - sample.mean()) ** 2).sum())
    )
    assert "R^2" in line.describe()
    with pytest.raises(ValueError, match="degree must be in 0..3"):
        FittedNoise(str(path), kind="poly", degree=4)


def test_fitted_noise_draws_the_fitted_std(tmp_path):
    path = tmp_path / "chip.csv"
    write_levels(path, [-15.75, 0.0, 15.75], [0.6, 0.1, 0.6], [0.0, 0.0, 0.0])
    model = parse(f"fitted:path={path}")
    wq = torch.full((200_000,), 0.5)  # G = 15.75 uS, the top level
    noise = model(wq, torch.Generator().manual_seed(0))
    _, std = model.stats(torch.tensor([15.75], dtype=torch.float64))
    assert float(noise.std()) == pytest.approx(float(std) / 15.75 * 0.5, rel=3 / math.sqrt(2 * 200_000))


def test_measured_spec_is_the_measured_model():
    by_spec = parse(f"measured:path={EXAMPLE}")
    direct = MeasuredNoise(MeasuredConductances.from_csv(EXAMPLE))
    wq = quantized()
    torch.testing.assert_close(
        by_spec(wq, torch.Generator().manual_seed(0)), direct(wq, torch.Generator().manual_seed(0))
    )


# --- noise-aware Lloyd --------------------------------------------------------------------------------------

import cacim_core.quantizers.noise_aware  # noqa: E402,F401  (registers lloyd_noise until quantizers/__init__ does)
from cacim_core.quantizers.noise_aware import aware_edges  # noqa: E402


def weights(n: int = 20_000) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(0)) * 0.05


def expected_error(quantizer, noise, w: torch.Tensor, draws: int = 40) -> float:
    """E over device draws of mean (w - (q(w) + n(q(w))))^2, estimated independently of the fit."""
    wq = quantizer.quantize(w)
    generator = torch.Generator().manual_seed(999)
    return sum(float(((w - wq - noise(wq, generator)) ** 2).mean()) for _ in range(draws)) / draws


@pytest.mark.parametrize("levels", [3, 4, 8])
@pytest.mark.parametrize("noise", [None, 0.0, "stuck"])
def test_lloyd_noise_without_noise_is_lloyd(levels, noise):
    w = weights()
    lloyd, aware = build("lloyd", levels=levels), build("lloyd_noise", levels=levels, noise=noise)
    lloyd.fit(w)
    aware.fit(w)
    assert torch.equal(aware.levels, lloyd.levels) and torch.equal(aware.edges, lloyd.edges)


def test_aware_edges_formula():
    e, var = np.array([0.0, 1.0, 3.0]), np.array([0.0, 0.2, 0.2])
    # tie of (w - e_k)^2 + v_k: w = (e_k + e_k+1)/2 + (v_k+1 - v_k) / (2 (e_k+1 - e_k))
    np.testing.assert_allclose(aware_edges(e, var), [0.5 + 0.2 / 2, 2.0])


def test_constant_mean_shift_pre_distorts_every_level():
    w, shift = weights(), 0.01
    exact = {"tol": 0.0, "max_iter": 100_000}  # both run to their fixed point
    lloyd = build("lloyd", levels=4, **exact)
    aware = build("lloyd_noise", levels=4, noise=lambda wq, g: torch.full_like(wq, shift), **exact)
    lloyd.fit(w)
    aware.fit(w)
    torch.testing.assert_close(aware.levels, lloyd.levels - shift, atol=1e-6, rtol=0)
    torch.testing.assert_close(aware.edges, lloyd.edges, atol=1e-6, rtol=0)


@pytest.mark.parametrize("spec", ["pcm:t=31536000,compensation=false", "gaussian:delta=0.02,mean=0.03"])
def test_lloyd_noise_lowers_the_expected_error(spec):
    w, noise = weights(), parse(spec)
    lloyd, aware = build("lloyd", levels=4), build("lloyd_noise", levels=4, noise=spec)
    lloyd.fit(w)
    aware.fit(w)
    base, better = expected_error(lloyd, noise, w), expected_error(aware, noise, w)
    assert better < 0.99 * base, (better, base)
    assert aware.expected_error == pytest.approx(better, rel=0.02)  # the fit's own Monte Carlo estimate


def test_quantize_model_gives_lloyd_noise_the_training_noise():
    model = quantize_model(
        nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 2)), QuantConfig("lloyd_noise", noise="pcm:t=60")
    )
    assert quantized_layers(model)[0][2].quantizer.noise == PCMNoise(t=60.0)
    config = QuantConfig("lloyd_noise", noise=0.02, quantizer_kwargs={"noise": "pcm:t=86400"})
    model = quantize_model(nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 2)), config)
    assert quantized_layers(model)[0][2].quantizer.noise == PCMNoise(t=86400.0)


@pytest.mark.parametrize("delta,mean", [(0.02, 0.0), (0.05, 0.01), (0.0, -0.03)])
def test_gaussian_noise_is_the_papers_formula_bit_for_bit(delta, mean):
    """NATS (eq. 6): (mean + delta * eps) * max|W_q| with eps ~ N(0, 1) from the given generator, as
    written in the paper; any faster implementation must give the same floats."""
    wq = torch.randn(64, 3, 3, 3, generator=torch.Generator().manual_seed(5)) * 0.1
    got = GaussianNoise(delta, mean)(wq, torch.Generator().manual_seed(9))
    eps = torch.randn(wq.shape, generator=torch.Generator().manual_seed(9))
    assert torch.equal(got, (mean + delta * eps) * wq.abs().max())
    assert not wq.requires_grad and got.data_ptr() != wq.data_ptr()
