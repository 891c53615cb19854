"""cacim_core inside someone else's training script: copies (deepcopy, an EMA's AveragedModel) survive an
export of the other, float checkpoints load into a quantized model (and are fitted), and a checkpoint of
another method or level count is refused by name instead of loading silently."""

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from cacim_core import QuantConfig, export, float_weight, load_float, quantize_model, quantized_layers


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)
    ).eval()


X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("copier", ["deepcopy", "ema"])
def test_export_of_a_copy_leaves_the_original_working(copier):
    """It used to raise AttributeError ('ParametrizedConv2d' has no 'weight') at the original's next
    forward: the copies shared the parametrized class, and export edited it."""
    model = quantize_model(_net(), QuantConfig(levels=3)).eval()
    before = model(X)
    other = copy.deepcopy(model) if copier == "deepcopy" else AveragedModel(model).module
    exported = export(other)
    assert torch.allclose(exported(X), before, atol=1e-6)
    assert torch.equal(model(X), before) and len(quantized_layers(model)) == 2
    assert not quantized_layers(exported)


def test_a_float_checkpoint_loads_into_a_quantized_model_and_is_fitted():
    """load_float puts the float weights behind the parametrizations and fits each quantizer on them: the
    model equals quantize_model of the float model itself (load_state_dict(strict=False) left every
    quantized layer at its random init)."""
    trained = _net(seed=0)
    config = QuantConfig(method="lloyd", levels=4)
    expected = quantize_model(copy.deepcopy(trained), config).eval()
    model = quantize_model(_net(seed=7), config).eval()  # the script builds its model from another init
    assert not torch.allclose(model(X), expected(X))
    load_float(model, trained.state_dict())
    for (_, mine, p), (_, ref, q) in zip(quantized_layers(model), quantized_layers(expected), strict=True):
        assert torch.equal(float_weight(mine), float_weight(ref))
        assert torch.equal(p.quantizer.levels, q.quantizer.levels) and int(p.refits) == 0
    assert torch.allclose(model(X), expected(X), atol=1e-6)
    with pytest.raises(ValueError, match="this one is quantized: use load_state_dict"):
        load_float(model, expected.state_dict())


def test_a_checkpoint_of_another_method_or_level_count_is_refused_by_name():
    lloyd4 = quantize_model(_net(), QuantConfig(method="lloyd", levels=4))
    uniform4 = quantize_model(_net(), QuantConfig(method="uniform", levels=4))  # same buffer shapes
    with pytest.raises(ValueError, match="quantized with lloyd at 4 levels, this model with uniform at 4"):
        uniform4.load_state_dict(lloyd4.state_dict())
    same = quantize_model(_net(seed=3), QuantConfig(method="lloyd", levels=4)).eval()
    same.load_state_dict(lloyd4.state_dict())
    assert torch.equal(same(X), lloyd4.eval()(X))
    # a checkpoint saved before layers were stamped with their method still loads, strictly
    old = lloyd4.state_dict()
    old._metadata = {k: {kk: vv for kk, vv in m.items() if kk != "cacim"} for k, m in old._metadata.items()}
    quantize_model(_net(seed=3), QuantConfig(method="lloyd", levels=4)).load_state_dict(old)


class _Mixed(nn.Module):
    """Layer types a researcher's model holds beside Conv/Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.rnn = nn.LSTM(8, 8, batch_first=True)
        self.up = nn.ConvTranspose1d(8, 8, 3)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        x, _ = self.attn(x, x, x)
        x, _ = self.rnn(x)
        x = self.up(x.transpose(1, 2)).transpose(1, 2)
        return self.head(x).mean(1)


def test_layers_left_float_are_named_and_the_share_is_counted(caplog):
    """MultiheadAttention's in_proj, LSTM and ConvTranspose used to stay float without a word: quantize_model
    warns with their names (an Embedding is quantized), and summary() gives every layer's status and the
    quantized share of the weight-matrix entries (computed here from the modules' own parameters)."""
    import logging

    from cacim_core import coverage, summary

    model = _Mixed()
    with caplog.at_level(logging.INFO, logger="cacim_core"):
        quantize_model(model, QuantConfig(levels=3))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and all(n in warned[0] for n in ("attn", "rnn", "up"))
    assert "embed" not in warned[0]
    rows = {r["name"]: r for r in coverage(model)}
    assert rows["head"]["status"] == "quantized (analog)" and rows["attn.out_proj"]["status"].startswith(
        "quant"
    )
    assert rows["embed"]["status"] == "quantized (analog)" and rows["attn"]["type"] == "MultiheadAttention"
    assert rows["head"]["type"] == "Linear"
    assert {r["name"]: r["type"] for r in coverage(copy.deepcopy(model))}["head"] == "Linear"
    matrices = [p for n, p in _Mixed().named_parameters() if p.dim() >= 2]
    quantized = sum(
        m.parametrizations.weight.original.numel() for m in (model.head, model.attn.out_proj, model.embed)
    )
    total = sum(p.numel() for p in matrices)
    assert sum(r["weights"] for r in rows.values()) == total
    assert (
        summary(model)
        .splitlines()[0]
        .startswith(f"quantized {quantized} of {total} weights ({100 * quantized / total:.1f}%)")
    )


def test_first_last_fp_on_a_model_of_two_layers_says_why_nothing_was_quantized():
    with pytest.raises(ValueError, match=r"first/last layer \(first_last='fp'\)\): use first_last="):
        quantize_model(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), QuantConfig(first_last="fp"))


class _HeadFirst(nn.Module):
    """Registers its classifier first (as BERT registers layer 0's query before the pooler runs last...):
    module order and call order disagree; `branch` makes the forward untraceable by torch.fx."""

    def __init__(self, branch: bool = False):
        super().__init__()
        self.head = nn.Linear(8, 2)
        self.stem = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.mid = nn.Linear(8, 8)
        self.branch = branch

    def forward(self, x):
        h = self.bn(self.stem(x)).relu()
        if self.branch and h.sum() > -1e9:  # data-dependent control flow
            h = h + 0
        return self.head(self.mid(h).relu())


@pytest.mark.parametrize("branch", [False, True])
def test_first_last_follow_the_forward_not_the_registration_order(branch, caplog):
    import logging

    from cacim_core import selection

    fp = QuantConfig(levels=3, first_last="fp")
    x = torch.randn(5, 4)
    model = _HeadFirst(branch).train()
    before = model.bn.running_mean.clone()
    plan = selection(model, fp, example_input=x)
    assert plan == {
        "head": "float: first/last layer (first_last='fp')",
        "stem": "float: first/last layer (first_last='fp')",
        "mid": "quantized (analog)",
    }
    assert model.training and torch.equal(model.bn.running_mean, before)  # the probe forward left no trace
    with caplog.at_level(logging.INFO, logger="cacim_core"):
        untraced = selection(model, fp)
    if branch:  # fx cannot trace it: module order, and the log says to pass example_input
        assert untraced["mid"].startswith("float") and "pass example_input" in caplog.text
    else:
        assert untraced == plan and "by the torch.fx graph" in caplog.text
    quantize_model(model, fp, example_input=x)
    assert [n for n, *_ in quantized_layers(model)] == ["mid"]


def test_refit_gives_an_ema_the_levels_of_its_own_weights():
    """torchvision's EMA (AveragedModel with use_buffers=True) averages the level buffers: the EMA's levels
    were a blend, not the Lloyd levels of its weights. `refit(ema.module)` gives the optimal levels of the
    EMA's own weights (kmeans1d, 1-D k-means solved exactly, is the reference) and is not counted as an
    Algorithm 1 re-fit."""
    import kmeans1d
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    from cacim_core import refit, refit_check, refit_counts

    torch.manual_seed(0)
    model = quantize_model(
        nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)), QuantConfig(levels=4)
    )
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(20):
        loss = model(torch.randn(8, 16)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        refit_check(model, threshold=1e-4)  # a tiny T: re-fit at every step
        ema.update_parameters(model)

    def off_by(layers) -> list[float]:
        out = []
        for _, layer, p in layers:
            _, centroids = kmeans1d.cluster(float_weight(layer).detach().flatten().tolist(), 4)
            out.append(float((p.quantizer.levels.flatten() - torch.tensor(centroids)).abs().max()))
        return out

    assert max(off_by(quantized_layers(ema.module))) > 1e-3  # averaged levels: not the EMA weights' optimum
    counts = refit_counts(ema.module)
    assert refit(ema.module) == 2 and refit_counts(ema.module) == counts
    assert max(off_by(quantized_layers(ema.module))) < 1e-6
    assert refit_counts(model) == {"0": 20, "2": 20}


def test_cpu_bf16_autocast_trains_on_the_quantized_weights():
    """A bf16 autocast step: the conv runs in bf16 on the quantized weights (output within bf16 rounding of
    the fp32 output of the same quantized weights), the float weights get fp32 gradients, and Algorithm 1's
    check runs on them."""
    from cacim_core import refit_check

    torch.manual_seed(0)
    model = quantize_model(
        nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)), QuantConfig(levels=4, noise=0.0)
    )
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        reference = export(copy.deepcopy(model))(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.02)
    out.float().square().mean().backward()
    grads = [layer.parametrizations.weight.original.grad for _, layer, _ in quantized_layers(model)]
    assert all(g is not None and g.dtype == torch.float32 and g.abs().sum() > 0 for g in grads)
    assert refit_check(model) in (0, 1, 2)
