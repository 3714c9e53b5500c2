"""A small, self-contained HesScale: diagonal Hessian approximations for Sequential networks.

HesScale (Elsayed & Mahmood) propagates an approximate *diagonal* of the Hessian of the loss
with respect to each layer's output backwards, dropping off-diagonal terms, and reads the
parameter diagonals from it. The original used the HesScale/BackPACK packages, which no longer
import on current PyTorch; this module implements the same recursion for the layer types the
networks use: Linear, Conv2d, MaxPool2d, Flatten, ReLU/LeakyReLU/Tanh/Sigmoid, GateLayer.

After :func:`backward_with_hesscale` every parameter has ``.grad`` (ordinary autograd) and a
``.hesscale`` tensor of its shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from upgd.models import GateLayer


def output_hessian(out: torch.Tensor, target: torch.Tensor, criterion: str) -> torch.Tensor:
    """Exact diagonal of the loss Hessian w.r.t. the network output (mean reduction)."""
    if criterion == "cross_entropy":
        p = torch.softmax(out, dim=1)
        return (p - p * p) / out.shape[0]
    if criterion == "mse":
        return torch.full_like(out, 2.0 / out.numel())
    raise ValueError(f"unknown criterion {criterion!r}")


def _loss(out, target, criterion):
    return F.cross_entropy(out, target) if criterion == "cross_entropy" else F.mse_loss(out, target)


def backward_with_hesscale(net: nn.Sequential, x: torch.Tensor, target: torch.Tensor, criterion: str):
    """Forward, loss, ``backward()``, and the HesScale recursion. Returns ``(loss, output)``."""
    inputs, outputs = [], []
    h = x
    for module in net.children():
        inputs.append(h)
        h = module(h)
        if h.requires_grad:
            h.retain_grad()
        outputs.append(h)
    out = h
    loss = _loss(out, target, criterion)
    loss.backward()
    with torch.no_grad():
        hy = output_hessian(out.detach(), target, criterion)
        for module, xin, yout in zip(reversed(list(net.children())), reversed(inputs), reversed(outputs)):
            gy = yout.grad if yout.grad is not None else torch.zeros_like(yout)
            hy = _backprop(module, xin.detach(), yout.detach(), hy, gy)
    return loss, out


def _backprop(module: nn.Module, x: torch.Tensor, y: torch.Tensor, hy: torch.Tensor, gy: torch.Tensor):
    """Set the module's parameter ``hesscale`` and return the diagonal w.r.t. its input."""
    if isinstance(module, nn.Linear):
        module.weight.hesscale = hy.t() @ (x * x)
        if module.bias is not None:
            module.bias.hesscale = hy.sum(0)
        return hy @ (module.weight * module.weight)
    if isinstance(module, nn.Conv2d):
        args = (module.stride, module.padding, module.dilation, module.groups)
        module.weight.hesscale = torch.nn.grad.conv2d_weight(x * x, module.weight.shape, hy, *args)
        if module.bias is not None:
            module.bias.hesscale = hy.sum((0, 2, 3))
        return torch.nn.grad.conv2d_input(x.shape, module.weight * module.weight, hy, *args)
    if isinstance(module, nn.MaxPool2d):
        _, idx = F.max_pool2d(x, module.kernel_size, module.stride, module.padding, module.dilation,
                              ceil_mode=module.ceil_mode, return_indices=True)
        flat = torch.zeros(x.shape[0], x.shape[1], x.shape[2] * x.shape[3], dtype=hy.dtype, device=hy.device)
        flat.scatter_add_(2, idx.flatten(2), hy.flatten(2))
        return flat.view_as(x)
    if isinstance(module, nn.Flatten):
        return hy.reshape(x.shape)
    if isinstance(module, GateLayer):
        module.weight.hesscale = (hy * x * x).sum(0, keepdim=True)
        return hy * module.weight * module.weight
    if isinstance(module, nn.ReLU):
        return hy * (x > 0).to(hy.dtype)
    if isinstance(module, nn.LeakyReLU):
        slope = torch.where(x > 0, torch.ones_like(x), torch.full_like(x, module.negative_slope))
        return hy * slope * slope
    if isinstance(module, nn.Tanh):
        d1 = 1 - y * y
        return d1 * d1 * hy + (-2 * y * d1) * gy
    if isinstance(module, nn.Sigmoid):
        d1 = y * (1 - y)
        return d1 * d1 * hy + d1 * (1 - 2 * y) * gy
    if isinstance(module, nn.Identity | nn.Dropout):
        return hy
    raise TypeError(f"HesScale: unsupported layer {type(module).__name__}")
