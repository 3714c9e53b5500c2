"""The networks of the original and student code, by their CLI names.

All are ``nn.Sequential`` with named children (optimizers skip parameters whose name contains
``gate``; the statistics look for ``weight``). Initialisation is PyTorch's default.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from forgetting_common.errors import UserError
from torch import nn


class GateLayer(nn.Module):
    """Multiplies its input elementwise by a ``(1, units)`` parameter initialised to one."""

    def __init__(self, units: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class HookedNet(nn.Sequential):
    """A Sequential that counts exactly-zero ReLU outputs of its hidden layers on every forward.

    ``activations`` maps each activation child's name to the zero count of the latest forward
    pass (a 0-d tensor, no host sync); ``n_units`` is the number of units counted.
    """

    def __init__(self, layers: OrderedDict, name: str) -> None:
        super().__init__(layers)
        self.name = name
        self.activations: dict[str, torch.Tensor] = {}
        self.n_units = 0
        for child_name, module in self.named_children():
            if isinstance(module, nn.ReLU):
                self.n_units += int(self._width_before(child_name))
                module.register_forward_hook(self._make_hook(child_name))

    def _width_before(self, act_name: str) -> int:
        width = 0
        for child_name, module in self.named_children():
            if child_name == act_name:
                return width
            if isinstance(module, nn.Linear):
                width = module.out_features
        return width

    def _make_hook(self, name: str):
        def hook(_module, _inp, out):
            self.activations[name] = (out == 0).sum()

        return hook

    def dead_fraction(self) -> torch.Tensor:
        total = sum(self.activations.values())
        return total / max(self.n_units, 1)


class Net(nn.Sequential):
    def __init__(self, layers: OrderedDict, name: str) -> None:
        super().__init__(layers)
        self.name = name


def _fc(n_obs: int, n_out: int, act: type[nn.Module] | None, sizes=(300, 150), gates: bool = False):
    layers: list[tuple[str, nn.Module]] = []
    prev = n_obs
    for i, width in enumerate(sizes, start=1):
        layers.append((f"linear_{i}", nn.Linear(prev, width)))
        if act is not None:
            layers.append((f"act_{i}", act()))
        if gates:
            layers.append((f"gate_{i}", GateLayer(width)))
        prev = width
    layers.append((f"linear_{len(sizes) + 1}", nn.Linear(prev, n_out)))
    return OrderedDict(layers)


def _leaky():
    return nn.LeakyReLU(0.01)


def _conv(in_ch: int, flat: int, n_out: int) -> OrderedDict:
    return OrderedDict(
        [
            ("conv_1", nn.Conv2d(in_ch, 6, 5)),
            ("pool_1", nn.MaxPool2d(2, 2)),
            ("conv_2", nn.Conv2d(6, 16, 5)),
            ("pool_2", nn.MaxPool2d(2, 2)),
            ("flatten", nn.Flatten()),
            ("linear_1", nn.Linear(flat, 120)),
            ("act_1", nn.ReLU()),
            ("linear_2", nn.Linear(120, 84)),
            ("act_2", nn.ReLU()),
            ("linear_3", nn.Linear(84, n_out)),
        ]
    )


ACTS = {"relu": nn.ReLU, "leakyrelu": _leaky, "tanh": nn.Tanh, "linear": None}


def build_network(name: str, n_obs: int, n_outputs: int) -> nn.Sequential:
    """Instantiate the network called ``name`` for ``n_obs`` inputs and ``n_outputs`` outputs."""
    if name not in NETWORKS:
        raise UserError(f"unknown network {name!r}; valid networks: {', '.join(sorted(NETWORKS))}")
    net = NETWORKS[name](n_obs, n_outputs)
    # The per-sample input shape the network consumes (a flat vector for the MLPs).
    net.input_shape = INPUT_SHAPES.get(name, (n_obs,))
    return net


INPUT_SHAPES = {
    "convolutional_network_relu": (3, 32, 32),
    "convolutional_network_relu_with_hooks": (3, 32, 32),
    "conv_mnist": (1, 28, 28),
}


#: Networks whose ``name`` (the log folder) is not their CLI key.
LOGGED_NAMES = {"conv_mnist": "convolutional_network_relu_with_hooks"}


def logged_name(key: str) -> str:
    """The folder a network's results are written under (its ``name`` attribute)."""
    return LOGGED_NAMES.get(key, key)


def _make_registry() -> dict:
    reg = {}
    reg["linear_layer"] = lambda n, o: Net(OrderedDict([("linear_1", nn.Linear(n, o))]), "linear_layer")
    for act_name, act in ACTS.items():
        for gates in (False, True):
            suffix = "_gates" if gates else ""
            sizes = (64, 32) if act is None else (300, 150)
            name = f"fully_connected_{act_name}{suffix}"
            reg[name] = (lambda n, o, a=act, s=sizes, g=gates, nm=name: Net(_fc(n, o, a, s, g), nm))
            small_sizes = (64, 64) if act is None else ((50, 50) if gates else (50,))
            name = f"small_fully_connected_{act_name}{suffix}"
            reg[name] = (lambda n, o, a=act, s=small_sizes, g=gates, nm=name: Net(_fc(n, o, a, s, g), nm))
    reg["convolutional_network_relu"] = lambda n, o: Net(_conv(3, 400, o), "convolutional_network_relu")
    reg["fully_connected_relu_with_hooks"] = lambda n, o: HookedNet(
        _fc(n, o, nn.ReLU), "fully_connected_relu_with_hooks"
    )
    reg["convolutional_network_relu_with_hooks"] = lambda n, o: HookedNet(
        _conv(3, 400, o), "convolutional_network_relu_with_hooks"
    )
    # The student's MNIST conv net reports the CIFAR net's name (its logs sit under that folder).
    reg["conv_mnist"] = lambda n, o: HookedNet(_conv(1, 256, o), LOGGED_NAMES["conv_mnist"])
    return reg


NETWORKS = _make_registry()
