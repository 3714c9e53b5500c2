"""The shared micro-CNN supernet (spec §2.5): every op on every possible edge of every cell."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from forgetting_common.errors import UserError
from torch import nn

from wpl_enas.dags import MicroArchi, cell_keys

INPUT_RELU_OPS = ("depthwise_3x3", "depthwise_5x5")


def tile_channels(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    c = x.size(1)
    if c == out_channels:
        return x
    return x.repeat(1, out_channels // c, 1, 1)


class Identity(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        if c_out % c_in:
            raise ValueError(f"identity op cannot tile {c_in} channels to {c_out}")
        self.c_out, self.stride = c_out, stride

    def forward(self, x):
        if self.stride > 1:
            x = F.avg_pool2d(x, 1, self.stride)
        return tile_channels(x, self.c_out)


class Pool(nn.Module):
    def __init__(self, kind: str, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        if c_out % c_in:
            raise ValueError(f"pooling op cannot tile {c_in} channels to {c_out}")
        self.kind, self.c_out, self.stride = kind, c_out, stride

    def forward(self, x):
        if self.kind == "avg":
            x = F.avg_pool2d(x, 3, self.stride, padding=1, count_include_pad=True)
        else:
            x = F.max_pool2d(x, 3, self.stride, padding=1)
        return tile_channels(x, self.c_out)


class DepthwiseConv(nn.Module):
    """ReLU → grouped k×k conv (groups = input channels) → BatchNorm with batch statistics always."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int) -> None:
        super().__init__()
        groups = c_in if c_out % c_in == 0 else 1  # fall back to a full conv (the original crashed)
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, track_running_stats=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x):  # x already went through the (cached) input ReLU
        return self.bn(self.conv(x))


def make_op(name: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    if name == "identity":
        return Identity(c_in, c_out, stride)
    if name == "avg3x3":
        return Pool("avg", c_in, c_out, stride)
    if name == "max3x3":
        return Pool("max", c_in, c_out, stride)
    if name == "depthwise_3x3":
        return DepthwiseConv(c_in, c_out, stride, 3)
    if name == "depthwise_5x5":
        return DepthwiseConv(c_in, c_out, stride, 5)
    raise ValueError(f"unknown op {name!r}")


class MicroCell(nn.Module):
    """Nodes 0, 1 (inputs) and 2…B+1; an op module for every edge i→j (i < j, j ≥ 2) and op."""

    def __init__(self, num_blocks: int, ops: list[str], in_channels: tuple[int, int], strides: tuple[int, int],
                 channels: int, reduction: bool) -> None:
        super().__init__()
        self.num_blocks = num_blocks
        self.reduction = reduction
        self.ops = nn.ModuleDict()
        for j in range(2, num_blocks + 2):
            for i in range(j):
                c_in = in_channels[i] if i < 2 else channels
                stride = strides[i] if i < 2 else 1
                for op in ops:
                    self.ops[f"{i}-{j}-{op}"] = make_op(op, c_in, channels, stride)

    def forward(self, s0, s1, edges: list[tuple[int, int, str]]):
        nodes = {0: s0, 1: s1}
        sums: dict[int, torch.Tensor] = {}
        counts: dict[int, int] = {}
        for _, tgt, _ in edges:
            counts[tgt] = counts.get(tgt, 0) + 1
        relu_cache: dict[int, torch.Tensor] = {}
        for src, tgt, op in edges:
            if src not in nodes:
                nodes[src] = sums[src] / counts[src]
            if op in INPUT_RELU_OPS:
                if src not in relu_cache:
                    relu_cache[src] = F.relu(nodes[src])
                x = relu_cache[src]
            else:
                x = nodes[src]
            out = self.ops[f"{src}-{tgt}-{op}"](x)
            sums[tgt] = out if tgt not in sums else sums[tgt] + out
        last = self.num_blocks + 1
        return sums[last] / counts[last]


class SharedMicroCNN(nn.Module):
    def __init__(self, *, num_blocks: int, normal_ops: list[str], reduce_ops: list[str], num_modules: int = 3,
                 num_repeat_normal: int = 6, final_filter_size: int = 384, input_channels: int = 3,
                 height: int = 32, width: int = 32, output_classes: int = 10) -> None:
        super().__init__()
        check_channel_plan(final_filter_size, num_modules, input_channels, height, width)
        stage_channels = [final_filter_size // 2 ** (num_modules - 1 - m) for m in range(num_modules)]
        self.cells = nn.ModuleList()
        self.reduction_flags: list[bool] = []
        # (channels, width) of the outputs two cells back and one cell back; both the image at first.
        prev2 = prev1 = (input_channels, width)
        cur_w = width
        for m in range(num_modules):
            for kind in ["normal"] * num_repeat_normal + (["reduce"] if m < num_modules - 1 else []):
                reduction = kind == "reduce"
                channels = stage_channels[m + 1] if reduction else stage_channels[m]
                out_w = cur_w // 2 if reduction else cur_w
                strides = tuple(2 if inp[1] == 2 * out_w else 1 for inp in (prev2, prev1))
                cell = MicroCell(num_blocks, reduce_ops if reduction else normal_ops, (prev2[0], prev1[0]),
                                 strides, channels, reduction)
                self.cells.append(cell)
                self.reduction_flags.append(reduction)
                prev2, prev1 = prev1, (channels, out_w)
                cur_w = out_w
        out_h = height // 2 ** (num_modules - 1)
        self.flat_features = int(final_filter_size * out_h * cur_w)
        self.classifier = nn.Linear(self.flat_features, output_classes)
        nn.init.kaiming_normal_(self.classifier.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor, dag: MicroArchi) -> torch.Tensor:
        s0 = s1 = x
        for cell, reduction in zip(self.cells, self.reduction_flags):
            out = cell(s0, s1, dag.reduced_cell if reduction else dag.normal_cell)
            s0, s1 = s1, out
        return self.classifier(s1.flatten(1))

    # -- WPL interface -----------------------------------------------------------------------
    def wpl_named_params(self, dag: MicroArchi) -> list[tuple[str, nn.Parameter]]:
        out = []
        for pos, (cell, reduction) in enumerate(zip(self.cells, self.reduction_flags)):
            edges = dag.reduced_cell if reduction else dag.normal_cell
            for key in cell_keys(edges):
                for pname, p in cell.ops[key].named_parameters():
                    out.append((f"cells.{pos}.ops.{key}.{pname}", p))
        return out

    def protected_named_params(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if n.startswith("cells.")]


def check_channel_plan(final: int, modules: int, in_channels: int, height: int, width: int) -> None:
    """The channel tiling rule of spec §2.5, checked up front with a clear message."""
    if final % 2 ** (modules - 1):
        raise UserError(f"--cnn_final_filter_size={final} must be divisible by 2^(cnn_num_modules-1)={2 ** (modules - 1)}")
    first = final // 2 ** (modules - 1)
    if first % in_channels:
        raise UserError(
            f"channel plan {[final // 2 ** (modules - 1 - m) for m in range(modules)]}: the first stage's "
            f"{first} channels must be a multiple of --cnn_input_channels={in_channels} (ops tile channels)")
    if height % 2 ** (modules - 1) or width % 2 ** (modules - 1):
        raise UserError(f"--cnn_height/--cnn_width ({height}x{width}) must be divisible by 2^(cnn_num_modules-1)")
