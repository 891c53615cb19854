"""Proxy ResNet-20 / 18b / 50b for synth32: the narrow nets with a stride-2 stem, so that a table's cells
for several seeds fit the proxy's time budget on two CPU cores (a stride-1 stem at 32x32 costs 4x the
compute; the stride-1 resnet20_narrow also reached 96% float top-1 on synth32, too close to the ceiling).

Same blocks, widths and module names as ``resnet20_narrow`` / ``resnet18b_narrow`` / ``resnet50b_narrow``;
only ``conv1`` strides by 2 (torchvision's ImageNet stem divides by 4: a 7x7 stride-2 conv and a max-pool).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from benchmarks.models import register_model, resnet18b_narrow, resnet20_narrow, resnet50b_narrow


def _stride2_stem(narrow: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    def build(num_classes: int = 10, input_size: int = 32) -> nn.Module:
        model = narrow(num_classes, input_size)
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, 2, 1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        return model

    return build


register_model("resnet20_proxy")(_stride2_stem(resnet20_narrow))
register_model("resnet18b_proxy")(_stride2_stem(resnet18b_narrow))
register_model("resnet50b_proxy")(_stride2_stem(resnet50b_narrow))
