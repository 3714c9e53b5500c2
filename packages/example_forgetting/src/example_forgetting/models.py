"""The three networks of the paper's code: the MNIST net, ResNet18 (CIFAR stem) and WRN-28-10.

Written from the specification (section 5). Layers are created in the same order as in the
original modules so that, on the CPU, ``torch.manual_seed(seed)`` gives the same initial weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MnistNet(nn.Module):
    """Two 5x5 convolutions, two linear layers, optional dropout; returns log-probabilities.

    conv 1->10, max-pool 2, ReLU; conv 10->20, [Dropout2d], max-pool 2, ReLU; linear 320->50,
    ReLU, [dropout 0.5]; linear 50->10; log-softmax. About 21.8k parameters.
    """

    def __init__(self, dropout: bool = True, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d(0.5)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = self.conv2(x)
        if self.dropout:
            x = self.conv2_drop(x)
        x = F.relu(F.max_pool2d(x, 2))
        x = F.relu(self.fc1(x.flatten(1)))
        if self.dropout:
            x = F.dropout(x, p=0.5, training=self.training)
        return F.log_softmax(self.fc2(x), dim=1)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 with a CIFAR stem (3x3 conv, no max-pool), 4x4 average pool; outputs logits.

    ``width`` (64 in the paper) scales every stage; the tests use a narrow copy for speed.
    """

    def __init__(self, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.in_planes = width
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._stage(width, 2, 1)
        self.layer2 = self._stage(2 * width, 2, 2)
        self.layer3 = self._stage(4 * width, 2, 2)
        self.layer4 = self._stage(8 * width, 2, 2)
        self.linear = nn.Linear(8 * width, num_classes)

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.flatten(1))


class WideBlock(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3 (+ 1x1 shortcut)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal = in_planes == out_planes
        self.shortcut = (
            None if self.equal else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = F.relu(self.bn2(out))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        # When the width changes, the shortcut sees the pre-activated input (as in WRN code).
        return out + (x if self.equal else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-depth-widen (default WRN-28-10, dropout 0.3); the block count uses integer division."""

    def __init__(
        self, depth: int = 28, num_classes: int = 10, widen_factor: int = 10, drop_rate: float = 0.3
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6  # the original's true division made this a float (Cutout issue #9)
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = self._stage(widths[0], widths[1], n, 1, drop_rate)
        self.block2 = self._stage(widths[1], widths[2], n, 2, drop_rate)
        self.block3 = self._stage(widths[2], widths[3], n, 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    @staticmethod
    def _stage(in_planes: int, out_planes: int, n: int, stride: int, drop: float) -> nn.Sequential:
        return nn.Sequential(
            *[WideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop)
              for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        return self.fc(out.flatten(1))


def build_cifar_model(name: str, num_classes: int) -> nn.Module:
    if name == "resnet18":
        return ResNet18(num_classes=num_classes)
    if name == "wideresnet":
        return WideResNet(depth=28, num_classes=num_classes, widen_factor=10, drop_rate=0.3)
    raise ValueError(f"unknown model {name!r}; use resnet18 or wideresnet")
