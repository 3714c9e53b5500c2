"""Our HesScale against exact Hessian diagonals where the approximation is exact, and the recursion."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from upgd.hesscale import backward_with_hesscale
from upgd.models import build_network


def _exact_diag(net, param, x, y, criterion):
    name = next(n for n, p in net.named_parameters() if p is param)
    shape = param.shape

    def loss_of(flat):
        params = {n: p.detach() for n, p in net.named_parameters()}
        params[name] = flat.view(shape)
        out = torch.func.functional_call(net, params, (x,))
        return F.cross_entropy(out, y) if criterion == "cross_entropy" else F.mse_loss(out, y)

    hess = torch.autograd.functional.hessian(loss_of, param.detach().reshape(-1))
    return torch.diagonal(hess).view(shape)


def test_output_layer_diagonal_is_exact():
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict([("linear_1", nn.Linear(4, 6)), ("act_1", nn.Tanh()), ("linear_2", nn.Linear(6, 3))])).double()
    x = torch.randn(1, 4, dtype=torch.float64)
    y = torch.tensor([2])
    backward_with_hesscale(net, x, y, "cross_entropy")
    for p in (net.linear_2.weight, net.linear_2.bias):
        torch.testing.assert_close(p.hesscale, _exact_diag(net, p, x, y, "cross_entropy"))


def test_conv_with_single_output_is_exact():
    torch.manual_seed(1)
    net = nn.Sequential(OrderedDict([("conv_1", nn.Conv2d(2, 1, 3)), ("flatten", nn.Flatten())])).double()
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    y = torch.randn(1, 1, dtype=torch.float64)
    backward_with_hesscale(net, x, y, "mse")
    torch.testing.assert_close(net.conv_1.weight.hesscale, _exact_diag(net, net.conv_1.weight, x, y, "mse"))
    torch.testing.assert_close(net.conv_1.bias.hesscale, torch.tensor([2.0], dtype=torch.float64))


def test_hidden_layer_recursion_by_hand():
    torch.manual_seed(2)
    net = nn.Sequential(OrderedDict([("linear_1", nn.Linear(3, 5)), ("act_1", nn.ReLU()), ("linear_2", nn.Linear(5, 4))])).double()
    x = torch.randn(1, 3, dtype=torch.float64)
    y = torch.tensor([1])
    backward_with_hesscale(net, x, y, "cross_entropy")
    with torch.no_grad():
        a = net.linear_1(x)[0]
        p = torch.softmax(net(x), 1)[0]
        hz = p - p * p
        W2 = net.linear_2.weight
        ha = torch.zeros(5, dtype=torch.float64)
        for i in range(5):
            ha[i] = (a[i] > 0) * sum(W2[o, i] ** 2 * hz[o] for o in range(4))
        want = torch.zeros(5, 3, dtype=torch.float64)
        for i in range(5):
            for j in range(3):
                want[i, j] = ha[i] * x[0, j] ** 2
    torch.testing.assert_close(net.linear_1.weight.hesscale, want)
    torch.testing.assert_close(net.linear_1.bias.hesscale, ha)


def test_conv_net_and_gates_shapes():
    for name, shape in (("convolutional_network_relu_with_hooks", (1, 3, 32, 32)), ("conv_mnist", (1, 1, 28, 28)),
                        ("fully_connected_tanh_gates", (1, 20)), ("small_fully_connected_leakyrelu_gates", (1, 20))):
        net = build_network(name, 20, 10)
        backward_with_hesscale(net, torch.randn(shape), torch.tensor([3]), "cross_entropy")
        for pname, p in net.named_parameters():
            assert p.hesscale.shape == p.shape, (name, pname)
            assert torch.isfinite(p.hesscale).all() and (p.hesscale >= -1e-7).all() | ("tanh" in name)
