import itertools

import numpy as np
import pytest
import torch
from conftest import METHOD_LEVELS

from cacim_core import quantizers
from cacim_core.quantizers.lloyd import exact_levels
from cacim_core.training import projection


def samples(kind: str, n: int = 3000) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if kind == "gaussian":
        return torch.randn(n, generator=g)
    if kind == "laplace":
        u = torch.rand(n, generator=g) - 0.5
        return -torch.sign(u) * torch.log1p(-2 * u.abs())
    if kind == "student_t":
        z, chi = torch.randn(n, generator=g), torch.randn(3, n, generator=g).pow(2).sum(0)
        return z / torch.sqrt(chi / 3)
    if kind == "skewed":  # asymmetric: a Gaussian bulk with a long one-sided tail (like a last FC layer)
        return (
            torch.randn(n, generator=g)
            - (torch.rand(n, generator=g) < 0.3) * torch.randn(n, generator=g).exp()
        )
    raise ValueError(kind)


@pytest.mark.parametrize("method,levels", METHOD_LEVELS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_quantizer_properties(method, levels, dtype, gaussian_weights):
    w = gaussian_weights.to(dtype)
    q = quantizers.build(method, levels=levels).to(dtype).eval()
    q.fit(w)
    wq = q(w)
    assert wq.dtype == dtype and wq.shape == w.shape
    # One row of levels per output channel for per-channel quantizers (LQ-Net), else one row.
    rows = q.levels if q.levels.dim() == 2 else q.levels[None]
    edges = q.edges if q.edges.dim() == 2 else q.edges[None]
    assert rows.shape[1] <= levels and edges.shape[1] == rows.shape[1] - 1
    assert torch.equal(rows, rows.sort(dim=1).values)
    for row, out in zip(rows, wq.reshape(len(rows), -1), strict=True):
        assert torch.isin(out, row).all(), "outputs must be drawn from q.levels"
        assert len(out.unique()) <= levels
        assert torch.equal(quantizers.nearest(out, row), out)  # a fixed point of its own level set
    if q.idempotent:
        torch.testing.assert_close(q(wq), wq, rtol=1e-6, atol=0)  # exact but for float rounding of a mean


@pytest.mark.parametrize("method,levels", METHOD_LEVELS)
def test_straight_through_gradient(method, levels, gaussian_weights):
    w = gaussian_weights.clone().requires_grad_(True)
    q = quantizers.build(method, levels=levels)
    q.fit(w.detach())
    target = torch.randn_like(w)
    (q(w) * target).sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
    inside = w.detach().abs() < w.detach().abs().max() / 2
    assert (w.grad[inside] != 0).float().mean() > 0.9, "STE must pass gradients to the float weights"


@pytest.mark.parametrize("method", quantizers.names())
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_rejected(method, bad, gaussian_weights):
    w = gaussian_weights.clone()
    w[0, 0, 0, 0] = bad
    q = quantizers.build(method, levels=4 if method == "lqnet" else 3)
    with pytest.raises(ValueError, match="NaN or inf"):
        q.fit(w)


def test_registry_errors_and_plugins():
    with pytest.raises(KeyError, match="registered: .*lloyd"):
        quantizers.build("nope", levels=3)

    @quantizers.register("test_sign")
    class Sign(quantizers.Quantizer):
        def fit(self, w):
            m = w.abs().mean()
            self.set_levels(torch.stack([-m, m]))

    q = quantizers.build("test_sign", levels=2)
    q.fit(torch.tensor([-2.0, 1.0, 3.0]))
    assert q(torch.tensor([-2.0, 1.0, 3.0])).tolist() == [-2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="taken"):
        quantizers.register("lloyd")(Sign)


def brute_force_optimum(x: np.ndarray, levels: int) -> float:
    xs, best = np.sort(x), np.inf
    for cuts in itertools.combinations(range(1, len(xs)), levels - 1):
        cells = np.split(xs, cuts)
        best = min(best, sum(((c - c.mean()) ** 2).sum() for c in cells))
    return best / len(xs)


def test_exact_dp_matches_brute_force():
    xs = np.sort(samples("skewed", 11).numpy().astype(np.float64))  # atoms are sorted
    for levels in (2, 3, 4):
        q = exact_levels(np.ones_like(xs), xs, xs * xs, levels)
        dist = np.min((xs[:, None] - q[None, :]) ** 2, axis=1).mean()
        assert dist == pytest.approx(brute_force_optimum(xs, levels), rel=1e-9)


def test_exact_dp_matches_kmeans1d():
    kmeans1d = pytest.importorskip("kmeans1d")
    x = samples("laplace", 2000)
    for levels in (3, 8):
        q = quantizers.build("lloyd_exact", levels=levels)
        q.fit(x)
        _, centroids = kmeans1d.cluster(x.double().tolist(), levels)
        np.testing.assert_allclose(q.levels.numpy(), np.sort(centroids), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["gaussian", "laplace", "student_t", "skewed"])
@pytest.mark.parametrize("levels", [3, 4, 8])
def test_lloyd_near_exact_optimum_and_beats_fixed_grids(kind, levels):
    x = samples(kind)
    errors = {}
    for method in ("lloyd", "lloyd_exact", "uniform", "log2"):
        q = quantizers.build(method, levels=levels)
        q.fit(x)
        errors[method] = quantizers.distortion(x, q(x))
    assert errors["lloyd"] <= 1.001 * errors["lloyd_exact"]
    assert errors["lloyd"] <= errors["uniform"] and errors["lloyd"] <= errors["log2"]


def test_lloyd_histogram_path_on_large_layer():
    kmeans1d = pytest.importorskip("kmeans1d")
    x = samples("student_t", 300_000)  # > 2**16 weights: binned atoms
    for levels in (3, 8):
        q = quantizers.build("lloyd", levels=levels)
        q.fit(x)
        _, centroids = kmeans1d.cluster(x.double().tolist(), levels)
        c = torch.tensor(sorted(centroids), dtype=torch.float64)
        exact = quantizers.distortion(x, quantizers.nearest(x.double(), c))
        assert quantizers.distortion(x, q(x)) <= 1.001 * exact


def test_lloyd_projection_ratio_is_one_after_fit(gaussian_weights):
    for levels in (3, 4, 8):
        q = quantizers.build("lloyd", levels=levels)
        q.fit(gaussian_weights)
        assert projection(q(gaussian_weights), gaussian_weights) == pytest.approx(1.0, abs=1e-4)
        assert projection(q(gaussian_weights), gaussian_weights, "cosine") < 1.0


def test_lloyd_fewer_distinct_values_than_levels():
    x = torch.tensor([0.5, -1.0, 0.5, -1.0, 2.0])
    q = quantizers.build("lloyd", levels=8)
    q.fit(x)
    assert q.levels.tolist() == [-1.0, 0.5, 2.0]
    assert torch.equal(q(x), x)
    q = quantizers.build("lloyd", levels=3)
    q.fit(torch.full((100_000,), 0.25))  # large constant layer takes the exact path too
    assert q.levels.tolist() == [0.25]


def test_lloyd_refit_on_quantized_weights_is_stable(gaussian_weights):
    q = quantizers.build("lloyd", levels=4)
    q.fit(gaussian_weights)
    levels = q.levels.clone()
    q.fit(q(gaussian_weights))
    torch.testing.assert_close(q.levels, levels)


def test_grid_shapes():
    from cacim_core.quantizers.grid import log2_grid, uniform_grid

    assert uniform_grid(3).tolist() == [-1, 0, 1]
    assert uniform_grid(4).tolist() == [-1.5, -0.5, 0.5, 1.5]
    assert log2_grid(5).tolist() == [-1, -0.5, 0, 0.5, 1]
    assert log2_grid(4).tolist() == [-1, -0.5, 0.5, 1]


def test_uniform_scale_minimises_mse():
    x = samples("gaussian", 5000)
    q = quantizers.build("uniform", levels=4)
    q.fit(x)
    base = quantizers.distortion(x, q(x))
    step = float(q.levels[1] - q.levels[0])
    for factor in (0.9, 1.1):
        grid = torch.tensor([-1.5, -0.5, 0.5, 1.5], dtype=x.dtype) * step * factor
        assert base <= quantizers.distortion(x, quantizers.nearest(x, grid))


def test_ternary_baselines_follow_their_papers(gaussian_weights):
    w = gaussian_weights
    twn = quantizers.build("twn", levels=3)
    twn.fit(w)
    delta = 0.7 * w.abs().mean()
    assert twn.levels[2] == pytest.approx(float(w.abs()[w.abs() > delta].mean()), rel=1e-6)
    ttq = quantizers.build("ttq", levels=3)
    ttq.fit(w)
    assert ttq.edges[1] == pytest.approx(0.05 * float(w.abs().max()), rel=1e-6)
    hefan = quantizers.build("hefan", levels=3)
    hefan.fit(w)
    from scipy.stats import truncnorm

    mu, sigma, cut = float(w.mean()), float(w.std()), float(hefan.delta.detach())
    alpha = truncnorm.mean(cut / sigma, np.inf, loc=mu, scale=sigma)
    assert float(hefan.levels[2]) == pytest.approx(alpha, rel=1e-4)


def test_hefan_threshold_gradient_is_clamped_as_the_official_script(gaussian_weights):
    """A large loss on the level (a classifier wanting bigger logits) moves delta by at most grad_clip."""
    hefan = quantizers.build("hefan", levels=3)
    hefan.fit(gaussian_weights)
    (1e3 * hefan(gaussian_weights).abs().sum()).backward()
    assert float(hefan.delta.grad.abs()) == pytest.approx(1e-3)
    free = quantizers.build("hefan", levels=3, grad_clip=float("inf"))
    free.fit(gaussian_weights)
    (1e3 * free(gaussian_weights).abs().sum()).backward()
    assert float(free.delta.grad.abs()) > 1e-2
    for _ in range(3):
        hefan(gaussian_weights)
    assert not hefan.delta._backward_hooks  # per-forward hooks live on the graph, not on the parameter


def test_apot_and_lqnet_level_sets():
    from cacim_core.quantizers.learned import apot_magnitudes

    assert apot_magnitudes(3).tolist() == [0, 0.25, 0.5, 1.0]
    assert len(apot_magnitudes(4)) == 8
    q = quantizers.build("lqnet", levels=4, init="qem")
    x = samples("gaussian", 4000)
    q.fit(x)
    b = q.basis[0]  # a 1-D tensor is one channel
    assert torch.allclose(
        q.levels[0], torch.stack([-b[0] - b[1], b[0] - b[1], -b[0] + b[1], b[0] + b[1]]).sort()[0]
    )
    assert quantizers.distortion(x, q(x)) < quantizers.distortion(x, x.sign() * x.abs().mean())


def test_readme_plugin_example_runs():
    """The README's 'Adding a quantizer' snippet, verbatim, must keep working."""
    text = open("README.md").read()
    snippet = text.split("### Adding a quantizer")[1].split("```python")[1].split("```")[0]
    snippet = snippet.replace('register("mine")', 'register("readme_mine")')
    scope: dict = {}
    exec(snippet, scope)
    q = quantizers.build("readme_mine", levels=3)
    w = torch.tensor([-2.0, 0.1, 1.0])
    q.fit(w)
    m = float(w.abs().mean())
    assert torch.equal(q(w), torch.tensor([-m, 0.0, m]))


def test_readme_learned_example_trains_its_parameter():
    """The README's learned-quantizer snippet: its parameter gets a gradient, w the straight-through one."""
    text = open("README.md").read()
    snippet = text.split("### Adding a quantizer")[1].split("```python")[2].split("```")[0]
    scope: dict = {"torch": torch, "quantizers": quantizers}
    exec(snippet.replace('register("mine_learned")', 'register("readme_mine_learned")'), scope)
    q = quantizers.build("readme_mine_learned", levels=3)
    w = torch.tensor([-2.0, 0.1, 1.0], requires_grad=True)
    q.fit(w.detach())
    assert float(q.s) == pytest.approx(float(w.abs().mean()))
    weights = torch.tensor([1.0, 2.0, 3.0])
    (q(w) * weights).sum().backward()  # d/ds = sum of weights * sign(w) over |w| > s/2 = -1 + 3
    assert float(q.s.grad) == pytest.approx(2.0) and torch.equal(w.grad, weights)


def test_quantize_equals_the_bucketize_lookup_ties_included():
    """`Quantizer.quantize` resolves up to 8 levels by a chain of selects: every weight must get exactly
    the level `levels[bucketize(w, edges)]` gives (ties on an edge go to the lower cell), for every fitted
    quantizer with 1-D levels, at 2..16 levels."""
    import torch

    from cacim_core import quantizers as q

    torch.manual_seed(0)
    checked = 0
    for name in q.names():
        for levels in (2, 3, 4, 5, 8, 9, 16):
            try:
                quantizer = q.build(name, levels)
            except ValueError:  # a level count the method does not have (APoT, ternary ones)
                continue
            if quantizer.kind != "fitted":
                continue
            quantizer.fit(torch.randn(64, 80) * 0.1)
            lv, edges = quantizer.levels, quantizer.edges
            if lv.dim() != 1:  # per-channel (LQ-Net) has its own quantize
                continue
            up, down = edges.nextafter(torch.tensor(1.0)), edges.nextafter(torch.tensor(-1.0))
            w = torch.cat([torch.randn(4000) * 0.1, edges, up, down, torch.tensor([-9.0, 9.0])])
            assert torch.equal(quantizer.quantize(w), lv[torch.bucketize(w, edges)]), (name, levels)
            checked += 1
    assert checked >= 30
