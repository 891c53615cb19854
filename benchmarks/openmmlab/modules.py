"""Registered mmdet modules our configs use: a width-scaled SSD VGG16 (proxy) and an SSDHead bug fix.

Imported by the configs through `custom_imports`; nothing of mmdet is edited or forked.
"""

from __future__ import annotations

from mmdet.models.backbones import SSDVGG
from mmdet.models.dense_heads import SSDHead
from mmdet.registry import MODELS
from torch import nn


@MODELS.register_module()
class SSDHeadFixed(SSDHead):
    """`SSDHead` that can predict under mmdet 3.3.0.

    mmdet 3.3.0's `BaseDenseHead._predict_by_feat_single` reads `self.loss_cls`, which `SSDHead` never
    creates (it computes its loss inline), so SSD inference fails with
    `AttributeError: 'SSDHead' object has no attribute 'loss_cls'`. Upstream: open-mmlab/mmdetection
    issues #11063 and #11780, fix proposed in the unmerged PR #11524. `None` makes the
    `getattr(self.loss_cls, 'custom_cls_channels', False)` test fall through to SSD's softmax scores.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loss_cls = None


@MODELS.register_module()
class SlimSSDVGG(SSDVGG):
    """SSD's VGG16 (same layers, dilated conv6, 1x1 conv7) with every channel count times `width`.

    The proxy scale of Table 4 trains on a CPU in minutes; this keeps the architecture of SSD300 and
    only thins it. `width=1` is exactly `SSDVGG`. `norm=True` follows each conv with BatchNorm (as in
    VGG16-BN), which SSD needs to train from random init in a few thousand steps (the paper's SSD starts
    from ImageNet weights, which a CPU proxy cannot); the conv keeps its index in `features`
    (`features.<i>.0`, BN at `features.<i>.1`), so SSD's output indices are unchanged.
    """

    def __init__(self, *args, width: float = 1.0, norm: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not 0 < width <= 1:
            raise ValueError(f"SlimSSDVGG: width must be in (0, 1], got {width}")
        self.width = width
        for index, layer in enumerate(self.features):
            if isinstance(layer, nn.Conv2d):
                conv = nn.Conv2d(
                    layer.in_channels if layer.in_channels == 3 else self.scaled(layer.in_channels),
                    self.scaled(layer.out_channels),
                    kernel_size=layer.kernel_size,
                    stride=layer.stride,
                    padding=layer.padding,
                    dilation=layer.dilation,
                    bias=not norm,
                )
                self.features[index] = (
                    nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels)) if norm else conv
                )

    def scaled(self, channels: int) -> int:
        return max(8, round(channels * self.width))
