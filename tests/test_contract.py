"""The quantizer contract, checked at fit: a quantizer gives exactly the levels it was asked for (or declares
its effective count), finite and sorted; `levels` is an int >= 2; a plugin's records hash its whole module
tree. Each of these used to pass silently (issue: wrong quantizer output accepted)."""

import textwrap

import pytest
import torch
from torch import nn

from benchmarks import runner
from cacim_core import QuantConfig, quantize_model, quantizers
from cacim_core.evaluate import noisy_evaluate
from cacim_core.quantizers.base import QUANTIZERS
from cacim_core.training import refit_check


class _Fixed(quantizers.Quantizer):
    """Sets whatever `values` says, whatever it was asked."""

    values: list[float] = []

    def fit(self, w: torch.Tensor) -> None:
        self.set_levels(torch.tensor(self.values, dtype=w.dtype)) if self.values else None


class _Five(_Fixed):
    values = [-2.0, -1.0, 0.0, 1.0, 2.0]


class _NaN(_Fixed):
    values = [-1.0, float("nan"), 1.0]


class _Unsorted(_Fixed):
    def fit(self, w: torch.Tensor) -> None:
        self._levels, self._edges = torch.tensor([1.0, 0.0, -1.0]), torch.tensor([0.5, -0.5])


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """The broken quantizers are registered for this module's tests only (other tests iterate them all)."""
    monkeypatch.setattr(QUANTIZERS, "_items", dict(QUANTIZERS._items))
    for name, cls in (("contract_five", _Five), ("contract_nan", _NaN), ("contract_unsorted", _Unsorted)):
        QUANTIZERS.register(name)(cls)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


@pytest.mark.parametrize(
    "method, message",
    [
        ("contract_five", "_Five.fit on layer '0' set 5 levels (shape (5,)) where 3 were asked"),
        ("contract_nan", "set non-finite levels"),
        ("contract_unsorted", "set unsorted levels [1.0, 0.0, -1.0]"),
    ],
)
def test_a_fit_that_breaks_the_contract_fails_at_quantize(method, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        quantize_model(_model(), QuantConfig(method=method, levels=3))


def test_the_contract_holds_for_every_built_in_quantizer_and_at_refit():
    """Every registered built-in gives its effective number of levels on a real layer (APoT's 4 are 3);
    a forced re-fit (threshold 0) goes through the same check."""
    for method in quantizers.names():
        if method.startswith("contract_"):
            continue
        for levels in (3, 4):
            try:
                quantizers.build(method, levels=levels)
            except ValueError:
                continue  # the method's own level counts (ternary: 3; LQ-Net: 4, 8, ...)
            model = quantize_model(_model(), QuantConfig(method=method, levels=levels))
            assert refit_check(model, threshold=0.0) >= 0


@pytest.mark.parametrize("levels", [3.5, "4", True, 1])
def test_levels_must_be_an_int_of_at_least_two(levels):
    with pytest.raises((TypeError, ValueError), match=r"levels must be (an int )?>= 2"):
        QuantConfig(levels=levels)
    with pytest.raises((TypeError, ValueError), match=r"levels must be (an int )?>= 2"):
        quantizers.build("lloyd", levels=levels)


@pytest.mark.parametrize("draws", [2.5, 0, "5"])
def test_draws_must_be_a_positive_int(draws):
    model = quantize_model(_model(), QuantConfig(levels=3, noise=0.01))
    with pytest.raises(ValueError, match="draws must be an int >= 1"):
        noisy_evaluate(model, lambda m: {"x": 0.0}, draws=draws)


def test_a_plugins_record_hash_covers_the_helpers_it_imports(tmp_path, monkeypatch):
    """Editing a helper module that the plugin imports from its folder changes the plugin's hash (the
    records made before become stale); editing an unrelated file in the folder does not."""
    (tmp_path / "helper.py").write_text("SCALE = 1.0\n")
    (tmp_path / "unrelated.py").write_text("X = 1\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "deep.py").write_text("Y = 2\n")
    plugin = tmp_path / "contract_plugin.py"
    plugin.write_text(
        textwrap.dedent(
            """
            import torch
            from cacim_core import quantizers
            from helper import SCALE
            from pkg import deep

            @quantizers.register("contract_tree")
            class Tree(quantizers.Quantizer):
                def fit(self, w):
                    m = w.detach().abs().max() * SCALE * deep.Y / 2
                    self.set_levels(torch.linspace(-1.0, 1.0, self.num_levels, dtype=w.dtype) * m)
            """
        )
    )
    monkeypatch.setattr(runner, "PLUGINS", dict(runner.PLUGINS))
    monkeypatch.syspath_prepend(str(tmp_path))
    runner.load_plugin(str(plugin))
    first = runner.source_hash("contract_tree")
    (tmp_path / "unrelated.py").write_text("X = 2\n")
    assert runner.source_hash("contract_tree") == first
    (tmp_path / "helper.py").write_text("SCALE = 0.5\n")
    second = runner.source_hash("contract_tree")
    (tmp_path / "pkg" / "deep.py").write_text("Y = 3\n")
    third = runner.source_hash("contract_tree")
    assert len({first, second, third}) == 3
    assert runner.PLUGINS[str(plugin.resolve())] == first  # taken at load: the tree the run imported


def test_a_layer_with_fewer_distinct_weights_than_levels_may_have_fewer_levels():
    """A zero-initialised layer (a DCN's conv_offset) has one distinct weight: Lloyd's one level is not a
    broken contract; five levels from a 3-level request on real weights still is (above)."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    nn.init.zeros_(model[0].weight)
    quantize_model(model, QuantConfig(method="lloyd", levels=4))
