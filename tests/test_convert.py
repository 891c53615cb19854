import pytest
import torch
from torch import nn

from cacim_core import (
    QuantConfig,
    export,
    float_weight,
    noisy_evaluate,
    quantize_model,
    quantized_layers,
    refit_check,
    refit_counts,
    weight_noise,
)


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def names(model) -> list[str]:
    return [n for n, _, _ in quantized_layers(model)]


@pytest.mark.parametrize(
    "policy,expected", [("quantize", ["0", "2", "6"]), ("fp", ["2"]), ("8bit", ["0", "2", "6"])]
)
def test_first_last_policies(policy, expected):
    model = quantize_model(small_net(), QuantConfig(method="lloyd", levels=3, first_last=policy))
    assert names(model) == expected
    levels = {n: len(p.quantizer.levels) for n, _, p in quantized_layers(model)}
    assert levels["2"] == 3
    if policy == "8bit":
        assert levels["0"] > 200 and levels["6"] > 8


def test_include_exclude_patterns():
    model = quantize_model(small_net(), QuantConfig(include=("0", "2"), exclude=("0",)))
    assert names(model) == ["2"]
    with pytest.raises(ValueError, match="no layer matched"):
        quantize_model(small_net(), QuantConfig(include=("nothing*",)))
    # A pattern names a module and its children: excluding a block excludes the conv inside it.
    nested = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), nn.Conv2d(2, 2, 3))
    assert names(quantize_model(nested, QuantConfig(exclude=("0",)))) == ["1"]


def test_bad_config_errors():
    with pytest.raises(KeyError, match="registered"):
        QuantConfig(method="lloydd")
    with pytest.raises(ValueError, match="first_last"):
        QuantConfig(first_last="float")
    model = quantize_model(small_net(), QuantConfig())
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(model, QuantConfig())


def test_eval_weights_are_levels_and_training_adds_relative_noise():
    model = quantize_model(small_net(), QuantConfig(method="lloyd", levels=4, noise=0.05))
    conv = model[2]
    _, _, p = quantized_layers(model)[1]
    model.eval()
    clean = conv.weight.detach()
    assert torch.isin(clean, p.quantizer.levels).all()
    model.train()
    draws = torch.stack([conv.weight.detach() - clean for _ in range(200)])
    expected = 0.05 * clean.abs().max()
    assert draws.std() == pytest.approx(float(expected), rel=0.05)
    assert draws.mean().abs() < 0.1 * expected


def test_training_step_updates_float_weights_through_ste():
    model = quantize_model(small_net(), QuantConfig(method="lloyd", levels=3, noise=0.01))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = float_weight(model[2]).detach().clone()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert not torch.equal(before, float_weight(model[2]))


def test_weight_noise_is_seeded_and_fixed_within_a_draw():
    model = quantize_model(small_net(), QuantConfig(levels=4, noise=0.02)).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        with weight_noise(model, seed=1):
            a1, a2 = model(x), model(x)
        with weight_noise(model, seed=1):
            b = model(x)
        with weight_noise(model, seed=2):
            c = model(x)
        clean = model(x)
    assert torch.equal(a1, a2) and torch.equal(a1, b)
    assert not torch.equal(a1, c) and not torch.equal(a1, clean)


def test_noisy_evaluate_statistics():
    model = quantize_model(small_net(), QuantConfig(levels=4))
    x = torch.randn(2, 3, 8, 8)

    def metric(m):
        return {"out": float(m(x).sum())}

    quiet = noisy_evaluate(model, metric, draws=5)
    assert len(quiet.values["out"]) == 1 and quiet.std["out"] == 0.0
    noisy = noisy_evaluate(model, metric, draws=5, seed=0, noise=0.05)
    values = torch.tensor(noisy.values["out"], dtype=torch.float64)
    assert len(values) == 5
    assert noisy.mean["out"] == pytest.approx(float(values.mean()))
    assert noisy.std["out"] == pytest.approx(float(values.std()))
    assert noisy_evaluate(model, metric, draws=5, seed=0, noise=0.05).values == noisy.values
    assert model.training, "training mode is restored"


def test_export_gives_plain_layers_with_the_same_function():
    model = quantize_model(small_net(), QuantConfig(method="lloyd", levels=3, noise=0.02)).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
    export(model)
    assert quantized_layers(model) == []
    assert isinstance(model[2].weight, nn.Parameter)
    assert model[2].weight.unique().numel() <= 3
    torch.testing.assert_close(model(x), expected)


def test_refit_check_algorithm1():
    model = quantize_model(small_net(), QuantConfig(method="lloyd", levels=3, refit_threshold=0.1))
    assert refit_check(model) == 0, "right after a Lloyd fit the projection ratio is 1"
    with torch.no_grad():
        float_weight(model[2]).mul_(3.0)  # weights grew: old levels under-represent them
    assert refit_check(model) == 1
    assert refit_counts(model)["2"] == 1 and refit_counts(model)["0"] == 0
    assert refit_check(model) == 0


def test_learned_baselines_are_not_refitted():
    model = quantize_model(small_net(), QuantConfig(method="ttq", levels=3, refit_threshold=0.0))
    assert refit_check(model) == 0


def test_quantizer_parameters_are_trained():
    model = quantize_model(small_net(), QuantConfig(method="lsq", levels=4))
    steps = [p for n, p in model.named_parameters() if n.endswith("quantizer.step")]
    assert len(steps) == 3
    before = [s.detach().clone() for s in steps]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 3, 8, 8)).pow(2).sum().backward()
    opt.step()
    assert any(not torch.equal(b, s) for b, s in zip(before, steps, strict=True))


def test_eval_noise_callable_replaces_the_layer_noise():
    model = quantize_model(small_net(), QuantConfig(levels=4)).eval()
    x = torch.randn(2, 3, 8, 8)

    def shift(wq, generator):
        return torch.full_like(wq, 0.01)

    with torch.no_grad():
        clean = model(x)
        with weight_noise(model, shift):
            assert torch.equal(
                model[2].weight, model[2].parametrizations.weight[0].clean(float_weight(model[2])) + 0.01
            )
            shifted = model(x)
    assert not torch.equal(clean, shifted)
    with pytest.raises(TypeError, match="noise_fn"):  # the removed legacy alias: noise= is the one way
        with weight_noise(model, noise_fn=shift):
            pass
    noisy = noisy_evaluate(model, lambda m: float(m(x).sum()), draws=3, noise=shift)
    assert noisy.values["value"][0] != float(clean.sum())


def test_bias_range_match_needs_one_level_set_per_layer():
    """LQ-Net learns one basis per output channel by default: the bias column cannot share it."""
    with pytest.raises(ValueError, match="per_channel"):
        quantize_model(
            nn.Sequential(nn.Linear(4, 3)), QuantConfig(method="lqnet", levels=4, bias_range_match=True)
        )
    one = QuantConfig(
        method="lqnet", levels=4, bias_range_match=True, quantizer_kwargs={"per_channel": False}
    )
    model = quantize_model(nn.Sequential(nn.Linear(4, 3)), one)
    assert model(torch.randn(2, 4)).shape == (2, 3)
