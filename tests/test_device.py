import pytest
import torch

from cacim_core.device import ConductanceMap


def test_worked_example_of_section_4_4():
    """ResNet-18b first conv, 4 levels: the paper's G, G+ and G- (from G, since the quanta are rounded)."""
    cmap = ConductanceMap()
    assert cmap.scale == pytest.approx(15.75)
    g = torch.tensor([-10.36, -0.57, 4.52, 15.75])
    w_max = 0.38
    wq = g / cmap.scale * w_max
    torch.testing.assert_close(cmap.differential(wq), g)
    g_plus, g_minus = cmap.pair(wq)
    torch.testing.assert_close(g_plus, torch.tensor([2.1, 2.1, 6.62, 17.85]))
    torch.testing.assert_close(g_minus, torch.tensor([12.46, 2.67, 2.1, 2.1]))
    torch.testing.assert_close(cmap.to_weight(g_plus, g_minus, w_max), wq)
    # the largest printed quantum maps exactly: -0.25 / 0.38 * 15.75 = -10.36
    assert float(cmap.differential(torch.tensor([-0.25, 0.38]))[0]) == pytest.approx(-10.36, abs=0.005)


def test_pairs_stay_in_device_range():
    cmap = ConductanceMap()
    g_plus, g_minus = cmap.pair(torch.randn(1000))
    for g in (g_plus, g_minus):
        assert g.min() >= cmap.g_min - 1e-6 and g.max() <= cmap.g_max + 1e-5


def test_bad_range():
    with pytest.raises(ValueError, match="g_ref"):
        ConductanceMap(g_min=2.1, g_max=1.0)
