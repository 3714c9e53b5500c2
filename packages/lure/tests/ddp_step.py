"""One training epoch of LURE_main.py / ALMA.py's loop on a fixed tiny set, run by test_torchrun.py.

Under torchrun (2 ranks) each rank saves, for every model of :data:`MODELS`, its weights after
the epoch with ``--sync_bn`` (and resnet20s's without it); without torchrun, :func:`reference`
gives the single-process result (and the evaluation's logits after it). Ten images in batches of 5, shared 3 + 2. In float64: at
random initialisation the deep networks' BatchNorm gradients are so ill-conditioned that
float32 rounding alone moves them by percents (ResNet-50: 2 % between float32 and float64 in
one process).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from forgetting_common.distributed import Dist, init, shutdown, wrap_model
from forgetting_common.seeding import Generators
from lure.cli import parse_args
from lure.data import AnytimeData, TensorSource
from lure.metrics import predict
from lure.models import build_model
from lure.train import RunContext, _train_epoch

N, BATCH = 10, 5
#: name: (--arch, ImageNet stem, image side): LURE's ResNet-18 and ResNet-20, ALMA's ResNet-50
MODELS = {"resnet18": ("resnet18", False, 8), "resnet20s": ("resnet20s", False, 8), "resnet50": ("resnet50", True, 32)}


class Float64Source(TensorSource):
    def fetch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().fetch(idx)
        return x.double(), y


def _epoch(dist: Dist | None, name: str, sync_bn: bool) -> dict[str, torch.Tensor]:
    arch, imagenet, side = MODELS[name]
    torch.manual_seed(0)
    images = torch.randint(0, 256, (N, 3, side, side), dtype=torch.uint8)
    labels = torch.arange(N) % 10
    pool = Float64Source(images, labels)
    data = AnytimeData(pool=pool, test=pool, num_classes=10, in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3,
                       val_offset=N, crop_padding=1, flip=True, description="ddp step")
    model = build_model(arch, 10, imagenet=imagenet, mean=data.mean, std=data.std).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    cfg = parse_args(["--batch_size", str(BATCH), "--quiet", "--save_dir", "unused"])
    net = wrap_model(model, dist, sync_bn=sync_bn) if dist is not None else None
    ctx = RunContext(cfg=cfg, device=torch.device("cpu"), data=data, model=model, optimizer=optimizer,
                     gens=Generators(3), save_dir=Path("unused"), log=None, seed=3, plan=None, dist=dist, net=net)
    _train_epoch(ctx, torch.arange(N), 0, lambda i, n_iter: 0.01)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # the sharded evaluation, augmented: batches of 3 split 2 + 1, the last (of 1) 1 + 0
    logits, labels = predict(model, pool, torch.arange(N), 3, data.augment, Generators(4)["val"], dist)
    return {**state, "eval.logits": logits, "eval.labels": labels}


def reference(name: str) -> dict[str, torch.Tensor]:
    """One process, whole batches of 5."""
    return _epoch(None, name, sync_bn=False)


def main(out: Path) -> None:
    dist = init("cpu")
    states = {name: _epoch(dist, name, sync_bn=True) for name in MODELS}
    states["resnet20s_plain"] = _epoch(dist, "resnet20s", sync_bn=False)
    torch.save(states, out / f"rank{dist.rank}.pt")
    shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
