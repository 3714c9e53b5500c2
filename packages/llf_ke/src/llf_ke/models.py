"""Split ResNets (and VGG-11) as the KE/LLF code built them, with its initialisation.

Architectures (``--arch``): ``Split_ResNet18``, ``Split_ResNet18Norm``, ``Split_ResNet34``,
``Split_ResNet50``, ``Split_ResNet50Norm``, ``Split_ResNet101``, ``vgg11``, ``vgg11_bn``. The
``*Norm`` variants carry the layer-wise normalisation switch of the original, which is off
by default (it only mattered for the layer-wise script), so they compute the same function.
DenseNet and GoogLeNet are out of scope (see the README).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from llf_ke.layers import BN_TYPES, CONV_TYPES, LINEAR_TYPES


@dataclass(frozen=True)
class Builder:
    """Makes the layers of one network with the chosen layer types and initialisation."""

    conv_type: str = "SplitConv"
    linear_type: str = "SplitLinear"
    bn_type: str = "SplitBatchNorm"
    split_mode: str = "wels"
    split_rate: float = 0.5
    init: str = "kaiming_normal"
    mode: str = "fan_in"
    nonlinearity: str = "relu"

    def conv(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, *, first_layer: bool = False,
             bias: bool = False) -> nn.Conv2d:
        layer = CONV_TYPES[self.conv_type](
            in_ch, out_ch, kernel_size=kernel, stride=stride, padding=kernel // 2, bias=bias,
            split_mode=self.split_mode, split_rate=self.split_rate, first_layer=first_layer)
        self.init_weight(layer.weight)
        return layer

    def linear(self, in_f: int, out_f: int, *, last_layer: bool = False) -> nn.Linear:
        layer = LINEAR_TYPES[self.linear_type](
            in_f, out_f, split_mode=self.split_mode, split_rate=self.split_rate, last_layer=last_layer)
        self.init_weight(layer.weight)
        return layer

    def bn(self, channels: int) -> nn.Module:
        return BN_TYPES[self.bn_type](channels)

    @torch.no_grad()
    def init_weight(self, weight: torch.Tensor) -> None:
        init = self.init
        if init == "standard":
            return  # PyTorch's default layer initialisation
        if init == "kaiming_normal":
            nn.init.kaiming_normal_(weight, mode=self.mode, nonlinearity=self.nonlinearity)
        elif init == "kaiming_uniform":
            nn.init.kaiming_uniform_(weight, mode=self.mode, nonlinearity=self.nonlinearity)
        elif init == "xavier_normal":
            nn.init.xavier_normal_(weight)
        elif init == "xavier_constant":
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
            std = math.sqrt(2.0 / float(fan_in + fan_out))
            weight.copy_(weight.sign() * std)
        elif init in ("signed_constant", "unsigned_constant"):
            fan = nn.init._calculate_correct_fan(weight, self.mode)
            std = nn.init.calculate_gain(self.nonlinearity) / math.sqrt(fan)
            if init == "signed_constant":
                weight.copy_(weight.sign() * std)
            else:
                weight.fill_(std)
        else:
            raise ValueError(f"unknown --init {init!r}")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, builder: Builder, in_planes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = builder.conv(in_planes, planes, 3, stride)
        self.bn1 = builder.bn(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = builder.conv(planes, planes, 3)
        self.bn2 = builder.bn(planes)
        self.downsample = downsample
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + residual)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, builder: Builder, in_planes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = builder.conv(in_planes, planes, 1)
        self.bn1 = builder.bn(planes)
        self.conv2 = builder.conv(planes, planes, 3, stride)
        self.bn2 = builder.bn(planes)
        self.conv3 = builder.conv(planes, planes * self.expansion, 1)
        self.bn3 = builder.bn(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class SplitResNet(nn.Module):
    def __init__(self, builder: Builder, block: type, layers: list[int], num_classes: int,
                 use_norm: bool = False) -> None:
        super().__init__()
        self.use_norm = use_norm  # the *Norm variants' layer-wise normalisation; off by default
        self.in_planes = 64
        self.conv1 = builder.conv(3, 64, 7, 2, first_layer=True)
        self.bn1 = builder.bn(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(builder, block, 64, layers[0], 1)
        self.layer2 = self._make_layer(builder, block, 128, layers[1], 2)
        self.layer3 = self._make_layer(builder, block, 256, layers[2], 2)
        self.layer4 = self._make_layer(builder, block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = builder.linear(512 * block.expansion, num_classes, last_layer=True)

    def _make_layer(self, builder: Builder, block: type, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_planes != planes * block.expansion:
            downsample = nn.Sequential(
                builder.conv(self.in_planes, planes * block.expansion, 1, stride),
                builder.bn(planes * block.expansion),
            )
        layers = [block(builder, self.in_planes, planes, stride, downsample)]
        self.in_planes = planes * block.expansion
        layers += [block(builder, self.in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


VGG11_CFG = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG11(nn.Module):
    """torchvision-like VGG-11 with split layers; VGG's own initialisation overrides ``--init``."""

    def __init__(self, builder: Builder, num_classes: int, batch_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for index, v in enumerate(VGG11_CFG):
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(builder.conv(in_ch, int(v), 3, first_layer=index == 0, bias=True))
            if batch_norm:
                layers.append(builder.bn(int(v)))
            layers.append(nn.ReLU(inplace=True))
            in_ch = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            builder.linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
            builder.linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
            builder.linear(4096, num_classes, last_layer=True),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


RESNETS = {
    "Split_ResNet18": (BasicBlock, [2, 2, 2, 2], False),
    "Split_ResNet18Norm": (BasicBlock, [2, 2, 2, 2], True),
    "Split_ResNet34": (BasicBlock, [3, 4, 6, 3], False),
    "Split_ResNet50": (Bottleneck, [3, 4, 6, 3], False),
    "Split_ResNet50Norm": (Bottleneck, [3, 4, 6, 3], True),
    "Split_ResNet101": (Bottleneck, [3, 4, 23, 3], False),
}
#: Every --arch the original offered; the DenseNet/GoogLeNet ones are refused with a clear error.
ARCH_CHOICES = [*RESNETS, "Split_googlenet", "Split_densenet121", "Split_densenet161",
                "Split_densenet169", "Split_densenet201", "vgg11", "vgg11_bn"]
UNSUPPORTED_ARCHS = ("Split_googlenet", "Split_densenet121", "Split_densenet161",
                     "Split_densenet169", "Split_densenet201")


def build_model(arch: str, num_classes: int, builder: Builder) -> nn.Module:
    """The network for ``--arch`` with ``num_classes`` outputs."""
    if arch in RESNETS:
        block, layers, use_norm = RESNETS[arch]
        return SplitResNet(builder, block, layers, num_classes, use_norm)
    if arch in ("vgg11", "vgg11_bn"):
        return VGG11(builder, num_classes, batch_norm=arch == "vgg11_bn")
    raise ValueError(f"unknown architecture {arch!r}")

