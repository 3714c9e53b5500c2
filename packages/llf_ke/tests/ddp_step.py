"""One training epoch of train_KE_cls.py's pass on a fixed tiny set, run by test_torchrun.py.

Under torchrun (2 ranks) each rank saves its model and its sharded evaluation after the
epoch, for each case of :data:`CASES`; without torchrun, :func:`reference` gives the
single-process result of the same epoch. Seven 64-px images in batches of 5 split 3 + 2 and
1 + 1 over the ranks; one image in a batch of 1 splits 1 + 0 (rank 1 joins the step with no
example of its own). In float64: BatchNorm over a few values per channel (a batch of one or two
at a 2 x 2 map) makes the gradient so ill-conditioned that float32 rounding alone moves it by
percents, in one process as much as on two.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from forgetting_common.distributed import Dist, init, shutdown, sync_buffers, wrap_model
from llf_ke import epoch as passes
from llf_ke.data import make_loader
from llf_ke.models import Builder, build_model
from llf_ke.optim import build_optimizer
from torch.utils.data import TensorDataset

SIDE, CLASSES = 64, 10
#: name: (images, batch size, --sync_bn)
CASES = {"sync": (7, 5, True), "plain": (7, 5, False), "sync_empty_share": (1, 1, True), "empty_share": (1, 1, False)}


def _setup(dist: Dist | None, n: int, batch: int):
    torch.manual_seed(0)
    np.random.seed(0)  # the WELS masks
    images = torch.randn(n, 3, SIDE, SIDE, dtype=torch.float64)
    labels = torch.arange(n) % CLASSES
    model = build_model("Split_ResNet18", CLASSES, Builder(conv_type="SplitConv", linear_type="SplitLinear",
                                                           bn_type="SplitBatchNorm", split_mode="wels", split_rate=0.5,
                                                           init="kaiming_normal", mode="fan_in", nonlinearity="relu"))
    model.double()
    optimizer = build_optimizer("sgd", model, lr=0.01, momentum=0.9, weight_decay=1e-4)
    data = TensorDataset(images, labels)
    train = make_loader(data, batch, train=True, workers=0, pin=False, dist=dist)
    val = make_loader(data, batch, train=False, workers=0, pin=False, dist=dist)
    return model, optimizer, train, val


def _epoch(dist: Dist | None, n: int, batch: int, sync_bn: bool) -> tuple[dict, dict]:
    model, optimizer, train, val = _setup(dist, n, batch)
    net = wrap_model(model, dist, sync_bn=sync_bn) if dist is not None else model
    criterion = passes.make_criterion(0.1)
    cpu = torch.device("cpu")
    torch.manual_seed(1)  # the epoch's order
    passes.train_epoch(net, train, criterion, optimizer, cpu, dist=dist)
    if dist is not None:
        sync_buffers(model, dist)  # as the training loop does after every epoch
    return model.state_dict(), passes.evaluate(model, val, criterion, cpu, dist)


def reference(case: str) -> tuple[dict, dict]:
    """One process, the whole batches: the state after the epoch and its evaluation."""
    n, batch, _ = CASES[case]
    return _epoch(None, n, batch, sync_bn=False)


def main(out: Path) -> None:
    dist = init("cpu")
    for name, (n, batch, sync_bn) in CASES.items():
        state, metrics = _epoch(dist, n, batch, sync_bn)
        torch.save({"state": state, "eval": metrics}, out / f"{name}_rank{dist.rank}.pt")
    shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
