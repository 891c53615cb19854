"""Model registry: a name in a string builds the network (timm-style), for every scale.

Paper-scale names: ``resnet20`` (He et al. 2016, CIFAR, option-A shortcuts), ``vgg_like`` (Hou & Kwok 2018),
``resnet18b`` / ``resnet50b`` (torchvision ResNets). Proxy variants keep each architecture but narrow the
widths so that the CPU can train them in minutes: ``resnet20_narrow``, ``vgg_like_narrow``,
``resnet18b_narrow``, ``resnet50b_narrow``; the synth32 proxies ``resnet20_proxy``, ``resnet18b_proxy`` and
``resnet50b_proxy`` are those with a stride-2 stem. The first layer is the first Conv/Linear in module order
and the classifier the last one, which is how the first/last-layer policies find them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from cacim_core.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    return MODELS.register(name)


def model_names() -> list[str]:
    return MODELS.names()


def build_model(name: str, num_classes: int, input_size: int) -> nn.Module:
    return MODELS.build(name, num_classes=num_classes, input_size=input_size)


# ---------------------------------------------------------------- ResNet-20 (He et al. 2016, section 4.2)
class ShortcutA(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.pad = extra_channels // 2

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class CifarBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = ShortcutA(planes - in_planes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3 stages x n BasicBlocks; depth = 6n + 2 (n = 3 gives ResNet-20).

    Module names follow akamaster/pytorch_resnet_cifar10 (conv1, layer1..3, linear), so its pretrained
    ResNet-20 checkpoint loads as the paper-scale float model.
    """

    def __init__(self, blocks_per_stage: int, widths: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        for stage, planes in enumerate(widths):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(CifarBlock(in_planes, planes, 2 if stage > 0 and i == 0 else 1))
                in_planes = planes
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("resnet20")
def resnet20(num_classes: int = 10, input_size: int = 32) -> nn.Module:
    return CifarResNet(3, (16, 32, 64), num_classes)


@register_model("resnet20_narrow")
def resnet20_narrow(num_classes: int = 10, input_size: int = 32) -> nn.Module:
    return CifarResNet(3, (8, 16, 32), num_classes)


# ---------------------------------------------------------------- VGG-like (Hou & Kwok 2018, FNN/cifar10.py)
class VGGLike(nn.Module):
    """(2xC3 -> MP2) x 3 stages, FC-FC-FC; BN after every layer including the output, pooling before BN."""

    def __init__(
        self, widths: tuple[int, int, int], fc_width: int, num_classes: int, input_size: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for width in widths:
            layers += [
                nn.Conv2d(in_ch, width, 3, 1, 1, bias=False),
                nn.BatchNorm2d(width, eps=1e-4),
                nn.ReLU(),
            ]
            layers += [nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.MaxPool2d(2)]
            layers += [nn.BatchNorm2d(width, eps=1e-4), nn.ReLU()]
            in_ch = width
        self.features = nn.Sequential(*layers)
        side = input_size // 8
        self.classifier = nn.Sequential(
            nn.Linear(in_ch * side * side, fc_width, bias=False),
            nn.BatchNorm1d(fc_width, eps=1e-4),
            nn.ReLU(),
            nn.Linear(fc_width, fc_width, bias=False),
            nn.BatchNorm1d(fc_width, eps=1e-4),
            nn.ReLU(),
            nn.Linear(fc_width, num_classes, bias=False),
            nn.BatchNorm1d(num_classes, eps=1e-4),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)  # Uniform(+-sqrt(6/(fan_in+fan_out))), as Glorot/Hou & Kwok

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


@register_model("vgg_like")
def vgg_like(num_classes: int = 10, input_size: int = 32) -> nn.Module:
    return VGGLike((128, 256, 512), 1024, num_classes, input_size)


@register_model("vgg_like_narrow")
def vgg_like_narrow(num_classes: int = 10, input_size: int = 32) -> nn.Module:
    return VGGLike((16, 32, 64), 128, num_classes, input_size)


# ---------------------------------------------------------------- ResNet-18b / 50b (torchvision)
@register_model("resnet18b")
def resnet18b(num_classes: int = 1000, input_size: int = 224) -> nn.Module:
    return torchvision.models.resnet18(weights=None, num_classes=num_classes)


@register_model("resnet50b")
def resnet50b(num_classes: int = 1000, input_size: int = 224) -> nn.Module:
    return torchvision.models.resnet50(weights=None, num_classes=num_classes)


class NarrowResNetB(torchvision.models.ResNet):
    """torchvision's ResNet (same blocks, projection shortcuts, stride on the 3x3) at a narrower width.

    For small proxy images the stem is a 3x3 stride-1 conv without max-pool (as CIFAR ResNets do); module
    names (conv1, layer1..4, fc) match torchvision so layer policies select the same layers.
    """

    def __init__(
        self,
        block: type[nn.Module],
        layers: list[int],
        width: int,
        num_classes: int,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__(block, layers, num_classes=num_classes)
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.Identity()
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if zero_init_residual and isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)  # each block starts as the identity (Goyal et al. 2017)


@register_model("resnet18b_narrow")
def resnet18b_narrow(num_classes: int = 10, input_size: int = 32) -> nn.Module:
    return NarrowResNetB(BasicBlock, [2, 2, 2, 2], 8, num_classes)


@register_model("resnet50b_narrow")
def resnet50b_narrow(num_classes: int = 10, input_size: int = 32) -> nn.Module:
    """Zero-initialised residual branches: the 16-block, 4-wide net trained to 71-77% float top-1 on the
    proxy without (3 seeds, 15 epochs) and 81-84% with; the 8-block ResNet-18b did not gain (87-88 vs 83-86).
    """
    return NarrowResNetB(Bottleneck, [3, 4, 6, 3], 4, num_classes, zero_init_residual=True)


# ---------------------------------------------------------------- synth32 proxies (benchmarks/synthetic.py)
# The narrow nets with a stride-2 stem, so that a table's cells for several seeds fit the proxy's time budget
# on two CPU cores (a stride-1 stem at 32x32 costs 4x the compute; the stride-1 resnet20_narrow also reached
# 96% float top-1 on synth32, too close to the ceiling). Same blocks, widths and module names; only `conv1`
# strides by 2 (torchvision's ImageNet stem divides by 4: a 7x7 stride-2 conv and a max-pool).
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


def head_keys(model: nn.Module) -> list[str]:
    """State keys of the classifier: the last Conv/Linear and the leaf modules after it (VGG-like's BN)."""
    modules = list(model.named_modules())
    last = max(i for i, (_, m) in enumerate(modules) if isinstance(m, (nn.Conv2d, nn.Linear)))
    leaves = [name for name, m in modules[last:] if not list(m.children())]
    return [k for k in model.state_dict() if k.rpartition(".")[0] in leaves]


def load_weights(model: nn.Module, path: Path, reset_head: bool = False) -> bool:
    """Load a user-supplied float checkpoint: a state_dict, or one under 'state_dict' or 'model'.

    With `reset_head`, a checkpoint whose classifier has another class count (torchvision's 1000-class
    ResNets on an ImageNet subset) loads everything else; the head keeps the model's fresh initialisation.
    Returns whether the head was re-initialised (it then needs training before quantization).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file gets the same one-line advice
        raise ValueError(
            f"cannot read weights file {path} ({type(exc).__name__}): expected a torch state_dict"
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    head = head_keys(model)
    reset = bool(wrong) and not missing and not unexpected and set(wrong) <= set(head)
    if reset:
        classes = (
            f"{state[head[0]].shape[0]}-class classifier ({head[0]}), the model has {own[head[0]].shape[0]}"
        )
        if not reset_head:
            raise ValueError(
                f"weights file {path} has a {classes}: pass --reset-head to load everything else "
                "and re-initialise the classifier"
            )
        print(f"weights {path}: {classes}; loaded everything else, re-initialised {', '.join(head)}")
        state = {**state, **{k: own[k] for k in head}}
        wrong = []
    if missing or unexpected or wrong:
        raise ValueError(
            f"weights file {path} does not match {type(model).__name__}: {len(missing)} missing keys "
            f"{missing[:2]}, {len(unexpected)} unexpected {unexpected[:2]}, "
            f"{len(wrong)} of another shape {wrong[:2]}"
        )
    model.load_state_dict(state)
    return reset
