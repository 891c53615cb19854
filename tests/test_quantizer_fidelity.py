"""Each quantizer against its reference: Lloyd against kmeans1d's exact optimum on hard data, and every
baseline against its authors' rule, transcribed from their official code and compared on fixed tensors."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cacim_core import QuantConfig, float_weight, quantize_model, quantized_layers, quantizers, refit_check

# --- Lloyd on any data --------------------------------------------------------------------------------------


def hard_data(kind: str, n: int) -> np.ndarray:
    r = np.random.default_rng(3)
    if kind == "cauchy":
        return r.standard_cauchy(n)
    if kind == "student_t2":
        return r.standard_t(2, n)
    if kind == "clustered":  # tight clusters of unequal spacing
        return np.concatenate([r.normal(c, 0.01, n // 5) for c in (-3.0, -1.0, 0.0, 0.5, 4.0)])
    if kind == "duplicated":  # few distinct values, each repeated
        return np.round(r.normal(0, 1, n) * 4) / 4
    if kind == "outliers":  # 0.1% of the weights 50x wider
        x = r.normal(0, 1, n)
        i = r.choice(n, n // 1000, replace=False)
        x[i] = r.normal(0, 50, len(i))
        return x
    raise ValueError(kind)


def optimum_sse(x: np.ndarray, levels: int) -> float:
    kmeans1d = pytest.importorskip("kmeans1d")
    _, centroids = kmeans1d.cluster(x, levels)
    return sse(x, np.array(centroids))


def sse(x: np.ndarray, levels: np.ndarray) -> float:
    levels = np.sort(levels)
    q = levels[np.searchsorted((levels[1:] + levels[:-1]) / 2, x)]
    return float(((x - q) ** 2).sum())


KINDS = ["cauchy", "student_t2", "clustered", "duplicated", "outliers"]


@pytest.mark.parametrize("kind", KINDS)
def test_lloyd_within_0p1_percent_of_the_optimum_exact_atoms(kind):
    """20k weights: exact atoms; every level count 2..16."""
    x = hard_data(kind, 20_000).astype(np.float32).astype(np.float64)  # the values a float32 layer holds
    for levels in range(2, 17):
        q = quantizers.build("lloyd", levels=levels)
        q.fit(torch.from_numpy(x).float())
        ours, best = sse(x, q.levels.double().numpy()), optimum_sse(x, levels)
        assert ours <= best * 1.001 + 1e-12, (kind, levels, ours / best - 1)


@pytest.mark.parametrize("kind", KINDS)
def test_lloyd_within_0p1_percent_of_the_optimum_histogram(kind):
    """300k weights (> 2^16): histogram atoms, equal-width or asinh-spaced."""
    x = hard_data(kind, 300_000).astype(np.float32).astype(np.float64)
    for levels in (2, 3, 5, 8, 16):
        q = quantizers.build("lloyd", levels=levels)
        q.fit(torch.from_numpy(x).float())
        ours, best = sse(x, q.levels.double().numpy()), optimum_sse(x, levels)
        assert ours <= best * 1.001 + 1e-12, (kind, levels, ours / best - 1)


def test_exact_dp_divide_and_conquer_matches_kmeans1d_on_cauchy():
    x = hard_data("cauchy", 3000)
    for levels in (2, 7, 16):
        q = quantizers.build("lloyd_exact", levels=levels)
        q.fit(torch.from_numpy(x))
        assert sse(x, q.levels.numpy()) == pytest.approx(optimum_sse(x, levels), rel=1e-9)


@pytest.mark.parametrize("method", quantizers.names())
def test_fitting_an_empty_tensor_is_a_clear_error(method):
    q = quantizers.build(method, levels=4 if method == "lqnet" else 3)
    with pytest.raises(ValueError, match="empty"):
        q.fit(torch.zeros(0))


# --- Kinds: fitted and learned ------------------------------------------------------------------------------


def test_user_learned_quantizer_gets_gradients_without_flags():
    """README: override quantize(w) for a forward with learned parameters; nothing else."""

    class Scaled(quantizers.LearnedQuantizer):
        def __init__(self, levels: int) -> None:
            super().__init__(levels)
            self.scale = nn.Parameter(torch.tensor(0.5))

        def quantize(self, w: torch.Tensor) -> torch.Tensor:
            return self.scale * torch.sign(w)

    q = Scaled(2)
    w = torch.tensor([-2.0, 0.5, 3.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="not fitted"):
        q(w)
    q.fit(w.detach())
    upstream = torch.tensor([1.0, 2.0, 3.0])
    (q(w) * upstream).sum().backward()
    assert float(q.scale.grad) == pytest.approx(-1.0 + 2.0 + 3.0)  # d/ds sum(g * s * sign(w))
    assert torch.equal(w.grad, upstream)  # identity straight-through to the weights
    assert q.kind == "learned" and not q.refit_by_projection


@pytest.mark.parametrize("method,levels", [(m, 4 if m == "lqnet" else 3) for m in quantizers.names()])
def test_forward_mutates_nothing(method, levels, gaussian_weights):
    q = quantizers.build(method, levels=levels)
    q.fit(gaussian_weights)
    before = {k: v.clone() for k, v in q.state_dict().items()}
    w = gaussian_weights.clone().requires_grad_(True)
    q.train()
    q(w).sum().backward()
    q(w * 1.5)
    after = q.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), method


def test_fitted_user_quantizer_is_refitted_by_default_and_learned_never():
    class MaxAbs(quantizers.Quantizer):
        def fit(self, w: torch.Tensor) -> None:
            m = w.detach().abs().max()
            self.set_levels(torch.stack([-m, torch.zeros_like(m), m]))

    quantizers.register("test_fidelity_maxabs")(MaxAbs)
    for method, refits in (("test_fidelity_maxabs", 1), ("lsq", 0), ("ttq", 0)):
        torch.manual_seed(0)
        model = quantize_model(nn.Sequential(nn.Linear(8, 4)), QuantConfig(method=method, levels=3))
        with torch.no_grad():
            float_weight(model[0]).mul_(torch.linspace(0.1, 3.0, 32).reshape(4, 8))  # the projection moves
        assert refit_check(model, threshold=0.01) == refits, method


def test_refit_check_raises_on_non_finite_weights():
    model = quantize_model(nn.Sequential(nn.Linear(8, 4)), QuantConfig(method="lloyd", levels=3))
    with torch.no_grad():
        float_weight(model[0])[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        refit_check(model)


# --- Baselines against their official code ------------------------------------------------------------------


def fixed_weights(seed: int = 0, shape=(6, 4, 3, 3)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * 0.1


class OfficialAPoT2Bit(torch.autograd.Function):
    """yhhhli/APoT_Quantization CIFAR10/models/quant_layer.py `_pq` with power=False, b=1 (their 2-bit)."""

    @staticmethod
    def forward(ctx, input, alpha):
        input = input / alpha
        input_c = input.clamp(min=-1, max=1)
        sign = input_c.sign()
        input_q = (input_c.abs() * (2**1 - 1)).round().div(2**1 - 1).mul(sign)
        ctx.save_for_backward(input, input_q)
        return input_q.mul(alpha)

    @staticmethod
    def backward(ctx, grad_output):
        grad_input = grad_output.clone()  # grad for weights will not be clipped
        input, input_q = ctx.saved_tensors
        i = (input.abs() > 1.0).float()
        sign = input.sign()
        grad_alpha = (grad_output * (sign * i + (input_q - input) * (1 - i))).sum()
        return grad_input, grad_alpha


def official_apot_imagenet(tensor: torch.Tensor, alpha: torch.Tensor, proj_set: torch.Tensor) -> torch.Tensor:
    """ImageNet/models/quant_layer.py `apot_quantization` (weights, no grad_scale)."""
    data = (tensor / alpha).clamp(-1, 1)
    idxs = (data.abs().view(-1).unsqueeze(0) - proj_set.unsqueeze(1)).abs().min(dim=0)[1]
    xhard = proj_set[idxs].view(data.shape).mul(data.sign())
    return ((xhard - data).detach() + data) * alpha


@pytest.mark.parametrize("levels", [4, 7])
def test_apot_matches_the_official_gradients(levels):
    w0 = fixed_weights()
    q = quantizers.build("apot", levels=levels).double()
    q.fit(w0)
    with torch.no_grad():
        q.alpha.fill_(1.2)  # many standardised weights beyond +-alpha: the clip matters
    upstream = torch.randn(w0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = w0.clone().requires_grad_(True)
    (q(w) * upstream).sum().backward()

    mean, std = w0.mean(), w0.std()  # detached statistics, as the official `.data` ones
    w_ref = w0.clone().requires_grad_(True)
    alpha = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    normalised = (w_ref - mean) / std
    if levels == 4:
        out = OfficialAPoT2Bit.apply(normalised, alpha)
    else:
        mags = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)  # build_power_value(B=2), normalised
        out = official_apot_imagenet(normalised, alpha, mags)
    # Ours is the official (standardised) output scaled back by std: compare through std * out.
    (out * std * upstream).sum().backward()
    torch.testing.assert_close(q(w0), out.detach() * std)
    torch.testing.assert_close(w.grad, w_ref.grad)
    torch.testing.assert_close(q.alpha.grad, alpha.grad)
    if levels == 4:
        assert torch.equal(w.grad, upstream), "2-bit: the weight gradient is not clipped"
    assert q.effective_levels == (3 if levels == 4 else 7)


def test_apot_effective_levels_label_the_real_count():
    assert [quantizers.build("apot", levels=v).effective_levels for v in (3, 4, 7, 8, 15)] == [3, 3, 7, 7, 15]
    assert quantizers.build("lloyd", levels=4).effective_levels == 4


def official_ttq(x: torch.Tensor, wp: torch.Tensor, wn: torch.Tensor, thre: float) -> torch.Tensor:
    """czhu95/ternarynet `tw_ternarize`: the forward, and the gradients of gradient_override_map
    {"Sign": "Identity", "Mul": "Add"}: w1 = sign(x) * stop_gradient(mask_z) with d w1/dx = 1, then
    w1 * mask_np."""
    thre_x = x.detach().abs().max() * thre
    ones = torch.ones_like(x)
    mask_p = torch.where(x > thre_x, ones * wp, ones)
    mask_np = torch.where(x < -thre_x, ones * wn, mask_p)
    mask_z = torch.where((x < thre_x) & (x > -thre_x), torch.zeros_like(x), ones)
    w1 = (torch.sign(x) * mask_z).detach() + (x - x.detach())  # Sign -> Identity, Mul -> Add
    return w1 * mask_np


def test_ttq_matches_the_official_gradients():
    w0 = fixed_weights()
    q = quantizers.build("ttq", levels=3).double()
    q.fit(w0)
    upstream = torch.randn(w0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    w = w0.clone().requires_grad_(True)
    (q(w) * upstream).sum().backward()
    w_ref = w0.clone().requires_grad_(True)
    wp = q.wp.detach().clone().requires_grad_(True)  # raw units, as the official variables
    wn = q.wn.detach().clone().requires_grad_(True)
    out = official_ttq(w_ref, wp, wn, 0.05)
    (out * upstream).sum().backward()
    torch.testing.assert_close(q(w0), out.detach())
    torch.testing.assert_close(w.grad, w_ref.grad)
    torch.testing.assert_close(q.wp.grad, wp.grad)
    torch.testing.assert_close(q.wn.grad, wn.grad)


def test_ttq_still_trains():
    """A linear student of a ternary teacher: TTQ with the official gradients fits it (SGD, 200 steps)."""
    g = torch.Generator().manual_seed(0)
    teacher = (torch.randint(-1, 2, (4, 16), generator=g) * 0.3).float()
    x = torch.randn(512, 16, generator=g)
    y = x @ teacher.T
    torch.manual_seed(0)
    model = quantize_model(nn.Linear(16, 4, bias=False), QuantConfig(method="ttq", levels=3))
    opt = torch.optim.SGD(quantizers.param_groups(model, lr=0.05, weight_decay=0.0), momentum=0.9)
    losses = []
    for _ in range(200):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        refit_check(model)
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


class OfficialHeFanQuant(torch.autograd.Function):
    """elliothe/tern_repo models/tern_threshold_trainable_5.py `_quanFunc` (new-style Function)."""

    @staticmethod
    def forward(ctx, input, mu, delta, alpha):
        ctx.alpha = alpha
        output = torch.zeros_like(input)
        output[input.gt(mu + delta)] = 1
        output[input.lt(mu - delta)] = -1
        return output

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.clone() / ctx.alpha, None, None, None


def official_hefan(weight: torch.Tensor, delta_th: torch.Tensor) -> torch.Tensor:
    """`quanConv2d.forward`'s weight path: hardtanh bounds from `.item()` (constants); the scale
    factor differentiable through mu and std."""
    mu, std = weight.mean(), weight.std()
    th_clip = F.hardtanh(delta_th.abs(), min_val=(-3 * std).item(), max_val=(3 * std).item())
    a = (mu + th_clip - mu) / std
    pdf = torch.exp(-(a.pow(2) / 2)) / math.sqrt(2 * math.pi)
    cdf = (1 + torch.erf(a / math.sqrt(2))) / 2
    scale_factor = mu + std * (pdf / (1 - cdf))
    return OfficialHeFanQuant.apply(weight, mu.item(), th_clip.item(), scale_factor.item()) * scale_factor


@pytest.mark.parametrize("delta", [0.05, 10.0])  # inside the 3-sigma bound, and capped by it
def test_hefan_matches_the_official_gradients(delta):
    w0 = fixed_weights()
    q = quantizers.build("hefan", levels=3, grad_clip=float("inf")).double()  # the clamp is a separate hook
    q.fit(w0)
    with torch.no_grad():
        q.delta.fill_(delta)
    upstream = torch.randn(w0.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w = w0.clone().requires_grad_(True)
    (q(w) * upstream).sum().backward()
    w_ref = w0.clone().requires_grad_(True)
    delta_ref = torch.tensor(delta, dtype=torch.float64, requires_grad=True)
    out = official_hefan(w_ref, delta_ref)
    (out * upstream).sum().backward()
    torch.testing.assert_close(q(w0), out.detach())
    torch.testing.assert_close(w.grad, w_ref.grad)
    torch.testing.assert_close(q.delta.grad, delta_ref.grad)


def official_lqnet_init(shape: tuple[int, ...], nbit: int) -> np.ndarray:
    """microsoft/LQ-Nets `QuantizedWeight`: basis[j][c] = 2^j * 0.6745 * sqrt(2 / n) / 2^(nbit-1),
    n = kernel * kernel * out_channel (TF layout); returned as (out_channel, nbit)."""
    out_channel, _, kernel, _ = shape
    n = kernel * kernel * out_channel
    base = 0.6745 * ((2.0 / n) ** 0.5) / (2 ** (nbit - 1))
    return np.array([[(2**j) * base for j in range(nbit)] for _ in range(out_channel)])


def official_lqnet_step(x: np.ndarray, basis: np.ndarray, nbit: int) -> np.ndarray:
    """One training step's basis update, per output channel: codes of the nearest level, then
    new = (B^T B + 1e-4 I)^-1 (B^T x + 1e-4 basis), basis <- 0.9 basis + 0.1 new."""
    codes = np.array([[1.0 if (i >> j) & 1 else -1.0 for j in range(nbit)] for i in range(2**nbit)])
    out = np.empty_like(basis)
    for c in range(x.shape[0]):
        levels = codes @ basis[c]
        b = codes[np.argmin(np.abs(x[c][:, None] - levels[None, :]), axis=1)]
        new = np.linalg.solve(b.T @ b + 1e-4 * np.eye(nbit), b.T @ x[c] + 1e-4 * basis[c])
        out[c] = 0.9 * basis[c] + 0.1 * new
    return out


@pytest.mark.parametrize("levels", [4, 8])
def test_lqnet_per_channel_init_and_update_match_the_official_code(levels):
    nbit = int(math.log2(levels))
    channel_scales = torch.linspace(0.2, 3.0, 6, dtype=torch.float64)[:, None, None, None]
    w0 = fixed_weights(shape=(6, 4, 3, 3)) * channel_scales  # channels of different scales
    q = quantizers.build("lqnet", levels=levels).double()
    q.fit(w0)
    basis = official_lqnet_init(tuple(w0.shape), nbit)
    np.testing.assert_allclose(q.basis.numpy(), basis, rtol=1e-12)
    x = w0.reshape(6, -1).numpy()
    for _ in range(3):  # three steps; the weights do not move here
        q.after_step(w0)
        basis = official_lqnet_step(x, basis, nbit)
        np.testing.assert_allclose(q.basis.numpy(), basis, rtol=1e-9)
    codes = np.array([[1.0 if (i >> j) & 1 else -1.0 for j in range(nbit)] for i in range(2**nbit)])
    levels_ref = np.sort(basis @ codes.T, axis=1)
    np.testing.assert_allclose(q.levels.numpy(), levels_ref, rtol=1e-9)


def test_lqnet_basis_moves_once_per_step_through_refit_check():
    torch.manual_seed(0)
    model = quantize_model(nn.Sequential(nn.Conv2d(3, 8, 3)), QuantConfig(method="lqnet", levels=4))
    p = quantized_layers(model)[0][2]
    before = p.quantizer.basis.clone()
    model.train()
    model(torch.randn(2, 3, 8, 8))
    assert torch.equal(p.quantizer.basis, before), "the forward must not move the basis"
    refit_check(model)
    assert not torch.equal(p.quantizer.basis, before)


# --- Optimizer groups ---------------------------------------------------------------------------------------


def test_param_groups_honour_each_quantizers_declared_settings():
    torch.manual_seed(0)
    hefan_net = quantize_model(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Linear(8, 4)), QuantConfig("hefan", 3))
    apot_net = quantize_model(nn.Sequential(nn.Conv2d(3, 8, 3)), QuantConfig("apot", 4))
    model = nn.Sequential(hefan_net, apot_net)
    groups = quantizers.param_groups(model, lr=0.1, weight_decay=1e-4)
    settings = {(g["lr"], g["weight_decay"]): {id(p) for p in g["params"]} for g in groups}
    deltas = {id(p.quantizer.delta) for _, _, p in quantized_layers(hefan_net)}
    assert settings[(0.1, 0.0)] == deltas  # He & Fan: threshold without weight decay
    alpha = quantized_layers(apot_net)[0][2].quantizer.alpha
    assert settings[(0.1 * 0.2, 1e-4)] == {id(alpha)}  # APoT: alpha at 2e-2 when the weights run at 0.1
    weights = {id(float_weight(m)) for _, m, _ in quantized_layers(model)}
    assert weights <= settings[(0.1, 1e-4)]
    every = [id(p) for g in groups for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in model.parameters() if p.requires_grad)  # each exactly once
    torch.optim.SGD(groups, lr=0.1)  # a valid torch optimizer
