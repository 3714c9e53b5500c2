"""The three classifiers of the targeted-forgetting probes.

Parameter names matter: the per-layer keep rules and the eligibility filter of the
forgetting operation look for ``fc1``/``fc2``/``fc3``, ``fc``, ``bn``, ``bias`` and
``shortcut.1`` inside parameter names, so the modules are named as in the paper's code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from forgetting_common.errors import UserError
from torch import nn

#: Which dataset each architecture was written for (input shape follows from it).
ARCH_DATA = {"lenet": ("mnist",), "conv4": ("cifar10",), "resnet18": ("cifar10",)}
INPUT_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


class LeNet(nn.Module):
    """The fully connected LeNet-300-100: 784 → 300 → 100 → 10 with ReLUs, default init."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class ConvBlock(nn.Module):
    """3x3 conv (with bias) + ReLU (+ 2x2 max-pool); the conv is Kaiming-normal initialised.

    The conv is registered both as ``conv`` and inside ``trunk``, so its parameters are named
    ``<block>.conv.*`` (named_parameters lists a shared tensor once, under its first name).
    """

    def __init__(self, in_ch: int, out_ch: int, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        nn.init.kaiming_normal_(self.conv.weight)
        layers: list[nn.Module] = [self.conv, nn.ReLU(inplace=True)]
        if pool:
            layers.append(nn.MaxPool2d(2))
        self.trunk = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


class ConvNet4(nn.Module):
    """Four conv blocks (64, 64+pool, 128, 128+pool), then fc 8192 → 256 → 256 → 10.

    ``fc1``..``fc3`` are attributes of the network *and* members of ``trunk``; as top-level
    children they are what the original's top-level re-initialisation reaches.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        blocks = [ConvBlock(3, 64, False), ConvBlock(64, 64, True),
                  ConvBlock(64, 128, False), ConvBlock(128, 128, True)]
        self.fc1 = nn.Linear(8192, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, num_classes)
        for fc in (self.fc1, self.fc2, self.fc3):
            nn.init.kaiming_normal_(fc.weight)
        self.trunk = nn.Sequential(
            *blocks, nn.Flatten(), self.fc1, nn.ReLU(inplace=True), self.fc2,
            nn.ReLU(inplace=True), self.fc3,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm; a 1x1 stride-2 conv + BN shortcut when the shape changes."""

    def __init__(self, f_in: int, f_out: int, downsample: bool) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        if downsample or f_in != f_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(f_in, f_out, 1, stride=2, bias=False), nn.BatchNorm2d(f_out)
            )
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The original's ``resnet18``: in fact a CIFAR ResNet-20 (3 stages x 3 blocks, 16/32/64).

    Stem conv ``conv`` + ``bn``, blocks in ``blocks``, global average pool, ``fc`` 64 → 10;
    Kaiming-normal init of every conv and linear weight.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        plan = [(16, 3), (32, 3), (64, 3)]
        self.conv = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks = []
        current = 16
        for stage, (filters, count) in enumerate(plan):
            for index in range(count):
                blocks.append(BasicBlock(current, filters, stage > 0 and index == 0))
                current = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(current, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


MODELS = {"lenet": LeNet, "conv4": ConvNet4, "resnet18": CifarResNet}


def check_arch(arch: str, train_data: str) -> None:
    """An architecture that does not fit the dataset is a :class:`UserError`."""
    if arch not in MODELS:
        raise UserError(f"--arch {arch!r} is unknown; use one of {sorted(MODELS)}")
    if train_data not in ARCH_DATA[arch]:
        fits = [a for a, data in ARCH_DATA.items() if train_data in data]
        raise UserError(
            f"--arch {arch} does not fit --train_data {train_data} "
            f"(input {'x'.join(map(str, INPUT_SHAPES[train_data]))}); use --arch {' or '.join(fits)}"
        )


def build_model(arch: str, train_data: str = "mnist") -> nn.Module:
    """A freshly initialised model (drawn from torch's global RNG, as the original did)."""
    check_arch(arch, train_data)
    return MODELS[arch]()
