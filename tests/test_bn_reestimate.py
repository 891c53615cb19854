"""Recipe.bn_reestimate: BatchNorm statistics recomputed after the fine-tune (the Table 3 proxy's stale
statistics), and a recipe field added later that leaves the older records' and float models' keys alone."""

from dataclasses import replace

import torch
from torch import nn

from benchmarks.backends import recipe_hash
from benchmarks.backends.torch_loop import reestimate_bn
from benchmarks.experiments import Recipe, cells
from cacim_core import QuantConfig, quantize_model


def test_a_later_field_at_its_default_keeps_the_recipe_key():
    recipe = Recipe(epochs=2, batch_size=64, lr=0.01)
    on = replace(recipe, bn_reestimate=8)
    assert "bn_reestimate" not in repr(recipe) and "bn_reestimate" not in recipe.declared()
    assert repr(recipe).startswith("Recipe(epochs=2, batch_size=64, lr=0.01, optimizer='sgd'")
    assert recipe_hash(on) != recipe_hash(recipe) and on.declared()["bn_reestimate"] == 8
    nobn = {c.id: c for c in cells("table3_nobn", "proxy")}
    base = {c.id: c for c in cells("table3", "proxy")}
    assert len(nobn) == 15 and set(nobn) <= set(base)  # the same cells, only the recipe differs
    assert all(recipe_hash(nobn[i].fp_recipe) == recipe_hash(base[i].fp_recipe) for i in nobn)  # same floats
    assert all(base[i].recipe == replace(nobn[i].recipe, bn_reestimate=8) for i in nobn)


def test_reestimate_bn_gives_the_average_statistics_of_the_noise_free_model():
    """Momentum None averages the per-batch statistics; the reference is computed from the conv outputs of
    the same batches with the quantized weights noise-free (a training-mode forward would add noise)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 3, 6, 6))
    quantize_model(model, QuantConfig(levels=3, noise=0.2, first_last="quantize"))
    batches = [torch.randn(8, 3, 6, 6) for _ in range(3)]
    model.train()
    with torch.no_grad():
        model.eval()
        outs = [model[0](x) for x in batches]
    mean = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
    var = torch.stack([o.transpose(0, 1).flatten(1).var(1, unbiased=True) for o in outs]).mean(0)
    model.train()
    assert reestimate_bn(model, batches) == 1
    assert not model.training and model[1].momentum == 0.1
    torch.testing.assert_close(model[1].running_mean, mean)
    torch.testing.assert_close(model[1].running_var, var)
