"""Split layers: dense convolutions and linear layers that carry a keep-mask.

A mask has the shape of its layer's weight: 1 marks the *fit hypothesis* (kept across a
generation boundary), 0 the *reset hypothesis* (re-initialised at the start of every
generation >= 1). The mask never enters ``forward``: the network is dense at all times, so a
split layer costs exactly what a plain ``nn.Conv2d``/``nn.Linear`` costs.

Masks are registered as parameters with ``requires_grad=False``, after the weight, as in
the original: they are part of ``state_dict()`` and of ``named_parameters()``, whose order
the later-layer-forgetting rule walks (``conv1.weight, conv1.mask, bn1.weight, ...``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

SPLIT_MODES = ("kels", "wels")


def _ceil_rate(rate: float, size: int) -> int:
    return int(math.ceil(rate * size))


def kels_mask(shape: tuple[int, ...], rate: float, *, first_layer: bool = False,
              last_layer: bool = False) -> torch.Tensor:
    """Kernel-level (channel-aware) mask: a top-left block of kept filters x input channels.

    Conv ``(C_out, C_in, k, k)``: the first ceil(rate*C_out) filters and the first
    ceil(rate*C_in) input channels are kept; the first conv of the network (3 input
    channels) keeps all its inputs. Linear ``(out, in)``: the last layer keeps all output
    rows and the first ceil(rate*in) columns; any other linear layer keeps a top-left block.
    """
    mask = torch.zeros(shape)
    out_ch, in_ch = shape[0], shape[1]
    keep_in = _ceil_rate(rate, in_ch)
    keep_out = _ceil_rate(rate, out_ch)
    if len(shape) == 2:  # linear
        if last_layer:
            mask[:, :keep_in] = 1
        else:
            mask[:keep_out, :keep_in] = 1
        return mask
    if first_layer or in_ch == 3:
        mask[:keep_out] = 1
    else:
        mask[:keep_out, :keep_in] = 1
    return mask


def wels_mask(shape: tuple[int, ...], rate: float) -> torch.Tensor:
    """Weight-level mask: each weight kept independently with probability ``rate``.

    Drawn as the original drew it: ``u = np.random.rand(*shape)`` from NumPy's *global*
    stream, kept where ``u >= 1 - rate``. NumPy, not torch: the draw sits between the layers'
    torch initialisation draws, so taking it from torch would shift every later weight, while
    the original gives the same initial weights under KELS and WELS for a given torch seed.
    The original asserted both values occur (rate < 1); a draw that misses one, possible only
    for a tiny tensor at an extreme rate, is drawn again instead of crashing.
    """
    threshold = 1.0 - rate
    for _ in range(100):
        keep = np.random.rand(*shape) >= threshold
        if rate >= 1.0 or 0 < int(keep.sum()) < keep.size:
            break
    return torch.from_numpy(keep.astype(np.float32))


def make_mask(shape: tuple[int, ...], rate: float, mode: str, *, first_layer: bool = False,
              last_layer: bool = False) -> torch.Tensor:
    if mode == "kels":
        return kels_mask(shape, rate, first_layer=first_layer, last_layer=last_layer)
    if mode == "wels":
        return wels_mask(shape, rate)
    raise ValueError(f"unknown split mode {mode!r}; use kels or wels")


class SplitMixin:
    """Shared by :class:`SplitConv` and :class:`SplitLinear`."""

    split_mode: str
    split_rate: float
    first_layer: bool
    last_layer: bool

    def _init_mask(self, split_mode: str, split_rate: float) -> None:
        self.split_mode = split_mode
        self.split_rate = split_rate
        mask = make_mask(tuple(self.weight.shape), split_rate, split_mode,
                         first_layer=self.first_layer, last_layer=self.last_layer)
        self.mask = nn.Parameter(mask, requires_grad=False)

    def redraw_mask(self) -> None:
        """Draw a new WELS mask (``--reset_hypothesis``) from NumPy's global stream, as the
        original did (never re-seeded per generation, even with ``--fix_seed``)."""
        if self.split_mode != "wels":
            raise ValueError("--reset_hypothesis only works with --split_mode wels")
        new = wels_mask(tuple(self.weight.shape), self.split_rate)
        with torch.no_grad():
            self.mask.copy_(new.to(self.mask.device))

    def fan_in(self) -> int:
        return int(self.weight[0].numel())


class SplitConv(nn.Conv2d, SplitMixin):
    def __init__(self, *args, split_mode: str = "wels", split_rate: float = 0.5,
                 first_layer: bool = False, last_layer: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.first_layer = first_layer
        self.last_layer = last_layer
        self._init_mask(split_mode, split_rate)


class SplitLinear(nn.Linear, SplitMixin):
    """A linear layer with a mask. Registration order: weight, bias, mask (as the original)."""

    def __init__(self, *args, split_mode: str = "wels", split_rate: float = 0.5,
                 first_layer: bool = False, last_layer: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.first_layer = first_layer
        self.last_layer = last_layer
        self._init_mask(split_mode, split_rate)


class DenseConv(nn.Conv2d):
    """``--conv_type DenseConv``: a plain convolution without a mask (never re-initialised)."""

    def __init__(self, *args, split_mode: str = "wels", split_rate: float = 0.5,
                 first_layer: bool = False, last_layer: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)


class DenseLinear(nn.Linear):
    def __init__(self, *args, split_mode: str = "wels", split_rate: float = 0.5,
                 first_layer: bool = False, last_layer: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)


class NonAffineBatchNorm(nn.BatchNorm2d):
    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(num_features, affine=False, **kwargs)


# SplitBatchNorm is an ordinary affine BatchNorm2d for ResNets (its channel-order argument
# only mattered for DenseNet/GoogLeNet slim extraction, which is out of scope).
SplitBatchNorm = nn.BatchNorm2d
NormalBatchNorm = nn.BatchNorm2d

CONV_TYPES = {"SplitConv": SplitConv, "DenseConv": DenseConv}
LINEAR_TYPES = {"SplitLinear": SplitLinear, "DenseLinear": DenseLinear}
BN_TYPES = {"SplitBatchNorm": SplitBatchNorm, "NormalBatchNorm": NormalBatchNorm,
            "NonAffineBatchNorm": NonAffineBatchNorm}


def split_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module that has both a weight and a mask, in registration order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor) and isinstance(getattr(m, "mask", None), torch.Tensor)]
